package load

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// The run lock is a lease row in sync_leases, not a session advisory lock:
// a session lock lives on one server connection, so it vanishes silently
// when that connection drops (the run goes on unprotected) and means nothing
// behind a transaction pooler (PgBouncer pool_mode=transaction), where each
// transaction may run on another server connection. A lease is taken and
// renewed in short transactions on any pooled connection, so it holds through
// session and transaction pooling, and it tells its holder when it is lost.
//
// Fencing: every write made under a lease (the context of Lease.Context, or
// an explicit Lease.Fence) first locks the lease row FOR KEY SHARE inside its
// own transaction and checks that this holder still holds it unexpired. A
// take-over locks the row FOR UPDATE, which waits for those writes to commit
// or roll back, so a new holder never writes alongside an old one's last
// transaction. The holder's own renewals (a plain UPDATE of non-key columns)
// do not conflict with FOR KEY SHARE, so a long write does not hold up its
// own renewal.

// ErrLeaseLost: the lease was taken over, expired before it could be renewed,
// or was released; writes under it are refused.
var ErrLeaseLost = errors.New("lease lost")

// DefaultLeaseTTL is the lease time-to-live when none is given.
const DefaultLeaseTTL = 2 * time.Minute

// Lease is a held lease on one key of sync_leases. It renews itself every
// ttl/3 until Release, or until it is lost.
type Lease struct {
	s      *Store
	key    string
	holder string
	ttl    time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   chan struct{}
	stop   chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	deadline time.Time // local time by which the lease must be renewed
	err      error     // why it was lost
	released bool
}

// LeaseHolder is the holder name of this process's leases: hostname:pid:random.
var leaseHolderPrefix = func() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}()

func newHolder() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return leaseHolderPrefix + ":" + hex.EncodeToString(b)
}

type leaseCtxKey struct{}

// leaseFrom returns the lease carried by ctx, or nil.
func leaseFrom(ctx context.Context) *Lease {
	l, _ := ctx.Value(leaseCtxKey{}).(*Lease)
	return l
}

// LeaseInfo describes who holds a lease.
type LeaseInfo struct {
	Key       string
	Holder    string
	RunID     int64 // 0 when the holder has not recorded a run
	ExpiresAt time.Time
}

// AcquireLease takes the lease on key for ttl (DefaultLeaseTTL when 0)
// without waiting. ok is false when another holder holds it unexpired; then
// held describes that holder (see LeaseHolderOf). A lease whose holder let it
// expire (a crashed process) is taken over; the take-over waits for writes
// still running under the old holder to end.
//
// The returned lease's Context derives from ctx: pass the context of the work
// the lease protects. Call Release when done.
func (s *Store) AcquireLease(ctx context.Context, key string, ttl time.Duration) (*Lease, bool, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	holder := newHolder()
	table := s.table("sync_leases")
	var ok bool
	start := time.Now()
	err := s.inTxOpts(ctx, txOpts{commit: true, noFence: true}, func(tx pgx.Tx) error {
		ok = false
		for range 3 {
			start = time.Now()
			tag, err := tx.Exec(ctx, `INSERT INTO `+table+` (credential_key, holder, expires_at)
				VALUES ($1, $2, clock_timestamp() + $3 * interval '1 microsecond') ON CONFLICT (credential_key) DO NOTHING`,
				key, holder, ttl.Microseconds())
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				ok = true
				return nil
			}
			var expired bool
			var current string
			err = tx.QueryRow(ctx, `SELECT expires_at <= clock_timestamp(), holder FROM `+table+` WHERE credential_key = $1`, key).Scan(&expired, &current)
			if errors.Is(err, pgx.ErrNoRows) {
				continue // released meanwhile: insert again
			}
			if err == nil && current == holder && !expired {
				// Ours: an earlier attempt of this transaction committed,
				// but its answer was lost with the connection.
				ok = true
				return nil
			}
			if err != nil || !expired {
				return err
			}
			// Expired: lock it, which waits for the old holder's fenced
			// writes to end, and look again.
			err = tx.QueryRow(ctx, `SELECT expires_at <= clock_timestamp() FROM `+table+` WHERE credential_key = $1 FOR UPDATE`, key).Scan(&expired)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil || !expired {
				return err
			}
			start = time.Now()
			_, err = tx.Exec(ctx, `UPDATE `+table+` SET holder = $2, run_id = NULL, acquired_at = clock_timestamp(),
				renewed_at = clock_timestamp(), expires_at = clock_timestamp() + $3 * interval '1 microsecond'
				WHERE credential_key = $1`, key, holder, ttl.Microseconds())
			ok = err == nil
			return err
		}
		return nil
	})
	if err != nil {
		return nil, false, interpret(fmt.Errorf("acquire lease %q: %w", key, err))
	}
	if !ok {
		return nil, false, nil
	}
	l := &Lease{s: s, key: key, holder: holder, ttl: ttl, deadline: start.Add(ttl),
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	lctx, cancel := context.WithCancelCause(ctx)
	l.ctx = context.WithValue(lctx, leaseCtxKey{}, l)
	l.cancel = cancel
	go l.renew(context.WithoutCancel(ctx))
	s.log.DebugContext(ctx, "lease acquired", slog.String("key", key), slog.String("holder", holder), slog.Duration("ttl", ttl))
	return l, true, nil
}

// LeaseHolderOf returns who holds the lease on key now (ok false when nobody
// holds it, or it has expired).
func (s *Store) LeaseHolderOf(ctx context.Context, key string) (info LeaseInfo, ok bool, err error) {
	var runID *int64
	err = s.pool.QueryRow(ctx, `SELECT holder, run_id, expires_at FROM `+s.table("sync_leases")+`
		WHERE credential_key = $1 AND expires_at > clock_timestamp()`, key).Scan(&info.Holder, &runID, &info.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return LeaseInfo{Key: key}, false, nil
	}
	if err != nil {
		return LeaseInfo{Key: key}, false, interpret(fmt.Errorf("read lease %q: %w", key, err))
	}
	info.Key = key
	if runID != nil {
		info.RunID = *runID
	}
	return info, true, nil
}

// Key returns the lease's key.
func (l *Lease) Key() string { return l.key }

// Holder returns this lease's holder name (hostname:pid:random).
func (l *Lease) Holder() string { return l.holder }

// TTL returns the lease's time-to-live.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Context returns a context derived from the one given to AcquireLease that
// is cancelled, with the loss as its cause (context.Cause wraps
// ErrLeaseLost), the moment the lease is lost, or when it is released. Store
// writes made with it (or any context derived from it, even through
// context.WithoutCancel) are fenced by the lease.
func (l *Lease) Context() context.Context { return l.ctx }

// Lost returns a channel closed when the lease is lost (not when released).
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns why the lease was lost (wrapping ErrLeaseLost), or nil.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// lose marks the lease lost with cause (once) and cancels its context.
func (l *Lease) lose(cause error) {
	l.mu.Lock()
	if l.err != nil || l.released {
		l.mu.Unlock()
		return
	}
	l.err = cause
	l.mu.Unlock()
	close(l.lost)
	l.cancel(cause)
	l.s.log.Error("lease lost", slog.String("key", l.key), slog.String("holder", l.holder), slog.Any("error", cause))
}

// renew extends the lease every ttl/3, and marks it lost when the row names
// another holder or has expired, or when the local clock passes the
// deadline without a successful renewal.
func (l *Lease) renew(ctx context.Context) {
	defer close(l.done)
	every := l.ttl / 3
	retry := min(every, max(l.ttl/20, 50*time.Millisecond))
	wait := every
	table := l.s.table("sync_leases")
	for {
		l.mu.Lock()
		deadline := l.deadline
		l.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			l.lose(fmt.Errorf("%w: %q was not renewed before it expired (the database did not answer in time)", ErrLeaseLost, l.key))
			return
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
		if time.Now().After(deadline) {
			l.lose(fmt.Errorf("%w: %q was not renewed before it expired (the database did not answer in time)", ErrLeaseLost, l.key))
			return
		}
		start := time.Now()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		var expires time.Time
		err := l.s.pool.QueryRow(rctx, `UPDATE `+table+` SET renewed_at = clock_timestamp(),
			expires_at = clock_timestamp() + $3 * interval '1 microsecond'
			WHERE credential_key = $1 AND holder = $2 AND expires_at > clock_timestamp() RETURNING expires_at`,
			l.key, l.holder, l.ttl.Microseconds()).Scan(&expires)
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.deadline = start.Add(l.ttl)
			l.mu.Unlock()
			wait = every
		case errors.Is(err, pgx.ErrNoRows):
			hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
			info, held, _ := l.s.LeaseHolderOf(hctx, l.key)
			hcancel()
			if held {
				l.lose(fmt.Errorf("%w: %q was taken over by %s", ErrLeaseLost, l.key, info.Holder))
			} else {
				l.lose(fmt.Errorf("%w: %q expired or was removed before it could be renewed", ErrLeaseLost, l.key))
			}
			return
		default:
			l.s.log.Warn("could not renew the lease; retrying", slog.String("key", l.key), slog.Any("error", err),
				slog.Duration("expires_in", time.Until(deadline)))
			wait = retry
		}
	}
}

// Fence checks, inside tx, that this lease is still held: it locks the lease
// row FOR KEY SHARE (a take-over then waits until tx ends) and fails with
// ErrLeaseLost, marking the lease lost, when another holder holds it or it
// has expired.
func (l *Lease) Fence(ctx context.Context, tx pgx.Tx) error {
	var p pipeline
	if err := l.queueFence(&p); err != nil {
		return err
	}
	return p.send(ctx, tx)
}

// queueFence queues in p the fence's statement and what checks its
// result (see Fence), or fails as Fence when the lease is known lost.
func (l *Lease) queueFence(p *pipeline) error {
	if err := l.Err(); err != nil {
		return err
	}
	p.queue(`SELECT holder, expires_at > clock_timestamp() FROM `+l.s.table("sync_leases")+`
		WHERE credential_key = @key FOR KEY SHARE`, pgx.NamedArgs{"key": l.key}, func(br pgx.BatchResults) error {
		var holder string
		var valid bool
		err := br.QueryRow().Scan(&holder, &valid)
		var cause error
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			cause = fmt.Errorf("%w: %q is no longer held by anyone; write refused", ErrLeaseLost, l.key)
		case err != nil:
			return err
		case holder != l.holder:
			cause = fmt.Errorf("%w: %q is now held by %s; write refused", ErrLeaseLost, l.key, holder)
		case !valid:
			cause = fmt.Errorf("%w: %q has expired; write refused", ErrLeaseLost, l.key)
		default:
			return nil
		}
		l.lose(cause)
		return cause
	})
	return nil
}

// Release stops renewing and deletes the lease row when this holder still
// holds it. The lease's context is cancelled. Releasing twice is harmless.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.cancel(fmt.Errorf("lease %q released", l.key))
	_, err := l.s.pool.Exec(ctx, `DELETE FROM `+l.s.table("sync_leases")+` WHERE credential_key = $1 AND holder = $2`, l.key, l.holder)
	if err != nil {
		return interpret(fmt.Errorf("release lease %q (it expires by itself within %s): %w", l.key, l.ttl, err))
	}
	return nil
}

// table returns the schema-qualified, quoted name of a table of the store.
func (s *Store) table(name string) string { return pgx.Identifier{s.opts.Schema, name}.Sanitize() }
