package extract

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
)

func TestEndpointsPerTenant(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want string // the common prefix of the three endpoints
	}{
		{Config{}, "https://login.microsoftonline.com/common/oauth2/v2.0/"},
		{Config{Tenant: "organizations"}, "https://login.microsoftonline.com/organizations/oauth2/v2.0/"},
		{Config{Tenant: "consumers"}, "https://login.microsoftonline.com/consumers/oauth2/v2.0/"},
		{Config{Tenant: "0f3c2a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f"}, "https://login.microsoftonline.com/0f3c2a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f/oauth2/v2.0/"},
		{Config{Tenant: "contoso.onmicrosoft.com"}, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/"},
		// token_url overrides the tenant; the others follow it.
		{Config{Tenant: "consumers", TokenURL: "http://127.0.0.1:9/t1/oauth2/v2.0/token"}, "http://127.0.0.1:9/t1/oauth2/v2.0/"},
	} {
		got := EndpointsFor(tc.cfg)
		want := Endpoints{Authorize: tc.want + "authorize", Token: tc.want + "token", DeviceCode: tc.want + "devicecode"}
		if got != want {
			t.Errorf("EndpointsFor(tenant %q, token_url %q) = %+v, want %+v", tc.cfg.Tenant, tc.cfg.TokenURL, got, want)
		}
	}
	if DefaultTokenURL != EndpointsFor(Config{}).Token || DefaultAuthorizeURL != EndpointsFor(Config{}).Authorize {
		t.Error("the default URLs are not the common tenant's")
	}
	// The sign-in URL and the refresh path use the tenant's endpoints.
	u, _ := url.Parse(AuthCodeURL(Config{ClientID: "c", Tenant: "organizations"}, "http://localhost:8400/", "s", "v"))
	if u.Host != "login.microsoftonline.com" || u.Path != "/organizations/oauth2/v2.0/authorize" {
		t.Errorf("AuthCodeURL = %s", u)
	}
	c, err := New(Config{ClientID: "c", DeveloperToken: "d", Tenant: "consumers"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.tokens.conf.Endpoint.TokenURL; got != "https://login.microsoftonline.com/consumers/oauth2/v2.0/token" {
		t.Errorf("refresh token URL = %s", got)
	}
}

func TestPKCEChallengeInURL(t *testing.T) {
	t.Parallel()
	v := NewVerifier()
	if len(v) < 43 || len(v) > 128 || strings.ContainsAny(v, "+/=") {
		t.Fatalf("verifier %q is not 43-128 base64url characters", v)
	}
	if NewVerifier() == v {
		t.Fatal("two verifiers are equal")
	}
	// S256: base64url(SHA-256(verifier)), unpadded (RFC 7636 §4.2).
	sum := sha256.Sum256([]byte(v))
	if got, want := PKCEChallenge(v), base64.RawURLEncoding.EncodeToString(sum[:]); got != want {
		t.Errorf("challenge = %s, want %s", got, want)
	}
	u, _ := url.Parse(AuthCodeURL(Config{ClientID: "c"}, "http://localhost:8400/", "st", v))
	q := u.Query()
	if q.Get("code_challenge") != PKCEChallenge(v) || q.Get("code_challenge_method") != "S256" || q.Get("state") != "st" || q.Has("code_verifier") {
		t.Errorf("AuthCodeURL query = %v", q)
	}
}

// signIn plays the browser: it GETs the sign-in URL and returns the
// redirect's query.
func signIn(t *testing.T, authURL string) url.Values {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestExchangeCodeChecksPKCE(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		public   bool
		verifier func(right string) string
		aadsts   int
	}{
		{"confidential, right verifier", false, func(v string) string { return v }, 0},
		{"public, right verifier, no secret sent", true, func(v string) string { return v }, 0},
		{"wrong verifier", true, func(string) string { return NewVerifier() }, 501481},
		{"no verifier", false, func(string) string { return "" }, 50148},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []msadstest.Option
			if tc.public {
				opts = append(opts, msadstest.WithPublicClient())
			}
			srv := msadstest.NewServer(msadstest.DemoDataset(), opts...)
			t.Cleanup(srv.Close)
			cfg := Config{ClientID: srv.ClientID(), ClientSecret: srv.ClientSecret(), TokenURL: srv.TokenURL(), DeveloperToken: srv.DeveloperToken()}
			v := NewVerifier()
			q := signIn(t, AuthCodeURL(cfg, "http://localhost:8400/", "st", v))
			rt, err := ExchangeCode(testCtx(t), cfg, "http://localhost:8400/", q.Get("code"), tc.verifier(v))
			if tc.aadsts == 0 {
				if err != nil || rt == "" {
					t.Fatalf("ExchangeCode = %q, %v", rt, err)
				}
				return
			}
			te, ok := errors.AsType[*TokenError](err)
			if !ok || te.AADSTS != tc.aadsts || !strings.Contains(err.Error(), "code_verifier") {
				t.Fatalf("err = %v, want a TokenError AADSTS%d naming the code_verifier", err, tc.aadsts)
			}
			if strings.Contains(err.Error(), v) {
				t.Error("the error contains the verifier")
			}
		})
	}
}

func TestExchangeCodeSecretOnPublicClient(t *testing.T) {
	t.Parallel()
	srv := msadstest.NewServer(msadstest.DemoDataset(), msadstest.WithPublicClient())
	t.Cleanup(srv.Close)
	cfg := Config{ClientID: srv.ClientID(), ClientSecret: "a-secret-for-a-public-app", TokenURL: srv.TokenURL()}
	v := NewVerifier()
	q := signIn(t, AuthCodeURL(cfg, "http://localhost:8400/", "st", v))
	_, err := ExchangeCode(testCtx(t), cfg, "http://localhost:8400/", q.Get("code"), v)
	te, ok := errors.AsType[*TokenError](err)
	if !ok || te.AADSTS != 700025 || !strings.Contains(te.Fix, "client_secret empty") || strings.Contains(err.Error(), cfg.ClientSecret) {
		t.Fatalf("err = %v, want AADSTS700025 telling to leave client_secret empty", err)
	}
}

func TestAuthorizeRefusesUnregisteredRedirect(t *testing.T) {
	t.Parallel()
	srv := msadstest.NewServer(msadstest.DemoDataset())
	t.Cleanup(srv.Close)
	srv.SetRedirectURIs("http://localhost:8400/")
	cfg := Config{ClientID: srv.ClientID(), TokenURL: srv.TokenURL()}
	// Any port of the registered loopback URI is accepted.
	if q := signIn(t, AuthCodeURL(cfg, "http://localhost:53117/", "st", "")); q.Get("code") == "" {
		t.Errorf("other port refused: %v", q)
	}
	q := signIn(t, AuthCodeURL(cfg, "http://localhost:8400/callback", "st", ""))
	if q.Get("error") != "invalid_request" || !strings.HasPrefix(q.Get("error_description"), "AADSTS50011") || q.Get("state") != "st" || q.Has("code") {
		t.Errorf("unregistered redirect: %v", q)
	}
}

// The device code flow on a fake clock (testing/synctest, the simulator
// answering in-process): the poll interval is waited exactly, without
// sleeping.
func TestDeviceCodeFlow(t *testing.T) {
	t.Parallel()
	srv := msadstest.NewServer(msadstest.DemoDataset(), msadstest.WithPublicClient())
	t.Cleanup(srv.Close)
	cfg := Config{ClientID: srv.ClientID(), TokenURL: srv.TokenURL(), DeveloperToken: srv.DeveloperToken(), APIURL: srv.APIURL(),
		HTTPClient: &http.Client{Transport: srv.Transport()}}
	t.Run("approved after 2 polls", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv.SetDeviceFlow(msadstest.DeviceFlow{Interval: 1, ApproveAfterPolls: 2})
			dc, err := StartDeviceCode(testCtx(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if dc.UserCode == "" || dc.VerificationURI != srv.DeviceLoginURL() || dc.Interval != 1 {
				t.Fatalf("device code = %+v", dc)
			}
			before := srv.Calls(msadstest.OpToken)
			start := time.Now()
			rt, err := PollDeviceToken(testCtx(t), cfg, dc)
			if err != nil || rt == "" {
				t.Fatalf("PollDeviceToken = %q, %v", rt, err)
			}
			if polls := srv.Calls(msadstest.OpToken) - before; polls != 3 {
				t.Errorf("polls = %d, want 3 (2 pending, then the tokens)", polls)
			}
			if d := time.Since(start); d != 3*time.Second {
				t.Errorf("polled 3 times in %v (fake clock), want 3s: one interval before each poll", d)
			}
			cfg := cfg
			cfg.RefreshToken = rt
			c, _ := New(cfg)
			if _, _, err := c.Principal(testCtx(t)); err != nil {
				t.Errorf("client with the device flow's token: %v", err)
			}
		})
	})
	t.Run("declined and expired", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv.SetDeviceFlow(msadstest.DeviceFlow{Interval: 1, Decline: true})
			dc, err := StartDeviceCode(testCtx(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := PollDeviceToken(testCtx(t), cfg, dc); !errors.Is(err, ErrAuthorizationDeclined) {
				t.Errorf("declined: err = %v", err)
			}
			srv.SetDeviceFlow(msadstest.DeviceFlow{Interval: 1, ExpiresIn: 1})
			dc, err = StartDeviceCode(testCtx(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			dc.ExpiresIn = 0 // only the server's expiry counts
			if _, err := PollDeviceToken(testCtx(t), cfg, dc); !errors.Is(err, ErrDeviceCodeExpired) {
				t.Errorf("expired: err = %v", err)
			}
		})
	})
	t.Run("cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv.SetDeviceFlow(msadstest.DeviceFlow{Interval: 1})
			dc, err := StartDeviceCode(testCtx(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(testCtx(t), 1500*time.Millisecond)
			defer cancel()
			if _, err := PollDeviceToken(ctx, cfg, dc); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want the ctx's", err)
			}
		})
	})
}

func TestDeviceCodeConfidentialWithoutSecret(t *testing.T) {
	t.Parallel()
	srv := msadstest.NewServer(msadstest.DemoDataset())
	t.Cleanup(srv.Close)
	srv.SetDeviceFlow(msadstest.DeviceFlow{Interval: 1, ApproveAfterPolls: 1})
	cfg := Config{ClientID: srv.ClientID(), TokenURL: srv.TokenURL(), HTTPClient: &http.Client{Transport: srv.Transport()}}
	synctest.Test(t, func(t *testing.T) {
		dc, err := StartDeviceCode(testCtx(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = PollDeviceToken(testCtx(t), cfg, dc)
		if te, ok := errors.AsType[*TokenError](err); !ok || te.AADSTS != 7000218 || !strings.Contains(te.Fix, "Allow public client flows") {
			t.Fatalf("err = %v, want AADSTS7000218 naming Allow public client flows", err)
		}
	})
}
