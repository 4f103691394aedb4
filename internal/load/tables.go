package load

import (
	"bytes"
	"cmp"
	"embed"
	"slices"
	"strings"
	"text/template"
)

// table describes one entity table of the warehouse: the one place its
// columns are listed. The statements that write it are rendered from this
// description and the templates in sql/ once, at init.
//
// Every entity table has removed_at, first_seen_at and updated_at besides
// these columns; its history table (when it has one) has the key, the
// columns, valid_from, valid_to, change and run_id. The staged rows reach
// the statements as one JSON parameter read as the entity table's row type
// (Staged), so column types are the schema's. TestTablesMatchSchema checks
// these lists against the migrated schema.
type table struct {
	Name    string   // entity table
	History string   // history table; "" when none (accounts)
	Key     []string // natural key
	Cols    []string // the other columns a snapshot writes, compared by IS DISTINCT FROM
	// Owner is the column the removal rule (ownedBy) reads: the row's
	// customer; "" for a table whose removal scope is decided otherwise
	// (client_links: the searches' coverage; directory_people: a load sees
	// the whole directory).
	Owner string
	// Run is the history column that records what wrote a version
	// (@run_id); "" means run_id (sync_runs), see RunColumn.
	Run string
	// Deferred: the history is written by a separate statement (see
	// sql/history.sql and rolesTable), from the rows the upsert and the
	// removal returned (changeSet).
	Deferred bool
	// values returns the SQL expressions of the values the upsert writes
	// for Cols, from staged row s over stored row x (NULLs when none);
	// nil: the staged values.
	values func(cols []string, s, x string) []string
	// Merge: the upsert's ON CONFLICT DO UPDATE computes the values again
	// from the staged row (excluded) over the row version it locked (t),
	// not over the statement snapshot's (x). A table whose values keep
	// what the stored row knew (client_links: client_customer_id,
	// searched_from_customer_id) and whose rows another customer's
	// snapshot writes concurrently needs it: when both insert a new key at
	// once, the one that waits saw no stored row, and would overwrite what
	// the other just wrote (the agency's side blanking the client customer
	// the client's side knew).
	Merge bool
	// Stored, when not "", is the query of the stored rows the staged keys
	// can find, read by index ranges or probes: the upsert reads them first
	// and joins them with the staged rows (by a hash: neither side has
	// statistics to plan probes by), instead of probing each staged key.
	// Users: the customer's rows (the key's first column: one range; on a
	// customer's first write it finds nothing at once).
	Stored string
	// RemoveStored: the upsert also removes the current rows of Stored
	// that are not staged (roles: Stored is every role of the listed users
	// GetUser read, whose complete role set the snapshot has), so one
	// reading of them serves both.
	RemoveStored bool
	// Historized, when not "", is a condition inside the upsert that is
	// false on a customer's first write (no history the snapshot's keys
	// could find): the upsert then skips its probes of the open history
	// intervals, which would find nothing. One statement either way.
	Historized string
	// FreshBy, when not "", is the table's first key column (a bigint),
	// by whose values the writer finds the snapshot's rows that are new
	// keys with no history at all (sql/fresh.sql: no entity or history
	// row starts with that value) and COPYs them straight into the table,
	// with their history from sql/direct.sql, instead of staging them and
	// upserting: on a first write, the bulk of the rows. Only for a table
	// whose values expressions give, with no stored row, the staged values
	// (userValues does), and whose rows a concurrent writer can only
	// collide with by key (a unique violation, after which the write is
	// retried without the direct path; see freshConflictError).
	//   - users: the customer (the customer's lock is held: all or none);
	//   - roles: the user (the listed users GetUser read; a user listed by
	//     several customers may be written by another at the same time);
	//   - invitations, accounts: the key itself (an id another customer's
	//     snapshot stored is not new: it goes by the upsert).
	FreshBy string
	// FreshAfter, when set, is a table with a direct path listed before
	// this one: this table's values are looked up only when that table's
	// were found new (roles: on the customer's first write, when its users
	// are new; on a re-run, 2,000 probes that find stored users are not
	// worth the few new users' roles).
	FreshAfter *table
	// scopeWhere (on alias t, the entity row) selects the current rows a
	// snapshot decides, of which those not staged are removed (with
	// ownedBy); a table that RemoveStored has none.
	scopeWhere string
	// removeScan, when not "", gives (as t) the rows the removal removes,
	// already set apart from the listed ones by the read-back (users:
	// @dropped; invitations, accounts: @gone), re-checked by scopeWhere.
	removeScan string

	upsert, remove, direct string // rendered statements
}

var (
	usersTable = &table{Name: "users", History: "users_history", Key: []string{"customer_id", "user_id"},
		Cols: []string{"home_customer_id", "user_name", "email", "first_name", "last_name", "job_title", "lcid",
			"lifecycle_status", "last_modified_time", "detail_status", "detail_code", "detail_tracking_id", "detail_error"},
		Owner: "customer_id", values: userValues,
		// The read-back (readBack) already found the current users the
		// snapshot does not list: @dropped, which the removal probes.
		removeScan: "unnest(@dropped::bigint[]) AS d(user_id), " + lateral("users", "t.customer_id = @customer_id AND t.user_id = d.user_id"),
		// The staged users' stored rows (the read-back sends only those
		// that may change): one index probe each, in the key's order.
		Stored: "SELECT * FROM users x WHERE x.customer_id = @customer_id AND x.user_id = ANY(@staged_users::bigint[]) ORDER BY x.customer_id, x.user_id",
		// Ordered by the key's next column, so that it is read from the
		// key's index whatever the statistics say (an EXISTS is planned,
		// once users_history is analyzed, as a scan that expects to meet
		// the customer's rows early, and reads the whole table when they
		// are at its end).
		Historized: "(SELECT true FROM users_history h WHERE h.customer_id = @customer_id ORDER BY h.user_id LIMIT 1)",
		FreshBy:    "customer_id"}
	// Roles are removed for the listed users GetUser read (their complete
	// role set visible to the credential is in the snapshot), in
	// Snapshot.RoleCustomers (@owners). The roles of users no current users
	// row lists any more are SweepRoles'.
	//
	// Roles are shared between customers written concurrently, so two
	// transactions may write the same role at once; an upsert that waits
	// for a concurrent insert or update of a key goes on with the other
	// transaction's row version, but its statement snapshot predates that
	// wait and cannot see the other transaction's history row. Closing open
	// history intervals in the same statement would then leave two open.
	// So role history is written by a second statement (Deferred), whose
	// snapshot is taken after the rows it historizes are locked by this
	// transaction, hence sees every earlier writer's history committed.
	// Users (customer lock) and invitations and accounts (one customer's
	// rows) have no such race and write their history in the same statement.
	rolesTable = &table{Name: "user_roles", History: "user_roles_history", Key: []string{"user_id", "customer_id", "role_id"},
		Cols: []string{"account_ids", "linked_account_ids", "customer_link_permission"}, Owner: "customer_id", Deferred: true,
		// The listed users GetUser read come as an array (@readable), each
		// probing the key's prefix (see lateral): their stored roles, which
		// the upsert compares with the staged ones and removes when not
		// staged (in Snapshot.RoleCustomers, @owners).
		Stored:       "SELECT * FROM user_roles t WHERE " + ranges("user_roles", "user_id", "@readable") + " ORDER BY t.user_id, t.customer_id, t.role_id",
		RemoveStored: true, FreshBy: "user_id", FreshAfter: usersTable}
	invitationsTable = &table{Name: "user_invitations", History: "user_invitations_history", Key: []string{"invitation_id"},
		Cols:  []string{"customer_id", "email", "first_name", "last_name", "role_id", "account_ids", "lcid", "expiration_date"},
		Owner: "customer_id", scopeWhere: "t.customer_id = @customer_id",
		removeScan: "unnest(@gone::bigint[]) AS d(invitation_id), " + lateral("user_invitations", "t.invitation_id = d.invitation_id"),
		FreshBy:    "invitation_id", FreshAfter: usersTable}
	accountsTable = &table{Name: "accounts", Key: []string{"account_id"},
		Cols:  []string{"customer_id", "name", "number", "status", "pause_reason"},
		Owner: "customer_id", scopeWhere: "t.customer_id = @customer_id",
		removeScan: "unnest(@gone::bigint[]) AS d(account_id), " + lateral("accounts", "t.account_id = d.account_id"),
		FreshBy:    "account_id", FreshAfter: usersTable}

	// tables in the order a snapshot writes them.
	tables = []*table{accountsTable, usersTable, rolesTable, invitationsTable, linksTable}
)

// RunColumn is the history column that records what wrote a version.
func (t *table) RunColumn() string {
	if t.Run == "" {
		return "run_id"
	}
	return t.Run
}

// directTables are the tables with a direct path (FreshBy), in write order
// except that a table comes after its FreshAfter (sql/fresh.sql reads that
// table's result).
var directTables = func() []*table {
	var first, after []*table
	for _, t := range tables {
		if t.FreshBy == "" {
			continue
		}
		if t.FreshBy != t.Key[0] {
			panic("load: " + t.Name + ".FreshBy must be its first key column")
		}
		if t.FreshAfter != nil {
			if t.FreshAfter.FreshAfter != nil {
				panic("load: " + t.Name + ".FreshAfter must have no FreshAfter of its own")
			}
			after = append(after, t)
		} else {
			first = append(first, t)
		}
	}
	return append(first, after...)
}()

// KeyRest is the key after its first column.
func (t *table) KeyRest() []string { return t.Key[1:] }

// Staged is the FROM item of the staged rows (alias it): the JSON array
// of the named argument rows_<table> (rowsJSON) read as rows of the entity
// table's type, its other columns NULL. Rows passed as a parameter, not
// COPYed into a temporary staging table: a temporary table is catalog work
// in each new session (5–9 ms a table on a loaded machine, and a
// connection's first write created up to five), a size check and a DELETE
// in every write that staged rows, and a COPY round trip, while a write
// stages only the rows the read-back found changed (readBack: a handful on
// most runs). The planner takes the set for 100 rows whatever its size, so
// the writer bounds what one statement takes (maxStagedRows).
func (t *table) Staged() string {
	return "json_populate_recordset(NULL::" + t.Name + ", @" + t.RowsArg() + "::json)"
}

// RowsArg is the name of the argument holding the staged rows (rowsJSON).
func (t *table) RowsArg() string { return "rows_" + t.Name }

// All is the key and the columns: the staged values of a row.
func (t *table) All() []string { return append(slices.Clone(t.Key), t.Cols...) }

// Exprs are the SQL expressions of the values the upsert writes for Cols
// (alias s: staged row, x: stored row).
func (t *table) Exprs() []string {
	if t.values != nil {
		return t.values(t.Cols, "s", "x")
	}
	return prefix("s.", t.Cols)
}

// Conflict are the SQL expressions of the values the upsert's ON CONFLICT
// DO UPDATE writes for Cols (see Merge).
func (t *table) Conflict() []string {
	if t.Merge {
		return t.values(t.Cols, "excluded", "t")
	}
	return prefix("excluded.", t.Cols)
}

// Values are Exprs, each named as its column.
func (t *table) Values() []string {
	v := t.Exprs()
	for i := range v {
		v[i] += " AS " + t.Cols[i]
	}
	return v
}

// userValues returns, for each of cols (usersTable.Cols), the SQL expression of
// the value a users row gets from its staged row s over its stored version x
// (whose columns are NULL when there is none):
//
//   - a user GetUser read (s.detail_status 'ok') gets its staged values;
//   - an unreadable or not_found user keeps x's values, except user_name,
//     taken from the listing when it has one, and the detail columns;
//   - detail_tracking_id and detail_error describe the failure that put
//     the row in its current (detail_status, detail_code): a later failure
//     with the same status and code keeps them, so that a re-run that finds
//     the same fault (with a new TrackingId) rewrites nothing. They are
//     NULL when ok.
func userValues(cols []string, s, x string) []string {
	out := make([]string, 0, len(cols))
	for _, c := range cols {
		var e string
		switch c {
		case "user_name":
			e = "CASE WHEN {s}.detail_status = 'ok' THEN {s}.user_name ELSE coalesce({s}.user_name, {x}.user_name) END"
		case "detail_status", "detail_code":
			e = "{s}." + c
		case "detail_tracking_id", "detail_error":
			e = "CASE WHEN {s}.detail_status <> 'ok' AND ({x}.detail_status, {x}.detail_code) IS NOT DISTINCT FROM ({s}.detail_status, {s}.detail_code) THEN {x}." + c + " ELSE {s}." + c + " END"
		default:
			e = "CASE WHEN {s}.detail_status = 'ok' THEN {s}." + c + " ELSE {x}." + c + " END"
		}
		out = append(out, strings.NewReplacer("{s}", s, "{x}", x).Replace(e))
	}
	return out
}

// lateral returns the FROM item t: the rows of table that match cond (on
// alias t and the FROM items before), probed for each row of those items. A
// LATERAL subquery that is not flattened (OFFSET 0) is run once per outer
// row, so cond on a key (prefix) is an index probe whatever the statistics
// of table say; a join of the same would be planned, when the table has no
// statistics yet (before autovacuum's first ANALYZE), with the default
// selectivity of a key prefix (0.5% of the table per probe) and so as a
// scan of the whole table: a cost per customer that grows with the
// warehouse.
func lateral(table, cond string) string {
	return "LATERAL (SELECT * FROM " + table + " t WHERE " + cond + " OFFSET 0) t"
}

// ranges is the condition (on alias t of table) that col, the first
// column of the table's key, is one of the values of array param: with
// the query ordered by the key, one index scan that descends once per
// value, whatever the statistics of the table say (ordered by the key,
// the index is cheaper than a scan of the table and a sort even when
// the planner, without statistics, expects most of the table). A LATERAL
// probe per value (see lateral) is planned as a bitmap scan per value,
// which costs 10–30 µs each beyond its reads (2,000 users: 20–60 ms
// instead of 2 ms).
func ranges(table, col, param string) string {
	return "t." + col + " = ANY(" + param + "::bigint[])"
}

// ownedBy is the removal rule, written once: a writer removes a row only
// when the row's customer (its Owner column: the listing customer of a users
// row, the invitation's or account's customer, the role's customer) is one
// whose rows of that kind the writer saw completely. owners is the SQL
// bigint[] of those customers:
//
//   - users, invitations and accounts: the snapshot's own customer, whose
//     complete listing omitted them;
//   - roles of the listed users GetUser read: Snapshot.RoleCustomers, the
//     customers the run's credential can see (GetUser returns a user's
//     complete role set in those, and only in those); NULL means any;
//   - SweepRoles (users no current users row lists): the customers the
//     credential can see that have a successful sync on record (whose
//     listing the warehouse holds), synced in this run or before.
//
// So a row is only ever removed by a writer that could have seen it, and
// several credentials writing one schema never undo each other. Every
// removal statement is rendered from sql/remove.sql, which applies it.
func (t *table) OwnedBy() string {
	if t.Owner == "" {
		return "true" // client links: the scope is the searches' coverage (linksTable); the directory: all of it
	}
	return "(@owners::bigint[] IS NULL OR t." + t.Owner + " = ANY(@owners::bigint[]))"
}

// OwnedByRecheck is OwnedBy as the UPDATE of a removal re-checks it on the
// row version it locks (sql/remove.sql, sql/upsert.sql "rm"): the same
// rule, written so that it is no index condition. As an index condition
// the planner, without statistics, scans the owner's rows by the owner's
// index and filters the keys out of them (a customer's 2,000 users for 20
// removed ones: 8 ms) instead of probing the primary key for each key.
func (t *table) OwnedByRecheck() string {
	if t.Owner == "" {
		return "true"
	}
	return "coalesce(" + t.OwnedBy() + ", false)"
}

// removeData is what sql/remove.sql renders: the removal of the current rows
// of T in scope (Scan: the FROM items giving the rows as alias t, default the
// table; Where on alias t) that the snapshot does not stage (unless
// NotStaged is false, as for SweepRoles, whose Where says all). Deferred
// (roles) returns the removed rows for the history statement, unless Now
// (SweepRoles) writes their history at once.
type removeData struct {
	*table
	Scan, Where string
	NotStaged   bool
	Now         bool
}

// Table is the table removed from.
func (d removeData) Table() *table { return d.table }

//go:embed sql/*.sql
var sqlFiles embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	// list joins cols, each prefixed with p.
	"list": func(p string, cols []string) string { return strings.Join(prefix(p, cols), ", ") },
	// on is the equality of the key columns of aliases a and b.
	"on": func(a, b string, key []string) string {
		out := make([]string, len(key))
		for i, k := range key {
			out[i] = a + "." + k + " = " + b + "." + k
		}
		return strings.Join(out, " AND ")
	},
	// set is "c = excluded.c, ..." for cols.
	"set": func(cols []string) string {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = c + " = excluded." + c
		}
		return strings.Join(out, ", ")
	},
	// assign is "c = e, ..." for cols and their value expressions.
	"assign": func(cols, exprs []string) string {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = c + " = " + exprs[i]
		}
		return strings.Join(out, ", ")
	},
	"join": strings.Join,
	// rangesOf is ranges.
	"rangesOf": ranges,
	// history passes the table and the name of the CTE whose rows
	// (the table's columns and change) the history template appends.
	"history": func(t *table, src string) map[string]any { return map[string]any{"T": t, "Src": src} },
}).ParseFS(sqlFiles, "sql/*.sql"))

func render(name string, data any) string {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		panic(err)
	}
	return strings.TrimSpace(b.String())
}

func prefix(p string, cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = p + c
	}
	return out
}

// The statements, rendered once.
var (
	rolesHistorySQL = render("history.sql", rolesTable)
	linksHistorySQL = render("history.sql", linksTable)
	// rolesOfDroppedSQL removes, with the customer's snapshot, the roles in
	// that customer of the users its listing dropped (@dropped, from the
	// guard: their users row was removed by this transaction) when no other
	// listing this credential can see (@visible; NULL: any) still lists the
	// user: then no GetUser of this credential can speak for those roles
	// any more (the other credential's listing, if any, cannot see this
	// customer). While such a listing exists, its GetUser decides, so a
	// customer's listing and another customer's GetUser never undo each
	// other run after run. None of those roles is staged (stage only stages
	// roles of listed users), so nothing is set apart.
	rolesOfDroppedSQL = render("remove.sql", removeData{table: rolesTable,
		// The customer is OwnedBy's (@owners is {@customer_id}): said once,
		// since the planner takes two conditions on customer_id as twice
		// as selective and scans the customer's roles by its index.
		Scan: "(SELECT * FROM user_roles t WHERE " + ranges("user_roles", "user_id", "@dropped") +
			" ORDER BY t.user_id, t.customer_id, t.role_id) t",
		Where: "NOT EXISTS (SELECT 1 FROM users x WHERE x.user_id = t.user_id AND x.removed_at IS NULL AND x.customer_id <> @customer_id" +
			" AND (@visible::bigint[] IS NULL OR x.customer_id = ANY(@visible::bigint[])))"})
	// rolesSweepSQL: the roles of users no current users row lists any more,
	// and (a repair of states older runs left, or of concurrent writes) the
	// same as rolesOfDroppedSQL: roles in a customer whose listing dropped
	// the user, when no listing the credential can see (@visible; NULL:
	// any) lists it.
	rolesSweepSQL = render("remove.sql", removeData{table: rolesTable, Scan: "user_roles t", Now: true,
		Where: "(NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = t.user_id AND u.removed_at IS NULL)" +
			" OR (EXISTS (SELECT 1 FROM users u WHERE u.customer_id = t.customer_id AND u.user_id = t.user_id AND u.removed_at IS NOT NULL)" +
			" AND NOT EXISTS (SELECT 1 FROM users x WHERE x.user_id = t.user_id AND x.removed_at IS NULL" +
			" AND (@visible::bigint[] IS NULL OR x.customer_id = ANY(@visible::bigint[])))))"})
	freshSQL        = render("fresh.sql", directTables)
	customerSQL     = render("customer.sql", nil)
	customerSyncSQL = render("customer_sync.sql", countColumns())
)

func init() {
	for _, t := range tables {
		t.upsert = render("upsert.sql", t)
		if t.FreshBy != "" {
			t.direct = render("direct.sql", t)
		}
		if t.RemoveStored {
			continue // the upsert removes
		}
		d := removeData{table: t, Scan: t.Name + " t", Where: t.scopeWhere, NotStaged: true}
		if t.removeScan != "" {
			d.Scan, d.Where, d.NotStaged = t.removeScan, cmp.Or(t.scopeWhere, "true"), false
		}
		t.remove = render("remove.sql", d)
	}
}

// countColumns names the customer_syncs columns of the counts:
// <entity>_<kind>, without accounts_reappeared (accounts have no history;
// a reappearing account counts as changed).
func countColumns() []string {
	var cols []string
	for _, e := range (Changes{}).Entities() {
		for _, k := range e.Kinds() {
			if e.Name == "accounts" && k.Kind == "reappeared" {
				continue
			}
			cols = append(cols, e.Name+"_"+k.Kind)
		}
	}
	return cols
}
