package load

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// stmtTracer counts the statements (queries and COPYs) sent and sums their
// time, keyed by their first words.
type stmtTracer struct {
	mu    sync.Mutex
	start map[*pgx.Conn]time.Time
	key   map[*pgx.Conn]string
	sum   map[string]time.Duration
	n     map[string]int
	total int
}

func newStmtTracer() *stmtTracer {
	return &stmtTracer{start: map[*pgx.Conn]time.Time{}, key: map[*pgx.Conn]string{}, sum: map[string]time.Duration{}, n: map[string]int{}}
}

func stmtKey(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

func (t *stmtTracer) begin(c *pgx.Conn, key string) {
	t.mu.Lock()
	t.start[c], t.key[c] = time.Now(), key
	t.total++
	t.mu.Unlock()
}

func (t *stmtTracer) end(c *pgx.Conn) {
	t.mu.Lock()
	k := t.key[c]
	t.sum[k] += time.Since(t.start[c])
	t.n[k]++
	t.mu.Unlock()
}

func (t *stmtTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	t.begin(c, stmtKey(d.SQL))
	return ctx
}

func (t *stmtTracer) TraceQueryEnd(_ context.Context, c *pgx.Conn, _ pgx.TraceQueryEndData) { t.end(c) }

func (t *stmtTracer) TraceCopyFromStart(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	t.begin(c, "COPY "+d.TableName.Sanitize())
	return ctx
}

func (t *stmtTracer) TraceCopyFromEnd(_ context.Context, c *pgx.Conn, _ pgx.TraceCopyFromEndData) {
	t.end(c)
}

// calls returns how many statements since the last reset began with
// prefix (stmtKey's form: `COPY "users"`).
func (t *stmtTracer) calls(prefix string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, c := range t.n {
		if strings.HasPrefix(k, prefix) {
			n += c
		}
	}
	return n
}

// reset returns the statements counted since the last reset and forgets
// them, printing their times to w when not nil.
func (t *stmtTracer) reset(w *os.File, title string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w != nil {
		keys := make([]string, 0, len(t.sum))
		var total time.Duration
		for k, d := range t.sum {
			keys = append(keys, k)
			total += d
		}
		sort.Slice(keys, func(i, j int) bool { return t.sum[keys[i]] > t.sum[keys[j]] })
		fmt.Fprintf(w, "== %s: %d statements, %v\n", title, t.total, total.Round(time.Millisecond))
		for _, k := range keys {
			fmt.Fprintf(w, "%9.2fms/call %5d calls %8v  %s\n", float64(t.sum[k].Microseconds())/1000/float64(t.n[k]), t.n[k], t.sum[k].Round(time.Millisecond), k)
		}
	}
	n := t.total
	t.sum, t.n, t.total = map[string]time.Duration{}, map[string]int{}, 0
	return n
}

func tracedStore(t *testing.T) (*Store, *stmtTracer, *pgxpool.Pool, string) {
	t.Helper()
	_, schema := pgtest.Schema(t)
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	tr := newStmtTracer()
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return NewStore(pool, Options{Schema: schema}), tr, pool, schema
}

// The statements of one snapshot, counted on the wire (BEGIN and COMMIT
// included): a first load, a no-change re-run and a 1%-changed re-run.
//
//	begin; search_path + customer lock + shared sweep lock; staging tables;
//	new keys (sql/fresh.sql); COPY x4 (into the staging tables, or on a
//	first write users and roles straight into their tables); guard (not
//	on a first write);
//	accounts upsert, removal; users upsert, or their history after the
//	direct COPY (+ removal, and the removal of the removed users' roles,
//	when the guard counted users to remove); roles upsert with removal,
//	one statement (+ history when they wrote), or their history after the
//	direct COPY; invitations upsert, removal; customers; customer_syncs;
//	commit
//
// The first load goes by the direct path (no upsert of users or roles),
// the re-runs by the upsert.
func TestStatementsPerSnapshot(t *testing.T) {
	t.Parallel()
	s, tr, _, _ := tracedStore(t)
	ctx := t.Context()
	runID, err := s.StartRun(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	snaps := benchSnapshots()[:2]
	for i := range snaps {
		snaps[i].Users = snaps[i].Users[:200]
		snaps[i].Roles = slicesFilter(snaps[i].Roles, func(r msads.Role) bool { return r.UserID <= snaps[i].Users[199].ID })
	}
	changed := changeOnePercent(snaps, 1)
	for _, step := range []struct {
		name string
		snap *msads.Snapshot
		want int
	}{
		// No guard: the customer has no users row.
		{"first load", snaps[0], 17},
		{"no-change re-run", snaps[0], 18},
		// Users removed: their roles in the customer go in one more statement.
		{"1%-changed re-run (users removed)", changed[0], 21},
		{"no-change re-run after it", changed[0], 18},
		// Back to the first snapshot, dry: users removal (and the roles of the
		// removed users) and role history run, customers and customer_syncs
		// do not, and a rollback ends it.
		{"dry run of a change", snaps[0], 19},
	} {
		tr.reset(nil, "")
		var err error
		if strings.HasPrefix(step.name, "dry run") {
			_, err = s.DiffSnapshot(ctx, runID, step.snap, SyncInfo{})
		} else {
			_, err = s.WriteSnapshot(ctx, runID, step.snap, SyncInfo{})
		}
		if err != nil {
			t.Fatal(err)
		}
		first := step.name == "first load"
		for _, tb := range []string{"users", "user_roles"} {
			direct, staged := tr.calls(`COPY "`+tb+`"`), tr.calls(`COPY "s_`+tb+`"`)
			if first && (direct != 1 || staged != 0) || !first && (direct != 0 || staged != 1) {
				t.Errorf("%s: %d COPY into %s and %d into s_%s; want the direct path on the first load only", step.name, direct, tb, staged, tb)
			}
		}
		if got := tr.reset(nil, ""); got != step.want {
			t.Errorf("%s: %d statements, want %d", step.name, got, step.want)
		}
	}
}

func slicesFilter[T any](s []T, keep func(T) bool) []T {
	var out []T
	for _, v := range s {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

// TestProfileStatements times each statement of the bench load
// (BENCH_CUSTOMERS): first write, 1% changed straight after (no ANALYZE:
// autovacuum is off for the warehouse tables), no-change re-run, ANALYZE and
// another 1% change. Run with PROFILE=1.
func TestProfileStatements(t *testing.T) {
	if os.Getenv("PROFILE") == "" {
		t.Skip("PROFILE not set")
	}
	s, tr, pool, schema := tracedStore(t)
	for _, tb := range warehouseTables {
		if _, err := pool.Exec(t.Context(), "ALTER TABLE "+pgx.Identifier{schema, tb}.Sanitize()+" SET (autovacuum_enabled = false)"); err != nil {
			t.Fatal(err)
		}
	}
	snaps := benchSnapshots()
	changed := changeOnePercent(snaps, 1)
	for _, pass := range []struct {
		name  string
		snaps []*msads.Snapshot
	}{{"first write", snaps}, {"1% changed, no ANALYZE", changed}, {"no-change re-run", changed},
		{"1% changed after ANALYZE", changeOnePercent(snaps, 2)}} {
		if strings.Contains(pass.name, "after ANALYZE") {
			if _, err := pool.Exec(t.Context(), "SET search_path TO "+pgx.Identifier{schema}.Sanitize()+"; ANALYZE "+strings.Join(warehouseTables, ", ")+"; RESET search_path"); err != nil {
				t.Fatal(err)
			}
			tr.reset(nil, "")
		}
		start := time.Now()
		for _, snap := range pass.snaps {
			if _, err := s.WriteSnapshot(context.Background(), 0, snap, SyncInfo{}); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", pass.name, time.Since(start))
		tr.reset(os.Stderr, pass.name)
	}
}

// TestExplainStatements prints EXPLAIN (ANALYZE, BUFFERS) of each write
// statement of the bench load's last customer (BENCH_CUSTOMERS, default 6),
// written straight after the others (no ANALYZE: autovacuum is off for the
// warehouse tables): its first write, then a 1%-changed re-run. PROFILE=1;
// EXPLAIN=first or EXPLAIN=rerun prints only one of them; EXPLAIN=analyzed
// the re-run after an ANALYZE of the warehouse tables.
func TestExplainStatements(t *testing.T) {
	if os.Getenv("PROFILE") == "" {
		t.Skip("PROFILE not set")
	}
	pool, schema := pgtest.Schema(t)
	s := NewStore(pool, Options{Schema: schema})
	snaps := benchSnapshots()
	if os.Getenv("BENCH_CUSTOMERS") == "" {
		snaps = snaps[:6]
	}
	ctx := context.Background()
	for _, tb := range warehouseTables {
		if _, err := pool.Exec(ctx, "ALTER TABLE "+pgx.Identifier{schema, tb}.Sanitize()+" SET (autovacuum_enabled = false)"); err != nil {
			t.Fatal(err)
		}
	}
	last := snaps[len(snaps)-1]
	for _, snap := range snaps[:len(snaps)-1] {
		if _, err := s.WriteSnapshot(ctx, 0, snap, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	explain := func(title string, snap *msads.Snapshot) {
		st, err := stage(snap)
		if err != nil {
			t.Fatal(err)
		}
		args := pgx.NamedArgs{"customer_id": snap.CustomerID, "owners": []int64{snap.CustomerID}, "run_id": nil}
		s.testHook = func(step string, tx pgx.Tx) error {
			if step != "guard" {
				return nil
			}
			var current int64
			var dropped []int64
			if err := tx.QueryRow(ctx, guardSQL, args).Scan(&current, &dropped); err != nil {
				return err
			}
			args["dropped"] = dropped
			for _, q := range []struct {
				name, sql string
				args      pgx.NamedArgs
			}{
				{"new keys", freshSQL, pgx.NamedArgs{"p_users": []int64{st.customerID}, "p_user_roles": st.readable}},
				{"guard", guardSQL, args}, {"accounts upsert", accountsTable.upsert, args}, {"accounts remove", accountsTable.remove, args},
				{"users upsert", usersTable.upsert, args}, {"users remove", usersTable.remove, args},
				{"roles of dropped users", rolesOfDroppedSQL, args},
				{"roles upsert and removal", rolesTable.upsert, pgx.NamedArgs{"owners": st.roleCustomers, "readable": st.readable}},
				{"roles history", rolesHistorySQL, args},
				{"invitations upsert", invitationsTable.upsert, args}, {"invitations remove", invitationsTable.remove, args},
			} {
				rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+q.sql, q.args)
				if err != nil {
					return fmt.Errorf("%s: %w", q.name, err)
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return fmt.Errorf("%s: %w", q.name, err)
				}
				fmt.Fprintf(os.Stderr, "---- %s: %s\n%s\n", title, q.name, strings.Join(lines, "\n"))
			}
			return fmt.Errorf("explained")
		}
		_, err = s.WriteSnapshot(ctx, 0, snap, SyncInfo{})
		s.testHook = nil
		fmt.Fprintln(os.Stderr, err)
	}
	if e := os.Getenv("EXPLAIN"); e == "" || e == "first" {
		explain(fmt.Sprintf("first write of customer %d after %d others", last.CustomerID, len(snaps)-1), last)
	}
	if e := os.Getenv("EXPLAIN"); e == "" || e == "rerun" || e == "analyzed" {
		if _, err := s.WriteSnapshot(ctx, 0, last, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
		what := "no ANALYZE"
		if os.Getenv("EXPLAIN") == "analyzed" {
			what = "after ANALYZE"
			if _, err := pool.Exec(ctx, "SET search_path TO "+pgx.Identifier{schema}.Sanitize()+"; ANALYZE "+strings.Join(warehouseTables, ", ")+"; RESET search_path"); err != nil {
				t.Fatal(err)
			}
		}
		explain(fmt.Sprintf("1%%-changed re-run of customer %d (%s)", last.CustomerID, what), changeOnePercent([]*msads.Snapshot{last}, 1)[0])
	}
}

// TestProfileWriteFloor times, for one bench customer's 2,000 users written
// after 10 others (best of 7, each in a transaction rolled back), what the
// first write cannot avoid against what the raw COPY does: the floor under
// figure 1 (BENCHMARKS.md). PROFILE=1.
func TestProfileWriteFloor(t *testing.T) {
	if os.Getenv("PROFILE") == "" {
		t.Skip("PROFILE not set")
	}
	pool, schema := pgtest.Schema(t)
	s := NewStore(pool, Options{Schema: schema})
	ctx := context.Background()
	snaps := benchSnapshots()[:11]
	for _, snap := range snaps[:10] {
		if _, err := s.WriteSnapshot(ctx, 0, snap, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := stage(snaps[10])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	c := conn.Conn()
	for _, q := range []string{"SET search_path TO " + pgx.Identifier{schema}.Sanitize(), stagingSQL,
		"CREATE TABLE copy_users (LIKE users INCLUDING ALL)",
		"CREATE TEMP TABLE keyed_users (LIKE users INCLUDING DEFAULTS, PRIMARY KEY (customer_id, user_id)) ON COMMIT DELETE ROWS"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	copyInto := func(table string) func(pgx.Tx) error {
		return func(tx pgx.Tx) error {
			_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, usersTable.All(), pgx.CopyFromRows(st.users))
			return err
		}
	}
	exec := func(sql string) func(pgx.Tx) error {
		return func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, sql, pgx.NamedArgs{"customer_id": st.customerID, "run_id": nil})
			return err
		}
	}
	for _, m := range []struct {
		name     string
		setup, f func(pgx.Tx) error
	}{
		{"raw COPY into users' copy (logged, key + index)", nil, copyInto("copy_users")},
		{"COPY into s_users (temp, no index)", nil, copyInto("s_users")},
		{"COPY into a temp table with the key", nil, copyInto("keyed_users")},
		{"INSERT INTO users SELECT (no ON CONFLICT)", copyInto("s_users"), exec("INSERT INTO users SELECT * FROM s_users")},
		{"INSERT INTO users SELECT ON CONFLICT DO UPDATE", copyInto("s_users"), exec("INSERT INTO users AS t SELECT * FROM s_users ON CONFLICT (customer_id, user_id) DO UPDATE SET email = excluded.email WHERE t.email IS DISTINCT FROM excluded.email")},
		{"INSERT INTO users_history SELECT", copyInto("s_users"), exec("INSERT INTO users_history (customer_id, user_id, user_name, email, valid_from, change) SELECT customer_id, user_id, user_name, email, now(), 'added' FROM s_users")},
		{"the users upsert (entity + history)", copyInto("s_users"), exec(usersTable.upsert)},
	} {
		var best time.Duration
		for i := range 7 {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m.setup != nil {
				if err := m.setup(tx); err != nil {
					t.Fatal(m.name, err)
				}
			}
			t0 := time.Now()
			if err := m.f(tx); err != nil {
				t.Fatal(m.name, err)
			}
			if d := time.Since(t0); i == 0 || d < best {
				best = d
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(os.Stderr, "%8.2fms  %s\n", float64(best.Microseconds())/1000, m.name)
	}
}
