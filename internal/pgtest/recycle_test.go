package pgtest

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	schemasql "github.com/msads-syncer/syncer/sql"
)

// poolAndSeed returns the test pool and the seed of the current migrations.
func poolAndSeed(t *testing.T) (*pgxpool.Pool, *seed) {
	t.Helper()
	p := Pool(t)
	s, err := seedFor(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return p, s
}

// givenAway holds the schemas migrated made that another test took off the
// free list (see takeBack): theirs now, not dropped by the test that made
// them.
var givenAway sync.Map

// migrated returns a new migrated schema, which the test drops itself, and
// its catalog version.
func migrated(t *testing.T) (string, string) {
	t.Helper()
	p := Pool(t)
	n := NewSchemaName()
	t.Cleanup(func() {
		if _, taken := givenAway.Load(n); !taken {
			_, _ = p.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+ident(n)+" CASCADE")
		}
	})
	if _, err := schemasql.Migrate(t.Context(), p, n, "", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	v, _, err := catalogVersion(t.Context(), p, n, false)
	if err != nil {
		t.Fatal(err)
	}
	return n, v
}

// takeBack takes schema n, which recycle has just freed, off the free list
// again, so that no other test gets it. A test of any package sharing the
// cluster may have taken it in between: then it is that test's, and this
// one stops without changing or dropping it.
func takeBack(t *testing.T, p *pgxpool.Pool, n string) {
	t.Helper()
	tag, err := p.Exec(t.Context(), "DELETE FROM pgtest_pool.free_schemas WHERE schema_name = $1", n)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		givenAway.Store(n, true)
		t.Fatalf("recycled schema %s is not on the free list (another test took it, or recycle did not free it)", n)
	}
}

func count(t *testing.T, sql string) int {
	t.Helper()
	var n int
	if err := Pool(t).QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// A schema a test wrote to comes back as migrated: no test rows, the rows
// the migrations insert, and the sequences where a new schema has them.
func TestRecycledSchemaIsAsMigrated(t *testing.T) {
	p, s := poolAndSeed(t)
	ctx := t.Context()
	n, v := migrated(t)
	q := func(sql string) string { return replaceS(sql, ident(n)) }
	roles := count(t, q("SELECT count(*) FROM S.roles"))
	if roles == 0 {
		t.Fatal("the migrations insert roles: the test cannot see them restored")
	}
	for _, sql := range []string{
		"INSERT INTO S.sync_runs (status) VALUES ('running'), ('running')",
		"INSERT INTO S.customers (customer_id, name) VALUES (1, 'c')",
		"INSERT INTO S.customer_syncs (run_id, customer_id, status, started_at) SELECT max(run_id), 1, 'succeeded', now() FROM S.sync_runs",
		"INSERT INTO S.users (customer_id, user_id, user_name) VALUES (1, 2, 'u')",
		"DELETE FROM S.roles WHERE role_id = 41",
		"UPDATE S.roles SET name = 'x'",
	} {
		if _, err := p.Exec(ctx, q(sql)); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	ok, err := recycle(ctx, p, s, n, v)
	if err != nil || !ok {
		t.Fatalf("recycle = %v, %v; want true", ok, err)
	}
	takeBack(t, p, n) // it is on the free list, once
	for _, c := range []struct {
		sql  string
		want int
	}{
		{"SELECT count(*) FROM S.users", 0},
		{"SELECT count(*) FROM S.customers", 0},
		{"SELECT count(*) FROM S.customer_syncs", 0},
		{"SELECT count(*) FROM S.sync_runs", 0},
		{"SELECT count(*) FROM S.roles", roles},
		{"SELECT count(*) FROM S.roles WHERE name = 'x'", 0},
		{"SELECT count(*) FROM S.roles WHERE role_id = 41", 1},
		{"SELECT count(*) FROM (SELECT * FROM S.roles EXCEPT SELECT * FROM " + ident(s.name) + ".roles) d", 0},
	} {
		if got := count(t, q(c.sql)); got != c.want {
			t.Errorf("after recycling, %s = %d, want %d", c.sql, got, c.want)
		}
	}
	// The identity sequence starts over: the next run is run 1, as in a new schema.
	var id int
	if err := p.QueryRow(ctx, q("INSERT INTO S.sync_runs (status) VALUES ('running') RETURNING run_id")).Scan(&id); err != nil || id != 1 {
		t.Errorf("first run_id after recycling = %d (%v), want 1", id, err)
	}
}

// A schema any of whose objects a test changed is not recycled.
func TestChangedSchemaIsNotRecycled(t *testing.T) {
	p, s := poolAndSeed(t)
	ctx := t.Context()
	n, v := migrated(t)
	// The check passes an unchanged schema (the test below can fail); it
	// is taken off the free list again, since the changes below are made
	// to it and migrated drops it. What a test does to the data (and
	// ANALYZE) changes no object.
	for _, q := range []string{"INSERT INTO S.customers (customer_id, name) VALUES (1, 'c')", "ANALYZE S.customers", "VACUUM S.users"} {
		if _, err := p.Exec(ctx, replaceS(q, ident(n))); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := recycle(ctx, p, s, n, v); !ok || err != nil {
		t.Errorf("unchanged schema: recycle = %v, %v; want true", ok, err)
	}
	takeBack(t, p, n)
	for _, change := range []string{
		"CREATE TABLE S.extra (a int)",
		"ALTER TABLE S.users ADD COLUMN extra int",
		"ALTER TABLE S.users ALTER COLUMN email SET DEFAULT 'x'",
		"CREATE INDEX ON S.users (email)",
		"ALTER TABLE S.users DROP CONSTRAINT users_pkey CASCADE",
		"CREATE FUNCTION S.f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; CREATE TRIGGER t BEFORE INSERT ON S.users FOR EACH ROW EXECUTE FUNCTION S.f()",
		"CREATE OR REPLACE VIEW S.customer_freshness AS SELECT * FROM S.customer_freshness WHERE false",
		"CREATE OR REPLACE FUNCTION S.normalize_email(address text) RETURNS text LANGUAGE sql AS $$SELECT address$$",
		"GRANT SELECT ON S.users TO PUBLIC",
		"REVOKE ALL ON SCHEMA S FROM PUBLIC; GRANT USAGE ON SCHEMA S TO PUBLIC",
		"ALTER TABLE S.users SET (autovacuum_enabled = off)",
		"COMMENT ON TABLE S.users IS 'x'",
		"CREATE COLLATION S.c2 FROM \"C\"",
	} {
		// Each change in a transaction that is rolled back: one schema
		// serves them all (a migration each would be most of the test).
		tx, err := p.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, replaceS(change, ident(n))); err != nil {
			t.Fatalf("%s: %v", change, err)
		}
		if now, _, err := catalogVersion(ctx, tx, n, false); err != nil || now == v {
			t.Errorf("after %q: catalog version %q, %v; want one other than %q", change, now, err, v)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// recycle drops (does not free) a schema whose catalog version changed.
	if _, err := p.Exec(ctx, replaceS("COMMENT ON TABLE S.users IS 'x'", ident(n))); err != nil {
		t.Fatal(err)
	}
	if ok, err := recycle(ctx, p, s, n, v); ok || err != nil {
		t.Errorf("after a change: recycle = %v, %v; want false (drop it)", ok, err)
	}
}

// replaceS qualifies "S." and " S " names with schema.
func replaceS(sql, schema string) string {
	r := strings.NewReplacer("S.", schema+".", "SCHEMA S ", "SCHEMA "+schema+" ")
	return r.Replace(sql)
}

// A free-list entry whose schema was dropped by hand is never handed out.
func TestDroppedFreeSchemaIsSkipped(t *testing.T) {
	p, s := poolAndSeed(t)
	ctx := t.Context()
	gone := NewSchemaName()
	if _, err := p.Exec(ctx, "INSERT INTO pgtest_pool.free_schemas (schema_name, seed, version) VALUES ($1, $2, 'x')", gone, s.name); err != nil {
		t.Fatal(err)
	}
	var taken, versions []string
	defer func() {
		for i, n := range taken { // back on the list for other tests
			_, _ = p.Exec(context.Background(), "INSERT INTO pgtest_pool.free_schemas (schema_name, seed, version) VALUES ($1, $2, $3)", n, s.name, versions[i])
		}
	}()
	for {
		n, v, err := takeFree(ctx, p, s)
		if err != nil {
			t.Fatal(err)
		}
		if n == "" {
			break
		}
		if n == gone {
			t.Fatalf("takeFree handed out %s, which does not exist", n)
		}
		taken, versions = append(taken, n), append(versions, v)
	}
	if got := count(t, "SELECT count(*) FROM pgtest_pool.free_schemas WHERE schema_name = '"+gone+"'"); got != 0 {
		t.Errorf("the dropped schema's entry is still on the free list")
	}
}

// A schema its test dropped itself is neither recycled nor reported: recycle
// says it is gone (errNoSchema), which Schema's cleanup takes as done.
func TestRecycleOfADroppedSchema(t *testing.T) {
	t.Parallel()
	p, s := poolAndSeed(t)
	n, v := migrated(t)
	if _, err := p.Exec(t.Context(), "DROP SCHEMA "+ident(n)+" CASCADE"); err != nil {
		t.Fatal(err)
	}
	ok, err := recycle(t.Context(), p, s, n, v)
	if ok || !errors.Is(err, errNoSchema) {
		t.Fatalf("recycle of a dropped schema = %v, %v; want false, errNoSchema", ok, err)
	}
}
