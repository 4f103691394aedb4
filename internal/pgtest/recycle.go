package pgtest

// Recycled schemas. Migrating a schema is some sixty DDL statements, and
// dropping it as many again; a few hundred tests each doing both were the
// largest share of the shared server's work in `make test` (every DDL
// statement also sends catalog invalidations to every other session). So a
// schema a test is done with is emptied back to what the migrations left
// and handed to the next test, instead of dropped:
//
//   - a seed schema, pgtest_seed_<hash of the migrations>, is migrated once
//     per database (under an advisory lock, by whichever test binary comes
//     first) and never used by a test: the rows the migrations inserted
//     are copied back from it;
//   - a schema is handed out with its catalog version (catalogSQL: the row
//     versions of every catalog row that describes it or an object in
//     it), read right after its migration; when the test ends, the schema
//     is recycled only when its catalog version is still that one (no
//     DDL, grant or option touched it) and it holds little data: every
//     table is emptied (children first), the seed's rows and sequence
//     positions are copied back, and the schema goes on the free list with
//     its version, all in one transaction. Any other schema is dropped as
//     before;
//   - Schema takes a free schema of the current seed when there is one
//     (FOR UPDATE SKIP LOCKED: test binaries of `make test` share the list),
//     else migrates a new one.
//
// The control tables live in the schema pgtest_pool. On a long-lived
// TEST_DATABASE_URL server the free schemas stay between runs (at most as
// many as tests ran at once); a change of the migrations makes a new seed
// and the old seed's schemas are dropped when it is made.

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	schemasql "github.com/msads-syncer/syncer/sql"
)

// maxRecycledBytes: a schema holding more than this is dropped rather than
// emptied (a DELETE of much data costs more than a migration).
const maxRecycledBytes = 16 << 20

// seed is the pristine schema of the current migrations.
type seed struct {
	name string
	// tables in an order where a table comes after those it references;
	// filled: the tables with rows in the seed, with their insertable
	// columns; sequences: every sequence.
	tables    []string
	filled    map[string][]string
	sequences []string
}

var (
	seedMu  sync.Mutex
	theSeed *seed
)

// seedFor returns the seed of the current migrations, making it when this
// database has none.
func seedFor(ctx context.Context, p *pgxpool.Pool) (*seed, error) {
	seedMu.Lock()
	defer seedMu.Unlock()
	if theSeed != nil {
		return theSeed, nil
	}
	ms, err := schemasql.Migrations()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%s\x00%s\x00", m.Name, m.SQL)
	}
	s := &seed{name: "pgtest_seed_" + hex.EncodeToString(h.Sum(nil)[:6])}

	conn, err := p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	const lock = "SELECT pg_advisory_lock(hashtextextended('syncer.pgtest.seed', 0))"
	if _, err := conn.Exec(ctx, lock); err != nil {
		return nil, err
	}
	defer func() {
		_, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtextextended('syncer.pgtest.seed', 0))")
	}()
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS pgtest_pool;
CREATE TABLE IF NOT EXISTS pgtest_pool.seeds (name text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pgtest_pool.free_schemas (schema_name text PRIMARY KEY, seed text NOT NULL, version text NOT NULL)`); err != nil {
		return nil, fmt.Errorf("create pgtest_pool: %w", err)
	}
	var made bool
	err = conn.QueryRow(ctx, "SELECT true FROM pgtest_pool.seeds WHERE name = $1", s.name).Scan(&made)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := makeSeed(ctx, p, conn.Conn(), s); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if err := s.describe(ctx, conn.Conn()); err != nil {
		return nil, err
	}
	theSeed = s
	return s, nil
}

// makeSeed migrates the seed schema and records it; the free schemas and
// seeds of other migrations are dropped.
func makeSeed(ctx context.Context, p *pgxpool.Pool, conn *pgx.Conn, s *seed) error {
	rows, err := conn.Query(ctx, `SELECT schema_name FROM pgtest_pool.free_schemas WHERE seed <> $1
UNION SELECT name FROM pgtest_pool.seeds WHERE name <> $1 UNION SELECT $1`, s.name)
	if err != nil {
		return err
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range stale {
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident(n)+" CASCADE"); err != nil {
			return fmt.Errorf("drop stale schema %s: %w", n, err)
		}
	}
	if _, err := conn.Exec(ctx, "DELETE FROM pgtest_pool.free_schemas WHERE seed <> $1", s.name); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DELETE FROM pgtest_pool.seeds WHERE name <> $1", s.name); err != nil {
		return err
	}
	if _, err := schemasql.Migrate(ctx, p, s.name, "", slog.New(slog.DiscardHandler)); err != nil {
		return fmt.Errorf("migrate %s: %w", s.name, err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO pgtest_pool.seeds (name) VALUES ($1)", s.name)
	return err
}

// describe reads the seed's tables (ordered parents first), which of them
// have rows, and its sequences.
func (s *seed) describe(ctx context.Context, conn *pgx.Conn) error {
	type rel struct {
		name string
		kind string
		cols []string
		refs []string
	}
	rows, err := conn.Query(ctx, `SELECT c.relname, c.relkind::text,
    coalesce((SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}'),
    coalesce((SELECT array_agg(DISTINCT f.relname) FROM pg_constraint k JOIN pg_class f ON f.oid = k.confrelid
              WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid), '{}')
FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'S')
ORDER BY c.relname`, ident(s.name))
	if err != nil {
		return err
	}
	rels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rel, error) {
		var x rel
		err := r.Scan(&x.name, &x.kind, &x.cols, &x.refs)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("describe %s: %w", s.name, err)
	}
	byName := map[string]rel{}
	for _, r := range rels {
		if r.kind == "S" {
			s.sequences = append(s.sequences, r.name)
		} else {
			byName[r.name] = r
		}
	}
	// Parents first (a depth-first walk of the references).
	done := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if done[n] {
			return
		}
		done[n] = true
		for _, ref := range byName[n].refs {
			if _, ok := byName[ref]; ok {
				visit(ref)
			}
		}
		s.tables = append(s.tables, n)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.SortFunc(names, cmp.Compare)
	for _, n := range names {
		visit(n)
	}
	s.filled = map[string][]string{}
	for _, n := range s.tables {
		var any bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+ident(s.name)+"."+ident(n)+")").Scan(&any); err != nil {
			return fmt.Errorf("describe %s: %w", s.name, err)
		}
		if any {
			s.filled[n] = byName[n].cols
		}
	}
	return nil
}

// resetSQL empties schema back to the seed and puts it on the free list
// with its catalog version: statements of one simple query, so one
// transaction.
func (s *seed) resetSQL(schema, version string) string {
	var b strings.Builder
	to, from := ident(schema), ident(s.name)
	for _, t := range slices.Backward(s.tables) {
		fmt.Fprintf(&b, "DELETE FROM %s.%s;\n", to, ident(t))
	}
	for _, t := range s.tables {
		if cols, ok := s.filled[t]; ok {
			list := strings.Join(cols, ", ")
			fmt.Fprintf(&b, "INSERT INTO %s.%s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s.%s;\n", to, ident(t), list, list, from, ident(t))
		}
	}
	for _, q := range s.sequences {
		fmt.Fprintf(&b, "SELECT setval('%s.%s', last_value, is_called) FROM %s.%s;\n",
			strings.ReplaceAll(to, "'", "''"), strings.ReplaceAll(ident(q), "'", "''"), from, ident(q))
	}
	fmt.Fprintf(&b, "INSERT INTO pgtest_pool.free_schemas (schema_name, seed, version) VALUES ('%s', '%s', '%s');\n",
		strings.ReplaceAll(schema, "'", "''"), strings.ReplaceAll(s.name, "'", "''"), strings.ReplaceAll(version, "'", "''"))
	return b.String()
}

// catalogSQL returns a version of a schema's catalog, and its tables' size:
// a digest of the row versions (xmin) of the catalog rows that describe the
// schema or an object in it (the schema, its relations, their columns,
// defaults, constraints, indexes, triggers, rules, policies, sequences,
// extended statistics and comments, its functions, types, operators,
// operator classes, collations, conversions, text search configurations
// and default privileges). A DDL statement, grant, owner or option change
// on those writes a new version of one of those rows, or adds or deletes
// one; data changes, ANALYZE and VACUUM (which update pg_class in place)
// do not. A TRUNCATE does (a new relfilenode): such a schema is dropped,
// not recycled. Objects elsewhere that depend on the schema (a view in
// another schema) are not looked at: the emptying fails on them, or a DROP
// SCHEMA ... CASCADE would have removed them. The rows of each relation are
// found through the catalogs' indexes on it (correlated subqueries), not by
// scanning catalogs that hold every test's schema.
const catalogSQL = `
WITH ns AS (SELECT oid, xmin FROM pg_namespace WHERE nspname = $1),
rel AS (SELECT c.oid, c.xmin, c.relkind FROM pg_class c, ns WHERE c.relnamespace = ns.oid),
v(x) AS (
    SELECT 'n' || xmin::text FROM ns
    UNION ALL
    SELECT 'c' || rel.xmin::text
        || ' a' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.attnum) FROM pg_attribute o WHERE o.attrelid = rel.oid), '')
        || ' d' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.adnum) FROM pg_attrdef o WHERE o.adrelid = rel.oid), '')
        || ' k' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.oid) FROM pg_constraint o WHERE o.conrelid = rel.oid), '')
        || ' i' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.indexrelid) FROM pg_index o WHERE o.indrelid = rel.oid), '')
        || ' t' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.oid) FROM pg_trigger o WHERE o.tgrelid = rel.oid), '')
        || ' r' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.oid) FROM pg_rewrite o WHERE o.ev_class = rel.oid), '')
        || ' p' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.oid) FROM pg_policy o WHERE o.polrelid = rel.oid), '')
        || ' q' || coalesce((SELECT o.xmin::text FROM pg_sequence o WHERE o.seqrelid = rel.oid), '')
        || ' m' || coalesce((SELECT string_agg(o.xmin::text, ',' ORDER BY o.objsubid) FROM pg_description o
                             WHERE o.objoid = rel.oid AND o.classoid = 'pg_class'::regclass), '')
    FROM rel
    UNION ALL SELECT 'e' || e.xmin::text FROM pg_statistic_ext e, ns WHERE e.stxnamespace = ns.oid
    UNION ALL SELECT 'f' || f.xmin::text || coalesce(' m' || (SELECT string_agg(o.xmin::text, ',') FROM pg_description o
                             WHERE o.objoid = f.oid AND o.classoid = 'pg_proc'::regclass), '')
        FROM pg_proc f, ns WHERE f.pronamespace = ns.oid
    UNION ALL SELECT 'm' || o.xmin::text FROM pg_description o, ns WHERE o.objoid = ns.oid AND o.classoid = 'pg_namespace'::regclass
    UNION ALL SELECT 'o' || o.xmin::text FROM pg_operator o, ns WHERE o.oprnamespace = ns.oid
    UNION ALL SELECT 'l' || o.xmin::text FROM pg_collation o, ns WHERE o.collnamespace = ns.oid
    UNION ALL SELECT 'g' || o.xmin::text FROM pg_opclass o, ns WHERE o.opcnamespace = ns.oid
    UNION ALL SELECT 'v' || o.xmin::text FROM pg_conversion o, ns WHERE o.connamespace = ns.oid
    UNION ALL SELECT 's' || o.xmin::text FROM pg_ts_config o, ns WHERE o.cfgnamespace = ns.oid
    UNION ALL SELECT 'y' || y.xmin::text FROM pg_type y, ns WHERE y.typnamespace = ns.oid
    UNION ALL SELECT 'x' || x.xmin::text FROM pg_default_acl x, ns WHERE x.defaclnamespace = ns.oid
)
SELECT (SELECT md5(string_agg(x, ',' ORDER BY x)) FROM v WHERE EXISTS (SELECT 1 FROM ns)),
    CASE WHEN $2 THEN coalesce((SELECT sum(pg_total_relation_size(oid)) FROM rel WHERE relkind = 'r'), 0) ELSE 0 END::bigint`

// catalogVersion returns schema's catalog version (catalogSQL) and, when
// sized, its tables' size (0 otherwise). The size opens every relation of
// the schema, building the session's cache entries for them (most of the
// query's cost on a schema the session has not used): recycle asks it on
// the connection that then empties the schema, which opens them anyway.
// JIT is off for the query: its estimate (a subquery per relation, on
// catalogs holding every test's schemas) passes jit_above_cost, and
// compiling it took 40 ms a call, four times its run. Its plan is the
// generic one, made once per pooled connection: planning it took ~5 ms a
// call, as much as running it (1.33 → 0.52 s of planning over a whole
// `make test`, pg_stat_statements).
func catalogVersion(ctx context.Context, q interface {
	Begin(context.Context) (pgx.Tx, error)
}, schema string, sized bool) (string, int64, error) {
	var version *string
	var size int64
	err := pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL jit = off; SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, catalogSQL, schema, sized).Scan(&version, &size)
	})
	if err != nil {
		return "", 0, fmt.Errorf("catalog version of %s: %w", schema, err)
	}
	if version == nil {
		return "", 0, fmt.Errorf("catalog version of %s: %w", schema, errNoSchema)
	}
	return *version, size, nil
}

// takeFree returns a free schema of s and its catalog version, or "" when
// there is none. An entry whose schema is gone (dropped by hand) is skipped
// and forgotten.
func takeFree(ctx context.Context, p *pgxpool.Pool, s *seed) (name, version string, err error) {
	for {
		var exists bool
		err := p.QueryRow(ctx, `DELETE FROM pgtest_pool.free_schemas WHERE schema_name =
    (SELECT schema_name FROM pgtest_pool.free_schemas WHERE seed = $1 LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING schema_name, version, to_regnamespace(quote_ident(schema_name)) IS NOT NULL`, s.name).Scan(&name, &version, &exists)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", "", nil
		}
		if err != nil || exists {
			return name, version, err
		}
	}
}

// recycle empties schema back to the seed and frees it when its catalog
// version is still version (the test changed no object of it) and it holds
// little data, and reports whether it did; otherwise the caller drops it.
func recycle(ctx context.Context, p *pgxpool.Pool, s *seed, schema, version string) (bool, error) {
	if version == "" {
		return false, nil
	}
	c, err := p.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer c.Release()
	now, size, err := catalogVersion(ctx, c, schema, true)
	if err != nil {
		return false, err
	}
	if now != version || size > maxRecycledBytes {
		return false, nil
	}
	if _, err := c.Exec(ctx, s.resetSQL(schema, version)); err != nil {
		// A reply lost after the commit: the schema is on the free list
		// already, and another test may have it; it must not be dropped.
		var free bool
		if qerr := p.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pgtest_pool.free_schemas WHERE schema_name = $1)", schema).Scan(&free); qerr == nil && free {
			return true, nil
		}
		return false, fmt.Errorf("empty %s: %w", schema, err)
	}
	return true, nil
}

// errNoSchema: the schema is gone (a test may drop its own).
var errNoSchema = errors.New("no such schema")

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
