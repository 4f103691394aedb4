package load

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/msads"
)

// A user listed by two customers whose first writes run at once: both find
// the user's roles new (sql/fresh.sql) and COPY them straight in. The one
// that COPYs second meets the other's committed keys (a unique violation),
// and its write is retried by the upsert, which finds them: one row and one
// open history interval per role, and the second write counts no role as
// added.
func TestDirectPathCollisionRetriedByTheUpsert(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	other := NewStore(b.store.pool, Options{Schema: b.schema})
	shared := msads.User{ID: 7, UserName: "shared", Email: "s@example.com", LifecycleStatus: "Active"}
	snap := func(cid int64) *msads.Snapshot {
		u := shared
		u.CustomerID, u.HomeCustomerID = cid, 1001
		return &msads.Snapshot{CustomerID: cid, Users: []msads.User{u}, RoleCustomers: []int64{1001, 2002},
			Roles: []msads.Role{{UserID: 7, CustomerID: 1001, RoleID: msads.RoleSuperAdmin}, {UserID: 7, CustomerID: 2002, RoleID: msads.RoleViewer}}}
	}
	// A stops once its users are written (after it found the roles new),
	// until B has written the same roles and committed.
	var held, attempts atomic.Int32
	bDone := make(chan error, 1)
	b.store.testHook = func(step string, _ pgx.Tx) error {
		if step == "stage" {
			attempts.Add(1)
		}
		if step != "copy users" || !held.CompareAndSwap(0, 1) {
			return nil
		}
		go func() {
			_, err := other.WriteSnapshot(context.Background(), b.runID, snap(2002), SyncInfo{})
			bDone <- err
		}()
		return <-bDone
	}
	chA := b.write(t, snap(1001))
	if n := attempts.Load(); n != 2 {
		t.Errorf("A's write made %d attempts, want 2 (the direct COPY collided, the upsert retried)", n)
	}
	if chA.Roles.Added != 0 || chA.Users.Added != 1 {
		t.Errorf("A's changes = %v, want 1 user and no role added (B added them)", chA)
	}
	equal(t, "roles", b.strings(t, `SELECT user_id || '|' || customer_id || '|' || role_id FROM user_roles WHERE removed_at IS NULL ORDER BY 1`),
		[]string{"7|1001|41", "7|2002|100"})
	equal(t, "one open interval per role", b.strings(t, `SELECT user_id, customer_id, role_id, count(*)
		FROM user_roles_history WHERE valid_to IS NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`), []string{"7|1001|41|1", "7|2002|100|1"})
	equal(t, "users history", b.strings(t, `SELECT customer_id || '|' || user_id || '|' || change FROM users_history ORDER BY 1`),
		[]string{"1001|7|added", "2002|7|added"})
}

// A customer's first write goes by the direct path, and its rows and
// history are those the upsert writes: the same snapshot written through
// the upsert (the direct path off) leaves the same rows, values and
// history as through the direct path.
func TestDirectPathWritesWhatTheUpsertWrites(t *testing.T) {
	t.Parallel()
	snap := baseSnapshot()
	// An unreadable user: its columns come from userValues over no stored row.
	snap.Users = append(snap.Users, msads.User{ID: 9, CustomerID: cust, UserName: "listed", DetailStatus: msads.DetailUnreadable,
		DetailCode: 1001, DetailTrackingID: "tr-1", DetailError: "Permission denied"})
	direct := setup(t, Options{})
	// (That it stages nothing is TestStatementsPerSnapshot's "first load".)
	if ch := direct.write(t, snap); ch.Users.Added != 5 || ch.Roles.Added != 5 || ch.Invitations.Added != 2 || ch.Accounts.Added != 2 {
		t.Fatalf("direct path changes = %v", ch)
	}

	// Traced: which rows are COPYed and which staged.
	us, tr, upool, uschema := tracedStore(t)
	runID, err := us.StartRun(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	upsert := &bundle{pool: upool, schema: uschema, store: us, runID: runID}
	// A stored row of another customer makes the customer's users not new,
	// so everything goes through staging and the upsert; it is removed by
	// hand before the write it was there for.
	if _, err := upsert.pool.Exec(t.Context(), `INSERT INTO `+upsert.q("users_history")+` (customer_id, user_id, valid_from, change) VALUES ($1, 999, now() - interval '1 day', 'added')`, cust); err != nil {
		t.Fatal(err)
	}
	upsert.store.testHook = func(step string, tx pgx.Tx) error {
		if step == "stage" {
			_, err := tx.Exec(t.Context(), `DELETE FROM users_history WHERE user_id = 999`)
			return err
		}
		return nil
	}
	tr.reset(nil, "")
	if ch := upsert.write(t, snap); ch.Users.Added != 5 || ch.Roles.Added != 5 || ch.Invitations.Added != 2 || ch.Accounts.Added != 2 {
		t.Fatalf("upsert changes = %v", ch)
	}
	if _, copied, staged := tr.roundTrips(); staged["users"] != 5 || len(copied) != 0 {
		t.Fatalf("users staged %v, rows COPYed %v; want 5 users staged and nothing COPYed: the write did not go through the upsert", staged, copied)
	}
	equal(t, "rows and history, direct path vs upsert", dumpWarehouse(t, direct), dumpWarehouse(t, upsert))
}

// Whether a key is new is decided by its history alone (sql/fresh.sql): a
// row inserted by hand without history makes the direct COPY fail on its
// key, and the write is retried by the upsert, which finds the row. The
// warehouse ends as if the row had been written by the syncer: one row,
// one open history interval per key.
func TestDirectPathMeetsARowWithoutHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, q := range []string{
		`INSERT INTO ` + b.q("users") + ` (customer_id, user_id, user_name) VALUES (1001, 1, 'by hand')`,
		`INSERT INTO ` + b.q("user_invitations") + ` (invitation_id, customer_id, email) VALUES (501, 1001, 'hand@example.com')`,
	} {
		if _, err := b.pool.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	var attempts atomic.Int32
	b.store.testHook = func(step string, _ pgx.Tx) error {
		if step == "stage" {
			attempts.Add(1)
		}
		return nil
	}
	ch := b.write(t, baseSnapshot())
	if n := attempts.Load(); n != 2 {
		t.Errorf("attempts = %d, want 2 (the direct COPY met the row, the upsert retried)", n)
	}
	if ch.Users.Added != 3 || ch.Users.Changed != 1 {
		t.Errorf("users changes = %+v, want 3 added and the hand-made row changed", ch.Users)
	}
	equal(t, "one open interval per user", b.strings(t, `SELECT user_id, count(*) FROM users_history WHERE valid_to IS NULL
		GROUP BY 1 HAVING count(*) <> 1`), nil)
	equal(t, "users", b.strings(t, `SELECT count(*) FROM users`), []string{"4"})
}

// dumpWarehouse returns the rows and history of users, roles, invitations
// and accounts as text, without the times a write sets (history: whether
// an interval is closed, and for users whether it is the first's).
func dumpWarehouse(t *testing.T, b *bundle) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT row(customer_id, user_id, home_customer_id, user_name, email, first_name, last_name, job_title, lcid, lifecycle_status, last_modified_time, detail_status, detail_code, detail_tracking_id, detail_error, removed_at IS NULL)::text FROM users ORDER BY customer_id, user_id`,
		`SELECT row(user_id, customer_id, role_id, account_ids, linked_account_ids, customer_link_permission, removed_at IS NULL)::text FROM user_roles ORDER BY 1`,
		`SELECT row(customer_id, user_id, user_name, detail_status, detail_code, detail_tracking_id, valid_to IS NULL, change, run_id IS NOT NULL, valid_from = (SELECT min(valid_from) FROM users_history))::text FROM users_history ORDER BY customer_id, user_id, valid_from`,
		`SELECT row(user_id, customer_id, role_id, account_ids, valid_to IS NULL, change, run_id IS NOT NULL)::text FROM user_roles_history ORDER BY user_id, customer_id, role_id, valid_from`,
		`SELECT row(invitation_id, customer_id, email, first_name, last_name, role_id, account_ids, lcid, expiration_date, removed_at IS NULL)::text FROM user_invitations ORDER BY 1`,
		`SELECT row(invitation_id, customer_id, email, role_id, account_ids, expiration_date, valid_to IS NULL, change, run_id IS NOT NULL)::text FROM user_invitations_history ORDER BY invitation_id, valid_from`,
		`SELECT row(account_id, customer_id, name, number, status, pause_reason, removed_at IS NULL)::text FROM accounts ORDER BY 1`,
	} {
		out = append(out, b.strings(t, q)...)
	}
	return out
}

// Staged rows past the bound of one upsert (maxStagedRows; here 2) go in
// several, each whole by itself: the warehouse ends as after one upsert
// per table, whatever the chunks (roles: a user's roles never split, a
// user whose every role goes is compared and removed all the same).
func TestChunkedUpsertsWriteWhatOneWrites(t *testing.T) {
	t.Parallel()
	first := baseSnapshot()
	for i := int64(10); i < 17; i++ {
		first.Users = append(first.Users, msads.User{ID: i, CustomerID: cust, UserName: fmt.Sprint("user", i), Email: fmt.Sprintf("u%d@example.com", i)})
		first.Roles = append(first.Roles, msads.Role{UserID: i, CustomerID: cust, RoleID: msads.RoleViewer, AccountIDs: []int64{11}},
			msads.Role{UserID: i, CustomerID: cust, RoleID: msads.RoleStandardUser})
	}
	second := baseSnapshot()
	second.Users = slices.Clone(first.Users)
	for i := range second.Users {
		second.Users[i].LastName = "changed"
	}
	for _, r := range first.Roles {
		switch {
		case r.UserID == 12: // every role removed
		case r.UserID == 13 && r.RoleID == msads.RoleViewer:
			r.AccountIDs = []int64{11, 12}
			second.Roles = append(second.Roles, r, msads.Role{UserID: 13, CustomerID: cust, RoleID: msads.RoleSuperAdmin})
		case r.UserID >= 14:
			r.AccountIDs = nil
			second.Roles = append(second.Roles, r)
		default:
			second.Roles = append(second.Roles, r)
		}
	}
	second.Invitations = slices.Clone(first.Invitations)
	for i := range second.Invitations {
		second.Invitations[i].Email = "changed@example.com"
	}
	second.Invitations = append(second.Invitations, msads.Invitation{ID: 503, CustomerID: cust, Email: "third@example.com", RoleID: msads.RoleViewer})
	second.Accounts = slices.Clone(first.Accounts)
	for i := range second.Accounts {
		second.Accounts[i].Status = "Paused"
	}
	var changes [2][]Changes
	bundles := [2]*bundle{setup(t, Options{}), setup(t, Options{})}
	bundles[1].store.stagedRows = 2
	for i, b := range bundles {
		for _, snap := range []*msads.Snapshot{first, second, first} {
			changes[i] = append(changes[i], b.write(t, snap))
		}
	}
	if !slices.Equal(changes[0], changes[1]) {
		t.Errorf("changes in one upsert %v, in chunks of 2 %v", changes[0], changes[1])
	}
	if want := (Counts{Changed: 11}); changes[1][1].Users != want {
		t.Errorf("second write, users %v, want %v (the test no longer stages several chunks)", changes[1][1].Users, want)
	}
	equal(t, "rows and history, one upsert vs chunks of 2", dumpWarehouse(t, bundles[0]), dumpWarehouse(t, bundles[1]))
}
