-- Changes to role grants (user x customer x role) observed after $1 and up
-- to $2, from user_roles_history: each version that began in ($1, $2], with
-- the version before it. state holds the grant's columns and its role's
-- name; the user's name is from the user's last version at or before $2.
-- $3: the customers (empty: all).
WITH v AS (
    SELECT h.customer_id, h.user_id, h.role_id, h.valid_from, h.change, h.run_id,
           to_jsonb(h) - ARRAY['customer_id', 'user_id', 'valid_from', 'valid_to', 'change', 'run_id']
               || jsonb_build_object('role_name', coalesce(ro.name, 'Role ' || h.role_id)) AS state,
           lag(to_jsonb(h) - ARRAY['customer_id', 'user_id', 'valid_from', 'valid_to', 'change', 'run_id']
               || jsonb_build_object('role_name', coalesce(ro.name, 'Role ' || h.role_id))) OVER w AS prev_state,
           lag(h.change) OVER w AS prev_change
    FROM user_roles_history h
    LEFT JOIN roles ro ON ro.role_id = h.role_id
    WHERE (h.user_id, h.customer_id, h.role_id) IN (
              SELECT user_id, customer_id, role_id FROM user_roles_history WHERE valid_from > $1 AND valid_from <= $2)
      AND h.valid_from <= $2
      AND (cardinality($3::bigint[]) = 0 OR h.customer_id = ANY ($3))
    WINDOW w AS (PARTITION BY h.user_id, h.customer_id, h.role_id ORDER BY h.valid_from)
)
SELECT v.customer_id,
       c.name AS customer_name,
       v.user_id || '/' || v.role_id AS entity_id,
       v.user_id,
       coalesce(u.user_name, u.email, 'user ' || v.user_id) AS subject,
       v.valid_from,
       v.run_id,
       v.change,
       v.state,
       v.prev_state,
       v.prev_change
FROM v
LEFT JOIN customers c ON c.customer_id = v.customer_id
LEFT JOIN LATERAL (
    SELECT uh.user_name, uh.email
    FROM users_history uh
    WHERE uh.user_id = v.user_id AND uh.valid_from <= $2
    ORDER BY uh.valid_from DESC
    LIMIT 1
) u ON true
WHERE v.valid_from > $1
ORDER BY v.valid_from, v.customer_id, v.user_id, v.role_id
