package extract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/redact"
)

// Default OAuth endpoints and scopes (msads-api.md §8).
const (
	DefaultTokenURL     = "https://login.microsoftonline.com/common/oauth2/v2.0/token" // the "common" tenant's; see EndpointsFor
	DefaultAuthorizeURL = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
	ProductionScope     = "https://ads.microsoft.com/msads.manage offline_access"
	SandboxScope        = "https://si.ads.microsoft.com/msads.manage offline_access"
)

// accessTokenLeeway is how long before its expiry an access token is
// replaced.
const accessTokenLeeway = 2 * time.Minute

// TokenStore keeps the current refresh token. Microsoft issues a new refresh
// token on every refresh; the Client saves each one at once.
type TokenStore interface {
	// Load returns the stored refresh token, or "" and nil when none is stored.
	Load(ctx context.Context) (string, error)
	Save(ctx context.Context, refreshToken string) error
}

// PrincipalStore is a TokenStore that keys its token by the signed-in user.
// When its Client learns who that is (Client.Principal), it calls
// SetPrincipal, so the store can file the token under that user.
type PrincipalStore interface {
	TokenStore
	SetPrincipal(ctx context.Context, userID int64, userName string) error
}

// notePrincipal tells a PrincipalStore who the refresh token belongs to. A
// failure is logged: the token stays where it was and the next run tries
// again.
func (ts *tokenSource) notePrincipal(ctx context.Context, userID int64, userName string) {
	ps, ok := ts.store.(PrincipalStore)
	if !ok || userID == 0 {
		return
	}
	if err := ps.SetPrincipal(ctx, userID, userName); err != nil {
		ts.log.WarnContext(ctx, "could not file the refresh token under the signed-in user", slog.Int64("user_id", userID),
			slog.String("error", ts.red.redact(err.Error())))
	}
}

// MemoryTokenStore is a concurrency-safe in-memory TokenStore, for tests and
// the demo. The zero value is empty and ready to use.
type MemoryTokenStore struct {
	mu    sync.Mutex
	token string
	saves int
}

// Load returns the stored token.
func (s *MemoryTokenStore) Load(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token, nil
}

// Save stores the token.
func (s *MemoryTokenStore) Save(_ context.Context, refreshToken string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = refreshToken
	s.saves++
	return nil
}

// Saves returns how many times Save was called.
func (s *MemoryTokenStore) Saves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves
}

// loginBase is the identity platform's host (msads-api.md §8.1); the tenant
// follows it in every endpoint's path.
const loginBase = "https://login.microsoftonline.com/"

// DefaultTenant is the tenant the endpoints use when none is configured: any
// work, school or personal Microsoft account can sign in.
const DefaultTenant = "common"

// Endpoints are the identity platform endpoints of one configuration.
type Endpoints struct {
	Authorize  string // where a person signs in (authorization code flow)
	Token      string // the token endpoint (code, refresh and device code grants)
	DeviceCode string // the device authorization endpoint (`syncer auth --device`)
}

// EndpointsFor returns cfg's endpoints. They are
// https://login.microsoftonline.com/<tenant>/oauth2/v2.0/{authorize,token,devicecode}
// with cfg.Tenant (default "common"), unless cfg.TokenURL is set: then the
// token endpoint is cfg.TokenURL and the others are derived from it, its
// trailing "/token" replaced by "/authorize" and "/devicecode".
func EndpointsFor(cfg Config) Endpoints {
	if cfg.TokenURL != "" {
		base := strings.TrimSuffix(cfg.TokenURL, "/token")
		return Endpoints{Authorize: base + "/authorize", Token: cfg.TokenURL, DeviceCode: base + "/devicecode"}
	}
	tenant := strings.TrimSpace(cfg.Tenant)
	if tenant == "" {
		tenant = DefaultTenant
	}
	base := loginBase + url.PathEscape(tenant) + "/oauth2/v2.0/"
	return Endpoints{Authorize: base + "authorize", Token: base + "token", DeviceCode: base + "devicecode"}
}

// oauthConfig builds the x/oauth2 configuration for cfg (defaults applied).
func oauthConfig(cfg Config, redirectURI string) *oauth2.Config {
	ep := EndpointsFor(cfg)
	return &oauth2.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:       ep.Authorize,
			TokenURL:      ep.Token,
			DeviceAuthURL: ep.DeviceCode,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURI,
		Scopes:      strings.Fields(scopeFor(cfg.Environment)),
	}
}

func scopeFor(env string) string {
	if strings.EqualFold(env, "sandbox") {
		return SandboxScope
	}
	return ProductionScope
}

// NewVerifier returns a fresh PKCE code verifier (RFC 7636: 32 random
// bytes, base64url), to pass to AuthCodeURL and then to ExchangeCode.
func NewVerifier() string { return oauth2.GenerateVerifier() }

// PKCEChallenge returns the S256 code challenge of verifier:
// base64url(SHA-256(verifier)) without padding.
func PKCEChallenge(verifier string) string { return oauth2.S256ChallengeFromVerifier(verifier) }

// AuthCodeURL returns the URL where a person signs in and consents, for the
// `syncer auth` command: the authorize endpoint (see EndpointsFor) with the
// client id, redirect URI, scope, state, prompt=select_account and, when
// verifier is not empty, the PKCE S256 code challenge of verifier.
func AuthCodeURL(cfg Config, redirectURI, state, verifier string) string {
	opts := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "select_account")}
	if verifier != "" {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	return oauthConfig(cfg, redirectURI).AuthCodeURL(state, opts...)
}

// ExchangeCode redeems an authorization code from the redirect and returns
// the refresh token. verifier is the PKCE code verifier whose challenge the
// sign-in URL carried ("" sends none); the client secret is sent only when
// cfg has one. A refusal is a *TokenError (wrapped) whose Fix says what to
// change. Errors never contain the code, the verifier or the client secret.
func ExchangeCode(ctx context.Context, cfg Config, redirectURI, code, verifier string) (string, error) {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	conf := oauthConfig(cfg, redirectURI)
	opts := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("scope", scopeFor(cfg.Environment))}
	if verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	tok, err := conf.Exchange(ctx, code, opts...)
	if err != nil {
		r := newRedactor(cfg.ClientSecret, cfg.DeveloperToken, code, verifier)
		if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
			te := classifyTokenFailure(re.Response.StatusCode, re.Body, r)
			codeGrantFix(te)
			return "", fmt.Errorf("exchange authorization code: %w", te)
		}
		return "", fmt.Errorf("exchange authorization code: %s", r.redact(err.Error()))
	}
	if tok.RefreshToken == "" {
		return "", errors.New("exchange authorization code: no refresh token returned (is offline_access consented?)")
	}
	return tok.RefreshToken, nil
}

// codeGrantFix rewrites the advice of a refused authorization code or
// device code grant, where "run syncer auth" is no help on its own.
func codeGrantFix(te *TokenError) {
	switch {
	case te.AADSTS == 50148 || te.AADSTS == 501481:
		te.Fix = "the PKCE code_verifier does not match the sign-in URL's code_challenge: the code belongs to another `syncer auth` attempt; " +
			"run `syncer auth` again and finish that sign-in"
	case te.OAuthError == "invalid_grant" && te.AADSTS != 65001:
		te.Fix = "the authorization code was refused (it expires after about 10 minutes, can be redeemed once, and belongs to one sign-in): " +
			"run `syncer auth` again"
	}
}

// DeviceCode is the answer of the device authorization endpoint (RFC 8628
// §3.2): the code to show the person and the one to poll with.
type DeviceCode struct {
	DeviceCode      string `json:"device_code"`
	UserCode        string `json:"user_code"`
	VerificationURI string `json:"verification_uri"`
	ExpiresIn       int    `json:"expires_in"` // seconds
	Interval        int    `json:"interval"`   // seconds between polls; 5 when absent
	Message         string `json:"message"`    // the identity platform's own instruction text
}

// Device code flow outcomes that end the polling.
var (
	ErrDeviceCodeExpired     = errors.New("the device code expired before the sign-in was finished: run `syncer auth --device` again")
	ErrAuthorizationDeclined = errors.New("the sign-in was declined at the device login page: run `syncer auth --device` again and accept")
)

// StartDeviceCode asks the device authorization endpoint (see
// EndpointsFor) for a device code with the msads.manage scope. The app
// registration must allow public client flows (or cfg must carry the
// client secret of a confidential one).
func StartDeviceCode(ctx context.Context, cfg Config) (*DeviceCode, error) {
	form := url.Values{"client_id": {cfg.ClientID}, "scope": {scopeFor(cfg.Environment)}}
	r := newRedactor(cfg.ClientSecret, cfg.DeveloperToken)
	status, body, err := postForm(ctx, cfg, EndpointsFor(cfg).DeviceCode, form, r)
	if err != nil {
		return nil, fmt.Errorf("start device code sign-in: %w", err)
	}
	var dc DeviceCode
	if status != http.StatusOK || json.Unmarshal(body, &dc) != nil || dc.DeviceCode == "" {
		te := classifyTokenFailure(status, body, r)
		if te.OAuthError == "" && status == http.StatusOK {
			te.Description = "the answer has no device_code"
		}
		return nil, fmt.Errorf("start device code sign-in: %w", te)
	}
	if dc.Interval <= 0 {
		dc.Interval = 5
	}
	return &dc, nil
}

// PollDeviceToken polls the token endpoint with the device code grant every
// dc.Interval seconds (5 more after each slow_down) until the person has
// signed in, and returns the refresh token. authorization_pending keeps
// polling; expired_token ends with ErrDeviceCodeExpired,
// authorization_declined with ErrAuthorizationDeclined, anything else with a
// *TokenError. ctx ends the wait.
func PollDeviceToken(ctx context.Context, cfg Config, dc *DeviceCode) (string, error) {
	interval := time.Duration(max(dc.Interval, 1)) * time.Second
	var deadline time.Time
	if dc.ExpiresIn > 0 {
		deadline = time.Now().Add(time.Duration(dc.ExpiresIn) * time.Second)
	}
	r := newRedactor(cfg.ClientSecret, cfg.DeveloperToken, dc.DeviceCode)
	form := url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"client_id":   {cfg.ClientID},
		"device_code": {dc.DeviceCode},
	}
	if cfg.ClientSecret != "" {
		form.Set("client_secret", cfg.ClientSecret)
	}
	for {
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
		status, body, err := postForm(ctx, cfg, EndpointsFor(cfg).Token, form, r)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", fmt.Errorf("device code sign-in: %w", err)
		}
		var tr tokenResponse
		_ = json.Unmarshal(body, &tr)
		switch {
		case status == http.StatusOK && tr.RefreshToken != "":
			return tr.RefreshToken, nil
		case status == http.StatusOK:
			return "", errors.New("device code sign-in: no refresh token returned (is offline_access consented?)")
		case tr.Error == "authorization_pending":
		case tr.Error == "slow_down":
			interval += 5 * time.Second
		case tr.Error == "expired_token" || tr.Error == "code_expired":
			return "", ErrDeviceCodeExpired
		case tr.Error == "authorization_declined" || tr.Error == "access_denied":
			return "", ErrAuthorizationDeclined
		default:
			te := classifyTokenFailure(status, body, r)
			if te.Class == ClassTransient && (deadline.IsZero() || time.Now().Before(deadline)) {
				continue // 5xx, temporarily_unavailable: poll again
			}
			codeGrantFix(te)
			return "", fmt.Errorf("device code sign-in: %w", te)
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return "", ErrDeviceCodeExpired
		}
	}
}

// postForm posts a form to an identity platform endpoint and returns the
// status and (capped) body. A transport failure comes back redacted.
func postForm(ctx context.Context, cfg Config, endpoint string, form url.Values, r *redactor) (int, []byte, error) {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	timeout := cfg.RequestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, errors.New(r.redact(err.Error()))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, errors.New(r.redact(transportText(err, actx)))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, errors.New(r.redact(transportText(err, actx)))
	}
	return resp.StatusCode, body, nil
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// tokenSource refreshes access tokens with the refresh-token grant, sending
// the scope (which x/oauth2's own refresh does not), rotating the refresh
// token into the TokenStore, and reusing access tokens until shortly before
// they expire.
//
// Refreshes are single-flight: however many calls need a token at once, one
// caller (the leader) talks to the token endpoint, retrying transient
// failures with backoff, and the others wait for its answer. A failure that
// no retry can mend (a revoked refresh token, a wrong client secret) is
// remembered until ResetAuthFailure, so the endpoint is asked at most twice
// per run whatever the number of customers.
//
// Each grant runs on a context that a shutdown does not cancel (bounded by
// its own timeout): once the endpoint has rotated the refresh token, the new
// one is saved to the store before anything else, even when every caller
// has gone away. Client.Close waits for such grants.
type tokenSource struct {
	conf         *oauth2.Config
	scope        string
	hc           *http.Client
	store        TokenStore
	seed         string
	timeout      time.Duration // one grant's HTTP exchange
	saveTimeout  time.Duration // saving a rotated refresh token
	retryInitial time.Duration
	retryMax     time.Duration
	log          *slog.Logger
	red          *redactor
	obs          Observer // reports token endpoint calls as op "Token"

	bg sync.WaitGroup // grants still running on a detached context

	mu        sync.Mutex
	loaded    bool
	refresh   string
	fromStore bool // refresh came from the store (seed not tried yet)
	access    *oauth2.Token
	refreshAt time.Time // when to replace access: shortly before its expiry
	refreshes int
	flight    *refreshFlight // the refresh under way, if any
	pending   *pendingGrant  // the grant under way, if any (it may outlive its flight)
	failure   error          // a run-fatal failure, returned until reset
	forced    string         // the access token issued by the last refresh a 401 forced
	forcedAt  time.Time
}

// refreshFlight is one single-flight refresh; done is closed when token
// and err are set.
type refreshFlight struct {
	done  chan struct{}
	token string
	err   error
}

// fatalError marks an error that stops the run (see IsRunFatal).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func newTokenSource(cfg Config, hc *http.Client, log *slog.Logger, red *redactor) *tokenSource {
	store := cfg.Store
	if store == nil {
		store = &MemoryTokenStore{}
	}
	red.add(cfg.RefreshToken)
	return &tokenSource{
		conf:         oauthConfig(cfg, ""),
		scope:        scopeFor(cfg.Environment),
		hc:           hc,
		store:        store,
		seed:         cfg.RefreshToken,
		timeout:      cfg.RequestTimeout,
		saveTimeout:  10 * time.Second,
		retryInitial: cfg.RetryInitialInterval,
		retryMax:     cfg.RetryMaxElapsed,
		log:          log,
		red:          red,
		obs:          nopObserver{},
	}
}

// token returns a valid access token, refreshing when needed.
func (ts *tokenSource) token(ctx context.Context) (string, error) {
	return ts.get(ctx, "")
}

// forceRefresh replaces the access token stale (refused by the API with a
// 401) unless another caller already did, and returns the current one.
func (ts *tokenSource) forceRefresh(ctx context.Context, stale string) (string, error) {
	return ts.get(ctx, stale)
}

func (ts *tokenSource) get(ctx context.Context, stale string) (string, error) {
	for {
		ts.mu.Lock()
		if ts.failure != nil {
			err := ts.failure
			ts.mu.Unlock()
			return "", err
		}
		if ts.access != nil && time.Now().Before(ts.refreshAt) && (stale == "" || ts.access.AccessToken != stale) {
			tok := ts.access.AccessToken
			ts.mu.Unlock()
			return tok, nil
		}
		f := ts.flight
		leader := f == nil
		if leader {
			f = &refreshFlight{done: make(chan struct{})}
			ts.flight = f
		}
		ts.mu.Unlock()
		if leader {
			f.token, f.err = ts.fly(ctx)
			ts.mu.Lock()
			ts.flight = nil
			if stale != "" && f.err == nil {
				ts.forced, ts.forcedAt = f.token, time.Now()
			}
			ts.mu.Unlock()
			close(f.done)
			return f.token, f.err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
			continue // the leader went away; lead a new flight ourselves
		}
		return f.token, f.err
	}
}

// freshWindow is how long an access token issued by a refresh that a 401
// forced counts as fresh: a 401 with it is not mended by refreshing again.
const freshWindow = time.Minute

// wasForced reports whether access was issued, moments ago, by a refresh
// that a 401 forced: refreshing again would not help, the 401 is about the
// call (or the credentials).
func (ts *tokenSource) wasForced(access string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return access != "" && access == ts.forced && time.Since(ts.forcedAt) < freshWindow
}

// fail records a run-fatal failure and returns it.
func (ts *tokenSource) fail(err error) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.failure = err
	return err
}

// resetFailure forgets a remembered failure (at the start of a run), so the
// next call asks the endpoint again, reading the store anew (`syncer auth`
// may have stored a new refresh token meanwhile).
func (ts *tokenSource) resetFailure() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.failure != nil {
		ts.failure = nil
		ts.loaded = false
	}
}

// fly is the leader's refresh: load the refresh token, then grant with
// retries.
func (ts *tokenSource) fly(ctx context.Context) (string, error) {
	ts.mu.Lock()
	loaded := ts.loaded
	ts.mu.Unlock()
	if !loaded {
		stored, err := ts.store.Load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", ts.fail(&fatalError{fmt.Errorf("load refresh token from store: %s", ts.red.redact(err.Error()))})
		}
		ts.red.add(stored)
		ts.mu.Lock()
		ts.loaded = true
		if stored != "" {
			ts.refresh, ts.fromStore = stored, true
		} else {
			ts.refresh, ts.fromStore = ts.seed, false
		}
		ts.mu.Unlock()
	}

	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(ts.retryInitial),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(ts.retryMax),
	)
	retried := false
	attempts := 0
	for {
		ts.mu.Lock()
		rt, fromStore := ts.refresh, ts.fromStore
		ts.mu.Unlock()
		if rt == "" {
			return "", ts.fail(fmt.Errorf("no refresh token configured or stored: %w", ErrReauth))
		}
		attempts++
		tok, err := ts.grant(ctx, rt)
		if err == nil {
			return tok, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		te, _ := errors.AsType[*TokenError](err)
		var wait time.Duration
		switch {
		case te != nil && te.Fatal && te.retriedOnce() && !retried:
			retried = true
			if fromStore && ts.seed != "" && ts.seed != rt {
				ts.log.WarnContext(ctx, "stored refresh token rejected; trying the configured one", slog.String("error", te.Error()))
				ts.mu.Lock()
				ts.refresh, ts.fromStore = ts.seed, false
				ts.mu.Unlock()
				continue
			}
			wait = min(time.Second, ts.retryInitial)
			ts.log.WarnContext(ctx, "token endpoint refused the refresh token; trying once more", slog.String("error", te.Error()))
		case te != nil && te.Fatal:
			return "", ts.fail(te)
		default: // transient
			wait = exp.NextBackOff()
			if wait == backoff.Stop {
				return "", ts.fail(&fatalError{fmt.Errorf("token endpoint unavailable (gave up after %d attempts): %w", attempts, err)})
			}
			ts.log.WarnContext(ctx, "token endpoint failed; retrying", slog.String("error", err.Error()), slog.Duration("backoff", wait))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// grant redeems rt on a context that ctx's cancellation does not reach, so
// a rotated refresh token is always saved; it returns early (with ctx's
// error) when ctx ends, leaving the grant to finish in the background.
func (ts *tokenSource) grant(ctx context.Context, rt string) (string, error) {
	// A grant left running by a leader that went away is joined, never
	// doubled: two grants of one refresh token at once would cost an extra
	// endpoint call and could save the older rotated token last.
	ts.mu.Lock()
	g := ts.pending
	if g == nil || g.rt != rt {
		g = &pendingGrant{rt: rt, done: make(chan struct{})}
		ts.pending = g
		ts.bg.Add(1)
		go func() {
			defer ts.bg.Done()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ts.timeout+ts.saveTimeout)
			defer cancel()
			g.tok, g.err = ts.redeemAndKeep(dctx, rt)
			ts.mu.Lock()
			if ts.pending == g {
				ts.pending = nil
			}
			// A refusal no retry can mend is remembered even when no
			// caller is left to hear it.
			if te, ok := errors.AsType[*TokenError](g.err); ok && te.Fatal && !te.retriedOnce() && ts.failure == nil {
				ts.failure = te
			}
			ts.mu.Unlock()
			close(g.done)
		}()
	}
	ts.mu.Unlock()
	select {
	case <-g.done:
		return g.tok, g.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// pendingGrant is one grant of the refresh token rt running in the
// background; done is closed once tok and err are set.
type pendingGrant struct {
	rt   string
	done chan struct{}
	tok  string
	err  error
}

// redeemAndKeep posts the grant, saves a rotated refresh token, then makes
// the new access token current.
func (ts *tokenSource) redeemAndKeep(ctx context.Context, rt string) (string, error) {
	tok, err := ts.redeem(ctx, rt)
	if err != nil {
		return "", err
	}
	ts.red.add(tok.AccessToken)
	if tok.RefreshToken != "" {
		ts.red.add(tok.RefreshToken)
		ts.mu.Lock()
		ts.refresh = tok.RefreshToken
		ts.fromStore = false
		ts.mu.Unlock()
		// Save before using the access token: the old refresh token may be
		// refused from now on. A failed save is logged, not fatal: the new
		// token is kept in memory and saved again after the next refresh.
		sctx, cancel := context.WithTimeout(ctx, ts.saveTimeout)
		err := ts.store.Save(sctx, tok.RefreshToken)
		cancel()
		if err != nil {
			ts.log.ErrorContext(ctx, "saving rotated refresh token failed", slog.String("error", ts.red.redact(err.Error())))
		}
	}
	ts.mu.Lock()
	ts.access = tok
	lifetime := time.Until(tok.Expiry)
	ts.refreshAt = tok.Expiry.Add(-min(accessTokenLeeway, lifetime/2))
	ts.refreshes++
	ts.mu.Unlock()
	return tok.AccessToken, nil
}

// wait blocks until no grant runs in the background, or ctx ends.
func (ts *tokenSource) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		ts.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type tokenResponse struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	ExpiresIn    json.RawMessage `json:"expires_in"`
	RefreshToken string          `json:"refresh_token"`
	Error        string          `json:"error"`
}

// redeem posts the refresh-token grant once.
func (ts *tokenSource) redeem(ctx context.Context, refreshToken string) (tok *oauth2.Token, err error) {
	start := time.Now()
	defer func() {
		outcome := "ok"
		switch {
		case err == nil:
		case ctx.Err() != nil:
			outcome = "canceled"
		default:
			outcome = Classify(err).String()
		}
		ts.obs.Call(msads.OpToken, outcome, time.Since(start))
	}()
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"client_id":     {ts.conf.ClientID},
		"scope":         {ts.scope},
	}
	if ts.conf.ClientSecret != "" {
		form.Set("client_secret", ts.conf.ClientSecret)
	}
	actx, cancel := context.WithTimeout(ctx, ts.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, ts.conf.Endpoint.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &TokenError{Class: ClassPermanent, Fatal: true, Description: ts.red.redact(err.Error()),
			Fix: "check microsoft_ads.token_url and microsoft_ads.tenant"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := ts.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &TokenError{Class: ClassTransient, Description: ts.red.redact(transportText(err, actx))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &TokenError{HTTPStatus: resp.StatusCode, Class: ClassTransient, Description: ts.red.redact(transportText(err, actx))}
	}
	var tr tokenResponse
	jerr := json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK || tr.Error != "" || jerr != nil || tr.AccessToken == "" {
		te := classifyTokenFailure(resp.StatusCode, body, ts.red)
		if resp.StatusCode == http.StatusOK && te.OAuthError == "" {
			te.Description = "the answer has no access token"
		}
		return nil, te
	}
	var expiresIn flexInt64
	if len(tr.ExpiresIn) > 0 {
		_ = expiresIn.UnmarshalJSON(tr.ExpiresIn)
	}
	if expiresIn <= 0 {
		expiresIn = 3600
	}
	expiresIn = min(expiresIn, 24*3600) // a day at most: no overflow, no token trusted for ever
	return &oauth2.Token{
		AccessToken:  tr.AccessToken,
		TokenType:    cmpOr(tr.TokenType, "Bearer"),
		RefreshToken: tr.RefreshToken,
		Expiry:       time.Now().Add(time.Duration(expiresIn) * time.Second),
	}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// redactor removes known secrets from text that ends up in errors and logs.
// The fixed secrets (client secret, developer token) are kept for ever;
// rotating tokens are kept up to a bound, most recent first out last.
type redactor struct {
	mu       sync.RWMutex
	fixed    []string
	rotating []string
}

func newRedactor(fixed ...string) *redactor {
	r := &redactor{}
	for _, s := range fixed {
		if len(s) >= redact.MinLen {
			r.fixed = append(r.fixed, s)
		}
	}
	return r
}

// add remembers a rotating secret (access or refresh token).
func (r *redactor) add(s string) {
	if len(s) < redact.MinLen {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, have := range r.rotating {
		if have == s {
			return
		}
	}
	r.rotating = append(r.rotating, s)
	if len(r.rotating) > 64 {
		r.rotating = r.rotating[len(r.rotating)-64:]
	}
}

func (r *redactor) redact(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, list := range [][]string{r.fixed, r.rotating} {
		for _, sec := range list {
			s = redact.Whole(s, sec, "[REDACTED]")
		}
	}
	return s
}
