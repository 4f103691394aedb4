package load

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
	if r := st.replaced; len(r.users)+len(r.invitations)+len(r.accounts)+len(st.links.replaced) > 0 || r.customer {
		// Never the values: they may be anything.
		s.log.WarnContext(ctx, "snapshot strings with NUL bytes or invalid UTF-8, which PostgreSQL text cannot hold: replaced by U+FFFD",
			slog.Int64("customer_id", snap.CustomerID), slog.Any("user_ids", r.users),
			slog.Any("invitation_ids", r.invitations), slog.Any("account_ids", r.accounts), slog.Bool("customer_name", r.customer),
			slog.Any("client_links", st.links.replaced))
	}
	var ch Changes
	// The customer's lock, and the role sweep lock shared: snapshot writes
	// go side by side, and SweepRoles, which takes it exclusively, sees
	// none of them half done.
	o := txOpts{lockKey: "customer:" + strconv.FormatInt(snap.CustomerID, 10), sharedKey: sweepLock, commit: commit}
	// The direct path, until a concurrent writer collides with it (the
	// retry would find the other writer's keys stored anyway).
	direct := true
	err = s.inTxOpts(ctx, o, func(tx pgx.Tx) error {
		w := &writer{tx: tx, st: st, store: s, direct: direct, args: pgx.NamedArgs{
			"customer_id": st.customerID, "run_id": nilIfZero(runID), "owners": []int64{st.customerID}}}
		ch = Changes{}
		if err := w.write(ctx, &ch); err != nil {
			if _, ok := errors.AsType[*freshConflictError](err); ok {
				direct = false
			}
			return err
		}
		if commit {
			w.record(runID, ch, info)
		}
		return w.final.send(ctx, tx)
	})
	if err != nil {
		return Changes{}, interpret(fmt.Errorf("write snapshot of customer %d: %w", snap.CustomerID, err))
	}
	s.log.DebugContext(ctx, "snapshot written", slog.Int64("customer_id", snap.CustomerID),
		slog.Bool("dry_run", !commit), slog.Any("changes", ch))
	return ch, nil
}

func nilIfZero(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// writer writes one staged snapshot in its transaction.
type writer struct {
	tx    pgx.Tx
	st    *staged
	store *Store
	// args are the named arguments of every statement: customer_id,
	// run_id, owners (the customers whose rows the statement may remove,
	// see ownedBy) and, after the guard, dropped (the customer's current
	// users the snapshot does not list).
	args pgx.NamedArgs
	// direct allows the direct path (table.FreshBy); fresh holds, per
	// table, the FreshBy values it found never stored, and directRows the
	// rows with those values, which write COPYs straight into the table.
	direct     bool
	fresh      map[*table][]int64
	directRows map[*table][][]any
	// roleUsers: the listed users GetUser read whose roles the upsert
	// writes (see readBack).
	roleUsers []int64
	// rows: the staged rows of each table, those the read-back found may
	// change (the upserts' rows, see upsertArgs).
	rows map[*table][][]any
	// writes: the upserts and removals of every table, sent in one round
	// trip; final: what must follow them (the history of the rows the
	// direct path COPYed, and of the Deferred tables' rows, with what
	// their statements returned) and the customer's record, in one more.
	writes, final pipeline
	// rolesWritten: what the roles statements of writes wrote, for their
	// history.
	rolesWritten changeSet
}

// pipeline is the statements of one round trip (a pgx.Batch), each with
// what reads its result. Each statement still runs on its own snapshot, in
// order, in the transaction; the first that fails ends the batch (the
// server skips the rest).
type pipeline struct {
	b    pgx.Batch
	read []func(pgx.BatchResults) error
}

// queue adds a statement and what reads its result. args must not change
// after (the batch reads them when it is sent).
func (p *pipeline) queue(sql string, args pgx.NamedArgs, read func(pgx.BatchResults) error) {
	p.b.Queue(sql, args)
	p.read = append(p.read, read)
}

// send sends what is queued, when anything is, and reads the results in
// order; p is empty after.
func (p *pipeline) send(ctx context.Context, tx pgx.Tx) (err error) {
	b, read := p.b, p.read
	*p = pipeline{}
	if b.Len() == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, &b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for _, r := range read {
		if err := r(br); err != nil {
			return err
		}
	}
	return nil
}

// counted reads the (change, count) rows a statement returns into counts;
// what names the statement in an error.
func counted(what string, counts *Counts) func(pgx.BatchResults) error {
	return func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err == nil {
			err = countChanges(rows, counts)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// maxStagedRows bounds the staged rows one statement takes (rowsJSON), and
// the written rows a Deferred table's history statement takes back
// (changeSet): a larger set goes in several statements, queued in the same
// round trip, each with its own rows. Each is whole by itself: users and
// invitations are written by key, a chunk of roles holds every staged role
// of its users (see rolesChunks), and each written key is historized once.
// The bound is small because the planner takes a JSON set for 100 rows
// whatever its size, and where a statement joins two sets derived from it
// (the written rows with the history intervals they close) it may loop
// over one for each row of the other: 500 rows keep that to a few ms,
// where 5,000 took seconds. Store.stagedRows, when not 0, sets another
// bound (tests).
const maxStagedRows = 500

// maxStaged is the bound on the staged rows of one upsert.
func (s *Store) maxStaged() int { return cmp.Or(s.stagedRows, maxStagedRows) }

// chunk is one upsert's share of the staged rows of a table.
type chunk struct {
	rows  [][]any
	users []int64 // roles: the users whose stored roles this chunk compares (readable)
}

// chunks splits rows (sorted by key) into chunks of at most max rows,
// never between two rows whose first values are equal when byFirst (the
// roles of one user).
func chunks(rows [][]any, max int, byFirst bool) []chunk {
	var out []chunk
	for len(rows) > 0 {
		n := min(len(rows), max)
		if byFirst {
			for n < len(rows) && firstKey(rows[n]) == firstKey(rows[n-1]) {
				n++
			}
		}
		out = append(out, chunk{rows: rows[:n]})
		rows = rows[n:]
	}
	return out
}

// rolesChunks splits the staged roles into chunks (chunks, by user), each
// with the users of users (sorted) whose roles it compares and removes:
// those up to its last user, after the previous chunk's (the last chunk
// takes the rest). A user with no role staged is in one chunk all the same.
func rolesChunks(rows [][]any, max int, users []int64) []chunk {
	cs := chunks(rows, max, true)
	if len(cs) == 0 {
		return []chunk{{users: users}}
	}
	for i := range cs {
		n := len(users)
		if i < len(cs)-1 {
			last := firstKey(cs[i].rows[len(cs[i].rows)-1])
			n = 0
			for n < len(users) && users[n] <= last {
				n++
			}
		}
		cs[i].users, users = users[:n], users[n:]
	}
	return cs
}

// upsertArgs returns args with t's staged rows set to those of c (rowsJSON).
func upsertArgs(t *table, c chunk, args pgx.NamedArgs) (pgx.NamedArgs, error) {
	j, err := rowsJSON(t, c.rows)
	if err != nil {
		return nil, err
	}
	out := maps.Clone(args)
	out[t.RowsArg()] = j
	return out, nil
}

// changeSet gathers what the statements of a Deferred table wrote, for its
// history statement: each returns its row count and the rows as a JSON
// array (sql/upsert.sql, sql/remove.sql), each with its change, which the
// history statement takes back (@changes, sql/history.sql), in chunks of
// at most maxStagedRows rows as the upserts take theirs.
type changeSet struct {
	rows    []json.RawMessage
	changes []string // each row's change
}

// scan reads one statement's (count, rows) and returns the count.
func (c *changeSet) scan(row pgx.Row) (int, error) {
	var n int
	var rows []byte
	if err := row.Scan(&n, &rows); err != nil {
		return 0, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(rows, &list); err != nil {
		return 0, fmt.Errorf("the rows written: %w", err)
	}
	if len(list) != n {
		return 0, fmt.Errorf("the rows written: %d for a count of %d", len(list), n)
	}
	for _, r := range list {
		var row struct {
			Change string `json:"change"`
		}
		if err := json.Unmarshal(r, &row); err != nil {
			return 0, fmt.Errorf("the rows written: %w", err)
		}
		c.changes = append(c.changes, row.Change)
	}
	c.rows = append(c.rows, list...)
	return n, nil
}

// written returns a reader of one statement's (count, rows) into c.
func (c *changeSet) written(what string) func(pgx.BatchResults) error {
	return func(br pgx.BatchResults) error {
		if _, err := c.scan(br.QueryRow()); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// json returns the rows gathered as one JSON array.
func (c *changeSet) json() string { return jsonArray(c.rows) }

func jsonArray(rows []json.RawMessage) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(r)
	}
	b.WriteByte(']')
	return b.String()
}

// history queues in w.final t's history statement (sql) over the rows c
// gathered, when there are any, one statement per maxStaged of them, and
// counts them in t's counts by their change. Each statement must say it
// wrote those. Each key is among the rows once, so the chunks are whole by
// themselves.
func (w *writer) history(ch *Changes, t *table, sql string, c *changeSet) {
	counts := ch.of(t.Name)
	for i, n := 0, 0; i < len(c.rows); i += n {
		n = min(len(c.rows)-i, w.store.maxStaged())
		var want Counts
		for _, k := range c.changes[i : i+n] {
			want.add(k, 1)
		}
		*counts = counts.Add(want)
		w.final.queue(sql, pgx.NamedArgs{"run_id": w.args["run_id"], "changes": jsonArray(c.rows[i : i+n])}, func(br pgx.BatchResults) error {
			var got Counts
			if err := counted("write history of "+t.Name, &got)(br); err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("write history of %s: %v for the rows written, %v", t.Name, got, want)
			}
			return nil
		})
	}
}

// stagedUsers returns the user ids of the staged users rows (sorted).
func stagedUsers(rows [][]any) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		v, _ := keyInt(r[1])
		out[i] = v
	}
	return out
}

// freshConflictError: a row the direct path COPYed collided with a key
// another transaction wrote after the writer found its FreshBy value never
// stored (a user listed by two customers whose first writes run at once).
// The transaction is retried as a conflict, without the direct path: the
// upsert then finds and compares the other writer's rows.
type freshConflictError struct{ err error }

func (e *freshConflictError) Error() string {
	return "a new key was written meanwhile by another transaction: " + e.err.Error()
}

func (e *freshConflictError) Unwrap() error { return e.err }

// firstKey returns the int64 a row's first value holds (stage puts an
// int64 or a pointer to one there).
func firstKey(row []any) int64 {
	switch v := row[0].(type) {
	case int64:
		return v
	case *int64:
		return *v
	}
	panic(fmt.Sprintf("load: first key value of type %T", row[0]))
}

// queueFresh queues in p, when the direct path is allowed, the statement
// that finds, for each table with a direct path, the FreshBy values of its
// rows that were never stored (one statement for all; roles: every readable
// user, with roles or not), and what sets apart the rows with those values
// (w.directRows), leaving in rows those to stage.
func (w *writer) queueFresh(p *pipeline, rows map[*table][][]any) {
	if !w.direct {
		return
	}
	args := pgx.NamedArgs{}
	some := false
	for _, t := range directTables {
		var vals []int64
		if t == rolesTable {
			vals = w.st.readable
		} else {
			for _, r := range rows[t] {
				if v := firstKey(r); len(vals) == 0 || vals[len(vals)-1] != v {
					vals = append(vals, v)
				}
			}
		}
		args["p_"+t.Name] = vals
		some = some || len(vals) > 0
	}
	if !some {
		return
	}
	p.queue(freshSQL, args, func(br pgx.BatchResults) error {
		fresh := make([][]int64, len(directTables))
		dest := make([]any, len(directTables))
		for i := range fresh {
			dest[i] = &fresh[i]
		}
		if err := br.QueryRow().Scan(dest...); err != nil {
			return fmt.Errorf("find new keys: %w", err)
		}
		w.splitFresh(rows, fresh)
		return nil
	})
}

// splitFresh sets apart the rows of each table of directTables whose
// FreshBy value is among fresh (its values never stored, sorted).
func (w *writer) splitFresh(rows map[*table][][]any, fresh [][]int64) {
	w.fresh, w.directRows = map[*table][]int64{}, map[*table][][]any{}
	for i, t := range directTables {
		if len(fresh[i]) == 0 {
			continue
		}
		w.fresh[t] = fresh[i]
		// Both sorted: the rows by key, so by their first value.
		keep, direct := make([][]any, 0, len(rows[t])), make([][]any, 0, len(rows[t]))
		f := fresh[i]
		for _, r := range rows[t] {
			v := firstKey(r)
			for len(f) > 0 && f[0] < v {
				f = f[1:]
			}
			if len(f) > 0 && f[0] == v {
				direct = append(direct, r)
			} else {
				keep = append(keep, r)
			}
		}
		w.directRows[t], rows[t] = direct, keep
	}
}

// copyDirect COPYs the rows splitFresh set apart into t, counting them as
// added, and queues their history (sql/direct.sql) in w.final.
func (w *writer) copyDirect(ctx context.Context, ch *Changes, t *table) error {
	rows := w.directRows[t]
	if len(rows) == 0 {
		return nil
	}
	n, err := w.tx.CopyFrom(ctx, pgx.Identifier{t.Name}, t.All(), pgx.CopyFromRows(rows))
	if err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == pgerrcode.UniqueViolation {
			return &freshConflictError{fmt.Errorf("copy into %s: %w", t.Name, err)}
		}
		return fmt.Errorf("copy into %s: %w", t.Name, err)
	}
	if t.History == "" {
		ch.of(t.Name).add("added", int(n))
		return nil
	}
	w.final.queue(t.direct, pgx.NamedArgs{"fresh": w.fresh[t], "run_id": w.args["run_id"]}, func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		if err != nil {
			return fmt.Errorf("write %s history: %w", t.Name, err)
		}
		if h := tag.RowsAffected(); h != n {
			return fmt.Errorf("write %s history: %d rows for the %d COPYed", t.Name, h, n)
		}
		return nil
	})
	ch.of(t.Name).add("added", int(n))
	return nil
}

// staleReadable is the readable users whose roles the upsert compares:
// those splitFresh did not find new.
func (w *writer) staleReadable() []int64 {
	f := w.fresh[rolesTable]
	if len(f) == 0 {
		return w.st.readable
	}
	out := make([]int64, 0, len(w.st.readable)-len(f))
	for _, u := range w.st.readable {
		for len(f) > 0 && f[0] < u {
			f = f[1:]
		}
		if len(f) == 0 || f[0] != u {
			out = append(out, u)
		}
	}
	return out
}

// write runs, in order (the test hook is called after each step):
//
//	stage   find the new keys (queueFresh) with the customer's current
//	        invitations and accounts, then read back the stored rows the
//	        other rows' keys can find and compare them in Go (readBack: two
//	        round trips, one on a first write); only the rows that may
//	        change are staged: sent with the
//	        statements that write them (rowsJSON, in upserts of at most
//	        maxStagedRows rows)
//	guard   the removal guard, on the read-back's count of current and
//	        omitted users (none when the customer's users are new)
//	copy T  the direct path, for each table T of directTables (accounts,
//	        when fetched; users; user_invitations; user_roles): COPY of
//	        the rows with new keys straight into T (on a customer's first
//	        write; roles: the roles of new users)
//	write   in one round trip (w.writes), each table's statements, only
//	        where the read-back found rows that may change: accounts
//	        upsert and removal (only when fetched); users upsert with
//	        history and removal with history (when the guard counted users
//	        to remove); roles: removal of the dropped users' roles (when
//	        the users removal runs), upsert with removal of the others for
//	        the users whose roles the read-back found different, each
//	        returning what it wrote; invitations upsert and removal with
//	        history
//	links   (when searched) upsert and removal within the searches'
//	        scope, returning what they wrote (see linksTable)
//
// Then, in one more round trip (w.final, sent by writeSnapshot with the
// customer's record): the history of the rows COPYed (sql/direct.sql) and
// of what the roles and links statements wrote (sql/history.sql); each
// history statement must say it wrote what it was given, or the write
// fails before its COMMIT. The locks and the transaction id went ahead of
// the first batch (preludeTx), so with BEGIN and COMMIT a first write
// takes 8 round trips (the raw COPY of its rows 6), a re-run 5 when
// nothing changed, 6 when rows did.
//
// Each statement writes only rows that change: a snapshot that changes
// nothing sends no row, runs no write statement and writes no row version
// (only customers and customer_syncs record the success).
func (w *writer) write(ctx context.Context, ch *Changes) error {
	st := w.st
	rows := map[*table][][]any{usersTable: st.users, rolesTable: st.roles, invitationsTable: st.invitations, accountsTable: st.accounts}
	// The new keys (set apart for the direct path), the customer's current
	// users and those the snapshot does not list (none when its users are
	// new), and only the rows that may change are left to stage.
	current, err := w.readBack(ctx, rows)
	if err != nil {
		return err
	}
	w.rows = rows
	if err := w.hook("stage"); err != nil {
		return err
	}
	dropped, _ := w.args["dropped"].([]int64)
	w.args["dropped"] = dropped
	if err := w.checkGuard(current, len(dropped)); err != nil {
		return err
	}
	if err := w.hook("guard"); err != nil {
		return err
	}
	for _, t := range directTables {
		if t == accountsTable && !st.accountsFetched {
			continue
		}
		if err := w.copyDirect(ctx, ch, t); err != nil {
			return err
		}
		if err := w.hook("copy " + t.Name); err != nil {
			return err
		}
	}
	if st.accountsFetched {
		if err := w.upsertRemove(ch, accountsTable, w.gone(accountsTable)); err != nil {
			return err
		}
	}
	if err := w.upsertRemove(ch, usersTable, len(dropped) > 0); err != nil {
		return err
	}
	if err := w.roles(len(dropped) > 0); err != nil {
		return err
	}
	if err := w.upsertRemove(ch, invitationsTable, w.gone(invitationsTable)); err != nil {
		return err
	}
	if err := w.writes.send(ctx, w.tx); err != nil {
		return err
	}
	w.history(ch, rolesTable, rolesHistorySQL, &w.rolesWritten)
	if err := w.hook("write"); err != nil {
		return err
	}
	if err := w.links(ctx, ch); err != nil {
		return err
	}
	return w.hook("links")
}

func (w *writer) hook(step string) error { return w.store.hook(step, w.tx) }

// gone reports whether the read-back found current rows of t that the
// snapshot does not list (w.args["gone_<table>"]).
func (w *writer) gone(t *table) bool {
	gone, _ := w.args["gone_"+t.Name].([]int64)
	return len(gone) > 0
}

// upsertRemove queues in w.writes the upsert of t (one per chunk of its
// staged rows, when any are staged) and, when remove, its removal, which
// return (change, count) rows, counted in t's counts.
func (w *writer) upsertRemove(ch *Changes, t *table, remove bool) error {
	counts := ch.of(t.Name)
	for _, c := range chunks(w.rows[t], w.store.maxStaged(), false) {
		args, err := upsertArgs(t, c, w.args)
		if err != nil {
			return err
		}
		if t == usersTable {
			// The users' Stored reads the chunk's users only.
			args["staged_users"] = stagedUsers(c.rows)
		}
		w.writes.queue(t.upsert, args, counted("write "+t.Name, counts))
	}
	if remove {
		args := maps.Clone(w.args)
		args["gone"] = w.args["gone_"+t.Name]
		w.writes.queue(t.remove, args, counted("remove "+t.Name, counts))
	}
	return nil
}

// roles queues in w.writes, when the snapshot removed users (dropped),
// the removal of their roles in this customer; then (one statement, or
// one per chunk of the staged roles) the upsert of the staged roles with
// the removal of those of the listed users GetUser read in the customers
// of Snapshot.RoleCustomers that are not staged. Each returns what it
// wrote (w.rolesWritten), whose history write queues after (a second
// statement: see rolesTable for why).
func (w *writer) roles(dropped bool) error {
	w.rolesWritten = changeSet{}
	if dropped {
		w.writes.queue(rolesOfDroppedSQL, pgx.NamedArgs{"customer_id": w.st.customerID, "owners": []int64{w.st.customerID},
			"dropped": w.args["dropped"], "visible": w.st.roleCustomers}, w.rolesWritten.written("remove user_roles of dropped users"))
	}
	// Staged roles are all of the readable users whose stored roles the
	// read-back found different (readBack); the others' are as stored.
	if len(w.roleUsers) == 0 {
		return nil
	}
	for _, c := range rolesChunks(w.rows[rolesTable], w.store.maxStaged(), w.roleUsers) {
		// Removal in the customers the credential sees (nil: any).
		args, err := upsertArgs(rolesTable, c, pgx.NamedArgs{"owners": w.st.roleCustomers, "readable": c.users})
		if err != nil {
			return err
		}
		w.writes.queue(rolesTable.upsert, args, w.rolesWritten.written("write user_roles"))
	}
	return nil
}
func (w *writer) checkGuard(current, removing int) error {
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

// countChanges adds rows of (change text, n bigint) to c.
func countChanges(rows pgx.Rows, c *Counts) error {
	defer rows.Close()
	for rows.Next() {
		var kind string
		var n int
		if err := rows.Scan(&kind, &n); err != nil {
			return err
		}
		c.add(kind, n)
	}
	return rows.Err()
}

// record queues in w.final the customer's success: freshness in customers
// and, when the write belongs to a run, a customer_syncs row with the
// counts (ch: all of them are known once write has returned).
func (w *writer) record(runID int64, ch Changes, info SyncInfo) {
	st := w.st
	exec := func(what string) func(pgx.BatchResults) error {
		return func(br pgx.BatchResults) error {
			if _, err := br.Exec(); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		}
	}
	w.final.queue(customerSQL, pgx.NamedArgs{"customer_id": st.customerID, "name": st.customerName}, exec("update customer"))
	if runID == 0 {
		return
	}
	var accounts any
	if st.accountsFetched {
		accounts = len(st.accounts)
	}
	args := pgx.NamedArgs{"run_id": runID, "customer_id": st.customerID, "started_at": startedAt(info),
		"users_seen": len(st.users), "roles_seen": len(st.roles), "invitations_seen": len(st.invitations),
		"accounts_seen": accounts, "api_calls": info.APICalls, "users_unreadable": cmp.Or(info.UsersUnreadable, st.unreadable),
		"links_status": nullable(st.links.status), "links_error": nullable(st.links.errText), "client_links_seen": nil}
	if st.links.searched {
		args["client_links_seen"] = len(st.links.rows)
	}
	for _, e := range ch.Entities() {
		for _, k := range e.Kinds() {
			args[e.Name+"_"+k.Kind] = k.N // accounts_reappeared is always 0 and has no column
		}
	}
	w.final.queue(customerSyncSQL, args, exec("record customer sync"))
}
