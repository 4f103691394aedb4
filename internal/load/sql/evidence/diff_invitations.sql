-- Changes to invitations observed after $1 and up to $2, from
-- user_invitations_history: each version that began in ($1, $2], with the
-- version before it. 'removed' means no longer pending (accepted or
-- cancelled). $3: the customers (empty: all).
WITH v AS (
    SELECT h.customer_id, h.invitation_id, h.valid_from, h.change, h.run_id,
           to_jsonb(h) - ARRAY['invitation_id', 'valid_from', 'valid_to', 'change', 'run_id']
               || jsonb_build_object('role_name', coalesce(ro.name, 'Role ' || h.role_id)) AS state,
           lag(to_jsonb(h) - ARRAY['invitation_id', 'valid_from', 'valid_to', 'change', 'run_id']
               || jsonb_build_object('role_name', coalesce(ro.name, 'Role ' || h.role_id))) OVER w AS prev_state,
           lag(h.change) OVER w AS prev_change
    FROM user_invitations_history h
    LEFT JOIN roles ro ON ro.role_id = h.role_id
    WHERE h.invitation_id IN (
              SELECT invitation_id FROM user_invitations_history WHERE valid_from > $1 AND valid_from <= $2)
      AND h.valid_from <= $2
      AND (cardinality($3::bigint[]) = 0 OR h.customer_id = ANY ($3))
    WINDOW w AS (PARTITION BY h.invitation_id ORDER BY h.valid_from)
)
SELECT v.customer_id,
       c.name AS customer_name,
       v.invitation_id::text AS entity_id,
       NULL::bigint AS user_id,
       v.state ->> 'email' AS subject,
       v.valid_from,
       v.run_id,
       v.change,
       v.state,
       v.prev_state,
       v.prev_change
FROM v
LEFT JOIN customers c ON c.customer_id = v.customer_id
WHERE v.valid_from > $1
ORDER BY v.valid_from, v.customer_id, v.invitation_id
