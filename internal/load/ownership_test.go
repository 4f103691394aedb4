package load

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/msads-syncer/syncer/internal/msads"
)

// historyConsistent checks user_roles_history per key: intervals in order,
// each closed one ending where the next begins (no overlap, no gap), only
// the last one open; and each user_roles row agrees with its open history
// row (current unless the last change is 'removed').
func historyConsistent(t *testing.T, b *bundle) {
	t.Helper()
	equal(t, "history intervals neither overlap nor leave gaps", b.strings(t, `
SELECT user_id, customer_id, role_id, valid_from, valid_to, next FROM (
    SELECT *, lead(valid_from) OVER (PARTITION BY user_id, customer_id, role_id ORDER BY valid_from) AS next
    FROM user_roles_history) x
WHERE (next IS NULL AND valid_to IS NOT NULL) OR (next IS NOT NULL AND valid_to IS DISTINCT FROM next)
   OR valid_to <= valid_from`), nil)
	equal(t, "roles agree with their open history row", b.strings(t, `
SELECT r.user_id, r.customer_id, r.role_id, r.removed_at IS NULL, h.change
FROM user_roles r LEFT JOIN user_roles_history h
    ON (h.user_id, h.customer_id, h.role_id) = (r.user_id, r.customer_id, r.role_id) AND h.valid_to IS NULL
WHERE h.change IS NULL OR (r.removed_at IS NULL) <> (h.change <> 'removed')`), nil)
	historyChains(t, b)
}

// Users listed by two customers are removed from both, and both customers'
// snapshots are written at the same moment: each write sees the other's
// users row as still current. The roles must go anyway, once, by the sweep
// that follows the run's writes.
func TestSharedUsersRemovedWhileCustomersWrittenConcurrently(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	const a, c, n = 11, 12, 20
	snapshot := func(cid int64, users []int64) *msads.Snapshot {
		s := &msads.Snapshot{CustomerID: cid, RoleCustomers: []int64{a, c}}
		for _, u := range users {
			s.Users = append(s.Users, msads.User{ID: u, UserName: fmt.Sprint("u", u)})
			s.Roles = append(s.Roles, msads.Role{UserID: u, CustomerID: a, RoleID: msads.RoleViewer},
				msads.Role{UserID: u, CustomerID: c, RoleID: msads.RoleStandardUser})
		}
		return s
	}
	writeBoth := func(users []int64) {
		t.Helper()
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		for i, cid := range []int64{a, c} {
			wg.Go(func() {
				<-start
				_, errs[i] = b.store.WriteSnapshot(context.Background(), b.runID, snapshot(cid, users), SyncInfo{})
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	stay := []int64{1} // listed by both all along
	for round := range 20 {
		var users []int64
		for i := range int64(n) {
			users = append(users, int64(1000*(round+1))+i)
		}
		writeBoth(append(stay, users...))
		// The API removes them from both customers. A customer's write
		// removes their roles there only when no other listing lists them:
		// written at the same moment, each sees the other's row still
		// current, so the sweep after the writes removes what is left.
		// Whatever the interleaving, every role goes exactly once.
		writeBoth(stay)
		if got := b.sweep(t, a, c); got > 2*n {
			t.Fatalf("round %d: sweep removed %d roles, more than the %d there are", round, got, 2*n)
		}
		equal(t, fmt.Sprintf("round %d: current roles of removed users", round), b.strings(t,
			`SELECT user_id, customer_id, role_id FROM user_roles WHERE user_id >= $1 AND removed_at IS NULL`, users[0]), nil)
		equal(t, fmt.Sprintf("round %d: one 'removed' history row per role", round), b.strings(t, `
SELECT user_id, customer_id, role_id, count(*) FILTER (WHERE change = 'removed') FROM user_roles_history
WHERE user_id BETWEEN $1 AND $2 GROUP BY 1, 2, 3 HAVING count(*) FILTER (WHERE change = 'removed') <> 1`,
			users[0], users[n-1]), nil)
		equal(t, fmt.Sprintf("round %d: every removed user's role has a history", round), b.strings(t,
			`SELECT count(DISTINCT (user_id, customer_id, role_id)) FROM user_roles_history WHERE user_id BETWEEN $1 AND $2`,
			users[0], users[n-1]), []string{fmt.Sprint(2 * n)})
		if t.Failed() {
			break
		}
	}
	equal(t, "the user both still list keeps its roles", b.strings(t,
		`SELECT customer_id, role_id FROM user_roles WHERE user_id = 1 AND removed_at IS NULL ORDER BY 1`), []string{"11|100", "12|203"})
	historyConsistent(t, b)
	if got := b.sweep(t, a, c); got != 0 {
		t.Errorf("a second sweep removed %d roles", got)
	}
}

// A wrong state left by an earlier run (a role current though no users
// row lists its user) is repaired by the next sweep.
func TestSweepRepairsPastState(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	b.write(t, baseSnapshot())
	// As the old writer left it: user 3 removed, its roles current.
	if _, err := b.pool.Exec(t.Context(), `UPDATE `+b.q("users")+` SET removed_at = now() WHERE user_id = 3`); err != nil {
		t.Fatal(err)
	}
	if got := b.sweep(t, cust, 2002); got != 2 {
		t.Errorf("sweep removed %d roles, want 2", got)
	}
	equal(t, "user 3 roles", b.strings(t, `SELECT customer_id, removed_at IS NOT NULL FROM user_roles WHERE user_id = 3 ORDER BY 1`),
		[]string{"1001|true", "2002|true"})
	// The users row of user 3 was removed by hand, without history.
	historyChains(t, b, rolesTable, invitationsTable)
}

// A snapshot removes roles only in its RoleCustomers (the customers its
// credential can see), and SweepRoles only in the customers it is given.
func TestRolesRemovedOnlyInCustomersTheCredentialSees(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	const c1, c2, c3 = 21, 22, 23
	// Credential Y (sees c2, c3) writes c2 listing user 7 with roles in c2 and c3.
	b.write(t, &msads.Snapshot{CustomerID: c2, RoleCustomers: []int64{c2, c3}, Users: []msads.User{{ID: 7, UserName: "seven"}},
		Roles: []msads.Role{{UserID: 7, CustomerID: c2, RoleID: msads.RoleViewer}, {UserID: 7, CustomerID: c3, RoleID: msads.RoleViewer}}})
	// Credential X (sees c1, c2) writes c1 listing user 7: GetUser shows
	// its roles in c1 and c2 only. The role in c3 is not X's to remove.
	x := &msads.Snapshot{CustomerID: c1, RoleCustomers: []int64{c1, c2}, Users: []msads.User{{ID: 7, UserName: "seven"}},
		Roles: []msads.Role{{UserID: 7, CustomerID: c1, RoleID: msads.RoleSuperAdmin}, {UserID: 7, CustomerID: c2, RoleID: msads.RoleViewer}}}
	if ch, want := b.write(t, x), (Changes{Users: Counts{Added: 1}, Roles: Counts{Added: 1}}); ch != want {
		t.Errorf("X writes c1 = %v, want %v (the role in c3 kept)", ch, want)
	}
	before := b.versions(t)
	if ch := b.write(t, x); ch.Total() != 0 {
		t.Errorf("X re-run = %v, want none", ch)
	}
	b.sameVersions(t, before, "rewritten by X's no-change re-run")
	// The role in c2 goes (X sees c2); the one in c3 stays.
	x.Roles = x.Roles[:1]
	if ch, want := b.write(t, x), (Changes{Roles: Counts{Removed: 1}}); ch != want {
		t.Errorf("X drops the role in c2 = %v, want %v", ch, want)
	}
	equal(t, "user 7 roles", b.strings(t, `SELECT customer_id, removed_at IS NULL FROM user_roles WHERE user_id = 7 ORDER BY 1`),
		[]string{"21|true", "22|false", "23|true"})
	// An empty RoleCustomers removes nothing; nil removes anything.
	x.Roles, x.RoleCustomers = []msads.Role{{UserID: 7, CustomerID: c2, RoleID: msads.RoleViewer}}, []int64{}
	if ch, want := b.write(t, x), (Changes{Roles: Counts{Reappeared: 1}}); ch != want {
		t.Errorf("empty RoleCustomers = %v, want %v", ch, want)
	}
	x.RoleCustomers = nil
	if ch, want := b.write(t, x), (Changes{Roles: Counts{Removed: 2}}); ch != want {
		t.Errorf("nil RoleCustomers = %v, want %v", ch, want)
	}
	// Both listings drop user 7: the sweep removes only in its customers.
	b.write(t, &msads.Snapshot{CustomerID: c1})
	b.write(t, &msads.Snapshot{CustomerID: c2})
	b.write(t, &msads.Snapshot{CustomerID: c2, RoleCustomers: []int64{c2, c3}, Users: []msads.User{{ID: 7, UserName: "seven"}},
		Roles: []msads.Role{{UserID: 7, CustomerID: c2, RoleID: msads.RoleViewer}, {UserID: 7, CustomerID: c3, RoleID: msads.RoleViewer}}})
	b.write(t, &msads.Snapshot{CustomerID: c2})
	// c2's listing took its role in c2 along; the sweep of c1, c2 has
	// nothing left, and never touches c3.
	if got := b.sweep(t, c1, c2); got != 0 {
		t.Errorf("sweep of c1, c2 removed %d roles, want 0", got)
	}
	equal(t, "role in c3 kept", b.strings(t, `SELECT removed_at IS NULL FROM user_roles WHERE user_id = 7 AND customer_id = 23`), []string{"true"})
	if got := b.sweep(t, c3); got != 1 {
		t.Errorf("sweep of c3 removed %d roles, want 1", got)
	}
	historyConsistent(t, b)
}

// Strings are stored verbatim, except NUL (which PostgreSQL text cannot
// hold), which becomes U+FFFD with one warning naming the user, not the value.
func TestHostileStrings(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	b := setup(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	long := strings.Repeat("ÅßÇ-10KB-", 10*1024/12+1)
	values := map[int64]string{
		1: long,
		2: "emoji 👩‍💻🚀 and ☃",
		3: "עברית مرحبا \u202Ertl\u202C",
		4: `quotes ' " \ ` + "`" + ` '' ""`,
		5: "new\nline\r\nand\ttab",
		6: "se\x00cret\x00",
	}
	snap := &msads.Snapshot{CustomerID: cust, CustomerName: "Hostile \"Inc\"\n"}
	for id := int64(1); id <= 6; id++ {
		v := values[id]
		snap.Users = append(snap.Users, msads.User{ID: id, UserName: v, Email: v, FirstName: v, LastName: v, JobTitle: v})
		snap.Roles = append(snap.Roles, msads.Role{UserID: id, CustomerID: cust, RoleID: msads.RoleViewer})
	}
	snap.Invitations = []msads.Invitation{{ID: 9, Email: "in\x00vite", FirstName: values[2], LastName: values[3]}}
	if ch := b.write(t, snap); ch.Users.Added != 6 || ch.Invitations.Added != 1 {
		t.Fatalf("changes %v", ch)
	}
	want := func(id int64) string {
		if id == 6 {
			return "se\uFFFDcret\uFFFD"
		}
		return values[id]
	}
	for id := int64(1); id <= 6; id++ {
		var name, email, first, last, job string
		err := b.pool.QueryRow(t.Context(), `SELECT user_name, email, first_name, last_name, job_title FROM `+b.q("users")+` WHERE user_id = $1`, id).
			Scan(&name, &email, &first, &last, &job)
		if err != nil {
			t.Fatal(err)
		}
		for _, got := range []string{name, email, first, last, job} {
			if got != want(id) {
				t.Errorf("user %d: stored %q, want %q", id, trim(got), trim(want(id)))
			}
		}
	}
	equal(t, "invitation", b.strings(t, `SELECT email, first_name = $1, last_name = $2 FROM user_invitations`, values[2], values[3]),
		[]string{"in\uFFFDvite|true|true"})
	equal(t, "customer name", b.strings(t, `SELECT name FROM customers`), []string{"Hostile \"Inc\"\n"})
	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "user_ids=[6]") || !strings.Contains(out, "invitation_ids=[9]") {
		t.Errorf("want one warning naming user 6 and invitation 9, got:\n%s", out)
	}
	if strings.Contains(out, "cret") || strings.Contains(out, "vite") {
		t.Errorf("the warning shows the value:\n%s", out)
	}
	before := b.versions(t)
	if ch := b.write(t, snap); ch.Total() != 0 {
		t.Errorf("re-run = %v, want none", ch)
	}
	b.sameVersions(t, before, "rewritten by a no-change re-run")
}

func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// A customer's listing drops a user while another customer's listing (and
// its GetUser) still gives the user a role in the first customer — e.g. a
// listing filtered by status. The two must not undo each other run after
// run: while another listing of the credential lists the user, its GetUser
// decides, and a run with no API change writes nothing.
func TestRoleDoesNotFlapWhenAListingDropsAUserGetUserKeeps(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	a := baseSnapshot()
	a.RoleCustomers = []int64{cust, 2002}
	other := func() *msads.Snapshot {
		return &msads.Snapshot{CustomerID: 2002, RoleCustomers: []int64{cust, 2002},
			Users: []msads.User{{ID: 3, CustomerID: 2002, HomeCustomerID: cust, UserName: "user3"}},
			Roles: []msads.Role{{UserID: 3, CustomerID: cust, RoleID: msads.RoleStandardUser}, {UserID: 3, CustomerID: 2002, RoleID: msads.RoleViewer}}}
	}
	b.write(t, a)
	b.write(t, other())
	b.sweep(t, cust, 2002)
	a.Users = slicesDelete(a.Users, 2)
	a.Roles = []msads.Role{a.Roles[0], a.Roles[1], a.Roles[4]}
	run := func() {
		b.write(t, a)
		b.write(t, other())
		b.sweep(t, cust, 2002)
	}
	run()
	equal(t, "role in 1001 kept while 2002's GetUser gives it", b.strings(t,
		`SELECT removed_at IS NULL FROM user_roles WHERE user_id = 3 AND customer_id = $1`, cust), []string{"true"})
	before := b.versions(t)
	run()
	b.sameVersions(t, before, "on a run with no change in the API")
	historyConsistent(t, b)
}
