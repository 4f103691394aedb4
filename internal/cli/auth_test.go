package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// syncBuf is a bytes.Buffer safe to read while a command writes it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// authEnv is a simulator, a migrated schema and a config file pointing at
// both, without any refresh token: only `syncer auth` can provide one.
type authEnv struct {
	t      *testing.T
	sim    *msadstest.Server
	pool   *pgxpool.Pool
	schema string
	config string
}

func newAuthEnv(t *testing.T, extraAds string, opts ...msadstest.Option) *authEnv {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	sim := msadstest.NewServer(msadstest.Generate(31, 2, 3), opts...)
	t.Cleanup(sim.Close)
	e := &authEnv{t: t, sim: sim, pool: pool, schema: schema}
	e.writeConfig(sim.DeveloperToken(), extraAds)
	return e
}

func (e *authEnv) writeConfig(devToken, extraAds string) {
	e.t.Helper()
	ids := e.sim.Dataset().CustomerIDs()
	y := fmt.Sprintf(`database:
  url: %q
  schema: %s
microsoft_ads:
  api_url: %q
  token_url: %q
  developer_token: %q
  client_id: %q
  client_secret: %q
  requests_per_second: 200
%scustomers:
  ids: [%d, %d]
sync:
  request_timeout: 5s
  retry_max_elapsed: 2s
log:
  format: text
  level: warn
`, pgtest.URL(e.t), e.schema, e.sim.APIURL(), e.sim.TokenURL(), devToken, e.sim.ClientID(), e.sim.ClientSecret(), extraAds, ids[0], ids[1])
	if e.config == "" {
		e.config = filepath.Join(e.t.TempDir(), "config.yaml")
	}
	if err := os.WriteFile(e.config, []byte(y), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// cmd is a command running in-process.
type cmd struct {
	stdout, stderr *syncBuf
	stdin          *io.PipeWriter
	done           chan int
}

func (e *authEnv) start(args ...string) *cmd {
	e.t.Helper()
	pr, pw := io.Pipe()
	c := &cmd{stdout: &syncBuf{}, stderr: &syncBuf{}, stdin: pw, done: make(chan int, 1)}
	getenv := func(k string) string {
		if k == "BROWSER" {
			return "none" // never start a real browser from a test
		}
		return ""
	}
	go func() {
		c.done <- Main(append(args, "--config", e.config), IO{Stdin: pr, Stdout: c.stdout, Stderr: c.stderr, Getenv: getenv})
	}()
	e.t.Cleanup(func() { _ = pw.Close() })
	return c
}

// exit waits for the command's exit code.
func (c *cmd) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-c.done:
		return code
	case <-time.After(time.Minute):
		t.Fatalf("command did not end\nstdout:\n%s\nstderr:\n%s", c.stdout, c.stderr)
		return -1
	}
}

var signInURLRE = regexp.MustCompile(`https?://\S+/oauth2/v2\.0/authorize\?\S+`)

// signInURL waits for the command to print the sign-in URL.
func (c *cmd) signInURL(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := signInURLRE.FindString(c.stdout.String()); m != "" {
			return m
		}
		select {
		case code := <-c.done:
			t.Fatalf("command ended (exit %d) before printing the sign-in URL\nstdout:\n%s\nstderr:\n%s", code, c.stdout, c.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no sign-in URL printed:\n%s", c.stdout)
	return ""
}

// browse plays the browser: it opens the sign-in URL and follows the
// redirect to the loopback listener, returning the page it shows.
func browse(t *testing.T, signIn string) (int, string) {
	t.Helper()
	resp, err := http.Get(signIn)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// redirectOf signs in without following the redirect (nothing listens at
// the redirect URI in paste mode) and returns the address the browser
// would land on.
func redirectOf(t *testing.T, signIn string) string {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(signIn)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize answered %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// wantSignedIn checks the report of a successful auth and that the token
// is stored under the signed-in user.
func (e *authEnv) wantSignedIn(c *cmd, code int) {
	e.t.Helper()
	if code != ExitOK {
		e.t.Fatalf("auth exit %d\nstdout:\n%s\nstderr:\n%s", code, c.stdout, c.stderr)
	}
	id, name := e.sim.Principal()
	out := c.stdout.String()
	for _, want := range []string{fmt.Sprintf("Signed in as %s (user id %d)", name, id), "Customers this user can see (2)",
		fmt.Sprint(e.sim.Dataset().CustomerIDs()[0]), "The refresh token is stored in schema " + e.schema} {
		if !strings.Contains(out, want) {
			e.t.Errorf("auth output lacks %q:\n%s", want, out)
		}
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{e.schema, "oauth_tokens"}.Sanitize()+
		` WHERE client_id = $1 AND user_id = $2 AND user_name = $3 AND environment = 'production'`, e.sim.ClientID(), id, name).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	if n != 1 {
		e.t.Errorf("stored tokens of the signed-in user = %d, want 1", n)
	}
}

func (e *authEnv) run(t *testing.T) {
	t.Helper()
	c := e.start("run")
	if code := c.exit(t); code != ExitOK {
		t.Fatalf("run exit %d\nstdout:\n%s\nstderr:\n%s", code, c.stdout, c.stderr)
	}
}

// The default mode: a loopback listener takes the code from the browser's
// redirect; then runs use the token, also after the developer token is
// rotated.
func TestAuthLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		public   bool
		redirect func(port int) string
	}{
		{"confidential client, configured port", false, func(p int) string { return fmt.Sprintf("http://localhost:%d/", p) }},
		{"public client, no port: a free one", true, func(int) string { return "http://localhost/" }},
		{"public client, 127.0.0.1 with a path", true, func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d/syncer/callback", p) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []msadstest.Option
			if tc.public {
				opts = append(opts, msadstest.WithPublicClient())
			}
			e := newAuthEnv(t, fmt.Sprintf("  redirect_uri: %q\n", tc.redirect(freeLoopbackPort(t))), opts...)
			e.sim.RejectSupersededRefreshTokens(true)
			c := e.start("auth")
			u := c.signInURL(t)
			parsed, _ := url.Parse(u)
			q := parsed.Query()
			ru, _ := url.Parse(q.Get("redirect_uri"))
			if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" || ru.Port() == "" || ru.Port() == "0" {
				t.Errorf("sign-in URL lacks PKCE, state or a port: %s", u)
			}
			status, page := browse(t, u)
			if status != http.StatusOK || !strings.Contains(page, "You can close this tab") {
				t.Errorf("browser got %d:\n%s", status, page)
			}
			e.wantSignedIn(c, c.exit(t))
			e.run(t)
			// A new developer token (another one the API accepts): the stored
			// token is keyed by client id and user, so it is still found.
			e.writeConfig(e.sim.AddCredential(0, nil).DeveloperToken(), fmt.Sprintf("  redirect_uri: %q\n", tc.redirect(1)))
			e.run(t)
		})
	}
}

func TestAuthLoopbackRedirectNotRegistered(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, fmt.Sprintf("  redirect_uri: \"http://localhost:%d/callback\"\n", freeLoopbackPort(t)))
	e.sim.SetRedirectURIs("http://localhost:8400/")
	c := e.start("auth")
	status, page := browse(t, c.signInURL(t))
	if status != http.StatusBadRequest || !strings.Contains(page, "AADSTS50011") {
		t.Errorf("browser got %d:\n%s", status, page)
	}
	if code := c.exit(t); code != ExitFatal {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"AADSTS50011", "register the redirect URI exactly", "microsoft_ads.redirect_uri"} {
		if !strings.Contains(c.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, c.stderr)
		}
	}
}

// A redirect whose state is not the sign-in's is refused with a page and
// the listener keeps waiting for the right one.
func TestAuthLoopbackIgnoresForeignState(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, fmt.Sprintf("  redirect_uri: \"http://localhost:%d/\"\n", freeLoopbackPort(t)))
	c := e.start("auth")
	u := c.signInURL(t)
	loc, _ := url.Parse(redirectOf(t, u))
	q := loc.Query()
	q.Set("state", "not-ours")
	loc.RawQuery = q.Encode()
	status, page := browse(t, loc.String())
	if status != http.StatusBadRequest || !strings.Contains(page, "another sign-in attempt") {
		t.Errorf("foreign state: browser got %d:\n%s", status, page)
	}
	if status, _ := browse(t, u); status != http.StatusOK {
		t.Errorf("the right redirect after a foreign one: %d", status)
	}
	e.wantSignedIn(c, c.exit(t))
}

func TestAuthPublicClientWithSecret(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, fmt.Sprintf("  redirect_uri: \"http://localhost:%d/\"\n", freeLoopbackPort(t)), msadstest.WithPublicClient())
	// The config sets a secret the public registration must not send.
	y, _ := os.ReadFile(e.config)
	_ = os.WriteFile(e.config, bytes.Replace(y, []byte(`client_secret: ""`), []byte(`client_secret: "s3cret"`), 1), 0o600)
	c := e.start("auth")
	browse(t, c.signInURL(t))
	if code := c.exit(t); code != ExitFatal || !strings.Contains(c.stderr.String(), "AADSTS700025") || !strings.Contains(c.stderr.String(), "client_secret empty") {
		t.Errorf("exit %d, stderr:\n%s\nwant 1 naming AADSTS700025 and the fix", code, c.stderr)
	}
}

// --no-browser: the address (or the bare code) is pasted on stdin, the
// state checked when the address has one.
func TestAuthNoBrowserPaste(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		paste func(location string) string
		ok    bool
	}{
		{"full address", func(l string) string { return l }, true},
		{"bare code", func(l string) string { u, _ := url.Parse(l); return u.Query().Get("code") }, true},
		{"address of another attempt", func(l string) string {
			return strings.Replace(l, "state=", "state=0", 1)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newAuthEnv(t, "")
			c := e.start("auth", "--no-browser")
			u := c.signInURL(t)
			if !strings.Contains(u, url.QueryEscape("http://localhost:8400/")) {
				t.Errorf("sign-in URL does not carry the default redirect URI: %s", u)
			}
			if _, err := io.WriteString(c.stdin, tc.paste(redirectOf(t, u))+"\n"); err != nil {
				t.Fatal(err)
			}
			code := c.exit(t)
			if tc.ok {
				e.wantSignedIn(c, code)
				return
			}
			if code != ExitFatal || !strings.Contains(c.stderr.String(), "another sign-in attempt") {
				t.Errorf("exit %d, stderr:\n%s\nwant 1 naming the state mismatch", code, c.stderr)
			}
		})
	}
}

// The bug: the address pasted into a later `syncer auth --code`
// (another process) failed the state check every time. The sign-in's
// state and PKCE verifier are now kept in the database.
func TestAuthCodeFromEarlierSignIn(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, "")
	first := e.start("auth", "--no-browser")
	loc := redirectOf(t, first.signInURL(t))
	_ = first.stdin.Close() // the person gives up on this terminal
	if code := first.exit(t); code != ExitFatal {
		t.Fatalf("first auth exit %d, want 1 (nothing pasted)", code)
	}
	// Another attempt's address is refused...
	wrong := e.start("auth", "--code", strings.Replace(loc, "state=", "state=0", 1))
	if code := wrong.exit(t); code != ExitFatal || !strings.Contains(wrong.stderr.String(), "belongs to no sign-in started") {
		t.Errorf("--code with a foreign state: exit %d, stderr:\n%s", code, wrong.stderr)
	}
	// ...the right one is accepted.
	c := e.start("auth", "--code", loc)
	e.wantSignedIn(c, c.exit(t))
	if strings.Contains(c.stdout.String(), "/authorize?") {
		t.Errorf("--code printed a new sign-in URL:\n%s", c.stdout)
	}
}

func TestAuthDevice(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, "", msadstest.WithPublicClient())
	// One pending poll (the polling itself is TestDeviceCodeFlow's, on a
	// fake clock): each poll waits the 1 s interval.
	e.sim.SetDeviceFlow(msadstest.DeviceFlow{Interval: 1, ApproveAfterPolls: 1})
	before := e.sim.Calls(msadstest.OpToken)
	c := e.start("auth", "--device")
	code := c.exit(t)
	e.wantSignedIn(c, code)
	out := c.stdout.String()
	if !strings.Contains(out, e.sim.DeviceLoginURL()) || !regexp.MustCompile(`enter the code [0-9A-F]{8}\b`).MatchString(out) {
		t.Errorf("device output lacks the verification URI or the user code:\n%s", out)
	}
	// A pending poll, the approved one, and the refresh of the API check.
	if got := e.sim.Calls(msadstest.OpToken) - before; got != 3 {
		t.Errorf("token endpoint calls = %d, want 3", got)
	}
	e.run(t)
}

func TestParseRedirect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, code, state string
		hasState        bool
		err             string
	}{
		{in: "M.C507_BAY.2.U.abc-def", code: "M.C507_BAY.2.U.abc-def"},
		{in: "  http://localhost:8400/?code=c1&state=s1\n", code: "c1", state: "s1", hasState: true},
		{in: "code=c2&state=", code: "c2", hasState: true},
		{in: "https://login.microsoftonline.com/common/oauth2/nativeclient?code=c3", code: "c3"},
		{in: "http://localhost:8400/?error=invalid_request&error_description=AADSTS50011%3A+The+redirect+URI", err: "register the redirect URI exactly"},
		{in: "http://localhost:8400/?error=consent_required&error_description=AADSTS65001%3A+no+consent", err: "consent was not given"},
		{in: "http://localhost:8400/", err: "has no code"},
		{in: "", err: "nothing pasted"},
	} {
		got, err := parseRedirect(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseRedirect(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.code != tc.code || got.state != tc.state || got.hasState != tc.hasState {
			t.Errorf("parseRedirect(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestListenLoopbackRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"https://login.microsoftonline.com/common/oauth2/nativeclient", "http://example.com:8400/", "https://localhost:8400/"} {
		if lb, err := listenLoopback(u, true); err == nil || !strings.Contains(err.Error(), "--no-browser") {
			if lb != nil {
				lb.close()
			}
			t.Errorf("listenLoopback(%q) = %v, want an error pointing to --no-browser", u, err)
		}
	}
	// A port in use is named.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u := fmt.Sprintf("http://127.0.0.1:%d/", l.Addr().(*net.TCPAddr).Port)
	if _, err := listenLoopback(u, false); err == nil || !strings.Contains(err.Error(), "cannot listen") {
		t.Errorf("busy port: %v", err)
	}
}

// A refresh token stored before migration 004 (under the credential key, a
// hash of the client id and the developer token) is used by the next run
// and moved under the signed-in user.
func TestRunMigratesLegacyToken(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, "")
	e.sim.RejectSupersededRefreshTokens(true)
	cfg, err := loadConfig(&common{configPath: e.config}, IO{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	store := newStore(e.pool, cfg, false, nil)
	if err := store.TokenStore(credentialKey(cfg)).Save(t.Context(), e.sim.RefreshToken()); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	id, name := e.sim.Principal()
	var key, user string
	if err := e.pool.QueryRow(t.Context(), `SELECT string_agg(credential_key, ','), string_agg(user_id || ' ' || user_name, ',') FROM `+
		pgx.Identifier{e.schema, "oauth_tokens"}.Sanitize()).Scan(&key, &user); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("user:production:%s:%d", e.sim.ClientID(), id); key != want || user != fmt.Sprintf("%d %s", id, name) {
		t.Errorf("stored rows: keys %q users %q; want only %q of %d %s", key, user, want, id, name)
	}
	// And the next run, with a rotated developer token, still finds it.
	e.writeConfig(e.sim.AddCredential(0, nil).DeveloperToken(), "")
	e.run(t)
}
