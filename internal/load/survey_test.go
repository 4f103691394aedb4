package load

import (
	"testing"

	"github.com/msads-syncer/syncer/internal/msads"
)

// oneOpenVersion checks that every entity has at most one open history row
// and that intervals are ordered.
func oneOpenVersion(t *testing.T, b *bundle) {
	t.Helper()
	for _, q := range []string{
		`SELECT count(*) FROM (SELECT 1 FROM users_history WHERE valid_to IS NULL GROUP BY customer_id, user_id HAVING count(*) > 1) x`,
		`SELECT count(*) FROM (SELECT 1 FROM user_roles_history WHERE valid_to IS NULL GROUP BY user_id, customer_id, role_id HAVING count(*) > 1) x`,
		`SELECT count(*) FROM (SELECT 1 FROM user_invitations_history WHERE valid_to IS NULL GROUP BY invitation_id HAVING count(*) > 1) x`,
		`SELECT count(*) FROM users_history WHERE valid_to IS NOT NULL AND valid_to <= valid_from`,
		`SELECT count(*) FROM user_roles_history WHERE valid_to IS NOT NULL AND valid_to <= valid_from`,
		`SELECT count(*) FROM user_invitations_history WHERE valid_to IS NOT NULL AND valid_to <= valid_from`,
	} {
		equal(t, q, b.strings(t, q), []string{"0"})
	}
	historyChains(t, b)
}

// A customer's first load whose user has a removed role row (written through
// another customer): the role reappears instead of being added.
func TestFirstLoadRoleKeyRemovedElsewhere(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	a := &msads.Snapshot{CustomerID: 1, Users: []msads.User{{ID: 7, UserName: "seven"}, {ID: 8, UserName: "eight"}},
		Roles: []msads.Role{{UserID: 7, CustomerID: 1, RoleID: msads.RoleViewer}, {UserID: 8, CustomerID: 1, RoleID: msads.RoleViewer}}}
	b.write(t, a)
	a.Users, a.Roles = a.Users[1:], a.Roles[1:] // user 7 gone, and with it its role
	if ch, want := b.write(t, a), (Changes{Users: Counts{Removed: 1}, Roles: Counts{Removed: 1}}); ch != want {
		t.Fatalf("removal = %v, want %v", ch, want)
	}
	// Customer 2's first load lists user 7 with the same role and a new one.
	c := &msads.Snapshot{CustomerID: 2, Users: []msads.User{{ID: 7, UserName: "seven"}},
		Roles: []msads.Role{{UserID: 7, CustomerID: 1, RoleID: msads.RoleViewer}, {UserID: 7, CustomerID: 2, RoleID: msads.RoleViewer}}}
	if ch, want := b.write(t, c), (Changes{Users: Counts{Added: 1}, Roles: Counts{Added: 1, Reappeared: 1}}); ch != want {
		t.Errorf("first load of customer 2 = %v, want %v", ch, want)
	}
	equal(t, "role history", b.strings(t, `SELECT customer_id, change, valid_to IS NULL FROM user_roles_history WHERE user_id = 7 ORDER BY customer_id, valid_from`),
		[]string{"1|added|false", "1|removed|false", "1|reappeared|true", "2|added|true"})
	oneOpenVersion(t, b)
	if ch := b.write(t, c); ch.Total() != 0 {
		t.Errorf("re-run = %v, want none", ch)
	}
}

// A customer's first load listing an invitation another customer's row holds:
// the invitation moves (changed), it is not inserted twice.
func TestFirstLoadInvitationHeldByOtherCustomer(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, &msads.Snapshot{CustomerID: 1, Invitations: []msads.Invitation{{ID: 900, Email: "x@example.com"}}})
	ch := b.write(t, &msads.Snapshot{CustomerID: 2, Invitations: []msads.Invitation{
		{ID: 900, Email: "x@example.com"}, {ID: 901, Email: "y@example.com"}}})
	if want := (Changes{Invitations: Counts{Added: 1, Changed: 1}}); ch != want {
		t.Errorf("first load of customer 2 = %v, want %v", ch, want)
	}
	equal(t, "invitations", b.strings(t, `SELECT invitation_id, customer_id FROM user_invitations ORDER BY 1`), []string{"900|2", "901|2"})
	equal(t, "history of 900", b.strings(t, `SELECT customer_id, change, valid_to IS NULL FROM user_invitations_history WHERE invitation_id = 900 ORDER BY valid_from`),
		[]string{"1|added|false", "2|changed|true"})
	oneOpenVersion(t, b)
}

// Users rows deleted by hand while their history stays: the next load adds
// them again through the general upsert, closing the open history rows.
func TestUsersHistoryWithoutRows(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	if _, err := b.pool.Exec(t.Context(), `DELETE FROM `+b.q("users")); err != nil {
		t.Fatal(err)
	}
	if ch, want := b.write(t, baseSnapshot()), (Changes{Users: Counts{Added: 4}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "user 1 history", b.strings(t, `SELECT change, valid_to IS NULL FROM users_history WHERE user_id = 1 ORDER BY valid_from`),
		[]string{"added|false", "added|true"})
	oneOpenVersion(t, b)
}

// Each kind of change alone is found by the survey and written; nothing else
// is rewritten.
func TestSurveyFindsEachChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(*msads.Snapshot)
		want   Changes
		swept  int // roles SweepRoles then removes
	}{
		{"user changed", func(s *msads.Snapshot) { s.Users[2].LastName = "New" }, Changes{Users: Counts{Changed: 1}}, 0},
		{"user field cleared", func(s *msads.Snapshot) { s.Users[0].Email = "" }, Changes{Users: Counts{Changed: 1}}, 0},
		{"role scope", func(s *msads.Snapshot) { s.Roles[1].AccountIDs = []int64{11} }, Changes{Roles: Counts{Changed: 1}}, 0},
		{"role scope widened to all", func(s *msads.Snapshot) { s.Roles[1].AccountIDs = nil }, Changes{Roles: Counts{Changed: 1}}, 0},
		{"role added", func(s *msads.Snapshot) {
			s.Roles = append(s.Roles, msads.Role{UserID: 4, CustomerID: 2002, RoleID: msads.RoleViewer})
		}, Changes{Roles: Counts{Added: 1}}, 0},
		{"role removed", func(s *msads.Snapshot) { s.Roles = s.Roles[:3] }, Changes{Roles: Counts{Removed: 2}}, 0},
		{"invitation changed", func(s *msads.Snapshot) { s.Invitations[0].RoleID = msads.RoleViewer }, Changes{Invitations: Counts{Changed: 1}}, 0},
		{"invitation removed", func(s *msads.Snapshot) { s.Invitations = s.Invitations[1:] }, Changes{Invitations: Counts{Removed: 1}}, 0},
		{"invitation added", func(s *msads.Snapshot) {
			s.Invitations = append(s.Invitations, msads.Invitation{ID: 503, Email: "z@example.com"})
		}, Changes{Invitations: Counts{Added: 1}}, 0},
		{"account renamed", func(s *msads.Snapshot) { s.Accounts[0].Name = "Renamed" }, Changes{Accounts: Counts{Changed: 1}}, 0},
		{"account removed", func(s *msads.Snapshot) { s.Accounts = s.Accounts[1:] }, Changes{Accounts: Counts{Removed: 1}}, 0},
		{"user unreadable", func(s *msads.Snapshot) {
			s.Users[2] = msads.User{ID: 3, UserName: "user3", DetailStatus: msads.DetailUnreadable, DetailCode: 106}
			s.Roles = slicesDelete(slicesDelete(s.Roles, 3), 2)
		}, Changes{Users: Counts{Changed: 1}}, 0},
		{"user not found, renamed", func(s *msads.Snapshot) {
			s.Users[0] = msads.User{ID: 1, UserName: "renamed", DetailStatus: msads.DetailNotFound, DetailCode: 1001}
			s.Roles = s.Roles[1:]
		}, Changes{Users: Counts{Changed: 1}}, 0},
		{"role scope emptied", func(s *msads.Snapshot) { s.Roles[1].AccountIDs = []int64{} }, Changes{Roles: Counts{Changed: 1}}, 0},
		{"role scope all to empty", func(s *msads.Snapshot) { s.Roles[0].AccountIDs = []int64{} }, Changes{Roles: Counts{Changed: 1}}, 0},
		{"invitation scope all to empty", func(s *msads.Snapshot) { s.Invitations[0].AccountIDs = []int64{} }, Changes{Invitations: Counts{Changed: 1}}, 0},
		{"user removed", func(s *msads.Snapshot) {
			s.Users = s.Users[:3]
			s.Roles = s.Roles[:4]
		}, Changes{Users: Counts{Removed: 1}, Roles: Counts{Removed: 1}}, 0}, // its role in 1001 goes with the listing
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Options{})
			b.write(t, baseSnapshot())
			snap := baseSnapshot()
			tc.change(snap)
			if ch := b.write(t, snap); ch != tc.want {
				t.Errorf("changes = %v, want %v", ch, tc.want)
			}
			if n := b.sweep(t, cust, 2002); n != tc.swept {
				t.Errorf("sweep removed %d roles, want %d", n, tc.swept)
			}
			oneOpenVersion(t, b)
			before := b.versions(t)
			if ch := b.write(t, snap); ch.Total() != 0 {
				t.Errorf("re-run = %v, want none", ch)
			}
			b.sameVersions(t, before, "rewritten by a no-change re-run")
		})
	}
}

// Role and invitation rows deleted by hand while their history stays: the
// next load adds them again and closes the open history rows.
func TestRolesAndInvitationsHistoryWithoutRows(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, baseSnapshot())
	if _, err := b.pool.Exec(t.Context(), `DELETE FROM `+b.q("user_roles")+`; DELETE FROM `+b.q("user_invitations")); err != nil {
		t.Fatal(err)
	}
	if ch, want := b.write(t, baseSnapshot()), (Changes{Roles: Counts{Added: 5}, Invitations: Counts{Added: 2}}); ch != want {
		t.Errorf("changes = %v, want %v", ch, want)
	}
	equal(t, "user 1 role history", b.strings(t, `SELECT change, valid_to IS NULL FROM user_roles_history WHERE user_id = 1 ORDER BY valid_from`),
		[]string{"added|false", "added|true"})
	equal(t, "invitation 501 history", b.strings(t, `SELECT change, valid_to IS NULL FROM user_invitations_history WHERE invitation_id = 501 ORDER BY valid_from`),
		[]string{"added|false", "added|true"})
	oneOpenVersion(t, b)
}
