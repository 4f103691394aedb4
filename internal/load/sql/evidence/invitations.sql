-- Pending invitations at $1 (as_of), from user_invitations_history: the
-- version valid at $1, unless it records a removal (accepted or cancelled).
-- account_ids 'all' is every account of the customer; empty, no account
-- listed. estimated_sent_at is the expiration date less 30 days. $2: the
-- customers (empty: all).
SELECT h.customer_id,
       c.name AS customer_name,
       h.invitation_id,
       h.email,
       h.first_name,
       h.last_name,
       h.role_id,
       coalesce(ro.name, 'Role ' || h.role_id) AS role_name,
       coalesce(array_to_string(h.account_ids, ' '), 'all') AS account_ids,
       h.expiration_date,
       h.expiration_date - interval '30 days' AS estimated_sent_at,
       coalesce(h.expiration_date <= $1, false) AS expired_at_as_of,
       f.first_seen_at
FROM user_invitations_history h
LEFT JOIN customers c ON c.customer_id = h.customer_id
LEFT JOIN roles ro ON ro.role_id = h.role_id
LEFT JOIN LATERAL (
    SELECT min(f.valid_from) AS first_seen_at
    FROM user_invitations_history f
    WHERE f.invitation_id = h.invitation_id
) f ON true
WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
  AND h.change <> 'removed'
  AND (cardinality($2::bigint[]) = 0 OR h.customer_id = ANY ($2))
ORDER BY h.customer_id, h.invitation_id
