package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

func TestDryRunPrintsChangesAndWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(21, 2, 8), "")
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("first run exit %d: %s", r.code, r.stderr)
	}
	cust := e.ds.CustomerIDs()[0]
	gone := e.sim.Dataset().ListedUserIDs(cust)[0]
	e.sim.RemoveUser(cust, gone)
	const counts = "SELECT (SELECT count(*) FROM S.sync_runs) + (SELECT count(*) FROM S.users_history) + (SELECT count(*) FROM S.users WHERE removed_at IS NOT NULL)"
	before := e.queryInt(counts)

	r := e.run("run", "--config", e.config, "--dry-run", "--customer", fmt.Sprint(cust))
	if r.code != 0 {
		t.Fatalf("dry run exit %d: %s", r.code, r.stderr)
	}
	if after := e.queryInt(counts); after != before {
		t.Errorf("dry run wrote: %d -> %d", before, after)
	}
	if !e.currentUsers(cust)[gone] {
		t.Error("dry run removed the user")
	}
	// One customer (the --customer filter), one user removed.
	if !strings.Contains(r.stdout, "Dry run") || !strings.Contains(r.stdout, fmt.Sprint(cust)) || !strings.Contains(r.stdout, "/0/1") {
		t.Errorf("dry run output does not show the removal:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, fmt.Sprint(e.ds.CustomerIDs()[1])) {
		t.Errorf("--customer did not limit the run:\n%s", r.stdout)
	}
}

func TestAuthStoresTheRefreshTokenForRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(22, 1, 4), "")
	e.sim.RejectSupersededRefreshTokens(true)
	// No refresh token in the config: only `syncer auth` can provide one.
	y, _ := os.ReadFile(e.config)
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(y), "refresh_token: ${TEST_REFRESH_TOKEN}", `refresh_token: ""`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.run("run", "--config", e.config); r.code != 1 {
		t.Fatalf("run without any refresh token: exit %d, want 1: %s", r.code, r.stderr)
	}
	code := e.sim.IssueAuthCode()
	r := e.run("auth", "--config", e.config, "--code", "https://login.example/redirect?code="+code)
	if r.code != 0 || !strings.Contains(r.stdout, "Signed in") {
		t.Fatalf("auth exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// --code finishes a sign-in: it names who signed in, prints no new URL.
	if _, name := e.sim.Principal(); !strings.Contains(r.stdout, "Signed in as "+name) || strings.Contains(r.stdout, "oauth2/v2.0/authorize") {
		t.Errorf("auth --code output:\n%s", r.stdout)
	}
	// Two runs in a row: the second must use the token the first rotated.
	for i := range 2 {
		if r := e.run("run", "--config", e.config); r.code != 0 {
			t.Fatalf("run %d after auth: exit %d: %s", i+1, r.code, r.stderr)
		}
	}
	e.wantListed(e.ds.CustomerIDs()[0])
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestServeSyncsServesProbesAndStops(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	e := newEnv(t, msadstest.Generate(23, 2, 5), fmt.Sprintf("metrics:\n  listen: 127.0.0.1:%d\nschedule: \"@every 1h\"\n", port))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd, o, er := e.start(ctx, "serve", "--config", e.config, "--now")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(time.Minute)
	for e.queryInt("SELECT count(*) FROM S.sync_runs WHERE status = 'succeeded'") == 0 {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			r := wait(t, cmd, o, er)
			t.Fatalf("serve --now did not sync within a minute; stderr: %s", r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	// The run is recorded before its follow-up refreshes the per-customer
	// gauges: give that a moment.
	code, body := get("/metrics")
	for deadline := time.Now().Add(10 * time.Second); code == 200 && !strings.Contains(body, "msads_pending_invitations{customer_id=") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		code, body = get("/metrics")
	}
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{`msads_api_calls_total{operation="GetUser",outcome="ok"}`, `msads_sync_runs_total{status="succeeded"} 1`, "msads_customer_syncs_total",
		"msads_customer_last_success_timestamp_seconds{customer_id=", "msads_pending_invitations{customer_id=", "msads_stale_invitations{customer_id="} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := wait(t, cmd, o, er)
	if r.code != 0 {
		t.Errorf("serve exit %d after SIGTERM: %s", r.code, r.stderr)
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// A database of the demo's own in the test server, so a shared server
	// (TEST_DATABASE_URL) keeps no state between runs.
	pool := pgtest.Pool(t)
	db := "demo_" + pgtest.NewSchemaName()
	if _, err := pool.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP DATABASE "+db+" WITH (FORCE)") })
	u, err := url.Parse(pgtest.URL(t))
	if err != nil || u.Scheme == "" {
		t.Skip("TEST_DATABASE_URL is not a URL: cannot point the demo at a database of its own")
	}
	u.Path = "/" + db
	c := exec.CommandContext(ctx, binary, "demo")
	c.Env = append(os.Environ(), "DATABASE_URL="+u.String())
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"Sync 1", "Sync 2", "Who can reach which account today", "Stale pending invitations", "removed", "(3 rows)",
		// The reconciliation with the demo's directory shows every kind of finding.
		"Loaded entra-users.csv", "no_owner ", "terminated ", "external_domain ", "privileged_external ", "stale_invitation ", "dormant_link "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}

func TestRunPushesMetricsToThePushgateway(t *testing.T) {
	t.Parallel()
	got := make(chan string, 4)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + "\n" + string(b)
		w.WriteHeader(http.StatusOK)
	}))
	defer gw.Close()
	e := newEnv(t, msadstest.Generate(24, 1, 3), "metrics:\n  pushgateway_url: "+gw.URL+"\n")
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	select {
	case req := <-got:
		if !strings.HasPrefix(req, "PUT /metrics/job/syncer") {
			t.Errorf("push request %q", strings.SplitN(req, "\n", 2)[0])
		}
		// The body is protobuf-delimited; the metric names are in it as text.
		for _, want := range []string{"msads_sync_runs_total", "msads_api_calls_total"} {
			if !strings.Contains(req, want) {
				t.Errorf("pushed metrics lack %s", want)
			}
		}
	default:
		t.Fatal("nothing was pushed")
	}
}
