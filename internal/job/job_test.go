package job_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
	"github.com/msads-syncer/syncer/internal/status"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type bundle struct {
	sim    *msadstest.Server
	store  *load.Store
	runner *job.Runner
	pool   *pgxpool.Pool
	schema string
}

func setup(t *testing.T, ds *msadstest.Dataset, concurrency int) bundle {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	sim := msadstest.NewServer(ds)
	t.Cleanup(sim.Close)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	counters := &job.Counters{}
	store := load.NewStore(pool, load.Options{Schema: schema, Logger: logger})
	client, err := extract.New(extract.Config{
		APIURL: sim.APIURL(), TokenURL: sim.TokenURL(), DeveloperToken: sim.DeveloperToken(),
		ClientID: sim.ClientID(), ClientSecret: sim.ClientSecret(), RefreshToken: sim.RefreshToken(),
		RequestsPerSecond: 500, ThrottleWait: 50 * time.Millisecond, RetryMaxElapsed: time.Second,
		RequestTimeout: 5 * time.Second, Store: &extract.MemoryTokenStore{}, Logger: logger,
		Observer: counters,
	})
	if err != nil {
		t.Fatal(err)
	}
	return bundle{sim: sim, store: store, pool: pool, schema: schema, runner: &job.Runner{
		Client: client, Store: store, Logger: logger, Counters: counters,
		CredentialKey: job.CredentialKey(sim.ClientID(), sim.DeveloperToken()) + schema,
		CustomerIDs:   ds.CustomerIDs(), Concurrency: concurrency, AccountNames: true,
	}}
}

func TestRunFetchesSharedUsersOnce(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(31, 6, 15)
	b := setup(t, ds, 3)
	res, err := b.runner.Run(t.Context(), job.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Succeeded || res.Failed != 0 || len(res.Customers) != 6 {
		t.Fatalf("result %+v", res)
	}
	listed := 0
	for _, id := range ds.CustomerIDs() {
		listed += len(ds.ListedUserIDs(id))
	}
	distinct := ds.DistinctListedUsers()
	if distinct == listed {
		t.Fatal("data set has no user listed under two customers: the test proves nothing")
	}
	// One GetUser per distinct listed user, plus the signed-in user's own.
	if got := b.sim.Calls("GetUser"); got != distinct+1 {
		t.Errorf("GetUser calls = %d, want %d (distinct users + the signed-in user; %d listings)", got, distinct+1, listed)
	}
	users := 0
	for _, c := range res.Customers {
		users += c.Users
		if c.DurationSec <= 0 {
			t.Errorf("customer %d: duration_seconds = %v, want > 0", c.CustomerID, c.DurationSec)
		}
	}
	if users != listed {
		t.Errorf("users seen = %d, want %d", users, listed)
	}
	if got := b.runner.Counters.UsersFetched.Load(); got != int64(distinct+1) {
		t.Errorf("progress counted %d users fetched, want %d", got, distinct+1)
	}
}

func TestRunOnlyAndUnknownCustomer(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(32, 3, 4)
	b := setup(t, ds, 2)
	only := ds.CustomerIDs()[1]
	res, err := b.runner.Run(t.Context(), job.Options{Only: []int64{only}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Customers) != 1 || res.Customers[0].CustomerID != only || res.Status != status.Succeeded {
		t.Fatalf("result %+v", res)
	}
	res, err = b.runner.Run(t.Context(), job.Options{Only: []int64{42}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Failed || res.Fatal == nil {
		t.Fatalf("unknown --customer: status %s, fatal %v", res.Status, res.Fatal)
	}
}

func TestRunStopsEarlyWhenCredentialsAreRejected(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(33, 8, 4)
	b := setup(t, ds, 2)
	// Every call refused with 105, even with a fresh token.
	b.sim.SetFault(msadstest.AnyOp, msadstest.Fault{Code: 105})
	res, err := b.runner.Run(t.Context(), job.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Failed || res.Fatal == nil {
		t.Fatalf("status %s, fatal %v", res.Status, res.Fatal)
	}
	if !errors.Is(res.Fatal, extract.ErrCredentialsRejected) {
		t.Fatalf("fatal %v, want ErrCredentialsRejected", res.Fatal)
	}
	// Found out by the signed-in user's lookup, before any customer.
	if n := b.sim.Calls("GetUsersInfo"); n != 0 {
		t.Errorf("GetUsersInfo called %d times after the credentials were rejected", n)
	}
	if n := b.sim.Calls("Token"); n > 2 {
		t.Errorf("token endpoint called %d times, want at most 2", n)
	}
}

func TestRunOneCustomerRefusedIsItsFailureAlone(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(34, 4, 4)
	b := setup(t, ds, 2)
	refused := ds.CustomerIDs()[2]
	// 105 on every call of one customer, with a fresh token too: that
	// customer's access was removed; the others sync.
	b.sim.SetFault(msadstest.AnyOp, msadstest.Fault{CustomerID: refused, Code: 105})
	res, err := b.runner.Run(t.Context(), job.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Partial || res.Fatal != nil || res.Failed != 1 {
		t.Fatalf("status %s, failed %d, fatal %v; want partial with one failure", res.Status, res.Failed, res.Fatal)
	}
	for _, c := range res.Customers {
		if (c.CustomerID == refused) != (c.Status == status.Failed) {
			t.Errorf("customer %d: %s %s", c.CustomerID, c.Status, c.Error)
		}
	}
}

func TestRunGracefulStopRecordsCanceled(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(34, 6, 8)
	b := setup(t, ds, 1)
	b.sim.SetFault("GetUser", msadstest.Fault{Latency: 20 * time.Millisecond})
	stop := make(chan struct{})
	go func() {
		for b.runner.Counters.CustomersDone.Load() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		close(stop)
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := b.runner.Run(ctx, job.Options{Stop: stop})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Canceled {
		t.Fatalf("status %s, want canceled", res.Status)
	}
	ok := 0
	for _, c := range res.Customers {
		if c.Status == status.Succeeded {
			ok++
		}
	}
	if ok == 0 || ok == len(ds.CustomerIDs()) {
		t.Errorf("%d of %d customers succeeded: the stop did not land mid-run", ok, len(ds.CustomerIDs()))
	}
}

func TestSecondRunFindsTheLockHeld(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(35, 2, 6)
	b := setup(t, ds, 1)
	lease, ok, err := b.store.AcquireLease(t.Context(), b.runner.CredentialKey, time.Minute)
	if err != nil || !ok {
		t.Fatalf("AcquireLease: %v %v", ok, err)
	}
	res, err := b.runner.Run(t.Context(), job.Options{})
	_ = lease.Release(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Locked {
		t.Fatalf("status %s, want locked", res.Status)
	}
	if n := b.sim.TotalCalls(); n != 0 {
		t.Errorf("a locked run made %d API calls", n)
	}
}

func TestCredentialKeyHidesSecrets(t *testing.T) {
	t.Parallel()
	k := job.CredentialKey("client-abc", "devtoken-xyz")
	if k == job.CredentialKey("client-abc", "other") || len(k) < 10 {
		t.Fatalf("key %q does not tell credentials apart", k)
	}
	for _, s := range []string{"client-abc", "devtoken-xyz"} {
		if strings.Contains(k, s) {
			t.Errorf("key %q shows %q", k, s)
		}
	}
}

func TestLeaseLostMidRunStopsTheRun(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(41, 40, 6)
	b := setup(t, ds, 4)
	b.runner.LeaseTTL = time.Minute
	// Slow reads, so customers are mid-fetch when the loss is found.
	b.sim.SetFault(msadstest.OpGetUser, msadstest.Fault{Latency: 20 * time.Millisecond})
	pool, schema := pgtest.Pool(t), b.store.Schema()
	runs := pgx.Identifier{schema, "sync_runs"}.Sanitize()
	leases := pgx.Identifier{schema, "sync_leases"}.Sanitize()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var n int
			_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM `+runs+` WHERE status = 'running'`).Scan(&n)
			if n > 0 && b.runner.Counters.CustomersDone.Load() >= 1 {
				_, _ = pool.Exec(context.Background(), `UPDATE `+leases+` SET holder = 'thief:1:0'`)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	res, err := b.runner.Run(t.Context(), job.Options{})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Failed || !errors.Is(res.Fatal, load.ErrLeaseLost) || !strings.Contains(res.Error, "lease was lost") {
		t.Fatalf("status %s, fatal %v, error %q; want failed with the lease lost", res.Status, res.Fatal, res.Error)
	}
	if ok := len(res.Customers) - res.Failed; ok == len(ds.CustomerIDs()) {
		t.Errorf("every customer synced: the loss did not stop the run")
	}
	var st, msg string
	if err := pool.QueryRow(t.Context(), `SELECT status, coalesce(error, '') FROM `+runs+` WHERE run_id = $1`, res.RunID).Scan(&st, &msg); err != nil {
		t.Fatal(err)
	}
	if st != string(status.Failed) || !strings.Contains(msg, "lease") {
		t.Errorf("recorded run: %s %q; want failed, naming the lease", st, msg)
	}
	// Each customer the loss cut short says so, in the result and in
	// customer_syncs (not only "context canceled"); with reads slowed,
	// some were cut short mid-fetch, which is what this checks.
	cut := 0
	for _, c := range res.Customers {
		if c.Status == status.Failed && !strings.Contains(c.Error, "lease") {
			t.Errorf("customer %d failed with %q: the error does not name the lost lease", c.CustomerID, c.Error)
		}
		if c.Status == status.Failed && strings.Contains(c.Error, "context canceled") {
			cut++
		}
	}
	if cut == 0 {
		t.Errorf("no customer was cut short mid-fetch (%+v): the case is not exercised", res.Customers)
	}
	rows, err := pool.Query(t.Context(), `SELECT customer_id, error FROM `+pgx.Identifier{schema, "customer_syncs"}.Sanitize()+
		` WHERE run_id = $1 AND status = 'failed'`, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var e string
		if err := rows.Scan(&id, &e); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(e, "lease") {
			t.Errorf("customer_syncs of customer %d: error %q does not name the lost lease", id, e)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// A user listed by two customers, who leaves both while each customer's
// listing fails in turn: each customer keeps the user's role in the other
// (that listing still listed the user when it was written), and once no
// customer lists the user, the run's sweep removes them all, also in the
// customer that failed in that run. (Seen in the fault suite,
// malformed-bodies seed 482078697: the sweep looked only at the customers
// that synced, and a role stayed current, for a user nobody lists, for as
// long as its customer failed.)
func TestSweepRemovesRolesInCustomersThatFailed(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(47, 2, 3)
	b := setup(t, ds, 2)
	a, c := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
	const u = 7700001
	b.sim.AddUser(a, msads.User{ID: u, UserName: "shared", Email: "shared@example.com", LifecycleStatus: "Active"},
		[]msads.Role{{CustomerID: a, RoleID: msads.RoleSuperAdmin}, {CustomerID: c, RoleID: msads.RoleStandardUser}})
	roles := func() []string { return b.currentRoles(t, u) }
	run := func(failing int64, want status.Status) {
		t.Helper()
		b.sim.ClearFaults()
		if failing != 0 {
			b.sim.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{CustomerID: failing, Malformed: 100})
		}
		res, err := b.runner.Run(t.Context(), job.Options{})
		if err != nil || res.Status != want {
			t.Fatalf("run with customer %d failing: %v, %v; want %s", failing, res.Status, err, want)
		}
	}
	run(0, status.Succeeded)
	if got := roles(); len(got) != 2 {
		t.Fatalf("roles after the first run = %v, want one in each customer", got)
	}
	b.sim.SetRoles(u, nil) // the user leaves both customers
	run(a, status.Partial) // c drops the user; a (failing) still lists it: c keeps its role
	run(c, status.Partial) // a drops the user; nobody lists it any more
	if got := roles(); len(got) != 0 {
		t.Errorf("current roles of a user no customer lists = %v, want none (the sweep removes them in every customer it can see)", got)
	}
}

// The sweep speaks only for customers whose listing the warehouse holds: a
// role in a customer the credential can see but does not sync stays when
// the synced customer's listing drops the user (that customer may still
// list the user; the warehouse cannot tell).
func TestSweepKeepsRolesInCustomersNeverSynced(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(48, 2, 3)
	b := setup(t, ds, 2)
	a, c := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
	b.runner.CustomerIDs = []int64{a}
	const u = 7700002
	b.sim.AddUser(a, msads.User{ID: u, UserName: "shared", Email: "shared2@example.com", LifecycleStatus: "Active"},
		[]msads.Role{{CustomerID: a, RoleID: msads.RoleSuperAdmin}, {CustomerID: c, RoleID: msads.RoleStandardUser}})
	roles := func() []string { return b.currentRoles(t, u) }
	for i, change := range []func(){func() {}, func() { b.sim.RemoveUser(a, u) }} {
		change()
		if res, err := b.runner.Run(t.Context(), job.Options{}); err != nil || res.Status != status.Succeeded {
			t.Fatalf("run %d: %v, %v", i+1, res.Status, err)
		}
	}
	want := []string{fmt.Sprintf("%d:%d", c, msads.RoleStandardUser)}
	if got := roles(); !slices.Equal(got, want) {
		t.Errorf("roles after customer %d dropped the user = %v, want %v (the role in %d, a customer never synced, is not the sweep's)", a, got, want, c)
	}
}

// currentRoles returns user u's current roles as "customer:role", sorted.
func (b bundle) currentRoles(t *testing.T, u int64) []string {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT customer_id::text || ':' || role_id FROM `+
		pgx.Identifier{b.schema, "user_roles"}.Sanitize()+` WHERE user_id = $1 AND removed_at IS NULL ORDER BY 1`, u)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
