package load

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

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
	err = s.inTxOpts(ctx, o, func(tx pgx.Tx) error {
		w := &writer{tx: tx, st: st, store: s, args: pgx.NamedArgs{
			"customer_id": st.customerID, "run_id": nilIfZero(runID), "owners": []int64{st.customerID}}}
		ch = Changes{}
		if err := w.write(ctx, &ch); err != nil {
			return err
		}
		if commit {
			return w.finish(ctx, runID, ch, info)
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
}

// write runs, in order (the test hook is called after each step):
//
//	stage        COPY the snapshot into the staging tables
//	guard        the removal guard's count of current and omitted users
//	accounts     upsert; removal (when the accounts were fetched)
//	users        upsert with history; removal with history (when the guard
//	             counted users to remove)
//	roles        removal of the dropped users' roles (when the users
//	             removal ran), upsert with removal, into s_changes_user_roles,
//	             then the history of what they wrote (when they wrote
//	             anything)
//	invitations  upsert with history; removal with history
//	links        (when searched) COPY, upsert and removal within the
//	             searches' scope, into s_changes_client_links, then their
//	             history (see linksTable)
//
// Each statement writes only rows that change: a snapshot that changes
// nothing writes no row version.
func (w *writer) write(ctx context.Context, ch *Changes) error {
	st := w.st
	if _, err := w.tx.Exec(ctx, stagingSQL); err != nil {
		return fmt.Errorf("create staging tables: %w", err)
	}
	for _, c := range []struct {
		t    *table
		rows [][]any
	}{{usersTable, st.users}, {rolesTable, st.roles}, {invitationsTable, st.invitations}, {accountsTable, st.accounts}} {
		if len(c.rows) == 0 {
			continue
		}
		if _, err := w.tx.CopyFrom(ctx, pgx.Identifier{c.t.Staging()}, c.t.All(), pgx.CopyFromRows(c.rows)); err != nil {
			return fmt.Errorf("copy into %s: %w", c.t.Staging(), err)
		}
	}
	if err := w.hook("stage"); err != nil {
		return err
	}
	var current int
	var dropped []int64
	if err := w.tx.QueryRow(ctx, guardSQL, w.args).Scan(&current, &dropped); err != nil {
		return fmt.Errorf("count users to remove: %w", err)
	}
	removing := len(dropped)
	w.args["dropped"] = dropped
	if err := w.checkGuard(current, removing); err != nil {
		return err
	}
	if err := w.hook("guard"); err != nil {
		return err
	}
	if st.accountsFetched {
		if err := w.counted(ctx, ch, accountsTable, accountsTable.upsert, accountsTable.remove); err != nil {
			return err
		}
	}
	if err := w.hook("accounts"); err != nil {
		return err
	}
	usersRemove := usersTable.remove
	if removing == 0 {
		usersRemove = ""
	}
	if err := w.counted(ctx, ch, usersTable, usersTable.upsert, usersRemove); err != nil {
		return err
	}
	if err := w.hook("users"); err != nil {
		return err
	}
	if err := w.roles(ctx, ch, removing > 0); err != nil {
		return err
	}
	if err := w.hook("roles"); err != nil {
		return err
	}
	if err := w.counted(ctx, ch, invitationsTable, invitationsTable.upsert, invitationsTable.remove); err != nil {
		return err
	}
	if err := w.hook("invitations"); err != nil {
		return err
	}
	if err := w.links(ctx, ch); err != nil {
		return err
	}
	return w.hook("links")
}

func (w *writer) hook(step string) error {
	if h := w.store.testHook; h != nil {
		return h(step, w.tx)
	}
	return nil
}

// counted runs the statements (those not "") that return (change, count)
// rows, and adds the counts to t's.
func (w *writer) counted(ctx context.Context, ch *Changes, t *table, stmts ...string) error {
	counts := ch.of(t.Name)
	for i, sql := range stmts {
		if sql == "" {
			continue
		}
		rows, err := w.tx.Query(ctx, sql, w.args)
		if err == nil {
			err = countChanges(rows, counts)
		}
		if err != nil {
			what := [...]string{"write", "remove"}[i]
			return fmt.Errorf("%s %s: %w", what, t.Name, err)
		}
	}
	return nil
}

// roles removes, when the snapshot removed users (dropped), their roles in
// this customer; then (one statement) upserts the staged roles and removes
// those of the listed users GetUser read in the customers of
// Snapshot.RoleCustomers that are not staged. Each records what it wrote in
// s_changes_user_roles; then, when anything was written, the history of
// those rows (see rolesTable for why it is a second statement).
func (w *writer) roles(ctx context.Context, ch *Changes, dropped bool) error {
	if len(w.st.userIDs) == 0 && !dropped {
		return nil
	}
	written := int64(0)
	if dropped {
		tag, err := w.tx.Exec(ctx, rolesOfDroppedSQL, pgx.NamedArgs{"customer_id": w.st.customerID, "owners": []int64{w.st.customerID},
			"dropped": w.args["dropped"], "visible": w.st.roleCustomers})
		if err != nil {
			return fmt.Errorf("remove user_roles of dropped users: %w", err)
		}
		written += tag.RowsAffected()
	}
	// Staged roles are all of readable users (see stage).
	if len(w.st.readable) > 0 {
		// Removal in the customers the credential sees (nil: any).
		tag, err := w.tx.Exec(ctx, rolesTable.upsert, pgx.NamedArgs{"owners": w.st.roleCustomers, "readable": w.st.readable})
		if err != nil {
			return fmt.Errorf("write user_roles: %w", err)
		}
		written += tag.RowsAffected()
	}
	if written == 0 {
		return nil
	}
	rows, err := w.tx.Query(ctx, rolesHistorySQL, pgx.NamedArgs{"run_id": w.args["run_id"]})
	if err == nil {
		err = countChanges(rows, &ch.Roles)
	}
	if err != nil {
		return fmt.Errorf("write user_roles history: %w", err)
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

// finish records the customer's success: freshness in customers and, when
// the write belongs to a run, a customer_syncs row with the counts.
func (w *writer) finish(ctx context.Context, runID int64, ch Changes, info SyncInfo) error {
	st := w.st
	if _, err := w.tx.Exec(ctx, customerSQL, pgx.NamedArgs{"customer_id": st.customerID, "name": st.customerName}); err != nil {
		return fmt.Errorf("update customer: %w", err)
	}
	if runID == 0 {
		return nil
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
	if _, err := w.tx.Exec(ctx, customerSyncSQL, args); err != nil {
		return fmt.Errorf("record customer sync: %w", err)
	}
	return nil
}
