{{- /* The customer's freshness, on every successful snapshot. */ -}}
INSERT INTO customers (customer_id, name, last_success_at, last_attempt_at, last_error)
VALUES (@customer_id, NULLIF(@name, ''), now(), now(), NULL)
ON CONFLICT (customer_id) DO UPDATE SET name = coalesce(excluded.name, customers.name),
    last_success_at = excluded.last_success_at, last_attempt_at = excluded.last_attempt_at, last_error = NULL
