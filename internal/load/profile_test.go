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

	"github.com/msads-syncer/syncer/internal/pgtest"
)

// stmtTracer sums the time spent per statement (keyed by its first words).
type stmtTracer struct {
	mu    sync.Mutex
	start map[*pgx.Conn]time.Time
	key   map[*pgx.Conn]string
	sum   map[string]time.Duration
	n     map[string]int
}

func stmtKey(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 90 {
		s = s[:90]
	}
	return s
}

func (t *stmtTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	t.mu.Lock()
	t.start[c] = time.Now()
	t.key[c] = stmtKey(d.SQL)
	t.mu.Unlock()
	return ctx
}

func (t *stmtTracer) TraceQueryEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryEndData) {
	t.mu.Lock()
	k := t.key[c]
	t.sum[k] += time.Since(t.start[c])
	t.n[k]++
	t.mu.Unlock()
}

func (t *stmtTracer) TraceCopyFromStart(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	t.mu.Lock()
	t.start[c] = time.Now()
	t.key[c] = "COPY " + d.TableName.Sanitize()
	t.mu.Unlock()
	return ctx
}

func (t *stmtTracer) TraceCopyFromEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromEndData) {
	t.TraceQueryEnd(ctx, c, pgx.TraceQueryEndData{})
}

func (t *stmtTracer) report(w *os.File, title string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	type kv struct {
		k string
		d time.Duration
	}
	var all []kv
	var total time.Duration
	for k, d := range t.sum {
		all = append(all, kv{k, d})
		total += d
	}
	sort.Slice(all, func(i, j int) bool { return all[i].d > all[j].d })
	fmt.Fprintf(w, "== %s: total %v\n", title, total.Round(time.Millisecond))
	for _, e := range all {
		fmt.Fprintf(w, "%9.2fms/call %5d calls %8v  %s\n", float64(e.d.Microseconds())/1000/float64(t.n[e.k]), t.n[e.k], e.d.Round(time.Millisecond), e.k)
	}
	t.sum = map[string]time.Duration{}
	t.n = map[string]int{}
}

// TestProfileStatements times each statement of the bench load (first write
// and no-change re-run). Run with PROFILE=1.
func TestProfileStatements(t *testing.T) {
	if os.Getenv("PROFILE") == "" {
		t.Skip("PROFILE not set")
	}
	_, schema := pgtest.Schema(t)
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	tr := &stmtTracer{start: map[*pgx.Conn]time.Time{}, key: map[*pgx.Conn]string{}, sum: map[string]time.Duration{}, n: map[string]int{}}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := NewStore(pool, Options{Schema: schema})
	snaps := benchSnapshots()
	for _, pass := range []string{"first write", "no-change re-run"} {
		start := time.Now()
		for _, snap := range snaps {
			if _, err := s.WriteSnapshot(context.Background(), 0, snap, SyncInfo{}); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", pass, time.Since(start))
		tr.report(os.Stderr, pass)
	}
}

// TestExplainStatements prints EXPLAIN ANALYZE of each statement for one
// customer of the bench load, on first write and on re-run. PROFILE=1.
func TestExplainStatements(t *testing.T) {
	if os.Getenv("PROFILE") == "" {
		t.Skip("PROFILE not set")
	}
	pool, schema := pgtest.Schema(t)
	s := NewStore(pool, Options{Schema: schema})
	snaps := benchSnapshots()
	ctx := context.Background()
	for _, snap := range snaps[:50] {
		if _, err := s.WriteSnapshot(ctx, 0, snap, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	explain := func(title string) {
		s.testHook = func(step string, tx pgx.Tx) error {
			if step != "stage" {
				return nil
			}
			for _, q := range []struct {
				name string
				sql  string
				args []any
			}{
				{"survey", surveySQL, []any{snaps[50].CustomerID, true}},
				{"roles insert new", rolesInsertNew, []any{nil}},
				{"users insert new", usersInsertNew, []any{snaps[50].CustomerID, nil}},
				{"inv insert new", invitationsInsertNew, []any{snaps[50].CustomerID, nil}},
				{"users upsert", usersUpsert, []any{snaps[50].CustomerID, nil}},
				{"users remove", usersRemove, []any{snaps[50].CustomerID, nil}},
				{"roles scope", rolesScope, []any{[]int64{}}},
				{"analyze", "ANALYZE s_scope", nil},
				{"roles lock", rolesLock, nil},
				{"roles upsert", rolesUpsert, nil},
				{"roles history", rolesHistory, []any{nil}},
				{"roles remove", rolesRemove, []any{snaps[50].CustomerID, nil}},
				{"inv upsert", invitationsUpsert, []any{snaps[50].CustomerID, nil}},
			} {
				sql := q.sql
				if q.name != "analyze" {
					sql = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql
				}
				rows, err := tx.Query(ctx, sql, q.args...)
				if err != nil {
					return fmt.Errorf("%s: %w", q.name, err)
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return fmt.Errorf("%s: %w", q.name, err)
				}
				fmt.Fprintf(os.Stderr, "---- %s %s\n%s\n", title, q.name, strings.Join(lines, "\n"))
			}
			return fmt.Errorf("explained")
		}
		_, err := s.WriteSnapshot(ctx, 0, snaps[50], SyncInfo{})
		fmt.Fprintln(os.Stderr, err)
		s.testHook = nil
	}
	explain("FIRST")
	if _, err := s.WriteSnapshot(ctx, 0, snaps[50], SyncInfo{}); err != nil {
		t.Fatal(err)
	}
	explain("RERUN")
}
