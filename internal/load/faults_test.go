package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/pgcluster"
	"github.com/msads-syncer/syncer/internal/pgtest"
	"github.com/msads-syncer/syncer/internal/status"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// killer returns a test hook that terminates the writing backend from
// another connection at step, the first `times` times.
func killer(t *testing.T, b *bundle, step string, times int32, calls *atomic.Int32) func(string, pgx.Tx) error {
	return func(s string, tx pgx.Tx) error {
		if s != step || calls.Add(1) > times {
			return nil
		}
		var pid int
		if err := tx.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		if _, err := b.pool.Exec(context.Background(), "SELECT pg_terminate_backend($1, 5000)", pid); err != nil {
			t.Errorf("pg_terminate_backend: %v", err)
		}
		return nil
	}
}

func TestConnectionKilledTwiceFailsCleanly(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var calls atomic.Int32
	s := NewStore(b.pool, Options{Schema: b.schema})
	s.testHook = killer(t, b, "copy users", 2, &calls)
	_, err := s.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{})
	var fe *FaultError
	if !errors.As(err, &fe) || fe.Attempts != 2 {
		t.Fatalf("write killed twice: %v, want a FaultError after 2 attempts", err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("attempts reaching the hook = %d, want 2 (retried once)", got)
	}
	if n := b.count(t, "users"); n != 0 {
		t.Errorf("users = %d after a failed write, want 0", n)
	}
}

func TestStatementTimeoutRetriedOnceThenNamed(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var calls atomic.Int32
	s := NewStore(b.pool, Options{Schema: b.schema})
	s.testHook = func(step string, tx pgx.Tx) error {
		if step != "copy users" {
			return nil
		}
		calls.Add(1)
		if _, err := tx.Exec(context.Background(), "SET LOCAL statement_timeout = '50ms'"); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), "SELECT pg_sleep(2)")
		return err
	}
	_, err := s.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{})
	if err == nil || !strings.Contains(err.Error(), "statement timeout") || !strings.Contains(err.Error(), "57014") {
		t.Fatalf("error = %v, want one naming the statement timeout and SQLSTATE 57014", err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("attempts = %d, want 2 (retried once)", got)
	}
	if n := b.count(t, "users"); n != 0 {
		t.Errorf("users = %d after a failed write, want 0", n)
	}
}

func TestDiskFullTriggerFailsCleanly(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	_, err := b.pool.Exec(t.Context(), `
CREATE FUNCTION `+b.q("disk_full")+`() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100';
END $$;
CREATE TRIGGER disk_full BEFORE INSERT ON `+b.q("users")+` FOR EACH ROW EXECUTE FUNCTION `+b.q("disk_full")+`()`)
	if err != nil {
		t.Fatal(err)
	}
	before := b.versions(t)
	_, err = b.store.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{})
	var fe *FaultError
	if !errors.As(err, &fe) || fe.Code != "53100" || !strings.Contains(err.Error(), "disk full") || fe.Attempts != 2 {
		t.Fatalf("error = %v, want a FaultError naming disk full (53100) after 2 attempts", err)
	}
	b.sameVersions(t, before, "changed by a write that hit a full disk")
	// The reason is recorded for the customer.
	if err := b.store.RecordCustomerFailure(t.Context(), b.runID, cust, SyncInfo{}, err); err != nil {
		t.Fatal(err)
	}
	var msg string
	if err := b.pool.QueryRow(t.Context(), `SELECT error FROM `+b.q("customer_syncs")+` WHERE run_id = $1 AND customer_id = $2`, b.runID, cust).Scan(&msg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "disk full") || !strings.Contains(msg, "53100") {
		t.Errorf("customer_syncs.error = %q, want it to name disk full and 53100", msg)
	}
}

// ownCluster starts a throwaway cluster only this test uses (it is stopped
// and started), with a migrated schema.
func ownCluster(t *testing.T) (*pgcluster.Cluster, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	pool, err := Open(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := schemasql.Migrate(ctx, pool, "msads", "", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return c, "msads"
}

// A server restart during a write, shorter than retry_max_elapsed: the
// write waits for the database and succeeds; the run records its end.
func TestOutageDuringWriteWaitsAndSucceeds(t *testing.T) {
	t.Parallel()
	c, schema := ownCluster(t)
	pool, err := Open(t.Context(), c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := NewStore(pool, Options{Schema: schema, RetryMaxElapsed: 30 * time.Second})
	l, ok, err := s.AcquireLease(t.Context(), "cred", 20*time.Second)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	defer func() { _ = l.Release(context.Background()) }()
	runID, err := s.StartRun(l.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	// Long enough for a few retries (the first waits 100 ms), short
	// enough to keep the test quick.
	const outage = 600 * time.Millisecond
	var stopped atomic.Bool
	restarted := make(chan error, 1)
	s.testHook = func(step string, _ pgx.Tx) error {
		if step != "copy users" || !stopped.CompareAndSwap(false, true) {
			return nil
		}
		if err := c.StopServer(context.Background()); err != nil {
			return err
		}
		go func() {
			time.Sleep(outage)
			restarted <- c.StartServer(context.Background())
		}()
		return nil
	}
	start := time.Now()
	if _, err := s.WriteSnapshot(l.Context(), runID, baseSnapshot(), SyncInfo{}); err != nil {
		t.Fatalf("write during a %v outage: %v", outage, err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < outage {
		t.Errorf("write took %v: the outage did not happen mid-write", d)
	}
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM msads.users`).Scan(&n); err != nil || n == 0 {
		t.Errorf("users after the outage = %d, %v; want rows", n, err)
	}
	if l.Err() != nil {
		t.Errorf("lease lost in a %v outage with a 20s TTL: %v", outage, l.Err())
	}

	// The server goes away between customers; FinishRun waits for it.
	if err := c.StopServer(t.Context()); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(outage)
		restarted <- c.StartServer(context.Background())
	}()
	if err := s.FinishRun(context.Background(), runID, status.Succeeded, 0, ""); err != nil {
		t.Fatalf("FinishRun across an outage: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	var st string
	if err := pool.QueryRow(t.Context(), `SELECT status FROM msads.sync_runs WHERE run_id = $1`, runID).Scan(&st); err != nil || st != string(status.Succeeded) {
		t.Errorf("run status = %q, %v; want succeeded", st, err)
	}
}

// An outage longer than retry_max_elapsed fails the write with
// ErrUnavailable, saying how long it waited.
func TestOutageLongerThanBudgetFails(t *testing.T) {
	t.Parallel()
	c, schema := ownCluster(t)
	pool, err := Open(t.Context(), c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := NewStore(pool, Options{Schema: schema, RetryMaxElapsed: 300 * time.Millisecond})
	if err := c.StopServer(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.StartServer(context.Background()) }()
	start := time.Now()
	_, err = s.WriteSnapshot(t.Context(), 0, baseSnapshot(), SyncInfo{})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "retry_max_elapsed") {
		t.Fatalf("error = %v, want ErrUnavailable naming retry_max_elapsed", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("gave up after %v, want about 300ms", d)
	}
}

// Behind PgBouncer in transaction mode, where a session advisory lock would
// not hold, the lease excludes a second run and fences the first after a
// take-over.
func TestLeaseBehindPgBouncerTransactionMode(t *testing.T) {
	t.Parallel()
	if _, err := pgcluster.PgBouncerPath(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: CI must run the PgBouncer test (make test installs it)", err)
		}
		t.Skipf("%v; this test needs it", err)
	}
	c, schema := ownCluster(t)
	bouncer, err := pgcluster.StartPgBouncer(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer bouncer.Stop()
	open := func() *Store {
		pool, err := Open(t.Context(), bouncer.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return NewStore(pool, Options{Schema: schema})
	}
	first, second := open(), open()

	// Through a transaction pooler a session advisory lock is taken on
	// whichever server connection ran the statement, then that connection
	// serves other clients: it proves nothing. The lease does.
	a, ok, err := first.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("first run's lease = %v, %v", ok, err)
	}
	defer func() { _ = a.Release(context.Background()) }()
	if _, ok, err := second.AcquireLease(t.Context(), "cred", time.Minute); err != nil || ok {
		t.Fatalf("second run's lease while the first holds it = %v, %v; want false", ok, err)
	}
	runID, err := first.StartRun(a.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.WriteSnapshot(a.Context(), runID, baseSnapshot(), SyncInfo{}); err != nil {
		t.Fatalf("snapshot write through pgbouncer: %v", err)
	}

	// The first run's lease expires (it hung); the second takes over and
	// the first's next write is refused.
	if _, err := first.pool.Exec(t.Context(), `UPDATE msads.sync_leases SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	b, ok, err := second.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("take-over through pgbouncer = %v, %v", ok, err)
	}
	defer func() { _ = b.Release(context.Background()) }()
	snap := baseSnapshot()
	snap.Users[0].Email = "late@example.com"
	if _, err := first.WriteSnapshot(context.WithoutCancel(a.Context()), runID, snap, SyncInfo{}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the old holder's write after the take-over: %v, want ErrLeaseLost", err)
	}
	var n int
	if err := first.pool.QueryRow(t.Context(), `SELECT count(*) FROM msads.users WHERE email = 'late@example.com'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("rows written by the fenced-out holder = %d, %v; want 0", n, err)
	}
}

// lostReply returns a test hook that makes the first `times` commits look
// as if their reply was lost: the transaction committed, the caller sees
// the connection go.
func lostReply(times int32, calls *atomic.Int32) func(string, pgx.Tx) error {
	return func(step string, _ pgx.Tx) error {
		if step != "committed" || calls.Add(1) > times {
			return nil
		}
		return errors.New("read tcp 127.0.0.1:5432: unexpected EOF")
	}
}

// A commit whose reply is lost is not run again: the server is asked how the
// transaction ended. Before, the snapshot was written a second time (its
// customer_syncs counts rewritten with zeros: the retry found nothing left
// to change) and StartRun recorded a second run that marked the first
// abandoned.
func TestLostCommitReplyIsNotAppliedTwice(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	s := NewStore(pool, Options{Schema: schema})
	b := &bundle{pool: pool, schema: schema, store: s}
	var calls atomic.Int32
	s.testHook = lostReply(1, &calls)
	l, ok, err := s.AcquireLease(t.Context(), "cred", time.Minute)
	if err != nil || !ok {
		t.Fatalf("AcquireLease with its commit reply lost = %v, %v", ok, err)
	}
	defer func() { _ = l.Release(context.Background()) }()
	calls.Store(0)
	if b.runID, err = s.StartRun(l.Context(), 1); err != nil {
		t.Fatalf("StartRun with its commit reply lost: %v", err)
	}
	equal(t, "runs", b.strings(t, `SELECT run_id, status FROM sync_runs`), []string{fmt.Sprintf("%d|running", b.runID)})
	calls.Store(0)

	ch, err := s.WriteSnapshot(l.Context(), b.runID, baseSnapshot(), SyncInfo{StartedAt: time.Now(), APICalls: 3})
	if err != nil {
		t.Fatalf("WriteSnapshot with its commit reply lost: %v", err)
	}
	if got := calls.Load(); got < 1 {
		t.Fatalf("commits seen by the hook = %d, want the reply lost", got)
	}
	if ch.Users.Added != 4 {
		t.Errorf("changes reported = %+v, want the 4 users the committed attempt added", ch.Users)
	}
	equal(t, "customer_syncs", b.strings(t, `SELECT status, users_seen, users_added, roles_added FROM customer_syncs`),
		[]string{"succeeded|4|4|5"})
	equal(t, "history", b.strings(t, `SELECT change, count(*) FROM users_history GROUP BY 1`), []string{"added|4"})
}

// A connection lost while migrating (the server terminates it) is retried
// like a write's: the migration that was under way is applied on a fresh
// connection and Migrate succeeds. Before, `syncer run` exited 1 at start-up
// when the database dropped it once (db-connection-killed, seed 469960522).
func TestMigrateRetriesALostConnection(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName()
	app := "migrate-" + schema
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	pool, err := Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	admin := pgtest.Pool(t)
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})

	// Hold the migration lock, so Migrate's backend waits for it; kill
	// that backend; then let go.
	hold, err := admin.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(t.Context(), "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "syncer.migrate:"+schema); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var version int
	go func() {
		var err error
		version, err = Migrate(t.Context(), pool, schema, "", 30*time.Second, nil)
		done <- err
	}()
	killed := 0
	for deadline := time.Now().Add(20 * time.Second); killed == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err := admin.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&killed); err != nil {
			t.Fatal(err)
		}
	}
	if err := hold.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("Migrate's backend never waited for the migration lock")
	}
	if err := <-done; err != nil {
		t.Fatalf("Migrate after its connection was terminated: %v", err)
	}
	ms, err := schemasql.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if want := ms[len(ms)-1].Version; version != want {
		t.Errorf("version = %d, want %d", version, want)
	}
}

// The last attempt the retries allow loses its COMMIT reply: the write is
// not reported failed when the server says it committed. (Seen in
// db-connection-killed: a run counted a customer failed whose snapshot and
// succeeded customer_syncs row were written.)
func TestLostCommitReplyOnTheLastAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var kills, lost atomic.Int32
	kill := killer(t, b, "copy users", 1, &kills)
	lose := lostReply(1, &lost)
	b.store.testHook = func(step string, tx pgx.Tx) error {
		if step == "committed" {
			return lose(step, tx)
		}
		return kill(step, tx)
	}
	ch, err := b.store.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{StartedAt: time.Now(), APICalls: 3})
	if err != nil {
		t.Fatalf("write whose first attempt died and whose second lost its commit reply: %v", err)
	}
	if kills.Load() < 2 || lost.Load() < 1 {
		t.Fatalf("kills %d, lost replies %d: the faults did not happen", kills.Load(), lost.Load())
	}
	if ch.Users.Added != 4 {
		t.Errorf("changes = %+v, want the 4 users added", ch.Users)
	}
	equal(t, "customer_syncs", b.strings(t, `SELECT status, users_seen, users_added FROM customer_syncs`), []string{"succeeded|4|4"})
}

// A run's records (a customer's failure, the run's end) are retried for as
// long as the outage lasts, however many attempts lose their connection:
// a snapshot write gives up after two, but a record given up on leaves the
// run's counts without the customer_syncs row they count (seen in
// db-connection-killed, seed 509213757).
func TestRecordsOutlastRepeatedKills(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var calls atomic.Int32
	b.store.testHook = killer(t, b, "record", 3, &calls)
	if err := b.store.RecordCustomerFailure(t.Context(), b.runID, 150, SyncInfo{StartedAt: time.Now()}, errors.New("boom")); err != nil {
		t.Fatalf("failure record whose first 3 attempts lost their connection: %v", err)
	}
	if got := calls.Load(); got != 4 {
		t.Fatalf("failure record attempts = %d, want 4 (3 killed)", got)
	}
	calls.Store(0)
	if err := b.store.FinishRun(t.Context(), b.runID, status.Failed, 1, "1 of 1 customers failed"); err != nil {
		t.Fatalf("run record whose first 3 attempts lost their connection: %v", err)
	}
	if got := calls.Load(); got != 4 {
		t.Fatalf("run record attempts = %d, want 4 (3 killed)", got)
	}
	equal(t, "customer_syncs", b.strings(t, `SELECT customer_id, status, error FROM customer_syncs`), []string{"150|failed|boom"})
	equal(t, "sync_runs", b.strings(t, `SELECT status, customers_failed FROM sync_runs`), []string{"failed|1"})
}
