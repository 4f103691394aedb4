package load

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/status"
)

func (b *bundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+b.q(table)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLeaseExcludesSecondHolder(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	a, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("first AcquireLease = %v, %v", ok, err)
	}
	if _, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute); err != nil || ok {
		t.Fatalf("second AcquireLease while held = %v, %v; want false", ok, err)
	}
	info, held, err := b.store.LeaseHolderOf(t.Context(), "cred")
	if err != nil || !held || info.Holder != a.Holder() {
		t.Errorf("LeaseHolderOf = %+v, %v, %v; want holder %s", info, held, err, a.Holder())
	}
	other, ok, err := b.store.AcquireLease(t.Context(), "other", time.Minute)
	if err != nil || !ok {
		t.Fatalf("lease of another key = %v, %v; want true", ok, err)
	}
	_ = other.Release(t.Context())
	if err := a.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(t.Context()); err != nil { // idempotent
		t.Fatal(err)
	}
	if a.Err() != nil {
		t.Errorf("released lease reports lost: %v", a.Err())
	}
	c, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("AcquireLease after release = %v, %v; want true", ok, err)
	}
	_ = c.Release(t.Context())
}

func TestLeaseRenewsItself(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	// The TTL leaves a renewal (every TTL/3) a full second to reach the
	// database, which a loaded test machine needs; the test waits for
	// renewals, not for a fixed time.
	const ttl = 1500 * time.Millisecond
	l, ok, err := b.store.AcquireLease(t.Context(), "cred", ttl)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	defer func() { _ = l.Release(context.Background()) }()
	// Wait until the row was renewed after the first TTL had run out: the
	// lease outlived its TTL by renewing itself.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(10 * ttl)
	for renewedPastTTL := false; !renewedPastTTL; {
		select {
		case <-l.Lost():
			t.Fatalf("lease lost while renewing: %v", l.Err())
		case <-giveUp:
			t.Fatal("the lease was not renewed past its first TTL in 10 TTLs")
		case <-tick.C:
		}
		if err := b.pool.QueryRow(t.Context(), `SELECT renewed_at > acquired_at + $1 * interval '1 microsecond' FROM `+
			b.q("sync_leases")+` WHERE credential_key = 'cred'`, ttl.Microseconds()).Scan(&renewedPastTTL); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := b.store.AcquireLease(t.Context(), "cred", time.Minute); ok {
		t.Error("a renewed lease was taken by another holder")
	}
	select {
	case <-l.Lost():
		t.Fatalf("lease lost while renewing: %v", l.Err())
	default:
	}
}

// A crashed holder's expired lease is taken over; the old holder learns it
// lost the lease (its context is cancelled) and its writes are refused.
func TestExpiredLeaseTakenOverAndOldHolderFenced(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	old, ok, err := b.store.AcquireLease(t.Context(), "cred", 3*time.Second)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	// Right after one of the holder's renewals (every second), so that its
	// next one comes after the take-over: a renewal between the expiry
	// below and the take-over would find the row expired and not yet taken.
	var first time.Time
	if err := b.pool.QueryRow(t.Context(), `SELECT renewed_at FROM `+b.q("sync_leases")).Scan(&first); err != nil {
		t.Fatal(err)
	}
	for renewed := first; renewed.Equal(first); time.Sleep(5 * time.Millisecond) {
		if err := b.pool.QueryRow(t.Context(), `SELECT renewed_at FROM `+b.q("sync_leases")).Scan(&renewed); err != nil {
			t.Fatal(err)
		}
		if old.Err() != nil {
			t.Fatalf("lease lost before the take-over: %v", old.Err())
		}
	}
	// The holder "crashes": its row expires.
	if _, err := b.pool.Exec(t.Context(), `UPDATE `+b.q("sync_leases")+` SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	next, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("take-over of an expired lease = %v, %v; want true", ok, err)
	}
	defer func() { _ = next.Release(context.Background()) }()
	select {
	case <-old.Context().Done():
	case <-time.After(3 * time.Second):
		t.Fatal("the old holder's context was not cancelled after the take-over")
	}
	if cause := context.Cause(old.Context()); !errors.Is(cause, ErrLeaseLost) || !strings.Contains(cause.Error(), next.Holder()) {
		t.Errorf("cause = %v, want ErrLeaseLost naming the new holder %s", cause, next.Holder())
	}
	// A write made after the loss, even with the cancellation stripped, is
	// refused and writes nothing.
	if _, err := b.store.WriteSnapshot(context.WithoutCancel(old.Context()), b.runID, baseSnapshot(), SyncInfo{}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("write after losing the lease: %v, want ErrLeaseLost", err)
	}
	if n := b.count(t, "users"); n != 0 {
		t.Errorf("users = %d after a refused write, want 0", n)
	}
	// The new holder writes.
	if _, err := b.store.WriteSnapshot(next.Context(), b.runID, baseSnapshot(), SyncInfo{}); err != nil {
		t.Fatalf("write under the new lease: %v", err)
	}
}

// The fence is checked in the database, inside the write's transaction: a
// holder that has not yet noticed a take-over cannot write.
func TestFenceRefusesWriteAfterTakeOver(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	l, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	defer func() { _ = l.Release(context.Background()) }()
	if _, err := b.pool.Exec(t.Context(), `UPDATE `+b.q("sync_leases")+` SET holder = 'elsewhere:1:beef'`); err != nil {
		t.Fatal(err)
	}
	_, err = b.store.WriteSnapshot(l.Context(), b.runID, baseSnapshot(), SyncInfo{})
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "elsewhere:1:beef") {
		t.Fatalf("write = %v, want ErrLeaseLost naming the holder", err)
	}
	if n := b.count(t, "users"); n != 0 {
		t.Errorf("users = %d after a refused write, want 0", n)
	}
	select {
	case <-l.Lost():
	default:
		t.Error("the fence did not mark the lease lost")
	}
}

// A take-over waits for a fenced write in flight: the old holder's last
// transaction commits before the new holder gets the lease.
func TestTakeOverWaitsForFencedWrite(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	l, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	defer func() { _ = l.Release(context.Background()) }()
	inWrite, resume := make(chan struct{}), make(chan struct{})
	s := NewStore(b.pool, Options{Schema: b.schema})
	s.testHook = func(step string, _ pgx.Tx) error {
		if step == "copy users" {
			close(inWrite)
			<-resume
		}
		return nil
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := s.WriteSnapshot(l.Context(), b.runID, baseSnapshot(), SyncInfo{})
		wrote <- err
	}()
	<-inWrite
	if _, err := b.pool.Exec(t.Context(), `UPDATE `+b.q("sync_leases")+` SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	took := make(chan bool, 1)
	go func() {
		next, ok, err := b.store.AcquireLease(context.Background(), "cred", time.Minute)
		if err == nil && ok {
			defer func() { _ = next.Release(context.Background()) }()
		}
		took <- ok
	}()
	select {
	case <-took:
		t.Fatal("the take-over did not wait for the fenced write in flight")
	case <-time.After(500 * time.Millisecond):
	}
	close(resume)
	if err := <-wrote; err != nil {
		t.Fatalf("the write in flight under the lease: %v", err)
	}
	if ok := <-took; !ok {
		t.Error("the take-over failed after the write committed")
	}
	if n := b.count(t, "users"); n == 0 {
		t.Error("the write in flight was not committed")
	}
}

func TestOrphanedRunsAbandoned(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var orphan, otherCred int64
	if err := b.pool.QueryRow(t.Context(), `INSERT INTO `+b.q("sync_runs")+` (credential_key) VALUES ('cred') RETURNING run_id`).Scan(&orphan); err != nil {
		t.Fatal(err)
	}
	if err := b.pool.QueryRow(t.Context(), `INSERT INTO `+b.q("sync_runs")+` (credential_key) VALUES ('other') RETURNING run_id`).Scan(&otherCred); err != nil {
		t.Fatal(err)
	}
	l, ok, err := b.store.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	defer func() { _ = l.Release(context.Background()) }()
	id, err := b.store.StartRun(l.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	runStatus := func(run int64) (st status.Status, finished bool, msg string) {
		t.Helper()
		var e *string
		if err := b.pool.QueryRow(t.Context(), `SELECT status, finished_at IS NOT NULL, error FROM `+b.q("sync_runs")+` WHERE run_id = $1`, run).Scan(&st, &finished, &e); err != nil {
			t.Fatal(err)
		}
		if e != nil {
			msg = *e
		}
		return
	}
	if st, fin, msg := runStatus(orphan); st != status.Abandoned || !fin || !strings.Contains(msg, "abandoned") {
		t.Errorf("orphaned run: %s finished=%v %q; want abandoned, finished, saying so", st, fin, msg)
	}
	if st, _, _ := runStatus(otherCred); st != status.Running {
		t.Errorf("another credential's running run = %s, want running", st)
	}
	if st, _, _ := runStatus(id); st != status.Running {
		t.Errorf("the new run = %s, want running", st)
	}
	var leaseRun int64
	if err := b.pool.QueryRow(t.Context(), `SELECT run_id FROM `+b.q("sync_leases")+` WHERE credential_key = 'cred'`).Scan(&leaseRun); err != nil || leaseRun != id {
		t.Errorf("sync_leases.run_id = %d, %v; want %d", leaseRun, err, id)
	}
}

// The per-customer guard is transaction-scoped: two writes of one customer
// wait for each other, and a killed connection frees it.
func TestCustomerGuardReleasedWithLostConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var calls atomic.Int32
	s := NewStore(b.pool, Options{Schema: b.schema})
	s.testHook = func(step string, tx pgx.Tx) error {
		if step == "copy users" && calls.Add(1) == 1 {
			var pid int
			if err := tx.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			if _, err := b.pool.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := s.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{}); err != nil {
		t.Fatalf("write retried after its connection was killed: %v", err)
	}
	// The other store's write of the same customer is not blocked by a
	// guard left behind.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := b.store.WriteSnapshot(ctx, b.runID, baseSnapshot(), SyncInfo{}); err != nil {
		t.Fatalf("second write: %v", err)
	}
}
