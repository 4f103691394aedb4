package sql_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/pgtest"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// exec runs statements with search_path set to the schema.
func execIn(t *testing.T, ctx context.Context, tx pgx.Tx, schema string, stmts ...string) {
	t.Helper()
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", schemasql.SearchPath(schema)); err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// linkRow inserts a current client_links row (removed when removed) and its
// history versions: each (valid_from, status, change), the last one open.
func linkRow(typ string, entity, managing int64, perm string, removed bool, versions ...[3]string) []string {
	p := "NULL"
	if perm != "" {
		p = "'" + perm + "'"
	}
	last := versions[len(versions)-1]
	rm := "NULL"
	if removed {
		rm = "'" + last[0] + "'"
	}
	out := []string{fmt.Sprintf(`INSERT INTO client_links (type, client_entity_id, managing_customer_id, managing_customer_name,
		status, customer_link_permission, inviter_email, inviter_name, searched_from_customer_id, first_seen_at, removed_at)
		VALUES ('%s', %d, %d, 'Agency %d', '%s', %s, 'inviter@agency%d.example', 'Agency %d Inc', 1, '%s', %s)`,
		typ, entity, managing, managing, last[1], p, managing, managing, versions[0][0], rm)}
	for i, v := range versions {
		to := "NULL"
		if i+1 < len(versions) {
			to = "'" + versions[i+1][0] + "'"
		}
		out = append(out, fmt.Sprintf(`INSERT INTO client_links_history (type, client_entity_id, managing_customer_id, valid_from, valid_to,
			change, managing_customer_name, status, customer_link_permission, inviter_email, inviter_name, searched_from_customer_id)
			VALUES ('%s', %d, %d, '%s', %s, '%s', 'Agency %d', '%s', %s, 'inviter@agency%d.example', 'Agency %d Inc', 1)`,
			typ, entity, managing, v[0], to, v[2], managing, v[1], p, managing, managing))
	}
	return out
}

const (
	t0 = "2025-01-01T00:00:00Z"
	t1 = "2025-02-01T00:00:00Z"
	t2 = "2025-03-01T00:00:00Z"
	t3 = "2025-04-01T00:00:00Z"
)

// seedLinks writes, for customer 1 (accounts 11 "Shop", 12 "Brand"), links
// in several statuses, users with roles and their history.
func seedLinks(t *testing.T, ctx context.Context, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, schema string) {
	t.Helper()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	stmts := []string{
		"INSERT INTO customers (customer_id, name) VALUES (1, 'Client One')",
		"INSERT INTO accounts (account_id, customer_id, name) VALUES (11, 1, 'Shop'), (12, 1, 'Brand')",
		// Users: 501 Super Admin since t0; 502 Standard on account 12, removed
		// at t1 and back at t2; 503 Viewer; 504 with an unknown role 999.
		`INSERT INTO users (customer_id, user_id, home_customer_id, user_name, email) VALUES
			(1, 501, 1, 'ann', 'ann@client.example'), (1, 502, 1, 'bob', 'bob@client.example'),
			(1, 503, 1, 'cid', 'cid@client.example'), (1, 504, 1, 'dee', 'dee@client.example')`,
		`INSERT INTO users_history (customer_id, user_id, valid_from, change, home_customer_id, user_name, email) VALUES
			(1, 501, '` + t0 + `', 'added', 1, 'ann', 'ann@client.example'), (1, 502, '` + t0 + `', 'added', 1, 'bob', 'bob@client.example'),
			(1, 503, '` + t0 + `', 'added', 1, 'cid', 'cid@client.example'), (1, 504, '` + t0 + `', 'added', 1, 'dee', 'dee@client.example')`,
		`INSERT INTO user_roles (user_id, customer_id, role_id, account_ids, first_seen_at) VALUES
			(501, 1, 41, NULL, '` + t0 + `'), (502, 1, 203, '{12}', '` + t0 + `'), (503, 1, 100, NULL, '` + t0 + `'), (504, 1, 999, NULL, '` + t0 + `')`,
		`INSERT INTO user_roles_history (user_id, customer_id, role_id, valid_from, valid_to, change, account_ids) VALUES
			(501, 1, 41, '` + t0 + `', NULL, 'added', NULL),
			(502, 1, 203, '` + t0 + `', '` + t1 + `', 'added', '{12}'),
			(502, 1, 203, '` + t1 + `', '` + t2 + `', 'removed', '{12}'),
			(502, 1, 203, '` + t2 + `', NULL, 'reappeared', '{12}'),
			(503, 1, 100, '` + t0 + `', NULL, 'added', NULL),
			(504, 1, 999, '` + t0 + `', NULL, 'added', NULL)`,
	}
	// Agency 900: Administrative customer link into customer 1, pending at
	// t0, Active from t1. Agency 901: account link into 11, Active from t0,
	// Inactive from t2. Agency 902: Standard customer link, Active.
	// Agency 903: account link into 12, UnlinkPending (still grants).
	// Agency 904: account link into 12, LinkPending. Agency 905: account
	// link into 11 with a status no table knows. Agency 906: Active
	// account link into 12, removed.
	stmts = append(stmts, linkRow("CustomerLink", 1, 900, "Administrative", false,
		[3]string{t0, "LinkPending", "added"}, [3]string{t1, "Active", "changed"})...)
	stmts = append(stmts, linkRow("AccountLink", 11, 901, "", false,
		[3]string{t0, "Active", "added"}, [3]string{t2, "Inactive", "changed"})...)
	stmts = append(stmts, linkRow("CustomerLink", 1, 902, "Standard", false, [3]string{t0, "Active", "added"})...)
	stmts = append(stmts, linkRow("AccountLink", 12, 903, "", false,
		[3]string{t0, "Active", "added"}, [3]string{t2, "UnlinkPending", "changed"})...)
	stmts = append(stmts, linkRow("AccountLink", 12, 904, "", false, [3]string{t0, "LinkPending", "added"})...)
	stmts = append(stmts, linkRow("AccountLink", 11, 905, "", false, [3]string{t1, "BrandNewStatus", "added"})...)
	stmts = append(stmts, linkRow("AccountLink", 12, 906, "", true,
		[3]string{t0, "Active", "added"}, [3]string{t1, "Active", "removed"})...)
	execIn(t, ctx, tx, schema, stmts...)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestActiveClientLinks(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	seedLinks(t, ctx, pool, schema)
	type row struct {
		Managing int64
		Status   string
		Client   *int64
	}
	got, err := pgx.CollectRows(must(pool.Query(ctx, "SELECT managing_customer_id, status, client_customer_id FROM "+
		pgx.Identifier{schema, "active_client_links"}.Sanitize()+" ORDER BY 1")), pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, r := range got {
		ids = append(ids, r.Managing)
		if r.Client == nil || *r.Client != 1 {
			t.Errorf("link of %d: client_customer_id %v, want 1 (customer link: the entity; account link: from accounts)", r.Managing, r.Client)
		}
	}
	// 900 Active, 902 Active, 903 UnlinkPending, 905 an unknown status
	// (shown until classified); not 901 Inactive, 904 LinkPending, 906
	// removed.
	if want := []int64{900, 902, 903, 905}; !slices.Equal(ids, want) {
		t.Errorf("active_client_links managing customers = %v, want %v (%+v)", ids, want, got)
	}
}

func TestPrivilegedAccess(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	seedLinks(t, ctx, pool, schema)
	type row struct {
		Kind       string
		Grantee    int64
		Name       *string
		Permission string
		Scope      string
		Accounts   []int64
		Names      []string
		HeldSince  time.Time
		Inviter    *string
	}
	got, err := pgx.CollectRows(must(pool.Query(ctx, `SELECT grantee_kind, grantee_id, grantee_name, permission, scope, account_ids,
		account_names, held_since, inviter_email FROM `+pgx.Identifier{schema, "privileged_access"}.Sanitize()+" ORDER BY 1, 2")),
		pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	ts := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	want := []struct {
		kind    string
		grantee int64
		perm    string
		scope   string
		names   []string
		since   time.Time
	}{
		// The Administrative link: held since it became Active (t1), not
		// since it was first seen pending.
		{"agency", 900, "CustomerLink (Administrative)", "customer", nil, ts(t1)},
		{"user", 501, "Super Admin", "customer", nil, ts(t0)},
		// Removed at t1, back at t2: held since t2.
		{"user", 502, "Standard User", "accounts", []string{"Brand"}, ts(t2)},
		// An unknown role is listed until roles describes it.
		{"user", 504, "Role 999", "customer", nil, ts(t0)},
	}
	if len(got) != len(want) {
		t.Fatalf("privileged_access = %+v, want %d rows", got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.Grantee != w.grantee || g.Permission != w.perm || g.Scope != w.scope ||
			!slices.Equal(g.Names, w.names) || !g.HeldSince.Equal(w.since) {
			t.Errorf("row %d = %+v, want %+v", i, g, w)
		}
	}
	if got[0].Inviter == nil || *got[0].Inviter != "inviter@agency900.example" || got[0].Name == nil || *got[0].Name != "Agency 900" {
		t.Errorf("agency row: name %v inviter %v", got[0].Name, got[0].Inviter)
	}
	// Reclassifying the unknown role (metadata in one table) removes it.
	if _, err := pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "roles"}.Sanitize()+" (role_id, name, privileged) VALUES (999, 'Reader', false)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "privileged_access"}.Sanitize()+" WHERE grantee_id = 504").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("role 999 classified as not privileged: still %d rows", n)
	}
}

// access_as_of gives, at a past time, the people and the agencies that could
// act on an account, with who invited the agencies: the query of the README.
func TestAccessAsOfWithLinks(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	seedLinks(t, ctx, pool, schema)
	q := `WITH x AS (SELECT account_id, customer_id FROM accounts WHERE account_id = $1)
		SELECT a.grantee_kind, coalesce(a.user_id, a.managing_customer_id), coalesce(a.inviter_email, '')
		FROM x JOIN access_as_of($2) a
		  ON a.account_id = x.account_id OR (a.account_id IS NULL AND a.customer_id = x.customer_id)
		ORDER BY 1, 2`
	type row struct {
		Kind    string
		ID      int64
		Inviter string
	}
	at := func(account int64, when string) []row {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		execIn(t, ctx, tx, schema)
		rows, err := pgx.CollectRows(must(tx.Query(ctx, q, account, when)), pgx.RowToStructByPos[row])
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	// Account 11 in mid-January: agency 901's account link (Active), 902's
	// Standard customer link; 900 was still pending. People: 501, 503, 504
	// (customer-wide); 502 only has account 12.
	got := at(11, "2025-01-15T00:00:00Z")
	want := []row{{"agency", 901, "inviter@agency901.example"}, {"agency", 902, "inviter@agency902.example"},
		{"user", 501, ""}, {"user", 503, ""}, {"user", 504, ""}}
	if !slices.Equal(got, want) {
		t.Errorf("account 11 on 15 Jan = %v, want %v", got, want)
	}
	// Account 11 in mid-March: 900 Active since t1, 901 Inactive since t2,
	// 905 unknown status since t1 (shown).
	got = at(11, "2025-03-15T00:00:00Z")
	want = []row{{"agency", 900, "inviter@agency900.example"}, {"agency", 902, "inviter@agency902.example"},
		{"agency", 905, "inviter@agency905.example"}, {"user", 501, ""}, {"user", 503, ""}, {"user", 504, ""}}
	if !slices.Equal(got, want) {
		t.Errorf("account 11 on 15 Mar = %v, want %v", got, want)
	}
	// Account 12 in mid-February: 906 removed at t1, 502's role removed at
	// t1; 903 Active; 904 pending.
	got = at(12, "2025-02-15T00:00:00Z")
	want = []row{{"agency", 900, "inviter@agency900.example"}, {"agency", 902, "inviter@agency902.example"},
		{"agency", 903, "inviter@agency903.example"}, {"user", 501, ""}, {"user", 503, ""}, {"user", 504, ""}}
	if !slices.Equal(got, want) {
		t.Errorf("account 12 on 15 Feb = %v, want %v", got, want)
	}
}

// A client link whose permission client_link_permissions does not describe
// (a customer link with a permission new to it, or none) is listed in
// privileged_access until classified, as an unknown role is: an access
// review must not miss a grant because its kind is new.
func TestPrivilegedAccessUnknownLinkPermission(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	seedLinks(t, ctx, pool, schema)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var stmts []string
	stmts = append(stmts, linkRow("CustomerLink", 1, 907, "LinkedEntityOnly", false, [3]string{t0, "Active", "added"})...)
	stmts = append(stmts, linkRow("CustomerLink", 1, 908, "", false, [3]string{t1, "Active", "added"})...)
	stmts = append(stmts, linkRow("PartnerLink", 12, 909, "", false, [3]string{t1, "Active", "added"})...)
	execIn(t, ctx, tx, schema, stmts...)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	q := `SELECT grantee_id || ' ' || permission || ' ' || scope || ' ' || customer_id || ' ' || coalesce(array_to_string(account_names, ','), '-')
		|| ' ' || coalesce(can_manage_users::text, 'unknown') FROM ` + pgx.Identifier{schema, "privileged_access"}.Sanitize() +
		` WHERE grantee_kind = 'agency' ORDER BY grantee_id`
	got, err := pgx.CollectRows(must(pool.Query(ctx, q)), pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"900 CustomerLink (Administrative) customer 1 - true",
		"907 CustomerLink (LinkedEntityOnly) customer 1 - unknown",
		"908 CustomerLink customer 1 - unknown",
		"909 PartnerLink accounts 1 Brand unknown",
	}
	if !slices.Equal(got, want) {
		t.Errorf("agency grants:\n got %q\nwant %q", got, want)
	}
	// An evidence pack's privileged access as of now lists the same
	// agencies, and its independent count agrees.
	for _, pop := range load.Populations {
		if pop.Name != "privileged_access" {
			continue
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		execIn(t, ctx, tx, schema)
		rows, err := tx.Query(ctx, "SELECT p.grantee_id FROM ("+pop.SQL+") p WHERE p.grantee_kind = 'agency' ORDER BY 1", time.Now(), []int64{})
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, []int64{900, 907, 908, 909}) {
			t.Errorf("evidence privileged_access agencies = %v, want the view's 900 907 908 909", ids)
		}
		var packRows, checked int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM ("+pop.SQL+") p", time.Now(), []int64{}).Scan(&packRows); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(sum(n), 0)::bigint FROM ("+pop.CheckSQL+") c (customer_id, n)", time.Now(), []int64{}).Scan(&checked); err != nil {
			t.Fatal(err)
		}
		if packRows != checked {
			t.Errorf("evidence privileged_access: %d rows, its independent check counts %d", packRows, checked)
		}
		_ = tx.Rollback(ctx)
	}
	// Classified as not privileged: no longer listed.
	if _, err := pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "client_link_permissions"}.Sanitize()+
		" (link_type, customer_link_permission, privileged) VALUES ('CustomerLink', 'LinkedEntityOnly', false)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "privileged_access"}.Sanitize()+" WHERE grantee_id = 907").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("LinkedEntityOnly classified as not privileged: still %d rows", n)
	}
}
