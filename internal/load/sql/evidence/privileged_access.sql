-- Privileged access at $1 (as_of): the role grants that can manage users,
-- billing and links (41 Super Admin, 33 Aggregator), from access_as_of($1)
-- and user_roles_history. $2: the customers (empty: all).
SELECT a.customer_id,
       c.name AS customer_name,
       'user' AS grantee_kind,
       a.user_id AS grantee_id,
       coalesce(a.user_name, a.email) AS grantee_name,
       a.email,
       a.role_name AS role_or_permission,
       CASE WHEN a.account_id IS NULL THEN 'customer' ELSE 'account' END AS scope,
       a.account_id,
       CASE WHEN a.account_id IS NULL THEN 'every account of the customer' ELSE a.account_name END AS account_name,
       s.held_since
FROM access_as_of($1) a
LEFT JOIN customers c ON c.customer_id = a.customer_id
LEFT JOIN LATERAL (
    SELECT max(g.valid_from) AS held_since
    FROM user_roles_history g
    WHERE g.user_id = a.user_id AND g.customer_id = a.customer_id AND g.role_id = a.role_id
      AND g.valid_from <= $1 AND g.change IN ('added', 'reappeared')
) s ON true
WHERE a.role_id IN (41, 33)
  AND (cardinality($2::bigint[]) = 0 OR a.customer_id = ANY ($2))
ORDER BY a.customer_id, a.user_id, a.role_name, a.account_id NULLS FIRST
