-- Users: every user a customer listed at $1 (as_of), from users_history: the
-- version valid at $1 (valid_from <= $1 < valid_to), unless it records a
-- removal. $2: the customers (empty: all).
SELECT h.customer_id,
       c.name AS customer_name,
       h.user_id,
       h.user_name,
       h.email,
       h.first_name,
       h.last_name,
       h.job_title,
       h.lifecycle_status,
       h.detail_status,
       h.home_customer_id,
       f.first_listed_at,
       h.valid_from AS version_from,
       h.change AS version_change,
       h.run_id AS version_run_id
FROM users_history h
LEFT JOIN customers c ON c.customer_id = h.customer_id
LEFT JOIN LATERAL (
    SELECT min(f.valid_from) AS first_listed_at
    FROM users_history f
    WHERE f.customer_id = h.customer_id AND f.user_id = h.user_id
) f ON true
WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
  AND h.change <> 'removed'
  AND (cardinality($2::bigint[]) = 0 OR h.customer_id = ANY ($2))
ORDER BY h.customer_id, h.user_id
