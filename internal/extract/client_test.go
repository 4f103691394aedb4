package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	base := Config{DeveloperToken: "d", ClientID: "c"}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no developer token", func(c *Config) { c.DeveloperToken = "" }, "developer token"},
		{"no client id", func(c *Config) { c.ClientID = "" }, "client id"},
		{"negative rate", func(c *Config) { c.RequestsPerSecond = -1 }, "must not be negative"},
		{"bad env", func(c *Config) { c.Environment = "staging" }, "environment"},
		{"bad api url", func(c *Config) { c.APIURL = "clientcenter" }, "api url"},
	}
	for _, tt := range tests {
		cfg := base
		tt.mutate(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New err = %v, want mention of %q", tt.name, err, tt.want)
		}
	}
	c, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if c.baseURL != ProductionAPIURL+"/CustomerManagement/v13/" || c.cfg.RequestsPerSecond != 5 || c.cfg.ThrottleWait != time.Minute ||
		c.cfg.RequestTimeout != 30*time.Second || c.cfg.RetryMaxElapsed != 5*time.Minute || c.tokens.scope != ProductionScope ||
		c.tokens.conf.Endpoint.TokenURL != DefaultTokenURL {
		t.Errorf("defaults not applied: %+v", c.cfg)
	}
	sb, err := New(Config{DeveloperToken: "d", ClientID: "c", Environment: "Sandbox"})
	if err != nil {
		t.Fatal(err)
	}
	if sb.baseURL != SandboxAPIURL+"/CustomerManagement/v13/" || sb.tokens.scope != SandboxScope || sb.tokens.conf.Endpoint.TokenURL != DefaultTokenURL {
		t.Errorf("sandbox defaults wrong: %s %s", sb.baseURL, sb.tokens.scope)
	}
}

func TestRequestsCarryHeadersAndShapes(t *testing.T) {
	t.Parallel()
	type seen struct {
		path, auth, dev, cust, ctype, accept, body string
	}
	var mu sync.Mutex
	var got []seen
	_, cfg := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("DeveloperToken"), r.Header.Get("CustomerId"),
			r.Header.Get("Content-Type"), r.Header.Get("Accept"), string(b)})
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/UsersInfo/Query"):
			io.WriteString(w, `{"UsersInfo":[]}`)
		case strings.HasSuffix(r.URL.Path, "/User/Query"):
			io.WriteString(w, `{"User":{"Id":"7","CustomerId":"9"},"CustomerRoles":[]}`)
		case strings.HasSuffix(r.URL.Path, "/UserInvitations/Search"):
			io.WriteString(w, `{"UserInvitations":[]}`)
		case strings.HasSuffix(r.URL.Path, "/CustomersInfo/Query"):
			io.WriteString(w, `{"CustomersInfo":[]}`)
		case strings.HasSuffix(r.URL.Path, "/AccountsInfo/Query"):
			io.WriteString(w, `{"AccountsInfo":[]}`)
		}
	})
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := c.GetUsersInfo(ctx, 150); err != nil {
		t.Fatal(err)
	}
	u, _, err := c.GetUser(ctx, 150, 7)
	if err != nil {
		t.Fatal(err)
	}
	if u.CustomerID != 150 || u.HomeCustomerID != 9 {
		t.Errorf("GetUser CustomerID=%d HomeCustomerID=%d, want 150, 9", u.CustomerID, u.HomeCustomerID)
	}
	if _, err := c.SearchUserInvitations(ctx, 150); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetCustomersInfo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAccountsInfo(ctx, 150); err != nil {
		t.Fatal(err)
	}
	want := []seen{
		{"/api/CustomerManagement/v13/UsersInfo/Query", "", "", "150", "", "", `{"CustomerId":"150","StatusFilter":null}`},
		{"/api/CustomerManagement/v13/User/Query", "", "", "150", "", "", `{"UserId":"7"}`},
		{"/api/CustomerManagement/v13/UserInvitations/Search", "", "", "150", "", "", `{"Predicates":[{"Field":"CustomerId","Operator":"Equals","Value":"150"}]}`},
		{"/api/CustomerManagement/v13/CustomersInfo/Query", "", "", "", "", "", `{"CustomerNameFilter":"","TopN":1000}`},
		{"/api/CustomerManagement/v13/AccountsInfo/Query", "", "", "150", "", "", `{"CustomerId":"150","OnlyParentAccounts":true}`},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d requests, want %d", len(got), len(want))
	}
	for i, g := range got {
		w := want[i]
		if g.path != w.path || g.cust != w.cust || g.body != w.body {
			t.Errorf("request %d = %+v, want path %s customer %q body %s", i, g, w.path, w.cust, w.body)
		}
		if g.auth != "Bearer ACCESS-SECRET-1" || g.dev != "DEVTOKEN-SECRET" || g.ctype != "application/json" || g.accept != "application/json" {
			t.Errorf("request %d headers = %+v", i, g)
		}
	}
}

func TestFallbacksForUnverifiedRequestForms(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []string
	_, cfg := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		switch {
		case strings.Contains(string(b), `"StatusFilter":null`):
			w.WriteHeader(400)
			io.WriteString(w, `{"Type":"AdApiFaultDetail","Errors":[{"Code":203,"ErrorCode":"NullParameter"}]}`)
		case strings.Contains(string(b), `"Operator":"Equals"`):
			w.WriteHeader(400)
			io.WriteString(w, `{"Type":"ApiFault","OperationErrors":[{"Code":3030,"Message":"invalid predicate"}]}`)
		case strings.Contains(string(b), "StatusFilter"):
			io.WriteString(w, `{"UsersInfo":[{"Id":"1","UserName":"a"}]}`)
		default:
			io.WriteString(w, `{"UserInvitations":[{"Id":"2","RoleId":41}]}`)
		}
	})
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if us, err := c.GetUsersInfo(ctx, 150); err != nil || len(us) != 1 {
		t.Errorf("GetUsersInfo = %v, %v", us, err)
	}
	inv, err := c.SearchUserInvitations(ctx, 150)
	if err != nil || len(inv) != 1 || inv[0].CustomerID != 150 {
		t.Errorf("SearchUserInvitations = %+v, %v", inv, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 4 || !strings.Contains(bodies[1], `"StatusFilter":"Active"`) || !strings.Contains(bodies[3], `"Operator":"In"`) {
		t.Errorf("fallback bodies = %q", bodies)
	}
}

func TestThrottleStormPausesOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	users := b.ds.ListedUserIDs(b.ds.CustomerIDs()[0])[:8]
	// Warm the token so all 8 calls are in flight at once.
	if _, err := b.client.GetUsersInfo(ctx, b.ds.CustomerIDs()[0]); err != nil {
		t.Fatal(err)
	}
	b.srv.ResetCalls()
	// The 8 calls reach the server before any is answered (Burst), however
	// late a loaded machine runs their goroutines: one storm.
	b.srv.SetFault(msadstest.OpGetUser, msadstest.Fault{Throttle: 8, Burst: 8})
	var wg sync.WaitGroup
	for _, id := range users {
		wg.Go(func() {
			if _, _, err := b.client.GetUser(ctx, b.ds.CustomerIDs()[0], id); err != nil {
				t.Errorf("GetUser(%d): %v", id, err)
			}
		})
	}
	wg.Wait()
	// The pause count is the assertion (eight stacked pauses would count
	// eight); the wall time is not, on a loaded 2-core machine.
	if n := b.obs.throttleCount(); n != 1 {
		t.Errorf("throttle pauses = %d, want 1 (one storm, one pause)", n)
	}
	if got := b.srv.Calls(msadstest.OpGetUser); got != 16 {
		t.Errorf("GetUser calls = %d, want 16 (8 throttled + 8 retries)", got)
	}
	if b.obs.count("GetUser/throttled") != 8 {
		t.Errorf("observer throttled calls = %d, want 8", b.obs.count("GetUser/throttled"))
	}
	if r := b.client.Rate(); r != 500 {
		t.Errorf("rate after one pause = %v, want 500 (halved once)", r)
	}
}

func TestThrottleHonoursRetryAfterAndRecovers(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.RequestsPerSecond = 400; c.ThrottleWait = time.Hour })
	ctx := testCtx(t)
	cid := b.ds.CustomerIDs()[0]
	// HTTP 400 + 117 with Retry-After: 1 (seconds) instead of the hour.
	b.srv.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{Throttle: 1, ThrottleStatus: 400, RetryAfter: time.Second})
	start := time.Now()
	if _, err := b.client.GetUsersInfo(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("call took %v, want about the 1s Retry-After", d)
	}
	if r := b.client.Rate(); r != 200 {
		t.Fatalf("rate = %v, want 200", r)
	}
	for range 8 * recoverEvery {
		if _, err := b.client.GetUsersInfo(ctx, cid); err != nil {
			t.Fatal(err)
		}
	}
	if r := b.client.Rate(); r != 400 {
		t.Errorf("rate after successes = %v, want recovered to 400", r)
	}
}

func TestServerRateLimitIsSurvived(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.RetryMaxElapsed = 10 * time.Second })
	ctx := testCtx(t)
	// 25 a second (a burst of 2): a request every 40 ms at most, which even
	// a loaded host's race-instrumented client outruns (at 50 a second, a
	// burst of 5, it once did not).
	b.srv.SetFault(msadstest.AnyOp, msadstest.Fault{RateLimitPerSec: 25})
	cache := NewUserCache()
	for _, cid := range b.ds.CustomerIDs() {
		if _, _, err := b.client.FetchCustomer(ctx, cid, cache, FetchOptions{Accounts: true}); err != nil {
			t.Fatalf("FetchCustomer: %v", err)
		}
	}
	if b.obs.throttleCount() == 0 {
		t.Error("no throttling seen; the test exercises nothing")
	}
}

func TestTransientAndMalformedAreRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	cid := b.ds.CustomerIDs()[0]
	b.srv.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{Status5xxCode0: 2})
	b.srv.SetFault(msadstest.OpSearchUserInvitations, msadstest.Fault{Malformed: 1})
	snap, st, err := b.client.FetchCustomer(ctx, cid, NewUserCache(), FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Retries != 3 || len(snap.Users) == 0 {
		t.Errorf("stats = %+v, want 3 retries", st)
	}
	if b.srv.Calls(msadstest.OpGetUsersInfo) != 3 || b.srv.Calls(msadstest.OpSearchUserInvitations) != 2 {
		t.Errorf("calls: UsersInfo %d, Invitations %d", b.srv.Calls(msadstest.OpGetUsersInfo), b.srv.Calls(msadstest.OpSearchUserInvitations))
	}
	// Retries give up after RetryMaxElapsed.
	b.srv.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{Status5xxCode0: 1 << 30})
	start := time.Now()
	_, err = b.client.GetUsersInfo(ctx, cid)
	if Classify(err) != ClassTransient || !strings.Contains(err.Error(), "gave up after") {
		t.Errorf("err = %v, want transient give-up", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("gave up after %v, want about RetryMaxElapsed (3s)", d)
	}
}

func TestExpiredAccessTokenIsRefreshedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	cid := b.ds.CustomerIDs()[0]
	if _, err := b.client.GetUsersInfo(ctx, cid); err != nil {
		t.Fatal(err)
	}
	b.srv.ExpireAccessTokens()
	if _, err := b.client.GetUsersInfo(ctx, cid); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if got := b.srv.Calls(msadstest.OpToken); got != 2 {
		t.Errorf("token calls = %d, want 2", got)
	}
	if b.obs.count("GetUsersInfo/unauthorized") != 1 {
		t.Errorf("unauthorized outcomes = %d, want 1", b.obs.count("GetUsersInfo/unauthorized"))
	}
	// A server that keeps answering 109 to this call, right after a
	// refresh a 401 forced, fails the call without refreshing again (the
	// signed-in user's own GetUser still answers: not run-fatal).
	b.srv.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{Code: 109})
	_, err := b.client.GetUsersInfo(ctx, cid)
	if Classify(err) != ClassAuth || IsRunFatal(err) {
		t.Errorf("err = %v, want this call's own 401, not run-fatal", err)
	}
	if got := b.srv.Calls(msadstest.OpToken); got != 2 {
		t.Errorf("token calls = %d, want 2", got)
	}
}

func TestInvalidGrantIsActionable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.SetTokenFault(true)
	_, err := b.client.GetUsersInfo(testCtx(t), b.ds.CustomerIDs()[0])
	if !errors.Is(err, ErrReauth) {
		t.Fatalf("err = %v, want ErrReauth", err)
	}
	if !strings.Contains(err.Error(), "syncer auth") || Classify(err) != ClassPermanent {
		t.Errorf("err = %q (class %v), want mention of `syncer auth`, permanent", err, Classify(err))
	}
	if got := b.srv.Calls(msadstest.OpGetUsersInfo); got != 0 {
		t.Errorf("API calls = %d, want 0", got)
	}
}

func TestRotatedRefreshTokenReachesStoreAndNextClient(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(7, 2, 5)
	srv := msadstest.NewServer(ds.Clone())
	t.Cleanup(srv.Close)
	srv.RejectSupersededRefreshTokens(true)
	seed := srv.RefreshToken()
	store := &MemoryTokenStore{}
	cfg := simConfig(t, srv)
	cfg.Store = store
	ctx := testCtx(t)
	cid := ds.CustomerIDs()[0]

	c1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.GetUsersInfo(ctx, cid); err != nil {
		t.Fatal(err)
	}
	stored, _ := store.Load(ctx)
	if stored == "" || stored == seed || stored != srv.RefreshToken() {
		t.Fatalf("stored token = %q, want the rotated one %q", stored, srv.RefreshToken())
	}
	// A new client with the same (now superseded) seed in its config: the
	// stored token must win, or the simulator would answer invalid_grant.
	c2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.GetUsersInfo(ctx, cid); err != nil {
		t.Fatalf("second client: %v", err)
	}
	if again, _ := store.Load(ctx); again == stored || again != srv.RefreshToken() {
		t.Errorf("second rotation not stored: %q", again)
	}
	// Without the store, the superseded seed is rejected.
	cfg.Store = nil
	c3, _ := New(cfg)
	if _, err := c3.GetUsersInfo(ctx, cid); !errors.Is(err, ErrReauth) {
		t.Errorf("superseded seed: err = %v, want ErrReauth", err)
	}
}

func TestStoredTokenRejectedFallsBackToSeed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	b.store.Save(ctx, "revoked-token-from-db")
	if _, err := b.client.GetUsersInfo(ctx, b.ds.CustomerIDs()[0]); err != nil {
		t.Fatalf("want fallback to the configured seed: %v", err)
	}
	if got, _ := b.store.Load(ctx); got != b.srv.RefreshToken() {
		t.Errorf("store = %q, want rotated %q", got, b.srv.RefreshToken())
	}
}

func TestCancelEndsHungCallAndBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.RequestTimeout = time.Minute
		c.RetryMaxElapsed = time.Minute
		c.RetryInitialInterval = 30 * time.Second
		c.ThrottleWait = time.Minute
	})
	cid := b.ds.CustomerIDs()[0]
	cases := []struct {
		name  string
		fault msadstest.Fault
	}{
		{"hung call", msadstest.Fault{Hang: 1}},
		{"backoff wait", msadstest.Fault{Status5xxCode0: 5}},
		{"throttle pause", msadstest.Fault{Throttle: 5}},
	}
	for _, tc := range cases {
		b.srv.SetFault(msadstest.OpGetUsersInfo, tc.fault)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(150*time.Millisecond, cancel)
		start := time.Now()
		_, err := b.client.GetUsersInfo(ctx, cid)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: returned after %v, want promptly after cancel", tc.name, d)
		}
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "GetUsersInfo") {
			t.Errorf("%s: err = %v, want context.Canceled naming the op", tc.name, err)
		}
		if Classify(err) != ClassPermanent {
			t.Errorf("%s: class = %v", tc.name, Classify(err))
		}
		cancel()
		b.srv.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{})
	}
	// The throttle pause above is still in force for a minute; a new client is clean.
}

// A cancel that lands after an attempt's failure came back, before the
// client looked at it, still ends the call as canceled (permanent, naming
// the op), not as that attempt's retryable failure: the run stops, it does
// not record the customer as failed by the API. The transport cancels the
// call's context as it hands over each answer of the operation.
func TestCancelAfterFailedAttemptIsCancellation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault msadstest.Fault
	}{
		{"5xx", msadstest.Fault{Status5xxCode0: 5}},
		{"throttled", msadstest.Fault{Throttle: 5}},
	} {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		b := setup(t, func(c *Config) {
			c.HTTPClient = &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				resp, err := http.DefaultTransport.RoundTrip(req)
				if strings.HasSuffix(req.URL.Path, msads.OpPaths[msads.OpGetUsersInfo]) {
					cancel()
				}
				return resp, err
			})}
		})
		b.srv.SetFault(msadstest.OpGetUsersInfo, tc.fault)
		_, err := b.client.GetUsersInfo(ctx, b.ds.CustomerIDs()[0])
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "GetUsersInfo") {
			t.Errorf("%s: err = %v, want context.Canceled naming the op", tc.name, err)
		}
		if Classify(err) != ClassPermanent {
			t.Errorf("%s: class = %v, want permanent", tc.name, Classify(err))
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRequestTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.RequestTimeout = 100 * time.Millisecond })
	cid := b.ds.CustomerIDs()[0]
	b.srv.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{Hang: 1})
	if _, err := b.client.GetUsersInfo(testCtx(t), cid); err != nil {
		t.Fatalf("hung attempt should be retried: %v", err)
	}
	// The hung attempt is one; on a loaded machine the retry (which also
	// gets the token) may take longer than 100 ms too, and be another.
	if n := b.obs.count("GetUsersInfo/transient"); n < 1 {
		t.Errorf("transient outcomes = %d, want at least the hung attempt's", n)
	}
}

func TestDiscoveryAndPublicClient(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(3, 4, 3)
	srv := msadstest.NewServer(ds.Clone(), msadstest.WithPublicClient())
	t.Cleanup(srv.Close)
	cfg := simConfig(t, srv)
	if cfg.ClientSecret != "" {
		t.Fatal("public client has a secret")
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetCustomersInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0] != ds.Customers[0] {
		t.Errorf("customers = %+v, want %+v", got, ds.Customers)
	}
}

func TestAuthCodeFlow(t *testing.T) {
	t.Parallel()
	srv := msadstest.NewServer(msadstest.DemoDataset())
	t.Cleanup(srv.Close)
	cfg := simConfig(t, srv)
	cfg.RefreshToken = ""
	verifier := NewVerifier()
	u := AuthCodeURL(cfg, "http://localhost:8085/callback", "st4te", verifier)
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := parsed.Query()
	if !strings.HasSuffix(parsed.Path, "/oauth2/v2.0/authorize") || q.Get("client_id") != srv.ClientID() || q.Get("state") != "st4te" ||
		q.Get("scope") != ProductionScope || q.Get("response_type") != "code" || q.Get("redirect_uri") != "http://localhost:8085/callback" {
		t.Errorf("AuthCodeURL = %s", u)
	}
	if d := AuthCodeURL(Config{ClientID: "x"}, "http://l/cb", "s", ""); !strings.HasPrefix(d, DefaultAuthorizeURL+"?") {
		t.Errorf("default AuthCodeURL = %s", d)
	}
	// Follow the simulator's authorize redirect to get a code.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, strings.Replace(u, srv.URL(), srv.URL(), 1), nil)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	if code == "" || loc.Query().Get("state") != "st4te" {
		t.Fatalf("redirect = %s", loc)
	}
	rt, err := ExchangeCode(testCtx(t), cfg, "http://localhost:8085/callback", code, verifier)
	if err != nil || rt == "" {
		t.Fatalf("ExchangeCode = %q, %v", rt, err)
	}
	// The code is one-time; the error must not contain it or the secret.
	_, err = ExchangeCode(testCtx(t), cfg, "http://localhost:8085/callback", code, verifier)
	if err == nil || strings.Contains(err.Error(), code) || strings.Contains(err.Error(), srv.ClientSecret()) {
		t.Errorf("reused code: err = %v", err)
	}
	cfg.RefreshToken = rt
	c, _ := New(cfg)
	if _, err := c.GetCustomersInfo(testCtx(t)); err != nil {
		t.Errorf("client with exchanged token: %v", err)
	}
	if _, err := ExchangeCode(testCtx(t), cfg, "http://x/cb", msadstest.DemoAuthCode, ""); err != nil {
		t.Errorf("DemoAuthCode: %v", err)
	}
}

func TestConcurrentRefreshIsSingle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	cid := b.ds.CustomerIDs()[0]
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := b.client.GetUsersInfo(ctx, cid); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := b.srv.Calls(msadstest.OpToken); got != 1 {
		t.Errorf("token calls = %d, want 1", got)
	}
	if b.store.Saves() != 1 {
		t.Errorf("store saves = %d, want 1", b.store.Saves())
	}
}

func ExampleClassify() {
	err := fmt.Errorf("sync: %w", &APIError{Op: "GetUser", CustomerID: 150123456, HTTPStatus: 400,
		Errors: []ErrorDetail{{Code: 106, ErrorCode: "UserIsNotAuthorized"}}, Class: ClassPermanent})
	fmt.Println(Classify(err))
	fmt.Println(err)
	// Output:
	// permanent
	// sync: GetUser (customer 150123456): HTTP 400: code 106 UserIsNotAuthorized [permanent]
}
