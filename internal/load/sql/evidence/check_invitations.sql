-- Pending invitations per customer at $1, counted straight from
-- user_invitations_history. $2: the customers (empty: all).
SELECT customer_id, count(*)
FROM user_invitations_history
WHERE valid_from <= $1 AND (valid_to IS NULL OR valid_to > $1)
  AND change <> 'removed'
  AND (cardinality($2::bigint[]) = 0 OR customer_id = ANY ($2))
GROUP BY customer_id
