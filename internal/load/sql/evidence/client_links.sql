-- Client links (agency access) at $1 (as_of), from client_links_as_of($1):
-- every link then current, with whether its status then granted access.
-- customer_id is the client entity's customer (empty when not known).
-- first_seen_at is the link's first version in client_links_history.
-- $2: the customers (empty: all).
SELECT l.client_customer_id AS customer_id,
       c.name AS customer_name,
       l.type AS link_type,
       l.client_entity_id,
       l.client_entity_number,
       l.client_entity_name,
       l.managing_customer_id,
       l.managing_customer_name,
       l.status,
       l.grants_access,
       l.customer_link_permission,
       l.is_bill_to_client,
       l.start_date,
       l.inviter_email,
       l.inviter_name,
       l.name,
       l.note,
       l.last_modified_time,
       f.first_seen_at
FROM client_links_as_of($1) l
LEFT JOIN customers c ON c.customer_id = l.client_customer_id
LEFT JOIN LATERAL (
    SELECT min(h.valid_from) AS first_seen_at
    FROM client_links_history h
    WHERE h.type = l.type AND h.client_entity_id = l.client_entity_id AND h.managing_customer_id = l.managing_customer_id
) f ON true
WHERE cardinality($2::bigint[]) = 0 OR l.client_customer_id = ANY ($2)
ORDER BY l.client_customer_id NULLS LAST, l.type, l.client_entity_id, l.managing_customer_id
