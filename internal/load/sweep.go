package load

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
)

// sweepLock names the advisory lock that orders SweepRoles against the
// snapshot writes: each snapshot write holds it shared (so they never wait
// for one another on it), SweepRoles exclusively.
const sweepLock = "roles-sweep"

// nilIfEmptyIDs passes a nil list as SQL NULL (no restriction).
func nilIfEmptyIDs(ids []int64) any {
	if ids == nil {
		return nil
	}
	return sortedIDs(ids)
}

// SweepRoles removes, in one transaction, the current user_roles of users
// that no current users row lists any more (the design's "roles go together
// with the user when no customer lists that user any more"), restricted to
// the roles whose customer is in customers: customers the run's credential
// can see (the removal rule, see ownedBy) whose listing the warehouse
// holds (SyncedCustomers: "no current users row lists the user" does not
// speak for a visible customer never synced, which may list the user). Each removal closes the role's open history interval
// and appends a 'removed' history row with runID (0: none). It returns how
// many roles it removed.
//
// The job calls it once, after every customer of the run is written: the
// decision needs the whole picture, which concurrent snapshot transactions
// (each seeing the others' users rows half written) do not have. It looks
// at every current role in customers, so a wrong state left by an earlier
// run is repaired too.
//
// Concurrency: the statement reads users rows of every customer, also those
// another credential's run may be writing. Per-customer locks cannot cover
// that (the listing that keeps a user may be of a customer this credential
// does not even know), so every snapshot write holds the "roles-sweep"
// advisory lock shared and SweepRoles takes it exclusively: it waits for the
// snapshot writes under way, of any run, and sees them committed or not at
// all; writes that start meanwhile wait for it, then see its removals (and
// add back, as reappeared, the roles of a user they list again). The sweep
// is one indexed statement, so the wait is short.
func (s *Store) SweepRoles(ctx context.Context, runID int64, customers, visible []int64) (removed int, err error) {
	owners := sortedIDs(customers)
	if len(owners) == 0 {
		return 0, nil
	}
	var run any
	if runID != 0 {
		run = runID
	}
	err = s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", s.lockName(sweepLock)); err != nil {
			return fmt.Errorf("take the role sweep lock: %w", err)
		}
		rows, err := tx.Query(ctx, rolesSweepSQL, pgx.NamedArgs{"owners": owners, "visible": nilIfEmptyIDs(visible), "run_id": run})
		if err != nil {
			return err
		}
		var c Counts
		err = countChanges(rows, &c)
		removed = c.Removed
		return err
	})
	if err != nil {
		return 0, interpret(fmt.Errorf("sweep roles: %w", err))
	}
	s.log.DebugContext(ctx, "roles swept", slog.Int("removed", removed), slog.Int("customers", len(owners)))
	return removed, nil
}

// SyncedCustomers returns those of ids that have a successful sync on
// record (customers.last_success_at), sorted: the customers whose listing
// the warehouse holds.
func (s *Store) SyncedCustomers(ctx context.Context, ids []int64) ([]int64, error) {
	var out []int64
	err := s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT coalesce(array_agg(customer_id ORDER BY customer_id), '{}') FROM customers
			WHERE customer_id = ANY($1::bigint[]) AND last_success_at IS NOT NULL`, sortedIDs(ids)).Scan(&out)
	})
	if err != nil {
		return nil, interpret(fmt.Errorf("read the customers synced: %w", err))
	}
	return out, nil
}
