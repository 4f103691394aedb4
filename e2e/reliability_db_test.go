package e2e_test

// The database faults of the fault-injection suite (RELIABILITY.md): the
// syncer's connections killed mid-snapshot, the server restarted between
// customers and during a write (shorter and longer than retry_max_elapsed),
// a statement_timeout hit, a full disk. Each case drives several runs with
// API changes between them and ends every run with checkInvariants; after
// every run it also checks that the run's sync_runs row is finished (or
// that the next run marks it abandoned) and that every failed customer's
// customer_syncs.error names the fault.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgcluster"
	"github.com/msads-syncer/syncer/internal/pgtest"
	schemasql "github.com/msads-syncer/syncer/sql"
)

const (
	// dbSync: two customers in flight, so the writes spread over the run.
	dbSync = "  concurrency: 2\n  request_timeout: 2s\n  retry_max_elapsed: 2s\n  lease_ttl: 3s\n"
	// rideSync rides out a server restart: retry_max_elapsed well above
	// the outage, and a lease that outlives it (a run that cannot renew
	// its lease for lease_ttl stops, by design). The server is down for
	// its stop, the outage and its start: on a loaded CI machine stopping
	// and starting took 4 s for an outage of 0.34 s, past a 6 s lease
	// renewed every 2 s, so the lease is 30 s. One customer at a time,
	// so "between customers" is a moment of the run.
	rideSync = "  concurrency: 1\n  request_timeout: 2s\n  retry_max_elapsed: 20s\n  lease_ttl: 30s\n"
	// shortSync: an outage of 0.9–1.4 s outlasts retry_max_elapsed (but
	// not the lease).
	shortSync = "  concurrency: 1\n  request_timeout: 2s\n  retry_max_elapsed: 500ms\n  lease_ttl: 30s\n"
)

// withParams adds runtime parameters to a libpq/pgx URL or key=value DSN.
func withParams(t *testing.T, dsn string, kv ...string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for i := 0; i+1 < len(kv); i += 2 {
		dsn += " " + kv[i] + "=" + kv[i+1]
	}
	return dsn
}

// newEnvAt is newEnvSync on a database the test chose: the config's
// database.url is dbURL; pool and schema are the test's view of it.
func newEnvAt(t *testing.T, ds *msadstest.Dataset, syncYAML string, pool *pgxpool.Pool, schema, dbURL string) *env {
	t.Helper()
	sim := msadstest.NewServer(ds)
	t.Cleanup(sim.Close)
	e := &env{t: t, sim: sim, ds: ds, pool: pool, schema: schema, dir: t.TempDir()}
	e.config = e.writeConfig(syncYAML, "")
	b, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(b), fmt.Sprintf("url: %q", pgtest.URL(t)), fmt.Sprintf("url: %q", dbURL), 1)
	if !strings.Contains(y, fmt.Sprintf("url: %q", dbURL)) {
		t.Fatalf("could not point the config at %s", dbURL)
	}
	if err := os.WriteFile(e.config, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// newEnvApp is an env on the shared test cluster whose syncer connections
// carry an application_name of their own (so the case can find and kill
// them without touching other tests' runs), plus any runtime parameters
// given (e.g. statement_timeout).
func newEnvApp(t *testing.T, ds *msadstest.Dataset, syncYAML string, params ...string) (*env, string) {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	app := "syncer-" + schema
	return newEnvAt(t, ds, syncYAML, pool, schema, withParams(t, pgtest.URL(t), append([]string{"application_name", app}, params...)...)), app
}

// newEnvOwnCluster is an env on a throwaway cluster of the test's own (it
// is stopped and started), migrated with the binary's migrations.
func newEnvOwnCluster(t *testing.T, ds *msadstest.Dataset, syncYAML string) (*env, *pgcluster.Cluster) {
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
	cfg, err := pgxpool.ParseConfig(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "syncer-test"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	const schema = "msads"
	if _, err := schemasql.Migrate(ctx, pool, schema, "", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return newEnvAt(t, ds, syncYAML, pool, schema, c.URL()), c
}

// terminate ends every backend whose application_name is app (the
// syncer's: load.Open names its connections) and returns how many.
func terminate(ctx context.Context, pool *pgxpool.Pool, app string) (int, error) {
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`, app).Scan(&n)
	return n, err
}

// runDuring runs one sync to its end under a fresh API version while
// inject runs beside it (done is closed when the run has ended; runDuring
// waits for inject to return), and records it.
func (w *world) runDuring(label string, inject func(done <-chan struct{})) result {
	w.t.Helper()
	v := w.version()
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	cmd, o, er := w.start(ctx)
	done, injected := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(injected)
		inject(done)
	}()
	r := w.wait(cmd, o, er)
	close(done)
	<-injected
	w.record(&runRec{label: label, version: v, results: []result{r}})
	return r
}

// dbOutcome is what a run under a database fault left in sync_runs and
// customer_syncs.
type dbOutcome struct {
	status    string  // of its sync_runs row; "" when none was recorded
	failed    []int64 // customers with a failed customer_syncs row
	succeeded int
	lostEnd   bool // its row still says 'running' after the process exited
}

// judgeDBRun checks the run just recorded: its sync_runs row is finished,
// or, when the fault kept it from recording its end, it is judged as a
// killed run (the next run must mark it abandoned: checkRuns); and every
// failed customer's customer_syncs.error matches want (names the fault).
func judgeDBRun(t *testing.T, w *world, want *regexp.Regexp) dbOutcome {
	t.Helper()
	rec := w.runs[len(w.runs)-1]
	var out dbOutcome
	for _, id := range rec.runIDs {
		var finished bool
		if err := w.e.pool.QueryRow(t.Context(), w.sql("SELECT status, finished_at IS NOT NULL FROM {S}.sync_runs WHERE run_id = $1"), id).Scan(&out.status, &finished); err != nil {
			t.Fatal(err)
		}
		if out.status == "running" || !finished {
			out.lostEnd = true
			rec.killed = true // no recorded end: the next run must close it
			t.Logf("%s: run_id %d: its end was not recorded (status %q); the next run must mark it abandoned", rec.label, id, out.status)
		}
		rows, err := w.e.pool.Query(t.Context(), w.sql("SELECT customer_id, status, coalesce(error, '') FROM {S}.customer_syncs WHERE run_id = $1 ORDER BY customer_id"), id)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var c int64
			var status, msg string
			if err := rows.Scan(&c, &status, &msg); err != nil {
				t.Fatal(err)
			}
			if status == "succeeded" {
				out.succeeded++
				continue
			}
			out.failed = append(out.failed, c)
			t.Logf("%s: customer %d failed: %s", rec.label, c, msg)
			if !want.MatchString(msg) {
				t.Errorf("%s: customer %d failed, but customer_syncs.error does not name the fault (%s): %q\n\t%s", rec.label, c, want, msg, w.replay)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// abandonedAfter checks that a run whose end was lost was marked
// abandoned by the runs after it.
func abandonedAfter(t *testing.T, w *world, rec *runRec) {
	t.Helper()
	for _, id := range rec.runIDs {
		var status string
		if err := w.e.pool.QueryRow(t.Context(), w.sql("SELECT status FROM {S}.sync_runs WHERE run_id = $1"), id).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if status != "abandoned" {
			t.Errorf("%s: run_id %d still %q after the next run: want abandoned\n\t%s", rec.label, id, status, w.replay)
		}
	}
}

// syncerLine is the one clear "syncer: …" line of a run's stderr ("" if
// none).
func syncerLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "syncer: ") {
			return l
		}
	}
	return ""
}

// joinUser adds a user to customer c (a change the customer's next
// snapshot must write to users, so a trigger on users fires for it).
func joinUser(sim *msadstest.Server, c int64, id int64) {
	now := time.Now().UTC().Truncate(time.Second)
	sim.AddUser(c, msads.User{ID: id, UserName: fmt.Sprintf("dbjoiner%d@example.com", id), Email: fmt.Sprintf("dbjoiner%d@example.com", id),
		FirstName: "Db", LastName: "Joiner", Lcid: "EnglishUS", LifecycleStatus: "Active", LastModifiedTime: &now},
		[]msads.Role{{CustomerID: c, RoleID: msads.RoleStandardUser}})
}

func TestReliabilityDB(t *testing.T) {
	t.Parallel()

	// The syncer's backends terminated (pg_terminate_backend) at a seeded
	// moment of a run: once, and repeatedly.
	t.Run("db-connection-killed", func(t *testing.T) {
		t.Parallel()
		seed, replay := caseSeed(t)
		rng := rand.New(rand.NewPCG(uint64(seed), 21))
		e, app := newEnvApp(t, msadstest.Generate(seed%1000, 4, 8), dbSync)
		// Slow enough that the writes spread over the run.
		e.sim.SetFault(msadstest.OpGetUser, msadstest.Fault{Latency: 15 * time.Millisecond})
		w := newWorld(t, e, replay)
		ta := &tally{}
		start := time.Now()
		r := w.run("clean first run")
		d := time.Since(start)
		ta.add(r)
		if r.code != 0 {
			t.Fatalf("clean first run: exit %d: %s\n\t%s", r.code, r.stderr, replay)
		}
		ta.check(t, w)
		fault := regexp.MustCompile(`57P01|terminated by the server|connection to the database lost|lease lost`)
		var notes []string
		for i := range 4 {
			repeated := i%2 == 1
			changes := apiChanges(rng, e.sim)
			delay := time.Duration(rng.Int64N(int64(d)))
			every := time.Duration(15+rng.IntN(50)) * time.Millisecond
			var kills, rounds atomic.Int32
			what := fmt.Sprintf("backends terminated once after %v", delay.Round(time.Millisecond))
			if repeated {
				what = fmt.Sprintf("backends terminated every %v from %v on (up to 12 times)", every, delay.Round(time.Millisecond))
			}
			r := w.runDuring(fmt.Sprintf("iteration %d: %s", i+1, what), func(done <-chan struct{}) {
				select {
				case <-time.After(delay):
				case <-done:
					return
				}
				for n := 0; ; n++ {
					k, err := terminate(context.WithoutCancel(t.Context()), e.pool, app)
					if err != nil {
						t.Errorf("terminate: %v", err)
						return
					}
					kills.Add(int32(k))
					rounds.Add(1)
					if !repeated || n == 11 {
						return
					}
					select {
					case <-time.After(every):
					case <-done:
						return
					}
				}
			})
			ta.add(r)
			out := judgeDBRun(t, w, fault)
			t.Logf("iteration %d: API changes %v; %s: %d backends terminated in %d rounds; exit %d %q, run %q, customers failed %v, end lost %v",
				i+1, changes, what, kills.Load(), rounds.Load(), r.code, syncerLine(r.stderr), out.status, out.failed, out.lostEnd)
			notes = append(notes, fmt.Sprintf("%d:%s→exit %d (%d killed)", i+1, map[bool]string{false: "once", true: "repeated"}[repeated], r.code, kills.Load()))
			if !repeated && r.code != 0 {
				// One kill: the write in flight is retried on a fresh
				// connection and succeeds; every other use of a dead
				// pooled connection is retried too.
				t.Errorf("iteration %d: the syncer's connections terminated once: exit %d, want 0 (the write retried on a fresh connection); stderr: %s\n\t%s",
					i+1, r.code, lastLines(r.stderr), replay)
			}
			ta.check(t, w)
			killedRec := w.runs[len(w.runs)-1]
			r = w.runUnlocked(fmt.Sprintf("iteration %d: repair run", i+1))
			ta.add(r)
			if r.code != 0 {
				t.Errorf("iteration %d: repair run exit %d: %s\n\t%s", i+1, r.code, lastLines(r.stderr), replay)
			}
			if out.lostEnd {
				abandonedAfter(t, w, killedRec)
			}
			ta.check(t, w)
			wantCurrent(t, w)
			if t.Failed() {
				break
			}
		}
		ta.log(t, w, fmt.Sprintf("pg_terminate_backend of the syncer's backends at a seeded moment (normal run %v): %s", d.Round(time.Millisecond), strings.Join(notes, ", ")))
	})

	// The server stopped (fast shutdown) and started again: between
	// customers and during a write, shorter than retry_max_elapsed (the
	// run rides it out), then longer (it fails cleanly; the next run
	// repairs).
	t.Run("db-server-restart", func(t *testing.T) {
		t.Parallel()
		seed, replay := caseSeed(t)
		rng := rand.New(rand.NewPCG(uint64(seed), 22))
		ds := msadstest.Generate(seed%1000, 3, 6)
		setup := time.Now()
		e, cluster := newEnvOwnCluster(t, ds, rideSync)
		t.Logf("own cluster started and migrated in %v", time.Since(setup).Round(time.Millisecond))
		rideConfig := e.config
		shortConfig := configVariant(e, "short.yaml", rideSync, shortSync)
		e.sim.SetFault(msadstest.OpGetUser, msadstest.Fault{Latency: 20 * time.Millisecond})
		// Every statement writing users sleeps 100 ms: a write in flight
		// is easy to catch (a backend of the syncer waiting in PgSleep).
		if _, err := e.pool.Exec(t.Context(), `
CREATE FUNCTION msads.slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$;
CREATE TRIGGER slow_write BEFORE INSERT OR UPDATE ON msads.users FOR EACH STATEMENT EXECUTE FUNCTION msads.slow_write()`); err != nil {
			t.Fatal(err)
		}
		w := newWorld(t, e, replay)
		ta := &tally{}
		r := w.run("clean first run")
		ta.add(r)
		if r.code != 0 {
			t.Fatalf("clean first run: exit %d: %s\n\t%s", r.code, r.stderr, replay)
		}
		ta.check(t, w)
		n := len(ds.CustomerIDs())
		poll := func(q string, done <-chan struct{}) bool {
			for {
				var ok bool
				if err := e.pool.QueryRow(t.Context(), w.sql(q)).Scan(&ok); err == nil && ok {
					return true
				}
				select {
				case <-done:
					return false
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
		// restartWhen stops the server once at (after k customers
		// committed; during=true: then once a write is in flight), for
		// outage, then starts it.
		var outages []string
		restartWhen := func(k int, during bool, outage time.Duration) func(done <-chan struct{}) {
			return func(done <-chan struct{}) {
				q := fmt.Sprintf("SELECT count(*) >= %d FROM {S}.customer_syncs WHERE run_id > %d AND status = 'succeeded'", k, w.lastRun)
				if !poll(q, done) {
					outages = append(outages, "none (the run ended first)")
					return
				}
				where := fmt.Sprintf("after %d customers committed", k)
				if during {
					if !poll("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'syncer' AND wait_event = 'PgSleep')", done) {
						outages = append(outages, "none (the run ended first)")
						return
					}
					where += ", during the next write"
				}
				ctx := context.WithoutCancel(t.Context())
				stopAt := time.Now()
				if err := cluster.StopServer(ctx); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(outage)
				if err := cluster.StartServer(ctx); err != nil {
					t.Error(err)
					return
				}
				e.pool.Reset() // the test's own connections died with the server
				outages = append(outages, fmt.Sprintf("%s: down %v", where, time.Since(stopAt).Round(10*time.Millisecond)))
			}
		}
		unavailable := regexp.MustCompile(`retry_max_elapsed|57P0[123]|connection to the database lost|lease lost`)
		long := rng.IntN(2) == 0 // the longer outage: during a write, or between customers
		steps := []struct {
			name   string
			config string
			during bool
			outage time.Duration
			ride   bool
		}{
			{"between customers, shorter than retry_max_elapsed (20s)", rideConfig, false, time.Duration(100+rng.IntN(500)) * time.Millisecond, true},
			{"during a write, shorter than retry_max_elapsed (20s)", rideConfig, true, time.Duration(100+rng.IntN(500)) * time.Millisecond, true},
			{map[bool]string{true: "during a write", false: "between customers"}[long] + ", longer than retry_max_elapsed (500ms)", shortConfig, long,
				time.Duration(900+rng.IntN(500)) * time.Millisecond, false},
		}
		for i, s := range steps {
			changes := apiChanges(rng, e.sim)
			k := rng.IntN(n - 1)
			if !s.during {
				k++ // between two customers: 1..n-1 committed
			}
			e.config = s.config
			stepStart := time.Now()
			r := w.runDuring(fmt.Sprintf("step %d: server restarted %s", i+1, s.name), restartWhen(k, s.during, s.outage))
			e.config = rideConfig
			ta.add(r)
			out := judgeDBRun(t, w, unavailable)
			t.Logf("step %d: API changes %v; restart %s (%s): exit %d %q after %v, run %q, customers failed %v", i+1, changes, s.name, outages[len(outages)-1], r.code, syncerLine(r.stderr), time.Since(stepStart).Round(time.Millisecond), out.status, out.failed)
			if out.lostEnd {
				t.Errorf("step %d: the run's end was not recorded though the database came back within %v (FinishRun waits up to 1m)\n\t%s", i+1, s.outage, replay)
			}
			if s.ride && r.code != 0 {
				t.Errorf("step %d: an outage of %v (%s), shorter than retry_max_elapsed 20s: exit %d, want 0 (the writes wait and retry); customers failed %v; stderr: %s\n\t%s",
					i+1, s.outage, outages[len(outages)-1], r.code, out.failed, lastLines(r.stderr), replay)
			}
			ta.check(t, w)
			if s.ride {
				wantCurrent(t, w)
				continue
			}
			r = w.runUnlocked(fmt.Sprintf("step %d: repair run", i+1))
			ta.add(r)
			if r.code != 0 {
				t.Errorf("step %d: repair run exit %d: %s\n\t%s", i+1, r.code, lastLines(r.stderr), replay)
			}
			ta.check(t, w)
			wantCurrent(t, w)
		}
		ta.log(t, w, "server stopped and started: "+strings.Join(outages, "; "))
	})

	// A statement_timeout hit while writing the customers' users: a
	// trigger sleeps for the chosen customers' rows, the syncer's
	// statement_timeout (1 s, set in database.url) cancels it. ALTER ROLE
	// … SET statement_timeout would not reach the syncer: it sends
	// statement_timeout in its startup packet (5min unless the URL sets
	// one), which outranks role and database settings.
	t.Run("db-statement-timeout", func(t *testing.T) {
		t.Parallel()
		seed, replay := caseSeed(t)
		rng := rand.New(rand.NewPCG(uint64(seed), 23))
		e, _ := newEnvApp(t, msadstest.Generate(seed%1000, 3, 8), suiteSync, "statement_timeout", "1000")
		w := newWorld(t, e, replay)
		if _, err := e.pool.Exec(t.Context(), w.sql(`
CREATE FUNCTION {S}.slow_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.customer_id = ANY (string_to_array(TG_ARGV[0], ',')::bigint[]) THEN
		PERFORM pg_sleep(5);
	END IF;
	RETURN NEW;
END $$`)); err != nil {
			t.Fatal(err)
		}
		statementFault(t, w, rng, "slow_customer", regexp.MustCompile(`statement timeout.*57014|57014.*statement timeout`), "statement timeout (57014)")
	})

	// A full disk, simulated by a trigger raising SQLSTATE 53100 on the
	// users rows of the chosen customers.
	t.Run("db-disk-full", func(t *testing.T) {
		t.Parallel()
		seed, replay := caseSeed(t)
		rng := rand.New(rand.NewPCG(uint64(seed), 24))
		e, _ := newEnvApp(t, msadstest.Generate(seed%1000, 3, 8), suiteSync)
		w := newWorld(t, e, replay)
		if _, err := e.pool.Exec(t.Context(), w.sql(`
CREATE FUNCTION {S}.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.customer_id = ANY (string_to_array(TG_ARGV[0], ',')::bigint[]) THEN
		RAISE EXCEPTION 'could not extend file "base/16384/16385": No space left on device' USING ERRCODE = '53100';
	END IF;
	RETURN NEW;
END $$`)); err != nil {
			t.Fatal(err)
		}
		statementFault(t, w, rng, "disk_full", regexp.MustCompile(`disk full.*53100|53100.*disk full`), "disk full (53100)")
	})

	t.Run("db-disk-full-role-sweep", dbDiskFullRoleSweep)
}

// dbDiskFullRoleSweep: a user leaves its only customer, and the disk is
// full whenever a role is removed. The customer's write removes the user's
// roles there with the users row, so that write fails (and with it the
// customer); the run must not report success while the roles stay.
func dbDiskFullRoleSweep(t *testing.T) {
	t.Parallel()
	seed, replay := caseSeed(t)
	e, _ := newEnvApp(t, msadstest.Generate(seed%1000, 2, 6), suiteSync)
	w := newWorld(t, e, replay)
	ta := &tally{}
	r := w.run("clean first run")
	ta.add(r)
	if r.code != 0 {
		t.Fatalf("clean first run: exit %d: %s", r.code, r.stderr)
	}
	ta.check(t, w)
	// A user listed by exactly one customer (not the signed-in one).
	ds := e.sim.Dataset()
	var user, cust int64
	for _, c := range ds.CustomerIDs() {
		for _, u := range ds.ListedUserIDs(c) {
			n := 0
			for _, o := range ds.CustomerIDs() {
				if slices.Contains(ds.ListedUserIDs(o), u) {
					n++
				}
			}
			if n == 1 && u != ds.PrincipalID() && user == 0 {
				user, cust = u, c
			}
		}
	}
	e.sim.RemoveUser(cust, user)
	if _, err := e.pool.Exec(t.Context(), w.sql(`
CREATE FUNCTION {S}.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'could not extend file "base/16384/16390": No space left on device' USING ERRCODE = '53100';
END $$;
CREATE TRIGGER fault BEFORE UPDATE ON {S}.user_roles FOR EACH ROW
	WHEN (OLD.removed_at IS NULL AND NEW.removed_at IS NOT NULL) EXECUTE FUNCTION {S}.disk_full()`)); err != nil {
		t.Fatal(err)
	}
	r = w.run(fmt.Sprintf("user %d leaves its only customer %d; disk full on removing roles", user, cust))
	ta.add(r)
	roles := e.queryInt("SELECT count(*) FROM S.user_roles WHERE user_id = $1 AND removed_at IS NULL", user)
	t.Logf("user %d left customer %d, the disk is full for role removals: exit %d %q; %d roles of the user still current", user, cust, r.code, syncerLine(r.stderr), roles)
	if r.code == 0 && roles > 0 {
		t.Errorf("the roles sweep failed on a full disk (the log says so: %v), yet the run exited 0 (status succeeded) with %d roles of user %d, who no customer lists any more, still current\n\t%s",
			strings.Contains(r.stderr, "could not remove the roles") && strings.Contains(r.stderr, "53100"), roles, user, replay)
	}
	ta.check(t, w)
	if _, err := e.pool.Exec(t.Context(), w.sql("DROP TRIGGER fault ON {S}.user_roles")); err != nil {
		t.Fatal(err)
	}
	r = w.run("repair run (disk space back)")
	ta.add(r)
	if r.code != 0 {
		t.Errorf("repair run: exit %d: %s", r.code, lastLines(r.stderr))
	}
	ta.check(t, w)
	wantCurrent(t, w)
	ta.log(t, w, "disk full during the roles sweep")
}

// statementFault is the shape of the statement-fault cases: a clean first
// run; a round where fn (a trigger function of the case's schema) fails
// the users write of one seeded customer; a round where it fails every
// customer's; a round with the trigger gone that must repair everything.
// Each faulted customer has a user joining, so its snapshot writes users;
// it must fail after two attempts (retried once on a fresh connection)
// with an error naming the fault, its rows untouched, the others
// committed.
func statementFault(t *testing.T, w *world, rng *rand.Rand, fn string, named *regexp.Regexp, what string) {
	t.Helper()
	e := w.e
	ta := &tally{}
	exec := func(q string) {
		t.Helper()
		if _, err := e.pool.Exec(t.Context(), w.sql(q)); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	r := w.run("clean first run")
	ta.add(r)
	if r.code != 0 {
		t.Fatalf("clean first run: exit %d: %s\n\t%s", r.code, r.stderr, w.replay)
	}
	ta.check(t, w)
	ids := e.ds.CustomerIDs()
	nextUser := int64(88_000_000)
	var notes []string
	for round, victims := range [][]int64{{ids[rng.IntN(len(ids))]}, ids} {
		changes := apiChanges(rng, e.sim)
		list := make([]string, len(victims))
		for i, c := range victims {
			nextUser++
			joinUser(e.sim, c, nextUser)
			list[i] = fmt.Sprint(c)
		}
		exec(fmt.Sprintf("CREATE TRIGGER fault BEFORE INSERT OR UPDATE ON {S}.users FOR EACH ROW EXECUTE FUNCTION {S}.%s('%s')", fn, strings.Join(list, ",")))
		label := fmt.Sprintf("round %d: %s for customers %v", round+1, what, victims)
		start := time.Now()
		r := w.run(label)
		took := time.Since(start)
		exec("DROP TRIGGER fault ON {S}.users")
		ta.add(r)
		out := judgeDBRun(t, w, named)
		t.Logf("round %d: API changes %v; %s on customers %v: exit %d %q in %v, run %q, customers failed %v", round+1, changes, what, victims, r.code, syncerLine(r.stderr), took.Round(time.Millisecond), out.status, out.failed)
		notes = append(notes, fmt.Sprintf("round %d: %d of %d customers faulted → exit %d", round+1, len(victims), len(ids), r.code))
		wantCode := 2
		if len(victims) == len(ids) {
			wantCode = 1
		}
		if r.code != wantCode || len(out.failed) != len(victims) {
			t.Errorf("%s: exit %d with customers %v failed; want exit %d with exactly %v failed\n\tstderr: %s\n\t%s",
				label, r.code, out.failed, wantCode, victims, lastLines(r.stderr), w.replay)
		}
		if out.lostEnd {
			t.Errorf("%s: the run's end was not recorded", label)
		}
		// Retried once, on a fresh connection, then failed.
		for _, c := range out.failed {
			var msg string
			if err := e.pool.QueryRow(t.Context(), w.sql("SELECT error FROM {S}.customer_syncs WHERE run_id = $1 AND customer_id = $2"), w.lastRun, c).Scan(&msg); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(msg, "2 attempts") {
				t.Errorf("%s: customer %d: error %q does not say it was retried once (2 attempts)", label, c, msg)
			}
		}
		ta.check(t, w)
	}
	apiChanges(rng, e.sim)
	r = w.run("repair run (fault gone)")
	ta.add(r)
	if r.code != 0 {
		t.Errorf("repair run: exit %d: %s\n\t%s", r.code, lastLines(r.stderr), w.replay)
	}
	ta.check(t, w)
	wantCurrent(t, w)
	ta.log(t, w, what+" on users writes: "+strings.Join(notes, "; "))
}

// configVariant writes a copy of the env's config with its sync lines
// syncYAML instead of fromSync, to name in its folder.
func configVariant(e *env, name, fromSync, syncYAML string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	y := strings.Replace(string(b), "sync:\n"+fromSync, "sync:\n"+syncYAML, 1)
	if !strings.Contains(y, "sync:\n"+syncYAML) {
		e.t.Fatalf("configVariant: no sync section %q in the config", fromSync)
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}
