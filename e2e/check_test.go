package e2e_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/evidence"
	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// checkRun runs `syncer check` with the env's variables, changed by set
// (NAME=value) and with the names in unset removed.
func (e *env) checkRun(set map[string]string, unset []string, args ...string) result {
	e.t.Helper()
	vars := map[string]string{
		"TEST_DEV_TOKEN":     e.sim.DeveloperToken(),
		"TEST_CLIENT_SECRET": e.sim.ClientSecret(),
		"TEST_REFRESH_TOKEN": e.sim.RefreshToken(),
	}
	for k, v := range set {
		vars[k] = v
	}
	for _, k := range unset {
		delete(vars, k)
	}
	var environ []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if _, ours := vars[name]; !ours && !strings.HasPrefix(name, "TEST_") {
			environ = append(environ, kv)
		}
	}
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"check", "--config", e.config}, args...)...)
	cmd.Env = environ
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("$ syncer check (exit %d)\n%s%s", code, stdout.String(), stderr.String())
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// editConfig replaces old by new in the env's config file.
func (e *env) editConfig(old, new string) {
	e.t.Helper()
	y, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	if !strings.Contains(string(y), old) {
		e.t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(y), old, new, 1)), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// checkLine returns the output line of the named check.
func checkLine(t *testing.T, out, name string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		for _, mark := range []string{"✓ ", "✗ ", "- "} {
			if strings.HasPrefix(l, mark+name+": ") {
				return l
			}
		}
	}
	t.Fatalf("no line for check %q in:\n%s", name, out)
	return ""
}

// wantFailed asserts the check failed naming every one of want (its
// detail and fix), and that the line says the fix after " — ".
func wantFailed(t *testing.T, r result, name string, want ...string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	l := checkLine(t, r.stdout, name)
	if !strings.HasPrefix(l, "✗ ") || !strings.Contains(l, " — ") {
		t.Errorf("line %q: want ✗ with a fix", l)
	}
	for _, w := range want {
		if !strings.Contains(l, w) {
			t.Errorf("line %q: want it to name %q", l, w)
		}
	}
	if !strings.Contains(r.stderr, "checks failed: ") {
		t.Errorf("stderr %q: want the failed checks named", r.stderr)
	}
}

var checkOrder = []string{"config", "database", "migrations", "reader role", "token store", "refresh", "developer token", "customers", "webhook", "pushgateway", "evidence signing key"}

// TestCheckGoodSetup: with everything set up (reader role, webhook and
// Pushgateway included), every check passes, in order, one line each; the
// webhook gets no message; --json gives the same checks.
func TestCheckGoodSetup(t *testing.T) {
	t.Parallel()
	hook := newCapture(t, false)
	gw := newCapture(t, false)
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	signing := base64.StdEncoding.EncodeToString(seed)
	e := newEnv(t, msadstest.Generate(41, 3, 4), fmt.Sprintf("invitations:\n  webhook_url: %s/services/T0/B0/s3cr3tH00kPath\nmetrics:\n  pushgateway_url: %s\nevidence:\n  signing_key: %s\n", hook.srv.URL, gw.srv.URL, signing))
	role := "reader_" + randText(4)
	if _, err := e.pool.Exec(t.Context(), "CREATE ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.pool.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = e.pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	e.editConfig("  schema: "+e.schema+"\n", "  schema: "+e.schema+"\n  reader_role: "+role+"\n")
	// The reader role needs its grants: that is what migrate is for.
	if r := e.run("migrate", "--config", e.config); r.code != 0 {
		t.Fatalf("migrate: exit %d: %s", r.code, r.stderr)
	}
	before := e.queryInt("SELECT (SELECT count(*) FROM S.sync_runs) + (SELECT count(*) FROM S.users) + (SELECT count(*) FROM S.customers)")

	r := e.checkRun(nil, nil)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(checkOrder) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(checkOrder), r.stdout)
	}
	for i, name := range checkOrder {
		if !strings.HasPrefix(lines[i], "✓ "+name+": ") {
			t.Errorf("line %d = %q, want ✓ %s", i+1, lines[i], name)
		}
	}
	id, userName := e.sim.Principal()
	if l := checkLine(t, r.stdout, "developer token"); !strings.Contains(l, fmt.Sprintf("%s (user id %d)", userName, id)) {
		t.Errorf("developer token line %q does not say who is signed in", l)
	}
	if l := checkLine(t, r.stdout, "evidence signing key"); !strings.Contains(l, evidence.KeyID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))) {
		t.Errorf("signing key line %q does not name the key id", l)
	}
	for _, secret := range []string{"s3cr3tH00kPath", e.sim.ClientSecret(), e.sim.DeveloperToken(), e.sim.RefreshToken(), signing} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("the output shows a secret (%.6s…)", secret)
		}
	}
	for _, req := range hook.all() {
		if !strings.HasPrefix(req, "HEAD ") || strings.TrimSpace(strings.SplitN(req, "\n", 2)[1]) != "" {
			t.Errorf("webhook got %q: check must post no message", req)
		}
	}
	if reqs := gw.all(); len(reqs) != 1 || !strings.HasPrefix(reqs[0], "GET /-/ready") {
		t.Errorf("pushgateway got %q, want one GET /-/ready", reqs)
	}
	// Nothing written, except the rotated refresh token, saved as runs do.
	if after := e.queryInt("SELECT (SELECT count(*) FROM S.sync_runs) + (SELECT count(*) FROM S.users) + (SELECT count(*) FROM S.customers)"); after != before {
		t.Errorf("check wrote to the warehouse: %d -> %d rows", before, after)
	}
	if n := e.queryInt("SELECT count(*) FROM S.oauth_tokens"); n != 1 {
		t.Errorf("%d stored refresh tokens, want the rotated one saved", n)
	}
	// A second check starts from the stored (rotated) token.
	if r := e.checkRun(nil, nil); r.code != 0 || !strings.Contains(checkLine(t, r.stdout, "token store"), "is stored") {
		t.Errorf("second check: exit %d\n%s", r.code, r.stdout)
	}

	r = e.checkRun(nil, nil, "--json")
	var got []struct {
		Name    string `json:"name"`
		OK      bool   `json:"ok"`
		Skipped bool   `json:"skipped"`
		Detail  string `json:"detail"`
		Fix     string `json:"fix"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json output is not a JSON array: %v\n%s", err, r.stdout)
	}
	if r.code != 0 || len(got) != len(checkOrder) {
		t.Fatalf("--json: exit %d, %d checks", r.code, len(got))
	}
	for i, c := range got {
		if c.Name != checkOrder[i] || !c.OK || c.Skipped || c.Detail == "" || c.Fix != "" {
			t.Errorf("--json check %d = %+v", i, c)
		}
	}
}

// TestCheckBrokenSetups: each broken setup fails its own check with a line
// that names the fix, skips the checks that depend on it, and exits 1.
func TestCheckBrokenSetups(t *testing.T) {
	t.Parallel()
	t.Run("wrong client secret", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(42, 2, 3), "")
		r := e.checkRun(map[string]string{"TEST_CLIENT_SECRET": "not-the-right-secret-value"}, nil)
		wantFailed(t, r, "refresh", "invalid_client", "7000215", "microsoft_ads.client_secret")
		for _, name := range []string{"developer token", "customers"} {
			if l := checkLine(t, r.stdout, name); l != "- "+name+": skipped (because refresh failed)" {
				t.Errorf("line %q, want skipped because refresh failed", l)
			}
		}
		if strings.Contains(r.stdout+r.stderr, "not-the-right-secret-value") {
			t.Error("the output shows the client secret")
		}
	})
	t.Run("missing environment variable", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(43, 1, 3), "")
		r := e.checkRun(nil, []string{"TEST_DEV_TOKEN"})
		wantFailed(t, r, "config", "microsoft_ads.developer_token (line 7)", "${TEST_DEV_TOKEN} is not set", "export TEST_DEV_TOKEN")
		if l := checkLine(t, r.stdout, "database"); l != "- database: skipped (because config failed)" {
			t.Errorf("line %q", l)
		}
	})
	t.Run("wrong token key", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(44, 1, 3), "")
		e.editConfig("  schema: "+e.schema+"\n", "  schema: "+e.schema+"\n  token_key: ${TEST_TOKEN_KEY}\n")
		// A run stores the rotated refresh token, encrypted with the key.
		r := e.checkRun(map[string]string{"TEST_TOKEN_KEY": "the-first-token-key"}, nil)
		if r.code != 0 {
			t.Fatalf("check with the right key: exit %d\n%s", r.code, r.stdout)
		}
		r = e.checkRun(map[string]string{"TEST_TOKEN_KEY": "another-token-key"}, nil)
		wantFailed(t, r, "token store", "does not decrypt", "database.token_key", "syncer auth")
		if strings.Contains(r.stdout+r.stderr, "another-token-key") {
			t.Error("the output shows the token key")
		}
	})
	t.Run("wrong database password", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(45, 1, 3), "")
		role, host := e.passwordRole()
		u := &url.URL{Scheme: "postgres", User: url.UserPassword(role, "wrong-Pa55word-x"), Host: host, Path: "/postgres", RawQuery: "sslmode=disable"}
		e.setDatabaseURL(u.String())
		r := e.checkRun(nil, nil)
		wantFailed(t, r, "database", "password authentication failed", role, "28P01", "database.url")
		if strings.Contains(r.stdout+r.stderr, "wrong-Pa55word-x") {
			t.Error("the output shows the database password")
		}
		if l := checkLine(t, r.stdout, "migrations"); l != "- migrations: skipped (because database failed)" {
			t.Errorf("line %q", l)
		}
	})
	t.Run("bad evidence signing key", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(50, 1, 3), "evidence:\n  signing_key: bm90LWEta2V5LXh5eg==\n")
		r := e.checkRun(nil, nil)
		wantFailed(t, r, "evidence signing key", "evidence.signing_key", "Ed25519", "openssl genpkey")
		if strings.Contains(r.stdout+r.stderr, "bm90LWEta2V5LXh5eg") {
			t.Error("the output shows the signing key")
		}
	})
	t.Run("wrong developer token", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(49, 1, 3), "")
		r := e.checkRun(map[string]string{"TEST_DEV_TOKEN": "not-a-developer-token"}, nil)
		wantFailed(t, r, "developer token", "code 105", "microsoft_ads.developer_token", "microsoft_ads.environment")
	})
	t.Run("customer not visible", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(46, 3, 3), "")
		hidden := e.ds.CustomerIDs()[2]
		e.sim.SetUnreachable(hidden)
		r := e.checkRun(nil, nil)
		wantFailed(t, r, "customers", "1 of 3", fmt.Sprint(hidden), "remove them from customers.ids", "syncer auth")
	})
	t.Run("database unreachable and missing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, msadstest.Generate(47, 1, 3), "")
		e.setDatabaseURL("postgres://nobody:pw-secret-123@127.0.0.1:1/none?connect_timeout=2")
		wantFailed(t, e.checkRun(nil, nil), "database", "connection refused at 127.0.0.1:1", "check the host and port")
		pu, err := url.Parse(pgtest.URL(t))
		if err != nil {
			t.Skip("TEST_DATABASE_URL is not a URL")
		}
		pu.Path = "/no_such_db_" + randText(3)
		e.setDatabaseURLFrom(pu.String())
		wantFailed(t, e.checkRun(nil, nil), "database", "does not exist", "3D000", "CREATE DATABASE")
	})
}

// setDatabaseURLFrom points the config, already using a ${file:} database
// URL (setDatabaseURL), at another URL.
func (e *env) setDatabaseURLFrom(u string) {
	e.t.Helper()
	if err := os.WriteFile(e.dir+"/database-url", []byte(u+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// hbaLock serialises the rewrites of pg_hba.conf.
var hbaLock sync.Mutex

// passwordRole creates a login role with a password that the server checks
// over TCP, and returns it with the server's host:port. The throwaway test
// cluster trusts every local connection, so pg_hba.conf gets a
// scram-sha-256 line for this role first; on a server of TEST_DATABASE_URL
// (not ours to reconfigure) the test is skipped unless it checks passwords
// already.
func (e *env) passwordRole() (role, host string) {
	e.t.Helper()
	ctx := e.t.Context()
	pu, err := url.Parse(pgtest.URL(e.t))
	if err != nil || pu.Host == "" {
		e.t.Skip("TEST_DATABASE_URL is not a URL with a host")
	}
	role = "pwcheck_" + randText(4)
	r := pgx.Identifier{role}.Sanitize()
	if _, err := e.pool.Exec(ctx, "CREATE ROLE "+r+" LOGIN PASSWORD 'right-Pa55word-"+randText(4)+"'"); err != nil {
		e.t.Skipf("cannot create a role with a password: %v", err)
	}
	e.t.Cleanup(func() { _, _ = e.pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+r) })

	wrong := &url.URL{Scheme: "postgres", User: url.UserPassword(role, "wrong"), Host: pu.Host, Path: "/postgres", RawQuery: "sslmode=disable&connect_timeout=5"}
	refused := func() bool {
		c, err := pgx.Connect(ctx, wrong.String())
		if err == nil {
			c.Close(ctx)
			return false
		}
		return strings.Contains(err.Error(), "28P01")
	}
	if refused() {
		return role, pu.Host
	}
	if !pgtest.Owned() {
		e.t.Skip("the server of TEST_DATABASE_URL accepts any password for a new role (trust authentication): not ours to reconfigure")
	}
	var hbaFile string
	if err := e.pool.QueryRow(ctx, "SHOW hba_file").Scan(&hbaFile); err != nil {
		e.t.Skipf("cannot find pg_hba.conf: %v", err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9/_.-]+$`).MatchString(hbaFile) {
		e.t.Skipf("unexpected pg_hba.conf path %q", hbaFile)
	}
	// Password checks for the members of pwcheck_group (the roles of these
	// tests); trust for every other connection, as the cluster had.
	hbaLock.Lock()
	defer hbaLock.Unlock()
	_, _ = e.pool.Exec(ctx, "CREATE ROLE pwcheck_group NOLOGIN") // may exist already
	if _, err := e.pool.Exec(ctx, "GRANT pwcheck_group TO "+r); err != nil {
		e.t.Skipf("cannot grant the password-checked group: %v", err)
	}
	lines := []string{
		"local all all trust",
		"host all +pwcheck_group 127.0.0.1/32 scram-sha-256",
		"host all +pwcheck_group ::1/128 scram-sha-256",
		"host all all 127.0.0.1/32 trust",
		"host all all ::1/128 trust",
	}
	q := "COPY (SELECT * FROM unnest(ARRAY['" + strings.Join(lines, "', '") + "'])) TO '" + hbaFile + "'"
	if _, err := e.pool.Exec(ctx, q); err != nil {
		e.t.Skipf("cannot write pg_hba.conf: %v", err)
	}
	if _, err := e.pool.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		e.t.Skipf("cannot reload the configuration: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !refused() {
		if time.Now().After(deadline) {
			e.t.Skip("the server still accepts a wrong password after pg_hba.conf was changed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return role, pu.Host
}

// TestRunConfigBeforeCommandAndLastLine: `syncer --config FILE run` works
// like `syncer run --config FILE`, and the last stderr line of a partial
// run names the failed customer and its error.
func TestRunConfigBeforeCommandAndLastLine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(48, 3, 3), "")
	bad := e.ds.CustomerIDs()[1]
	e.sim.SetFault("SearchUserInvitations", msadstest.Fault{CustomerID: bad, Status: 400, Code: 106})
	r := e.run("--config", e.config, "--log-level", "error", "run")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	want := fmt.Sprintf("syncer: 1 of 3 customers failed: %d (SearchUserInvitations (customer %d): HTTP 400: code 106", bad, bad)
	if !strings.HasPrefix(last, want) {
		t.Errorf("last line %q, want it to start %q", last, want)
	}
}
