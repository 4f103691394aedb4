package load

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/msads"
)

// exec runs statements in the test schema, as another writer would.
func (b *bundle) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := b.pool.Exec(t.Context(), "SET search_path TO "+pgx.Identifier{b.schema}.Sanitize()+"; "+q+"; RESET search_path"); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// The read-back compares a re-run with the rows stored when it runs,
// whatever wrote them: rows another writer changed, removed, restored,
// deleted or added since the last write of the same snapshot are written
// back, as the SQL comparison did when the whole snapshot was sent.
func TestReadBackSeesOtherWriters(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	if ch := b.write(t, baseSnapshot()); ch.Total() != 0 {
		t.Fatalf("no-change re-run changes = %v", ch)
	}
	b.exec(t,
		// Values, including one written back with the same value (a new
		// row version, nothing to write) and an array equal in elements
		// but not in bounds (IS DISTINCT FROM: distinct).
		"UPDATE users SET last_name = 'Changed' WHERE user_id = 1",
		"UPDATE users SET email = email WHERE user_id = 2",
		"UPDATE user_roles SET account_ids = '[0:1]={11,12}' WHERE user_id = 2",
		"UPDATE user_invitations SET email = 'other@example.com' WHERE invitation_id = 501",
		"UPDATE accounts SET name = 'Renamed' WHERE account_id = 11",
		// Removed by hand, deleted by hand.
		"UPDATE users SET removed_at = now() WHERE user_id = 4",
		"UPDATE user_roles SET removed_at = now() WHERE user_id = 3 AND customer_id = 2002",
		"DELETE FROM user_roles WHERE user_id = 1",
		// Added by hand: current rows the snapshot does not list.
		"INSERT INTO users (customer_id, user_id, user_name) VALUES (1001, 9, 'extra')",
		"INSERT INTO user_roles (user_id, customer_id, role_id) VALUES (4, 1001, 16)",
		"INSERT INTO user_invitations (invitation_id, customer_id, email) VALUES (503, 1001, 'extra@example.com'), (504, 2002, 'theirs@example.com')",
		"INSERT INTO accounts (account_id, customer_id, name) VALUES (13, 1001, 'Extra')",
	)
	ch := b.write(t, baseSnapshot())
	want := Changes{
		Users:       Counts{Changed: 1, Reappeared: 1, Removed: 1},
		Roles:       Counts{Added: 1, Changed: 1, Reappeared: 1, Removed: 1},
		Invitations: Counts{Changed: 1, Removed: 1},
		Accounts:    Counts{Changed: 1, Removed: 1},
	}
	if ch != want {
		t.Errorf("re-run after other writers changes = %v, want %v", ch, want)
	}
	equal(t, "users", b.strings(t, `SELECT user_id, coalesce(last_name, '-'), removed_at IS NULL FROM users ORDER BY 1`),
		[]string{"1|-|true", "2|-|true", "3|-|true", "4|-|true", "9|-|false"})
	equal(t, "roles", b.strings(t, `SELECT user_id, customer_id, role_id, coalesce(account_ids::text, '-'), removed_at IS NULL FROM user_roles ORDER BY 1, 2, 3`),
		[]string{"1|1001|41|-|true", "2|1001|100|{11,12}|true", "3|1001|203|-|true", "3|2002|100|-|true", "4|1001|16|-|false", "4|1001|999|-|true"})
	equal(t, "invitations", b.strings(t, `SELECT invitation_id, email, removed_at IS NULL FROM user_invitations ORDER BY 1`),
		[]string{"501|new@example.com|true", "502|old@example.com|true", "503|extra@example.com|false", "504|theirs@example.com|true"})
	equal(t, "accounts", b.strings(t, `SELECT account_id, name, removed_at IS NULL FROM accounts ORDER BY 1`),
		[]string{"11|Search|true", "12|Display|true", "13|Extra|false"})
	before := b.versions(t)
	if ch := b.write(t, baseSnapshot()); ch.Total() != 0 {
		t.Errorf("no-change re-run after the repair changes = %v", ch)
	}
	b.sameVersions(t, before, "rewritten by a no-change re-run")
}

// A re-run after a sweep that removed roles of a user the snapshot lists
// again writes them back: the read-back finds them removed.
func TestReadBackAfterSweep(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	// User 3 is no longer listed: its users row goes; the sweep (the job's,
	// after the customers) removes its role on 2002.
	snap := baseSnapshot()
	snap.Users = slicesDelete(snap.Users, 2)
	snap.Roles = slices.DeleteFunc(snap.Roles, func(r msads.Role) bool { return r.UserID == 3 })
	b.write(t, snap)
	if n := b.sweep(t, cust, 2002); n != 1 {
		t.Fatalf("sweep removed %d roles, want 1", n)
	}
	ch := b.write(t, baseSnapshot())
	want := Changes{Users: Counts{Reappeared: 1}, Roles: Counts{Reappeared: 2}}
	if ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "user 3's roles", b.strings(t, `SELECT customer_id, removed_at IS NULL FROM user_roles WHERE user_id = 3 ORDER BY 1`),
		[]string{"1001|true", "2002|true"})
}

// The read-back sends a subset of the snapshot; what it leaves out must be
// what the SQL comparison would not have written. Random changes by other
// writers and random snapshots: the changes a write would make with the
// read-back equal those with the whole snapshot sent (testSendAll), every
// time (DiffSnapshot, rolled back), and the write then leaves nothing to
// change. SYNCER_SEED replays a seed.
func TestReadBackMatchesSQLComparison(t *testing.T) {
	t.Parallel()
	seed := uint64(rand.Int64())
	if v := os.Getenv("SYNCER_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("SYNCER_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	b := setup(t, Options{AllowMassRemoval: true})
	const other = 2002
	base := func() *msads.Snapshot {
		s := &msads.Snapshot{CustomerID: cust, CustomerName: "Acme", AccountsFetched: true, RoleCustomers: []int64{cust, other}}
		for i := int64(1); i <= 30; i++ {
			s.Users = append(s.Users, msads.User{ID: i, CustomerID: cust, HomeCustomerID: cust, UserName: fmt.Sprint("user", i),
				Email: fmt.Sprintf("u%d@example.com", i), LifecycleStatus: "Active", LastModifiedTime: ptime("2025-01-02T03:04:05.123456789Z")})
			s.Roles = append(s.Roles, msads.Role{UserID: i, CustomerID: cust, RoleID: msads.RoleStandardUser})
			if i%3 == 0 {
				s.Roles = append(s.Roles, msads.Role{UserID: i, CustomerID: other, RoleID: msads.RoleViewer, AccountIDs: []int64{21, 22}})
			}
		}
		for i := int64(0); i < 6; i++ {
			s.Invitations = append(s.Invitations, msads.Invitation{ID: 500 + i, CustomerID: cust, Email: fmt.Sprintf("i%d@example.com", i),
				RoleID: msads.RoleViewer, AccountIDs: []int64{}, ExpirationDate: ptime("2099-01-31T00:00:00Z")})
		}
		for i := int64(0); i < 4; i++ {
			s.Accounts = append(s.Accounts, msads.Account{ID: 10 + i, CustomerID: cust, Name: fmt.Sprint("Account ", i), Number: fmt.Sprint("F", i), Status: "Active"})
		}
		return s
	}
	b.write(t, base())
	// Other writers' changes (%d: a random user id 1-32).
	writes := []string{
		"UPDATE users SET last_name = 'x' WHERE user_id = %d",
		"UPDATE users SET email = email WHERE user_id = %d",
		"UPDATE users SET last_modified_time = last_modified_time + interval '1 microsecond' WHERE user_id = %d",
		"UPDATE users SET removed_at = now() WHERE user_id = %d",
		"UPDATE users SET removed_at = NULL WHERE user_id = %d",
		"DELETE FROM users WHERE user_id = %d",
		"INSERT INTO users (customer_id, user_id, user_name) VALUES (1001, %d, 'by hand') ON CONFLICT DO NOTHING",
		"UPDATE user_roles SET account_ids = '{}' WHERE user_id = %d",
		"UPDATE user_roles SET account_ids = '[2:3]={21,22}' WHERE user_id = %d AND account_ids IS NOT NULL",
		"UPDATE user_roles SET linked_account_ids = '{}' WHERE user_id = %d",
		"UPDATE user_roles SET removed_at = now() WHERE user_id = %d",
		"UPDATE user_roles SET removed_at = NULL WHERE user_id = %d",
		"DELETE FROM user_roles WHERE user_id = %d",
		"INSERT INTO user_roles (user_id, customer_id, role_id) VALUES (%d, 2002, 16) ON CONFLICT DO NOTHING",
		"INSERT INTO user_roles (user_id, customer_id, role_id) VALUES (%d, 3003, 16) ON CONFLICT DO NOTHING",
		"UPDATE user_invitations SET account_ids = NULL WHERE invitation_id = 499 + %d",
		"UPDATE user_invitations SET customer_id = 2002 WHERE invitation_id = 499 + %d",
		"UPDATE user_invitations SET removed_at = now() WHERE invitation_id = 499 + %d",
		"INSERT INTO user_invitations (invitation_id, customer_id) VALUES (600 + %d, 1001) ON CONFLICT DO NOTHING",
		"UPDATE accounts SET status = 'Paused' WHERE account_id = 9 + %d",
		"UPDATE accounts SET removed_at = now() WHERE account_id = 9 + %d",
		"INSERT INTO accounts (account_id, customer_id) VALUES (40 + %d, 1001) ON CONFLICT DO NOTHING",
	}
	for iter := range 25 {
		for range 1 + rng.IntN(4) {
			b.exec(t, fmt.Sprintf(writes[rng.IntN(len(writes))], 1+rng.IntN(32)))
		}
		snap := base()
		for range rng.IntN(4) {
			switch i := rng.IntN(len(snap.Users)); rng.IntN(6) {
			case 0:
				snap.Users[i].LastName = "changed"
			case 1:
				snap.Users[i].DetailStatus, snap.Users[i].DetailCode = msads.DetailUnreadable, 105
				snap.Roles = slices.DeleteFunc(snap.Roles, func(r msads.Role) bool { return r.UserID == snap.Users[i].ID })
			case 2:
				id := snap.Users[i].ID
				snap.Users = slicesDelete(snap.Users, i)
				snap.Roles = slices.DeleteFunc(snap.Roles, func(r msads.Role) bool { return r.UserID == id })
			case 3:
				for j := range snap.Roles {
					if snap.Roles[j].UserID == snap.Users[i].ID {
						snap.Roles[j].AccountIDs = []int64{int64(rng.IntN(3))}
					}
				}
			case 4:
				snap.Invitations = slicesDelete(snap.Invitations, rng.IntN(len(snap.Invitations)))
			case 5:
				snap.Accounts[rng.IntN(len(snap.Accounts))].Name = "renamed"
			}
		}
		b.store.testSendAll = true
		all, err := b.store.DiffSnapshot(t.Context(), b.runID, snap, SyncInfo{})
		b.store.testSendAll = false
		if err != nil {
			t.Fatal(err)
		}
		some, err := b.store.DiffSnapshot(t.Context(), b.runID, snap, SyncInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if some != all {
			t.Fatalf("iteration %d (SYNCER_SEED=%d): read-back changes %v, whole snapshot sent %v", iter, seed, some, all)
		}
		if ch := b.write(t, snap); ch != all {
			t.Fatalf("iteration %d (SYNCER_SEED=%d): write changes %v, diff said %v", iter, seed, ch, all)
		}
		b.store.testSendAll = true
		again, err := b.store.DiffSnapshot(t.Context(), b.runID, snap, SyncInfo{})
		b.store.testSendAll = false
		if err != nil {
			t.Fatal(err)
		}
		if again.Total() != 0 {
			t.Fatalf("iteration %d (SYNCER_SEED=%d): after the write, the whole snapshot still changes %v", iter, seed, again)
		}
	}
}

// Writes on the same connection leave nothing to each other: the rows one
// write staged and the changes it recorded for its history are parameters
// of its statements, never read by the next write.
func TestNothingCarriedOverBetweenWrites(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	cfg := b.pool.Config()
	cfg.MaxConns = 1 // every write on the same connection
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := NewStore(pool, Options{Schema: b.schema})
	other := func(id int64) *msads.Snapshot {
		snap := baseSnapshot()
		snap.CustomerID, snap.CustomerName = id, "Other"
		for i := range snap.Users {
			snap.Users[i].CustomerID, snap.Users[i].ID = id, id*10+snap.Users[i].ID
		}
		snap.Roles = nil
		for _, u := range snap.Users {
			snap.Roles = append(snap.Roles, msads.Role{UserID: u.ID, CustomerID: id, RoleID: msads.RoleViewer, AccountIDs: []int64{1}})
		}
		for i := range snap.Invitations {
			snap.Invitations[i].CustomerID, snap.Invitations[i].ID = id, id*10+snap.Invitations[i].ID
		}
		for i := range snap.Accounts {
			snap.Accounts[i].CustomerID, snap.Accounts[i].ID = id, id*10+snap.Accounts[i].ID
		}
		return snap
	}
	write := func(snap *msads.Snapshot) Changes {
		t.Helper()
		ch, err := s.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	write(baseSnapshot())
	write(other(7))
	// A change of each: customer 1001's staged rows are committed, then
	// customer 7's write stages its own on the same connection.
	a := baseSnapshot()
	a.Users[0].LastName, a.Invitations[0].Email, a.Accounts[0].Name = "a", "a@example.com", "a"
	a.Roles[1].AccountIDs = []int64{11}
	want := Changes{Users: Counts{Changed: 1}, Roles: Counts{Changed: 1}, Invitations: Counts{Changed: 1}, Accounts: Counts{Changed: 1}}
	if ch := write(a); ch != want {
		t.Errorf("customer 1001 changes = %v, want %v", ch, want)
	}
	o := other(7)
	o.Users[1].LastName, o.Roles[1].AccountIDs = "o", []int64{2}
	if ch := write(o); ch != (Changes{Users: Counts{Changed: 1}, Roles: Counts{Changed: 1}}) {
		t.Errorf("customer 7 changes = %v, want users ~1, roles ~1 (nothing of customer 1001's staged rows)", ch)
	}
	equal(t, "role history", b.strings(t, `SELECT user_id, change, count(*) FROM user_roles_history GROUP BY 1, 2 ORDER BY 1, 2`),
		[]string{"1|added|1", "2|added|1", "2|changed|1", "3|added|2", "4|added|1", "71|added|1", "72|added|1", "72|changed|1", "73|added|1", "74|added|1"})
	equal(t, "customer 7's rows", b.strings(t, `SELECT count(*) FROM users WHERE customer_id = 7 AND removed_at IS NULL
		UNION ALL SELECT count(*) FROM user_invitations WHERE customer_id = 7 AND removed_at IS NULL
		UNION ALL SELECT count(*) FROM users WHERE customer_id = 1001 AND removed_at IS NULL`), []string{"4", "2", "4"})
}

// Empty arrays (a role or invitation scoped to no account) compare equal
// to what is stored: a no-change re-run sends nothing.
func TestReadBackEmptyArraysNotResent(t *testing.T) {
	t.Parallel()
	s, tr, _, _ := tracedStore(t)
	snap := baseSnapshot()
	snap.Roles = append(snap.Roles, msads.Role{UserID: 1, CustomerID: cust, RoleID: msads.RoleViewer, AccountIDs: []int64{}, LinkedAccountIDs: []int64{}})
	snap.Invitations[0].AccountIDs = []int64{}
	for range 2 {
		tr.reset(nil, "")
		if _, err := s.WriteSnapshot(t.Context(), 0, snap, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, copied, staged := tr.roundTrips(); len(copied) != 0 || len(staged) != 0 {
		t.Errorf("no-change re-run COPYed %v and staged %v, want nothing", copied, staged)
	}
	// An empty array where one with elements is stored is sent.
	snap.Roles[1].AccountIDs = []int64{}
	tr.reset(nil, "")
	ch, err := s.WriteSnapshot(t.Context(), 0, snap, SyncInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, staged := tr.roundTrips(); ch.Roles.Changed != 1 || !maps.Equal(staged, map[string]int64{"user_roles": 1}) {
		t.Errorf("changes %v, staged %v; want the one role changed", ch, staged)
	}
}

// The comparison does not depend on the order the stored rows come in (the
// users' read-back has no ORDER BY): the same stored users, read back in
// key order and backwards, give the same rows to send and the same
// dropped users.
func TestReadBackInAnyOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	b.write(t, baseSnapshot())
	snap := baseSnapshot()
	snap.Users[1].Email = "changed@example.com" // user 2: to send
	snap.Users = append(snap.Users[:2], snap.Users[3:]...)
	snap.Users = append(snap.Users, msads.User{ID: 7, CustomerID: cust, UserName: "new"}) // new: to send
	snap.Roles = withoutRolesOf(snap.Roles, 3)
	st, err := stage(snap)
	if err != nil {
		t.Fatal(err)
	}
	diff := func(order string) string {
		var out string
		err := b.store.inTx(t.Context(), "", false, func(tx pgx.Tx) error {
			rows, err := tx.Query(t.Context(), "SELECT * FROM ("+storedSQL[usersTable]+") s ORDER BY user_id "+order,
				pgx.NamedArgs{"customer_id": int64(cust)})
			if err != nil {
				return err
			}
			var seen, dropped []int64
			send, err := diffRows(tx.Conn().TypeMap(), usersTable, rows, st.users, nil, func(key [3]int64, cur, staged bool) {
				seen = append(seen, key[1])
				if cur && !staged {
					dropped = append(dropped, key[1])
				}
			})
			if err != nil {
				return err
			}
			var sent []int64
			for _, r := range send {
				v, _ := keyInt(r[1])
				sent = append(sent, v)
			}
			out = fmt.Sprintf("seen %v, send %v, dropped %v", seen, sent, dropped)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	asc, desc := diff("ASC"), diff("DESC")
	if want := "seen [1 2 3 4], send [2 7], dropped [3]"; asc != want {
		t.Errorf("in key order: %s, want %s", asc, want)
	}
	if want := "seen [4 3 2 1], send [2 7], dropped [3]"; desc != want {
		t.Errorf("backwards: %s, want %s", desc, want)
	}
}

// The read-back's own comparisons (diffRows's fast paths, findKey) agree
// with what they replace: pgx's encoding of the staged value, and a binary
// search.
func TestReadBackFastPathsAgree(t *testing.T) {
	m := pgtype.NewMap()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []string{"2025-01-02T03:04:05.123456789Z", "1969-12-31T23:59:59.999999999Z", "1900-02-03T04:05:06.000000500+05:30",
		"2000-01-01T00:00:00Z", "1999-12-31T23:59:59.9999995Z", "2262-04-11T23:47:16.854775807Z"} {
		tm := *ptime(s)
		enc, err := m.Encode(pgtype.TimestamptzOID, pgx.BinaryFormatCode, &tm, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := microsSinceY2K(tm); int64(binary.BigEndian.Uint64(enc)) != got {
			t.Errorf("%s: microsSinceY2K %d, pgx sends %d", s, got, int64(binary.BigEndian.Uint64(enc)))
		}
	}
	for _, ids := range [][]int64{{1}, {21, 22}, {-5, 0, 1 << 40}} {
		enc, err := m.Encode(pgtype.Int8ArrayOID, pgx.BinaryFormatCode, ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !sameInt8Array(enc, ids) {
			t.Errorf("%v: pgx's encoding %x not taken as the same", ids, enc)
		}
		// Any other byte: another array (or not a plain one).
		for i := range enc {
			bad := slices.Clone(enc)
			bad[i] ^= 0x10
			if sameInt8Array(bad, ids) {
				t.Errorf("%v: byte %d changed (%x) still taken as the same", ids, i, bad)
			}
		}
		if sameInt8Array(enc, ids[:len(ids)-1]) || sameInt8Array(enc[:len(enc)-1], ids) {
			t.Errorf("%v: a shorter array taken as the same", ids)
		}
	}
	for range 200 {
		n := 1 + rng.IntN(3)
		keys := make([][3]int64, rng.IntN(20))
		for i := range keys {
			for j := range n {
				keys[i][j] = rng.Int64N(4)
			}
		}
		slices.SortFunc(keys, func(a, b [3]int64) int { return keyCmp(a, b, n) })
		keys = slices.CompactFunc(keys, func(a, b [3]int64) bool { return keyCmp(a, b, n) == 0 })
		var key [3]int64
		for j := range n {
			key[j] = rng.Int64N(5)
		}
		hint := rng.IntN(len(keys) + 2)
		wi, wok := slices.BinarySearchFunc(keys, key, func(a, b [3]int64) int { return keyCmp(a, b, n) })
		if i, ok := findKey(keys, key, n, hint); i != wi || ok != wok {
			t.Fatalf("findKey(%v, %v, hint %d) = %d, %v; binary search says %d, %v", keys, key, hint, i, ok, wi, wok)
		}
	}
}
