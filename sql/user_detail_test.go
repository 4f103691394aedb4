package sql_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/pgtest"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// A schema at version 1 with data and a hand-made grant on access_as_of:
// 002 keeps the rows (detail_status 'ok'), the grant and the revoked PUBLIC
// execute, and the new columns are there.
func TestUserDetailMigrationOnVersion1(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.NewSchemaName()
	ctx := context.Background()
	s := pgx.Identifier{schema}.Sanitize()
	role := schema + "_auditor"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+s+" CASCADE")
		_, _ = pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	ms, err := schemasql.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[1].Name != "002_user_detail.sql" {
		t.Fatalf("migrations = %v, want 002_user_detail.sql second", ms)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, q := range []string{
			"CREATE SCHEMA " + s,
			"CREATE TABLE " + s + ".schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
			"SET LOCAL search_path TO " + schemasql.SearchPath(schema),
			ms[0].SQL,
			"INSERT INTO schema_migrations (version, name) VALUES (1, '001_init.sql')",
			"INSERT INTO users (customer_id, user_id, home_customer_id, user_name) VALUES (1, 10, 1, 'ten')",
			"INSERT INTO users_history (customer_id, user_id, valid_from, change, user_name) VALUES (1, 10, now(), 'added', 'ten')",
			"INSERT INTO user_roles (user_id, customer_id, role_id, account_ids) VALUES (10, 1, 41, NULL), (10, 2, 100, '{}')",
			"CREATE ROLE " + role + " NOLOGIN",
			"GRANT USAGE ON SCHEMA " + s + " TO " + role,
			"REVOKE EXECUTE ON FUNCTION access_as_of(timestamptz) FROM PUBLIC",
			"GRANT EXECUTE ON FUNCTION access_as_of(timestamptz) TO " + role,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemasql.Migrate(ctx, pool, schema, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v != schemasql.Latest() {
		t.Errorf("version = %d, want %d", v, schemasql.Latest())
	}
	var auditor, public bool
	if err := pool.QueryRow(ctx, `SELECT has_function_privilege($1, $2, 'EXECUTE'),
		coalesce((SELECT bool_or(a.grantee = 0) FROM pg_proc p, aclexplode(p.proacl) a WHERE p.oid = $2::regprocedure), true)`,
		role, schema+".access_as_of(timestamptz)").Scan(&auditor, &public); err != nil {
		t.Fatal(err)
	}
	if !auditor || public {
		t.Errorf("after 002: auditor can execute access_as_of = %v (want true), PUBLIC can = %v (want false)", auditor, public)
	}
	var status string
	var rows int
	if err := pool.QueryRow(ctx, "SELECT (SELECT detail_status FROM "+s+".users), (SELECT count(*) FROM "+s+".users_history WHERE detail_status = 'ok')").Scan(&status, &rows); err != nil {
		t.Fatal(err)
	}
	if status != "ok" || rows != 1 {
		t.Errorf("existing rows: detail_status %q, ok history rows %d; want ok and 1", status, rows)
	}
	// The new columns, in order after the old ones; '{}' has no access row.
	got, err := pgx.CollectRows(must(pool.Query(ctx, "SELECT user_id, customer_id, account_id IS NULL, lifecycle_status IS NULL, detail_status FROM "+s+".access")),
		pgx.RowToStructByPos[accessRow])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Customer != 1 || !got[0].AllAccounts || !got[0].NoLifecycle || got[0].Detail != "ok" {
		t.Errorf("access = %+v, want one row for customer 1 (all accounts, detail ok)", got)
	}
	cols := func(rel string) []string {
		names, err := pgx.CollectRows(must(pool.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum`, schema+"."+rel)), pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	want := []string{"user_id", "user_name", "email", "customer_id", "role_id", "role_name", "account_id", "account_name", "lifecycle_status", "detail_status"}
	if got := cols("access"); !slices.Equal(got, want) {
		t.Errorf("access columns = %v, want %v", got, want)
	}
	if _, err := pool.Exec(ctx, "SELECT principal_user_id, principal_user_name FROM "+s+".sync_runs; SELECT users_unreadable FROM "+s+".customer_syncs"); err != nil {
		t.Error(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO "+s+".users (customer_id, user_id, detail_status) VALUES (1, 11, 'bogus')"); err == nil {
		t.Error("detail_status 'bogus' accepted")
	}
	if _, err := pool.Exec(ctx, "INSERT INTO "+s+".users (customer_id, user_id, detail_error) VALUES (1, 12, 'x')"); err == nil {
		t.Error("detail_error on an ok row accepted")
	}
}

type accessRow struct {
	User, Customer int64
	AllAccounts    bool
	NoLifecycle    bool
	Detail         string
}

func must(r pgx.Rows, err error) pgx.Rows {
	if err != nil {
		panic(err)
	}
	return r
}
