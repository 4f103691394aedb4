{{- /*
The succeeded customer_syncs row of a snapshot written in a run. Data: the
count columns (countColumns), each bound to the named argument of its name.
*/ -}}
INSERT INTO customer_syncs (run_id, customer_id, started_at, finished_at, status, error, users_seen, roles_seen,
    invitations_seen, accounts_seen, api_calls, users_unreadable, links_status, links_error, client_links_seen, {{join . ", "}})
VALUES (@run_id, @customer_id, @started_at, clock_timestamp(), 'succeeded', NULL, @users_seen, @roles_seen,
    @invitations_seen, @accounts_seen, @api_calls, @users_unreadable, @links_status, @links_error, @client_links_seen, {{list "@" . }})
ON CONFLICT (run_id, customer_id) DO UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at,
    status = excluded.status, error = NULL, users_seen = excluded.users_seen, roles_seen = excluded.roles_seen,
    invitations_seen = excluded.invitations_seen, accounts_seen = excluded.accounts_seen,
    api_calls = excluded.api_calls, users_unreadable = excluded.users_unreadable, links_status = excluded.links_status,
    links_error = excluded.links_error, client_links_seen = excluded.client_links_seen, {{set .}}
