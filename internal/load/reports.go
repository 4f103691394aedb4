package load

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Report is a read-only query of the warehouse written against the
// schema's search path (unqualified names), the way a user runs it in psql:
// `syncer demo` prints each one's SQL before its rows, to teach the
// warehouse's views.
type Report struct {
	Title string
	SQL   string
	Args  []any
}

// ExploreSQL is the first query the demo suggests running in psql.
const ExploreSQL = "SELECT * FROM access LIMIT 20"

// RunsReport lists the runs recorded so far, with their customers' counts
// and changes summed.
var RunsReport = Report{
	Title: "Runs",
	SQL: `SELECT r.run_id, r.status, r.principal_user_name AS signed_in_as, r.customers_total, r.customers_failed,
		        sum(c.users_seen) AS users, sum(c.users_unreadable) AS unreadable, sum(c.invitations_seen) AS invitations,
		        format('+%s ~%s -%s', sum(c.users_added + c.users_reappeared), sum(c.users_changed), sum(c.users_removed)) AS users_changes,
		        format('+%s ~%s -%s', sum(c.roles_added + c.roles_reappeared), sum(c.roles_changed), sum(c.roles_removed)) AS roles_changes,
		        format('+%s ~%s -%s', sum(c.invitations_added + c.invitations_reappeared), sum(c.invitations_changed), sum(c.invitations_removed)) AS invitations_changes,
		        sum(c.client_links_seen) AS client_links,
		        format('+%s ~%s -%s', sum(c.client_links_added + c.client_links_reappeared), sum(c.client_links_changed), sum(c.client_links_removed)) AS links_changes,
		        sum(c.api_calls) AS api_calls, round(extract(epoch FROM r.finished_at - r.started_at)::numeric, 2) AS seconds
		   FROM sync_runs r LEFT JOIN customer_syncs c USING (run_id)
		  GROUP BY r.run_id ORDER BY r.run_id`,
}

// AccessReviewReports are the reports an access review starts with: who
// can reach what, what changed in the last run, users the API would not
// show, inactive users, access as of the first run, stale invitations
// (older than staleAfter) and each customer's freshness.
func AccessReviewReports(staleAfter time.Duration) []Report {
	return []Report{
		{"Who can reach which account today (view access, first 25 rows)",
			`SELECT user_name, customer_id, role_name, coalesce(account_name, CASE WHEN account_id IS NULL THEN 'every account' ELSE account_id::text END) AS account
			   FROM access ORDER BY user_name, customer_id, role_name, account LIMIT 25`, nil},
		{"What changed since the first sync (history tables)",
			`SELECT 'user' AS kind, h.user_id::text AS id, h.user_name AS detail, h.change FROM users_history h
			   WHERE h.run_id = (SELECT max(run_id) FROM sync_runs)
			 UNION ALL
			 SELECT 'role', h.user_id::text, coalesce(r.name, h.role_id::text) || ' @ ' || h.customer_id, h.change FROM user_roles_history h LEFT JOIN roles r USING (role_id)
			   WHERE h.run_id = (SELECT max(run_id) FROM sync_runs)
			 UNION ALL
			 SELECT 'invitation', h.invitation_id::text, h.email, h.change FROM user_invitations_history h
			   WHERE h.run_id = (SELECT max(run_id) FROM sync_runs)
			 ORDER BY 1, 2`, nil},
		{"Listed users the API would not show: kept with their last known details and roles (users.detail_status)",
			`SELECT u.customer_id, u.user_id, u.user_name, u.detail_status, u.detail_error,
			        (SELECT count(*) FROM user_roles r WHERE r.user_id = u.user_id AND r.removed_at IS NULL) AS roles_kept
			   FROM users u WHERE u.removed_at IS NULL AND u.detail_status <> 'ok' ORDER BY u.customer_id, u.user_id`, nil},
		{"Users who are not active (users.lifecycle_status)",
			`SELECT customer_id, user_id, user_name, lifecycle_status FROM users
			  WHERE removed_at IS NULL AND lifecycle_status IS DISTINCT FROM 'Active' AND detail_status = 'ok' ORDER BY customer_id, user_id`, nil},
		{"Access as it was before the second sync (access_as_of)",
			`SELECT count(*) FILTER (WHERE grantee_kind = 'user') AS access_rows_then, (SELECT count(*) FROM access) AS access_rows_now,
			        count(*) FILTER (WHERE grantee_kind = 'agency') AS agency_links_then, (SELECT count(*) FROM active_client_links) AS agency_links_now
			   FROM access_as_of((SELECT finished_at FROM sync_runs ORDER BY run_id LIMIT 1))`, nil},
		{"Agencies that can reach the customers now (view active_client_links)",
			`SELECT managing_customer_name AS agency, type, client_entity_name AS client, status, customer_link_permission AS permission,
			        is_bill_to_client, inviter_email, start_date::date AS since
			   FROM active_client_links ORDER BY agency, client`, nil},
		{"Agency link requests waiting for the client's answer, oldest first (client_links, client_link_statuses.pending)",
			`SELECT l.managing_customer_name AS agency, l.type, l.client_entity_name AS client, l.status, l.inviter_email,
			        now() - l.last_modified_time AS waiting
			   FROM client_links l JOIN client_link_statuses s USING (status)
			  WHERE l.removed_at IS NULL AND s.pending ORDER BY l.last_modified_time`, nil},
		{"Privileged access: who can change users, billing or links (view privileged_access)",
			`SELECT grantee_kind AS kind, grantee_name AS grantee, customer_id, permission, scope,
			        array_to_string(account_names, ', ') AS accounts, held_since::date AS held_since
			   FROM privileged_access ORDER BY customer_id, kind, grantee`, nil},
		{"Who could act on an agency-managed account at the first sync, and who invited the agencies (access_as_of)",
			`WITH x AS (
			     SELECT a.account_id, a.customer_id, a.name FROM accounts a
			       JOIN client_links l ON l.type = 'AccountLink' AND l.client_entity_id = a.account_id
			      ORDER BY a.account_id LIMIT 1)
			 SELECT x.name AS account, g.grantee_kind AS kind, coalesce(g.user_name, g.managing_customer_name) AS who,
			        g.role_name AS access, g.link_status, g.inviter_email, g.inviter_name
			   FROM x JOIN access_as_of((SELECT finished_at FROM sync_runs ORDER BY run_id LIMIT 1)) g
			     ON g.account_id = x.account_id OR (g.account_id IS NULL AND g.customer_id = x.customer_id)
			  ORDER BY kind, who`, nil},
		{"Stale pending invitations: anyone holding the link can accept them (stale_invitations)",
			`SELECT customer_id, email, role_name, expiration_date, estimated_sent_at, expired, age
			   FROM stale_invitations($1::interval) ORDER BY customer_id, email`, []any{staleAfter.String()}},
		{"Freshness per customer (view customer_freshness)",
			`SELECT customer_id, name, last_success_at, last_error FROM customer_freshness ORDER BY customer_id`, nil},
	}
}

// QueryReport runs r with schema first on the search path and returns its
// column names and rows, each value as pgx decodes it.
func QueryReport(ctx context.Context, pool *pgxpool.Pool, schema string, r Report) (columns []string, rows [][]any, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT set_config('search_path', $1, false)", pgx.Identifier{schema}.Sanitize()+", public"); err != nil {
		return nil, nil, err
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "RESET search_path") }()
	res, err := conn.Query(ctx, r.SQL, r.Args...)
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	for _, f := range res.FieldDescriptions() {
		columns = append(columns, f.Name)
	}
	for res.Next() {
		vals, err := res.Values()
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, vals)
	}
	if err := res.Err(); err != nil {
		return nil, nil, err
	}
	return columns, rows, nil
}
