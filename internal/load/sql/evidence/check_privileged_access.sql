-- Privileged grants per customer at $1, summed straight from history:
-- users' roles whose roles.privileged is not false (one per account, or one
-- for every account, for users some customer listed at $1), plus client
-- links of a privileged (or not described) permission whose status
-- granted access then.
-- $2: the customers (empty: all).
SELECT x.customer_id, sum(x.n)::bigint
FROM (
    SELECT r.customer_id, CASE WHEN r.account_ids IS NULL THEN 1 ELSE cardinality(r.account_ids) END AS n
    FROM user_roles_history r
    LEFT JOIN roles ro ON ro.role_id = r.role_id
    WHERE r.valid_from <= $1 AND (r.valid_to IS NULL OR r.valid_to > $1)
      AND r.change <> 'removed'
      AND ro.privileged IS NOT FALSE
      AND EXISTS (
          SELECT 1 FROM users_history u
          WHERE u.user_id = r.user_id AND u.valid_from <= $1 AND (u.valid_to IS NULL OR u.valid_to > $1)
            AND u.change <> 'removed')
    UNION ALL
    SELECT CASE WHEN h.type = 'CustomerLink' THEN h.client_entity_id ELSE h.client_customer_id END, 1
    FROM client_links_history h
    LEFT JOIN client_link_permissions p ON p.link_type = h.type AND p.customer_link_permission = coalesce(h.customer_link_permission, '')
    LEFT JOIN client_link_statuses st ON st.status = h.status
    WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
      AND h.change <> 'removed'
      AND p.privileged IS NOT FALSE AND st.grants_access IS NOT FALSE
) x
WHERE cardinality($2::bigint[]) = 0 OR x.customer_id = ANY ($2)
GROUP BY x.customer_id
HAVING sum(x.n) > 0
