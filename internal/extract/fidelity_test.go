package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/msads"
)

// fakeService is a scripted Customer Management API and token endpoint for
// answers the simulator is not asked to give in these tests: every handler
// sees the request and the access token it carries.
type fakeService struct {
	srv         *httptest.Server
	tokenCalls  atomic.Int64
	apiCalls    atomic.Int64
	tokenAnswer func(n int64, w http.ResponseWriter, r *http.Request) // n: 1-based call number
	apiAnswer   func(w http.ResponseWriter, r *http.Request, access string)
	mu          sync.Mutex
	issued      []string // access tokens in issue order
}

func newFakeService(t *testing.T) *fakeService {
	t.Helper()
	f := &fakeService{}
	f.tokenAnswer = func(n int64, w http.ResponseWriter, _ *http.Request) { f.grant(w, n) }
	f.apiAnswer = func(w http.ResponseWriter, r *http.Request, _ string) { okAnswer(w, r) }
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		n := f.tokenCalls.Add(1)
		f.tokenAnswer(n, w, r)
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		f.apiCalls.Add(1)
		f.apiAnswer(w, r, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// grant answers a successful refresh with access token "access-n" and a
// rotated refresh token "refresh-n".
func (f *fakeService) grant(w http.ResponseWriter, n int64) {
	access := fmt.Sprintf("access-%d", n)
	f.mu.Lock()
	f.issued = append(f.issued, access)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":3600,"access_token":%q,"refresh_token":"refresh-%d"}`, access, n)
}

func (f *fakeService) firstToken() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.issued) == 0 {
		return ""
	}
	return f.issued[0]
}

// okAnswer answers each operation with a small valid body.
func okAnswer(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "UsersInfo/Query"):
		fmt.Fprint(w, `{"UsersInfo":[{"Id":"7","UserName":"u7"}]}`)
	case strings.HasSuffix(r.URL.Path, "User/Query"):
		fmt.Fprint(w, `{"User":{"Id":"7","CustomerId":"1","UserName":"u7"},"CustomerRoles":[{"CustomerId":"1","RoleId":41,"AccountIds":null}]}`)
	case strings.HasSuffix(r.URL.Path, "UserInvitations/Search"):
		fmt.Fprint(w, `{"UserInvitations":[]}`)
	case strings.HasSuffix(r.URL.Path, "CustomersInfo/Query"):
		fmt.Fprint(w, `{"CustomersInfo":[{"Id":"1","Name":"C"}]}`)
	case strings.HasSuffix(r.URL.Path, "AccountsInfo/Query"):
		fmt.Fprint(w, `{"AccountsInfo":[]}`)
	default:
		http.NotFound(w, r)
	}
}

func fault(w http.ResponseWriter, status, code int, symbol string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"TrackingId":"tid-%d","Type":"AdApiFaultDetail","Errors":[{"Code":%d,"Detail":null,"ErrorCode":%q,"Message":"m"}]}`, code, code, symbol)
}

func oauthFail(w http.ResponseWriter, status int, oauthErr string, aadsts int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":"AADSTS%d: something happened.\r\nTrace ID: x\r\nTimestamp: y","error_codes":[%d]}`, oauthErr, aadsts, aadsts)
}

func (f *fakeService) client(t *testing.T, store TokenStore, opts ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		APIURL: f.srv.URL + "/api", TokenURL: f.srv.URL + "/token",
		DeveloperToken: "DEVTOKEN-x", ClientID: "client-x", ClientSecret: "SECRET-x", RefreshToken: "seed-refresh",
		RequestsPerSecond: 1000, ThrottleWait: 10 * time.Millisecond, RequestTimeout: 2 * time.Second,
		RetryMaxElapsed: 500 * time.Millisecond, RetryInitialInterval: 5 * time.Millisecond, Store: store,
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fanOut calls GetUsersInfo for n customers at once and returns the errors.
func fanOut(ctx context.Context, c *Client, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = c.GetUsersInfo(ctx, int64(100+i)) })
	}
	wg.Wait()
	return errs
}

func TestTokenEndpointAnswers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		answer     func(w http.ResponseWriter)
		maxCalls   int64
		fatal      bool
		reauth     bool
		wantInText string
	}{
		{"revoked refresh token", func(w http.ResponseWriter) { oauthFail(w, 400, "invalid_grant", 50173) }, 2, true, true, "syncer auth"},
		{"expired refresh token", func(w http.ResponseWriter) { oauthFail(w, 400, "invalid_grant", 70008) }, 2, true, true, "syncer auth"},
		{"code already redeemed", func(w http.ResponseWriter) { oauthFail(w, 400, "invalid_grant", 54005) }, 2, true, true, "syncer auth"},
		{"wrong client secret", func(w http.ResponseWriter) { oauthFail(w, 401, "invalid_client", 7000215) }, 1, true, false, "client_secret"},
		{"expired client secret", func(w http.ResponseWriter) { oauthFail(w, 401, "invalid_client", 7000222) }, 1, true, false, "client_secret"},
		{"unknown application", func(w http.ResponseWriter) { oauthFail(w, 400, "invalid_client", 700016) }, 1, true, false, "client_id"},
		{"public client sent a secret", func(w http.ResponseWriter) { oauthFail(w, 400, "invalid_client", 700025) }, 1, true, false, "client_secret"},
		{"MFA required", func(w http.ResponseWriter) { oauthFail(w, 400, "interaction_required", 50076) }, 1, true, true, "syncer auth"},
		{"consent required", func(w http.ResponseWriter) { oauthFail(w, 400, "interaction_required", 65001) }, 1, true, true, "syncer auth"},
		{"unauthorized client", func(w http.ResponseWriter) { oauthFail(w, 400, "unauthorized_client", 700016) }, 1, true, false, "client_id"},
		{"bad scope", func(w http.ResponseWriter) { oauthFail(w, 400, "invalid_scope", 70011) }, 1, true, false, "microsoft_ads.environment"},
		// Transient answers are retried with backoff until retry_max_elapsed,
		// by one caller for all: a bounded number of calls, then run-fatal.
		{"endpoint down (HTML 503)", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
			fmt.Fprint(w, "<html><body>Service Unavailable</body></html>")
		}, 12, true, false, "token endpoint unavailable"},
		{"temporarily unavailable", func(w http.ResponseWriter) { oauthFail(w, 400, "temporarily_unavailable", 0) }, 12, true, false, "token endpoint unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeService(t)
			f.tokenAnswer = func(_ int64, w http.ResponseWriter, _ *http.Request) { tc.answer(w) }
			c := f.client(t, &MemoryTokenStore{})
			errs := fanOut(testCtx(t), c, 10)
			for i, err := range errs {
				if err == nil {
					t.Fatalf("customer %d: no error", i)
				}
				if IsRunFatal(err) != tc.fatal {
					t.Errorf("IsRunFatal(%v) = %v, want %v", err, !tc.fatal, tc.fatal)
				}
				if errors.Is(err, ErrReauth) != tc.reauth {
					t.Errorf("errors.Is(%v, ErrReauth) = %v, want %v", err, !tc.reauth, tc.reauth)
				}
				if !strings.Contains(err.Error(), tc.wantInText) {
					t.Errorf("error %q does not say %q", err, tc.wantInText)
				}
				for _, secret := range []string{"SECRET-x", "seed-refresh", "DEVTOKEN-x"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error shows a secret: %s", err)
					}
				}
			}
			if n := f.tokenCalls.Load(); n < 1 || n > tc.maxCalls {
				t.Errorf("token endpoint called %d times for 10 customers, want 1..%d", n, tc.maxCalls)
			}
			if n := f.apiCalls.Load(); n != 0 {
				t.Errorf("%d API calls made without a token", n)
			}
			// The failure is remembered: another call does not ask again.
			before := f.tokenCalls.Load()
			if _, err := c.GetUsersInfo(testCtx(t), 1); err == nil {
				t.Error("no error on a later call")
			}
			if f.tokenCalls.Load() != before {
				t.Error("a remembered run-fatal failure called the token endpoint again")
			}
			// A new run asks again.
			c.ResetAuthFailure()
			f.tokenAnswer = func(n int64, w http.ResponseWriter, _ *http.Request) { f.grant(w, n) }
			if _, err := c.GetUsersInfo(testCtx(t), 1); err != nil {
				t.Errorf("after ResetAuthFailure and a mended endpoint: %v", err)
			}
		})
	}
}

func TestTokenEndpointTransientThenOK(t *testing.T) {
	t.Parallel()
	f := newFakeService(t)
	f.tokenAnswer = func(n int64, w http.ResponseWriter, _ *http.Request) {
		switch n {
		case 1:
			oauthFail(w, 400, "temporarily_unavailable", 0)
		case 2:
			w.WriteHeader(502) // empty body from a gateway
		default:
			f.grant(w, n)
		}
	}
	// A budget the two failures cannot use up, however loaded the machine
	// (with the default 500 ms, two slow answers under `make test` did).
	c := f.client(t, &MemoryTokenStore{}, func(cfg *Config) { cfg.RetryMaxElapsed = 30 * time.Second })
	for i, err := range fanOut(testCtx(t), c, 10) {
		if err != nil {
			t.Errorf("customer %d: %v", i, err)
		}
	}
	if n := f.tokenCalls.Load(); n != 3 {
		t.Errorf("token endpoint called %d times, want 3 (two failures, one grant, shared by all)", n)
	}
}

func TestInvalidGrantRetriedOnceThenBelieved(t *testing.T) {
	t.Parallel()
	f := newFakeService(t)
	f.tokenAnswer = func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			oauthFail(w, 400, "invalid_grant", 70000) // sometimes intermittent
			return
		}
		f.grant(w, n)
	}
	c := f.client(t, &MemoryTokenStore{})
	if _, err := c.GetUsersInfo(testCtx(t), 1); err != nil {
		t.Fatalf("intermittent invalid_grant not retried: %v", err)
	}
	if n := f.tokenCalls.Load(); n != 2 {
		t.Errorf("token calls = %d, want 2", n)
	}
}

func TestAny401RefreshesOnceForAllCallers(t *testing.T) {
	t.Parallel()
	for _, answer := range []struct {
		name string
		fn   func(w http.ResponseWriter)
	}{
		{"105", func(w http.ResponseWriter) { fault(w, 401, 105, "InvalidCredentials") }},
		{"109", func(w http.ResponseWriter) { fault(w, 401, 109, "AuthenticationTokenExpired") }},
		{"bare 401", func(w http.ResponseWriter) { w.WriteHeader(401) }},
		{"HTML 401", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(401)
			fmt.Fprint(w, "<html>401 Unauthorized</html>")
		}},
	} {
		t.Run(answer.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeService(t)
			f.apiAnswer = func(w http.ResponseWriter, r *http.Request, access string) {
				if access == f.firstToken() {
					answer.fn(w) // the first access token is refused everywhere
					return
				}
				okAnswer(w, r)
			}
			c := f.client(t, &MemoryTokenStore{})
			for i, err := range fanOut(testCtx(t), c, 10) {
				if err != nil {
					t.Errorf("customer %d: %v", i, err)
				}
			}
			if n := f.tokenCalls.Load(); n != 2 {
				t.Errorf("token endpoint called %d times, want 2 (first token, one shared refresh)", n)
			}
		})
	}
}

func TestSecond401AfterFreshToken(t *testing.T) {
	t.Parallel()
	t.Run("one customer refused: its failure alone", func(t *testing.T) {
		t.Parallel()
		f := newFakeService(t)
		f.apiAnswer = func(w http.ResponseWriter, r *http.Request, _ string) {
			if r.Header.Get("CustomerId") == "103" {
				fault(w, 401, 105, "InvalidCredentials")
				return
			}
			okAnswer(w, r)
		}
		c := f.client(t, &MemoryTokenStore{})
		errs := fanOut(testCtx(t), c, 6)
		for i, err := range errs {
			switch {
			case i == 3 && (err == nil || IsRunFatal(err) || !strings.Contains(err.Error(), "105")):
				t.Errorf("customer 103: %v, want its own failure naming 105, not run-fatal", err)
			case i != 3 && err != nil:
				t.Errorf("customer %d: %v", 100+i, err)
			}
		}
	})
	t.Run("every call refused: run-fatal", func(t *testing.T) {
		t.Parallel()
		f := newFakeService(t)
		f.apiAnswer = func(w http.ResponseWriter, _ *http.Request, _ string) { fault(w, 401, 105, "InvalidCredentials") }
		c := f.client(t, &MemoryTokenStore{})
		for _, err := range fanOut(testCtx(t), c, 6) {
			if !errors.Is(err, ErrCredentialsRejected) || !IsRunFatal(err) {
				t.Errorf("err = %v, want ErrCredentialsRejected (run-fatal)", err)
			}
			if !strings.Contains(fmt.Sprint(err), "developer token or the user's access was rejected") {
				t.Errorf("err = %v does not say what was rejected", err)
			}
		}
		if n := f.tokenCalls.Load(); n > 2 {
			t.Errorf("token endpoint called %d times, want at most 2", n)
		}
	})
}

func TestResultFieldMissingIsMalformedNullIsEmpty(t *testing.T) {
	t.Parallel()
	ops := []struct {
		name  string
		field string
		call  func(context.Context, *Client) (int, error)
	}{
		{"GetUsersInfo", "UsersInfo", func(ctx context.Context, c *Client) (int, error) {
			l, err := c.GetUsersInfo(ctx, 1)
			return len(l), err
		}},
		{"SearchUserInvitations", "UserInvitations", func(ctx context.Context, c *Client) (int, error) {
			l, err := c.SearchUserInvitations(ctx, 1)
			return len(l), err
		}},
		{"GetAccountsInfo", "AccountsInfo", func(ctx context.Context, c *Client) (int, error) {
			l, err := c.GetAccountsInfo(ctx, 1)
			return len(l), err
		}},
		{"GetCustomersInfo", "CustomersInfo", func(ctx context.Context, c *Client) (int, error) {
			l, err := c.GetCustomersInfo(ctx)
			return len(l), err
		}},
		{"GetUser", "User", func(ctx context.Context, c *Client) (int, error) {
			_, roles, err := c.GetUser(ctx, 1, 7)
			return len(roles), err
		}},
	}
	bodies := map[string]string{"empty object": `{}`, "HTML page": `<!DOCTYPE html><html><body>Maintenance</body></html>`, "cut": `{"X": [`}
	for _, op := range ops {
		for name, body := range bodies {
			t.Run(op.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				f := newFakeService(t)
				f.apiAnswer = func(w http.ResponseWriter, _ *http.Request, _ string) { fmt.Fprint(w, body) }
				// A retry budget the attempts cannot outlast on a loaded
				// machine: what is counted is the malformed answers' limit.
				_, err := op.call(testCtx(t), f.client(t, &MemoryTokenStore{}, func(c *Config) { c.RetryMaxElapsed = 10 * time.Second }))
				ae := asAPIError(err)
				if ae == nil || !ae.Malformed {
					t.Fatalf("err = %v, want a malformed-response APIError", err)
				}
				if n := f.apiCalls.Load(); n != maxMalformed {
					t.Errorf("calls = %d, want %d (retried, then failed)", n, maxMalformed)
				}
			})
		}
		if op.name == "GetUser" {
			continue
		}
		t.Run(op.name+"/explicit null", func(t *testing.T) {
			t.Parallel()
			f := newFakeService(t)
			f.apiAnswer = func(w http.ResponseWriter, _ *http.Request, _ string) { fmt.Fprintf(w, `{%q: null}`, op.field) }
			n, err := op.call(testCtx(t), f.client(t, &MemoryTokenStore{}))
			if err != nil || n != 0 {
				t.Errorf("= %d, %v; want an empty list", n, err)
			}
		})
	}
}

func TestUnreadableClassification(t *testing.T) {
	t.Parallel()
	api := func(status, code int, sym string) error {
		return &APIError{Op: "GetUser", HTTPStatus: status, Errors: []ErrorDetail{{Code: code, ErrorCode: sym}}, Class: classifyResponse(status, []int{code})}
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"1001 UserNotFound", api(400, 1001, "UserNotFound"), msads.DetailNotFound},
		{"210 EntityNotExistent", api(400, 210, "EntityNotExistent"), msads.DetailNotFound},
		{"106", api(400, 106, "UserIsNotAuthorized"), msads.DetailUnreadable},
		{"403 106", api(403, 106, "UserIsNotAuthorized"), msads.DetailUnreadable},
		{"lone 105 after a fresh token", api(401, 105, "InvalidCredentials"), msads.DetailUnreadable},
		{"unknown 4xx code", api(400, 4242, ""), msads.DetailUnreadable},
		{"null User", &APIError{Op: "GetUser", HTTPStatus: 200, Class: ClassPermanent, Err: errNullUser}, msads.DetailUnreadable},
		{"transient", api(500, 0, "InternalError"), ""},
		{"throttled", api(429, 117, "CallRateExceeded"), ""},
		{"malformed", &APIError{HTTPStatus: 200, Class: ClassTransient, Malformed: true}, ""},
		{"identity", api(400, 3101, "OAuthTokenInvalid"), ""},
		{"credentials rejected", fmt.Errorf("%w: %w", api(401, 105, "InvalidCredentials"), ErrCredentialsRejected), ""},
		{"5xx permanent code", api(500, 201, ""), ""},
		{"canceled", context.Canceled, ""},
	}
	for _, tc := range cases {
		if got := unreadable(tc.err); got != tc.want {
			t.Errorf("%s: unreadable = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRotatedTokenSavedWhenCallerGoesAway(t *testing.T) {
	t.Parallel()
	f := newFakeService(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.tokenAnswer = func(n int64, w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(entered) })
		<-release // the grant is slow: the caller gives up first
		f.grant(w, n)
	}
	store := &MemoryTokenStore{}
	c := f.client(t, store)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := c.GetUsersInfo(ctx, 1); done <- err }()
	<-entered // the token endpoint is rotating the refresh token
	cancel()  // SIGTERM meanwhile
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the call did not return when its context ended")
	}
	close(release)
	wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer wcancel()
	if err := c.Close(wctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.Load(t.Context()); got != "refresh-1" {
		t.Errorf("stored refresh token = %q, want the rotated refresh-1", got)
	}
}

func TestFaultShapesAndRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body  string
		codes []int
	}{
		{`{"TrackingId":"t","Type":"ApiFault","OperationErrors":[{"Code":3030,"Details":null,"Message":"bad predicate"}]}`, []int{3030}},
		{`{"TrackingId":"t","Type":"ApiFault","OperationErrors":[],"BatchErrors":[{"Code":4242,"Details":null,"ErrorCode":"Future","FieldPath":null,"ForwardCompatibilityMap":null,"Index":0,"Message":"m","Type":"BatchError"}]}`, []int{4242}},
		{`{"TrackingId":"t","Type":"AdApiFaultDetail","Errors":[{"Code":106,"ErrorCode":"UserIsNotAuthorized"},{"Code":1001,"ErrorCode":"UserNotFound"}]}`, []int{106, 1001}},
	} {
		_, details, ok := decodeFault([]byte(tc.body))
		if !ok || len(details) != len(tc.codes) {
			t.Errorf("decodeFault(%s) = %v, %v", tc.body, details, ok)
			continue
		}
		for i, c := range tc.codes {
			if details[i].Code != c {
				t.Errorf("decodeFault(%s)[%d] = %d, want %d", tc.body, i, details[i].Code, c)
			}
		}
	}
	for _, status := range []int{408, 502, 504} {
		if c := classifyResponse(status, nil); c != ClassTransient {
			t.Errorf("HTTP %d with no fault body = %v, want transient", status, c)
		}
	}
	if c := classifyResponse(403, []int{106}); c != ClassPermanent {
		t.Errorf("403 with 106 = %v, want permanent", c)
	}
}

func TestDatesWithEveryFractionAndZone(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	for digits := 0; digits <= 7; digits++ {
		frac := ""
		want := base
		if digits > 0 {
			frac = "." + strings.Repeat("1", digits)
			var ns int
			for range digits {
				ns = ns*10 + 1
			}
			for range 9 - digits {
				ns *= 10
			}
			want = base.Add(time.Duration(ns))
		}
		for _, zone := range []string{"", "Z", "+00:00", "+02:00"} {
			s := "2025-03-04T05:06:07" + frac + zone
			got, err := parseTime(s)
			w := want
			if zone == "+02:00" {
				w = want.Add(-2 * time.Hour)
			}
			if err != nil || !got.Equal(w) {
				t.Errorf("parseTime(%q) = %v, %v; want %v", s, got, err, w)
			}
		}
	}
}

// The credentials check remembers only a conclusive answer: a probe that
// was cancelled, or that only met transient faults, does not make a
// refused credential look fine for the rest of the run.
func TestCredentialsCheckRemembersOnlyConclusiveAnswers(t *testing.T) {
	t.Parallel()
	isProbe := func(r *http.Request) bool {
		return strings.HasSuffix(r.URL.Path, "User/Query") && r.Header.Get("CustomerId") == ""
	}
	t.Run("probe cancelled", func(t *testing.T) {
		t.Parallel()
		f := newFakeService(t)
		probeSeen := make(chan struct{})
		var first atomic.Bool
		f.apiAnswer = func(w http.ResponseWriter, r *http.Request, _ string) {
			if isProbe(r) && first.CompareAndSwap(false, true) {
				// Only the first probe hangs, until its caller goes (read the
				// body: only then does the server notice the client leave).
				_, _ = io.Copy(io.Discard, r.Body)
				close(probeSeen)
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
				return
			}
			fault(w, 401, 105, "InvalidCredentials")
		}
		c := f.client(t, &MemoryTokenStore{})
		ctxA, cancelA := context.WithCancel(t.Context())
		errA := make(chan error, 1)
		go func() { _, _, err := c.GetUser(ctxA, 1, 10); errA <- err }()
		<-probeSeen
		cancelA()
		<-errA
		_, _, err := c.GetUser(testCtx(t), 2, 11)
		if !IsRunFatal(err) || !errors.Is(err, ErrCredentialsRejected) {
			t.Errorf("every call refused, the cancelled probe must not be remembered: err = %v", err)
		}
	})
	t.Run("probe only transient", func(t *testing.T) {
		t.Parallel()
		f := newFakeService(t)
		f.apiAnswer = func(w http.ResponseWriter, r *http.Request, _ string) {
			if isProbe(r) {
				w.WriteHeader(503)
				return
			}
			fault(w, 401, 105, "InvalidCredentials")
		}
		c := f.client(t, &MemoryTokenStore{})
		_, _, err := c.GetUser(testCtx(t), 1, 10)
		if err == nil || unreadable(err) != "" {
			t.Errorf("an inconclusive check made the 401 a per-user failure (%q): %v", unreadable(err), err)
		}
	})
}

func TestTokenAndGatewayOddities(t *testing.T) {
	t.Parallel()
	// An "error" field that is not an OAuth error word is kept only
	// redacted: it may echo the request.
	te := classifyTokenFailure(400, []byte(`{"error":"client-secret-xyz-123"}`), newRedactor("client-secret-xyz-123"))
	if strings.Contains(te.Error(), "client-secret-xyz-123") || !te.Fatal {
		t.Errorf("token error %q (fatal %v) shows the secret or is not fatal", te.Error(), te.Fatal)
	}
	// A gateway's 404 page for GetUser says nothing about the user.
	f := newFakeService(t)
	f.apiAnswer = func(w http.ResponseWriter, r *http.Request, _ string) {
		if strings.HasSuffix(r.URL.Path, "User/Query") {
			w.WriteHeader(404)
			fmt.Fprint(w, "<html>route unavailable</html>")
			return
		}
		okAnswer(w, r)
	}
	c := f.client(t, &MemoryTokenStore{})
	if _, _, err := c.GetUser(testCtx(t), 1, 10); err == nil || unreadable(err) != "" {
		t.Errorf("a non-fault 404 reads as a per-user failure %q: %v", unreadable(err), err)
	}
	// A huge expires_in neither overflows nor makes every call refresh.
	g := newFakeService(t)
	g.tokenAnswer = func(n int64, w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"access_token":"access-%d","token_type":"Bearer","expires_in":10000000000,"refresh_token":"refresh-%d"}`, n, n)
	}
	gc := g.client(t, &MemoryTokenStore{})
	for range 5 {
		if _, err := gc.tokens.token(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.tokenCalls.Load(); n != 1 {
		t.Errorf("5 token() calls made %d token endpoint calls, want 1", n)
	}
}

// A leader that goes away mid-grant leaves the grant running; the next
// caller joins it instead of granting the same refresh token again.
func TestGrantOutlivesItsLeaderAndIsJoined(t *testing.T) {
	t.Parallel()
	f := newFakeService(t)
	first, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var sent []string
	f.tokenAnswer = func(n int64, w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		sent = append(sent, r.PostForm.Get("refresh_token"))
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release
		}
		f.grant(w, n)
	}
	store := &MemoryTokenStore{}
	c := f.client(t, store)
	ctxA, cancelA := context.WithCancel(t.Context())
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { _, err := c.tokens.token(ctxA); doneA <- err }()
	<-first
	go func() { _, err := c.tokens.token(testCtx(t)); doneB <- err }()
	time.Sleep(50 * time.Millisecond)
	cancelA()
	<-doneA
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-doneB; err != nil {
		t.Fatalf("the waiter's token: %v", err)
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 {
		t.Errorf("the refresh token was granted %d times (%q), want once", len(sent), sent)
	}
	if got, _ := store.Load(t.Context()); got != "refresh-1" {
		t.Errorf("stored %q, want the rotated refresh-1", got)
	}
}
