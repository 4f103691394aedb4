-- Role grants: one row per user x customer x role x account at $1 (as_of),
-- from access_as_of($1). scope 'customer' (account_id empty) is every account
-- of the customer. held_since is when the role last became the user's (added
-- or reappeared in user_roles_history). Account names are as last synced.
-- Users' grants only: the agencies' (client links) are in client_links.
-- $2: the customers (empty: all).
SELECT a.customer_id,
       c.name AS customer_name,
       a.user_id,
       a.user_name,
       a.email,
       a.role_id,
       a.role_name,
       CASE WHEN a.account_id IS NULL THEN 'customer' ELSE 'account' END AS scope,
       a.account_id,
       CASE WHEN a.account_id IS NULL THEN 'every account of the customer' ELSE a.account_name END AS account_name,
       a.lifecycle_status,
       a.detail_status,
       s.held_since
FROM access_as_of($1) a
LEFT JOIN customers c ON c.customer_id = a.customer_id
LEFT JOIN LATERAL (
    SELECT max(g.valid_from) AS held_since
    FROM user_roles_history g
    WHERE g.user_id = a.user_id AND g.customer_id = a.customer_id AND g.role_id = a.role_id
      AND g.valid_from <= $1 AND g.change IN ('added', 'reappeared')
) s ON true
WHERE a.user_id IS NOT NULL
  AND (cardinality($2::bigint[]) = 0 OR a.customer_id = ANY ($2))
ORDER BY a.customer_id, a.user_id, a.role_id, a.account_id NULLS FIRST
