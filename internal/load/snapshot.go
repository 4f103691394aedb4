package load

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/msads"
)

// SyncInfo describes how a customer's snapshot was fetched.
type SyncInfo struct {
	StartedAt time.Time // when the customer's sync began
	APICalls  int
	// UsersUnreadable is how many listed users GetUser could not read
	// (customer_syncs.users_unreadable). WriteSnapshot counts them in the
	// snapshot when this is 0; RecordCustomerFailure records it as given
	// (0 when unknown).
	UsersUnreadable int
}

// Changes counts what a snapshot changed (or would change) in the warehouse.
type Changes struct {
	UsersAdded            int `json:"users_added"`
	UsersChanged          int `json:"users_changed"`
	UsersRemoved          int `json:"users_removed"`
	UsersReappeared       int `json:"users_reappeared"`
	RolesAdded            int `json:"roles_added"`
	RolesChanged          int `json:"roles_changed"`
	RolesRemoved          int `json:"roles_removed"`
	RolesReappeared       int `json:"roles_reappeared"`
	InvitationsAdded      int `json:"invitations_added"`
	InvitationsChanged    int `json:"invitations_changed"`
	InvitationsRemoved    int `json:"invitations_removed"`
	InvitationsReappeared int `json:"invitations_reappeared"`
	AccountsAdded         int `json:"accounts_added"`
	AccountsChanged       int `json:"accounts_changed"`
	AccountsRemoved       int `json:"accounts_removed"`
}

// Total returns the number of changed rows.
func (c Changes) Total() int {
	return c.UsersAdded + c.UsersChanged + c.UsersRemoved + c.UsersReappeared +
		c.RolesAdded + c.RolesChanged + c.RolesRemoved + c.RolesReappeared +
		c.InvitationsAdded + c.InvitationsChanged + c.InvitationsRemoved + c.InvitationsReappeared +
		c.AccountsAdded + c.AccountsChanged + c.AccountsRemoved
}

// Add returns the sum of c and d.
func (c Changes) Add(d Changes) Changes {
	return Changes{
		c.UsersAdded + d.UsersAdded, c.UsersChanged + d.UsersChanged, c.UsersRemoved + d.UsersRemoved, c.UsersReappeared + d.UsersReappeared,
		c.RolesAdded + d.RolesAdded, c.RolesChanged + d.RolesChanged, c.RolesRemoved + d.RolesRemoved, c.RolesReappeared + d.RolesReappeared,
		c.InvitationsAdded + d.InvitationsAdded, c.InvitationsChanged + d.InvitationsChanged, c.InvitationsRemoved + d.InvitationsRemoved, c.InvitationsReappeared + d.InvitationsReappeared,
		c.AccountsAdded + d.AccountsAdded, c.AccountsChanged + d.AccountsChanged, c.AccountsRemoved + d.AccountsRemoved,
	}
}

// String summarizes the changes, e.g.
// "users +2 ~1 -0 ^0, roles +3 ~0 -1 ^0, invitations +0 ~0 -0 ^0, accounts +0 ~0 -0"
// (+ added, ~ changed, - removed, ^ reappeared), or "no changes".
func (c Changes) String() string {
	if c.Total() == 0 {
		return "no changes"
	}
	return fmt.Sprintf("users +%d ~%d -%d ^%d, roles +%d ~%d -%d ^%d, invitations +%d ~%d -%d ^%d, accounts +%d ~%d -%d",
		c.UsersAdded, c.UsersChanged, c.UsersRemoved, c.UsersReappeared,
		c.RolesAdded, c.RolesChanged, c.RolesRemoved, c.RolesReappeared,
		c.InvitationsAdded, c.InvitationsChanged, c.InvitationsRemoved, c.InvitationsReappeared,
		c.AccountsAdded, c.AccountsChanged, c.AccountsRemoved)
}

// LogValue makes Changes print as a group in slog.
func (c Changes) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("users_added", c.UsersAdded), slog.Int("users_changed", c.UsersChanged),
		slog.Int("users_removed", c.UsersRemoved), slog.Int("users_reappeared", c.UsersReappeared),
		slog.Int("roles_added", c.RolesAdded), slog.Int("roles_changed", c.RolesChanged),
		slog.Int("roles_removed", c.RolesRemoved), slog.Int("roles_reappeared", c.RolesReappeared),
		slog.Int("invitations_added", c.InvitationsAdded), slog.Int("invitations_changed", c.InvitationsChanged),
		slog.Int("invitations_removed", c.InvitationsRemoved), slog.Int("invitations_reappeared", c.InvitationsReappeared),
		slog.Int("accounts_added", c.AccountsAdded), slog.Int("accounts_changed", c.AccountsChanged),
		slog.Int("accounts_removed", c.AccountsRemoved),
	)
}

// WriteSnapshot writes a customer's complete snapshot in one transaction that
// holds the customer's advisory lock: upserts of changed rows, soft removal
// of absent ones, history, a succeeded customer_syncs row (when runID is not
// 0) and the customer's freshness. On any error nothing is written. A
// snapshot that would remove too many users fails with ErrRemovalGuard unless
// Options.AllowMassRemoval.
func (s *Store) WriteSnapshot(ctx context.Context, runID int64, snap *msads.Snapshot, info SyncInfo) (Changes, error) {
	return s.writeSnapshot(ctx, runID, snap, info, true)
}

// DiffSnapshot does the work of WriteSnapshot, then rolls back: it returns
// what WriteSnapshot would change and writes nothing. The removal guard
// applies.
func (s *Store) DiffSnapshot(ctx context.Context, runID int64, snap *msads.Snapshot, info SyncInfo) (Changes, error) {
	return s.writeSnapshot(ctx, runID, snap, info, false)
}

func (s *Store) writeSnapshot(ctx context.Context, runID int64, snap *msads.Snapshot, info SyncInfo, commit bool) (Changes, error) {
	st, err := stage(snap)
	if err != nil {
		return Changes{}, err
	}
	if r := st.replaced; len(r.users)+len(r.invitations)+len(r.accounts) > 0 || r.customer {
		// Never the values: they may be anything.
		s.log.WarnContext(ctx, "snapshot strings with NUL bytes or invalid UTF-8, which PostgreSQL text cannot hold: replaced by U+FFFD",
			slog.Int64("customer_id", snap.CustomerID), slog.Any("user_ids", r.users),
			slog.Any("invitation_ids", r.invitations), slog.Any("account_ids", r.accounts), slog.Bool("customer_name", r.customer))
	}
	var ch Changes
	lock := "customer:" + strconv.FormatInt(snap.CustomerID, 10)
	err = s.inTx(ctx, lock, commit, func(tx pgx.Tx) error {
		ch = Changes{}
		// Shared: snapshot writes go side by side, and SweepRoles, which
		// takes it exclusively, sees none of them half done.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", s.lockName(sweepLock)); err != nil {
			return fmt.Errorf("take the role sweep lock: %w", err)
		}
		w := &writer{tx: tx, st: st, runID: runID, store: s}
		if err := w.write(ctx, &ch); err != nil {
			return err
		}
		if commit {
			return w.finish(ctx, ch, info)
		}
		return nil
	})
	if err != nil {
		return Changes{}, interpret(fmt.Errorf("write snapshot of customer %d: %w", snap.CustomerID, err))
	}
	s.log.DebugContext(ctx, "snapshot written", slog.Int64("customer_id", snap.CustomerID),
		slog.Bool("dry_run", !commit), slog.Any("changes", ch))
	return ch, nil
}

// staged is a validated, deduplicated, sorted snapshot ready for COPY.
type staged struct {
	customerID      int64
	customerName    string
	users           [][]any
	userIDs         []int64
	unreadable      int // staged users whose GetUser failed
	roles           [][]any
	invitations     [][]any
	accounts        [][]any
	accountsFetched bool
	// roleCustomers is Snapshot.RoleCustomers sorted (nil: no restriction).
	roleCustomers []int64
	// replaced names what had strings PostgreSQL cannot store (see clean).
	replaced replacedStrings
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
	if !strings.ContainsRune(s, 0) && utf8.ValidString(s) {
		return s, false
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD"), true
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

// sortedIDs returns ids sorted and without duplicates. nil stays nil (NULL)
// and an empty non-nil slice stays empty non-nil ('{}').
func sortedIDs(ids []int64) []int64 {
	if ids == nil {
		return nil
	}
	out := append(make([]int64, 0, len(ids)), ids...)
	slices.Sort(out)
	return slices.Compact(out)
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

	users := slices.Clone(snap.Users)
	slices.SortStableFunc(users, func(a, b msads.User) int { return cmp.Compare(a.ID, b.ID) })
	for i := range users {
		u := &users[i]
		if cleanAll(&u.UserName, &u.Email, &u.FirstName, &u.LastName, &u.JobTitle, &u.Lcid, &u.LifecycleStatus,
			&u.DetailTrackingID, &u.DetailError) {
			st.replaced.users = append(st.replaced.users, u.ID)
		}
	}
	// listed maps the listed users to their detail status.
	listed := make(map[int64]string, len(users))
	for i, u := range users {
		if u.CustomerID != 0 && u.CustomerID != cid {
			return nil, bad("user %d is listed for customer %d", u.ID, u.CustomerID)
		}
		status := detailStatus(&u)
		if status == "" {
			return nil, bad("user %d has unknown detail status %q", u.ID, u.DetailStatus)
		}
		if i+1 < len(users) && users[i+1].ID == u.ID {
			continue // keep the last of duplicates
		}
		listed[u.ID] = status
		st.userIDs = append(st.userIDs, u.ID)
		if status == msads.DetailOK {
			var home any
			if u.HomeCustomerID != 0 {
				home = u.HomeCustomerID
			}
			st.users = append(st.users, []any{u.ID, home, nullable(u.UserName), nullable(u.Email),
				nullable(u.FirstName), nullable(u.LastName), nullable(u.JobTitle), nullable(u.Lcid),
				nullable(u.LifecycleStatus), u.LastModifiedTime, status, nil, nil, nil})
			continue
		}
		// GetUser failed: only the listing's user name and the failure are
		// known; the other columns keep their stored values (userValues).
		st.unreadable++
		var code any
		if u.DetailCode != 0 {
			code = int32(u.DetailCode)
		}
		st.users = append(st.users, []any{u.ID, nil, nullable(u.UserName), nil, nil, nil, nil, nil, nil, nil,
			status, code, nullable(u.DetailTrackingID), nullable(u.DetailError)})
	}

	type roleKey struct {
		user, customer int64
		role           int32
	}
	merged := make(map[roleKey]msads.Role, len(snap.Roles))
	for _, r := range snap.Roles {
		switch status := listed[r.UserID]; status {
		case msads.DetailOK:
		case "":
			return nil, bad("role %d of user %d, who is not listed", r.RoleID, r.UserID)
		default:
			// The stored roles of a user GetUser could not read stay as
			// they are: the snapshot cannot know any.
			return nil, bad("role %d of user %d, whose detail status is %s", r.RoleID, r.UserID, status)
		}
		k := roleKey{r.UserID, r.CustomerID, r.RoleID}
		if prev, ok := merged[k]; ok {
			// The same role twice: the union of its scopes. nil (every
			// account) wins; [] ∪ list is the list; [] ∪ [] stays [].
			if prev.AccountIDs == nil || r.AccountIDs == nil {
				r.AccountIDs = nil
			} else {
				r.AccountIDs = unionIDs(prev.AccountIDs, r.AccountIDs)
			}
			r.LinkedAccountIDs = unionIDs(prev.LinkedAccountIDs, r.LinkedAccountIDs)
		}
		merged[k] = r
	}
	keys := make([]roleKey, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b roleKey) int {
		return cmp.Or(cmp.Compare(a.user, b.user), cmp.Compare(a.customer, b.customer), cmp.Compare(a.role, b.role))
	})
	for _, k := range keys {
		r := merged[k]
		if cleanAll(&r.CustomerLinkPermission) {
			st.replaced.users = append(st.replaced.users, r.UserID)
		}
		st.roles = append(st.roles, []any{r.UserID, r.CustomerID, r.RoleID, sortedIDs(r.AccountIDs),
			sortedIDs(r.LinkedAccountIDs), nullable(r.CustomerLinkPermission)})
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
		st.invitations = append(st.invitations, []any{inv.ID, nullable(inv.Email), nullable(inv.FirstName),
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
			st.accounts = append(st.accounts, []any{a.ID, nullable(a.Name), nullable(a.Number), nullable(a.Status), a.PauseReason})
		}
	}
	slices.Sort(st.replaced.users)
	st.replaced.users = slices.Compact(st.replaced.users)
	return st, nil
}

// createStaging makes the staging tables. They live as long as the pooled
// connection and are emptied at each commit (or by the rollback), which
// saves creating five tables per snapshot. Their keys are
// indexed so that the anti-joins of the removal statements probe them
// instead of scanning. s_scope holds the users whose roles this snapshot
// decides: the listed users GetUser read (detail_status 'ok'); the roles of
// users no current users row lists any more are SweepRoles' to remove, once
// every customer of a run is written. An unreadable user's
// staged row has only user_id, user_name and the detail columns.
const createStaging = `
CREATE TEMP TABLE IF NOT EXISTS s_users (
    user_id bigint PRIMARY KEY, home_customer_id bigint, user_name text, email text, first_name text,
    last_name text, job_title text, lcid text, lifecycle_status text, last_modified_time timestamptz,
    detail_status text NOT NULL, detail_code integer, detail_tracking_id text, detail_error text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS s_roles (
    user_id bigint NOT NULL, customer_id bigint NOT NULL, role_id integer NOT NULL,
    account_ids bigint[], linked_account_ids bigint[], customer_link_permission text,
    PRIMARY KEY (user_id, customer_id, role_id)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS s_invitations (
    invitation_id bigint PRIMARY KEY, email text, first_name text, last_name text, role_id integer,
    account_ids bigint[], lcid text, expiration_date timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS s_accounts (
    account_id bigint PRIMARY KEY, name text, number text, status text, pause_reason integer
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS s_scope (user_id bigint PRIMARY KEY) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS s_role_changes (
    user_id bigint NOT NULL, customer_id bigint NOT NULL, role_id integer NOT NULL, change text NOT NULL,
    PRIMARY KEY (user_id, customer_id, role_id)
) ON COMMIT DELETE ROWS;
-- Every statement below matches a small batch against large tables by key:
-- index lookups are right whatever the (often missing) statistics say.
SET LOCAL enable_seqscan = off;
SET LOCAL enable_mergejoin = off;
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_bitmapscan = off;
-- Keys are unique: a cache of inner lookups (Memoize) would never hit.
SET LOCAL enable_memoize = off;
SET LOCAL jit = off;`

var (
	userCols       = []string{"user_id", "home_customer_id", "user_name", "email", "first_name", "last_name", "job_title", "lcid", "lifecycle_status", "last_modified_time", "detail_status", "detail_code", "detail_tracking_id", "detail_error"}
	roleCols       = []string{"user_id", "customer_id", "role_id", "account_ids", "linked_account_ids", "customer_link_permission"}
	invitationCols = []string{"invitation_id", "email", "first_name", "last_name", "role_id", "account_ids", "lcid", "expiration_date"}
	accountCols    = []string{"account_id", "name", "number", "status", "pause_reason"}
)

type writer struct {
	tx    pgx.Tx
	st    *staged
	runID int64
	store *Store
	work  work

	analyzed bool // the staging tables have statistics
}

func (w *writer) run() any {
	if w.runID == 0 {
		return nil
	}
	return w.runID
}

func (w *writer) write(ctx context.Context, ch *Changes) error {
	tx, st := w.tx, w.st
	if _, err := tx.Exec(ctx, createStaging); err != nil {
		return fmt.Errorf("create staging tables: %w", err)
	}
	for _, c := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"s_users", userCols, st.users},
		{"s_roles", roleCols, st.roles},
		{"s_invitations", invitationCols, st.invitations},
		{"s_accounts", accountCols, st.accounts},
	} {
		if len(c.rows) == 0 {
			continue
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			return fmt.Errorf("copy into %s: %w", c.table, err)
		}
	}
	if err := w.hook("stage"); err != nil {
		return err
	}
	// One read finds what the snapshot changes; the write statements below
	// run only for what does change, so an unchanged snapshot costs this
	// read and no write statement at all.
	if err := w.survey(ctx); err != nil {
		return err
	}
	if err := w.checkGuard(); err != nil {
		return err
	}
	if err := w.hook("guard"); err != nil {
		return err
	}
	if st.accountsFetched && w.work.accounts {
		// A handful of rows, matched by key: no statistics needed.
		if err := w.accounts(ctx, ch); err != nil {
			return err
		}
	}
	if err := w.hook("accounts"); err != nil {
		return err
	}
	if err := w.users(ctx, ch); err != nil {
		return err
	}
	if err := w.hook("users"); err != nil {
		return err
	}
	if err := w.roles(ctx, ch); err != nil {
		return err
	}
	if err := w.hook("roles"); err != nil {
		return err
	}
	if err := w.invitations(ctx, ch); err != nil {
		return err
	}
	return w.hook("invitations")
}

func (w *writer) hook(step string) error {
	if h := w.store.testHook; h != nil {
		return h(step, w.tx)
	}
	return nil
}

// work says which write statements a snapshot needs, as found by survey.
type work struct {
	current, removing      int  // the customer's current users, and those the snapshot omits
	usersKnown             bool // the customer has users rows or users history
	usersUpsert            bool // a staged user is new, changed or reappearing
	rolesCurrent           int  // current roles of the listed users GetUser read
	rolesUpsert            bool // a staged role is new, changed or reappearing
	rolesHistoryOpen       bool // a staged role has an open history row (or rolesCurrent > 0: not looked for)
	rolesRemove            bool // a current role of a listed user GetUser read is not staged, in a customer the snapshot may remove roles of
	invitationsCurrent     int  // the customer's current invitations
	invitationsUpsert      bool
	invitationsHistoryOpen bool // as rolesHistoryOpen
	invitationsRemove      bool
	accounts               bool // accounts to add, change or remove
}

// userValues returns, for each of usersEntity.cols, the SQL expression of
// the value a users row gets from its staged row s over its stored version t
// (whose columns are NULL when there is none):
//
//   - a user GetUser read (s.detail_status 'ok') gets its staged values;
//   - an unreadable or not_found user keeps t's values, except user_name,
//     taken from the listing when it has one, and the detail columns;
//   - detail_tracking_id and detail_error describe the failure that put
//     the row in its current (detail_status, detail_code): a later failure
//     with the same status and code keeps them, so that a re-run that finds
//     the same fault (with a new TrackingId) rewrites nothing. They are
//     NULL when ok.
//
// The survey and the upsert compare and write these same expressions.
func userValues(s, t string) []string {
	out := make([]string, 0, len(userCols)-1)
	for _, c := range userCols[1:] {
		var e string
		switch c {
		case "user_name":
			e = "CASE WHEN {s}.detail_status = 'ok' THEN {s}.user_name ELSE coalesce({s}.user_name, {t}.user_name) END"
		case "detail_status", "detail_code":
			e = "{s}." + c
		case "detail_tracking_id", "detail_error":
			e = "CASE WHEN {s}.detail_status <> 'ok' AND ({t}.detail_status, {t}.detail_code) IS NOT DISTINCT FROM ({s}.detail_status, {s}.detail_code) THEN {t}." + c + " ELSE {s}." + c + " END"
		default:
			e = "CASE WHEN {s}.detail_status = 'ok' THEN {s}." + c + " ELSE {t}." + c + " END"
		}
		out = append(out, strings.NewReplacer("{s}", s, "{t}", t).Replace(e))
	}
	return out
}

// surveySQL compares the staging tables with the warehouse, read-only, in
// one pass per entity over the current rows in the snapshot's scope (the
// customer's users, invitations and accounts; the roles of the listed
// users GetUser read), probing the staging row of each by key. Per entity it
// counts the current rows (cur), those with a staged row (keyed) and those
// whose staged row has the same values (same; for users, the values
// userValues would write): the upsert has work unless same equals the
// number of staged rows, the removal unless keyed equals cur. For roles it
// counts instead the unstaged current rows the removal rule (ownedBy) lets
// this snapshot remove. "Same" is
// exactly what the upserts' IS DISTINCT FROM filters skip. When no listed
// user has a current role (or the customer no current invitation), it also
// looks for open history rows of the staged keys, which the plain inserts
// of a first load must not meet. LATERAL ...
// OFFSET 0 keeps the join order (scope rows outside, key probes inside)
// whatever the statistics of the staging tables say, so this statement
// needs no ANALYZE.
var surveySQL = `
SELECT u.total, u.cur, u.cur - u.keyed, u.same,
       u.total > 0 OR EXISTS (SELECT 1 FROM users_history h WHERE h.customer_id = $1),
       r.cur, r.removable, r.same, i.cur, i.keyed, i.same, a.cur, a.keyed, a.same,
       CASE WHEN r.cur = 0 THEN EXISTS (SELECT 1 FROM s_roles s WHERE EXISTS (
           SELECT 1 FROM user_roles_history h
           WHERE h.user_id = s.user_id AND h.customer_id = s.customer_id AND h.role_id = s.role_id AND h.valid_to IS NULL
           OFFSET 0)) ELSE true END,
       CASE WHEN i.cur = 0 THEN EXISTS (SELECT 1 FROM s_invitations s WHERE EXISTS (
           SELECT 1 FROM user_invitations_history h WHERE h.invitation_id = s.invitation_id AND h.valid_to IS NULL
           OFFSET 0)) ELSE true END
FROM (
    SELECT count(*) AS total, count(*) FILTER (WHERE t.removed_at IS NULL) AS cur,
           count(s.same) FILTER (WHERE t.removed_at IS NULL) AS keyed,
           count(*) FILTER (WHERE t.removed_at IS NULL AND s.same) AS same
    FROM users t
    LEFT JOIN LATERAL (
        SELECT (` + prefixed("t.", userCols[1:]) + `)
            IS NOT DISTINCT FROM (` + strings.Join(userValues("s", "t"), ", ") + `) AS same
        FROM s_users s WHERE s.user_id = t.user_id OFFSET 0
    ) s ON true
    WHERE t.customer_id = $1
) u, (
    SELECT count(*) AS cur, count(*) FILTER (WHERE s.same IS NULL AND ` + ownedBy("$3::bigint[]") + `) AS removable,
           count(*) FILTER (WHERE s.same) AS same
    FROM s_users sc
    CROSS JOIN LATERAL (
        SELECT x.user_id, x.customer_id, x.role_id, x.account_ids, x.linked_account_ids, x.customer_link_permission
        FROM user_roles x WHERE x.user_id = sc.user_id AND x.removed_at IS NULL OFFSET 0
    ) t
    LEFT JOIN LATERAL (
        SELECT (t.account_ids, t.linked_account_ids, t.customer_link_permission)
            IS NOT DISTINCT FROM (s.account_ids, s.linked_account_ids, s.customer_link_permission) AS same
        FROM s_roles s WHERE s.user_id = t.user_id AND s.customer_id = t.customer_id AND s.role_id = t.role_id OFFSET 0
    ) s ON true
    WHERE sc.detail_status = 'ok'
) r, (
    SELECT count(*) AS cur, count(s.same) AS keyed, count(*) FILTER (WHERE s.same) AS same
    FROM user_invitations t
    LEFT JOIN LATERAL (
        SELECT (t.email, t.first_name, t.last_name, t.role_id, t.account_ids, t.lcid, t.expiration_date)
            IS NOT DISTINCT FROM (s.email, s.first_name, s.last_name, s.role_id, s.account_ids, s.lcid, s.expiration_date) AS same
        FROM s_invitations s WHERE s.invitation_id = t.invitation_id OFFSET 0
    ) s ON true
    WHERE t.customer_id = $1 AND t.removed_at IS NULL
) i, (
    SELECT count(*) AS cur, count(s.same) AS keyed, count(*) FILTER (WHERE s.same) AS same
    FROM accounts t
    LEFT JOIN LATERAL (
        SELECT (t.name, t.number, t.status, t.pause_reason)
            IS NOT DISTINCT FROM (s.name, s.number, s.status, s.pause_reason) AS same
        FROM s_accounts s WHERE s.account_id = t.account_id OFFSET 0
    ) s ON true
    WHERE t.customer_id = $1 AND t.removed_at IS NULL AND $2::boolean
) a`

func (w *writer) survey(ctx context.Context) error {
	var usersTotal, usersSame, rolesCur, rolesRemovable, rolesSame, invCur, invKeyed, invSame, accCur, accKeyed, accSame int
	k := &w.work
	err := w.tx.QueryRow(ctx, surveySQL, w.st.customerID, w.st.accountsFetched, w.st.roleCustomers).Scan(&usersTotal, &k.current, &k.removing,
		&usersSame, &k.usersKnown, &rolesCur, &rolesRemovable, &rolesSame, &invCur, &invKeyed, &invSame, &accCur, &accKeyed, &accSame,
		&k.rolesHistoryOpen, &k.invitationsHistoryOpen)
	if err != nil {
		return fmt.Errorf("compare snapshot: %w", err)
	}
	st := w.st
	k.usersUpsert = usersSame < len(st.users)
	k.rolesCurrent = rolesCur
	k.rolesUpsert = rolesSame < len(st.roles)
	k.rolesRemove = rolesRemovable > 0
	k.invitationsCurrent = invCur
	k.invitationsUpsert = invSame < len(st.invitations)
	k.invitationsRemove = invKeyed < invCur
	k.accounts = st.accountsFetched && (accSame < len(st.accounts) || accKeyed < accCur)
	return nil
}

// analyze gathers statistics of the staging tables, once per transaction,
// before the first statement that joins them with the warehouse tables:
// temporary tables have none until analyzed, and without them the planner
// may misjudge those joins. The plain inserts of a first load need none.
func (w *writer) analyze(ctx context.Context) error {
	if w.analyzed {
		return nil
	}
	if _, err := w.tx.Exec(ctx, "ANALYZE s_users, s_roles, s_invitations, s_accounts"); err != nil {
		return fmt.Errorf("analyze staging tables: %w", err)
	}
	w.analyzed = true
	return nil
}

func (w *writer) checkGuard() error {
	current, removing := w.work.current, w.work.removing
	if current == 0 || removing == 0 || w.store.opts.AllowMassRemoval {
		return nil
	}
	if len(w.st.users) == 0 {
		return fmt.Errorf("%w: the user listing came back empty while %d users are current; rerun with --allow-mass-removal if they were all removed",
			ErrRemovalGuard, current)
	}
	frac := float64(removing) / float64(current)
	if frac > w.store.opts.RemovalGuard {
		return fmt.Errorf("%w: the snapshot would remove %d of %d current users (%.0f%%, more than the %.0f%% allowed); rerun with --allow-mass-removal if this is expected",
			ErrRemovalGuard, removing, current, frac*100, w.store.opts.RemovalGuard*100)
	}
	return nil
}

// countChanges reads rows of (change text, n bigint) into the counters.
func countChanges(rows pgx.Rows, added, changed, removed, reappeared *int) error {
	defer rows.Close()
	for rows.Next() {
		var kind string
		var n int
		if err := rows.Scan(&kind, &n); err != nil {
			return err
		}
		switch kind {
		case "added":
			*added += n
		case "changed":
			*changed += n
		case "removed":
			*removed += n
		case "reappeared":
			if reappeared != nil {
				*reappeared += n
			} else {
				*changed += n
			}
		}
	}
	return rows.Err()
}

func (w *writer) accounts(ctx context.Context, ch *Changes) error {
	rows, err := w.tx.Query(ctx, `
WITH cur AS (
    SELECT t.account_id, t.removed_at FROM accounts t JOIN s_accounts s USING (account_id)
), up AS (
    INSERT INTO accounts AS t (account_id, customer_id, name, number, status, pause_reason)
    SELECT s.account_id, $1, s.name, s.number, s.status, s.pause_reason FROM s_accounts s ORDER BY s.account_id
    ON CONFLICT (account_id) DO UPDATE SET customer_id = excluded.customer_id, name = excluded.name,
        number = excluded.number, status = excluded.status, pause_reason = excluded.pause_reason,
        updated_at = now(), removed_at = NULL
    WHERE (t.customer_id, t.name, t.number, t.status, t.pause_reason, t.removed_at)
        IS DISTINCT FROM (excluded.customer_id, excluded.name, excluded.number, excluded.status, excluded.pause_reason, NULL::timestamptz)
    RETURNING t.account_id, (t.xmax = 0) AS inserted
), rm AS (
    UPDATE accounts t SET removed_at = now(), updated_at = now()
    WHERE t.customer_id = $1 AND t.removed_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM s_accounts s WHERE s.account_id = t.account_id)
    RETURNING t.account_id
)
SELECT CASE WHEN up.inserted THEN 'added' ELSE 'changed' END, count(*) FROM up GROUP BY 1
UNION ALL
SELECT 'removed', count(*) FROM rm`, w.st.customerID)
	if err != nil {
		return fmt.Errorf("write accounts: %w", err)
	}
	if err := countChanges(rows, &ch.AccountsAdded, &ch.AccountsChanged, &ch.AccountsRemoved, nil); err != nil {
		return fmt.Errorf("write accounts: %w", err)
	}
	return nil
}

// entity describes one historized entity table for the generic statements.
type entity struct {
	table, history string
	key            []string // natural key columns
	cols           []string // other columns, as in the staging table
}

var (
	usersEntity = entity{"users", "users_history", []string{"customer_id", "user_id"}, userCols[1:]}
	rolesEntity = entity{"user_roles", "user_roles_history", []string{"user_id", "customer_id", "role_id"},
		[]string{"account_ids", "linked_account_ids", "customer_link_permission"}}
	invitationsEntity = entity{"user_invitations", "user_invitations_history", []string{"invitation_id"},
		[]string{"customer_id", "email", "first_name", "last_name", "role_id", "account_ids", "lcid", "expiration_date"}}
)

// all returns the key and the other columns.
func (e entity) all() []string { return append(slices.Clone(e.key), e.cols...) }

func prefixed(p string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = p + c
	}
	return strings.Join(out, ", ")
}

func joinOn(a, b string, key []string) string {
	out := make([]string, len(key))
	for i, k := range key {
		out[i] = a + "." + k + " = " + b + "." + k
	}
	return strings.Join(out, " AND ")
}

// historyCTEs returns the CTEs "closed" and "hist" that close the current
// history rows of the entities returned by CTE src and append new versions
// with the change given by the SQL expression change (which may use src and
// cur). valid_from stays strictly increasing per entity even when a
// transaction that started earlier commits later.
func (e entity) historyCTEs(src, change, curJoin string) string {
	all := append(slices.Clone(e.key), e.cols...)
	return `, closed AS (
    UPDATE ` + e.history + ` h SET valid_to = greatest(now(), h.valid_from + interval '1 microsecond')
    FROM ` + src + ` WHERE ` + joinOn("h", src, e.key) + ` AND h.valid_to IS NULL
    RETURNING ` + prefixed("h.", e.key) + `, h.valid_to
), hist AS (
    INSERT INTO ` + e.history + ` (` + strings.Join(all, ", ") + `, valid_from, change, run_id)
    SELECT ` + prefixed(src+".", all) + `, coalesce(closed.valid_to, now()), ` + change + `, $2::bigint
    FROM ` + src + ` LEFT JOIN closed ON ` + joinOn("closed", src, e.key) + curJoin + `
    ORDER BY ` + prefixed(src+".", e.key) + `
    RETURNING change
)`
}

// upsert merges the staging rows (SELECT expression srcSelect, which yields
// the key and cols) into the entity table, writing only changed rows, and
// appends history. cur selects the existing rows matching the staging keys.
func (e entity) upsert(srcSelect, cur string) string {
	all := append(slices.Clone(e.key), e.cols...)
	set := make([]string, 0, len(e.cols))
	for _, c := range e.cols {
		set = append(set, c+" = excluded."+c)
	}
	return `
WITH cur AS (` + cur + `
), up AS (
    INSERT INTO ` + e.table + ` AS t (` + strings.Join(all, ", ") + `)
    ` + srcSelect + `
    ON CONFLICT (` + strings.Join(e.key, ", ") + `) DO UPDATE SET ` + strings.Join(set, ", ") + `,
        updated_at = now(), removed_at = NULL
    WHERE (` + prefixed("t.", e.cols) + `, t.removed_at) IS DISTINCT FROM (` + prefixed("excluded.", e.cols) + `, NULL::timestamptz)
    RETURNING ` + prefixed("t.", all) + `, (t.xmax = 0) AS inserted
)` + e.historyCTEs("up", "CASE WHEN up.inserted THEN 'added' WHEN cur.removed_at IS NOT NULL THEN 'reappeared' ELSE 'changed' END",
		"\n    LEFT JOIN cur ON "+joinOn("cur", "up", e.key)) + `
SELECT change, count(*) FROM hist GROUP BY change`
}

// The removal rule, written once: a writer removes a row only when the row's
// customer (its customer_id: the listing customer of a users row, the
// invitation's customer, the role's customer) is one whose rows of that kind
// the writer saw completely. owners is the SQL bigint[] of those customers:
//
//   - users and invitations: the snapshot's own customer, whose complete
//     listing omitted them;
//   - roles of the listed users GetUser read: Snapshot.RoleCustomers, the
//     customers the run's credential can see (GetUser returns a user's
//     complete role set in those, and only in those); NULL means any;
//   - SweepRoles (users no current users row lists): the customers the
//     credential can see that synced in the run.
//
// So a row is only ever removed by a writer that could have seen it, and
// several credentials writing one schema never undo each other. Every
// removal statement is built by entity.remove, which applies it; the
// survey counts removable roles with it too.
func ownedBy(owners string) string {
	return "(" + owners + " IS NULL OR t.customer_id = ANY(" + owners + "))"
}

// remove soft-removes the current rows matched by where (on alias t) whose
// customer is in owners (ownedBy) and appends 'removed' history rows
// ($2 is the run id); it returns the removed rows' keys.
func (e entity) remove(owners, where, from string) string {
	all := append(slices.Clone(e.key), e.cols...)
	if from != "" {
		from = "\n    FROM " + from
	}
	return `
WITH rm AS (
    UPDATE ` + e.table + ` t SET removed_at = now(), updated_at = now()` + from + `
    WHERE t.removed_at IS NULL AND ` + ownedBy(owners) + ` AND ` + where + `
    RETURNING ` + prefixed("t.", all) + `
)` + e.historyCTEs("rm", "'removed'", "") + `
SELECT ` + prefixed("rm.", e.key) + ` FROM rm`
}

var (
	// The staged values are merged with the stored row first (userValues),
	// so an unreadable user keeps its stored columns.
	usersUpsert = usersEntity.upsert(`SELECT $1::bigint, s.user_id, `+strings.Join(userValues("s", "x"), ", ")+`
    FROM s_users s LEFT JOIN users x ON x.customer_id = $1 AND x.user_id = s.user_id ORDER BY s.user_id`,
		`SELECT t.customer_id, t.user_id, t.removed_at FROM users t WHERE t.customer_id = $1`)
	// usersInsertNew adds every staged user and its 'added' history row,
	// for a customer that has neither users rows nor users history.
	usersInsertNew = `
WITH ins AS (
    INSERT INTO users (customer_id, ` + strings.Join(userCols, ", ") + `)
    SELECT $1::bigint, ` + prefixed("s.", userCols) + ` FROM s_users s ORDER BY s.user_id
    RETURNING customer_id, ` + strings.Join(userCols, ", ") + `
)
INSERT INTO users_history (customer_id, ` + strings.Join(userCols, ", ") + `, valid_from, change, run_id)
SELECT ins.customer_id, ` + prefixed("ins.", userCols) + `, now(), 'added', $2::bigint FROM ins ORDER BY ins.user_id`
	usersRemove = usersEntity.remove("ARRAY[$1::bigint]", `NOT EXISTS (SELECT 1 FROM s_users s WHERE s.user_id = t.user_id)`, "")

	rolesScope = `INSERT INTO s_scope (user_id) SELECT user_id FROM s_users WHERE detail_status = 'ok'`
	rolesLock  = `
SELECT 1 FROM s_scope sc JOIN user_roles t ON t.user_id = sc.user_id
ORDER BY t.user_id, t.customer_id, t.role_id
FOR UPDATE OF t`
	// Roles are shared between customers, so two transactions may write the
	// same role at once. The upsert may wait for a concurrent insert of the
	// same key; a statement's snapshot predates that wait, so the history is
	// written by a second statement, whose snapshot sees the other
	// transaction's history rows. (Users and invitations are serialized by
	// the customer lock and need no such care.)
	rolesUpsert = `
WITH cur AS (
    SELECT t.user_id, t.customer_id, t.role_id, t.removed_at FROM user_roles t JOIN s_roles s USING (user_id, customer_id, role_id)
), up AS (
    INSERT INTO user_roles AS t (` + strings.Join(roleCols, ", ") + `)
    SELECT ` + prefixed("s.", roleCols) + ` FROM s_roles s ORDER BY s.user_id, s.customer_id, s.role_id
    ON CONFLICT (user_id, customer_id, role_id) DO UPDATE SET account_ids = excluded.account_ids,
        linked_account_ids = excluded.linked_account_ids, customer_link_permission = excluded.customer_link_permission,
        updated_at = now(), removed_at = NULL
    WHERE (t.account_ids, t.linked_account_ids, t.customer_link_permission, t.removed_at)
        IS DISTINCT FROM (excluded.account_ids, excluded.linked_account_ids, excluded.customer_link_permission, NULL::timestamptz)
    RETURNING t.user_id, t.customer_id, t.role_id, (t.xmax = 0) AS inserted
)
INSERT INTO s_role_changes (user_id, customer_id, role_id, change)
SELECT up.user_id, up.customer_id, up.role_id,
       CASE WHEN up.inserted THEN 'added' WHEN cur.removed_at IS NOT NULL THEN 'reappeared' ELSE 'changed' END
FROM up LEFT JOIN cur USING (user_id, customer_id, role_id)`
	rolesHistory = `
WITH closed AS (
    UPDATE user_roles_history h SET valid_to = greatest(now(), h.valid_from + interval '1 microsecond')
    FROM s_role_changes c
    WHERE h.user_id = c.user_id AND h.customer_id = c.customer_id AND h.role_id = c.role_id AND h.valid_to IS NULL
    RETURNING h.user_id, h.customer_id, h.role_id, h.valid_to
), hist AS (
    INSERT INTO user_roles_history (` + strings.Join(roleCols, ", ") + `, valid_from, change, run_id)
    SELECT ` + prefixed("t.", roleCols) + `, coalesce(closed.valid_to, now()), c.change, $1::bigint
    FROM s_role_changes c
    JOIN user_roles t ON t.user_id = c.user_id AND t.customer_id = c.customer_id AND t.role_id = c.role_id
    LEFT JOIN closed ON closed.user_id = c.user_id AND closed.customer_id = c.customer_id AND closed.role_id = c.role_id
    ORDER BY c.user_id, c.customer_id, c.role_id
    RETURNING change
)
SELECT change, count(*) FROM hist GROUP BY change`

	// rolesInsertNew inserts the staged roles whose keys have no row and
	// appends their 'added' history. Survey found no open history row for
	// the staged keys, and a key that gains a row meanwhile (roles are
	// shared between customers) is skipped, not waited into an update: the
	// caller then runs the general statements for the rest.
	rolesInsertNew = `
WITH ins AS (
    INSERT INTO user_roles AS t (` + strings.Join(roleCols, ", ") + `)
    SELECT ` + prefixed("s.", roleCols) + ` FROM s_roles s ORDER BY s.user_id, s.customer_id, s.role_id
    ON CONFLICT (user_id, customer_id, role_id) DO NOTHING
    RETURNING ` + prefixed("t.", roleCols) + `
)
INSERT INTO user_roles_history (` + strings.Join(roleCols, ", ") + `, valid_from, change, run_id)
SELECT ` + prefixed("ins.", roleCols) + `, now(), 'added', $1::bigint FROM ins
ORDER BY ins.user_id, ins.customer_id, ins.role_id`

	// Roles are removed for the listed users GetUser read (their complete
	// role set visible to the credential is in the snapshot), in the
	// customers of Snapshot.RoleCustomers ($3). The roles of users no
	// current users row lists any more are SweepRoles': concurrent
	// snapshot transactions see each other's users rows half written.
	// The candidates are found from s_scope through the user_roles key
	// (LATERAL ... OFFSET 0 keeps that join order whatever the statistics).
	rolesRemove = rolesEntity.remove("$3::bigint[]", `$1::bigint IS NOT NULL AND t.user_id = c.user_id AND t.customer_id = c.customer_id AND t.role_id = c.role_id`, `(
        SELECT r.user_id, r.customer_id, r.role_id
        FROM s_scope sc
        CROSS JOIN LATERAL (
            SELECT x.user_id, x.customer_id, x.role_id FROM user_roles x
            WHERE x.user_id = sc.user_id AND x.removed_at IS NULL OFFSET 0
        ) r
        WHERE NOT EXISTS (SELECT 1 FROM s_roles s WHERE s.user_id = r.user_id AND s.customer_id = r.customer_id AND s.role_id = r.role_id)
        OFFSET 0
    ) c`)

	invitationsUpsert = invitationsEntity.upsert(`SELECT s.invitation_id, $1::bigint, s.email, s.first_name, s.last_name, s.role_id, s.account_ids, s.lcid, s.expiration_date
    FROM s_invitations s ORDER BY s.invitation_id`,
		`SELECT t.invitation_id, t.removed_at FROM user_invitations t JOIN s_invitations s USING (invitation_id)`)
	// invitationsInsertNew is rolesInsertNew for invitations.
	invitationsInsertNew = `
WITH ins AS (
    INSERT INTO user_invitations AS t (` + strings.Join(invitationsEntity.all(), ", ") + `)
    SELECT s.invitation_id, $1::bigint, ` + prefixed("s.", invitationCols[1:]) + ` FROM s_invitations s ORDER BY s.invitation_id
    ON CONFLICT (invitation_id) DO NOTHING
    RETURNING ` + prefixed("t.", invitationsEntity.all()) + `
)
INSERT INTO user_invitations_history (` + strings.Join(invitationsEntity.all(), ", ") + `, valid_from, change, run_id)
SELECT ` + prefixed("ins.", invitationsEntity.all()) + `, now(), 'added', $2::bigint FROM ins
ORDER BY ins.invitation_id`
	invitationsRemove = invitationsEntity.remove("ARRAY[$1::bigint]", `NOT EXISTS (SELECT 1 FROM s_invitations s WHERE s.invitation_id = t.invitation_id)`, "")
)

func (w *writer) users(ctx context.Context, ch *Changes) error {
	switch {
	case !w.work.usersUpsert:
	case !w.work.usersKnown:
		// The customer has no users rows and no users history: every
		// staged user is added, and the customer lock keeps other writers
		// of this customer's rows out, so plain inserts do.
		tag, err := w.tx.Exec(ctx, usersInsertNew, w.st.customerID, w.run())
		if err != nil {
			return fmt.Errorf("write users: %w", err)
		}
		ch.UsersAdded += int(tag.RowsAffected())
	default:
		if err := w.analyze(ctx); err != nil {
			return err
		}
		rows, err := w.tx.Query(ctx, usersUpsert, w.st.customerID, w.run())
		if err != nil {
			return fmt.Errorf("write users: %w", err)
		}
		if err := countChanges(rows, &ch.UsersAdded, &ch.UsersChanged, &ch.UsersRemoved, &ch.UsersReappeared); err != nil {
			return fmt.Errorf("write users: %w", err)
		}
	}
	if w.work.removing == 0 {
		return nil
	}
	if err := w.analyze(ctx); err != nil {
		return err
	}
	tag, err := w.tx.Exec(ctx, usersRemove, w.st.customerID, w.run())
	if err != nil {
		return fmt.Errorf("remove users: %w", err)
	}
	ch.UsersRemoved += int(tag.RowsAffected())
	return nil
}

func (w *writer) roles(ctx context.Context, ch *Changes) error {
	if len(w.st.userIDs) == 0 {
		return nil
	}
	upsert, remove := w.work.rolesUpsert, w.work.rolesRemove
	if !upsert && !remove {
		return nil
	}
	if upsert && w.work.rolesCurrent == 0 && !w.work.rolesHistoryOpen && !remove {
		// No listed user has a current role (a first load): insert the
		// staged roles that no row has, with their 'added' history. Keys
		// another writer holds or inserts meanwhile are skipped here and
		// left to the general statements below.
		tag, err := w.tx.Exec(ctx, rolesInsertNew, w.run())
		if err != nil {
			return fmt.Errorf("write roles: %w", err)
		}
		added := int(tag.RowsAffected())
		ch.RolesAdded += added
		if added == len(w.st.roles) {
			return nil
		}
	}
	if err := w.analyze(ctx); err != nil {
		return err
	}
	if _, err := w.tx.Exec(ctx, rolesScope); err != nil {
		return fmt.Errorf("stage role scope: %w", err)
	}
	if _, err := w.tx.Exec(ctx, "ANALYZE s_scope"); err != nil {
		return fmt.Errorf("analyze role scope: %w", err)
	}
	// Lock the existing roles of these users in key order, so concurrent
	// customers sharing users cannot deadlock.
	if _, err := w.tx.Exec(ctx, rolesLock); err != nil {
		return fmt.Errorf("lock roles: %w", err)
	}
	if upsert {
		if _, err := w.tx.Exec(ctx, rolesUpsert); err != nil {
			return fmt.Errorf("write roles: %w", err)
		}
		rows, err := w.tx.Query(ctx, rolesHistory, w.run())
		if err != nil {
			return fmt.Errorf("write role history: %w", err)
		}
		if err := countChanges(rows, &ch.RolesAdded, &ch.RolesChanged, &ch.RolesRemoved, &ch.RolesReappeared); err != nil {
			return fmt.Errorf("write roles: %w", err)
		}
	}
	if !remove {
		return nil
	}
	tag, err := w.tx.Exec(ctx, rolesRemove, w.st.customerID, w.run(), w.st.roleCustomers)
	if err != nil {
		return fmt.Errorf("remove roles: %w", err)
	}
	ch.RolesRemoved += int(tag.RowsAffected())
	return nil
}

func (w *writer) invitations(ctx context.Context, ch *Changes) error {
	upsert := w.work.invitationsUpsert
	if upsert && w.work.invitationsCurrent == 0 && !w.work.invitationsHistoryOpen {
		// The customer has no current invitations (a first load): insert
		// the staged ones that no row has, with their 'added' history; the
		// general upsert below handles the rest, if any.
		tag, err := w.tx.Exec(ctx, invitationsInsertNew, w.st.customerID, w.run())
		if err != nil {
			return fmt.Errorf("write invitations: %w", err)
		}
		added := int(tag.RowsAffected())
		ch.InvitationsAdded += added
		upsert = added < len(w.st.invitations)
	}
	if upsert || w.work.invitationsRemove {
		if err := w.analyze(ctx); err != nil {
			return err
		}
	}
	if upsert {
		rows, err := w.tx.Query(ctx, invitationsUpsert, w.st.customerID, w.run())
		if err != nil {
			return fmt.Errorf("write invitations: %w", err)
		}
		if err := countChanges(rows, &ch.InvitationsAdded, &ch.InvitationsChanged, &ch.InvitationsRemoved, &ch.InvitationsReappeared); err != nil {
			return fmt.Errorf("write invitations: %w", err)
		}
	}
	if !w.work.invitationsRemove {
		return nil
	}
	tag, err := w.tx.Exec(ctx, invitationsRemove, w.st.customerID, w.run())
	if err != nil {
		return fmt.Errorf("remove invitations: %w", err)
	}
	ch.InvitationsRemoved += int(tag.RowsAffected())
	return nil
}

// finish records the customer's success: freshness in customers and, when
// the write belongs to a run, a customer_syncs row with the counts.
func (w *writer) finish(ctx context.Context, ch Changes, info SyncInfo) error {
	st := w.st
	if _, err := w.tx.Exec(ctx, `
INSERT INTO customers (customer_id, name, last_success_at, last_attempt_at, last_error)
VALUES ($1, NULLIF($2, ''), now(), now(), NULL)
ON CONFLICT (customer_id) DO UPDATE SET name = coalesce(excluded.name, customers.name),
    last_success_at = excluded.last_success_at, last_attempt_at = excluded.last_attempt_at, last_error = NULL`,
		st.customerID, st.customerName); err != nil {
		return fmt.Errorf("update customer: %w", err)
	}
	if w.runID == 0 {
		return nil
	}
	var accounts any
	if st.accountsFetched {
		accounts = len(st.accounts)
	}
	_, err := w.tx.Exec(ctx, `
INSERT INTO customer_syncs (run_id, customer_id, started_at, finished_at, status, users_seen, roles_seen,
    invitations_seen, accounts_seen, api_calls, error,
    users_added, users_changed, users_removed, users_reappeared,
    roles_added, roles_changed, roles_removed, roles_reappeared,
    invitations_added, invitations_changed, invitations_removed, invitations_reappeared,
    accounts_added, accounts_changed, accounts_removed, users_unreadable)
VALUES ($1, $2, $3, clock_timestamp(), 'succeeded', $4, $5, $6, $7, $8, NULL,
    $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)
ON CONFLICT (run_id, customer_id) DO UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at,
    status = excluded.status, users_seen = excluded.users_seen, roles_seen = excluded.roles_seen,
    invitations_seen = excluded.invitations_seen, accounts_seen = excluded.accounts_seen,
    api_calls = excluded.api_calls, error = NULL,
    users_added = excluded.users_added, users_changed = excluded.users_changed,
    users_removed = excluded.users_removed, users_reappeared = excluded.users_reappeared,
    roles_added = excluded.roles_added, roles_changed = excluded.roles_changed,
    roles_removed = excluded.roles_removed, roles_reappeared = excluded.roles_reappeared,
    invitations_added = excluded.invitations_added, invitations_changed = excluded.invitations_changed,
    invitations_removed = excluded.invitations_removed, invitations_reappeared = excluded.invitations_reappeared,
    accounts_added = excluded.accounts_added, accounts_changed = excluded.accounts_changed,
    accounts_removed = excluded.accounts_removed, users_unreadable = excluded.users_unreadable`,
		w.runID, st.customerID, startedAt(info), len(st.users), len(st.roles), len(st.invitations), accounts, info.APICalls,
		ch.UsersAdded, ch.UsersChanged, ch.UsersRemoved, ch.UsersReappeared,
		ch.RolesAdded, ch.RolesChanged, ch.RolesRemoved, ch.RolesReappeared,
		ch.InvitationsAdded, ch.InvitationsChanged, ch.InvitationsRemoved, ch.InvitationsReappeared,
		ch.AccountsAdded, ch.AccountsChanged, ch.AccountsRemoved, cmp.Or(info.UsersUnreadable, st.unreadable))
	if err != nil {
		return fmt.Errorf("record customer sync: %w", err)
	}
	return nil
}
