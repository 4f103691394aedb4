-- Changes to users (per listing customer) observed after $1 and up to $2,
-- from users_history: each version that began in ($1, $2], with the version
-- before it (state and change) to tell what changed. state holds the
-- entity's columns. $3: the customers (empty: all).
WITH v AS (
    SELECT h.customer_id, h.user_id, h.valid_from, h.change, h.run_id,
           to_jsonb(h) - ARRAY['customer_id', 'user_id', 'valid_from', 'valid_to', 'change', 'run_id'] AS state,
           lag(to_jsonb(h) - ARRAY['customer_id', 'user_id', 'valid_from', 'valid_to', 'change', 'run_id']) OVER w AS prev_state,
           lag(h.change) OVER w AS prev_change
    FROM users_history h
    WHERE (h.customer_id, h.user_id) IN (
              SELECT customer_id, user_id FROM users_history WHERE valid_from > $1 AND valid_from <= $2)
      AND h.valid_from <= $2
      AND (cardinality($3::bigint[]) = 0 OR h.customer_id = ANY ($3))
    WINDOW w AS (PARTITION BY h.customer_id, h.user_id ORDER BY h.valid_from)
)
SELECT v.customer_id,
       c.name AS customer_name,
       v.user_id::text AS entity_id,
       v.user_id,
       coalesce(v.state ->> 'user_name', v.state ->> 'email') AS subject,
       v.valid_from,
       v.run_id,
       v.change,
       v.state,
       v.prev_state,
       v.prev_change
FROM v
LEFT JOIN customers c ON c.customer_id = v.customer_id
WHERE v.valid_from > $1
ORDER BY v.valid_from, v.customer_id, v.user_id
