{{- /*
The removal guard's figures, read before anything is written: the
customer's current users, and how many of them the snapshot does not list.
*/ -}}
SELECT count(*),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM s_users s WHERE s.customer_id = t.customer_id AND s.user_id = t.user_id))
FROM users t
WHERE t.customer_id = @customer_id AND t.removed_at IS NULL
