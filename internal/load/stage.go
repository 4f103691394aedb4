package load

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/msads-syncer/syncer/internal/msads"
)

// staged is a validated, deduplicated, sorted snapshot ready for COPY: each
// row holds the values of its table's All() columns, in that order.
type staged struct {
	customerID      int64
	customerName    string
	users           [][]any
	userIDs         []int64
	readable        []int64 // the staged users GetUser read (detail_status ok)
	unreadable      int     // staged users whose GetUser failed
	roles           [][]any
	invitations     [][]any
	accounts        [][]any
	accountsFetched bool
	// roleCustomers is Snapshot.RoleCustomers sorted (nil: no restriction).
	roleCustomers []int64
	// replaced names what had strings PostgreSQL cannot store (see clean).
	replaced replacedStrings
	links    stagedLinks
}

// replacedStrings are the ids whose strings clean changed.
type replacedStrings struct {
	users, invitations, accounts []int64
	customer                     bool
}

// clean returns s as PostgreSQL text can hold it: a NUL byte, or a byte
// sequence that is not UTF-8, becomes U+FFFD; every other string (quotes,
// newlines, emoji, right-to-left text, long values) stays verbatim. It
// reports whether it changed s.
func clean(s string) (string, bool) {
	if !needsClean(s) {
		return s, false
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD"), true
}

// needsClean reports whether clean would change any of ss.
func needsClean(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			return true
		}
	}
	return false
}

// inKeyOrder returns s sorted by cmp, stably (of equal keys, the last
// listed stays last): s itself when it already is (a snapshot's lists
// usually are), else a sorted copy. Either way stage writes nothing into
// it (a value to change is changed in a copy of its element), so the
// snapshot stays as the caller made it.
func inKeyOrder[S ~[]E, E any](s S, cmp func(a, b E) int) S {
	if slices.IsSortedFunc(s, cmp) {
		return s
	}
	s = slices.Clone(s)
	slices.SortStableFunc(s, cmp)
	return s
}

func sameRole(a, b *msads.Role) bool {
	return a.UserID == b.UserID && a.CustomerID == b.CustomerID && a.RoleID == b.RoleID
}

// cleanAll cleans the strings ps point to and reports whether any changed.
func cleanAll(ps ...*string) bool {
	changed := false
	for _, p := range ps {
		var c bool
		*p, c = clean(*p)
		changed = changed || c
	}
	return changed
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullablePtr is nullable without the copy: p, or nil for "".
func nullablePtr(p *string) any {
	if *p == "" {
		return nil
	}
	return p
}

// statusOK is users.detail_status 'ok', boxed once.
var statusOK any = msads.DetailOK

// sortedIDs returns ids sorted and without duplicates: ids itself when it
// already is (no caller writes into the result), else a sorted copy. nil
// stays nil (NULL) and an empty non-nil slice stays empty non-nil ('{}').
func sortedIDs(ids []int64) []int64 {
	if ids == nil {
		return nil
	}
	if strictlyIncreasing(ids) {
		return ids
	}
	out := append(make([]int64, 0, len(ids)), ids...)
	slices.Sort(out)
	return slices.Compact(out)
}

func strictlyIncreasing(ids []int64) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			return false
		}
	}
	return true
}

// unionIDs is the union of two id lists where nil means "no list" and a
// non-nil slice, even empty, is a list: [] ∪ [] is [], not nil. (For the
// scope of a role, where nil means every account, the caller checks nil
// first.)
func unionIDs(a, b []int64) []int64 {
	if a == nil && b == nil {
		return nil
	}
	return append(append(make([]int64, 0, len(a)+len(b)), a...), b...)
}

// detailStatus returns the users.detail_status of u, or "" when u's
// DetailStatus is not one the schema knows.
func detailStatus(u *msads.User) string {
	switch u.DetailStatus {
	case "", msads.DetailOK:
		return msads.DetailOK
	case msads.DetailUnreadable, msads.DetailNotFound:
		return u.DetailStatus
	}
	return ""
}

func stage(snap *msads.Snapshot) (*staged, error) {
	if snap == nil || snap.CustomerID <= 0 {
		return nil, fmt.Errorf("%w: no customer id", ErrInvalidSnapshot)
	}
	cid := snap.CustomerID
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: customer %d: %s", ErrInvalidSnapshot, cid, fmt.Sprintf(format, args...))
	}
	st := &staged{customerID: cid, customerName: snap.CustomerName, accountsFetched: snap.AccountsFetched,
		roleCustomers: sortedIDs(snap.RoleCustomers)}
	st.replaced.customer = cleanAll(&st.customerName)

	users := inKeyOrder(snap.Users, func(a, b msads.User) int { return cmp.Compare(a.ID, b.ID) })
	n := len(users)
	st.userIDs = make([]int64, 0, n)
	st.readable = make([]int64, 0, n)
	// statuses[i] is the detail status of st.userIDs[i].
	statuses := make([]string, 0, n)
	vals := make([]any, 15*n) // the users rows' values
	st.users = make([][]any, 0, n)
	for i := range users {
		u := &users[i]
		if u.CustomerID != 0 && u.CustomerID != cid {
			return nil, bad("user %d is listed for customer %d", u.ID, u.CustomerID)
		}
		status := detailStatus(u)
		if status == "" {
			return nil, bad("user %d has unknown detail status %q", u.ID, u.DetailStatus)
		}
		if i+1 < len(users) && users[i+1].ID == u.ID {
			continue // keep the last of duplicates
		}
		if needsClean(u.UserName, u.Email, u.FirstName, u.LastName, u.JobTitle, u.Lcid, u.LifecycleStatus,
			u.DetailTrackingID, u.DetailError) {
			c := *u // users may be the snapshot's own: cleaned in a copy
			cleanAll(&c.UserName, &c.Email, &c.FirstName, &c.LastName, &c.JobTitle, &c.Lcid, &c.LifecycleStatus,
				&c.DetailTrackingID, &c.DetailError)
			u = &c
			st.replaced.users = append(st.replaced.users, u.ID)
		}
		st.userIDs = append(st.userIDs, u.ID)
		statuses = append(statuses, status)
		if status == msads.DetailOK {
			st.readable = append(st.readable, u.ID)
			var home any
			if u.HomeCustomerID != 0 {
				home = &u.HomeCustomerID
			}
			// Pointers into users (and to st.customerID): pgx encodes
			// what they point to, and a pointer in an interface costs no
			// allocation where a boxed int64 or string does.
			row := vals[:15:15]
			vals = vals[15:]
			row[0], row[1], row[2] = &st.customerID, &u.ID, home
			for j, p := range [...]*string{&u.UserName, &u.Email, &u.FirstName, &u.LastName, &u.JobTitle, &u.Lcid, &u.LifecycleStatus} {
				row[3+j] = nullablePtr(p)
			}
			row[10], row[11] = u.LastModifiedTime, statusOK
			st.users = append(st.users, row) // usersTable.All(); row[12:] nil
			continue
		}
		// GetUser failed: only the listing's user name and the failure are
		// known; the other columns keep their stored values (userValues).
		st.unreadable++
		var code any
		if u.DetailCode != 0 {
			code = int32(u.DetailCode)
		}
		st.users = append(st.users, []any{cid, u.ID, nil, nullable(u.UserName), nil, nil, nil, nil, nil, nil, nil,
			status, code, nullable(u.DetailTrackingID), nullable(u.DetailError)})
	}
	// statusOf is the detail status of a listed user, "" for one not listed.
	statusOf := func(id int64) string {
		if i, ok := slices.BinarySearch(st.userIDs, id); ok {
			return statuses[i]
		}
		return ""
	}

	for _, r := range snap.Roles {
		switch status := statusOf(r.UserID); status {
		case msads.DetailOK:
		case "":
			return nil, bad("role %d of user %d, who is not listed", r.RoleID, r.UserID)
		default:
			// The stored roles of a user GetUser could not read stay as
			// they are: the snapshot cannot know any.
			return nil, bad("role %d of user %d, whose detail status is %s", r.RoleID, r.UserID, status)
		}
	}
	// Sorted by key (stable: of duplicates, the last listed stays last), so
	// duplicates are neighbours; a snapshot's roles usually come sorted
	// already.
	roles := inKeyOrder(snap.Roles, func(a, b msads.Role) int {
		return cmp.Or(cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.CustomerID, b.CustomerID), cmp.Compare(a.RoleID, b.RoleID))
	})
	st.roles = make([][]any, 0, len(roles))
	vals = make([]any, 6*len(roles)) // the roles rows' values
	for i := 0; i < len(roles); {
		m := &roles[i]
		i++
		if i < len(roles) && sameRole(&roles[i], m) {
			// The same role twice: the union of its scopes. nil (every
			// account) wins; [] ∪ list is the list; [] ∪ [] stays []. The
			// other fields are the last one's.
			r := *m
			for ; i < len(roles) && sameRole(&roles[i], &r); i++ {
				next := roles[i]
				if r.AccountIDs == nil || next.AccountIDs == nil {
					next.AccountIDs = nil
				} else {
					next.AccountIDs = unionIDs(r.AccountIDs, next.AccountIDs)
				}
				next.LinkedAccountIDs = unionIDs(r.LinkedAccountIDs, next.LinkedAccountIDs)
				r = next
			}
			m = &r // the row points into it (see the users rows)
		}
		if needsClean(m.CustomerLinkPermission) {
			c := *m
			cleanAll(&c.CustomerLinkPermission)
			m = &c
			st.replaced.users = append(st.replaced.users, m.UserID)
		}
		row := vals[:6:6]
		vals = vals[6:]
		row[0], row[1], row[2] = &m.UserID, &m.CustomerID, &m.RoleID
		row[3], row[4], row[5] = sortedIDs(m.AccountIDs), sortedIDs(m.LinkedAccountIDs), nullablePtr(&m.CustomerLinkPermission)
		st.roles = append(st.roles, row)
	}

	invs := slices.Clone(snap.Invitations)
	slices.SortStableFunc(invs, func(a, b msads.Invitation) int { return cmp.Compare(a.ID, b.ID) })
	for i, inv := range invs {
		if inv.CustomerID != 0 && inv.CustomerID != cid {
			return nil, bad("invitation %d belongs to customer %d", inv.ID, inv.CustomerID)
		}
		if i+1 < len(invs) && invs[i+1].ID == inv.ID {
			continue
		}
		if cleanAll(&inv.Email, &inv.FirstName, &inv.LastName, &inv.Lcid) {
			st.replaced.invitations = append(st.replaced.invitations, inv.ID)
		}
		st.invitations = append(st.invitations, []any{inv.ID, cid, nullable(inv.Email), nullable(inv.FirstName),
			nullable(inv.LastName), inv.RoleID, sortedIDs(inv.AccountIDs), nullable(inv.Lcid), inv.ExpirationDate})
	}

	if snap.AccountsFetched {
		accs := slices.Clone(snap.Accounts)
		slices.SortStableFunc(accs, func(a, b msads.Account) int { return cmp.Compare(a.ID, b.ID) })
		for i, a := range accs {
			if a.CustomerID != 0 && a.CustomerID != cid {
				return nil, bad("account %d belongs to customer %d", a.ID, a.CustomerID)
			}
			if i+1 < len(accs) && accs[i+1].ID == a.ID {
				continue
			}
			if cleanAll(&a.Name, &a.Number, &a.Status) {
				st.replaced.accounts = append(st.replaced.accounts, a.ID)
			}
			st.accounts = append(st.accounts, []any{a.ID, cid, nullable(a.Name), nullable(a.Number), nullable(a.Status), a.PauseReason})
		}
	}
	slices.Sort(st.replaced.users)
	st.replaced.users = slices.Compact(st.replaced.users)
	var err error
	if st.links, err = stageLinks(snap, bad); err != nil {
		return nil, err
	}
	return st, nil
}
