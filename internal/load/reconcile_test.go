package load

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/directory"
	"github.com/msads-syncer/syncer/internal/msads"
)

// testSettings are the rules of the reconcile tests: our domains are
// example.com and corp.example, old-name.com is an alias of example.com.
func testSettings() ReconcileSettings {
	return ReconcileSettings{
		AllowedDomains: []string{"corp.example", "example.com"},
		DomainAliases:  map[string]string{"old-name.com": "example.com", "contoso.onmicrosoft.com": "example.com"},
		ActiveStatuses: []string{"active", "true"},
		StaleAfter:     7 * 24 * time.Hour,
	}
}

// people builds a directory from "id|email|upn|status" rows (an empty id:
// the reader's rule, UPN else email).
func people(rows ...string) *directory.Directory {
	d := &directory.Directory{Source: "test.csv", SHA256: "x", Mapped: []string{"email", "upn", "employee_id", "status"}}
	for i, r := range rows {
		f := strings.Split(r, "|")
		p := directory.Person{EmployeeID: f[0], Email: f[1], UPN: f[2], Status: f[3], Line: i + 2}
		p.DirectoryID = p.EmployeeID
		if p.DirectoryID == "" {
			p.DirectoryID = strings.ToLower(p.UPN)
		}
		if p.DirectoryID == "" {
			p.DirectoryID = strings.ToLower(p.Email)
		}
		d.People = append(d.People, p)
	}
	return d
}

func (b *bundle) reconcile(t *testing.T, d *directory.Directory) ReconcileResult {
	t.Helper()
	res, err := b.store.Reconcile(t.Context(), ReconcileOptions{Settings: testSettings(), Directory: d})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// findings prints the exceptions as "kind customer user/invitation: reason"
// (the reason only with withReason).
func findings(es []AccessException, withReason bool) []string {
	var out []string
	for _, e := range es {
		id := fmt.Sprintf("u%d", e.UserID)
		if e.InvitationID != 0 {
			id = fmt.Sprintf("i%d", e.InvitationID)
		}
		s := fmt.Sprintf("%s %d %s", e.Kind, e.CustomerID, id)
		if withReason {
			s += ": " + e.Reason
		}
		out = append(out, s)
	}
	return out
}

// The one matching rule, normalize_email, with the tricky addresses.
func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	check := func(what string, cases [][2]string) {
		t.Helper()
		for _, c := range cases {
			var in any = c[0]
			if c[0] == "<NULL>" {
				in = nil
			}
			got := b.strings(t, `SELECT normalize_email($1::text), email_domain($1::text)`, in)
			if len(got) != 1 || !strings.HasPrefix(got[0], c[1]+"|") {
				t.Errorf("%s: normalize_email(%q) = %v, want %s", what, c[0], got, c[1])
			}
		}
	}
	// Before any settings are stored, no alias applies.
	check("no settings", [][2]string{{"Ann@Old-Name.com", "ann@old-name.com"}})
	b.reconcile(t, nil)
	check("settings", [][2]string{
		{"Ann@Example.COM", "ann@example.com"},             // case
		{"  ann@example.com\t", "ann@example.com"},         // surrounding spaces
		{"ann+ads@example.com", "ann@example.com"},         // plus-addressing
		{"ann+ads+2024@example.com", "ann@example.com"},    // the first + starts the tag
		{"+ann@example.com", "+ann@example.com"},           // a local part that starts with + is kept
		{"ann@old-name.com", "ann@example.com"},            // an alias domain
		{"ANN+x@OLD-NAME.COM.", "ann@example.com"},         // all at once, with a trailing dot
		{"ann@contoso.onmicrosoft.com", "ann@example.com"}, // a UPN domain as an alias
		{"ann@sub.old-name.com", "ann@sub.old-name.com"},   // a subdomain is not the alias
		{"jdoe", "jdoe"},  // a plain user name
		{"JDoe ", "jdoe"}, //
		{`"a@b"@example.com`, `"a@b"@example.com`}, // the domain follows the last @
		{"ann@", "ann@"},                                  // not an address: kept
		{"@example.com", "@example.com"},                  //
		{"", "NULL"}, {"   ", "NULL"}, {"<NULL>", "NULL"}, // nothing
	})
	// Non-ASCII letters are lower-cased as the database's LC_CTYPE does.
	equal(t, "non-ASCII", b.strings(t, `SELECT normalize_email('Ünal+x@Example.com') = lower('Ünal') || '@example.com'`), []string{"true"})
	equal(t, "email_domain", b.strings(t, `SELECT email_domain('x+y@OLD-NAME.com'), email_domain('jdoe') IS NULL, email_domain('a@') IS NULL`),
		[]string{"example.com|true|true"})
}

// matchingSnapshot has one user per matching case, in customer 1001, each
// a Viewer (not privileged).
func matchingSnapshot() *msads.Snapshot {
	s := &msads.Snapshot{CustomerID: cust, CustomerName: "Acme"}
	add := func(id int64, userName, email, lifecycle string) {
		s.Users = append(s.Users, msads.User{ID: id, CustomerID: cust, UserName: userName, Email: email, LifecycleStatus: lifecycle})
		s.Roles = append(s.Roles, msads.Role{UserID: id, CustomerID: cust, RoleID: msads.RoleViewer})
	}
	add(1, "Ann@Example.com", "ANN@example.com", "Active")          // case: owned by ann
	add(2, "bob+ads@example.com", "bob+ads@example.com", "Active")  // plus-addressing: owned by bob
	add(3, "cat@old-name.com", "cat@old-name.com", "Active")        // alias: owned by cat
	add(4, "dan@example.com", "dan@example.com", "Active")          // dan left: terminated
	add(5, "eve@example.com", "eve@example.com", "Inactive")        // eve left, already inactive here: nothing
	add(6, "fay@example.com", "", "Active")                         // no email, user name = a UPN: owned
	add(7, "gus", "", "Active")                                     // no email, user name matches nobody: no_owner
	add(8, "hal.personal@outlook.com", "hal@example.com", "Active") // personal login, work email: owned by hal
	add(9, "shared@example.com", "shared@example.com", "Active")    // two people, one active: owned
	add(10, "gone@example.com", "gone@example.com", "Active")       // two people, none active: terminated
	add(11, "zed@gmail.com", "zed@gmail.com", "Active")             // external and unowned
	add(12, "ivy@contoso.onmicrosoft.com", "", "Active")            // UPN login, UPN-domain alias: owned by ivy's UPN
	s.Invitations = []msads.Invitation{
		{ID: 501, CustomerID: cust, Email: "new@corp.example", RoleID: msads.RoleViewer, ExpirationDate: ptime("2099-01-31T00:00:00Z")},
		{ID: 502, CustomerID: cust, Email: "friend+x@Gmail.com", RoleID: msads.RoleViewer, ExpirationDate: ptime("2099-01-31T00:00:00Z")},
		{ID: 503, CustomerID: cust, Email: "old@example.com", RoleID: msads.RoleSuperAdmin, ExpirationDate: ptime("2020-01-31T00:00:00Z")},
	}
	return s
}

func matchingDirectory() *directory.Directory {
	return people(
		"E1|ann@example.com||Active",
		"E2|bob@example.com||active",
		"E3|cat@example.com||Active",
		"E4|dan@example.com||Terminated",
		"E5|eve@example.com||Terminated",
		"E6||fay@example.com|true",
		"E6b|fay@example.com||Active", // a second person whose email is fay's UPN: fine, matched anyway
		"E8|hal@example.com||Active",
		"E9|shared@example.com||Active",
		"E10|shared@example.com||Terminated",
		"E11|gone@example.com||Terminated",
		"E12|GONE@example.com||false",
		"E13|ivy.other@example.com|ivy@contoso.onmicrosoft.com|TRUE",
		"|nobody@example.com||", // no employee id: keyed by email; empty status counts as active
	)
}

func TestAccessExceptionsMatching(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, matchingSnapshot())

	// No directory loaded yet: no no_owner or terminated finding.
	res := b.reconcile(t, nil)
	if res.Directory != nil {
		t.Errorf("directory = %+v before any load", res.Directory)
	}
	// hal's user name is at outlook.com, but the email decides: example.com.
	equal(t, "before a directory", findings(res.Exceptions, false), []string{
		"external_domain 1001 u11",
		"external_domain 1001 i502",
		"stale_invitation 1001 i503",
	})

	res = b.reconcile(t, matchingDirectory())
	equal(t, "findings", findings(res.Exceptions, true), []string{
		"no_owner 1001 u7: has no email, and user name gus matches no one in the directory",
		"no_owner 1001 u11: user name zed@gmail.com and email zed@gmail.com match no one in the directory",
		"terminated 1001 u4: the directory lists this person: E4 (Terminated), none active, but the user is still Active here",
		"terminated 1001 u10: the directory lists 2 people with this address: E11 (Terminated), E12 (false), none active, but the user is still Active here",
		"external_domain 1001 u11: email domain gmail.com is not one of reconcile.allowed_domains",
		"external_domain 1001 i502: pending invitation (Viewer) to email domain gmail.com, which is not one of reconcile.allowed_domains",
		"stale_invitation 1001 i503: pending invitation (Super Admin) expired on 2020-01-31 but is still listed",
	})
	if d := res.Directory; d == nil || d.People != 14 || d.Current != 14 || d.Changes != (Counts{Added: 14}) {
		t.Errorf("directory load = %+v", d)
	}
}

// Users GetUser could not find, or inactive here, are not "active here":
// their directory person's termination is no finding; an unreadable user
// (its last known email kept) still is.
func TestTerminatedOnlyWhileActiveHere(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	snap := &msads.Snapshot{CustomerID: cust}
	for i, st := range []string{"Active", "Inactive", "Pending", "Deleted"} {
		id := int64(i + 1)
		snap.Users = append(snap.Users, msads.User{ID: id, UserName: fmt.Sprintf("u%d@example.com", id), Email: fmt.Sprintf("u%d@example.com", id), LifecycleStatus: st})
		snap.Roles = append(snap.Roles, msads.Role{UserID: id, CustomerID: cust, RoleID: msads.RoleViewer})
	}
	b.write(t, snap)
	dir := people("1|u1@example.com||gone", "2|u2@example.com||gone", "3|u3@example.com||gone", "4|u4@example.com||gone")
	equal(t, "first", findings(b.reconcile(t, dir).Exceptions, false), []string{"terminated 1001 u1", "terminated 1001 u3"})

	// User 1 becomes unreadable (kept, still listed); user 3 not_found.
	snap.Users[0] = msads.User{ID: 1, UserName: "u1@example.com", DetailStatus: msads.DetailUnreadable, DetailCode: 106}
	snap.Users[2] = msads.User{ID: 3, UserName: "u3@example.com", DetailStatus: msads.DetailNotFound, DetailCode: 1001}
	snap.Roles = []msads.Role{snap.Roles[1], snap.Roles[3]}
	b.write(t, snap)
	equal(t, "after", findings(b.reconcile(t, nil).Exceptions, true), []string{
		"terminated 1001 u1: the directory lists this person: 1 (gone), none active, but the user is still listed (unreadable) here",
	})
}

func TestDirectoryLoadReplacesWithHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	first := b.reconcile(t, people("1|a@example.com||Active", "2|b@example.com||Active", "3|c@example.com||Active", "4|d@example.com||Active"))
	if first.Directory.Changes != (Counts{Added: 4}) {
		t.Errorf("first load = %+v", first.Directory.Changes)
	}
	versions := func() string {
		return strings.Join(b.strings(t, `SELECT count(*), md5(string_agg(ctid::text || xmin::text, ',' ORDER BY ctid)) FROM directory_people`), "")
	}
	before := versions()
	again := b.reconcile(t, people("1|a@example.com||Active", "2|b@example.com||Active", "3|c@example.com||Active", "4|d@example.com||Active"))
	if again.Directory.Changes != (Counts{}) || again.Directory.LoadID == first.Directory.LoadID {
		t.Errorf("same file again = %+v", again.Directory)
	}
	if after := versions(); after != before {
		t.Errorf("an unchanged directory rewrote rows: %s -> %s", before, after)
	}

	// 2 changes status, 3 leaves the file, 5 is new.
	second := b.reconcile(t, people("1|a@example.com||Active", "2|b@example.com||Terminated", "4|d@example.com||Active", "5|e@example.com||Active"))
	if second.Directory.Changes != (Counts{Added: 1, Changed: 1, Removed: 1}) || second.Directory.Current != 4 {
		t.Errorf("second load = %+v", second.Directory)
	}
	// 3 comes back.
	third := b.reconcile(t, people("1|a@example.com||Active", "2|b@example.com||Terminated", "3|c@example.com||Active", "4|d@example.com||Active", "5|e@example.com||Active"))
	if third.Directory.Changes != (Counts{Reappeared: 1}) {
		t.Errorf("third load = %+v", third.Directory.Changes)
	}
	equal(t, "history of 2 and 3", b.strings(t, `SELECT directory_id, change, status, valid_to IS NULL, load_id - $1 FROM directory_people_history
		WHERE directory_id IN ('2', '3') ORDER BY directory_id, valid_from`, first.Directory.LoadID), []string{
		"2|added|Active|false|0",
		"2|changed|Terminated|true|2",
		"3|added|Active|false|0",
		"3|removed|Active|false|2",
		"3|reappeared|Active|true|3",
	})
	equal(t, "loads", b.strings(t, `SELECT load_id - $1, people, added, changed, removed, reappeared FROM directory_loads ORDER BY load_id`, first.Directory.LoadID),
		[]string{"0|4|4|0|0|0", "1|4|0|0|0|0", "2|4|1|1|1|0", "3|5|0|0|0|1"})
	equal(t, "loaded_at follows the row's last change", b.strings(t, `SELECT directory_id FROM directory_people WHERE loaded_at > first_seen_at ORDER BY 1`),
		[]string{"2", "3"})
}

// A file that would remove most of the directory fails with the removal
// guard and loses nothing; AllowMassRemoval loads it.
func TestDirectoryRemovalGuard(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.reconcile(t, people("1|a@example.com||Active", "2|b@example.com||Active", "3|c@example.com||Active"))
	_, err := b.store.Reconcile(t.Context(), ReconcileOptions{Settings: testSettings(), Directory: people("1|a@example.com||Active")})
	if !errors.Is(err, ErrRemovalGuard) || !strings.Contains(err.Error(), "would remove 2 of the 3 people") {
		t.Fatalf("err = %v, want the removal guard", err)
	}
	equal(t, "kept", b.strings(t, `SELECT count(*) FROM directory_people WHERE removed_at IS NULL`), []string{"3"})
	equal(t, "no load recorded", b.strings(t, `SELECT count(*) FROM directory_loads`), []string{"1"})

	b2 := &bundle{pool: b.pool, schema: b.schema, store: NewStore(b.pool, Options{Schema: b.schema, AllowMassRemoval: true})}
	res := b2.reconcile(t, people("1|a@example.com||Active"))
	if res.Directory.Changes != (Counts{Removed: 2}) {
		t.Errorf("with AllowMassRemoval: %+v", res.Directory.Changes)
	}
}

// A dry run reports the exceptions the load would give and writes nothing.
func TestReconcileDryRun(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, matchingSnapshot())
	res, err := b.store.Reconcile(t.Context(), ReconcileOptions{Settings: testSettings(), Directory: matchingDirectory(), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Exceptions) != 7 || res.Directory == nil || res.Directory.Changes.Added != 14 {
		t.Errorf("dry run: %d exceptions, directory %+v", len(res.Exceptions), res.Directory)
	}
	equal(t, "nothing written", b.strings(t, `SELECT (SELECT count(*) FROM directory_people), (SELECT count(*) FROM directory_loads), (SELECT count(*) FROM reconcile_settings)`),
		[]string{"0|0|0"})
}

// Settings are written only when they change, and the view reads them: a
// new allowed domain or alias changes the findings without a new load.
func TestReconcileSettingsDriveTheView(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, matchingSnapshot())
	b.reconcile(t, matchingDirectory())
	stamp := func() []string { return b.strings(t, `SELECT xmin::text FROM reconcile_settings`) }
	before := stamp()
	b.reconcile(t, nil)
	equal(t, "unchanged settings not rewritten", stamp(), before)

	st := testSettings()
	st.AllowedDomains = append(st.AllowedDomains, "gmail.com")
	st.ActiveStatuses = append(st.ActiveStatuses, "terminated")
	res, err := b.store.Reconcile(t.Context(), ReconcileOptions{Settings: st})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "findings", findings(res.Exceptions, false), []string{
		"no_owner 1001 u7",
		"no_owner 1001 u11",
		"stale_invitation 1001 i503", // u10: E11 is active now, so E12's "false" does not count
	})
}

// privileged_external (privileged_access grants of external users and of
// agencies not approved) and dormant_link (links pending too long).
func TestAccessExceptionsPrivilegedAndLinks(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := &msads.Snapshot{CustomerID: cust, CustomerName: "Acme", AccountsFetched: true,
		Accounts: []msads.Account{{ID: 11, CustomerID: cust, Name: "Search"}, {ID: 12, CustomerID: cust, Name: "Brand"}}}
	add := func(id int64, email string, role int32, accounts []int64) {
		s.Users = append(s.Users, msads.User{ID: id, UserName: email, Email: email, LifecycleStatus: "Active"})
		s.Roles = append(s.Roles, msads.Role{UserID: id, CustomerID: cust, RoleID: role, AccountIDs: accounts})
	}
	add(1, "admin@example.com", msads.RoleSuperAdmin, nil)                    // ours: nothing
	add(2, "freelancer@gmail.com", msads.RoleSuperAdmin, nil)                 // external Super Admin
	add(3, "viewer@gmail.com", msads.RoleViewer, nil)                         // external, not privileged: external_domain only
	add(4, "std+x@Old-Name.com", msads.RoleStandardUser, []int64{12})         // alias of ours: nothing
	add(5, "partner@agency.example", msads.RoleStandardUser, []int64{12, 11}) // external Standard User on two accounts
	b.write(t, s)
	old := time.Now().Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	fresh := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	link := func(typ string, entity, managing int64, status, perm, modified string, removed bool) string {
		p, rm := "NULL", "NULL"
		if perm != "" {
			p = "'" + perm + "'"
		}
		if removed {
			rm = "now()"
		}
		return fmt.Sprintf(`INSERT INTO %s (type, client_entity_id, managing_customer_id, managing_customer_name, client_entity_name, status,
			customer_link_permission, inviter_email, searched_from_customer_id, last_modified_time, first_seen_at, removed_at)
			VALUES ('%s', %d, %d, 'Agency %d', 'Entity %d', '%s', %s, 'boss@agency%d.example', %d, '%s', '%s', %s)`,
			b.q("client_links"), typ, entity, managing, managing, entity, status, p, managing, cust, modified, old, rm)
	}
	for _, q := range []string{
		link("CustomerLink", cust, 7001, "Active", "Administrative", old, false),      // not approved: privileged_external
		link("CustomerLink", cust, 7002, "Active", "Administrative", old, false),      // approved
		link("CustomerLink", cust, 7003, "Active", "Standard", old, false),            // not privileged
		link("CustomerLink", cust, 7004, "LinkPending", "Administrative", old, false), // pending 30 days: dormant
		link("AccountLink", 11, 7005, "LinkPending", "", old, false),                  // pending 30 days: dormant (account 11 of 1001)
		link("AccountLink", 99, 7006, "LinkPending", "", old, false),                  // account not synced: the searching customer
		link("AccountLink", 12, 7007, "LinkPending", "", fresh, false),                // pending an hour: nothing
		link("AccountLink", 12, 7008, "LinkPending", "", old, true),                   // removed: nothing
		link("CustomerLink", cust, 7009, "Inactive", "Administrative", old, false),    // no access: nothing
	} {
		if _, err := b.pool.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	st := testSettings()
	st.ApprovedAgencies = []int64{7002}
	res, err := b.store.Reconcile(t.Context(), ReconcileOptions{Settings: st})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.Exceptions {
		got = append(got, fmt.Sprintf("%s c%d u%d l%s/%d/%d %s: %s", e.Kind, e.CustomerID, e.UserID, e.LinkType, e.ClientEntityID, e.ManagingCustomerID, e.Email, e.Reason))
	}
	day := time.Now().UTC().Format(time.DateOnly)
	oldDay := old[:10]
	equal(t, "findings", got, []string{
		"external_domain c1001 u2 l/0/0 freelancer@gmail.com: email domain gmail.com is not one of reconcile.allowed_domains",
		"external_domain c1001 u3 l/0/0 viewer@gmail.com: email domain gmail.com is not one of reconcile.allowed_domains",
		"external_domain c1001 u5 l/0/0 partner@agency.example: email domain agency.example is not one of reconcile.allowed_domains",
		"privileged_external c1001 u2 l/0/0 freelancer@gmail.com: Super Admin (every account) held by a user of email domain gmail.com, which is not one of reconcile.allowed_domains, since " + day,
		"privileged_external c1001 u5 l/0/0 partner@agency.example: Standard User (accounts Search, Brand) held by a user of email domain agency.example, which is not one of reconcile.allowed_domains, since " + day,
		"privileged_external c1001 u0 lCustomerLink/1001/7001 boss@agency7001.example: CustomerLink link (Administrative) held by agency Agency 7001 (customer 7001), which is not in reconcile.approved_agencies, since " + oldDay,
		"dormant_link c1001 u0 lAccountLink/11/7005 boss@agency7005.example: AccountLink request by Agency 7005 (customer 7005) for account Entity 11 is LinkPending since " + oldDay + " (more than 7 days): accepting it would grant the access",
		"dormant_link c1001 u0 lAccountLink/99/7006 boss@agency7006.example: AccountLink request by Agency 7006 (customer 7006) for account Entity 99 is LinkPending since " + oldDay + " (more than 7 days): accepting it would grant the access",
		"dormant_link c1001 u0 lCustomerLink/1001/7004 boss@agency7004.example: CustomerLink request by Agency 7004 (customer 7004) for customer Entity 1001 is LinkPending since " + oldDay + " (more than 7 days): accepting it would grant the access",
	})
}
