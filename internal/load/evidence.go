package load

// The reads of an access review pack (package evidence) and of a review
// diff: the populations (users, role grants, invitations, ...) as they were
// at a point in time, an independent count of each, the sync that supplied
// each customer's data, and the changes between two points in time. The
// SQL is in sql/evidence/*.sql, written unqualified against the schema's
// search path, so the text a pack's manifest records is exactly what ran
// and what an auditor can run again in psql after SET search_path.

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	schemasql "github.com/msads-syncer/syncer/sql"
)

//go:embed sql/evidence/*.sql
var evidenceFiles embed.FS

// evidenceSQL returns the text of sql/evidence/<name>.sql.
func evidenceSQL(name string) string {
	b, err := evidenceFiles.ReadFile("sql/evidence/" + name + ".sql")
	if err != nil {
		panic(err) // a file of the embedded set: a build error
	}
	return strings.TrimSpace(string(b))
}

// Population is one list of an access review pack. Its SQL takes $1, the
// point in time (as_of), and $2, the customer ids (bigint[], empty for
// all), and returns customer_id as its first column. CheckSQL, with the
// same parameters, counts the population per customer another way (a
// second query over the base tables); a pack compares it with the rows it
// wrote.
type Population struct {
	Name     string // file stem and sheet name: users, role_grants, ...
	Title    string
	SQL      string
	CheckSQL string
	// Requires are the schema objects the SQL reads that not every
	// schema has (a later migration's): the population is left out of a
	// pack, with the reason, when one is missing. A name with "(" is a
	// function signature.
	Requires []string
	// AsOf says how the rows relate to the pack's point in time.
	AsOf string
}

// Populations is the registry of a pack's lists, in the order a pack
// writes them.
var Populations = []Population{
	{
		Name: "users", Title: "Users",
		SQL: evidenceSQL("users"), CheckSQL: evidenceSQL("check_users"),
		AsOf: "as of as_of, from users_history",
	},
	{
		Name: "role_grants", Title: "Role grants",
		SQL: evidenceSQL("role_grants"), CheckSQL: evidenceSQL("check_role_grants"),
		AsOf: "as of as_of, from access_as_of (account names as last synced)",
	},
	{
		Name: "invitations", Title: "Pending invitations",
		SQL: evidenceSQL("invitations"), CheckSQL: evidenceSQL("check_invitations"),
		AsOf: "as of as_of, from user_invitations_history",
	},
	{
		Name: "client_links", Title: "Client links",
		SQL: evidenceSQL("client_links"), CheckSQL: evidenceSQL("check_client_links"),
		Requires: []string{"client_links_history", "client_links_as_of(timestamptz)"},
		AsOf:     "as of as_of, from client_links_as_of",
	},
	{
		Name: "privileged_access", Title: "Privileged access",
		SQL: evidenceSQL("privileged_access"), CheckSQL: evidenceSQL("check_privileged_access"),
		Requires: []string{"client_link_permissions", "client_links_as_of(timestamptz)"},
		AsOf:     "as of as_of, from access_as_of and client_links_as_of with the roles' and link permissions' metadata (held_since from history)",
	},
	{
		Name: "exceptions", Title: "Exceptions",
		SQL: evidenceSQL("exceptions"), CheckSQL: evidenceSQL("check_exceptions"),
		Requires: []string{"access_exceptions"},
		AsOf:     "as of the pack's generation time, not as_of: the access_exceptions view reads the current tables and the company directory as last loaded",
	},
}

// SourceSQL reads the database's name, server version, the transaction's
// snapshot time and the schema's version.
var SourceSQL = evidenceSQL("source")

// SyncsSQL reads, per customer, the sync that supplied its data at a point
// in time ($1) and the last attempt before it; $2 narrows the customers,
// $3 adds the expected ones.
var SyncsSQL = evidenceSQL("syncs")

// EvidenceQuery selects what ReadEvidence reads.
type EvidenceQuery struct {
	AsOf time.Time
	// Customers narrows every population and the syncs; empty means all.
	Customers []int64
	// Expected are customers whose syncs are reported even without any
	// attempt (the configured ones): a gap when they have no complete
	// sync. Every customer with an attempt at or before AsOf is reported.
	Expected []int64
	// Since, when not zero, also reads the changes in (Since, AsOf].
	Since time.Time
}

// Source describes the database a pack was read from.
type Source struct {
	Database      string
	ServerVersion string
	SnapshotAt    time.Time // now() of the read transaction
	SchemaVersion int
}

// PopulationRows is one population as read.
type PopulationRows struct {
	Population
	// Missing, when not empty, is why the population could not be read
	// (an object it requires does not exist); Columns and Rows are then
	// empty.
	Missing string
	Columns []string
	Rows    [][]any
	// Check is the independent count per customer (CheckSQL).
	Check map[int64]int64
}

// CustomerSync is the sync that supplied one customer's data at a point
// in time.
type CustomerSync struct {
	CustomerID   int64
	CustomerName string
	// RunID is 0 when the customer had no complete sync at or before the
	// point in time; the fields up to InvitationsSeen are then zero.
	RunID             int64
	FinishedAt        time.Time
	Status            string // of the customer's sync: succeeded
	RunStatus         string // of the whole run: succeeded, partial, ...
	PrincipalUserID   int64
	PrincipalUserName string
	UsersSeen         *int64 // users the API listed in that sync
	InvitationsSeen   *int64
	// The last attempt started at or before the point in time (it may be
	// a failure after the complete sync); LastRunID 0 when none.
	LastRunID     int64
	LastStartedAt time.Time
	LastStatus    string
	LastError     string
	// Visible and LastVisible are the customers the credentials of the
	// complete sync's run and of the last attempt's run could see, sorted;
	// nil when not known (runs before migration 008, or the run could not
	// tell).
	Visible, LastVisible []int64
}

// Evidence is everything a pack holds, read in one transaction.
type Evidence struct {
	// Query is what was read: the parameters the SQL ran with.
	Query       EvidenceQuery
	Source      Source
	Populations []PopulationRows
	Syncs       []CustomerSync
	// Changes are the changes in (Since, AsOf] when Since was given.
	Changes []Change
}

// ReadEvidence reads a pack's data in one read-only REPEATABLE READ
// transaction, so the populations, their checks and the syncs agree.
func ReadEvidence(ctx context.Context, pool *pgxpool.Pool, schema string, q EvidenceQuery) (*Evidence, error) {
	ev := Evidence{Query: q}
	err := readOnly(ctx, pool, schema, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, SourceSQL).Scan(&ev.Source.Database, &ev.Source.ServerVersion,
			&ev.Source.SnapshotAt, &ev.Source.SchemaVersion); err != nil {
			return fmt.Errorf("read source: %w", err)
		}
		ids := q.Customers
		if ids == nil {
			ids = []int64{}
		}
		for _, p := range Populations {
			pr, err := readPopulation(ctx, tx, schema, p, q.AsOf, ids)
			if err != nil {
				return err
			}
			ev.Populations = append(ev.Populations, pr)
		}
		expected := q.Expected
		if expected == nil {
			expected = []int64{}
		}
		syncs, err := readSyncs(ctx, tx, q.AsOf, ids, expected)
		if err != nil {
			return err
		}
		ev.Syncs = syncs
		if !q.Since.IsZero() {
			ch, err := readChanges(ctx, tx, schema, q.Since, q.AsOf, ids)
			if err != nil {
				return err
			}
			ev.Changes = ch
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &ev, nil
}

// readOnly runs fn in a read-only REPEATABLE READ transaction with the
// schema on the search path, and rolls it back.
func readOnly(ctx context.Context, pool *pgxpool.Pool, schema string, fn func(pgx.Tx) error) error {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return interpret(fmt.Errorf("begin read: %w", err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", schemasql.SearchPath(schema)); err != nil {
		return interpret(fmt.Errorf("set search_path: %w", err))
	}
	return interpret(fn(tx))
}

// readPopulation runs one population's query and check.
func readPopulation(ctx context.Context, tx pgx.Tx, schema string, p Population, asOf time.Time, ids []int64) (PopulationRows, error) {
	pr := PopulationRows{Population: p}
	for _, obj := range p.Requires {
		fn := "to_regclass"
		if strings.Contains(obj, "(") {
			fn = "to_regprocedure"
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT "+fn+"($1) IS NOT NULL", pgx.Identifier{schema}.Sanitize()+"."+obj).Scan(&exists); err != nil {
			return pr, fmt.Errorf("%s: look up %s: %w", p.Name, obj, err)
		}
		if !exists {
			pr.Missing = fmt.Sprintf("%s does not exist in schema %s (its migration is not applied)", obj, schema)
			return pr, nil
		}
	}
	rows, err := tx.Query(ctx, p.SQL, asOf, ids)
	if err != nil {
		return pr, fmt.Errorf("read %s: %w", p.Name, err)
	}
	for _, f := range rows.FieldDescriptions() {
		pr.Columns = append(pr.Columns, f.Name)
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			rows.Close()
			return pr, fmt.Errorf("read %s: %w", p.Name, err)
		}
		pr.Rows = append(pr.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return pr, fmt.Errorf("read %s: %w", p.Name, err)
	}
	if len(pr.Columns) == 0 || pr.Columns[0] != "customer_id" {
		return pr, fmt.Errorf("read %s: the first column must be customer_id", p.Name)
	}
	pr.Check, err = perCustomer(ctx, tx, p.CheckSQL, asOf, ids)
	if err != nil {
		return pr, fmt.Errorf("check %s: %w", p.Name, err)
	}
	return pr, nil
}

// perCustomer runs a query returning (customer_id, count) rows; a NULL
// customer id counts under 0.
func perCustomer(ctx context.Context, tx pgx.Tx, sql string, args ...any) (map[int64]int64, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	out := map[int64]int64{}
	var id *int64 // NULL (a link whose client customer is not known): 0
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		out[deref(id)] += n
		return nil
	})
	return out, err
}

func readSyncs(ctx context.Context, tx pgx.Tx, asOf time.Time, ids, expected []int64) ([]CustomerSync, error) {
	rows, err := tx.Query(ctx, SyncsSQL, asOf, ids, expected)
	if err != nil {
		return nil, fmt.Errorf("read syncs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CustomerSync, error) {
		var s CustomerSync
		var name, status, runStatus, principalName, lastStatus, lastError *string
		var runID, principalID, lastRunID *int64
		var finished, lastStarted *time.Time
		err := r.Scan(&s.CustomerID, &name, &runID, &finished, &status, &runStatus, &principalID, &principalName,
			&s.UsersSeen, &s.InvitationsSeen, &lastRunID, &lastStarted, &lastStatus, &lastError, &s.Visible, &s.LastVisible)
		s.CustomerName, s.Status, s.RunStatus = deref(name), deref(status), deref(runStatus)
		s.PrincipalUserName, s.LastStatus, s.LastError = deref(principalName), deref(lastStatus), deref(lastError)
		s.RunID, s.PrincipalUserID, s.LastRunID = deref(runID), deref(principalID), deref(lastRunID)
		s.FinishedAt, s.LastStartedAt = deref(finished), deref(lastStarted)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read syncs: %w", err)
	}
	return out, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Change kinds of a review diff.
const (
	ChangeAdded       = "added"
	ChangeRemoved     = "removed"
	ChangeChanged     = "changed"
	ChangeReappeared  = "reappeared"
	ChangeRoleChanged = "role_changed" // a user's role in a customer replaced by another in one sync
)

// Net outcomes of an entity between the two points of a diff.
const (
	NetAdded     = "added"
	NetRemoved   = "removed"
	NetChanged   = "changed"
	NetUnchanged = "unchanged" // the same at both points, though it changed in between
)

// ChangeSet is one entity kind of a review diff and the SQL that reads its
// changes: $1 from, $2 to, $3 the customer ids (empty: all).
type ChangeSet struct {
	Entity string // user, grant, invitation, client_link
	SQL    string
	// Requires: as Population.Requires.
	Requires []string
}

// ChangeSets are the entity kinds a review diff covers, in order.
var ChangeSets = []ChangeSet{
	{Entity: "user", SQL: evidenceSQL("diff_users")},
	{Entity: "grant", SQL: evidenceSQL("diff_grants")},
	{Entity: "invitation", SQL: evidenceSQL("diff_invitations")},
	{Entity: "client_link", SQL: evidenceSQL("diff_client_links"), Requires: []string{"client_links_history"}},
}

// Change is one change of a review diff: a version of an entity that began
// after the diff's from and at or before its to.
type Change struct {
	Entity       string // a ChangeSet's
	CustomerID   int64
	CustomerName string
	EntityID     string // user id; user_id/role_id for a grant; invitation id; link key
	UserID       int64  // the user of a user or grant change; 0 otherwise
	Subject      string // user name or email
	At           time.Time
	RunID        int64
	Change       string // a Change* kind
	// Before and After are the entity's columns before and after the
	// change (Before nil when it did not exist before; After, for a
	// removal, is the last state seen).
	Before, After map[string]any
	// Net is how the entity differs between from and to (a Net*).
	Net string
}

// ReviewDiff reads the changes in (from, to] of every ChangeSet in one
// read-only transaction, ordered by time.
func ReviewDiff(ctx context.Context, pool *pgxpool.Pool, schema string, from, to time.Time, customers []int64) ([]Change, error) {
	if !from.Before(to) {
		return nil, errors.New("review diff: from must be before to")
	}
	if customers == nil {
		customers = []int64{}
	}
	var out []Change
	err := readOnly(ctx, pool, schema, func(tx pgx.Tx) error {
		var err error
		out, err = readChanges(ctx, tx, schema, from, to, customers)
		return err
	})
	return out, err
}

func readChanges(ctx context.Context, tx pgx.Tx, schema string, from, to time.Time, ids []int64) ([]Change, error) {
	var all []Change
	for _, cs := range ChangeSets {
		missing := false
		for _, obj := range cs.Requires {
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{schema}.Sanitize()+"."+obj).Scan(&exists); err != nil {
				return nil, err
			}
			missing = missing || !exists
		}
		if missing {
			continue
		}
		rows, err := tx.Query(ctx, cs.SQL, from, to, ids)
		if err != nil {
			return nil, fmt.Errorf("read %s changes: %w", cs.Entity, err)
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Change, error) {
			c := Change{Entity: cs.Entity}
			var name *string
			var userID, runID *int64
			var state, prev []byte
			var prevChange *string
			if err := r.Scan(&c.CustomerID, &name, &c.EntityID, &userID, &c.Subject, &c.At, &runID, &c.Change,
				&state, &prev, &prevChange); err != nil {
				return c, err
			}
			c.CustomerName, c.UserID, c.RunID = deref(name), deref(userID), deref(runID)
			c.At = c.At.UTC()
			if err := json.Unmarshal(state, &c.After); err != nil {
				return c, err
			}
			// A removal's version records the last state seen: the entity
			// does not exist after it. The version before counts only when
			// it was not a removal.
			if c.Change == ChangeRemoved {
				c.After = nil
			}
			if prev != nil && deref(prevChange) != ChangeRemoved {
				if err := json.Unmarshal(prev, &c.Before); err != nil {
					return c, err
				}
			}
			return c, nil
		})
		if err != nil {
			return nil, fmt.Errorf("read %s changes: %w", cs.Entity, err)
		}
		all = append(all, netChanges(got)...)
	}
	return pairRoleChanges(all), nil
}

// netChanges sets each change's Net: how its entity differs between the
// state before its first change in the diff and the state after its last
// (changes are in time order).
func netChanges(cs []Change) []Change {
	type span struct{ first, last int }
	spans := map[string]*span{}
	for i, c := range cs {
		k := fmt.Sprint(c.CustomerID, "/", c.EntityID)
		if s, ok := spans[k]; ok {
			s.last = i
		} else {
			spans[k] = &span{i, i}
		}
	}
	for i := range cs {
		s := spans[fmt.Sprint(cs[i].CustomerID, "/", cs[i].EntityID)]
		cs[i].Net = netOf(cs[s.first].Before, cs[s.last].After)
	}
	return cs
}

func netOf(before, after map[string]any) string {
	switch {
	case before == nil && after == nil:
		return NetUnchanged
	case before == nil:
		return NetAdded
	case after == nil:
		return NetRemoved
	}
	b, _ := json.Marshal(before) // map keys sorted: a canonical form
	a, _ := json.Marshal(after)
	if string(a) == string(b) {
		return NetUnchanged
	}
	return NetChanged
}

// pairRoleChanges merges, for grants, a user's role removed and another
// role added (or reappeared) in the same customer at the same time (one
// sync) into one role_changed change. Several removals or additions at
// once are left as they are.
func pairRoleChanges(cs []Change) []Change {
	type key struct {
		customer, user int64
		at             time.Time
	}
	groups := map[key][]int{}
	for i, c := range cs {
		if c.Entity == "grant" {
			k := key{c.CustomerID, c.UserID, c.At}
			groups[k] = append(groups[k], i)
		}
	}
	drop := map[int]bool{}
	for _, idx := range groups {
		if len(idx) != 2 {
			continue
		}
		rm, add := idx[0], idx[1]
		if cs[rm].Change != ChangeRemoved {
			rm, add = add, rm
		}
		if cs[rm].Change != ChangeRemoved || (cs[add].Change != ChangeAdded && cs[add].Change != ChangeReappeared) {
			continue
		}
		m := cs[add]
		m.Change = ChangeRoleChanged
		m.EntityID = fmt.Sprint(m.UserID)
		m.Before = cs[rm].Before
		m.Net = NetChanged
		if cs[rm].Net == NetUnchanged && cs[add].Net == NetUnchanged {
			m.Net = NetUnchanged
		}
		cs[min(rm, add)] = m
		drop[max(rm, add)] = true
	}
	out := cs[:0]
	for i, c := range cs {
		if !drop[i] {
			out = append(out, c)
		}
	}
	return out
}
