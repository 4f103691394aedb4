package load

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
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
	max   map[string]time.Duration // the slowest call
	n     map[string]int
	total int
	// trips counts round trips (a batch is one), copied the rows COPYed
	// into each table, staged the staged rows each statement sends, per
	// table (see table.Staged).
	trips          int
	copied, staged map[string]int64
}

func newStmtTracer() *stmtTracer {
	return &stmtTracer{start: map[*pgx.Conn]time.Time{}, key: map[*pgx.Conn]string{}, sum: map[string]time.Duration{}, max: map[string]time.Duration{}, n: map[string]int{},
		copied: map[string]int64{}, staged: map[string]int64{}}
}

// countStaged adds to t.staged the rows of the staged-rows argument of a
// statement that reads one (table.Staged), whether its arguments are
// still named or already positional (a batch's).
func (t *stmtTracer) countStaged(sql string, args []any) {
	const from = "json_populate_recordset(NULL::"
	i := strings.Index(sql, from)
	if i < 0 {
		return
	}
	name, _, _ := strings.Cut(sql[i+len(from):], ",")
	var rows string
	for _, a := range args {
		switch a := a.(type) {
		case pgx.NamedArgs:
			rows, _ = a["rows_"+name].(string)
		case string:
			if strings.HasPrefix(a, "[") {
				rows = a
			}
		}
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(rows), &list); err != nil {
		panic(fmt.Sprintf("staged rows of %s: %v", name, err))
	}
	t.mu.Lock()
	t.staged[name] += int64(len(list))
	t.mu.Unlock()
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
	t.trips++
	t.mu.Unlock()
}

func (t *stmtTracer) end(c *pgx.Conn) {
	t.mu.Lock()
	k := t.key[c]
	d := time.Since(t.start[c])
	t.sum[k] += d
	t.max[k] = max(t.max[k], d)
	t.n[k]++
	t.mu.Unlock()
}

func (t *stmtTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	t.begin(c, stmtKey(d.SQL))
	t.countStaged(d.SQL, d.Args)
	return ctx
}

func (t *stmtTracer) TraceQueryEnd(_ context.Context, c *pgx.Conn, _ pgx.TraceQueryEndData) { t.end(c) }

func (t *stmtTracer) TraceCopyFromStart(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	t.begin(c, "COPY "+d.TableName.Sanitize())
	return ctx
}

func (t *stmtTracer) TraceCopyFromEnd(_ context.Context, c *pgx.Conn, d pgx.TraceCopyFromEndData) {
	t.mu.Lock()
	t.copied[strings.TrimPrefix(t.key[c], "COPY ")] += d.CommandTag.RowsAffected()
	t.mu.Unlock()
	t.end(c)
}

// A batch (the read-back) is one round trip: its time goes to "BATCH", and
// each of its queries counts as a statement.
func (t *stmtTracer) TraceBatchStart(ctx context.Context, c *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	t.begin(c, "BATCH")
	t.mu.Lock()
	t.total--
	t.mu.Unlock()
	return ctx
}

func (t *stmtTracer) TraceBatchQuery(_ context.Context, c *pgx.Conn, d pgx.TraceBatchQueryData) {
	t.mu.Lock()
	if t.key[c] == "BATCH" {
		k := stmtKey(d.SQL)
		t.key[c] = "BATCH " + k[:min(len(k), 70)]
	}
	t.n["(batch) "+stmtKey(d.SQL)]++
	t.total++
	t.mu.Unlock()
	t.countStaged(d.SQL, d.Args)
}

func (t *stmtTracer) TraceBatchEnd(_ context.Context, c *pgx.Conn, _ pgx.TraceBatchEndData) { t.end(c) }

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
			fmt.Fprintf(w, "%9.2fms/call (max %6.2fms) %5d calls %8v  %s\n", float64(t.sum[k].Microseconds())/1000/float64(t.n[k]),
				float64(t.max[k].Microseconds())/1000, t.n[k], t.sum[k].Round(time.Millisecond), k)
		}
	}
	n := t.total
	t.sum, t.max, t.n, t.total, t.trips, t.copied, t.staged = map[string]time.Duration{}, map[string]time.Duration{}, map[string]int{}, 0, 0, map[string]int64{}, map[string]int64{}
	return n
}

// roundTrips returns the round trips since the last reset, the rows
// COPYed into each table (`"users"`), and the staged rows sent to the
// statements of each (`user_roles`).
func (t *stmtTracer) roundTrips() (int, map[string]int64, map[string]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.trips, maps.Clone(t.copied), maps.Clone(t.staged)
}

func tracedStore(t *testing.T) (*Store, *stmtTracer, *pgxpool.Pool, string) {
	t.Helper()
	_, schema := pgtest.FreshSchema(t)
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
// included; each query of a batch counts as one, the batch as one round
// trip), and the rows it sends: a first load, a no-change re-run and a
// 1%-changed re-run.
//
//	begin with the search path (one simple query); the customer lock +
//	shared sweep lock, new keys (sql/fresh.sql) and the invitations and
//	accounts current in the customer (sql/owned.sql), one batch; the read-back, one batch
//	(sql/stored.sql: the customer's users unless new, the listed users'
//	roles unless new, the invitations and accounts by key unless new);
//	on a first write, COPY of accounts, users, invitations and roles
//	straight into their tables; then, in one round trip, only where the
//	read-back found rows that may change: their upsert, with those rows as
//	a parameter, or removal (accounts, users, the removed users' roles +
//	roles upsert with removal, invitations); then, in one more, the
//	history of the rows COPYed and of the roles written, with customers and
//	customer_syncs; commit
//
// The first load goes by the direct path (no upsert of users or roles),
// the re-runs send only what changed: nothing when nothing did.
func TestStatementsPerSnapshot(t *testing.T) {
	t.Parallel()
	s, tr, _, _ := tracedStore(t)
	ctx := t.Context()
	runID, err := s.StartRun(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	snaps := firstBenchSnapshots(2)
	for i := range snaps {
		snaps[i].Users = snaps[i].Users[:200]
		snaps[i].Roles = slicesFilter(snaps[i].Roles, func(r msads.Role) bool { return r.UserID <= snaps[i].Users[199].ID })
	}
	changed := changeOnePercent(snaps, 1)
	// The same snapshot with client links searched, completely, and none
	// found (most customers have none).
	noLinks := *snaps[0]
	noLinks.LinkSearches = complete(10, 11)
	staged := map[string]int64{"users": 4, "user_roles": 4, "user_invitations": 1}
	for _, step := range []struct {
		name              string
		snap              *msads.Snapshot
		statements, trips int
		copied, staged    map[string]int64
	}{
		// Every row straight into its table, nothing staged or upserted;
		// nothing to remove. (begin, then locks, new keys and the current
		// invitations and accounts: 4 queries in one round trip, nothing
		// to read back, 4 COPYs, then users, roles and invitations
		// history, customers and customer_syncs in one round trip,
		// commit.)
		{"first load", snaps[0], 15, 8, map[string]int64{`"users"`: 200, `"user_roles"`: 300, `"user_invitations"`: 50, `"accounts"`: 10}, map[string]int64{}},
		// begin; locks, new keys and the current invitations and
		// accounts (one round trip); the read-back (4 queries, one);
		// customers and customer_syncs (one); commit.
		{"no-change re-run", snaps[0], 12, 5, map[string]int64{}, map[string]int64{}},
		// 2 users changed and 2 new (2 removed: their roles in the customer
		// go in one more statement), the roles of those 4, 1 invitation,
		// each table's rows sent with its statements, all in one round
		// trip (the roles' history in a second, with what the first wrote,
		// customers and customer_syncs).
		{"1%-changed re-run (users removed)", changed[0], 18, 6, map[string]int64{}, staged},
		{"no-change re-run after it", changed[0], 12, 5, map[string]int64{}, map[string]int64{}},
		// Back to the first snapshot, dry: users removal (and the roles of
		// the removed users) and role history run, customers and
		// customer_syncs do not, and a rollback ends it.
		{"dry run of a change", snaps[0], 16, 6, map[string]int64{}, staged},
		// Back to the first snapshot for real (4 users and their roles, 1
		// invitation), then with links searched and none found or stored:
		// one query says no link is current in the searches' scope, and no
		// other statement runs for links.
		{"change back", snaps[0], 18, 6, map[string]int64{}, staged},
		{"no links found, none stored", &noLinks, 13, 6, map[string]int64{}, map[string]int64{}},
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
		trips, copied, staged := tr.roundTrips()
		if !maps.Equal(copied, step.copied) {
			t.Errorf("%s: rows COPYed %v, want %v", step.name, copied, step.copied)
		}
		if !maps.Equal(staged, step.staged) {
			t.Errorf("%s: rows staged %v, want %v", step.name, staged, step.staged)
		}
		if got := tr.reset(nil, ""); got != step.statements || trips != step.trips {
			t.Errorf("%s: %d statements in %d round trips, want %d in %d", step.name, got, trips, step.statements, step.trips)
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
		{"1% changed after ANALYZE", changeOnePercent(changed, 2)}} {
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
	pool, schema := pgtest.FreshSchema(t)
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
			// What the writer sends: the rows that are not new keys
			// (queueFresh) and that the read-back finds changed, staged as
			// the writer stages them (a second lookup and read-back in the
			// write's transaction find what the first found).
			w := &writer{tx: tx, st: st, store: s, args: args, direct: true}
			rows := map[*table][][]any{usersTable: st.users, rolesTable: st.roles, invitationsTable: st.invitations, accountsTable: st.accounts}
			if _, err := w.readBack(ctx, rows); err != nil {
				return err
			}
			for tb, r := range rows {
				j, err := rowsJSON(tb, r)
				if err != nil {
					return err
				}
				args[tb.RowsArg()] = j
			}
			roleUsers := w.roleUsers
			args["staged_users"] = stagedUsers(rows[usersTable])
			if args["dropped"] == nil {
				args["dropped"] = []int64{}
			}
			args["gone"] = []int64{}
			var invKeys []int64
			for _, r := range st.invitations {
				invKeys = append(invKeys, firstKey(r))
			}
			for _, q := range []struct {
				name, sql string
				args      pgx.NamedArgs
			}{
				{"new keys", freshSQL, pgx.NamedArgs{"p_users": []int64{st.customerID}, "p_user_roles": st.readable}},
				{"read back users", storedSQL[usersTable], args},
				{"read back roles", storedSQL[rolesTable], pgx.NamedArgs{"readable": st.readable}},
				{"read back invitations", storedSQL[invitationsTable], pgx.NamedArgs{"keys": invKeys}},
				{"current invitations", ownedSQL[invitationsTable], args},
				{"accounts upsert", accountsTable.upsert, args}, {"accounts remove", accountsTable.remove, args},
				{"users upsert", usersTable.upsert, args}, {"users remove", usersTable.remove, args},
				{"roles of dropped users", rolesOfDroppedSQL, args},
				{"roles upsert and removal", rolesTable.upsert, pgx.NamedArgs{"owners": st.roleCustomers, "readable": roleUsers,
					rolesTable.RowsArg(): args[rolesTable.RowsArg()]}},
				{"roles history (of no change)", rolesHistorySQL, pgx.NamedArgs{"run_id": nil, "changes": "[]"}},
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
	pool, schema := pgtest.FreshSchema(t)
	s := NewStore(pool, Options{Schema: schema})
	ctx := context.Background()
	snaps := firstBenchSnapshots(11)
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
	for _, q := range []string{"SET search_path TO " + pgx.Identifier{schema}.Sanitize(),
		"CREATE TEMP TABLE scratch_users (LIKE users INCLUDING DEFAULTS)",
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
	rows, err := rowsJSON(usersTable, st.users)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) func(pgx.Tx) error {
		return func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, sql, pgx.NamedArgs{"customer_id": st.customerID, "run_id": nil,
				usersTable.RowsArg(): rows, "staged_users": stagedUsers(st.users)})
			return err
		}
	}
	for _, m := range []struct {
		name     string
		setup, f func(pgx.Tx) error
	}{
		{"raw COPY into users' copy (logged, key + index)", nil, copyInto("copy_users")},
		{"COPY into a temp table (no index)", nil, copyInto("scratch_users")},
		{"COPY into a temp table with the key", nil, copyInto("keyed_users")},
		{"INSERT INTO users SELECT (no ON CONFLICT)", copyInto("scratch_users"), exec("INSERT INTO users SELECT * FROM scratch_users")},
		{"INSERT INTO users SELECT ON CONFLICT DO UPDATE", copyInto("scratch_users"), exec("INSERT INTO users AS t SELECT * FROM scratch_users ON CONFLICT (customer_id, user_id) DO UPDATE SET email = excluded.email WHERE t.email IS DISTINCT FROM excluded.email")},
		{"INSERT INTO users_history SELECT", copyInto("scratch_users"), exec("INSERT INTO users_history (customer_id, user_id, user_name, email, valid_from, change) SELECT customer_id, user_id, user_name, email, now(), 'added' FROM scratch_users")},
		{"the staged rows read from their JSON", nil, exec("SELECT count(*) FROM " + usersTable.Staged() + " s")},
		{"the users upsert (entity + history, rows as JSON)", nil, exec(usersTable.upsert)},
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
