// Package e2e tests the built `syncer` binary end to end: it runs the real
// executable against the API simulator and a real PostgreSQL, and checks exit
// codes, stderr and the rows written.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/pgtest"
	"github.com/msads-syncer/syncer/internal/status"
)

var binary string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := binaryDir()
		if err != nil {
			// A read-only checkout: a folder of this run's own.
			if dir, err = os.MkdirTemp("", "syncer-e2e-"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
		}
		binary = filepath.Join(dir, "syncer")
		// Built as the release is (Makefile, Dockerfile): static, without
		// cgo, stripped. A cgo build would test another binary, and each of
		// the suite's few hundred runs would pay the dynamic loader. The
		// folder outlives the run: go build links again only when the
		// binary there is not the one the sources make (~0.8 s of CPU the
		// suite no longer waits for).
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", binary, "../cmd/syncer")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build syncer:", err)
			return 1
		}
		return pgtest.Run(m)
	}())
}

// binaryDir is the folder of the syncer binary the suite builds: bin/e2e
// of the checkout (ignored by git, as bin/ is).
func binaryDir() (string, error) {
	dir, err := filepath.Abs(filepath.Join("..", "bin", "e2e"))
	if err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// env is one test's world: a simulator, a migrated schema, a config file.
type env struct {
	t      *testing.T
	sim    *msadstest.Server
	ds     *msadstest.Dataset
	pool   *pgxpool.Pool
	schema string
	dir    string
	config string
}

const defaultSync = "  concurrency: 4\n  request_timeout: 5s\n  retry_max_elapsed: 2s\n"

func newEnv(t *testing.T, ds *msadstest.Dataset, extraYAML string) *env {
	t.Helper()
	return newEnvSync(t, ds, defaultSync, extraYAML)
}

// newEnvSync is newEnv with the lines of the config's sync section.
func newEnvSync(t *testing.T, ds *msadstest.Dataset, syncYAML, extraYAML string) *env {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	sim := msadstest.NewServer(ds)
	t.Cleanup(sim.Close)
	e := &env{t: t, sim: sim, ds: ds, pool: pool, schema: schema, dir: t.TempDir()}
	e.config = e.writeConfig(syncYAML, extraYAML)
	return e
}

func (e *env) writeConfig(syncYAML, extraYAML string) string {
	e.t.Helper()
	ids := make([]string, 0)
	for _, id := range e.ds.CustomerIDs() {
		ids = append(ids, fmt.Sprint(id))
	}
	y := fmt.Sprintf(`database:
  url: %q
  schema: %s
microsoft_ads:
  api_url: %q
  token_url: %q
  developer_token: ${TEST_DEV_TOKEN}
  client_id: %q
  client_secret: ${TEST_CLIENT_SECRET}
  refresh_token: ${TEST_REFRESH_TOKEN}
  requests_per_second: 200
  throttle_wait: 100ms
customers:
  ids: [%s]
sync:
%slog:
  format: json
  level: info
%s`, pgtest.URL(e.t), e.schema, e.sim.APIURL(), e.sim.TokenURL(), e.sim.ClientID(), strings.Join(ids, ", "), syncYAML, extraYAML)
	p := filepath.Join(e.dir, "config.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

type result struct {
	code           int
	stdout, stderr string
}

// start starts the binary with args after the command name.
func (e *env) start(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	e.t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(),
		"TEST_DEV_TOKEN="+e.sim.DeveloperToken(),
		"TEST_CLIENT_SECRET="+e.sim.ClientSecret(),
		"TEST_REFRESH_TOKEN="+e.sim.RefreshToken(),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return cmd, &stdout, &stderr
}

func wait(t *testing.T, cmd *exec.Cmd, stdout, stderr *bytes.Buffer) result {
	t.Helper()
	err := cmd.Wait()
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 2*time.Minute)
	defer cancel()
	cmd, o, er := e.start(ctx, args...)
	return wait(e.t, cmd, o, er)
}

// q qualifies the tables written S.name with the test's schema.
func (e *env) q(sql string) string {
	return strings.ReplaceAll(sql, "S.", pgx.Identifier{e.schema}.Sanitize()+".")
}

func (e *env) queryInt(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.t.Context(), e.q(sql), args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// queryText is queryInt for one text value ("<null>" for NULL).
func (e *env) queryText(sql string, args ...any) string {
	e.t.Helper()
	var s *string
	if err := e.pool.QueryRow(e.t.Context(), e.q(sql), args...).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

// currentUsers returns the non-removed user ids of a customer.
func (e *env) currentUsers(customerID int64) map[int64]bool {
	e.t.Helper()
	rows, err := e.pool.Query(e.t.Context(), "SELECT user_id FROM "+pgx.Identifier{e.schema}.Sanitize()+".users WHERE customer_id = $1 AND removed_at IS NULL", customerID)
	if err != nil {
		e.t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int64]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out
}

func (e *env) wantListed(customerID int64) {
	e.t.Helper()
	got := e.currentUsers(customerID)
	want := e.sim.Dataset().ListedUserIDs(customerID)
	if len(got) != len(want) {
		e.t.Errorf("customer %d: %d current users in the warehouse, simulator lists %d", customerID, len(got), len(want))
	}
	for _, id := range want {
		if !got[id] {
			e.t.Errorf("customer %d: listed user %d missing from the warehouse", customerID, id)
		}
	}
}

type summary struct {
	Status    string `json:"status"`
	Customers []struct {
		CustomerID int64                     `json:"customer_id"`
		Status     string                    `json:"status"`
		Users      int                       `json:"users_seen"`
		Calls      int                       `json:"api_calls"`
		Changes    map[string]map[string]int `json:"changes"` // entity -> change kind -> rows
		Error      string                    `json:"error"`
	} `json:"customers"`
}

func readSummary(t *testing.T, path string) summary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, b)
	}
	return s
}

func TestRunSyncsEveryCustomerAndRerunChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(11, 3, 12), "")
	sumPath := filepath.Join(e.dir, "summary.json")
	r := e.run("run", "--config", e.config, "--summary", sumPath)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstderr: %s", r.code, r.stderr)
	}
	for _, id := range e.ds.CustomerIDs() {
		e.wantListed(id)
	}
	if n := e.queryInt("SELECT count(*) FROM S.sync_runs WHERE status = 'succeeded'"); n != 1 {
		t.Errorf("succeeded runs = %d, want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_invitations"); n == 0 {
		t.Error("no invitations written")
	}
	if n := e.queryInt("SELECT count(*) FROM S.access"); n == 0 {
		t.Error("access view is empty")
	}
	s := readSummary(t, sumPath)
	if s.Status != "succeeded" || len(s.Customers) != 3 {
		t.Fatalf("summary = %+v", s)
	}
	for _, c := range s.Customers {
		if c.Status != "succeeded" || c.Users == 0 || c.Calls == 0 || c.Changes["users"]["added"] == 0 {
			t.Errorf("customer summary %+v", c)
		}
	}
	for _, secret := range []string{e.sim.ClientSecret(), e.sim.RefreshToken(), e.sim.DeveloperToken()} {
		if strings.Contains(r.stderr, secret) || strings.Contains(r.stdout, secret) {
			t.Errorf("a secret appears in the output")
		}
	}

	// A re-run with no change in the API writes no row versions.
	before := e.queryInt("SELECT (SELECT count(*) FROM S.users_history) + (SELECT count(*) FROM S.user_roles_history) + (SELECT count(*) FROM S.user_invitations_history)")
	r = e.run("run", "--config", e.config, "--summary", sumPath)
	if r.code != 0 {
		t.Fatalf("re-run exit %d\nstderr: %s", r.code, r.stderr)
	}
	after := e.queryInt("SELECT (SELECT count(*) FROM S.users_history) + (SELECT count(*) FROM S.user_roles_history) + (SELECT count(*) FROM S.user_invitations_history)")
	if after != before {
		t.Errorf("history rows %d -> %d on a no-change re-run", before, after)
	}
	for _, c := range readSummary(t, sumPath).Customers {
		for entity, counts := range c.Changes {
			for kind, v := range counts {
				if v != 0 {
					t.Errorf("re-run customer %d: %s %s = %d, want 0", c.CustomerID, entity, kind, v)
				}
			}
		}
	}
}

func TestRunOneCustomerFailsOthersCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(12, 3, 10), "")
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("first run exit %d: %s", r.code, r.stderr)
	}
	ids := e.ds.CustomerIDs()
	bad, good := ids[0], ids[1]
	badBefore := e.currentUsers(bad)

	// In the API: the bad customer loses a user, the good one too; then the
	// bad customer starts failing permanently.
	badUser := e.sim.Dataset().ListedUserIDs(bad)[0]
	goodUser := e.sim.Dataset().ListedUserIDs(good)[0]
	e.sim.RemoveUser(bad, badUser)
	e.sim.RemoveUser(good, goodUser)
	e.sim.SetFault("SearchUserInvitations", msadstest.Fault{CustomerID: bad, Status: 400, Code: 106})

	sumPath := filepath.Join(e.dir, "summary.json")
	r := e.run("run", "--config", e.config, "--summary", sumPath)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\nstderr: %s", r.code, r.stderr)
	}
	// The failed customer is untouched: its removed user is still current.
	if got := e.currentUsers(bad); len(got) != len(badBefore) || !got[badUser] {
		t.Errorf("failed customer %d changed: %d users before, %d after (user %d present: %v)", bad, len(badBefore), len(got), badUser, got[badUser])
	}
	// The others committed, removal included.
	e.wantListed(good)
	if e.currentUsers(good)[goodUser] {
		t.Errorf("user %d removed in the API is still current for customer %d", goodUser, good)
	}
	if n := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND status = 'failed' AND error LIKE '%106%'", bad); n != 1 {
		t.Errorf("failed customer_syncs rows for %d = %d, want 1", bad, n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.sync_runs WHERE status = 'partial' AND customers_failed = 1"); n != 1 {
		t.Errorf("partial runs = %d, want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.customers WHERE customer_id = $1 AND last_error IS NOT NULL AND last_success_at < last_attempt_at", bad); n != 1 {
		t.Errorf("customers row of %d does not show the failure", bad)
	}
	s := readSummary(t, sumPath)
	if s.Status != "partial" {
		t.Errorf("summary status %q", s.Status)
	}
}

func TestRunBadInputExitsOneWithAClearLine(t *testing.T) {
	t.Parallel()
	t.Run("unknown key", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(13, 1, 3), "invitations:\n  stale_aftr: 24h\n")
		r := e.run("run", "--config", e.config)
		if r.code != 1 || !strings.Contains(r.stderr, "invitations.stale_aftr") {
			t.Fatalf("exit %d, stderr %q; want 1 naming invitations.stale_aftr", r.code, r.stderr)
		}
		if n := e.queryInt("SELECT count(*) FROM S.sync_runs"); n != 0 {
			t.Errorf("%d runs recorded for a bad config", n)
		}
	})
	t.Run("refresh token rejected", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(14, 2, 3), "")
		e.sim.SetTokenFault(true)
		r := e.run("run", "--config", e.config)
		if r.code != 1 || !strings.Contains(r.stderr, "syncer auth") {
			t.Fatalf("exit %d, stderr %q; want 1 telling to run syncer auth", r.code, r.stderr)
		}
		if strings.Contains(r.stderr, e.sim.RefreshToken()) {
			t.Error("stderr shows the refresh token")
		}
		if n := e.queryInt("SELECT count(*) FROM S.users"); n != 0 {
			t.Errorf("%d users written with rejected credentials", n)
		}
	})
	t.Run("database unreachable", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(15, 1, 3), "")
		y, _ := os.ReadFile(e.config)
		bad := strings.Replace(string(y), pgtest.URL(t), "postgres://nobody:pw-secret@127.0.0.1:1/none?connect_timeout=2", 1)
		if err := os.WriteFile(e.config, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		r := e.run("run", "--config", e.config)
		if r.code != 1 || !strings.Contains(r.stderr, "database") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "pw-secret") {
			t.Errorf("stderr shows the database password: %s", r.stderr)
		}
	})
}

func TestTwoRunsAtOnceOnlyOneSyncs(t *testing.T) {
	t.Parallel()
	// Deterministic, not timed: the first run is held inside its first API
	// call (behind a closed gate) once it holds the run lease, and the
	// second starts only then. request_timeout is long so the held call
	// never times out however slow the machine.
	e := newEnvSync(t, msadstest.Generate(16, 2, 10), "  concurrency: 4\n  request_timeout: 2m\n  retry_max_elapsed: 2s\n", "")
	gate := newAPIGate(t, e)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cmd, o, er := e.start(ctx, "run", "--config", e.config)
	first := make(chan result, 1)
	go func() { first <- wait(t, cmd, o, er) }()
	for e.queryInt("SELECT count(*) FROM S.sync_leases WHERE credential_key LIKE 'cred:%'") == 0 || gate.Held() == 0 {
		select {
		case r := <-first:
			t.Fatalf("the first run ended before it held the lease: exit %d: %s", r.code, r.stderr)
		case <-ctx.Done():
			t.Fatal("the first run did not take the lease within 2 minutes")
		case <-time.After(10 * time.Millisecond):
		}
	}

	second := e.run("run", "--config", e.config)
	if second.code != 0 || !strings.Contains(second.stderr, "holds the lock") {
		t.Errorf("second run: exit %d, stderr %q; want 0 saying another run holds the lock", second.code, second.stderr)
	}
	gate.Open()
	if r := <-first; r.code != 0 || strings.Contains(r.stderr, "holds the lock") {
		t.Errorf("first run: exit %d: %s", r.code, r.stderr)
	}
	if n := e.queryInt("SELECT count(*) FROM S.sync_runs"); n != 1 {
		t.Errorf("%d runs recorded, want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.sync_runs WHERE status = $1", status.Succeeded); n != 1 {
		t.Errorf("%d succeeded runs, want 1", n)
	}
}

// apiGate stands between the syncer and the simulator's API (the token
// endpoint is not behind it): until Open it holds every call, so a test can
// keep a run inside its lease for as long as it needs, without timing.
type apiGate struct {
	srv  *httptest.Server
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
	held atomic.Int64
}

// newAPIGate starts a gate in front of e's simulator and points e's
// config's api_url at it.
func newAPIGate(t *testing.T, e *env) *apiGate {
	t.Helper()
	target, err := url.Parse(e.sim.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	g := &apiGate{open: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.held.Add(1)
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		select {
		case <-open:
		case <-r.Context().Done():
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	t.Cleanup(g.Open) // runs first: Close waits for the calls it holds
	b, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	api := e.sim.APIURL()
	via := g.srv.URL + strings.TrimPrefix(api, e.sim.URL())
	y := strings.Replace(string(b), fmt.Sprintf("api_url: %q", api), fmt.Sprintf("api_url: %q", via), 1)
	if y == string(b) {
		t.Fatal("api_url not found in the config")
	}
	if err := os.WriteFile(e.config, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// Held returns how many calls reached the gate.
func (g *apiGate) Held() int64 { return g.held.Load() }

// Open lets every held and later call through.
func (g *apiGate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// Hold closes an open gate again: later calls are held until Open.
func (g *apiGate) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func TestSigtermMidRunCancelsCleanly(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(17, 8, 10)
	e := newEnvSync(t, ds, "  concurrency: 2\n  request_timeout: 5s\n  shutdown_timeout: 20s\n", "")
	e.sim.SetFault("GetUser", msadstest.Fault{Latency: 150 * time.Millisecond})

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd, o, er := e.start(ctx, "run", "--config", e.config)
	// Wait until at least one customer is written, then stop the pod.
	deadline := time.Now().Add(time.Minute)
	for e.queryInt("SELECT count(*) FROM S.customer_syncs") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no customer synced within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := wait(t, cmd, o, er)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("exit took %v after SIGTERM", took)
	}
	if r.code == 0 {
		t.Errorf("exit 0 after SIGTERM mid-run; stderr: %s", r.stderr)
	}
	if n := e.queryInt("SELECT count(*) FROM S.sync_runs WHERE status = 'canceled' AND finished_at IS NOT NULL"); n != 1 {
		t.Errorf("canceled runs = %d, want 1; stderr: %s", n, r.stderr)
	}
	// Every customer is either wholly written or wholly absent.
	synced := 0
	for _, id := range ds.CustomerIDs() {
		ok := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND status = 'succeeded'", id) == 1
		users := e.currentUsers(id)
		switch {
		case ok:
			synced++
			e.wantListed(id)
		case len(users) != 0:
			t.Errorf("customer %d: %d users written without a succeeded sync", id, len(users))
		}
	}
	if synced == 0 || synced == len(ds.CustomerIDs()) {
		t.Errorf("%d of %d customers synced: the signal did not land mid-run", synced, len(ds.CustomerIDs()))
	}
}
