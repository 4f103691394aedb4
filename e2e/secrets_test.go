package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// capture is a fake receiver (webhook or Pushgateway) that records every
// request (method, path and body) and answers with the queued statuses,
// then 200; hang makes it never answer.
type capture struct {
	mu       sync.Mutex
	reqs     []string
	statuses []int
	hang     bool
	arrived  chan struct{} // one value per request, never blocks
	srv      *httptest.Server
}

func newCapture(t *testing.T, hang bool, statuses ...int) *capture {
	t.Helper()
	c := &capture{hang: hang, statuses: statuses, arrived: make(chan struct{}, 64)}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.reqs = append(c.reqs, r.Method+" "+r.URL.Path+"\n"+string(b))
		st := http.StatusOK
		if len(c.statuses) > 0 {
			st, c.statuses = c.statuses[0], c.statuses[1:]
		}
		c.mu.Unlock()
		select {
		case c.arrived <- struct{}{}:
		default:
		}
		if c.hang {
			<-r.Context().Done()
			return
		}
		if st != http.StatusOK {
			// An echoing receiver: the error repeats the secret path.
			http.Error(w, "invalid request to "+r.URL.Path, st)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() {
		c.srv.CloseClientConnections()
		c.srv.Close()
	})
	return c
}

func (c *capture) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.reqs...)
}

// bodies drops the request lines (the webhook's own URL) of captured
// requests.
func bodies(reqs []string) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		_, out[i], _ = strings.Cut(r, "\n")
	}
	return out
}

func randText(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// setDatabaseURL points the env's config at url (through a ${file:}
// reference, as a mounted secret would).
func (e *env) setDatabaseURL(u string) {
	e.t.Helper()
	p := filepath.Join(e.dir, "database-url")
	if err := os.WriteFile(p, []byte(u+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	y, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	old := fmt.Sprintf("url: %q", pgtest.URL(e.t))
	if !strings.Contains(string(y), old) {
		e.t.Fatal("config has no database url to replace")
	}
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(y), old, "url: ${file:"+p+"}", 1)), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// passwordURL returns a database URL for the env's schema that carries a
// password: the test URL's own when it has one, otherwise a login role
// created for the test with a recognisable password and the privileges a
// run needs (the throwaway cluster trusts local logins, so only the URL
// holds the password).
func (e *env) passwordURL() (string, string) {
	e.t.Helper()
	u, err := url.Parse(pgtest.URL(e.t))
	if err != nil || u.Scheme == "" {
		e.t.Skip("TEST_DATABASE_URL is not a URL")
	}
	if pw, ok := u.User.Password(); ok && len(pw) >= 6 {
		return u.String(), pw
	}
	ctx := e.t.Context()
	role := "secrets_" + randText(4)
	pw := "pg-Pa55-" + randText(8)
	sch := pgx.Identifier{e.schema}.Sanitize()
	r := pgx.Identifier{role}.Sanitize()
	for _, q := range []string{
		"CREATE ROLE " + r + " LOGIN PASSWORD '" + pw + "'",
		"GRANT USAGE ON SCHEMA " + sch + " TO " + r,
		"GRANT ALL ON ALL TABLES IN SCHEMA " + sch + " TO " + r,
		"GRANT ALL ON ALL SEQUENCES IN SCHEMA " + sch + " TO " + r,
	} {
		if _, err := e.pool.Exec(ctx, q); err != nil {
			e.t.Skipf("cannot create a role with a password (%v): the database URL carries none", err)
		}
	}
	e.t.Cleanup(func() {
		ctx := context.Background()
		_, _ = e.pool.Exec(ctx, "DROP OWNED BY "+r)
		_, _ = e.pool.Exec(ctx, "DROP ROLE IF EXISTS "+r)
	})
	u.User = url.UserPassword(role, pw)
	return u.String(), pw
}

// TestSecretsNeverShow: a debug-level run whose client goes through a
// throttle, a 5xx retry, a 401 and token refresh, a failing customer, a
// webhook that first rejects a post (retried) and a Pushgateway push, then a
// `serve` scrape: none of the recognisable secrets (client secret, developer
// token, every refresh token, access tokens, database password, token key,
// the webhook URL's secret path) appears in stdout, stderr, the summary, the
// pushed payload, the webhook bodies, /metrics or the errors in the database.
func TestSecretsNeverShow(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(25, 3, 4)
	hook := newCapture(t, false, http.StatusServiceUnavailable)
	gw := newCapture(t, false)
	tokenKey := "tokkey-" + randText(12)
	hookPath := "/hooks/T0/B0/whsec" + randText(10)
	keyFile := filepath.Join(t.TempDir(), "token-key")
	if err := os.WriteFile(keyFile, []byte(tokenKey), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	e := newEnv(t, ds, fmt.Sprintf(`invitations:
  stale_after: 1ms
  webhook_url: %s
metrics:
  pushgateway_url: %s
  listen: 127.0.0.1:%d
`, hook.srv.URL+hookPath, gw.srv.URL, port))
	y, _ := os.ReadFile(e.config)
	y = []byte(strings.Replace(string(y), "  schema: ", "  token_key: ${file:"+keyFile+"}\n  schema: ", 1))
	if err := os.WriteFile(e.config, y, 0o600); err != nil {
		t.Fatal(err)
	}
	dbURL, dbPassword := e.passwordURL()
	e.setDatabaseURL(dbURL)

	refreshTokens := []string{e.sim.RefreshToken()}
	ids := ds.CustomerIDs()
	e.sim.SetFault("GetUsersInfo", msadstest.Fault{CustomerID: ids[0], Throttle: 1, Status5xxCode0: 1})
	e.sim.SetFault("GetUser", msadstest.Fault{Code: 109, CodeTimes: 1})
	e.sim.SetFault("SearchUserInvitations", msadstest.Fault{CustomerID: ids[2], Status: 400, Code: 106})
	sumPath := filepath.Join(e.dir, "summary.json")
	r := e.run("run", "--config", e.config, "--skip-migrate", "--log-level", "debug", "--log-format", "json", "--summary", sumPath)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2 (one customer fails)\nstderr: %s", r.code, r.stderr)
	}
	refreshTokens = append(refreshTokens, e.sim.RefreshToken())
	if e.sim.Calls("Token") < 2 {
		t.Errorf("%d token grants: the 401 did not make the client refresh", e.sim.Calls("Token"))
	}
	for _, want := range []string{"throttl", "retry", "webhook"} {
		if !strings.Contains(strings.ToLower(r.stderr), want) {
			t.Errorf("debug log shows no %q: the run did not go through it", want)
		}
	}
	hooks, pushes := hook.all(), gw.all()
	if len(hooks) < 2 {
		t.Errorf("%d webhook posts, want a rejected one and its retry", len(hooks))
	}
	if len(pushes) != 1 || !strings.HasPrefix(pushes[0], "PUT /metrics/job/syncer/credential/") {
		t.Errorf("pushes: %q", pushes)
	}
	summaryText, err := os.ReadFile(sumPath)
	if err != nil {
		t.Fatal(err)
	}

	// serve: the same secrets, and /metrics.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd, so, se := e.start(ctx, "serve", "--config", e.config, "--skip-migrate", "--now", "--log-level", "debug", "--log-format", "text")
	deadline := time.Now().Add(time.Minute)
	for e.queryInt("SELECT count(*) FROM S.sync_runs WHERE finished_at IS NOT NULL") < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var metricsText string
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port)); err != nil {
		t.Errorf("GET /metrics: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metricsText = string(b)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	rs := wait(t, cmd, so, se)
	refreshTokens = append(refreshTokens, e.sim.RefreshToken())
	if !strings.Contains(metricsText, "msads_api_calls_total") {
		t.Errorf("/metrics did not answer with the metrics")
	}

	var dbErrors string
	if err := e.pool.QueryRow(t.Context(), "SELECT coalesce(string_agg(error, ' '), '') || ' ' || coalesce((SELECT string_agg(error, ' ') FROM "+
		pgx.Identifier{e.schema}.Sanitize()+".customer_syncs), '') FROM "+pgx.Identifier{e.schema}.Sanitize()+".sync_runs").Scan(&dbErrors); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dbErrors, "106") {
		t.Errorf("the failing customer's error is not recorded: %q", dbErrors)
	}

	places := map[string]string{
		"run stdout": r.stdout, "run stderr": r.stderr, "summary": string(summaryText),
		"serve stdout": rs.stdout, "serve stderr": rs.stderr, "/metrics": metricsText,
		"pushgateway payload": strings.Join(pushes, "\n"), "webhook bodies": strings.Join(bodies(hook.all()), "\n"),
		"errors in the database": dbErrors,
	}
	secrets := map[string]string{
		"client secret": e.sim.ClientSecret(), "developer token": e.sim.DeveloperToken(),
		"database password": dbPassword, "token key": tokenKey,
		"webhook secret path": strings.TrimPrefix(hookPath, "/hooks/T0/B0/"),
		"access token":        "EwB.sim.", // every access token the simulator issues starts so
	}
	for i, rt := range refreshTokens {
		secrets[fmt.Sprintf("refresh token %d", i)] = rt
	}
	for where, text := range places {
		for what, secret := range secrets {
			if secret == "" {
				t.Fatalf("%s is empty: the test would prove nothing", what)
			}
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
		if strings.Contains(text, "Bearer ") {
			t.Errorf("an Authorization header appears in the %s", where)
		}
	}
}

// TestSecondSignalExitsAtOnce: a run stopped by SIGTERM mid-sync records the
// run as canceled, then lingers in a follow-up whose receiver hangs (the
// webhook, or the Pushgateway); a second SIGTERM ends the process within 2 s
// with exit 143, SIGINT with 130.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		code int
		hang string // webhook or pushgateway
	}{
		{"webhook hangs, SIGTERM", syscall.SIGTERM, 143, "webhook"},
		{"pushgateway hangs, SIGINT", syscall.SIGINT, 130, "pushgateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(26, 4, 10)
			e := newEnvSync(t, ds, "  concurrency: 2\n  request_timeout: 5s\n  shutdown_timeout: 60s\n", "")
			// A first run: invitations to announce.
			if r := e.run("run", "--config", e.config); r.code != 0 {
				t.Fatalf("first run exit %d: %s", r.code, r.stderr)
			}
			hanging := newCapture(t, true)
			extra := "invitations:\n  stale_after: 1ms\n  webhook_url: " + hanging.srv.URL + "/hook\n"
			if tc.hang == "pushgateway" {
				extra = "metrics:\n  pushgateway_url: " + hanging.srv.URL + "\n"
			}
			e.config = e.writeConfig("  concurrency: 2\n  request_timeout: 5s\n  shutdown_timeout: 60s\n", extra)
			e.sim.SetFault("GetUser", msadstest.Fault{Latency: 300 * time.Millisecond})

			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			cmd, o, er := e.start(ctx, "run", "--config", e.config)
			deadline := time.Now().Add(time.Minute)
			for e.queryInt("SELECT count(*) FROM S.sync_runs") < 2 {
				if time.Now().After(deadline) {
					t.Fatal("the second run did not start within a minute")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-hanging.arrived:
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
				r := wait(t, cmd, o, er)
				t.Fatalf("the %s was never called after the first signal; stderr: %s", tc.hang, r.stderr)
			}
			time.Sleep(200 * time.Millisecond) // well inside the follow-up
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := wait(t, cmd, o, er)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("exit took %v after the second signal, want <= 2s", took)
			}
			if r.code != tc.code {
				t.Errorf("exit %d after a second %v, want %d; stderr: %s", r.code, tc.sig, tc.code, r.stderr)
			}
			if n := e.queryInt("SELECT count(*) FROM S.sync_runs WHERE status = 'canceled' AND finished_at IS NOT NULL"); n != 1 {
				t.Errorf("canceled runs = %d, want 1; stderr: %s", n, r.stderr)
			}
		})
	}
}
