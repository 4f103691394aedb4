// Package extract is the client of the Microsoft Advertising Customer
// Management REST API v13 (JSON over HTTPS), as far as the syncer needs it:
// users, their roles, pending invitations, customers and accounts.
//
// A Client owns one credential (developer token plus OAuth refresh token) and
// paces every call made with it through one shared rate limiter. It
//
//   - refreshes OAuth access tokens with the refresh-token grant, saving every
//     rotated refresh token to a TokenStore before using the new access token;
//   - retries throttled (117, HTTP 429) and transient (0, 833, 5xx, network,
//     timeouts) failures with jittered exponential backoff bounded in time;
//   - on throttling, pauses all callers together once per storm (Retry-After
//     or ThrottleWait), halves its rate and recovers it gradually;
//   - decodes responses tolerantly (ids as strings or numbers, nulls, dates
//     with or without zone) with a capped body size;
//   - returns *APIError values that name the operation and customer, carry
//     every fault code, and never contain a token or secret.
//
// FetchCustomer composes the calls of one customer's sync into a complete
// msads.Snapshot, sharing GetUser results across customers through a
// UserCache. The subpackage msadstest is an in-process simulator of the API.
package extract

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/retryafter"
)

// Default base URLs of the Customer Management service (msads-api.md §1.1).
const (
	ProductionAPIURL = "https://clientcenter.api.bingads.microsoft.com"
	SandboxAPIURL    = "https://clientcenter.api.sandbox.bingads.microsoft.com"
)

const (
	servicePath     = "/CustomerManagement/v13/"
	maxResponseBody = 32 << 20
	maxRetryAfter   = 15 * time.Minute
)

// Config configures a Client. Zero values take the defaults shown.
type Config struct {
	Environment       string        // "production" (default) or "sandbox": picks default API and token URLs and OAuth scope
	APIURL            string        // override base URL (tests, proxies); the client appends "/CustomerManagement/v13/..."
	TokenURL          string        // override OAuth token endpoint (the authorize and device code endpoints are derived from it)
	Tenant            string        // identity platform tenant: "common" (default), "organizations", "consumers" or a tenant id or domain
	DeveloperToken    string        // required
	ClientID          string        // required
	ClientSecret      string        // empty for a public client (then no client_secret is sent)
	RefreshToken      string        // seed refresh token from config; a token in Store takes precedence
	RequestsPerSecond float64       // default 5; one limiter shared by every call of this Client
	ThrottleWait      time.Duration // default 60s: pause after 117/429 without Retry-After
	RequestTimeout    time.Duration // default 30s per HTTP attempt
	RetryMaxElapsed   time.Duration // default 5m: give up retrying after this long
	// RetryInitialInterval is the first backoff wait after a transient
	// failure (default 500ms); it doubles up to 30s, with ±50% jitter.
	RetryInitialInterval time.Duration
	HTTPClient           *http.Client // optional base client (its Timeout should be 0 or > RequestTimeout)
	Store                TokenStore   // where rotated refresh tokens go; nil = in memory only
	Logger               *slog.Logger // nil = discard
	Observer             Observer     // nil = no-op; metrics hooks
}

// Observer receives metrics events. Implementations must be safe for
// concurrent use and fast.
type Observer interface {
	// Call reports one HTTP attempt of an operation (op "Token" for the
	// OAuth token endpoint); outcome is one of "ok", "throttled",
	// "transient", "token_expired", "permanent", "canceled".
	Call(op string, outcome string, d time.Duration)
	// Retry reports that a failed attempt of op will be retried.
	Retry(op string)
	// Throttle reports the start of a shared pause after throttling.
	Throttle(wait time.Duration)
}

type nopObserver struct{}

func (nopObserver) Call(string, string, time.Duration) {}
func (nopObserver) Retry(string)                       {}
func (nopObserver) Throttle(time.Duration)             {}

// Client calls the Customer Management API with one credential. It is safe
// for concurrent use.
type Client struct {
	cfg     Config
	baseURL string // ends in servicePath
	hc      *http.Client
	tokens  *tokenSource
	gov     *governor
	log     *slog.Logger
	obs     Observer
	red     *redactor

	checkMu sync.Mutex
	checks  map[string]*credCheck // by access token
}

// New validates cfg, applies defaults and returns a Client. It does no I/O:
// the refresh token is loaded and redeemed on the first call.
func New(cfg Config) (*Client, error) {
	env := strings.ToLower(strings.TrimSpace(cfg.Environment))
	switch env {
	case "", "production":
		env = "production"
	case "sandbox":
	default:
		return nil, fmt.Errorf("extract: environment %q: must be production or sandbox", cfg.Environment)
	}
	cfg.Environment = env
	if cfg.DeveloperToken == "" {
		return nil, errors.New("extract: developer token is required")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("extract: client id is required")
	}
	if cfg.RequestsPerSecond < 0 || cfg.ThrottleWait < 0 || cfg.RequestTimeout < 0 || cfg.RetryMaxElapsed < 0 || cfg.RetryInitialInterval < 0 {
		return nil, errors.New("extract: requests per second, throttle wait, request timeout and retry durations must not be negative")
	}
	defAPI := ProductionAPIURL
	if env == "sandbox" {
		defAPI = SandboxAPIURL
	}
	cfg.APIURL = cmp.Or(cfg.APIURL, defAPI)
	cfg.TokenURL = cmp.Or(cfg.TokenURL, EndpointsFor(cfg).Token)
	for name, u := range map[string]string{"api url": cfg.APIURL, "token url": cfg.TokenURL} {
		if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return nil, fmt.Errorf("extract: %s %q: must be an http(s) URL", name, u)
		}
	}
	cfg.RequestsPerSecond = cmp.Or(cfg.RequestsPerSecond, 5)
	cfg.ThrottleWait = cmp.Or(cfg.ThrottleWait, 60*time.Second)
	cfg.RequestTimeout = cmp.Or(cfg.RequestTimeout, 30*time.Second)
	cfg.RetryMaxElapsed = cmp.Or(cfg.RetryMaxElapsed, 5*time.Minute)
	cfg.RetryInitialInterval = cmp.Or(cfg.RetryInitialInterval, 500*time.Millisecond)
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: tr}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	obs := cfg.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	red := newRedactor(cfg.ClientSecret, cfg.DeveloperToken)
	c := &Client{
		cfg:     cfg,
		baseURL: strings.TrimRight(cfg.APIURL, "/") + servicePath,
		hc:      hc,
		gov:     newGovernor(cfg.RequestsPerSecond),
		log:     log,
		obs:     obs,
		red:     red,
	}
	c.tokens = newTokenSource(cfg, hc, log, red)
	c.tokens.obs = obs
	return c, nil
}

// Rate returns the current request rate: the configured one, or less while
// recovering from throttling.
func (c *Client) Rate() float64 { return c.gov.rate() }

// callStats counts the HTTP attempts and retries of one customer's calls.
type callStats struct {
	calls   atomic.Int64
	retries atomic.Int64
}

// request describes one API call.
type request struct {
	op         string // operation name (msads.Op*): its path is msads.OpPaths[op]
	customerID int64  // sent as the CustomerId header when not 0
	body       any
	stats      *callStats // may be nil
	// onFail, when set, is called after every failed attempt.
	onFail func()
	// probe marks the credentials check itself (see checkCredentials).
	probe bool
}

// throttleAware is a backoff.BackOff that waits nothing after a throttled
// attempt (the governor's shared pause does the waiting) and grows
// exponentially after transient ones, within the elapsed-time bound.
type throttleAware struct {
	exp       *backoff.ExponentialBackOff
	throttled bool
}

func (t *throttleAware) Reset() { t.exp.Reset() }

func (t *throttleAware) NextBackOff() time.Duration {
	d := t.exp.NextBackOff()
	if d == backoff.Stop || !t.throttled {
		return d
	}
	return 0
}

// maxMalformed is how many 2xx answers that are not the operation's answer
// a call accepts before it gives up: a cut body is worth another try, a
// service that keeps answering an HTML page is not worth five minutes.
const maxMalformed = 3

// call performs r with retries and decodes the 2xx body with decode.
func (c *Client) call(ctx context.Context, r request, decode func([]byte) error) error {
	body, err := json.Marshal(r.body)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", r.op, err)
	}
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.cfg.RetryInitialInterval),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(c.cfg.RetryMaxElapsed),
	)
	policy := &throttleAware{exp: exp}
	attempts, malformed := 0, 0
	refreshed := false
	var used string // access token of the last attempt
	retried := func() {
		c.obs.Retry(r.op)
		if r.stats != nil {
			r.stats.retries.Add(1)
		}
	}
	op := func() error {
		for {
			attempts++
			err := c.attempt(ctx, r, body, decode, &used)
			if err == nil {
				return nil
			}
			if r.onFail != nil {
				r.onFail()
			}
			if ctx.Err() != nil || IsRunFatal(err) {
				return backoff.Permanent(err)
			}
			class := Classify(err)
			if class == ClassAuth && used != "" {
				if !refreshed && !r.probe && !c.tokens.wasForced(used) {
					// Any 401: one refresh for every caller that saw it
					// with this token, then try again.
					refreshed = true
					if _, terr := c.tokens.forceRefresh(ctx, used); terr != nil {
						return backoff.Permanent(c.wrapTokenErr(ctx, r, terr))
					}
					retried()
					continue
				}
				// Refused again with a fresh token: the credentials
				// themselves, or this call's entity alone?
				if !r.probe {
					if cerr := c.checkCredentials(ctx, used); errors.Is(cerr, ErrCredentialsRejected) {
						return backoff.Permanent(fmt.Errorf("%w: %w", err, cerr))
					} else if cerr != nil {
						return backoff.Permanent(cerr)
					}
				}
				return backoff.Permanent(err)
			}
			if ae := asAPIError(err); ae != nil && ae.Malformed {
				if malformed++; malformed >= maxMalformed {
					return backoff.Permanent(err)
				}
			}
			if class != ClassThrottled && class != ClassTransient {
				return backoff.Permanent(err)
			}
			policy.throttled = class == ClassThrottled
			return err
		}
	}
	notify := func(err error, next time.Duration) {
		retried()
		c.log.DebugContext(ctx, "retrying msads call", slog.String("op", r.op), slog.Int64("customer_id", r.customerID),
			slog.String("class", Classify(err).String()), slog.Duration("backoff", next), slog.String("error", err.Error()))
	}
	err = backoff.RetryNotify(op, backoff.WithContext(policy, ctx), notify)
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !IsRunFatal(err) {
		// Canceled while or after the last attempt failed: the call ends
		// because of the cancel, not of that attempt's (retryable) failure.
		err = cerr
	}
	if ae, ok := errors.AsType[*APIError](err); !ok && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%s%s: %w", r.op, customerSuffix(r.customerID), err)
	} else if ok && attempts > 1 && (ae.Class == ClassThrottled || ae.Class == ClassTransient) {
		return fmt.Errorf("%w (gave up after %d attempts)", err, attempts)
	}
	return err
}

// credCheck is one check of the credentials with an access token.
type credCheck struct {
	done chan struct{}
	err  error
}

// checkCredentials tells a refused credential from a refused entity after a
// call was answered 401 even with a fresh access token: it asks for the
// signed-in user (GetUser with a null UserId) once per access token, for
// every caller, without refreshing again. When that too is refused, every
// call of the run would be: the result wraps ErrCredentialsRejected, and is
// remembered (like a run-fatal token failure) until ResetAuthFailure. Otherwise it returns nil and the
// call's failure is its own (the user lost access to that customer).
func (c *Client) checkCredentials(ctx context.Context, token string) error {
	c.checkMu.Lock()
	chk, ok := c.checks[token]
	if !ok {
		chk = &credCheck{done: make(chan struct{})}
		if c.checks == nil {
			c.checks = map[string]*credCheck{}
		}
		c.checks[token] = chk
	}
	c.checkMu.Unlock()
	if !ok {
		err := c.call(ctx, request{op: msads.OpGetUser, body: map[string]any{"UserId": nil}, probe: true},
			func([]byte) error { return nil })
		switch class := Classify(err); {
		case err == nil:
			// Conclusive: the credentials are fine.
		case class == ClassAuth || errors.Is(err, ErrCredentialsRejected):
			chk.err = ErrCredentialsRejected
			// Every later call of this run would be refused too.
			_ = c.tokens.fail(fmt.Errorf("%w (%s)", ErrCredentialsRejected, err.Error()))
		case class == ClassPermanent && asAPIError(err) != nil && !asAPIError(err).Malformed && ctx.Err() == nil:
			// The API answered, with something else than a 401: the
			// credentials are accepted.
		default:
			// Inconclusive (cancelled, throttled, transient, malformed):
			// remember nothing, and fail this call, not the user.
			chk.err = fmt.Errorf("could not tell whether the credentials are refused: %w", err)
			c.checkMu.Lock()
			delete(c.checks, token)
			c.checkMu.Unlock()
		}
		close(chk.done)
	}
	select {
	case <-chk.done:
		return chk.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func customerSuffix(id int64) string {
	if id == 0 {
		return ""
	}
	return " (customer " + strconv.FormatInt(id, 10) + ")"
}

// wrapTokenErr turns a token-source failure into an error naming the call.
func (c *Client) wrapTokenErr(ctx context.Context, r request, err error) error {
	if ae, ok := errors.AsType[*APIError](err); ok {
		cp := *ae
		cp.Op = r.op + ": token"
		cp.CustomerID = r.customerID
		return &cp
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s%s: %w", r.op, customerSuffix(r.customerID), ctx.Err())
	}
	return fmt.Errorf("%s%s: %w", r.op, customerSuffix(r.customerID), err)
}

// attempt makes one HTTP attempt (after pacing) and reports it.
func (c *Client) attempt(ctx context.Context, r request, body []byte, decode func([]byte) error, used *string) (err error) {
	if err := c.gov.wait(ctx); err != nil {
		return err
	}
	access, err := c.tokens.token(ctx)
	if err != nil {
		return c.wrapTokenErr(ctx, r, err)
	}
	*used = access
	start := time.Now()
	if r.stats != nil {
		r.stats.calls.Add(1)
	}
	defer func() {
		outcome := "ok"
		switch {
		case err == nil:
			c.gov.succeeded()
		case ctx.Err() != nil:
			outcome = "canceled"
		default:
			outcome = Classify(err).String()
		}
		c.obs.Call(r.op, outcome, time.Since(start))
	}()

	actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, c.baseURL+msads.OpPaths[r.op], bytes.NewReader(body))
	if err != nil {
		return &APIError{Op: r.op, CustomerID: r.customerID, Class: ClassPermanent, Err: errors.New(c.red.redact(err.Error()))}
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("DeveloperToken", c.cfg.DeveloperToken)
	if r.customerID != 0 {
		req.Header.Set("CustomerId", strconv.FormatInt(r.customerID, 10))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")

	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &APIError{Op: r.op, CustomerID: r.customerID, Class: ClassTransient, Err: errors.New(c.red.redact(transportText(err, actx)))}
	}
	defer resp.Body.Close()
	tracking := c.red.redact(resp.Header.Get("TrackingId"))
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if rerr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &APIError{Op: r.op, CustomerID: r.customerID, HTTPStatus: resp.StatusCode, TrackingID: tracking,
			Class: ClassTransient, Err: errors.New("reading response: " + c.red.redact(transportText(rerr, actx)))}
	}
	if len(data) > maxResponseBody {
		return &APIError{Op: r.op, CustomerID: r.customerID, HTTPStatus: resp.StatusCode, TrackingID: tracking,
			Class: ClassPermanent, Err: fmt.Errorf("response body larger than %d bytes", maxResponseBody)}
	}

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if derr := decode(data); errors.Is(derr, errNullUser) {
			return &APIError{Op: r.op, CustomerID: r.customerID, HTTPStatus: resp.StatusCode, TrackingID: tracking,
				Class: ClassPermanent, Err: derr}
		} else if derr != nil {
			// Not the operation's answer (cut, not JSON, an HTML page, the
			// result field missing): retried a few times, then the call
			// fails. Never read as an empty answer.
			return &APIError{Op: r.op, CustomerID: r.customerID, HTTPStatus: resp.StatusCode, TrackingID: tracking,
				Class: ClassTransient, Malformed: true, Err: errors.New("malformed response: " + c.red.redact(derr.Error()))}
		}
		return nil
	}

	ftrack, details, ok := decodeFault(data)
	if ftrack != "" {
		tracking = c.red.redact(ftrack)
	}
	codes := make([]int, 0, len(details))
	for i := range details {
		details[i].ErrorCode = c.red.redact(details[i].ErrorCode)
		details[i].Message = c.red.redact(details[i].Message)
		codes = append(codes, details[i].Code)
	}
	ae := &APIError{Op: r.op, CustomerID: r.customerID, HTTPStatus: resp.StatusCode, TrackingID: tracking,
		Errors: details, Class: classifyResponse(resp.StatusCode, codes)}
	if !ok {
		ae.Err = errors.New("response is not a fault object")
	}
	if ae.Class == ClassThrottled {
		wait := c.cfg.ThrottleWait
		if ra, ok := retryafter.Parse(resp.Header.Get("Retry-After"), time.Now(), maxRetryAfter); ok {
			wait = ra
		}
		if p := c.gov.throttled(start, wait); p > 0 {
			c.obs.Throttle(p)
			c.log.WarnContext(ctx, "msads API throttled; pausing all calls", slog.String("op", r.op),
				slog.Int64("customer_id", r.customerID), slog.Duration("wait", p), slog.Float64("new_rate", c.gov.rate()))
		}
	}
	return ae
}

// transportText describes a transport failure, naming a per-attempt timeout
// plainly (not as a context deadline, which would read as cancellation).
func transportText(err error, actx context.Context) string {
	if errors.Is(actx.Err(), context.DeadlineExceeded) {
		return "request timed out"
	}
	return err.Error()
}
