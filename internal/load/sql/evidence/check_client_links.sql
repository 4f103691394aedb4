-- Client links per client customer at $1, counted straight from
-- client_links_history (the client customer derived as client_links_as_of
-- does). $2: the customers (empty: all).
SELECT x.customer_id, count(*)
FROM (
    SELECT coalesce(h.client_customer_id,
                    CASE WHEN h.type = 'CustomerLink' THEN h.client_entity_id
                         ELSE (SELECT a.customer_id FROM accounts a WHERE a.account_id = h.client_entity_id) END) AS customer_id
    FROM client_links_history h
    WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
      AND h.change <> 'removed'
) x
WHERE cardinality($2::bigint[]) = 0 OR x.customer_id = ANY ($2)
GROUP BY x.customer_id
