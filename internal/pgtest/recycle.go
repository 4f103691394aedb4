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
//     first) and never used by a test; its catalog fingerprint and the rows
//     the migrations inserted are what "as migrated" means;
//   - when a test ends, its schema is recycled only when its fingerprint
//     (tables, columns, defaults, constraints, indexes, triggers, views,
//     functions, owners, privileges, options: everything a test could
//     alter) equals the seed's and it holds little data: every table is
//     emptied (children first), the seed's rows and sequence positions are
//     copied back, and the schema is put on the free list, all in one
//     transaction. Any other schema is dropped as before;
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
	name        string
	fingerprint string
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
CREATE TABLE IF NOT EXISTS pgtest_pool.seeds (name text PRIMARY KEY, fingerprint text NOT NULL);
CREATE TABLE IF NOT EXISTS pgtest_pool.free (schema_name text PRIMARY KEY, seed text NOT NULL)`); err != nil {
		return nil, fmt.Errorf("create pgtest_pool: %w", err)
	}
	err = conn.QueryRow(ctx, "SELECT fingerprint FROM pgtest_pool.seeds WHERE name = $1", s.name).Scan(&s.fingerprint)
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

// makeSeed migrates the seed schema and records its fingerprint; the free
// schemas and seeds of other migrations are dropped.
func makeSeed(ctx context.Context, p *pgxpool.Pool, conn *pgx.Conn, s *seed) error {
	rows, err := conn.Query(ctx, `SELECT schema_name FROM pgtest_pool.free WHERE seed <> $1
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
	if _, err := conn.Exec(ctx, "DELETE FROM pgtest_pool.free WHERE seed <> $1", s.name); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DELETE FROM pgtest_pool.seeds WHERE name <> $1", s.name); err != nil {
		return err
	}
	if _, err := schemasql.Migrate(ctx, p, s.name, "", slog.New(slog.DiscardHandler)); err != nil {
		return fmt.Errorf("migrate %s: %w", s.name, err)
	}
	fp, _, err := fingerprint(ctx, conn, s.name)
	if err != nil {
		return err
	}
	s.fingerprint = fp
	_, err = conn.Exec(ctx, "INSERT INTO pgtest_pool.seeds (name, fingerprint) VALUES ($1, $2)", s.name, fp)
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

// resetSQL empties schema back to the seed and puts it on the free list:
// statements of one simple query, so one transaction.
func (s *seed) resetSQL(schema string) string {
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
	fmt.Fprintf(&b, "INSERT INTO pgtest_pool.free (schema_name, seed) VALUES ('%s', '%s');\n",
		strings.ReplaceAll(schema, "'", "''"), strings.ReplaceAll(s.name, "'", "''"))
	return b.String()
}

// fingerprintSQL describes a schema's catalog as text (the schema's own
// name replaced by $S) and measures its tables' size. Run with the schema
// alone on the search_path, so names print unqualified.
const fingerprintSQL = `
WITH ns AS (SELECT oid, nspname, nspacl, nspowner FROM pg_namespace WHERE nspname = $1),
rel AS (SELECT c.* FROM pg_class c, ns WHERE c.relnamespace = ns.oid),
lines AS (
    SELECT 'n ' || coalesce(nspacl::text, '') || ' ' || nspowner::regrole::text AS x FROM ns
    UNION ALL
    SELECT 'c ' || relname || ' ' || relkind::text || relpersistence::text || relrowsecurity::text || ' ' || relowner::regrole::text || ' '
        || coalesce(relacl::text, '') || ' ' || coalesce(reloptions::text, '') FROM rel
    UNION ALL
    SELECT 'a ' || c.relname || '.' || a.attname || ' ' || a.attnum::text || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
        || a.attnotnull::text || a.attgenerated::text || a.attidentity::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' '
        || coalesce(a.attacl::text, '')
    FROM rel c JOIN pg_attribute a ON a.attrelid = c.oid
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'k ' || conname || ' ' || pg_get_constraintdef(k.oid) FROM pg_constraint k, ns WHERE k.connamespace = ns.oid
    UNION ALL
    SELECT 'i ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rel c ON c.oid = i.indrelid
    UNION ALL
    SELECT 't ' || t.tgname || ' ' || t.tgenabled::text || ' ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN rel c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'r ' || c.relname || ' ' || r.rulename || ' ' || pg_get_ruledef(r.oid) FROM pg_rewrite r JOIN rel c ON c.oid = r.ev_class
    UNION ALL
    SELECT 'p ' || pol.polname || ' ' || pol.polcmd::text FROM pg_policy pol JOIN rel c ON c.oid = pol.polrelid
    UNION ALL
    SELECT 'f ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) || ' ' || p.provolatile::text || p.prosecdef::text || ' '
        || p.proowner::regrole::text || ' ' || coalesce(p.proacl::text, '') || ' ' || coalesce(p.proconfig::text, '')
    FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
    UNION ALL
    SELECT 'y ' || typname || ' ' || typtype::text FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typrelid = 0
    UNION ALL
    SELECT 'd ' || coalesce(defaclacl::text, '') FROM pg_default_acl, ns WHERE defaclnamespace = ns.oid
)
SELECT md5(replace(string_agg(x, E'\n' ORDER BY x), (SELECT nspname FROM ns), '$S')),
    coalesce((SELECT sum(pg_total_relation_size(oid)) FROM rel WHERE relkind = 'r'), 0)::bigint
FROM lines`

// fingerprint returns schema's catalog fingerprint and its tables' size.
func fingerprint(ctx context.Context, q interface {
	Begin(context.Context) (pgx.Tx, error)
}, schema string) (fp string, size int64, err error) {
	err = pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", ident(schema)); err != nil {
			return err
		}
		var f *string
		if err := tx.QueryRow(ctx, fingerprintSQL, schema).Scan(&f, &size); err != nil {
			return err
		}
		if f == nil {
			return fmt.Errorf("schema %s not found", schema)
		}
		fp = *f
		return nil
	})
	if err != nil {
		err = fmt.Errorf("fingerprint %s: %w", schema, err)
	}
	return fp, size, err
}

// takeFree returns a free schema of s, or "" when there is none. An entry
// whose schema is gone (dropped by hand) is skipped and forgotten.
func takeFree(ctx context.Context, p *pgxpool.Pool, s *seed) (string, error) {
	for {
		var name string
		var exists bool
		err := p.QueryRow(ctx, `DELETE FROM pgtest_pool.free WHERE schema_name =
    (SELECT schema_name FROM pgtest_pool.free WHERE seed = $1 LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING schema_name, to_regnamespace(quote_ident(schema_name)) IS NOT NULL`, s.name).Scan(&name, &exists)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", nil
		}
		if err != nil || exists {
			return name, err
		}
	}
}

// recycle empties schema back to the seed and frees it when the test left
// its catalog as migrated, and reports whether it did; otherwise the caller
// drops it.
func recycle(ctx context.Context, p *pgxpool.Pool, s *seed, schema string) (bool, error) {
	fp, size, err := fingerprint(ctx, p, schema)
	if err != nil {
		return false, err
	}
	if fp != s.fingerprint || size > maxRecycledBytes {
		return false, nil
	}
	if _, err := p.Exec(ctx, s.resetSQL(schema)); err != nil {
		return false, fmt.Errorf("empty %s: %w", schema, err)
	}
	return true, nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
