-- Per customer: the last complete (succeeded) sync that finished at or
-- before $1 (as_of), the run it belonged to and whom it read the data as,
-- and the last sync attempt started at or before $1 (it may have failed
-- after the complete one), with the customers each of the two runs'
-- credential could see (NULL: not known). The customers are those of $3 (the expected
-- ones: configured or asked for) and every customer with a sync attempt at
-- or before $1, narrowed to $2 unless $2 is empty.
WITH ids AS (
    SELECT unnest($3::bigint[]) AS customer_id
    UNION
    SELECT DISTINCT s.customer_id FROM customer_syncs s
    WHERE s.started_at <= $1 AND (cardinality($2::bigint[]) = 0 OR s.customer_id = ANY ($2))
)
SELECT ids.customer_id,
       c.name,
       ok.run_id,
       ok.finished_at,
       ok.status,
       r.status AS run_status,
       r.principal_user_id,
       r.principal_user_name,
       ok.users_seen,
       ok.invitations_seen,
       last.run_id AS last_run_id,
       last.started_at AS last_started_at,
       last.status AS last_status,
       last.error AS last_error,
       r.visible_customer_ids,
       lr.visible_customer_ids AS last_visible_customer_ids
FROM ids
LEFT JOIN customers c ON c.customer_id = ids.customer_id
LEFT JOIN LATERAL (
    SELECT s.run_id, s.finished_at, s.status, s.users_seen, s.invitations_seen
    FROM customer_syncs s
    WHERE s.customer_id = ids.customer_id AND s.status = 'succeeded' AND s.finished_at <= $1
    ORDER BY s.finished_at DESC
    LIMIT 1
) ok ON true
LEFT JOIN sync_runs r ON r.run_id = ok.run_id
LEFT JOIN LATERAL (
    SELECT s.run_id, s.started_at, s.status, s.error
    FROM customer_syncs s
    WHERE s.customer_id = ids.customer_id AND s.started_at <= $1
    ORDER BY s.started_at DESC
    LIMIT 1
) last ON true
LEFT JOIN sync_runs lr ON lr.run_id = last.run_id
ORDER BY ids.customer_id
