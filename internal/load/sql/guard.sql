{{- /*
The removal guard's figures, read before anything is written: the
customer's current users, and those of them the snapshot does not list
(EXCEPT: a hash or a sort of both sides, whatever the planner knows of the
staging table, which has no index and no statistics), sorted: the users the
removal removes, with their roles in the customer (@dropped; nothing else
writes the customer's users rows meanwhile, its lock is held).
*/ -}}
WITH cur AS (
    SELECT t.user_id FROM users t WHERE t.customer_id = @customer_id AND t.removed_at IS NULL
)
SELECT (SELECT count(*) FROM cur),
       ARRAY(SELECT user_id FROM cur EXCEPT SELECT s.user_id FROM s_users s ORDER BY 1)
