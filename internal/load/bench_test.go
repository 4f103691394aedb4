package load

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

const benchUsersPer, benchInvitationsPer, benchAccountsPer = 2000, 50, 10

// benchCustomers is 100 (the load); BENCH_CUSTOMERS=n runs a smaller
// (or larger) load of n customers while iterating.
var benchCustomers = func() int64 {
	if n, err := strconv.Atoi(os.Getenv("BENCH_CUSTOMERS")); err == nil && n > 1 {
		return int64(n)
	}
	return 100
}()

// benchSnapshots generates 100 customers with 2,000 users each (200,000),
// 300,000 roles (every user one role on its customer, every other user a
// second, account-scoped role on the next customer), 50 invitations each
// (5,000) and 10 accounts each.
func benchSnapshots() []*msads.Snapshot { return firstBenchSnapshots(benchCustomers) }

// firstBenchSnapshots returns the first n of benchSnapshots, generating
// only those (a test of a few customers does not pay for 200,000 users).
func firstBenchSnapshots(n int64) []*msads.Snapshot {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mod := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	snaps := make([]*msads.Snapshot, min(n, benchCustomers))
	for c := range int64(len(snaps)) {
		cid := 10_000 + c
		s := &msads.Snapshot{CustomerID: cid, CustomerName: fmt.Sprint("Customer ", c), AccountsFetched: true}
		for a := range int64(benchAccountsPer) {
			s.Accounts = append(s.Accounts, msads.Account{ID: cid*100 + a, CustomerID: cid, Name: fmt.Sprint("Account ", a), Number: fmt.Sprintf("F%06d", cid*100+a), Status: "Active"})
		}
		for u := range int64(benchUsersPer) {
			uid := c*benchUsersPer + u + 1
			s.Users = append(s.Users, msads.User{ID: uid, CustomerID: cid, HomeCustomerID: cid,
				UserName: fmt.Sprint("user", uid), Email: fmt.Sprintf("user%d@example.com", uid),
				FirstName: "First", LastName: fmt.Sprint("Last", uid), JobTitle: "Analyst", Lcid: "EnglishUS",
				LifecycleStatus: "Active", LastModifiedTime: &mod})
			s.Roles = append(s.Roles, msads.Role{UserID: uid, CustomerID: cid, RoleID: msads.RoleStandardUser})
			if u%2 == 0 {
				next := 10_000 + (c+1)%benchCustomers
				s.Roles = append(s.Roles, msads.Role{UserID: uid, CustomerID: next, RoleID: msads.RoleViewer,
					AccountIDs: []int64{next*100 + u%benchAccountsPer, next*100 + (u+1)%benchAccountsPer}})
			}
		}
		for i := range int64(benchInvitationsPer) {
			s.Invitations = append(s.Invitations, msads.Invitation{ID: cid*1000 + i, CustomerID: cid,
				Email: fmt.Sprintf("invitee%d@example.com", cid*1000+i), RoleID: msads.RoleViewer, Lcid: "EnglishUS", ExpirationDate: &exp})
		}
		snaps[c] = s
	}
	return snaps
}

// changeOnePercent changes 1% of every snapshot (pass picks which 1%): the
// last name of 1 user in 100, the scope of each such user's first role
// (1 role in 150), one invitation's role in 50, and one user in 100 removed
// and replaced by a new one (with its role).
func changeOnePercent(snaps []*msads.Snapshot, pass int) []*msads.Snapshot {
	out := make([]*msads.Snapshot, len(snaps))
	for i, s := range snaps {
		c := *s
		c.Users, c.Roles, c.Invitations = slices.Clone(s.Users), slices.Clone(s.Roles), slices.Clone(s.Invitations)
		changed := map[int64]bool{}
		for j := range c.Users {
			if j%100 == pass%100 {
				c.Users[j].LastName += fmt.Sprint(" v", pass)
				changed[c.Users[j].ID] = true
			}
		}
		seen := map[int64]bool{}
		for j, r := range c.Roles {
			if changed[r.UserID] && !seen[r.UserID] {
				seen[r.UserID] = true
				c.Roles[j].AccountIDs = []int64{s.CustomerID*100 + int64(pass%benchAccountsPer)}
			}
		}
		c.Invitations[pass%len(c.Invitations)].RoleID = msads.RoleStandardUser + int32(pass)
		// One user in 100 replaced: removed with its roles, a new one added.
		for j := range c.Users {
			if j%100 == (pass+50)%100 {
				gone := c.Users[j].ID
				c.Users[j].ID = 10_000_000 + int64(pass)*1_000_000 + gone
				c.Users[j].UserName += " new"
				for k := range c.Roles {
					if c.Roles[k].UserID == gone {
						c.Roles[k].UserID = c.Users[j].ID
					}
				}
			}
		}
		out[i] = &c
	}
	return out
}

// warehouseTables are the tables a snapshot writes.
var warehouseTables = []string{"users", "user_roles", "user_invitations", "accounts", "users_history", "user_roles_history", "user_invitations_history"}

// timedWrite writes snaps one customer after the other and returns the total
// and per-customer durations.
func timedWrite(b *testing.B, s *Store, runID int64, snaps []*msads.Snapshot) (Changes, time.Duration, []time.Duration) {
	b.Helper()
	var total Changes
	per := make([]time.Duration, len(snaps))
	start := time.Now()
	for i, snap := range snaps {
		t0 := time.Now()
		ch, err := s.WriteSnapshot(context.Background(), runID, snap, SyncInfo{StartedAt: t0})
		if err != nil {
			b.Fatal(err)
		}
		per[i] = time.Since(t0)
		total = total.Add(ch)
	}
	return total, time.Since(start), per
}

// rowVersions counts the row versions of the warehouse tables written by
// transactions at or after xid (xmin: inserted or updated rows).
func rowVersions(b *testing.B, pool *pgxpool.Pool, schema string, xid int64) int64 {
	b.Helper()
	parts := make([]string, len(warehouseTables))
	for i, t := range warehouseTables {
		parts[i] = "(SELECT count(*) FROM " + pgx.Identifier{schema, t}.Sanitize() + " WHERE xmin::text::bigint >= $1)"
	}
	var n int64
	if err := pool.QueryRow(context.Background(), "SELECT "+strings.Join(parts, " + "), xid).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

func currentXID(b *testing.B, pool *pgxpool.Pool) int64 {
	b.Helper()
	var x int64
	if err := pool.QueryRow(context.Background(), "SELECT pg_current_xact_id()::text::bigint").Scan(&x); err != nil {
		b.Fatal(err)
	}
	return x
}

func execIn(b *testing.B, pool *pgxpool.Pool, schema, sql string) {
	b.Helper()
	if _, err := pool.Exec(context.Background(), "SET search_path TO "+pgx.Identifier{schema}.Sanitize()+"; "+sql+"; RESET search_path"); err != nil {
		b.Fatal(err)
	}
}

// benchRounds is how many independent rounds BenchmarkSnapshotWrite runs
// (BENCH_ROUNDS, default 3): every figure is reported as the median of its
// rounds, and each customer's ratio as the median of its rounds' before
// the median and p90 across customers are taken.
var benchRounds = func() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}()

// writeRound is what one round of BenchmarkSnapshotWrite measured.
type writeRound struct {
	first, copied, rerun1, noChange, rerun2 time.Duration
	written                                 int64
	// perCustomer[i] is customer i's first write / its raw COPY.
	perCustomer []float64
}

// BenchmarkSnapshotWrite measures the figures, each a ratio of two
// timings of one round (see BENCHMARKS.md):
//
//  1. first write of 200,000 users / 300,000 roles in 100 customers against
//     a raw COPY of the same rows into tables with the same keys, indexes
//     and logged-ness (created LIKE the real ones, INCLUDING ALL), one
//     transaction per customer like the writer; setup excluded on both
//     sides. Whole run and per customer (median, p90 and worst).
//
//  2. re-runs: 1% changed straight after the first load (no ANALYZE,
//     autovacuum off for the warehouse tables), no change (row versions
//     written, from xmin), and 1% changed again after ANALYZE.
//
// It also reports the 1% re-run against the raw COPY: both goals (first
// write <= 2x the COPY, 1% re-run <= 0.4x the first write) can hold at
// once only when that is at most 0.8x.
//
// A round runs on a fresh schema, dropped (and the server checkpointed)
// before the next starts, so that no round inherits another's pages. The
// machines this runs on are shared: one round's ratios move by ±20%, so
// the figures reported are the medians of benchRounds rounds after a
// warm-up round that is not counted (each round's own are logged too).
//
//	go test -run '^$' -bench SnapshotWrite -benchtime 1x ./internal/load/
func BenchmarkSnapshotWrite(b *testing.B) {
	snaps := benchSnapshots()
	// changed2 changes another 1% of what changed1 stored (a second change
	// of snaps would also undo changed1's: 2% of the rows).
	changed1 := changeOnePercent(snaps, 1)
	changed2 := changeOnePercent(changed1, 2)
	for range b.N {
		// A warm-up round first, not counted: on these virtual machines
		// the first round on a new server pays for memory the host
		// allocates on first touch (~13 µs a page), and whichever side
		// runs first pays most of it (the raw COPY: 2.3 s in the first
		// round, 1.55 s in the next two).
		rounds := make([]writeRound, benchRounds+1)
		for r := range rounds {
			rounds[r] = snapshotWriteRound(b, snaps, changed1, changed2)
			w := rounds[r]
			pc := slices.Sorted(slices.Values(w.perCustomer))
			label := fmt.Sprintf("round %d", r)
			if r == 0 {
				label = "warm-up round (not counted)"
			}
			b.Logf("%s: first write %.2fs, raw COPY %.2fs: whole %.2fx, per customer median %.2fx, p90 %.2fx, worst %.2fx; no change %.2fx (%d row versions); 1%% changed without ANALYZE %.2fx (%.2fx the raw COPY), after ANALYZE %.2fx",
				label, w.first.Seconds(), w.copied.Seconds(), ratio(w.first, w.copied), pc[len(pc)/2], pc[len(pc)*9/10], pc[len(pc)-1],
				ratio(w.noChange, w.first), w.written, ratio(w.rerun1, w.first), ratio(w.rerun1, w.copied), ratio(w.rerun2, w.first))
		}
		rounds = rounds[1:]
		med := func(f func(writeRound) float64) float64 {
			v := make([]float64, len(rounds))
			for i, w := range rounds {
				v[i] = f(w)
			}
			return median(v)
		}
		// Each customer's ratio: the median of its rounds'.
		perCustomer := make([]float64, len(snaps))
		for i := range perCustomer {
			perCustomer[i] = med(func(w writeRound) float64 { return w.perCustomer[i] })
		}
		slices.Sort(perCustomer)
		var written int64
		for _, w := range rounds {
			written = max(written, w.written)
		}
		first, copied := med(func(w writeRound) float64 { return w.first.Seconds() }), med(func(w writeRound) float64 { return w.copied.Seconds() })
		whole := med(func(w writeRound) float64 { return ratio(w.first, w.copied) })
		noChange := med(func(w writeRound) float64 { return ratio(w.noChange, w.first) })
		rerun1 := med(func(w writeRound) float64 { return ratio(w.rerun1, w.first) })
		rerun2 := med(func(w writeRound) float64 { return ratio(w.rerun2, w.first) })
		// The two figures together: a first write at most 2x the raw COPY
		// and a 1% re-run at most 0.4x the first write hold at once only
		// if the 1% re-run costs at most 0.8x the raw COPY.
		rerunPerCopy := med(func(w writeRound) float64 { return ratio(w.rerun1, w.copied) })
		b.ReportMetric(first, "first_write_s")
		b.ReportMetric(copied, "copy_s")
		b.ReportMetric(whole, "fig1_whole_ratio")
		b.ReportMetric(perCustomer[len(perCustomer)/2], "fig1_per_customer_median_ratio")
		b.ReportMetric(perCustomer[len(perCustomer)*9/10], "fig1_per_customer_p90_ratio")
		b.ReportMetric(float64(written), "fig2_nochange_row_versions")
		b.ReportMetric(noChange, "fig2_nochange_ratio")
		b.ReportMetric(rerun1, "fig2_1pct_noanalyze_ratio")
		b.ReportMetric(rerun2, "fig2_1pct_analyzed_ratio")
		b.ReportMetric(rerunPerCopy, "fig2_1pct_per_copy_ratio")
		b.Logf("figure 1 (median of %d rounds): first write %.2fs, raw COPY %.2fs: whole %.2fx (goal <= 2x, stretch 1.3x); per customer median %.2fx, p90 %.2fx, worst %.2fx",
			len(rounds), first, copied, whole, perCustomer[len(perCustomer)/2], perCustomer[len(perCustomer)*9/10], perCustomer[len(perCustomer)-1])
		b.Logf("figure 2 (median of %d rounds): no change %.2fx first write (goal <= 0.3x), at most %d row versions written (goal 0); 1%% changed without ANALYZE %.2fx, after ANALYZE %.2fx (goal <= 0.4x)",
			len(rounds), noChange, written, rerun1, rerun2)
		b.Logf("both (median of %d rounds): 1%% changed without ANALYZE %.2fx the raw COPY (figures 1 and 2 both hold only at <= 0.8x: 2x times 0.4x)",
			len(rounds), rerunPerCopy)
	}
}

func ratio(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }

// median of v (the mean of the middle two for an even count); v is sorted
// in place.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// snapshotWriteRound is one round of BenchmarkSnapshotWrite on a fresh
// schema, dropped when the round ends.
func snapshotWriteRound(b *testing.B, snaps, changed1, changed2 []*msads.Snapshot) writeRound {
	b.Helper()
	ctx := context.Background()
	pool, schema := pgtest.FreshSchema(b)
	defer func() {
		// Two statements, not one query: a CHECKPOINT in the DROP's
		// transaction would write out the dropped tables' pages first.
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			b.Fatal(err)
		}
		if pgtest.Owned() { // a server the tests do not own may refuse it
			if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
				b.Fatal(err)
			}
		}
	}()
	// Each side on connections of its own, new for the round, as a
	// `syncer run` (and a psql \copy) has: connections kept from an
	// earlier round would carry its prepared statements, whose plan
	// choices (generic or custom) were made on that round's dropped
	// tables, and whichever side ran first on them would pay their
	// warm-up for both.
	writePool, copyPool := newBenchPool(b), newBenchPool(b)
	for _, p := range []*pgxpool.Pool{writePool, copyPool} {
		if err := p.Ping(ctx); err != nil { // the first connection, outside any timing
			b.Fatal(err)
		}
	}
	defer writePool.Close()
	defer copyPool.Close()
	s := NewStore(writePool, Options{Schema: schema})
	for _, t := range warehouseTables {
		execIn(b, pool, schema, "ALTER TABLE "+t+" SET (autovacuum_enabled = false)")
	}
	// The baseline's tables: the same columns, keys, indexes and
	// logged-ness as the warehouse tables.
	for _, t := range tables {
		execIn(b, pool, schema, "CREATE TABLE copy_"+t.Name+" (LIKE "+t.Name+" INCLUDING ALL) WITH (autovacuum_enabled = false)")
	}
	runID, err := s.StartRun(ctx, len(snaps))
	if err != nil {
		b.Fatal(err)
	}

	progress := func(what string, d time.Duration) { fmt.Fprintf(os.Stderr, "bench: %s %.2fs\n", what, d.Seconds()) }
	var w writeRound
	// The raw COPY first, then its tables emptied: each side starts with
	// shared buffers free of the other's pages (whichever ran second would
	// otherwise evict, and write, the first's dirty pages), and the
	// 1%-changed re-run follows the first write straight away, as the
	// figure says.
	cp, cpPer := rawCopy(b, copyPool, schema, snaps)
	w.copied = cp
	progress("copy", cp)
	copies := make([]string, len(tables))
	for i, t := range tables {
		copies[i] = "copy_" + t.Name
	}
	execIn(b, pool, schema, "TRUNCATE "+strings.Join(copies, ", "))
	ch, first, firstPer := timedWrite(b, s, runID, snaps)
	w.first = first
	progress("first write", first)
	if n := int(benchCustomers); ch.Users.Added != n*benchUsersPer || ch.Roles.Added != n*benchUsersPer*3/2 || ch.Invitations.Added != n*benchInvitationsPer {
		b.Fatalf("first write changes = %v", ch)
	}

	// Straight after the first load: no ANALYZE has run.
	ch, w.rerun1, _ = timedWrite(b, s, runID, changed1)
	if want := int(benchCustomers) * benchUsersPer / 100; ch.Users.Changed != want || ch.Users.Added != want || ch.Users.Removed != want {
		b.Fatalf("1%% changed, no ANALYZE: changes = %v", ch)
	}
	progress("1% changed, no ANALYZE", w.rerun1)

	xid := currentXID(b, pool)
	ch, w.noChange, _ = timedWrite(b, s, runID, changed1)
	if ch.Total() != 0 {
		b.Errorf("no-change re-run changes = %v, want none", ch)
	}
	w.written = rowVersions(b, pool, schema, xid)

	execIn(b, pool, schema, "ANALYZE "+strings.Join(warehouseTables, ", "))
	ch, w.rerun2, _ = timedWrite(b, s, runID, changed2)
	if want := int(benchCustomers) * benchUsersPer / 100; ch.Users.Changed != want || ch.Users.Added != want || ch.Users.Removed != want {
		b.Fatalf("1%% changed, analyzed: changes = %v", ch)
	}

	w.perCustomer = make([]float64, len(firstPer))
	for i := range firstPer {
		w.perCustomer[i] = ratio(firstPer[i], cpPer[i])
	}
	return w
}

// newBenchPool returns a pool of new connections to the test server.
func newBenchPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	p, err := pgxpool.New(context.Background(), pgtest.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// rawCopy COPYs the rows the snapshots stage (the same values the writer
// writes) into the copy_ tables, one transaction per customer (begin, the
// COPYs, commit), and returns the total and per-customer durations.
func rawCopy(b *testing.B, pool *pgxpool.Pool, schema string, snaps []*msads.Snapshot) (time.Duration, []time.Duration) {
	b.Helper()
	ctx := context.Background()
	staged := make([]*staged, len(snaps))
	for i, s := range snaps {
		st, err := stage(s)
		if err != nil {
			b.Fatal(err)
		}
		staged[i] = st
	}
	per := make([]time.Duration, len(snaps))
	var total time.Duration
	for i, st := range staged {
		t0 := time.Now()
		// BeginFunc rolls back on an error, so that a failed COPY fails the
		// benchmark instead of holding its connection (and the pool's
		// Close) forever.
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, c := range []struct {
				t    *table
				rows [][]any
			}{{usersTable, st.users}, {rolesTable, st.roles}, {invitationsTable, st.invitations}, {accountsTable, st.accounts}} {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{schema, "copy_" + c.t.Name}, c.t.All(), pgx.CopyFromRows(c.rows)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		per[i] = time.Since(t0)
		total += per[i]
	}
	return total, per
}

// BenchmarkStage measures stage (the Go side of a write, part of its time)
// for one bench customer: go test -run '^$' -bench 'BenchmarkStage$' ./internal/load/
func BenchmarkStage(b *testing.B) {
	snap := firstBenchSnapshots(1)[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stage(snap); err != nil {
			b.Fatal(err)
		}
	}
}
