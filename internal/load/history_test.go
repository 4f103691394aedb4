package load

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// historyChains checks the history invariant of every historized table: per
// key, the intervals ordered by valid_from chain exactly (each ends where the
// next begins: no overlap, no gap), only the last is open, and an entity row
// is current exactly when its key's last interval is open and not 'removed'.
// It checks the tables given, or all.
// writeAtOnce writes the snapshots of customers concurrently, released
// together, and fails the test on any write error.
func (b *bundle) writeAtOnce(t *testing.T, customers []int64, snapshot func(int64) *msads.Snapshot) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, len(customers))
	for i, cid := range customers {
		wg.Go(func() {
			<-start
			_, errs[i] = b.store.WriteSnapshot(context.Background(), b.runID, snapshot(cid), SyncInfo{})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("customer %d: %v", customers[i], err)
		}
	}
}

func historyChains(t *testing.T, b *bundle, only ...*table) {
	t.Helper()
	if len(only) == 0 {
		only = []*table{usersTable, rolesTable, invitationsTable, linksTable}
	}
	for _, tb := range only {
		key := strings.Join(tb.Key, ", ")
		equal(t, tb.History+": intervals chain", b.strings(t, `
SELECT `+key+`, valid_from, valid_to, next FROM (
    SELECT *, lead(valid_from) OVER (PARTITION BY `+key+` ORDER BY valid_from) AS next FROM `+tb.History+`) x
WHERE (next IS NULL AND valid_to IS NOT NULL) OR (next IS NOT NULL AND valid_to IS DISTINCT FROM next)
   OR valid_to <= valid_from`), nil)
		equal(t, tb.Name+": current rows agree with their last interval", b.strings(t, `
SELECT `+prefixedList("t.", tb.Key)+`, t.removed_at IS NULL, l.valid_to IS NULL, l.change
FROM `+tb.Name+` t LEFT JOIN LATERAL (
    SELECT h.valid_to, h.change FROM `+tb.History+` h WHERE `+onKey("h", "t", tb.Key)+` ORDER BY h.valid_from DESC LIMIT 1) l ON true
WHERE (t.removed_at IS NULL) IS DISTINCT FROM (l.valid_to IS NULL AND l.change <> 'removed')
   OR l.valid_to IS NOT NULL`), nil)
	}
}

func prefixedList(p string, cols []string) string { return strings.Join(prefix(p, cols), ", ") }

func onKey(a, b string, key []string) string {
	out := make([]string, len(key))
	for i, k := range key {
		out[i] = a + "." + k + " = " + b + "." + k
	}
	return strings.Join(out, " AND ")
}

// Customers that share users are written at the same moment, round after
// round, while the shared users' roles are added, rescoped, removed and
// brought back: every role's history still chains, with one open interval.
func TestHistoryChainsUnderConcurrentSharedWrites(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	customers := []int64{31, 32, 33, 34}
	const users = 30
	snapshot := func(cid int64, round int) *msads.Snapshot {
		s := &msads.Snapshot{CustomerID: cid, RoleCustomers: customers}
		for u := range int64(users) {
			uid := 100 + u
			s.Users = append(s.Users, msads.User{ID: uid, UserName: fmt.Sprint("u", uid), LastName: fmt.Sprint("r", round%3)})
			for i, rc := range customers {
				// Every customer's snapshot shows the same roles (GetUser is
				// the same user), changing with the round.
				switch (int(u) + i + round) % 4 {
				case 0: // absent: removed, later reappears
				case 1:
					s.Roles = append(s.Roles, msads.Role{UserID: uid, CustomerID: rc, RoleID: msads.RoleViewer})
				default:
					s.Roles = append(s.Roles, msads.Role{UserID: uid, CustomerID: rc, RoleID: msads.RoleViewer,
						AccountIDs: []int64{int64(round % 2), rc}})
				}
			}
		}
		return s
	}
	for round := range 8 {
		b.writeAtOnce(t, customers, func(cid int64) *msads.Snapshot { return snapshot(cid, round) })
		historyChains(t, b)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
	// The last round again changes nothing.
	before := b.versions(t)
	for _, cid := range customers {
		if ch := b.write(t, snapshot(cid, 7)); ch.Total() != 0 {
			t.Errorf("customer %d re-run = %v, want none", cid, ch)
		}
	}
	b.sameVersions(t, before, "rewritten by a no-change re-run")
}

// A changed invitation's open history version is found by a probe of the
// history's primary key even before the table has statistics
// (sql/history.sql, "opened"). A one-column key's probes are each estimated
// at 0.5% of the table without them, and joining the keys with the history
// table was planned as a scan of all of it and a hash join: here, with 5,000
// versions of another customer's invitations, never analysed.
func TestInvitationHistoryProbedWithoutStatistics(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.FreshSchema(t)
	ctx := t.Context()
	for _, tb := range []string{"user_invitations", "user_invitations_history"} {
		if _, err := pool.Exec(ctx, "ALTER TABLE "+pgx.Identifier{schema, tb}.Sanitize()+" SET (autovacuum_enabled = false)"); err != nil {
			t.Fatal(err)
		}
	}
	s := NewStore(pool, Options{Schema: schema})
	others := &msads.Snapshot{CustomerID: 2002, CustomerName: "Other", AccountsFetched: true}
	for i := range int64(5000) {
		others.Invitations = append(others.Invitations, msads.Invitation{ID: 100_000 + i, CustomerID: 2002,
			Email: fmt.Sprintf("i%d@example.com", i), RoleID: msads.RoleViewer})
	}
	if _, err := s.WriteSnapshot(ctx, 0, others, SyncInfo{}); err != nil {
		t.Fatal(err)
	}
	snap := baseSnapshot()
	if _, err := s.WriteSnapshot(ctx, 0, snap, SyncInfo{}); err != nil {
		t.Fatal(err)
	}
	snap.Invitations[0].RoleID = msads.RoleViewer
	var plan []string
	s.testHook = func(step string, tx pgx.Tx) error {
		if step != "write" {
			return nil
		}
		args := pgx.NamedArgs{"customer_id": snap.CustomerID, "owners": []int64{snap.CustomerID}, "run_id": nil}
		rows, err := tx.Query(ctx, "EXPLAIN (COSTS OFF) "+invitationsTable.upsert, args)
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}
	ch, err := s.WriteSnapshot(ctx, 0, snap, SyncInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Invitations.Changed != 1 {
		t.Errorf("invitations changed = %d, want 1", ch.Invitations.Changed)
	}
	if len(plan) == 0 {
		t.Fatal("the invitations upsert was not explained")
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan on user_invitations_history") || !strings.Contains(text, "user_invitations_history_pkey") {
		t.Errorf("the invitations upsert scans the history table instead of probing its primary key:\n%s", text)
	}
}
