package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/status"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// Options configure a Store.
type Options struct {
	// Schema holds the warehouse; default "msads".
	Schema string
	// RemovalGuard is the largest fraction of a customer's current users a
	// snapshot may remove; default 0.5.
	RemovalGuard float64
	// AllowMassRemoval disables the removal guard (--allow-mass-removal).
	AllowMassRemoval bool
	// TokenKey, when set, encrypts stored refresh tokens.
	TokenKey string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// MaxTries bounds the attempts of a transaction that loses a race with
	// another one (serialization failure, deadlock, lock not available);
	// default 4.
	MaxTries int
	// RetryMaxElapsed bounds how long a transaction waits for the database
	// to come back after a connection-level failure (sync.retry_max_elapsed);
	// default 5m. A customer whose data was fetched is never failed by an
	// outage shorter than this.
	RetryMaxElapsed time.Duration
	// RecordRetryMax bounds how long FinishRun and RecordCustomerFailure wait
	// for the database to come back; default 1m.
	RecordRetryMax time.Duration
}

// Store writes to the warehouse in one schema.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger
	path string // search_path value
	// stagedRows, when not 0, bounds the staged rows of one upsert instead
	// of maxStagedRows (tests: several chunks from a few rows).
	stagedRows int

	// testHook, when set, is called between the steps of a snapshot write
	// (writer.write: "stage", "guard", "copy <table>", "write", "links"),
	// at the start of each attempt of a run's record (step "record") and
	// after each commit (step "committed", tx nil); an error it returns
	// fails the write (tests inject faults with it: after a commit, a lost
	// reply).
	testHook func(step string, tx pgx.Tx) error
	// testSendAll, when set, makes the read-back leave every row staged
	// (the SQL comparison decides all): what tests compare the read-back
	// with.
	testSendAll bool
}

// NewStore returns a Store writing through pool.
func NewStore(pool *pgxpool.Pool, opts Options) *Store {
	if opts.Schema == "" {
		opts.Schema = "msads"
	}
	if opts.RemovalGuard <= 0 {
		opts.RemovalGuard = 0.5
	}
	if opts.MaxTries <= 0 {
		opts.MaxTries = 4
	}
	if opts.RetryMaxElapsed <= 0 {
		opts.RetryMaxElapsed = 5 * time.Minute
	}
	if opts.RecordRetryMax <= 0 {
		opts.RecordRetryMax = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, opts: opts, log: opts.Logger, path: schemasql.SearchPath(opts.Schema)}
}

// Schema returns the store's schema name.
func (s *Store) Schema() string { return s.opts.Schema }

// txOpts are the choices of one inTxOpts call.
type txOpts struct {
	// lockKey, when not empty, is the transaction-level advisory lock taken
	// first (the per-customer guard; see writeSnapshot).
	lockKey string
	// sharedKey, when not empty, is a transaction-level advisory lock taken
	// shared after lockKey, in the same statement (the role sweep lock; see
	// SweepRoles).
	sharedKey string
	// commit commits the transaction; else it is rolled back.
	commit bool
	// noFence skips the lease check of a ctx carrying a lease.
	noFence bool
	// outage bounds the wait for the database after connection-level
	// failures; Options.RetryMaxElapsed when 0.
	outage time.Duration
	// record: a run's bookkeeping (FinishRun, RecordCustomerFailure). An
	// attempt that lost its connection is tried again until outage has
	// passed, however many there were, instead of twice: its statements are
	// a row or two, not what kills a connection, and a record given up on
	// leaves the run's counts without the customer_syncs row they count
	// (db-connection-killed seed 509213757: backends terminated every 50
	// ms took both attempts of a customer's failure record).
	record bool
}

// inTx runs fn in a transaction with the store's search_path, holding the
// transaction-level advisory lock lockKey when not empty, fenced by the lease
// ctx carries (see Lease). It commits when commit is true, else rolls back.
func (s *Store) inTx(ctx context.Context, lockKey string, commit bool, fn func(pgx.Tx) error) error {
	return s.inTxOpts(ctx, txOpts{lockKey: lockKey, commit: commit}, fn)
}

// inTxOpts runs fn in a transaction, retrying by the class of the failure
// (see faultClass); every attempt starts afresh on another connection:
//
//   - outage (connection refused, reset or closed, server shutting down,
//     class 08): retried with exponential backoff while the database is
//     unreachable, for up to o.outage (Options.RetryMaxElapsed). Failing to
//     start a transaction does not use up an attempt; a transaction that
//     dies mid-way does (see statement).
//   - statement (statement timeout, 53xxx such as disk full, an exception
//     raised by a trigger) and a transaction whose connection died mid-way:
//     retried once, then a *FaultError naming the SQLSTATE.
//   - conflict (serialization failure, deadlock, lock not available):
//     retried up to Options.MaxTries attempts.
//   - anything else (and a cancelled ctx, a lost lease): not retried.
func (s *Store) inTxOpts(ctx context.Context, o txOpts, fn func(pgx.Tx) error) error {
	if o.outage <= 0 {
		o.outage = s.opts.RetryMaxElapsed
	}
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = 100 * time.Millisecond
	eb.MaxInterval = 2 * time.Second
	eb.MaxElapsedTime = 0
	eb.Reset()
	var outageSince time.Time
	attempts, conflicts := 0, 0
	// unsure is the transaction id of an attempt whose COMMIT got no answer
	// (the connection went at that moment): it may have committed. Before
	// anything runs again, the server is asked how that transaction ended,
	// so a commit whose reply was lost is not applied twice (a second
	// sync_runs row that marks the first abandoned, a snapshot's counts
	// rewritten by an attempt that found nothing left to change).
	var unsure string
	// giveUp is the failure an attempt whose outcome was unsure would have
	// ended the retries with (its last allowed attempt): returned once the
	// server says that transaction did not commit.
	var giveUp error
	for {
		var started bool
		var err error
		if unsure != "" {
			var committed bool
			if committed, err = s.committed(ctx, unsure); err == nil {
				if committed {
					s.log.InfoContext(ctx, "the commit whose reply was lost had committed; not running it again")
					return nil
				}
				unsure = ""
				if giveUp != nil {
					return giveUp
				}
			}
		}
		if unsure == "" {
			var xid string
			started, xid, err = s.txOnce(ctx, o, fn)
			if err == nil {
				return nil
			}
			unsure = xid
		}
		class := classify(err)
		if ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
				return fmt.Errorf("%w (%w)", err, cause)
			}
			return err
		}
		if started {
			attempts++
		}
		switch class {
		case faultPermanent:
			return err
		case faultConflict:
			conflicts++
			if conflicts >= s.opts.MaxTries {
				what, code := describeFault(err)
				return &FaultError{What: what, Code: code, Attempts: conflicts, Err: err}
			}
		case faultStatement:
			if attempts >= 2 {
				what, code := describeFault(err)
				return &FaultError{What: what, Code: code, Attempts: attempts, Err: err}
			}
		case faultOutage:
			if started && attempts >= 2 && !o.record {
				what, code := describeFault(err)
				fe := &FaultError{What: what, Code: code, Attempts: attempts, Err: err}
				if unsure == "" {
					return fe
				}
				// The last attempt's COMMIT got no answer: it may have
				// committed, and failing would record the customer failed
				// though its snapshot is written. Ask first.
				giveUp = fe
			}
			if outageSince.IsZero() {
				outageSince = time.Now()
			}
			if waited := time.Since(outageSince); waited >= o.outage {
				// The last attempt's COMMIT may have committed: one last
				// question before calling it failed (a record, or a
				// snapshot, reported failed though written).
				if unsure != "" {
					if committed, cerr := s.committed(ctx, unsure); cerr == nil && committed {
						s.log.InfoContext(ctx, "the commit whose reply was lost had committed; not running it again")
						return nil
					}
				}
				what, code := describeFault(err)
				if code != "" {
					what += " (SQLSTATE " + code + ")"
				}
				return fmt.Errorf("%w: %s for %s (retry_max_elapsed %s): %w", ErrUnavailable, what,
					waited.Round(time.Millisecond), o.outage, err)
			}
		}
		wait := eb.NextBackOff()
		if class != faultOutage {
			wait = min(wait, 200*time.Millisecond)
		} else if left := o.outage - time.Since(outageSince); wait > left {
			wait = max(left, time.Millisecond)
		}
		s.log.WarnContext(ctx, "database error, retrying", slog.String("class", class.String()),
			slog.Int("attempts", attempts), slog.Duration("wait", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// hook calls the test hook, if any, at step.
func (s *Store) hook(step string, tx pgx.Tx) error {
	if s.testHook != nil {
		return s.testHook(step, tx)
	}
	return nil
}

// txOnce makes one attempt. started is true when the transaction began and
// its body ran (a failure then uses up an attempt; see inTxOpts). The
// connection of a failed attempt is closed, so the next one gets another.
//
// When the transaction commits and COMMIT fails with the connection (the
// server may have committed it and the reply been lost), unsure is its
// transaction id, to be checked with committed before another attempt.
func (s *Store) txOnce(ctx context.Context, o txOpts, fn func(pgx.Tx) error) (started bool, unsure string, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, "", err
	}
	defer func() {
		if err != nil && classify(err) != faultPermanent && !conn.Conn().IsClosed() {
			// A fresh connection for the next attempt.
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Hijack().Close(cctx)
			cancel()
			return
		}
		conn.Release()
	}()
	// BEGIN sets the search path too (one round trip: a simple query may
	// hold several statements), before any statement is prepared.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; SELECT set_config('search_path', " + quoteLiteral(s.path) + ", true)"})
	if err != nil {
		return false, "", err
	}
	ptx := &preludeTx{Tx: tx}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The prelude takes the locks and, for a transaction that commits,
	// gets its id (xid8, as text); under a lease, then fences it. It goes
	// with the body's first statements (preludeTx).
	var q []string
	args := pgx.NamedArgs{}
	var dest []any
	if o.lockKey != "" {
		q, args["lock"], dest = append(q, "pg_advisory_xact_lock(hashtextextended(@lock, 0))"), s.lockName(o.lockKey), append(dest, nil)
		if o.sharedKey != "" {
			q, args["shared"], dest = append(q, "pg_advisory_xact_lock_shared(hashtextextended(@shared, 0))"), s.lockName(o.sharedKey), append(dest, nil)
		}
	}
	var xid string
	if o.commit {
		q, dest = append(q, "pg_current_xact_id()::text"), append(dest, &xid)
	}
	if len(q) > 0 {
		ptx.prelude.queue("SELECT "+strings.Join(q, ", "), args, func(br pgx.BatchResults) error {
			if err := br.QueryRow().Scan(dest...); err != nil {
				return &preludeError{err}
			}
			return nil
		})
	}
	if l := leaseFrom(ctx); l != nil && !o.noFence {
		if err := l.queueFence(&ptx.prelude); err != nil {
			return true, "", err
		}
	}
	if err := fn(ptx); err != nil {
		if _, ok := errors.AsType[*preludeError](err); ok {
			// A connection that died before the locks were taken: not
			// an attempt yet, unless the statement failed on a live
			// server.
			return classify(err) != faultOutage, "", err
		}
		return true, "", err
	}
	if !o.commit {
		return true, "", nil
	}
	err = ptx.Commit(ctx)
	if err == nil && s.testHook != nil {
		// Tests lose the reply of a commit that happened.
		err = s.testHook("committed", nil)
	}
	if err != nil && classify(err) == faultOutage {
		return true, xid, err
	}
	return true, "", err
}

// errCommitPending says a transaction whose COMMIT got no answer is still
// in progress on the server; checked again after a wait (an outage-class
// fault).
var errCommitPending = errors.New("a transaction whose commit got no answer is still in progress on the server")

// committed asks the server how the transaction xid (a pg_current_xact_id)
// ended: true when it committed, false when it aborted or is too old to
// know (then it did not commit in this run's lifetime: ids are kept far
// longer than a retry waits). Still in progress is errCommitPending.
func (s *Store) committed(ctx context.Context, xid string) (bool, error) {
	var st *string
	if err := s.pool.QueryRow(ctx, "SELECT pg_xact_status($1::xid8)", xid).Scan(&st); err != nil {
		return false, err
	}
	switch {
	case st == nil:
		return false, nil
	case *st == "committed":
		return true, nil
	case *st == "in progress":
		return false, errCommitPending
	}
	return false, nil
}

// lockName namespaces advisory lock keys by schema, so stores on different
// schemas of one server do not exclude each other.
//
// The per-customer guard is pg_advisory_xact_lock, a transaction-level lock:
// it is released when the transaction ends, however it ends (a lost
// connection rolls the transaction back and frees it), and it never outlives
// its transaction on a pooled server connection, so it holds behind session
// and transaction poolers alike (statement pooling allows no multi-statement
// transactions at all and is not supported).
func (s *Store) lockName(key string) string { return "syncer:" + s.opts.Schema + ":" + key }

// StartRun records a new run in sync_runs (status running) and returns its
// id. When ctx carries a lease (Lease.Context), the run is recorded under it
// (fenced), with the lease's key as sync_runs.credential_key, and the runs of
// that key still marked running, whose processes died without recording an
// end, are marked abandoned.
func (s *Store) StartRun(ctx context.Context, customersTotal int) (int64, error) {
	host, _ := os.Hostname()
	var key, holder any
	l := leaseFrom(ctx)
	if l != nil {
		key, holder = l.key, l.holder
	}
	var id int64
	var abandoned []int64
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		abandoned = abandoned[:0]
		if err := tx.QueryRow(ctx, `INSERT INTO sync_runs (customers_total, hostname, credential_key, status) VALUES ($1, NULLIF($2, ''), $3, $4) RETURNING run_id`,
			customersTotal, host, key, status.Running).Scan(&id); err != nil {
			return err
		}
		if l == nil {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE sync_leases SET run_id = $3 WHERE credential_key = $1 AND holder = $2`, key, holder, id); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE sync_runs SET status = $3, finished_at = now(),
			error = concat_ws('; ', error, $3::text || ': still running when run ' || $2::bigint || ' of the same credential started (its process stopped without recording an end)')
			WHERE credential_key = $1 AND status = $4 AND run_id <> $2 RETURNING run_id`, key, id, status.Abandoned, status.Running)
		if err != nil {
			return err
		}
		abandoned, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return 0, interpret(fmt.Errorf("start run: %w", err))
	}
	if len(abandoned) > 0 {
		s.log.WarnContext(ctx, "marked runs that never recorded an end as abandoned", slog.Any("run_ids", abandoned), slog.Int64("run_id", id))
	}
	return id, nil
}

// FinishRun closes a run with its final status. It writes only the run's own
// row, so it is not fenced by a lease: a run that lost its lease still
// records how it ended. While the database is unreachable it retries with
// backoff for up to Options.RecordRetryMax, so the run is recorded once the
// database is back; ctx cancels the wait (pass context.WithoutCancel to
// record a run that was cancelled).
func (s *Store) FinishRun(ctx context.Context, runID int64, st status.Status, customersFailed int, errText string) error {
	if !st.Final() {
		return fmt.Errorf("finish run %d: invalid status %q", runID, st)
	}
	var n int64
	err := s.inTxOpts(ctx, txOpts{commit: true, noFence: true, record: true, outage: s.opts.RecordRetryMax}, func(tx pgx.Tx) error {
		if err := s.hook("record", tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE sync_runs SET finished_at = now(), status = $2, customers_failed = $3, error = NULLIF($4, '')
			WHERE run_id = $1`, runID, st, customersFailed, errText)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("finish run %d: %w", runID, err))
	}
	if n == 0 {
		return fmt.Errorf("finish run %d: %w", runID, ErrNotFound)
	}
	return nil
}

// SetRunScope records who the run reads the data as (the credential's own
// user, from GetUser without a user id) in sync_runs.principal_user_id and
// principal_user_name, and the customers that user could see in
// visible_customer_ids (sorted). A userID of 0, an empty userName and a nil
// visible are stored as NULL (not known). It fails with ErrNotFound when the
// run does not exist.
func (s *Store) SetRunScope(ctx context.Context, runID int64, userID int64, userName string, visible []int64) error {
	var uid any
	if userID != 0 {
		uid = userID
	}
	if visible != nil {
		visible = slices.Sorted(slices.Values(visible))
	}
	var n int64
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE sync_runs SET principal_user_id = $2, principal_user_name = NULLIF($3, ''),
			visible_customer_ids = $4 WHERE run_id = $1`, runID, uid, userName, visible)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("record the scope of run %d: %w", runID, err))
	}
	if n == 0 {
		return fmt.Errorf("record the scope of run %d: %w", runID, ErrNotFound)
	}
	return nil
}

// RecordCustomerFailure records that a customer's sync failed: a failed
// customer_syncs row (when runID is not 0) and the customer's
// last_attempt_at and last_error. Entity rows are left untouched. Under a
// lease that was lost, only the run's own customer_syncs row is written. Like
// FinishRun, it waits up to Options.RecordRetryMax for the database, and ctx
// cancels the wait.
func (s *Store) RecordCustomerFailure(ctx context.Context, runID, customerID int64, info SyncInfo, cause error) error {
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	l := leaseFrom(ctx)
	err := s.inTxOpts(ctx, txOpts{commit: true, noFence: true, record: true, outage: s.opts.RecordRetryMax}, func(tx pgx.Tx) error {
		if err := s.hook("record", tx); err != nil {
			return err
		}
		held := true
		if l != nil {
			if err := l.Fence(ctx, tx); errors.Is(err, ErrLeaseLost) {
				held = false
			} else if err != nil {
				return err
			}
		}
		if !held && runID == 0 {
			return nil
		}
		if held {
			if _, err := tx.Exec(ctx, `INSERT INTO customers (customer_id, last_attempt_at, last_error) VALUES ($1, now(), $2)
				ON CONFLICT (customer_id) DO UPDATE SET last_attempt_at = excluded.last_attempt_at, last_error = excluded.last_error`,
				customerID, msg); err != nil {
				return err
			}
		}
		if runID == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO customer_syncs (run_id, customer_id, started_at, finished_at, status, api_calls, error, users_unreadable)
			VALUES ($1, $2, $3, now(), $7, $4, $5, $6)
			ON CONFLICT (run_id, customer_id) DO UPDATE SET finished_at = excluded.finished_at, status = excluded.status,
				api_calls = excluded.api_calls, error = excluded.error, users_unreadable = excluded.users_unreadable`,
			runID, customerID, startedAt(info), info.APICalls, msg, info.UsersUnreadable, status.Failed)
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("record failure of customer %d: %w", customerID, err))
	}
	return nil
}

func startedAt(info SyncInfo) time.Time {
	if info.StartedAt.IsZero() {
		return time.Now()
	}
	return info.StartedAt
}

// quoteLiteral quotes s as an SQL escape string literal (E'...': the same
// whatever standard_conforming_strings says).
func quoteLiteral(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}
