package job_test

// The whole-run benchmarks of BENCHMARKS.md ("Whole run"): figures 3 to 6 of
// the performance issue. Each prints its figure with its goal (b.Log, shown
// with -bench) and reports it as a metric.
//
//	go test -run '^$' -bench Run -benchtime 1x ./internal/job/
//
// Figures 4 and 5 run the built binary (`syncer run`) as a child process
// against the API simulator (in this process) and the tests' PostgreSQL.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
	"github.com/msads-syncer/syncer/internal/status"
)

// benchConcurrency is sync.concurrency's default.
const benchConcurrency = 4

func benchClient(b *testing.B, sim *msadstest.Server, rps float64, obs extract.Observer) *extract.Client {
	b.Helper()
	c, err := extract.New(extract.Config{
		APIURL: sim.APIURL(), TokenURL: sim.TokenURL(), DeveloperToken: sim.DeveloperToken(),
		ClientID: sim.ClientID(), ClientSecret: sim.ClientSecret(), RefreshToken: sim.RefreshToken(),
		RequestsPerSecond: rps, Store: &extract.MemoryTokenStore{}, Observer: obs,
	})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkRunOverlap is figure 3: a whole run (job.Runner.Run: customers
// fetched and written, 4 at a time) against fetch alone (FetchCustomer of
// every customer, 4 at a time, one user cache, no writes) and write alone
// (WriteSnapshot of the snapshots fetch alone returned, 4 at a time), same
// data, simulator at zero latency, client at 1,000 requests/s (the
// configuration's maximum). Goal: whole / max(fetch, write) <= 1.25.
func BenchmarkRunOverlap(b *testing.B) {
	const rps = 1000.0
	ds := msadstest.Generate(2027, 10, 500)
	ids := ds.CustomerIDs()
	roleCustomers := slices.Sorted(slices.Values(ids))
	logger := slog.New(slog.DiscardHandler)
	for b.Loop() {
		// Fetch alone.
		sim := msadstest.NewServer(ds.Clone())
		client := benchClient(b, sim, rps, nil)
		snaps := make([]*msads.Snapshot, len(ids))
		cache := extract.NewUserCache()
		start := time.Now()
		g, ctx := errgroup.WithContext(b.Context())
		g.SetLimit(benchConcurrency)
		for i, id := range ids {
			g.Go(func() error {
				s, _, err := client.FetchCustomer(ctx, id, cache, extract.FetchOptions{Accounts: true})
				snaps[i] = s
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		fetch := time.Since(start)
		sim.Close()

		// Write alone.
		pool, schema := pgtest.FreshSchema(b)
		store := load.NewStore(pool, load.Options{Schema: schema, Logger: logger})
		runID, err := store.StartRun(b.Context(), len(ids))
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		g, ctx = errgroup.WithContext(b.Context())
		g.SetLimit(benchConcurrency)
		for _, s := range snaps {
			s.RoleCustomers = roleCustomers
			g.Go(func() error {
				_, err := store.WriteSnapshot(ctx, runID, s, load.SyncInfo{StartedAt: time.Now().UTC()})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		write := time.Since(start)

		// The whole run, on a fresh schema.
		sim = msadstest.NewServer(ds.Clone())
		pool, schema = pgtest.FreshSchema(b)
		store = load.NewStore(pool, load.Options{Schema: schema, Logger: logger})
		r := &job.Runner{Client: benchClient(b, sim, rps, nil), Store: store, Logger: logger,
			CredentialKey: "bench:" + schema, CustomerIDs: ids, Concurrency: benchConcurrency, AccountNames: true}
		start = time.Now()
		res, err := r.Run(b.Context(), job.Options{})
		whole := time.Since(start)
		sim.Close()
		if err != nil || res.Status != status.Succeeded {
			b.Fatalf("run: %v %+v", err, res)
		}
		ratio := whole.Seconds() / max(fetch.Seconds(), write.Seconds())
		b.ReportMetric(whole.Seconds(), "whole_s")
		b.ReportMetric(fetch.Seconds(), "fetch_s")
		b.ReportMetric(write.Seconds(), "write_s")
		b.ReportMetric(ratio, "ratio")
		b.Logf("figure 3: whole run %.2fs, fetch alone %.2fs, write alone %.2fs (%d customers, %d users, %.0f req/s): whole/max = %.3f (goal <= 1.25)",
			whole.Seconds(), fetch.Seconds(), write.Seconds(), len(ids), ds.DistinctListedUsers(), rps, ratio)
	}
}

// syncerBinary builds cmd/syncer (as `make build` does) once per test binary.
var syncerBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "syncer-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "syncer")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../../cmd/syncer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// procRun is one `syncer` child process.
type procRun struct {
	wall      time.Duration
	firstCall time.Duration // process start to the simulator's first request (token grant included); 0 if none
	peakAt    time.Duration // when the sampled RSS (VmRSS, every 100ms) was highest
	// maxRSS is the child's peak RSS in bytes: its VmHWM, read every
	// 100ms until it exits. Not getrusage's ru_maxrss: os/exec starts the
	// child with vfork, and Linux carries the parent's (this process's,
	// with the simulator's data) high-water mark into the child's at exec.
	maxRSS     int64
	code       int
	stderr     string
	calls      map[string]int
	totalCalls int
}

// runSyncer runs `syncer args... --config <generated>` against sim and
// schema (which need not exist: the run migrates it).
func runSyncer(b *testing.B, sim *msadstest.Server, customers []int64, schema string, rps float64, args ...string) procRun {
	b.Helper()
	bin, err := syncerBinary()
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, len(customers))
	for i, id := range customers {
		ids[i] = fmt.Sprint(id)
	}
	cfg := fmt.Sprintf(`database:
  url: %q
  schema: %s
microsoft_ads:
  api_url: %q
  token_url: %q
  developer_token: ${BENCH_DEV_TOKEN}
  client_id: %q
  client_secret: ${BENCH_CLIENT_SECRET}
  refresh_token: ${BENCH_REFRESH_TOKEN}
  requests_per_second: %g
customers:
  ids: [%s]
sync:
  concurrency: %d
log:
  format: json
  level: warn
`, pgtest.URL(b), schema, sim.APIURL(), sim.TokenURL(), sim.ClientID(), rps, strings.Join(ids, ", "), benchConcurrency)
	path := filepath.Join(b.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	sim.ResetCalls()
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--config", path)...)
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace="+os.Getenv("BENCH_GCTRACE"), "BENCH_DEV_TOKEN="+sim.DeveloperToken(),
		"BENCH_CLIENT_SECRET="+sim.ClientSecret(), "BENCH_REFRESH_TOKEN="+sim.RefreshToken())
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	var out procRun
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sampled := make(chan struct{})
	go func() { // the child's peak RSS, and when it comes
		defer close(sampled)
		var peak int64
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			b, err := os.ReadFile(status)
			if err != nil {
				return
			}
			for line := range strings.SplitSeq(string(b), "\n") {
				kb := func(v string) (n int64) {
					fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &n)
					return n
				}
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok && kb(v) > peak {
					peak, out.peakAt = kb(v), time.Since(start)
				}
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok && kb(v) > 0 {
					out.maxRSS = kb(v) * 1024
				}
			}
		}
	}()
	done := make(chan struct{})
	go func() { // the first request the simulator sees
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if sim.TotalCalls()+sim.Calls(msads.OpToken) > 0 {
					out.firstCall = time.Since(start)
					return
				}
				if cmd.ProcessState != nil {
					return
				}
			}
		}
	}()
	err = cmd.Wait()
	out.wall = time.Since(start)
	cancel()
	<-done
	<-sampled
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		out.code = ee.ExitCode()
	} else if err != nil {
		b.Fatal(err)
	}
	out.stderr = stderr.String()
	out.calls = map[string]int{}
	for _, op := range []string{msads.OpGetUsersInfo, msads.OpGetUser, msads.OpSearchUserInvitations, msads.OpGetCustomersInfo, msads.OpGetAccountsInfo, msads.OpSearchClientLinks} {
		out.calls[op] = sim.Calls(op)
	}
	out.totalCalls = sim.TotalCalls()
	return out
}

// dropSchema drops a schema the child created.
func dropSchema(b *testing.B, schema string) {
	b.Cleanup(func() {
		if _, err := pgtest.Pool(b).Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			b.Errorf("drop schema %s: %v", schema, err)
		}
	})
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// BenchmarkRunAPIBound is figures 4 and 6: the whole `syncer run` process
// (start-up and migrations of a fresh schema included) for about 10,000
// users at 500 requests/s, against calls/rate; start-up (process start to
// the first request, and `syncer migrate` of a fresh schema) is reported
// separately. Goal: wall / (calls / rate) <= 1.10. Figure 6: the calls made,
// per operation, against the minimum (goal: equal).
func BenchmarkRunAPIBound(b *testing.B) {
	const rps = 500.0
	ds := msadstest.Generate(2028, 20, 555).PrincipalSuperAdmin() // every link search permitted
	sim := msadstest.NewServer(ds.Clone())
	b.Cleanup(sim.Close)
	if _, err := syncerBinary(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		schema := pgtest.NewSchemaName()
		dropSchema(b, schema)
		r := runSyncer(b, sim, ds.CustomerIDs(), schema, rps, "run")
		if r.code != 0 {
			b.Fatalf("syncer run: exit %d\n%s", r.code, r.stderr)
		}
		ideal := float64(r.totalCalls) / rps
		ratio := r.wall.Seconds() / ideal

		mschema := pgtest.NewSchemaName()
		dropSchema(b, mschema)
		m := runSyncer(b, sim, ds.CustomerIDs(), mschema, rps, "migrate")
		if m.code != 0 {
			b.Fatalf("syncer migrate: exit %d\n%s", m.code, m.stderr)
		}

		want := ds.MinimumCalls(true) // `syncer run` searches client links by default
		b.ReportMetric(r.wall.Seconds(), "wall_s")
		b.ReportMetric(ideal, "ideal_s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(r.firstCall.Seconds(), "startup_s")
		b.ReportMetric(m.wall.Seconds(), "migrate_s")
		b.ReportMetric(float64(r.totalCalls), "calls")
		b.ReportMetric(float64(r.totalCalls-sum(want)), "extra_calls")
		b.Logf("figure 4: %d users, %d calls at %.0f req/s: process wall %.2fs vs calls/rate %.2fs: ratio %.3f (goal <= 1.10); "+
			"start-up (process start to first request) %.2fs, `syncer migrate` of a fresh schema %.2fs",
			ds.DistinctListedUsers(), r.totalCalls, rps, r.wall.Seconds(), ideal, ratio, r.firstCall.Seconds(), m.wall.Seconds())
		b.Logf("figure 6: calls made %d, minimum %d (goal: equal); per operation made/minimum: %s",
			r.totalCalls, sum(want), perOp(r.calls, want))
	}
}

func perOp(got, want map[string]int) string {
	var parts []string
	for _, op := range slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s %d/%d", op, got[op], want[op]))
	}
	return strings.Join(parts, ", ")
}

// BenchmarkRunMemory is figure 5: the peak RSS of the whole `syncer run`
// process (the child's VmHWM) at about 20,000 and 200,000 users,
// simulator at zero latency, 1,000 requests/s (the configuration's
// maximum), 4 customers at a time. Goal: < 150 MiB at 200,000 users, and
// growth from 20,000 to 200,000 users well below 10× (sub-linear).
// BENCH_MEMORY_USERS=20000 (or 200000) measures only that size;
// BENCH_GCTRACE=1 also prints the child's collection with the largest heap.
func BenchmarkRunMemory(b *testing.B) {
	const rps = 1000.0
	sizes := []struct{ customers, perCustomer int }{{10, 2220}, {100, 2220}}
	switch os.Getenv("BENCH_MEMORY_USERS") {
	case "20000":
		sizes = sizes[:1]
	case "200000":
		sizes = sizes[1:]
	}
	if _, err := syncerBinary(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var rss []float64
		var users []int
		for _, sz := range sizes {
			ds := msadstest.Generate(2029, sz.customers, sz.perCustomer)
			sim := msadstest.NewServer(ds)
			schema := pgtest.NewSchemaName()
			dropSchema(b, schema)
			r := runSyncer(b, sim, ds.CustomerIDs(), schema, rps, "run")
			sim.Close()
			if r.code != 0 {
				b.Fatalf("syncer run: exit %d\n%s", r.code, r.stderr)
			}
			mib := float64(r.maxRSS) / (1 << 20)
			n := ds.DistinctListedUsers()
			rss, users = append(rss, mib), append(users, n)
			b.ReportMetric(mib, fmt.Sprintf("rss_MiB_%dk", (n+500)/1000))
			b.Logf("figure 5: %d users (%d customers): peak RSS %.1f MiB (sampled peak at %.0fs), run %.1fs, %d calls", n, sz.customers, mib, r.peakAt.Seconds(), r.wall.Seconds(), r.totalCalls)
			if os.Getenv("BENCH_GCTRACE") != "" {
				b.Logf("GC with the largest heap: %s", largestGC(r.stderr))
			}
		}
		if len(rss) == 2 {
			g := rss[1] / rss[0]
			b.ReportMetric(g, "rss_growth")
			b.Logf("figure 5: peak RSS %.1f MiB at %d users (goal < 150 MiB); %.2f× the %.1f MiB at %d users for %.1f× the users (goal: sub-linear)",
				rss[1], users[1], g, rss[0], users[0], float64(users[1])/float64(users[0]))
		}
	}
}

// largestGC returns the gctrace line (GODEBUG=gctrace=1) with the largest
// heap at the start of a collection.
func largestGC(stderr string) string {
	var best string
	var most int
	for line := range strings.SplitSeq(stderr, "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		_, after, ok := strings.Cut(line, " cpu, ")
		if !ok {
			continue
		}
		var n int
		fmt.Sscanf(after, "%d->", &n)
		if n > most {
			most, best = n, line
		}
	}
	return best
}
