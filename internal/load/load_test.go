package load

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
	"github.com/msads-syncer/syncer/internal/status"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type bundle struct {
	pool   *pgxpool.Pool
	schema string
	store  *Store
	runID  int64
}

func setup(t *testing.T, opts Options) *bundle {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	opts.Schema = schema
	s := NewStore(pool, opts)
	runID, err := s.StartRun(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{pool: pool, schema: schema, store: s, runID: runID}
}

// q qualifies a table of the test schema.
func (b *bundle) q(table string) string { return pgx.Identifier{b.schema, table}.Sanitize() }

func (b *bundle) write(t *testing.T, snap *msads.Snapshot) Changes {
	t.Helper()
	ch, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{StartedAt: time.Now(), APICalls: 3})
	if err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	return ch
}

// sweep runs SweepRoles over customers as the job does once a run's
// customers are written, and returns how many roles it removed.
func (b *bundle) sweep(t *testing.T, customers ...int64) int {
	t.Helper()
	n, err := b.store.SweepRoles(t.Context(), b.runID, customers, nil)
	if err != nil {
		t.Fatalf("SweepRoles: %v", err)
	}
	return n
}

// versions fingerprints every row version of the entity and history tables:
// a row rewritten (even with equal values) gets a new ctid and xmin.
func (b *bundle) versions(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tb := range []string{"users", "user_roles", "user_invitations", "accounts", "users_history", "user_roles_history", "user_invitations_history",
		"client_links", "client_links_history"} {
		var n int
		var fp string
		err := b.pool.QueryRow(t.Context(), `SELECT count(*), coalesce(md5(string_agg(ctid::text || xmin::text, ',' ORDER BY ctid)), '') FROM `+b.q(tb)).Scan(&n, &fp)
		if err != nil {
			t.Fatal(err)
		}
		out[tb] = fmt.Sprintf("%d rows %s", n, fp)
	}
	return out
}

// sameVersions fails the test for every table whose rows or row versions
// differ from before (a b.versions result); what says what should not have
// written.
func (b *bundle) sameVersions(t *testing.T, before map[string]string, what string) {
	t.Helper()
	after := b.versions(t)
	for tb, v := range before {
		if after[tb] != v {
			t.Errorf("table %s %s: before %s, after %s", tb, what, v, after[tb])
		}
	}
}

func (b *bundle) strings(t *testing.T, query string, args ...any) []string {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(t.Context()) }()
	if _, err := tx.Exec(t.Context(), "SET LOCAL search_path TO "+pgx.Identifier{b.schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(t.Context(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		vals, err := r.Values()
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(v)
			if v == nil {
				parts[i] = "NULL"
			}
		}
		return strings.Join(parts, "|"), err
	})
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return got
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

const cust = 1001

func ptime(s string) *time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &tm
}

// baseSnapshot: 4 users of customer 1001; user 3 also has a role on customer
// 2002; two invitations; two accounts.
func baseSnapshot() *msads.Snapshot {
	s := &msads.Snapshot{CustomerID: cust, CustomerName: "Acme", AccountsFetched: true}
	for i := int64(1); i <= 4; i++ {
		s.Users = append(s.Users, msads.User{ID: i, CustomerID: cust, HomeCustomerID: cust,
			UserName: fmt.Sprintf("user%d", i), Email: fmt.Sprintf("u%d@example.com", i), LifecycleStatus: "Active"})
	}
	s.Roles = []msads.Role{
		{UserID: 1, CustomerID: cust, RoleID: msads.RoleSuperAdmin},
		{UserID: 2, CustomerID: cust, RoleID: msads.RoleViewer, AccountIDs: []int64{12, 11}},
		{UserID: 3, CustomerID: cust, RoleID: msads.RoleStandardUser},
		{UserID: 3, CustomerID: 2002, RoleID: msads.RoleViewer},
		{UserID: 4, CustomerID: cust, RoleID: 999}, // unknown role id
	}
	s.Invitations = []msads.Invitation{
		{ID: 501, CustomerID: cust, Email: "new@example.com", RoleID: msads.RoleStandardUser, ExpirationDate: ptime("2099-01-31T00:00:00Z")},
		{ID: 502, CustomerID: cust, Email: "old@example.com", RoleID: msads.RoleViewer, AccountIDs: []int64{11}, ExpirationDate: ptime("2020-01-31T00:00:00Z")},
	}
	s.Accounts = []msads.Account{
		{ID: 11, CustomerID: cust, Name: "Search", Number: "F1", Status: "Active"},
		{ID: 12, CustomerID: cust, Name: "Display", Number: "F2", Status: "Active"},
	}
	return s
}

func TestFirstLoad(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ch := b.write(t, baseSnapshot())
	want := Changes{Users: Counts{Added: 4}, Roles: Counts{Added: 5}, Invitations: Counts{Added: 2}, Accounts: Counts{Added: 2}}
	if ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "access", b.strings(t, `SELECT user_id, user_name, customer_id, role_id, role_name, account_id, account_name FROM access ORDER BY 1, 3, 4, 6`), []string{
		"1|user1|1001|41|Super Admin|NULL|NULL",
		"2|user2|1001|100|Viewer|11|Search",
		"2|user2|1001|100|Viewer|12|Display",
		"3|user3|1001|203|Standard User|NULL|NULL",
		"3|user3|2002|100|Viewer|NULL|NULL",
		"4|user4|1001|999|Role 999|NULL|NULL",
	})
	equal(t, "stored account_ids sorted", b.strings(t, `SELECT account_ids::text FROM user_roles WHERE user_id = 2`), []string{"{11,12}"})
	equal(t, "history", b.strings(t, `SELECT change, count(*), count(valid_to), count(*) FILTER (WHERE run_id = $1) FROM users_history GROUP BY 1`, b.runID),
		[]string{"added|4|0|4"})
	equal(t, "customer", b.strings(t, `SELECT name, last_success_at IS NOT NULL, last_error IS NULL FROM customers`), []string{"Acme|true|true"})
	equal(t, "customer_syncs", b.strings(t, `SELECT status, users_seen, roles_seen, invitations_seen, api_calls, users_added, roles_added FROM customer_syncs`),
		[]string{"succeeded|4|5|2|3|4|5"})
	equal(t, "freshness", b.strings(t, `SELECT customer_id, name, age < interval '1 hour', last_error IS NULL FROM customer_freshness`),
		[]string{"1001|Acme|true|true"})
}

func TestNoChangeRerunWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	before := b.versions(t)
	// Same content, different order: still no change.
	snap := baseSnapshot()
	snap.Users[0], snap.Users[3] = snap.Users[3], snap.Users[0]
	snap.Roles[1].AccountIDs = []int64{11, 12}
	if ch := b.write(t, snap); ch.Total() != 0 {
		t.Errorf("re-run changes = %v, want none", ch)
	}
	b.sameVersions(t, before, "rewritten by a no-change re-run")
}

func TestUserRemovedAndReadded(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())

	snap := baseSnapshot()
	snap.Users = snap.Users[:2] // users 3 and 4 gone: 2 of 4, exactly the limit
	snap.Roles = snap.Roles[:2]
	ch := b.write(t, snap)
	// Their roles in 1001 go with the listing; user 3's role in 2002, which
	// no listing keeps any more, with the sweep after the run's writes.
	if want := (Changes{Users: Counts{Removed: 2}, Roles: Counts{Removed: 2}}); ch != want {
		t.Errorf("removal changes = %v, want %v", ch, want)
	}
	if n := b.sweep(t, cust, 2002); n != 1 {
		t.Errorf("sweep removed %d roles, want 1", n)
	}
	equal(t, "users removed", b.strings(t, `SELECT user_id FROM users WHERE removed_at IS NOT NULL ORDER BY 1`), []string{"3", "4"})
	equal(t, "access without 3 and 4", b.strings(t, `SELECT DISTINCT user_id FROM access ORDER BY 1`), []string{"1", "2"})

	ch = b.write(t, baseSnapshot())
	if want := (Changes{Users: Counts{Reappeared: 2}, Roles: Counts{Reappeared: 3}}); ch != want {
		t.Errorf("re-add changes = %v, want %v", ch, want)
	}
	equal(t, "user 3 history", b.strings(t, `SELECT change, valid_to IS NULL FROM users_history WHERE user_id = 3 ORDER BY valid_from`),
		[]string{"added|false", "removed|false", "reappeared|true"})
	equal(t, "user 3 role history", b.strings(t, `SELECT customer_id, change FROM user_roles_history WHERE user_id = 3 ORDER BY customer_id, valid_from`),
		[]string{"1001|added", "1001|removed", "1001|reappeared", "2002|added", "2002|removed", "2002|reappeared"})
	equal(t, "no removed rows left", b.strings(t, `SELECT count(*) FROM users WHERE removed_at IS NOT NULL`), []string{"0"})
}

func TestRoleChangedAndScopeNarrowed(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	snap := baseSnapshot()
	snap.Roles[0].RoleID = msads.RoleStandardUser // user 1: Super Admin -> Standard User
	snap.Roles[1].AccountIDs = []int64{12}        // user 2: narrowed to one account
	snap.Users[1].Email = "u2@new.example.com"
	ch := b.write(t, snap)
	if want := (Changes{Users: Counts{Changed: 1}, Roles: Counts{Added: 1, Changed: 1, Removed: 1}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "access users 1, 2", b.strings(t, `SELECT user_id, email, role_name, account_id FROM access WHERE user_id <= 2 ORDER BY 1, 3, 4`), []string{
		"1|u1@example.com|Standard User|NULL",
		"2|u2@new.example.com|Viewer|12",
	})
	equal(t, "user 2 role history", b.strings(t, `SELECT change, account_ids::text FROM user_roles_history WHERE user_id = 2 ORDER BY valid_from`),
		[]string{"added|{11,12}", "changed|{12}"})
	equal(t, "user 1 roles", b.strings(t, `SELECT role_id, removed_at IS NOT NULL FROM user_roles WHERE user_id = 1 ORDER BY 1`),
		[]string{"41|true", "203|false"})
}

func TestInvitationAcceptedAndExpired(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	equal(t, "pending", b.strings(t, `SELECT invitation_id, role_name, expired, estimated_sent_at = expiration_date - interval '30 days', account_ids::text FROM pending_invitations ORDER BY 1`), []string{
		"501|Standard User|false|true|NULL",
		"502|Viewer|true|true|{11}",
	})
	// Fresh but expired: stale. A long threshold still lists the expired one.
	equal(t, "stale", b.strings(t, `SELECT invitation_id FROM stale_invitations('30 days')`), []string{"502"})
	// Age counts from the estimated sending date: 501 expires in 2099, so it
	// is not even sent yet by that count; a negative threshold lists it.
	equal(t, "stale, zero threshold", b.strings(t, `SELECT invitation_id FROM stale_invitations('0 seconds') ORDER BY 1`), []string{"502"})
	equal(t, "stale, any age", b.strings(t, `SELECT invitation_id FROM stale_invitations('-100 years') ORDER BY 1`), []string{"501", "502"})

	snap := baseSnapshot()
	snap.Invitations = snap.Invitations[1:] // 501 accepted
	ch := b.write(t, snap)
	if want := (Changes{Invitations: Counts{Removed: 1}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "pending after accept", b.strings(t, `SELECT invitation_id FROM pending_invitations`), []string{"502"})
	equal(t, "accepted row kept", b.strings(t, `SELECT removed_at IS NOT NULL FROM user_invitations WHERE invitation_id = 501`), []string{"true"})
	equal(t, "history", b.strings(t, `SELECT change FROM user_invitations_history WHERE invitation_id = 501 ORDER BY valid_from`), []string{"added", "removed"})
}

func TestRemovalGuard(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	before := b.versions(t)

	snap := baseSnapshot()
	snap.Users = snap.Users[:1] // 3 of 4 would go
	snap.Roles = snap.Roles[:1]
	_, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{})
	if !errors.Is(err, ErrRemovalGuard) {
		t.Fatalf("WriteSnapshot error = %v, want ErrRemovalGuard", err)
	}
	for _, want := range []string{"3 of 4", "75%", "--allow-mass-removal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("guard error %q does not mention %q", err, want)
		}
	}
	if _, err := b.store.DiffSnapshot(t.Context(), 0, snap, SyncInfo{}); !errors.Is(err, ErrRemovalGuard) {
		t.Errorf("DiffSnapshot error = %v, want ErrRemovalGuard", err)
	}
	empty := &msads.Snapshot{CustomerID: cust}
	if _, err := b.store.WriteSnapshot(t.Context(), b.runID, empty, SyncInfo{}); !errors.Is(err, ErrRemovalGuard) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty listing: error = %v, want ErrRemovalGuard about the empty listing", err)
	}
	b.sameVersions(t, before, "changed by a guarded snapshot")

	override := NewStore(b.pool, Options{Schema: b.schema, AllowMassRemoval: true})
	ch, err := override.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{})
	if err != nil {
		t.Fatalf("with AllowMassRemoval: %v", err)
	}
	if ch.Users.Removed != 3 {
		t.Errorf("UsersRemoved = %d, want 3", ch.Users.Removed)
	}
}

func TestFirstLoadEmptyIsFine(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	if ch := b.write(t, &msads.Snapshot{CustomerID: cust}); ch.Total() != 0 {
		t.Errorf("changes = %v", ch)
	}
}

func TestFailureMidSnapshotKeepsPreviousState(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	before := b.versions(t)

	snap := baseSnapshot()
	snap.Users[0].Email = "changed@example.com"
	snap.Invitations = nil
	boom := errors.New("boom")
	failing := NewStore(b.pool, Options{Schema: b.schema})
	failing.testHook = func(step string, _ pgx.Tx) error {
		if step == "write" {
			return boom
		}
		return nil
	}
	if _, err := failing.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); !errors.Is(err, boom) {
		t.Fatalf("error = %v, want boom", err)
	}
	// A canceled context fails too, and writes nothing.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.store.WriteSnapshot(ctx, b.runID, snap, SyncInfo{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: error = %v, want context.Canceled", err)
	}
	b.sameVersions(t, before, "changed by a failed snapshot")
}

func TestRecordCustomerFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	before := b.versions(t)
	if err := b.store.RecordCustomerFailure(t.Context(), b.runID, cust, SyncInfo{APICalls: 7}, errors.New("GetUser: 500")); err != nil {
		t.Fatal(err)
	}
	if err := b.store.RecordCustomerFailure(t.Context(), b.runID, 3003, SyncInfo{}, errors.New("denied")); err != nil {
		t.Fatal(err)
	}
	equal(t, "customers", b.strings(t, `SELECT customer_id, last_success_at IS NOT NULL, last_error FROM customers ORDER BY 1`),
		[]string{"1001|true|GetUser: 500", "3003|false|denied"})
	equal(t, "customer_syncs", b.strings(t, `SELECT customer_id, status, api_calls, coalesce(error, '') FROM customer_syncs ORDER BY 1`),
		[]string{"1001|failed|7|GetUser: 500", "3003|failed|0|denied"})
	b.sameVersions(t, before, "changed by RecordCustomerFailure")
	if err := b.store.FinishRun(t.Context(), b.runID, status.Partial, 1, "1 customer failed"); err != nil {
		t.Fatal(err)
	}
	equal(t, "run", b.strings(t, `SELECT status, customers_failed, error, finished_at IS NOT NULL FROM sync_runs`),
		[]string{"partial|1|1 customer failed|true"})
	if err := b.store.FinishRun(t.Context(), 99999, status.Failed, 0, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishRun unknown run: %v, want ErrNotFound", err)
	}
}

func TestAccessAsOf(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var beforeAll time.Time
	if err := b.pool.QueryRow(t.Context(), "SELECT clock_timestamp()").Scan(&beforeAll); err != nil {
		t.Fatal(err)
	}
	b.write(t, baseSnapshot())
	var between time.Time
	if err := b.pool.QueryRow(t.Context(), "SELECT clock_timestamp()").Scan(&between); err != nil {
		t.Fatal(err)
	}
	snap := baseSnapshot()
	snap.Roles[0].RoleID = msads.RoleViewer
	snap.Users = snap.Users[:3] // user 4 removed
	snap.Roles = snap.Roles[:4]
	b.write(t, snap)

	const q = `SELECT user_id, customer_id, role_name, account_id FROM %s ORDER BY 1, 2, 3, 4`
	equal(t, "access_as_of(between) = first access", b.strings(t, fmt.Sprintf(q, "access_as_of($1)"), between), []string{
		"1|1001|Super Admin|NULL",
		"2|1001|Viewer|11",
		"2|1001|Viewer|12",
		"3|1001|Standard User|NULL",
		"3|2002|Viewer|NULL",
		"4|1001|Role 999|NULL",
	})
	now := b.strings(t, fmt.Sprintf(q, "access"))
	equal(t, "access_as_of(now) = access", b.strings(t, fmt.Sprintf(q, "access_as_of(now())")), now)
	equal(t, "access now", now, []string{
		"1|1001|Viewer|NULL",
		"2|1001|Viewer|11",
		"2|1001|Viewer|12",
		"3|1001|Standard User|NULL",
		"3|2002|Viewer|NULL",
	})
	equal(t, "before the first load", b.strings(t, fmt.Sprintf(q, "access_as_of($1)"), beforeAll), nil)
}

func TestDiffSnapshotWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	before := b.versions(t)
	ch, err := b.store.DiffSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Changes{Users: Counts{Added: 4}, Roles: Counts{Added: 5}, Invitations: Counts{Added: 2}, Accounts: Counts{Added: 2}}); ch != want {
		t.Errorf("diff = %v, want %v", ch, want)
	}
	b.sameVersions(t, before, "written by DiffSnapshot")
	equal(t, "no customer rows", b.strings(t, `SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM customer_syncs)`), []string{"0"})

	b.write(t, baseSnapshot())
	snap := baseSnapshot()
	snap.Users[0].JobTitle = "CFO"
	if ch, err := b.store.DiffSnapshot(t.Context(), b.runID, snap, SyncInfo{}); err != nil || ch != (Changes{Users: Counts{Changed: 1}}) {
		t.Errorf("diff after load = %v, %v; want one changed user", ch, err)
	}
}

func TestUserSharedByTwoCustomers(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	a := baseSnapshot()
	other := &msads.Snapshot{CustomerID: 2002, Users: []msads.User{{ID: 3, CustomerID: 2002, HomeCustomerID: cust, UserName: "user3"}},
		Roles: []msads.Role{{UserID: 3, CustomerID: cust, RoleID: msads.RoleStandardUser}, {UserID: 3, CustomerID: 2002, RoleID: msads.RoleViewer}}}
	b.write(t, a)
	if ch := b.write(t, other); ch != (Changes{Users: Counts{Added: 1}}) {
		t.Errorf("second customer's listing of user 3: %v, want 1 user added (roles unchanged)", ch)
	}
	// Customer 1001 drops user 3: 2002 still lists them (and its GetUser
	// speaks for their roles), so their roles stay.
	a.Users = slicesDelete(a.Users, 2)
	a.Roles = []msads.Role{a.Roles[0], a.Roles[1], a.Roles[4]}
	if ch := b.write(t, a); ch != (Changes{Users: Counts{Removed: 1}}) {
		t.Errorf("1001 drops user 3: %v, want 1 user removed, no role removed", ch)
	}
	equal(t, "user 3 access", b.strings(t, `SELECT customer_id, role_id FROM access WHERE user_id = 3 ORDER BY 1`),
		[]string{"1001|203", "2002|100"})
	if n := b.sweep(t, cust, 2002); n != 0 {
		t.Errorf("sweep removed %d roles of a user 2002 still lists", n)
	}
	// 2002 drops them too: no listing is left; the role in 2002 goes with
	// 2002's write, the one in 1001 with the sweep after the run's writes.
	if ch := b.write(t, &msads.Snapshot{CustomerID: 2002}); ch != (Changes{Users: Counts{Removed: 1}, Roles: Counts{Removed: 1}}) {
		t.Errorf("2002 drops user 3: %v, want 1 user and 1 role removed", ch)
	}
	if n := b.sweep(t, cust, 2002); n != 1 {
		t.Errorf("sweep removed %d roles, want 1", n)
	}
	equal(t, "user 3 access gone", b.strings(t, `SELECT count(*) FROM access WHERE user_id = 3`), []string{"0"})
}

func slicesDelete[T any](s []T, i int) []T { return append(s[:i:i], s[i+1:]...) }

func TestConcurrentCustomersSharingUsers(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for c := range int64(4) {
		wg.Go(func() {
			for round := range 5 {
				snap := &msads.Snapshot{CustomerID: 100 + c}
				for u := int64(1); u <= 50; u++ {
					snap.Users = append(snap.Users, msads.User{ID: u, UserName: fmt.Sprint("u", u)})
					for _, rc := range []int64{100, 101, 102, 103} {
						role := msads.RoleViewer
						if (u+int64(round))%3 == 0 {
							role = msads.RoleStandardUser
						}
						snap.Roles = append(snap.Roles, msads.Role{UserID: u, CustomerID: rc, RoleID: role})
					}
				}
				if _, err := b.store.WriteSnapshot(context.Background(), b.runID, snap, SyncInfo{}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	equal(t, "one open history row per role", b.strings(t,
		`SELECT count(*) FROM (SELECT 1 FROM user_roles_history WHERE valid_to IS NULL GROUP BY user_id, customer_id, role_id HAVING count(*) > 1) x`), []string{"0"})
	equal(t, "intervals ordered", b.strings(t,
		`SELECT count(*) FROM user_roles_history WHERE valid_to IS NOT NULL AND valid_to <= valid_from`), []string{"0"})
}

func TestInvalidSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	snap := baseSnapshot()
	snap.Roles = append(snap.Roles, msads.Role{UserID: 77, CustomerID: cust, RoleID: 41})
	if _, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); !errors.Is(err, ErrInvalidSnapshot) {
		t.Errorf("role of unlisted user: %v, want ErrInvalidSnapshot", err)
	}
	snap = baseSnapshot()
	snap.Users[0].CustomerID = 5
	if _, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); !errors.Is(err, ErrInvalidSnapshot) {
		t.Errorf("user of another customer: %v, want ErrInvalidSnapshot", err)
	}
}

func TestTokenStore(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := t.Context()

	plain := b.store.TokenStore("cred-a")
	if tok, err := plain.Load(ctx); err != nil || tok != "" {
		t.Fatalf("Load with nothing stored = %q, %v; want empty", tok, err)
	}
	if err := plain.Save(ctx, "refresh-1"); err != nil {
		t.Fatal(err)
	}
	if tok, err := plain.Load(ctx); err != nil || tok != "refresh-1" {
		t.Errorf("plain round trip = %q, %v", tok, err)
	}

	enc := NewStore(b.pool, Options{Schema: b.schema, TokenKey: "correct horse"}).TokenStore("cred-b")
	const secret = "M.R3_BAY.super-secret-refresh-token"
	if err := enc.Save(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if tok, err := enc.Load(ctx); err != nil || tok != secret {
		t.Errorf("encrypted round trip = %q, %v", tok, err)
	}
	equal(t, "at rest", b.strings(t, `SELECT kind, position(convert_to($1, 'UTF8') IN token) FROM oauth_tokens WHERE credential_key = 'cred-b'`, secret),
		[]string{"aes-gcm|0"})

	wrong := NewStore(b.pool, Options{Schema: b.schema, TokenKey: "wrong"}).TokenStore("cred-b")
	if _, err := wrong.Load(ctx); !errors.Is(err, ErrTokenKey) || !strings.Contains(err.Error(), "wrong database.token_key") {
		t.Errorf("wrong key: %v, want ErrTokenKey naming the setting", err)
	}
	if _, err := b.store.TokenStore("cred-b").Load(ctx); !errors.Is(err, ErrTokenKey) || !strings.Contains(err.Error(), "not set") {
		t.Errorf("no key: %v, want ErrTokenKey saying the key is not set", err)
	}
	// A token sealed for another credential does not open under this one.
	if _, err := b.pool.Exec(ctx, `INSERT INTO `+b.q("oauth_tokens")+` (credential_key, kind, token) SELECT 'cred-c', kind, token FROM `+b.q("oauth_tokens")+` WHERE credential_key = 'cred-b'`); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(b.pool, Options{Schema: b.schema, TokenKey: "correct horse"}).TokenStore("cred-c").Load(ctx); !errors.Is(err, ErrTokenKey) {
		t.Errorf("token moved to another credential: %v, want ErrTokenKey", err)
	}
}

func TestOpenScrubsPassword(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://bob:s3cretpw@127.0.0.1:1/db?connect_timeout=2",
		"host=127.0.0.1 port=1 user=bob password=s3cretpw dbname=db connect_timeout=2",
		"postgres://bob:s3cretpw@127.0.0.1:1/db?sslmode=bogus",
	} {
		_, err := Open(t.Context(), dsn)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("Open error shows the password: %v", err)
		}
	}
	pool, err := Open(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var app, timeout string
	if err := pool.QueryRow(t.Context(), "SELECT current_setting('application_name'), current_setting('statement_timeout')").Scan(&app, &timeout); err != nil {
		t.Fatal(err)
	}
	if app != "syncer" || timeout == "0" {
		t.Errorf("application_name = %q, statement_timeout = %q", app, timeout)
	}
}

func TestTransientErrorsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, tc := range []struct {
		name   string
		inject func(t *testing.T, tx pgx.Tx) error
	}{
		{"serialization failure", func(t *testing.T, tx pgx.Tx) error {
			return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
		}},
		{"deadlock", func(t *testing.T, tx pgx.Tx) error {
			return &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
		}},
		{"connection lost", func(t *testing.T, tx pgx.Tx) error {
			var pid int
			if err := tx.QueryRow(t.Context(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := b.pool.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			return nil // the next statement fails
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(b.pool, Options{Schema: b.schema})
			attempts := 0
			s.testHook = func(step string, tx pgx.Tx) error {
				if step != "copy users" {
					return nil
				}
				attempts++
				if attempts == 1 {
					return tc.inject(t, tx)
				}
				return nil
			}
			snap := baseSnapshot()
			snap.Users[0].JobTitle = tc.name
			ch, err := s.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{})
			if err != nil {
				t.Fatalf("WriteSnapshot: %v", err)
			}
			if attempts != 2 {
				t.Errorf("attempts = %d, want 2", attempts)
			}
			if ch.Total() == 0 {
				t.Errorf("changes = %v, want some", ch)
			}
		})
	}
	// A permanent error is not retried.
	s := NewStore(b.pool, Options{Schema: b.schema})
	attempts := 0
	s.testHook = func(step string, _ pgx.Tx) error {
		if step == "copy users" {
			attempts++
			return &pgconn.PgError{Code: "23505", Message: "duplicate key"}
		}
		return nil
	}
	if _, err := s.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{}); err == nil || attempts != 1 {
		t.Errorf("unique violation: err = %v after %d attempts, want an error after 1", err, attempts)
	}
}

func TestAccountsOnlyWhenFetched(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())

	snap := baseSnapshot()
	snap.Accounts, snap.AccountsFetched = nil, false
	if ch := b.write(t, snap); ch.Total() != 0 {
		t.Errorf("accounts not fetched: changes = %v, want none", ch)
	}
	equal(t, "accounts kept", b.strings(t, `SELECT account_id, removed_at IS NULL FROM accounts ORDER BY 1`), []string{"11|true", "12|true"})

	snap = baseSnapshot()
	snap.Accounts = snap.Accounts[:1]
	snap.Accounts[0].Name = "Search (renamed)"
	if ch := b.write(t, snap); ch != (Changes{Accounts: Counts{Changed: 1, Removed: 1}}) {
		t.Errorf("changes = %v, want 1 account changed, 1 removed", ch)
	}
	equal(t, "accounts", b.strings(t, `SELECT account_id, name, removed_at IS NULL FROM accounts ORDER BY 1`),
		[]string{"11|Search (renamed)|true", "12|Display|false"})
}
