-- Role grants per customer at $1, summed straight from user_roles_history:
-- a role on every account counts 1, a role on listed accounts one per
-- account, for users some customer listed at $1 (as access_as_of does).
-- $2: the customers (empty: all).
SELECT r.customer_id,
       sum(CASE WHEN r.account_ids IS NULL THEN 1 ELSE cardinality(r.account_ids) END)::bigint
FROM user_roles_history r
WHERE r.valid_from <= $1 AND (r.valid_to IS NULL OR r.valid_to > $1)
  AND r.change <> 'removed'
  AND EXISTS (
      SELECT 1 FROM users_history u
      WHERE u.user_id = r.user_id AND u.valid_from <= $1 AND (u.valid_to IS NULL OR u.valid_to > $1)
        AND u.change <> 'removed')
  AND (cardinality($2::bigint[]) = 0 OR r.customer_id = ANY ($2))
GROUP BY r.customer_id
HAVING sum(CASE WHEN r.account_ids IS NULL THEN 1 ELSE cardinality(r.account_ids) END) > 0
