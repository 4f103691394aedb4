-- Exceptions: the findings of the access_exceptions view (users matching
-- no one or only leavers in the company directory, external domains,
-- privileged external grants, stale invitations, dormant links). The view
-- reads the current tables: these rows are as of the pack's generation
-- time, not as of $1. $2: the customers (empty: all); $1 is not used
-- beyond this comment's note (kept so every population takes the same
-- parameters).
SELECT e.customer_id,
       c.name AS customer_name,
       e.kind,
       e.user_id,
       e.invitation_id,
       e.link_type,
       e.client_entity_id,
       e.managing_customer_id,
       e.email,
       e.user_name,
       e.reason
FROM access_exceptions e
LEFT JOIN customers c ON c.customer_id = e.customer_id
WHERE $1::timestamptz IS NOT NULL
  AND (cardinality($2::bigint[]) = 0 OR e.customer_id = ANY ($2))
ORDER BY e.customer_id, e.kind, e.user_id NULLS LAST, e.invitation_id NULLS LAST, e.client_entity_id NULLS LAST, e.managing_customer_id NULLS LAST
