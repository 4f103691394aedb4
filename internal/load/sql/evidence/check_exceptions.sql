-- Exceptions per customer, counted from access_exceptions (the same view:
-- it has no history to count from; this checks that no row was lost on the
-- way). $2: the customers (empty: all).
SELECT customer_id, count(*)
FROM access_exceptions
WHERE $1::timestamptz IS NOT NULL
  AND (cardinality($2::bigint[]) = 0 OR customer_id = ANY ($2))
GROUP BY customer_id
