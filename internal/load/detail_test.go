package load

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/msads-syncer/syncer/internal/msads"
)

// unreadable returns a listed user GetUser could not read, with profile
// fields the writer must ignore.
func unreadable(id int64, name, status string, code int, tracking string) msads.User {
	return msads.User{ID: id, CustomerID: cust, UserName: name, DetailStatus: status, DetailCode: code,
		DetailTrackingID: tracking, DetailError: "GetUser failed", Email: "ignored@example.com", LifecycleStatus: "Ignored"}
}

// withoutRolesOf drops the roles of user id.
func withoutRolesOf(roles []msads.Role, id int64) []msads.Role {
	var out []msads.Role
	for _, r := range roles {
		if r.UserID != id {
			out = append(out, r)
		}
	}
	return out
}

const userRow = `SELECT user_id, coalesce(home_customer_id::text, 'NULL'), coalesce(user_name, 'NULL'), coalesce(email, 'NULL'),
    coalesce(lifecycle_status, 'NULL'), detail_status, coalesce(detail_code::text, 'NULL'), coalesce(detail_tracking_id, 'NULL'),
    coalesce(detail_error, 'NULL'), removed_at IS NULL FROM users WHERE user_id = $1`

func TestUnreadableUser(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	roleVersions := `SELECT user_id, customer_id, role_id, ctid::text || xmin::text, removed_at IS NULL FROM user_roles WHERE user_id = $1 ORDER BY 1, 2, 3`
	rolesOf2 := b.strings(t, roleVersions, 2)

	// User 5 is listed for the first time and cannot be read; user 2, read
	// before, cannot be read now (and the listing renamed them).
	snap := baseSnapshot()
	snap.Users[1] = unreadable(2, "user2-renamed", msads.DetailUnreadable, 105, "trk-2a")
	snap.Users = append(snap.Users, unreadable(5, "user5", msads.DetailUnreadable, 106, "trk-5a"))
	snap.Roles = withoutRolesOf(snap.Roles, 2)
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Added: 1, Changed: 1}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "user 5 from the listing only", b.strings(t, userRow, 5),
		[]string{"5|NULL|user5|NULL|NULL|unreadable|106|trk-5a|GetUser failed|true"})
	equal(t, "user 2 keeps its columns", b.strings(t, userRow, 2),
		[]string{"2|1001|user2-renamed|u2@example.com|Active|unreadable|105|trk-2a|GetUser failed|true"})
	equal(t, "user 2 roles untouched", b.strings(t, roleVersions, 2), rolesOf2)
	equal(t, "user 2 history", b.strings(t, `SELECT change, user_name, email, detail_status, coalesce(detail_code::text, 'NULL'), valid_to IS NULL
        FROM users_history WHERE user_id = 2 ORDER BY valid_from`),
		[]string{"added|user2|u2@example.com|ok|NULL|false", "changed|user2-renamed|u2@example.com|unreadable|105|true"})
	equal(t, "access of user 2", b.strings(t, `SELECT user_id, user_name, account_id, lifecycle_status, detail_status FROM access WHERE user_id IN (1, 2) ORDER BY 1, 3`),
		[]string{"1|user1|NULL|Active|ok", "2|user2-renamed|11|Active|unreadable", "2|user2-renamed|12|Active|unreadable"})
	// The users' rows of access_as_of (the agencies' rows come after
	// access's columns: see sql/006_client_links.sql).
	equal(t, "access_as_of(now()) = access", b.strings(t, `SELECT user_id, user_name, email, customer_id, role_id, role_name, account_id,
		account_name, lifecycle_status, detail_status FROM access_as_of(now()) WHERE grantee_kind = 'user' ORDER BY 1, 4, 5, 7`),
		b.strings(t, `SELECT * FROM access ORDER BY 1, 4, 5, 7`))
	equal(t, "users_unreadable", b.strings(t, `SELECT users_seen, users_unreadable FROM customer_syncs`), []string{"5|2"})

	// The same faults again, even with new TrackingIds: nothing written.
	before := b.versions(t)
	if ch := b.write(t, snap); ch.Total() != 0 {
		t.Errorf("re-run = %v, want none", ch)
	}
	snap.Users[1].DetailTrackingID, snap.Users[4].DetailTrackingID = "trk-2b", "trk-5b"
	snap.Users[1].DetailError = "GetUser failed again"
	if ch := b.write(t, snap); ch.Total() != 0 {
		t.Errorf("re-run with new tracking ids = %v, want none", ch)
	}
	b.sameVersions(t, before, "rewritten by a re-run of the same unreadable snapshot")
	equal(t, "first failure's tracking id kept", b.strings(t, `SELECT detail_tracking_id FROM users WHERE user_id = 2`), []string{"trk-2a"})

	// Another fault code is a change; so is unreadable -> not_found.
	snap.Users[1].DetailCode = 106
	snap.Users[4] = unreadable(5, "user5", msads.DetailNotFound, 1001, "trk-5c")
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Changed: 2}}); ch != want {
		t.Errorf("new fault codes: changes = %v, want %v", ch, want)
	}
	equal(t, "detail after new faults", b.strings(t, `SELECT user_id, detail_status, detail_code, detail_tracking_id FROM users WHERE user_id IN (2, 5) ORDER BY 1`),
		[]string{"2|unreadable|106|trk-2b", "5|not_found|1001|trk-5c"})

	// A role change elsewhere makes the writer decide roles: user 2's stay.
	snap.Roles[0].RoleID = msads.RoleViewer
	if ch, want := b.write(t, snap), (Changes{Roles: Counts{Added: 1, Removed: 1}}); ch != want {
		t.Errorf("role change of user 1: changes = %v, want %v", ch, want)
	}
	equal(t, "user 2 roles untouched by the role step", b.strings(t, roleVersions, 2), rolesOf2)

	// Read fine again: back to ok, detail cleared, roles unchanged.
	snap = baseSnapshot()
	snap.Roles[0].RoleID = msads.RoleViewer
	snap.Users = append(snap.Users, msads.User{ID: 5, CustomerID: cust, HomeCustomerID: cust, UserName: "user5", Email: "u5@example.com", LifecycleStatus: "Active"})
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Changed: 2}}); ch != want {
		t.Errorf("readable again: changes = %v, want %v", ch, want)
	}
	equal(t, "user 2 ok", b.strings(t, userRow, 2), []string{"2|1001|user2|u2@example.com|Active|ok|NULL|NULL|NULL|true"})
	equal(t, "user 5 ok", b.strings(t, userRow, 5), []string{"5|1001|user5|u5@example.com|Active|ok|NULL|NULL|NULL|true"})
	equal(t, "user 2 roles still untouched", b.strings(t, roleVersions, 2), rolesOf2)
	equal(t, "user 2 history", b.strings(t, `SELECT change, detail_status FROM users_history WHERE user_id = 2 ORDER BY valid_from`),
		[]string{"added|ok", "changed|unreadable", "changed|unreadable", "changed|ok"})
	oneOpenVersion(t, b)
}

// An unreadable user whose row was removed reappears with its old values.
func TestUnreadableUserReappears(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	snap := baseSnapshot()
	snap.Users, snap.Roles = snap.Users[:3], withoutRolesOf(snap.Roles, 4)
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Removed: 1}, Roles: Counts{Removed: 1}}); ch != want {
		t.Errorf("user 4 gone: changes = %v, want %v (its role in 1001 with it)", ch, want)
	}
	snap.Users = append(snap.Users, unreadable(4, "", msads.DetailUnreadable, 0, ""))
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Reappeared: 1}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "user 4", b.strings(t, userRow, 4), []string{"4|1001|user4|u4@example.com|Active|unreadable|NULL|NULL|GetUser failed|true"})
	equal(t, "user 4 roles stay removed", b.strings(t, `SELECT removed_at IS NULL FROM user_roles WHERE user_id = 4`), []string{"false"})
}

func TestNotFoundUserThenAbsent(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	snap := baseSnapshot()
	snap.Users[3] = unreadable(4, "user4", msads.DetailNotFound, 1001, "trk")
	snap.Roles = withoutRolesOf(snap.Roles, 4)
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Changed: 1}}); ch != want {
		t.Errorf("not_found: changes = %v, want %v", ch, want)
	}
	if n := b.sweep(t, cust); n != 0 {
		t.Errorf("sweep removed %d roles of a listed user", n)
	}
	equal(t, "role of user 4 kept", b.strings(t, `SELECT role_id, removed_at IS NULL FROM user_roles WHERE user_id = 4`), []string{"999|true"})

	snap.Users = snap.Users[:3]
	if ch, want := b.write(t, snap), (Changes{Users: Counts{Removed: 1}, Roles: Counts{Removed: 1}}); ch != want {
		t.Errorf("absent: changes = %v, want %v", ch, want)
	}
	equal(t, "user 4 removed", b.strings(t, `SELECT detail_status, removed_at IS NOT NULL FROM users WHERE user_id = 4`), []string{"not_found|true"})
	equal(t, "user 4 history", b.strings(t, `SELECT change, detail_status FROM users_history WHERE user_id = 4 ORDER BY valid_from`),
		[]string{"added|ok", "changed|not_found", "removed|not_found"})
	equal(t, "role of user 4 removed", b.strings(t, `SELECT removed_at IS NOT NULL FROM user_roles WHERE user_id = 4`), []string{"true"})
	oneOpenVersion(t, b)
}

func TestRemovalGuardCountsUnreadableAsListed(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	// Users 2 and 3 unreadable, user 4 gone: 1 of 4 removed, within the
	// guard (3 of 4 if the unreadable ones counted as absent).
	snap := baseSnapshot()
	snap.Users = []msads.User{snap.Users[0],
		unreadable(2, "user2", msads.DetailUnreadable, 106, ""), unreadable(3, "user3", msads.DetailNotFound, 1001, "")}
	snap.Roles = snap.Roles[:1]
	ch, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{})
	if err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	if want := (Changes{Users: Counts{Changed: 2, Removed: 1}, Roles: Counts{Removed: 1}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	if n := b.sweep(t, cust, 2002); n != 0 {
		t.Errorf("sweep removed %d roles, want 0", n)
	}
	equal(t, "current users", b.strings(t, `SELECT user_id, detail_status FROM users WHERE removed_at IS NULL ORDER BY 1`),
		[]string{"1|ok", "2|unreadable", "3|not_found"})
	equal(t, "roles of 2 and 3 kept", b.strings(t, `SELECT count(*) FROM user_roles WHERE user_id IN (2, 3) AND removed_at IS NULL`), []string{"3"})

	// Every listed user unreadable is not an empty listing.
	snap.Users = []msads.User{unreadable(1, "user1", msads.DetailUnreadable, 106, ""),
		unreadable(2, "user2", msads.DetailUnreadable, 106, ""), unreadable(3, "user3", msads.DetailNotFound, 1001, "")}
	snap.Roles = nil
	if ch, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); err != nil || ch != (Changes{Users: Counts{Changed: 1}}) {
		t.Errorf("all unreadable: %v, %v; want one user changed", ch, err)
	}
}

func TestUnreadableInvalidSnapshots(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	snap := baseSnapshot()
	snap.Users[1] = unreadable(2, "user2", msads.DetailUnreadable, 106, "")
	if _, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); !errors.Is(err, ErrInvalidSnapshot) || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("role of an unreadable user: %v, want ErrInvalidSnapshot", err)
	}
	snap = baseSnapshot()
	snap.Users[0].DetailStatus = "weird"
	if _, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); !errors.Is(err, ErrInvalidSnapshot) {
		t.Errorf("unknown detail status: %v, want ErrInvalidSnapshot", err)
	}
}

// accountIDsSnapshot: roles and invitations with NULL, '{}' and listed
// account ids.
func accountIDsSnapshot() *msads.Snapshot {
	s := baseSnapshot()
	s.Roles = []msads.Role{
		{UserID: 1, CustomerID: cust, RoleID: msads.RoleSuperAdmin},                                    // NULL
		{UserID: 2, CustomerID: cust, RoleID: msads.RoleViewer, AccountIDs: []int64{}},                 // '{}'
		{UserID: 3, CustomerID: cust, RoleID: msads.RoleStandardUser, AccountIDs: []int64{11}},         // list
		{UserID: 4, CustomerID: cust, RoleID: 999, AccountIDs: []int64{}, LinkedAccountIDs: []int64{}}, // twice '{}'
		{UserID: 4, CustomerID: cust, RoleID: 999, AccountIDs: []int64{}},
	}
	s.Invitations = []msads.Invitation{
		{ID: 501, CustomerID: cust, Email: "a@example.com", RoleID: msads.RoleViewer},
		{ID: 502, CustomerID: cust, Email: "b@example.com", RoleID: msads.RoleViewer, AccountIDs: []int64{}},
		{ID: 503, CustomerID: cust, Email: "c@example.com", RoleID: msads.RoleViewer, AccountIDs: []int64{12}},
	}
	return s
}

func TestAccountIDsNullEmptyAndList(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	snap := accountIDsSnapshot()
	b.write(t, snap)
	const roles = `SELECT user_id, coalesce(account_ids::text, 'NULL'), coalesce(linked_account_ids::text, 'NULL') FROM %s ORDER BY user_id`
	equal(t, "user_roles", b.strings(t, strings.Replace(roles, "%s", "user_roles", 1)), []string{"1|NULL|NULL", "2|{}|NULL", "3|{11}|NULL", "4|{}|{}"})
	equal(t, "user_roles_history", b.strings(t, strings.Replace(roles, "%s", "user_roles_history", 1)), []string{"1|NULL|NULL", "2|{}|NULL", "3|{11}|NULL", "4|{}|{}"})
	const invs = `SELECT invitation_id, coalesce(account_ids::text, 'NULL') FROM %s ORDER BY 1`
	want := []string{"501|NULL", "502|{}", "503|{12}"}
	equal(t, "user_invitations", b.strings(t, strings.Replace(invs, "%s", "user_invitations", 1)), want)
	equal(t, "user_invitations_history", b.strings(t, strings.Replace(invs, "%s", "user_invitations_history", 1)), want)
	equal(t, "pending_invitations", b.strings(t, strings.Replace(invs, "%s", "pending_invitations", 1)), want)
	// NULL: one row for every account; '{}': no row; a list: a row each.
	wantAccess := []string{"1|41|NULL", "3|203|11"}
	equal(t, "access", b.strings(t, `SELECT user_id, role_id, account_id FROM access ORDER BY 1`), wantAccess)
	equal(t, "access_as_of", b.strings(t, `SELECT user_id, role_id, account_id FROM access_as_of(now()) ORDER BY 1`), wantAccess)

	before := b.versions(t)
	if ch := b.write(t, accountIDsSnapshot()); ch.Total() != 0 {
		t.Errorf("re-run = %v, want none", ch)
	}
	b.sameVersions(t, before, "rewritten by a re-run with '{}' account ids")

	// NULL -> '{}' and '{}' -> NULL are changes.
	snap = accountIDsSnapshot()
	snap.Roles[0].AccountIDs, snap.Roles[1].AccountIDs = []int64{}, nil
	snap.Invitations[0].AccountIDs, snap.Invitations[1].AccountIDs = []int64{}, nil
	if ch, want := b.write(t, snap), (Changes{Roles: Counts{Changed: 2}, Invitations: Counts{Changed: 2}}); ch != want {
		t.Errorf("NULL <-> '{}': changes = %v, want %v", ch, want)
	}
	equal(t, "role history of user 1", b.strings(t, `SELECT change, coalesce(account_ids::text, 'NULL') FROM user_roles_history WHERE user_id = 1 ORDER BY valid_from`),
		[]string{"added|NULL", "changed|{}"})
	equal(t, "invitation history of 502", b.strings(t, `SELECT change, coalesce(account_ids::text, 'NULL') FROM user_invitations_history WHERE invitation_id = 502 ORDER BY valid_from`),
		[]string{"added|{}", "changed|NULL"})
	equal(t, "access after", b.strings(t, `SELECT user_id, role_id, account_id FROM access ORDER BY 1`), []string{"2|100|NULL", "3|203|11"})
	oneOpenVersion(t, b)
}

// The union of a role listed twice: nil wins, [] ∪ list = list, [] ∪ [] = [].
func TestStageMergesDuplicateRoleScopes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		a, b     []int64
		want     []int64
		wantNull bool
	}{
		{"nil wins over []", nil, []int64{}, nil, true},
		{"[] then nil", []int64{}, nil, nil, true},
		{"nil wins over a list", []int64{3}, nil, nil, true},
		{"[] and a list", []int64{}, []int64{5, 3}, []int64{3, 5}, false},
		{"[] and []", []int64{}, []int64{}, []int64{}, false},
		{"two lists", []int64{5, 1}, []int64{3, 5}, []int64{1, 3, 5}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &msads.Snapshot{CustomerID: cust, Users: []msads.User{{ID: 1}}, Roles: []msads.Role{
				{UserID: 1, CustomerID: cust, RoleID: 41, AccountIDs: tc.a, LinkedAccountIDs: tc.a},
				{UserID: 1, CustomerID: cust, RoleID: 41, AccountIDs: tc.b, LinkedAccountIDs: tc.b},
			}}
			st, err := stage(snap)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.roles) != 1 {
				t.Fatalf("staged roles = %v, want one", st.roles)
			}
			got := st.roles[0][3].([]int64)
			if (got == nil) != tc.wantNull || !slices.Equal(got, tc.want) {
				t.Errorf("account ids = %#v, want %#v", got, tc.want)
			}
			linked := st.roles[0][4].([]int64)
			if (linked == nil) != (tc.a == nil && tc.b == nil) {
				t.Errorf("linked account ids = %#v (nil only when both are nil)", linked)
			}
		})
	}
}

func TestUsersUnreadableAndRunPrincipal(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	snap := baseSnapshot()
	snap.Users[3] = unreadable(4, "user4", msads.DetailUnreadable, 106, "")
	snap.Roles = withoutRolesOf(snap.Roles, 4)
	// Counted from the snapshot when SyncInfo leaves it 0.
	if _, err := b.store.WriteSnapshot(t.Context(), b.runID, snap, SyncInfo{}); err != nil {
		t.Fatal(err)
	}
	equal(t, "succeeded", b.strings(t, `SELECT status, users_seen, users_unreadable FROM customer_syncs`), []string{"succeeded|4|1"})
	if err := b.store.RecordCustomerFailure(t.Context(), b.runID, 3003, SyncInfo{UsersUnreadable: 7}, errors.New("too many unreadable users")); err != nil {
		t.Fatal(err)
	}
	if err := b.store.RecordCustomerFailure(t.Context(), b.runID, 3004, SyncInfo{}, errors.New("denied")); err != nil {
		t.Fatal(err)
	}
	equal(t, "customer_syncs", b.strings(t, `SELECT customer_id, status, users_unreadable FROM customer_syncs ORDER BY 1`),
		[]string{"1001|succeeded|1", "3003|failed|7", "3004|failed|0"})

	equal(t, "no principal yet", b.strings(t, `SELECT principal_user_id IS NULL, principal_user_name IS NULL, visible_customer_ids IS NULL FROM sync_runs`), []string{"true|true|true"})
	if err := b.store.SetRunScope(t.Context(), b.runID, 424242, "svc@example.com", []int64{3004, 1001, 3003}); err != nil {
		t.Fatal(err)
	}
	equal(t, "principal", b.strings(t, `SELECT principal_user_id, principal_user_name, visible_customer_ids::text FROM sync_runs WHERE run_id = $1`, b.runID),
		[]string{"424242|svc@example.com|{1001,3003,3004}"})
	if err := b.store.SetRunScope(t.Context(), b.runID, 424242, "svc@example.com", nil); err != nil {
		t.Fatal(err)
	}
	equal(t, "visible not known", b.strings(t, `SELECT visible_customer_ids IS NULL FROM sync_runs WHERE run_id = $1`, b.runID), []string{"true"})
	if err := b.store.SetRunScope(t.Context(), 99999, 1, "x", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetRunScope of an unknown run: %v, want ErrNotFound", err)
	}
}

// stage reads a snapshot in key order in place, without copying it, so it
// must leave it as it was: strings to clean and duplicate roles to merge
// are changed in copies. The rows it stages do not depend on the order the
// snapshot lists things in.
func TestStageLeavesTheSnapshotAsItWas(t *testing.T) {
	t.Parallel()
	sorted := &msads.Snapshot{CustomerID: cust,
		Users: []msads.User{{ID: 1, UserName: "a\x00b"}, {ID: 2, Email: "bad \xff utf-8"}, {ID: 2, Email: "second"}, {ID: 3, FirstName: "ok"}},
		Roles: []msads.Role{
			{UserID: 1, CustomerID: cust, RoleID: 41, AccountIDs: []int64{9, 7}},
			{UserID: 1, CustomerID: cust, RoleID: 41, AccountIDs: []int64{8}},
			{UserID: 2, CustomerID: cust, RoleID: 41, AccountIDs: []int64{1, 2}, CustomerLinkPermission: "x\x00"},
			{UserID: 3, CustomerID: cust, RoleID: 16},
		}}
	before := deepCopy(t, sorted)
	st, err := stage(sorted)
	if err != nil {
		t.Fatal(err)
	}
	if after := deepCopy(t, sorted); !reflect.DeepEqual(before, after) {
		t.Errorf("stage changed the snapshot:\n%+v\nwant\n%+v", after, before)
	}
	if got := fmt.Sprint(pointee(st.users[0][3]), " ", pointee(st.users[1][4]), " ", pointee(st.roles[1][5])); got != "a\uFFFDb second x\uFFFD" {
		t.Errorf("cleaned values = %q", got)
	}
	if got := st.roles[0][3].([]int64); !slices.Equal(got, []int64{7, 8, 9}) {
		t.Errorf("merged account ids = %v", got)
	}
	if !slices.Equal(st.replaced.users, []int64{1, 2}) {
		t.Errorf("replaced = %v, want [1 2]", st.replaced.users)
	}

	// The same snapshot listed backwards (the duplicates in their order).
	shuffled := deepCopy(t, sorted)
	shuffled.Users = []msads.User{shuffled.Users[3], shuffled.Users[1], shuffled.Users[2], shuffled.Users[0]}
	shuffled.Roles = []msads.Role{shuffled.Roles[3], shuffled.Roles[2], shuffled.Roles[0], shuffled.Roles[1]}
	st2, err := stage(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := fmt.Sprint(pointeeRows(st.users), pointeeRows(st.roles)), fmt.Sprint(pointeeRows(st2.users), pointeeRows(st2.roles)); a != b {
		t.Errorf("staged rows depend on the listing order:\n%s\n%s", a, b)
	}
}

// deepCopy copies the users and roles of s (JSON would change the
// invalid UTF-8 under test).
func deepCopy(t *testing.T, s *msads.Snapshot) *msads.Snapshot {
	t.Helper()
	out := *s
	out.Users = slices.Clone(s.Users)
	out.Roles = slices.Clone(s.Roles)
	for i := range out.Roles {
		out.Roles[i].AccountIDs = slices.Clone(out.Roles[i].AccountIDs)
		out.Roles[i].LinkedAccountIDs = slices.Clone(out.Roles[i].LinkedAccountIDs)
	}
	return &out
}

// pointee is the value a staged value stands for (stage puts pointers).
func pointee(v any) any {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		return rv.Elem().Interface()
	}
	return v
}

func pointeeRows(rows [][]any) [][]any {
	out := make([][]any, len(rows))
	for i, r := range rows {
		for _, v := range r {
			out[i] = append(out[i], pointee(v))
		}
	}
	return out
}
