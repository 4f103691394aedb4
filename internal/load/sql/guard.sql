{{- /*
The removal guard's figures, read before anything is written: the
customer's current users, and how many of them the snapshot does not list
(EXCEPT: a hash or a sort of both sides, whatever the planner knows of the
staging table, which has no index and no statistics).
*/ -}}
WITH cur AS (
    SELECT t.user_id FROM users t WHERE t.customer_id = @customer_id AND t.removed_at IS NULL
)
SELECT (SELECT count(*) FROM cur),
       (SELECT count(*) FROM (SELECT user_id FROM cur EXCEPT SELECT s.user_id FROM s_users s) x)
