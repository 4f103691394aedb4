// Package msadstest is an in-process simulator of the Microsoft Advertising
// Customer Management REST API v13 and of the Microsoft identity platform's
// OAuth token endpoint, faithful to ../../../shared/msads-api.md as far as
// the syncer uses them. Tests, benchmarks and `syncer demo` use it.
//
// Wire behaviour:
//   - The API is served under "/api" (APIURL), so absolute-URL bugs show;
//     paths are "/api/CustomerManagement/v13/<Entity>/<Query|Search>", POST
//     only, JSON bodies.
//   - Every request needs "Authorization: Bearer <access token>" and the
//     "DeveloperToken" header: an unknown token or developer token answers
//     HTTP 401 code 105 InvalidCredentials, an expired access token HTTP 401
//     code 109 AuthenticationTokenExpired.
//   - Ids are JSON strings, unset fields explicit null, every User field
//     present. Date-times alternate between "2025-03-04T05:06:07.123" (no
//     zone) and "2025-03-04T05:06:07Z" by id parity.
//   - Faults are the bare AdApiFaultDetail or ApiFault objects of §6.1, with
//     the TrackingId also in a response header.
//   - Throttling answers code 117 CallRateExceeded with HTTP 429 by default
//     (Fault.ThrottleStatus may choose 400), and a Retry-After header only
//     when Fault.RetryAfter is set.
//   - An unreachable customer answers HTTP 400 code 106 UserIsNotAuthorized.
//   - The token endpoint ("/oauth2/v2.0/token", TokenURL) takes form-encoded
//     refresh_token and authorization_code grants with client_id, the
//     client_secret (unless WithPublicClient) and a scope containing
//     msads.manage. Every grant issues a new refresh token (rotation) and an
//     access token with expires_in. Failures are
//     {"error":"invalid_grant","error_description":"AADSTS70000: ..."} (400).
//   - "/oauth2/v2.0/authorize" redirects to redirect_uri with a fresh code and
//     the state, as after a successful sign-in.
package msadstest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/msads-syncer/syncer/internal/msads"
)

// Operation names, as used by Calls and SetFault.
const (
	OpGetUsersInfo          = "GetUsersInfo"
	OpGetUser               = "GetUser"
	OpSearchUserInvitations = "SearchUserInvitations"
	OpGetCustomersInfo      = "GetCustomersInfo"
	OpGetAccountsInfo       = "GetAccountsInfo"
	OpToken                 = "Token"
	// AnyOp in SetFault applies the fault to every API operation.
	AnyOp = "*"
)

// DemoAuthCode is an authorization code the token endpoint always accepts.
const DemoAuthCode = "msadstest-demo-auth-code"

const basePath = "/api"

var paths = map[string]string{
	basePath + "/CustomerManagement/v13/UsersInfo/Query":        OpGetUsersInfo,
	basePath + "/CustomerManagement/v13/User/Query":             OpGetUser,
	basePath + "/CustomerManagement/v13/UserInvitations/Search": OpSearchUserInvitations,
	basePath + "/CustomerManagement/v13/CustomersInfo/Query":    OpGetCustomersInfo,
	basePath + "/CustomerManagement/v13/AccountsInfo/Query":     OpGetAccountsInfo,
}

// Fault makes calls of one operation (or AnyOp) misbehave. Counted faults
// ("next N calls") count down per matching call, in the order Hang,
// Status5xxCode0, Malformed, Throttle, Code.
type Fault struct {
	// CustomerID limits the fault to calls for that customer (the body's
	// CustomerId or predicate value, else the CustomerId header); 0 = any.
	CustomerID int64
	// Latency delays every matching call.
	Latency time.Duration
	// RateLimitPerSec is a server-side limit: calls beyond it answer 117.
	RateLimitPerSec float64
	// Throttle: the next N calls answer 117 CallRateExceeded.
	Throttle int
	// ThrottleStatus is the HTTP status of 117 answers (default 429).
	ThrottleStatus int
	// RetryAfter, when set, is sent (in whole seconds, rounded up) as the
	// Retry-After header of 117 answers.
	RetryAfter time.Duration
	// Status5xxCode0: the next N calls answer HTTP 500 with code 0.
	Status5xxCode0 int
	// Malformed: the next N calls answer 200 with a cut JSON body.
	Malformed int
	// Hang: the next N calls never answer (until the client gives up).
	Hang int
	// Code, when not 0, answers that fault code with HTTP Status (default
	// 400; 401 for 105 and 109) on every matching call, or on the next
	// CodeTimes calls when CodeTimes > 0.
	Code      int
	Status    int
	CodeTimes int
}

type faultKey struct {
	op       string
	customer int64
}

type faultState struct {
	Fault
	lim        *rate.Limiter
	codeUsedUp bool
}

// Option configures a Server.
type Option func(*Server)

// WithPublicClient makes the OAuth client public: no client secret, and a
// token request that sends one is refused with invalid_request.
func WithPublicClient() Option { return func(s *Server) { s.clientSecret = "" } }

// WithAccessTokenTTL sets the lifetime of issued access tokens (default 1h).
func WithAccessTokenTTL(d time.Duration) Option { return func(s *Server) { s.accessTTL = d } }

// Server is a running simulator. All methods are safe for concurrent use.
type Server struct {
	ts     *httptest.Server
	closed chan struct{}
	once   sync.Once

	devToken, clientID, clientSecret string
	accessTTL                        time.Duration

	mu               sync.Mutex
	ds               *Dataset
	reachable        map[int64]bool
	calls            map[string]int
	faults           map[faultKey]*faultState
	access           map[string]time.Time // access token -> expiry
	refresh          map[string]bool      // refresh token -> used (superseded)
	latestRefresh    string
	codes            map[string]bool
	rejectSuperseded bool
	invalidGrant     bool
	seq              int64
}

// NewServer starts a simulator serving ds (which it owns from now on; pass
// ds.Clone() to keep a copy).
func NewServer(ds *Dataset, opts ...Option) *Server {
	if ds == nil {
		ds = &Dataset{}
	}
	s := &Server{
		closed:       make(chan struct{}),
		devToken:     "DEVTOKEN-" + randHex(6),
		clientID:     "00000000-sim-" + randHex(4),
		clientSecret: "secret~" + randHex(10),
		accessTTL:    time.Hour,
		ds:           ds,
		calls:        map[string]int{},
		faults:       map[faultKey]*faultState{},
		access:       map[string]time.Time{},
		refresh:      map[string]bool{},
		codes:        map[string]bool{},
	}
	for _, o := range opts {
		o(s)
	}
	s.reindex()
	s.latestRefresh = s.newRefreshLocked()
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth2/v2.0/token", s.handleToken)
	mux.HandleFunc("/oauth2/v2.0/authorize", s.handleAuthorize)
	mux.HandleFunc(basePath+"/", s.handleAPI)
	s.ts = httptest.NewServer(mux)
	return s
}

// Close stops the server; hanging calls end.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closed)
		s.ts.Close()
	})
}

// URL is the server's root URL.
func (s *Server) URL() string { return s.ts.URL }

// APIURL is the base URL to pass as extract.Config.APIURL.
func (s *Server) APIURL() string { return s.ts.URL + basePath }

// TokenURL is the OAuth token endpoint to pass as extract.Config.TokenURL.
func (s *Server) TokenURL() string { return s.ts.URL + "/oauth2/v2.0/token" }

// DeveloperToken is the developer token the server accepts.
func (s *Server) DeveloperToken() string { return s.devToken }

// ClientID is the OAuth client id the server accepts.
func (s *Server) ClientID() string { return s.clientID }

// ClientSecret is the OAuth client secret ("" with WithPublicClient).
func (s *Server) ClientSecret() string { return s.clientSecret }

// RefreshToken returns the most recently issued refresh token: the seed
// until a grant is made, then the latest rotated one. It is valid unless a
// token fault is set.
func (s *Server) RefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latestRefresh
}

// IssueRefreshToken mints an additional valid refresh token.
func (s *Server) IssueRefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.newRefreshLocked()
	s.latestRefresh = t
	return t
}

// IssueAuthCode mints a one-time authorization code for the
// authorization_code grant.
func (s *Server) IssueAuthCode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := "code-" + randHex(12)
	s.codes[c] = true
	return c
}

// Calls returns how many requests reached an operation (see the Op
// constants; "Token" counts token endpoint grants).
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// TotalCalls returns the number of API requests (token calls excluded).
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for op, c := range s.calls {
		if op != OpToken {
			n += c
		}
	}
	return n
}

// ResetCalls zeroes the call counters.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
}

// SetFault sets (replacing) the fault of op (or AnyOp) for f.CustomerID.
// A zero Fault clears it.
func (s *Server) SetFault(op string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := faultKey{op, f.CustomerID}
	if f == (Fault{}) || (f.Latency == 0 && f.RateLimitPerSec == 0 && f.Throttle == 0 && f.Status5xxCode0 == 0 &&
		f.Malformed == 0 && f.Hang == 0 && f.Code == 0) {
		delete(s.faults, k)
		return
	}
	st := &faultState{Fault: f}
	if f.RateLimitPerSec > 0 {
		st.lim = rate.NewLimiter(rate.Limit(f.RateLimitPerSec), max(1, int(f.RateLimitPerSec/10)))
	}
	s.faults[k] = st
}

// ClearFaults removes every fault, including the token fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[faultKey]*faultState{}
	s.invalidGrant = false
}

// SetTokenFault makes every refresh-token grant answer invalid_grant while set.
func (s *Server) SetTokenFault(invalidGrant bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidGrant = invalidGrant
}

// RejectSupersededRefreshTokens makes a refresh token that was already
// redeemed answer invalid_grant (strict rotation).
func (s *Server) RejectSupersededRefreshTokens(reject bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectSuperseded = reject
}

// ExpireAccessTokens makes every issued access token expired: the next API
// call with one answers 109.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for t := range s.access {
		s.access[t] = past
	}
}

// Dataset returns a copy of the current data.
func (s *Server) Dataset() *Dataset {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ds.Clone()
}

// AddUser adds (or replaces the profile of) a user listed by customerID with
// the given roles. Roles' UserID is set to u.ID and a zero CustomerID to
// customerID; with no roles the user gets Standard User in customerID. A
// zero HomeCustomerID becomes customerID.
func (s *Server) AddUser(customerID int64, u msads.User, roles []msads.Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.HomeCustomerID == 0 {
		u.HomeCustomerID = customerID
	}
	u.CustomerID = 0
	if i := s.userIndexLocked(u.ID); i >= 0 {
		s.ds.Users[i] = u
	} else {
		s.ds.Users = append(s.ds.Users, u)
	}
	if len(roles) == 0 {
		roles = []msads.Role{{RoleID: msads.RoleStandardUser}}
	}
	for _, r := range roles {
		r.UserID = u.ID
		if r.CustomerID == 0 {
			r.CustomerID = customerID
		}
		s.ds.Roles = slices.DeleteFunc(s.ds.Roles, func(x msads.Role) bool {
			return x.UserID == r.UserID && x.CustomerID == r.CustomerID && x.RoleID == r.RoleID
		})
		s.ds.Roles = append(s.ds.Roles, r)
	}
}

// UpdateUser changes a user's profile in place (e.g. its Email).
func (s *Server) UpdateUser(userID int64, change func(*msads.User)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.userIndexLocked(userID); i >= 0 {
		change(&s.ds.Users[i])
	}
}

// RemoveUser removes the user from customerID: its roles there go, so the
// customer no longer lists it. A user left without roles is deleted.
func (s *Server) RemoveUser(customerID, userID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds.Roles = slices.DeleteFunc(s.ds.Roles, func(r msads.Role) bool { return r.UserID == userID && r.CustomerID == customerID })
	s.pruneUserLocked(userID)
}

// SetRoles replaces all of a user's roles (UserID is set on each). With no
// roles the user is deleted.
func (s *Server) SetRoles(userID int64, roles []msads.Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds.Roles = slices.DeleteFunc(s.ds.Roles, func(r msads.Role) bool { return r.UserID == userID })
	for _, r := range roles {
		r.UserID = userID
		s.ds.Roles = append(s.ds.Roles, r)
	}
	s.pruneUserLocked(userID)
}

// AcceptInvitation accepts a pending invitation: it stops being returned,
// and a new user with the invitation's role (and accounts) appears in the
// invitation's customer. It returns the new user's id, or 0 when no such
// invitation is pending.
func (s *Server) AcceptInvitation(invitationID int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.ds.Invitations, func(inv msads.Invitation) bool { return inv.ID == invitationID })
	if i < 0 {
		return 0
	}
	inv := s.ds.Invitations[i]
	s.ds.Invitations = slices.Delete(s.ds.Invitations, i, i+1)
	id := userBase + 5_000_000
	for _, u := range s.ds.Users {
		id = max(id, u.ID+1)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	s.ds.Users = append(s.ds.Users, msads.User{ID: id, HomeCustomerID: inv.CustomerID, UserName: inv.Email, Email: inv.Email,
		FirstName: inv.FirstName, LastName: inv.LastName, Lcid: inv.Lcid, LifecycleStatus: "Active", LastModifiedTime: &now})
	s.ds.Roles = append(s.ds.Roles, msads.Role{UserID: id, CustomerID: inv.CustomerID, RoleID: inv.RoleID, AccountIDs: slices.Clone(inv.AccountIDs)})
	return id
}

// AddInvitation adds a pending invitation; a zero ID is assigned, a nil
// ExpirationDate becomes 30 days from now. It returns the id.
func (s *Server) AddInvitation(inv msads.Invitation) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inv.ID == 0 {
		inv.ID = invitationBase + 100_000
		for _, x := range s.ds.Invitations {
			inv.ID = max(inv.ID, x.ID+1)
		}
	}
	if inv.ExpirationDate == nil {
		e := time.Now().UTC().Add(30 * 24 * time.Hour).Truncate(time.Second)
		inv.ExpirationDate = &e
	}
	s.ds.Invitations = append(s.ds.Invitations, inv)
	return inv.ID
}

// AddCustomer makes a new customer reachable.
func (s *Server) AddCustomer(c msads.Customer, accounts []msads.Account) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds.Customers = append(s.ds.Customers, c)
	for _, a := range accounts {
		a.CustomerID = c.ID
		s.ds.Accounts = append(s.ds.Accounts, a)
	}
	s.reindex()
}

func (s *Server) userIndexLocked(id int64) int {
	return slices.IndexFunc(s.ds.Users, func(u msads.User) bool { return u.ID == id })
}

func (s *Server) pruneUserLocked(userID int64) {
	if !slices.ContainsFunc(s.ds.Roles, func(r msads.Role) bool { return r.UserID == userID }) {
		s.ds.Users = slices.DeleteFunc(s.ds.Users, func(u msads.User) bool { return u.ID == userID })
	}
}

func (s *Server) reindex() {
	s.reachable = map[int64]bool{}
	for _, c := range s.ds.Customers {
		s.reachable[c.ID] = true
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) newRefreshLocked() string {
	s.seq++
	t := fmt.Sprintf("M.R3_sim.%d.%s", s.seq, randHex(16))
	s.refresh[t] = false
	return t
}

func (s *Server) newAccessLocked() string {
	s.seq++
	t := fmt.Sprintf("EwB.sim.%d.%s", s.seq, randHex(16))
	s.access[t] = time.Now().Add(s.accessTTL)
	return t
}

func (s *Server) trackingID() string {
	return randHex(4) + "-" + randHex(2) + "-" + randHex(2) + "-" + randHex(2) + "-" + randHex(6)
}

// ---- OAuth ----

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{
		"error": code, "error_description": desc + "\r\nTrace ID: " + randHex(8) + "\r\nTimestamp: " + time.Now().UTC().Format(time.DateTime) + "Z",
		"error_codes": []int{70000}, "timestamp": time.Now().UTC().Format(time.DateTime) + "Z",
	})
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ru, err := url.Parse(q.Get("redirect_uri"))
	if q.Get("client_id") != s.clientID || err != nil || ru.Scheme == "" || q.Get("response_type") != "code" {
		http.Error(w, "AADSTS50011: bad authorize request", http.StatusBadRequest)
		return
	}
	v := ru.Query()
	v.Set("code", s.IssueAuthCode())
	v.Set("state", q.Get("state"))
	ru.RawQuery = v.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls[OpToken]++
	s.mu.Unlock()
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "AADSTS900561: The endpoint only accepts POST requests.")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: body must be form-encoded.")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed body.")
		return
	}
	f := r.PostForm
	if f.Get("client_id") != s.clientID {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "AADSTS700016: Application was not found in the directory.")
		return
	}
	switch {
	case s.clientSecret == "" && f.Has("client_secret"):
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS700025: Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")
		return
	case s.clientSecret != "" && f.Get("client_secret") != s.clientSecret:
		oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	scope := f.Get("scope")
	if !strings.Contains(scope, "msads.manage") {
		oauthError(w, http.StatusBadRequest, "invalid_scope", "AADSTS70011: The provided request must include a 'scope' input parameter with msads.manage.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f.Get("grant_type") {
	case "refresh_token":
		rt := f.Get("refresh_token")
		used, known := s.refresh[rt]
		if s.invalidGrant || !known || (used && s.rejectSuperseded) {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: The provided value for the 'refresh_token' is not valid. The refresh token has expired, been revoked or superseded.")
			return
		}
		s.refresh[rt] = true
	case "authorization_code":
		code := f.Get("code")
		if code != DemoAuthCode && !s.codes[code] {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: The provided authorization code is not valid.")
			return
		}
		if f.Get("redirect_uri") == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.")
			return
		}
		delete(s.codes, code)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
		return
	}
	newRT := s.newRefreshLocked()
	s.latestRefresh = newRT
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "scope": "https://ads.microsoft.com/msads.manage",
		"expires_in": int(s.accessTTL / time.Second), "ext_expires_in": int(s.accessTTL / time.Second),
		"access_token": s.newAccessLocked(), "refresh_token": newRT,
	})
}

// ---- API ----

type apiErr struct {
	status int
	code   int
	symbol string
	msg    string
	apiOp  bool // ApiFault with OperationErrors instead of AdApiFaultDetail
	retry  time.Duration
}

var symbols = map[int]string{
	0: "InternalError", 105: "InvalidCredentials", 106: "UserIsNotAuthorized", 109: "AuthenticationTokenExpired",
	117: "CallRateExceeded", 201: "InvalidInputParameter", 203: "NullParameter", 833: "ServiceTimeOut", 1001: "UserNotAuthorized",
	3101: "OAuthTokenInvalid", 3030: "InvalidPredicate",
}

func (s *Server) writeFault(w http.ResponseWriter, e apiErr) {
	tid := s.trackingID()
	w.Header().Set("TrackingId", tid)
	if e.retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.retry+time.Second-1)/time.Second)))
	}
	sym := e.symbol
	if sym == "" {
		sym = symbols[e.code]
	}
	if e.apiOp {
		writeJSON(w, e.status, map[string]any{"TrackingId": tid, "Type": "ApiFault",
			"OperationErrors": []any{map[string]any{"Code": e.code, "Details": nil, "Message": e.msg}}})
		return
	}
	writeJSON(w, e.status, map[string]any{"TrackingId": tid, "Type": "AdApiFaultDetail",
		"Errors": []any{map[string]any{"Code": e.code, "Detail": nil, "ErrorCode": sym, "Message": e.msg}}})
}

type apiRequest struct {
	CustomerID         json.RawMessage `json:"CustomerId"`
	UserID             json.RawMessage `json:"UserId"`
	StatusFilter       *string         `json:"StatusFilter"`
	CustomerNameFilter *string         `json:"CustomerNameFilter"`
	TopN               *int            `json:"TopN"`
	OnlyParentAccounts *bool           `json:"OnlyParentAccounts"`
	Predicates         []struct {
		Field, Operator, Value string
	} `json:"Predicates"`
}

func parseID(raw json.RawMessage) (int64, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return n, true
	}
	return 0, false
}

// customerOf returns the customer a call is for.
func customerOf(op string, req *apiRequest, r *http.Request) int64 {
	switch op {
	case OpGetUsersInfo, OpGetAccountsInfo:
		if id, ok := parseID(req.CustomerID); ok {
			return id
		}
	case OpSearchUserInvitations:
		if len(req.Predicates) == 1 {
			v := strings.Split(req.Predicates[0].Value, ",")[0]
			if id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return id
			}
		}
	}
	id, _ := strconv.ParseInt(r.Header.Get("CustomerId"), 10, 64)
	return id
}

// wait sleeps d, or until the request or the server ends; false if ended.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.closed:
	}
	return false
}

func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	op, ok := paths[r.URL.Path]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"Message": "No HTTP resource was found that matches the request URI."})
		return
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"Message": "The requested resource does not support http method '" + r.Method + "'."})
		return
	}
	var req apiRequest
	// Read the body to its end: only then does net/http notice a client
	// that goes away (which ends hanging calls).
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(raw, &req)
	}
	if err != nil {
		s.count(op)
		s.writeFault(w, apiErr{status: 400, code: 201, msg: "The request body is not valid JSON."})
		return
	}
	cust := customerOf(op, &req, r)
	s.count(op)

	// Faults that act before authentication: latency and hangs.
	faults := s.matchFaults(op, cust)
	for _, f := range faults {
		if !s.wait(r, f.Latency) {
			return
		}
	}
	if s.takeCounted(faults, func(f *faultState) *int { return &f.Hang }) {
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		return
	}

	if e, ok := s.authenticate(r); !ok {
		s.writeFault(w, e)
		return
	}

	if s.takeCounted(faults, func(f *faultState) *int { return &f.Status5xxCode0 }) {
		s.writeFault(w, apiErr{status: 500, code: 0, msg: "An internal error has occurred."})
		return
	}
	if s.takeCounted(faults, func(f *faultState) *int { return &f.Malformed }) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(`{"` + op + `": [{"Id": "12`))
		return
	}
	if f, ok := s.throttle(faults); ok {
		st := f.ThrottleStatus
		if st == 0 {
			st = http.StatusTooManyRequests
		}
		s.writeFault(w, apiErr{status: st, code: 117, msg: "You have exceeded the number of calls that you are allowed to make in a given time period. Please resubmit your request after 60 seconds.", retry: f.RetryAfter})
		return
	}
	if f, ok := s.codeFault(faults); ok {
		st := f.Status
		if st == 0 {
			st = 400
			if f.Code == 105 || f.Code == 109 {
				st = 401
			}
		}
		s.writeFault(w, apiErr{status: st, code: f.Code, msg: fmt.Sprintf("Simulated fault %d.", f.Code)})
		return
	}

	var (
		resp any
		e    *apiErr
	)
	s.mu.Lock()
	switch op {
	case OpGetUsersInfo:
		resp, e = s.getUsersInfoLocked(&req)
	case OpGetUser:
		resp, e = s.getUserLocked(&req, r)
	case OpSearchUserInvitations:
		resp, e = s.searchInvitationsLocked(&req)
	case OpGetCustomersInfo:
		resp, e = s.getCustomersInfoLocked(&req)
	case OpGetAccountsInfo:
		resp, e = s.getAccountsInfoLocked(&req)
	}
	s.mu.Unlock()
	if e != nil {
		s.writeFault(w, *e)
		return
	}
	w.Header().Set("TrackingId", s.trackingID())
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) count(op string) {
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
}

func (s *Server) matchFaults(op string, cust int64) []*faultState {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := []faultKey{{op, 0}, {AnyOp, 0}}
	if cust != 0 {
		keys = []faultKey{{op, cust}, {op, 0}, {AnyOp, cust}, {AnyOp, 0}}
	}
	var out []*faultState
	for _, k := range keys {
		if f, ok := s.faults[k]; ok {
			out = append(out, f)
		}
	}
	return out
}

// takeCounted decrements the first positive counter and reports whether it did.
func (s *Server) takeCounted(faults []*faultState, field func(*faultState) *int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if p := field(f); *p > 0 {
			*p--
			return true
		}
	}
	return false
}

func (s *Server) throttle(faults []*faultState) (*faultState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if f.Throttle > 0 {
			f.Throttle--
			return f, true
		}
		if f.lim != nil && !f.lim.Allow() {
			return f, true
		}
	}
	return nil, false
}

func (s *Server) codeFault(faults []*faultState) (*faultState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if f.Code == 0 || f.codeUsedUp {
			continue
		}
		if f.CodeTimes > 0 {
			f.CodeTimes--
			f.codeUsedUp = f.CodeTimes == 0
		}
		return f, true
	}
	return nil, false
}

func (s *Server) authenticate(r *http.Request) (apiErr, bool) {
	if r.Header.Get("DeveloperToken") != s.devToken {
		return apiErr{status: 401, code: 105, msg: "Authentication failed. Either supplied credentials are invalid or the account is inactive."}, false
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		return apiErr{status: 401, code: 105, msg: "Authentication failed. Either supplied credentials are invalid or the account is inactive."}, false
	}
	s.mu.Lock()
	exp, known := s.access[tok]
	s.mu.Unlock()
	switch {
	case !known:
		return apiErr{status: 401, code: 105, msg: "Authentication failed. Either supplied credentials are invalid or the account is inactive."}, false
	case time.Now().After(exp):
		return apiErr{status: 401, code: 109, msg: "Authentication token expired. Please renew the authentication token."}, false
	}
	return apiErr{}, true
}

func notAuthorized() *apiErr {
	return &apiErr{status: 400, code: 106, msg: "The user does not represent an authorized developer or is not authorized to access the entity."}
}

func (s *Server) getUsersInfoLocked(req *apiRequest) (any, *apiErr) {
	cid, ok := parseID(req.CustomerID)
	if !ok {
		return nil, &apiErr{status: 400, code: 203, msg: "CustomerId is null or invalid."}
	}
	if !s.reachable[cid] {
		return nil, notAuthorized()
	}
	list := []any{}
	for _, id := range s.ds.ListedUserIDs(cid) {
		i := s.userIndexLocked(id)
		if i < 0 {
			continue
		}
		u := s.ds.Users[i]
		if req.StatusFilter != nil && !strings.EqualFold(*req.StatusFilter, u.LifecycleStatus) {
			continue
		}
		list = append(list, map[string]any{"Id": strconv.FormatInt(u.ID, 10), "UserName": u.UserName})
	}
	return map[string]any{"UsersInfo": list}, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func ids(in []int64) any {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = strconv.FormatInt(v, 10)
	}
	return out
}

// dateTime formats t with or without zone (and fractions) by id parity.
func dateTime(t *time.Time, id int64) any {
	if t == nil {
		return nil
	}
	if id%2 == 0 {
		return t.UTC().Format("2006-01-02T15:04:05.000")
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

func (s *Server) getUserLocked(req *apiRequest, r *http.Request) (any, *apiErr) {
	if h := r.Header.Get("CustomerId"); h != "" {
		if id, err := strconv.ParseInt(h, 10, 64); err != nil || !s.reachable[id] {
			return nil, notAuthorized()
		}
	}
	var uid int64
	if len(req.UserID) == 0 || string(req.UserID) == "null" {
		if len(s.ds.Users) == 0 {
			return nil, notAuthorized()
		}
		uid = s.ds.Users[0].ID // the caller
	} else {
		id, ok := parseID(req.UserID)
		if !ok {
			return nil, &apiErr{status: 400, code: 201, msg: "UserId is invalid."}
		}
		uid = id
	}
	i := s.userIndexLocked(uid)
	if i < 0 {
		return nil, notAuthorized()
	}
	u := s.ds.Users[i]
	roles := []any{}
	for _, rl := range s.ds.Roles {
		if rl.UserID != uid || !s.reachable[rl.CustomerID] {
			continue
		}
		roles = append(roles, map[string]any{"AccountIds": ids(rl.AccountIDs), "CustomerId": strconv.FormatInt(rl.CustomerID, 10),
			"CustomerLinkPermission": nullable(rl.CustomerLinkPermission), "LinkedAccountIds": ids(rl.LinkedAccountIDs), "RoleId": rl.RoleID})
	}
	if len(roles) == 0 {
		return nil, notAuthorized()
	}
	idStr := strconv.FormatInt(u.ID, 10)
	user := map[string]any{
		"ContactInfo": map[string]any{
			"Address": map[string]any{"BusinessName": nil, "City": "Redmond", "CountryCode": "US", "Id": strconv.FormatInt(u.ID+1_000_000, 10),
				"Line1": "1 Microsoft Way", "Line2": nil, "Line3": nil, "Line4": nil, "PostalCode": "98052", "StateOrProvince": "WA", "TimeStamp": nil},
			"ContactByPhone": false, "ContactByPostalMail": false, "Email": nullable(u.Email), "EmailFormat": "Html", "Fax": nil,
			"HomePhone": nil, "Id": strconv.FormatInt(u.ID+2_000_000, 10), "Mobile": nil, "Phone1": "4255550100", "Phone2": nil,
		},
		"CustomerId": strconv.FormatInt(u.HomeCustomerID, 10), "ForwardCompatibilityMap": []any{}, "Id": idStr,
		"JobTitle": nullable(u.JobTitle), "LastModifiedByUserId": idStr, "LastModifiedTime": dateTime(u.LastModifiedTime, u.ID),
		"Lcid": nullable(u.Lcid), "Name": map[string]any{"FirstName": nullable(u.FirstName), "LastName": nullable(u.LastName), "MiddleInitial": nil},
		"Password": nil, "SecretAnswer": nil, "SecretQuestion": "None", "TimeStamp": "AAAAAAFg9xk=",
		"UserLifeCycleStatus": nullable(u.LifecycleStatus), "UserName": u.UserName,
	}
	return map[string]any{"User": user, "CustomerRoles": roles}, nil
}

func (s *Server) searchInvitationsLocked(req *apiRequest) (any, *apiErr) {
	bad := &apiErr{status: 400, code: 3030, apiOp: true, msg: "The Predicate passed in the search is invalid."}
	if len(req.Predicates) != 1 || req.Predicates[0].Field != "CustomerId" {
		return nil, bad
	}
	p := req.Predicates[0]
	var want []int64
	switch p.Operator {
	case "Equals":
		id, err := strconv.ParseInt(p.Value, 10, 64)
		if err != nil {
			return nil, bad
		}
		want = []int64{id}
	case "In":
		parts := strings.Split(p.Value, ",")
		if len(parts) > 10 {
			return nil, bad
		}
		for _, v := range parts {
			id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, bad
			}
			want = append(want, id)
		}
	default:
		return nil, bad
	}
	for _, id := range want {
		if !s.reachable[id] {
			return nil, notAuthorized()
		}
	}
	list := []any{}
	for _, inv := range s.ds.Invitations {
		if !slices.Contains(want, inv.CustomerID) {
			continue
		}
		list = append(list, map[string]any{"AccountIds": ids(inv.AccountIDs), "CustomerId": strconv.FormatInt(inv.CustomerID, 10),
			"Email": inv.Email, "ExpirationDate": dateTime(inv.ExpirationDate, inv.ID), "FirstName": nullable(inv.FirstName),
			"Id": strconv.FormatInt(inv.ID, 10), "LastName": nullable(inv.LastName), "Lcid": nullable(inv.Lcid), "RoleId": inv.RoleID})
	}
	return map[string]any{"UserInvitations": list}, nil
}

func (s *Server) getCustomersInfoLocked(req *apiRequest) (any, *apiErr) {
	if req.TopN == nil || *req.TopN < 1 {
		return nil, &apiErr{status: 400, code: 201, msg: "TopN must be at least 1."}
	}
	prefix := ""
	if req.CustomerNameFilter != nil {
		prefix = strings.ToLower(*req.CustomerNameFilter)
	}
	list := []any{}
	for _, c := range s.ds.Customers {
		if len(list) >= *req.TopN {
			break
		}
		if strings.HasPrefix(strings.ToLower(c.Name), prefix) {
			list = append(list, map[string]any{"Id": strconv.FormatInt(c.ID, 10), "Name": c.Name})
		}
	}
	return map[string]any{"CustomersInfo": list}, nil
}

func (s *Server) getAccountsInfoLocked(req *apiRequest) (any, *apiErr) {
	var cid int64
	if len(req.CustomerID) == 0 || string(req.CustomerID) == "null" {
		if len(s.ds.Customers) > 0 {
			cid = s.ds.Customers[0].ID
		}
	} else {
		id, ok := parseID(req.CustomerID)
		if !ok {
			return nil, &apiErr{status: 400, code: 201, msg: "CustomerId is invalid."}
		}
		cid = id
	}
	if !s.reachable[cid] {
		return nil, notAuthorized()
	}
	list := []any{}
	for _, a := range s.ds.Accounts {
		if a.CustomerID != cid {
			continue
		}
		var pr any
		if a.PauseReason != nil {
			pr = *a.PauseReason
		}
		list = append(list, map[string]any{"AccountLifeCycleStatus": a.Status, "Id": strconv.FormatInt(a.ID, 10),
			"Name": a.Name, "Number": a.Number, "PauseReason": pr})
	}
	return map[string]any{"AccountsInfo": list}, nil
}
