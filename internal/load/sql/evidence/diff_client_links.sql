-- Changes to client links observed after $1 and up to $2, from
-- client_links_history: each version that began in ($1, $2], with the
-- version before it. customer_id is the client entity's customer when
-- known, else the synced customer whose search found the link; the subject
-- is the managing customer (the agency); state holds the inviter.
-- $3: the customers (empty: all).
WITH v AS (
    SELECT h.type, h.client_entity_id, h.managing_customer_id, h.valid_from, h.change, h.run_id,
           coalesce(h.client_customer_id, CASE WHEN h.type = 'CustomerLink' THEN h.client_entity_id END,
                    (SELECT a.customer_id FROM accounts a WHERE a.account_id = h.client_entity_id),
                    h.searched_from_customer_id) AS customer_id,
           to_jsonb(h) - ARRAY['valid_from', 'valid_to', 'change', 'run_id'] AS state,
           lag(to_jsonb(h) - ARRAY['valid_from', 'valid_to', 'change', 'run_id']) OVER w AS prev_state,
           lag(h.change) OVER w AS prev_change
    FROM client_links_history h
    WHERE (h.type, h.client_entity_id, h.managing_customer_id) IN (
              SELECT type, client_entity_id, managing_customer_id FROM client_links_history
              WHERE valid_from > $1 AND valid_from <= $2)
      AND h.valid_from <= $2
    WINDOW w AS (PARTITION BY h.type, h.client_entity_id, h.managing_customer_id ORDER BY h.valid_from)
)
SELECT v.customer_id,
       c.name AS customer_name,
       v.type || '/' || v.client_entity_id || '/' || v.managing_customer_id AS entity_id,
       NULL::bigint AS user_id,
       coalesce(v.state ->> 'managing_customer_name', 'customer ' || v.managing_customer_id) AS subject,
       v.valid_from,
       v.run_id,
       v.change,
       v.state,
       v.prev_state,
       v.prev_change
FROM v
LEFT JOIN customers c ON c.customer_id = v.customer_id
WHERE v.valid_from > $1
  AND (cardinality($3::bigint[]) = 0 OR v.customer_id = ANY ($3))
ORDER BY v.valid_from, v.customer_id, entity_id
