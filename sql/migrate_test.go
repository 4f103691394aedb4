package sql_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/pgtest"
	schemasql "github.com/msads-syncer/syncer/sql"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrationsNamed(t *testing.T) {
	t.Parallel()
	ms, err := schemasql.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("migrations = %v, want 001 first", ms)
	}
}

func TestMigrateIdempotent(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	v, err := schemasql.Migrate(ctx, pool, schema, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := schemasql.Latest(); v != want {
		t.Errorf("version = %d, want %d", v, want)
	}
	var roles int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "roles"}.Sanitize()).Scan(&roles); err != nil {
		t.Fatal(err)
	}
	if roles != 5 {
		t.Errorf("seeded roles = %d, want 5", roles)
	}
}

// An up-to-date schema is recognised without the migration lock: a start
// does not wait behind another process holding it (nor pay for nine
// transactions).
func TestMigrateUpToDateTakesNoLock(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "syncer.migrate:"+schema); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := schemasql.Migrate(short, pool, schema, "", nil)
	if err != nil {
		t.Fatalf("migrate an up-to-date schema while the lock is held: %v", err)
	}
	if want := schemasql.Latest(); v != want {
		t.Errorf("version = %d, want %d", v, want)
	}
}

func TestConcurrentMigrators(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.NewSchemaName()
	ctx := context.Background()
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })

	const n = 4
	var wg sync.WaitGroup
	versions := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			versions[i], errs[i] = schemasql.Migrate(ctx, pool, schema, "", slog.New(slog.DiscardHandler))
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("migrator %d: %v", i, errs[i])
		}
		if versions[i] != schemasql.Latest() {
			t.Errorf("migrator %d version = %d, want %d", i, versions[i], schemasql.Latest())
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != schemasql.Latest() {
		t.Errorf("schema_migrations rows = %d, want %d", rows, schemasql.Latest())
	}
}

func TestReaderRole(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	role := schema + "_reader"
	if _, err := pool.Exec(ctx, "CREATE ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	for range 2 { // idempotent
		if _, err := schemasql.Migrate(ctx, pool, schema, role, nil); err != nil {
			t.Fatal(err)
		}
	}
	var canView, canToken bool
	err := pool.QueryRow(ctx, `SELECT has_table_privilege($1, $2, 'SELECT'), has_table_privilege($1, $3, 'SELECT')`,
		role, schema+".access", schema+".oauth_tokens").Scan(&canView, &canToken)
	if err != nil {
		t.Fatal(err)
	}
	if !canView || canToken {
		t.Errorf("reader can read access = %v (want true), oauth_tokens = %v (want false)", canView, canToken)
	}
	// The reader can use the views and functions.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+role); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"access", "pending_invitations", "customer_freshness", "access_as_of(now())", "stale_invitations('1 day')",
		"access_exceptions", "directory_people_history", "normalize_email('A+b@x.com')"} {
		if _, err := tx.Exec(ctx, "SELECT * FROM "+schema+"."+q); err != nil {
			t.Errorf("reader: SELECT * FROM %s: %v", q, err)
			break
		}
	}
	_ = tx.Rollback(ctx)
}

// A named reader role that does not exist is created NOLOGIN (the shipped
// manifests name one).
func TestReaderRoleCreatedWhenMissing(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	ctx := context.Background()
	role := schema + "_new_reader"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	if _, err := schemasql.Migrate(ctx, pool, schema, role, nil); err != nil {
		t.Fatal(err)
	}
	var canLogin, canView bool
	if err := pool.QueryRow(ctx, `SELECT rolcanlogin, has_table_privilege($1, $2, 'SELECT') FROM pg_roles WHERE rolname = $1`,
		role, schema+".access").Scan(&canLogin, &canView); err != nil {
		t.Fatalf("reader role not created: %v", err)
	}
	if canLogin || !canView {
		t.Errorf("created role: login %v (want false), can read access %v (want true)", canLogin, canView)
	}

}
