// Package msadstest is an in-process simulator of the Microsoft Advertising
// Customer Management REST API v13 and of the Microsoft identity platform's
// OAuth token endpoint, faithful to ../../../shared/msads-api.md as far as
// the syncer uses them, and at least as hard as the real service. Tests,
// benchmarks and `syncer demo` use it. Everything odd is opt-in (methods,
// Fault fields, Dataset.UserFaults and StaleListings), except in
// DemoDataset, which is a realistic tenant; Generate's data sets carry no
// faults.
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
//     present. Role and invitation AccountIds are null when the data's
//     slice is nil and [] when it is empty. UserLifeCycleStatus is served
//     as stored (Active, Inactive, Pending, Deleted or anything else).
//   - Date-times (LastModifiedTime, ExpirationDate) are UTC with id%8
//     fraction digits (0 to 7) and, by (id/8)%3, a "Z", a "+00:00" or no
//     zone: "2025-03-04T05:06:07.123Z", "2025-03-04T05:06:07+00:00",
//     "2025-03-04T05:06:07.1234567".
//   - User.ForwardCompatibilityMap is [{"Key":"SomeFutureField","Value":"x"}]
//     for users whose id%5 is 0, else [].
//   - Faults are the bare fault objects of §6.1, with the TrackingId both in
//     the body and in a "TrackingId" response header: AdApiFaultDetail
//     {"Errors":[{Code,Detail,ErrorCode,Message}]} by default, or by
//     Fault.Shape an ApiFault {"OperationErrors":[{Code,Details,Message}]}
//     or an ApiFault with "BatchErrors":[{Code,Details,ErrorCode (null),
//     FieldPath,ForwardCompatibilityMap,Index,Message,Type}] and empty
//     OperationErrors. Fault.Codes sends several errors in one fault (the
//     first decides the HTTP status). ErrorCode is the documented symbol
//     (1001 UserNotFound, 210 EntityNotExistent, 108 UserCompromised, 120
//     UserLoginAccessDenied, 122 PersonalIdentityNotAvailable, …) and ""
//     for a code without a known symbol.
//   - Code faults answer HTTP 400, or 401 for 105 and 109, unless
//     Fault.Status says otherwise.
//   - Throttling answers code 117 CallRateExceeded with HTTP 429 by default
//     (Fault.ThrottleStatus may choose 400), and a Retry-After header only
//     when Fault.RetryAfter is set: in seconds, or as an HTTP-date with
//     Fault.RetryAfterDate.
//   - Fault.Response answers a Canned response verbatim after
//     authentication: EmptyObject ({}), NullList (the result field null),
//     HTMLPage (an IIS / Front Door error page), EmptyBody, StatusOnly (a
//     bare 401, 408, 502, 504…), or any status, content type, body and
//     headers.
//   - An unreachable customer (not in Dataset.Customers, or SetUnreachable)
//     answers HTTP 400 code 106 UserIsNotAuthorized. RevokeCustomerAccess
//     makes every call in one customer's context (CustomerId header, body
//     CustomerId or predicate) answer HTTP 401 code 105, fresh token or not.
//   - GetUser with a null or omitted UserId answers the principal
//     (Dataset.Principal, else the first user) with the roles it holds in
//     reachable customers: in DemoDataset a role in every customer; in
//     Generate's data only its generated roles, unless
//     Dataset.GrantPrincipalEverywhere gives it one in every customer
//     (Generate leaves it out so the benchmarks' listings stay). GetUser of a user that does not exist (deleted,
//     or a stale listing) answers HTTP 400 code 1001 UserNotFound; per-user
//     faults (SetUserFault, Dataset.UserFaults) answer a code or a 200
//     {"User": null, "CustomerRoles": null}.
//   - GetUsersInfo lists the users holding a role in the customer plus its
//     stale listings (users deleted between the listing and GetUser:
//     DeleteUserKeepListing).
//   - GetCustomersInfo honours TopN exactly (a full page when more exist),
//     omits unreachable customers and those hidden by
//     HideFromCustomersInfo, and returns at most SetCustomersInfoCap.
//   - The token endpoint ("/oauth2/v2.0/token", TokenURL) takes form-encoded
//     refresh_token and authorization_code grants with client_id, the
//     client_secret (unless WithPublicClient) and a scope containing
//     msads.manage. Every grant issues a new refresh token (rotation) and an
//     access token with expires_in. Errors have the identity platform's
//     body: {"error","error_description":"AADSTSn: …\r\nTrace ID: …\r\n
//     Correlation ID: …\r\nTimestamp: …","error_codes":[n],"timestamp",
//     "trace_id","correlation_id","error_uri"}: invalid_client 700016
//     (unknown client), 7000215 (wrong secret), 7000218 (no secret) and
//     700025 (a public client sent one) on HTTP 401; invalid_scope 70011;
//     invalid_grant 70000 (unknown or, with
//     RejectSupersededRefreshTokens, superseded refresh token or unknown
//     code) and 54005 (code redeemed twice). SetTokenError forces any
//     identity platform answer (invalid_grant 70008, 700082, 50173, 54005,
//     70000; invalid_client 7000215, 7000222, 700016, 700025;
//     interaction_required 50076, 50079, 65001; invalid_scope 70011;
//     temporarily_unavailable on 503; or a Canned HTML page), on every grant
//     or the next Times.
//   - Several credentials over the same data: AddCredential(principal,
//     customers) returns one with its own developer token, OAuth client id
//     and secret and refresh tokens. Access tokens remember the credential
//     they were issued to, refresh tokens are bound to their client, and
//     any known developer token is accepted. A credential reaches only its
//     customers: calls for others answer 106, GetCustomersInfo lists only
//     its own, GetUser returns only the roles in them, and GetUser without
//     a user id answers its principal. The default credential (ClientID,
//     DeveloperToken…) reaches every reachable customer, as before.
//   - "/oauth2/v2.0/authorize" redirects to redirect_uri with a fresh code and
//     the state, as after a successful sign-in. It keeps the PKCE
//     code_challenge (S256 or plain) and the redirect_uri with the code: the
//     authorization_code grant then needs the matching code_verifier
//     (invalid_grant AADSTS50148 when missing, 501481 when wrong), the same
//     redirect_uri and the same client. A redirect_uri that is not registered
//     (SetRedirectURIs; by default any http://localhost or 127.0.0.1 URI, on
//     any port, and the nativeclient URI) is answered with a redirect
//     carrying error=invalid_request and error_description "AADSTS50011: …"
//     (and the state); an unknown client_id with an HTTP 400 page naming
//     AADSTS700016.
//   - "/oauth2/v2.0/devicecode" starts a device authorization grant (RFC
//     8628); the token endpoint's device_code grant answers
//     authorization_pending until the sign-in is approved (SetDeviceFlow's
//     ApproveAfterPolls, or ApproveDeviceCode), slow_down when polled faster
//     than the interval, expired_token after ExpiresIn, and
//     authorization_declined when SetDeviceFlow says Decline.
package msadstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"

	"github.com/msads-syncer/syncer/internal/msads"
)

// Operation names, as used by Calls and SetFault.
const (
	OpGetUsersInfo          = msads.OpGetUsersInfo
	OpGetUser               = msads.OpGetUser
	OpSearchUserInvitations = msads.OpSearchUserInvitations
	OpGetCustomersInfo      = msads.OpGetCustomersInfo
	OpGetAccountsInfo       = msads.OpGetAccountsInfo
	OpToken                 = msads.OpToken
	// AnyOp in SetFault applies the fault to every API operation.
	AnyOp = "*"
)

// DemoAuthCode is an authorization code the token endpoint always accepts.
const DemoAuthCode = "msadstest-demo-auth-code"

const basePath = "/api"

// paths maps each request path to its operation (msads.OpPaths).
var paths = func() map[string]string {
	m := make(map[string]string, len(msads.OpPaths))
	for op, p := range msads.OpPaths {
		m[basePath+"/CustomerManagement/v13/"+p] = op
	}
	return m
}()

// Option configures a Server.
type Option func(*Server)

// WithPublicClient makes the OAuth client public: no client secret, and a
// token request that sends one is refused with invalid_request.
func WithPublicClient() Option { return func(s *Server) { s.def.clientSecret = "" } }

// WithAccessTokenTTL sets the lifetime of issued access tokens (default 1h).
func WithAccessTokenTTL(d time.Duration) Option { return func(s *Server) { s.accessTTL = d } }

// Server is a running simulator. All methods are safe for concurrent use.
type Server struct {
	ts     *httptest.Server
	mux    *http.ServeMux
	closed chan struct{}
	once   sync.Once

	// def is the default credential; creds are every credential, def
	// first (see AddCredential).
	def       *Credential
	creds     []*Credential
	accessTTL time.Duration

	mu               sync.Mutex
	ds               *Dataset
	reachable        map[int64]bool
	calls            map[string]int
	faults           map[faultKey]*faultState
	access           map[string]issuedAccess  // access token -> expiry and credential
	refresh          map[string]*refreshState // refresh token -> its state
	codes            map[string]*authCode     // auth code -> its sign-in
	redirectURIs     []string                 // registered redirect URIs; nil: any loopback http URI and nativeclient
	deviceFlow       DeviceFlow
	devices          map[string]*deviceAuth // device_code -> its state
	rejectSuperseded bool
	tokenErr         *TokenError
	userFaults       map[userFaultKey]UserFault
	revoked          map[int64]bool // customers whose access was removed (401 105)
	unreachable      map[int64]bool // customers in the data the credential cannot reach (106)
	hidden           map[int64]bool // reachable customers GetCustomersInfo omits
	linkDenied       map[int64]bool // customers whose client link searches answer 106 (DenyLinkSearches)
	customersCap     int            // GetCustomersInfo returns at most this many (0 = no cap)
	seq              int64
	lastInvitationID int64 // ids handed out, so none is reused
	lastUserID       int64
	idx              *dataIndex // lookups into ds; nil when ds changed (see indexLocked)
}

// dataIndex makes the per-call lookups of large data sets cheap: a user's
// position, a user's roles, a customer's listed users. Every method that
// changes ds drops it (s.idx = nil); it is also rebuilt when the lengths
// of ds's slices differ from those it was built from.
type dataIndex struct {
	users, roles, stale, customers int
	userPos                        map[int64]int     // user id -> index in ds.Users (the first)
	rolesOf                        map[int64][]int   // user id -> indexes in ds.Roles, in order
	listed                         map[int64][]int64 // customer id -> ListedUserIDs
}

func (s *Server) indexLocked() *dataIndex {
	d := s.ds
	if x := s.idx; x != nil && x.users == len(d.Users) && x.roles == len(d.Roles) && x.stale == len(d.StaleListings) && x.customers == len(d.Customers) {
		return x
	}
	x := &dataIndex{users: len(d.Users), roles: len(d.Roles), stale: len(d.StaleListings), customers: len(d.Customers),
		userPos: make(map[int64]int, len(d.Users)), rolesOf: make(map[int64][]int, len(d.Users)), listed: map[int64][]int64{}}
	for i, u := range d.Users {
		if _, dup := x.userPos[u.ID]; !dup {
			x.userPos[u.ID] = i
		}
	}
	for i, r := range d.Roles {
		x.rolesOf[r.UserID] = append(x.rolesOf[r.UserID], i)
		x.listed[r.CustomerID] = append(x.listed[r.CustomerID], r.UserID)
	}
	for _, l := range d.StaleListings {
		x.listed[l.CustomerID] = append(x.listed[l.CustomerID], l.UserID)
	}
	for c, ids := range x.listed {
		slices.Sort(ids)
		x.listed[c] = slices.Compact(ids)
	}
	s.idx = x
	return x
}

// NewServer starts a simulator serving ds (which it owns from now on; pass
// ds.Clone() to keep a copy).
func NewServer(ds *Dataset, opts ...Option) *Server {
	if ds == nil {
		ds = &Dataset{}
	}
	s := &Server{
		closed:      make(chan struct{}),
		accessTTL:   time.Hour,
		ds:          ds,
		calls:       map[string]int{},
		faults:      map[faultKey]*faultState{},
		access:      map[string]issuedAccess{},
		refresh:     map[string]*refreshState{},
		codes:       map[string]*authCode{},
		devices:     map[string]*deviceAuth{},
		deviceFlow:  DeviceFlow{Interval: 5, ExpiresIn: 900},
		userFaults:  map[userFaultKey]UserFault{},
		revoked:     map[int64]bool{},
		unreachable: map[int64]bool{},
		hidden:      map[int64]bool{},
		linkDenied:  map[int64]bool{},
	}
	s.def = s.newCredential()
	s.creds = []*Credential{s.def}
	for _, o := range opts {
		o(s)
	}
	s.reindex()
	s.def.latestRefresh = s.newRefreshLocked(s.def)
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth2/v2.0/token", s.handleToken)
	mux.HandleFunc("/oauth2/v2.0/authorize", s.handleAuthorize)
	mux.HandleFunc("/oauth2/v2.0/devicecode", s.handleDeviceCode)
	mux.HandleFunc("/devicelogin", s.handleDeviceLogin)
	mux.HandleFunc(basePath+"/", s.handleAPI)
	s.mux = mux
	s.ts = httptest.NewServer(mux)
	return s
}

// Transport answers requests for the server's URLs in-process: the handler
// runs on the caller's goroutine, with no network in between. A test in a
// testing/synctest bubble that gives its client this transport (as
// extract.Config.HTTPClient) runs the simulator on the bubble's fake
// clock: waits the protocol asks for (a device code's poll interval, a
// Retry-After) pass at once, and what the simulator measures of them
// (polls too early) is exact. The server must be created outside the
// bubble (its listener is not durably blocked); Latency and Hang faults
// then wait on the bubble's clock too.
func (s *Server) Transport() http.RoundTripper { return handlerTransport{s.mux} }

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if r.Body != nil {
		_ = r.Body.Close()
	}
	res := rec.Result()
	res.Request = r
	return res, nil
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

// DeveloperToken is the default credential's developer token.
func (s *Server) DeveloperToken() string { return s.def.devToken }

// ClientID is the default credential's OAuth client id.
func (s *Server) ClientID() string { return s.def.clientID }

// ClientSecret is the default credential's OAuth client secret (""
// with WithPublicClient).
func (s *Server) ClientSecret() string { return s.def.clientSecret }

// RefreshToken returns the default credential's most recently issued
// refresh token: the seed until a grant is made, then the latest rotated
// one. It is valid unless a token fault is set.
func (s *Server) RefreshToken() string { return s.def.RefreshToken() }

// IssueRefreshToken mints an additional valid refresh token of the default
// credential.
func (s *Server) IssueRefreshToken() string { return s.def.IssueRefreshToken() }

// Credential is one sign-in to the simulated API: a developer token, an
// OAuth client (id and secret), its refresh and access tokens, a signed-in
// user (the principal) and the customers it reaches. Several credentials
// serve the same data, as several logins of one agency do.
type Credential struct {
	s                                *Server
	devToken, clientID, clientSecret string
	// principal is the signed-in user; 0 on the default credential:
	// Dataset.PrincipalID.
	principal int64
	// customers are the customers it can reach (among the reachable ones
	// of the data); nil on the default credential: every one.
	customers map[int64]bool
	// latestRefresh is guarded by s.mu.
	latestRefresh string
}

// AddCredential adds a credential over the same data, with its own
// developer token, OAuth client id, secret and refresh tokens, whose
// signed-in user is principal and which reaches only customers (those of
// them the data has and that are not SetUnreachable): calls for any other
// customer answer HTTP 400 code 106, GetCustomersInfo lists only its
// customers, and GetUser returns only the roles in them (answering 106
// when the user holds none there). GetUser without a user id answers
// principal, who should hold a role in its customers (AddUser). Access
// tokens remember the credential they were issued to; the default
// credential (Server.ClientID…) is unchanged.
func (s *Server) AddCredential(principal int64, customers []int64) *Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.newCredential()
	c.principal = principal
	c.customers = make(map[int64]bool, len(customers))
	for _, id := range customers {
		c.customers[id] = true
	}
	c.latestRefresh = s.newRefreshLocked(c)
	s.creds = append(s.creds, c)
	return c
}

func (s *Server) newCredential() *Credential {
	return &Credential{s: s, devToken: "DEVTOKEN-" + randHex(6), clientID: "00000000-sim-" + randHex(4),
		clientSecret: "secret~" + randHex(10)}
}

// DeveloperToken is the credential's developer token.
func (c *Credential) DeveloperToken() string { return c.devToken }

// ClientID is the credential's OAuth client id.
func (c *Credential) ClientID() string { return c.clientID }

// ClientSecret is the credential's OAuth client secret.
func (c *Credential) ClientSecret() string { return c.clientSecret }

// RefreshToken returns the credential's most recently issued refresh
// token.
func (c *Credential) RefreshToken() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.latestRefresh
}

// IssueRefreshToken mints an additional valid refresh token of the
// credential.
func (c *Credential) IssueRefreshToken() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	t := c.s.newRefreshLocked(c)
	c.latestRefresh = t
	return t
}

// Principal returns the credential's signed-in user id.
func (c *Credential) Principal() int64 {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.principalLocked(c)
}

// issuedAccess is an issued access token.
type issuedAccess struct {
	exp  time.Time
	cred *Credential
}

// refreshState is an issued refresh token.
type refreshState struct {
	used bool // redeemed (superseded)
	cred *Credential
}

// credentialLocked returns the credential whose OAuth client id is id.
func (s *Server) credentialLocked(clientID string) *Credential {
	for _, c := range s.creds {
		if c.clientID == clientID {
			return c
		}
	}
	return nil
}

// reachableLocked reports whether credential c reaches customer id.
func (s *Server) reachableLocked(c *Credential, id int64) bool {
	return s.reachable[id] && (c.customers == nil || c.customers[id])
}

// principalLocked returns credential c's signed-in user.
func (s *Server) principalLocked(c *Credential) int64 {
	if c.principal != 0 {
		return c.principal
	}
	return s.ds.PrincipalID()
}

// IssueAuthCode mints a one-time authorization code for the
// authorization_code grant.
func (s *Server) IssueAuthCode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := "code-" + randHex(12)
	s.codes[c] = &authCode{unused: true}
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
	for t, a := range s.access {
		a.exp = past
		s.access[t] = a
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
	defer func() { s.idx = nil }()
	if u.HomeCustomerID == 0 {
		u.HomeCustomerID = customerID
	}
	u.CustomerID = 0
	s.ds.StaleListings = slices.DeleteFunc(s.ds.StaleListings, func(l StaleListing) bool { return l.UserID == u.ID })
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
	defer func() { s.idx = nil }()
	if i := s.userIndexLocked(userID); i >= 0 {
		change(&s.ds.Users[i])
	}
}

// RemoveUser removes the user from customerID: its roles there go, so the
// customer no longer lists it. A user left without roles is deleted.
func (s *Server) RemoveUser(customerID, userID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.idx = nil }()
	s.ds.Roles = slices.DeleteFunc(s.ds.Roles, func(r msads.Role) bool { return r.UserID == userID && r.CustomerID == customerID })
	s.pruneUserLocked(userID)
}

// SetRoles replaces all of a user's roles (UserID is set on each). With no
// roles the user is deleted.
func (s *Server) SetRoles(userID int64, roles []msads.Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.idx = nil }()
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
	defer func() { s.idx = nil }()
	i := slices.IndexFunc(s.ds.Invitations, func(inv msads.Invitation) bool { return inv.ID == invitationID })
	if i < 0 {
		return 0
	}
	inv := s.ds.Invitations[i]
	s.ds.Invitations = slices.Delete(s.ds.Invitations, i, i+1)
	// A new user id is never one a deleted user had.
	id := max(userBase+5_000_000, s.lastUserID+1)
	for _, u := range s.ds.Users {
		id = max(id, u.ID+1)
	}
	s.lastUserID = id
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
		// Like the service, never reuse an id, even of an invitation
		// accepted since.
		inv.ID = max(invitationBase+100_000, s.lastInvitationID+1)
		for _, x := range s.ds.Invitations {
			inv.ID = max(inv.ID, x.ID+1)
		}
	}
	s.lastInvitationID = max(s.lastInvitationID, inv.ID)
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
	defer func() { s.idx = nil }()
	s.ds.Customers = append(s.ds.Customers, c)
	for _, a := range accounts {
		a.CustomerID = c.ID
		s.ds.Accounts = append(s.ds.Accounts, a)
	}
	s.reindex()
}

func (s *Server) userIndexLocked(id int64) int {
	if i, ok := s.indexLocked().userPos[id]; ok {
		return i
	}
	return -1
}

func (s *Server) pruneUserLocked(userID int64) {
	s.idx = nil
	if !slices.ContainsFunc(s.ds.Roles, func(r msads.Role) bool { return r.UserID == userID }) {
		s.ds.Users = slices.DeleteFunc(s.ds.Users, func(u msads.User) bool { return u.ID == userID })
	}
}

func (s *Server) reindex() {
	s.reachable = map[int64]bool{}
	for _, c := range s.ds.Customers {
		s.reachable[c.ID] = !s.unreachable[c.ID]
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) newRefreshLocked(c *Credential) string {
	s.seq++
	t := fmt.Sprintf("M.R3_sim.%d.%s", s.seq, randHex(16))
	s.refresh[t] = &refreshState{cred: c}
	return t
}

func (s *Server) newAccessLocked(c *Credential) string {
	s.seq++
	t := fmt.Sprintf("EwB.sim.%d.%s", s.seq, randHex(16))
	s.access[t] = issuedAccess{exp: time.Now().Add(s.accessTTL), cred: c}
	return t
}

func (s *Server) trackingID() string {
	return randHex(4) + "-" + randHex(2) + "-" + randHex(2) + "-" + randHex(2) + "-" + randHex(6)
}

// DeleteUserKeepListing deletes the user (its User object and every role)
// while customerID's GetUsersInfo still lists it: GetUser answers HTTP 400
// code 1001 UserNotFound. It is the user deleted between the listing and
// the read. The stale listing is data (Dataset.StaleListings); AddUser of
// the same id ends it.
func (s *Server) DeleteUserKeepListing(customerID, userID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.idx = nil }()
	l := StaleListing{CustomerID: customerID, UserID: userID, Status: "Active"}
	if i := s.userIndexLocked(userID); i >= 0 {
		l.UserName, l.Status = s.ds.Users[i].UserName, s.ds.Users[i].LifecycleStatus
	}
	s.ds.StaleListings = slices.DeleteFunc(s.ds.StaleListings, func(x StaleListing) bool {
		return x.CustomerID == customerID && x.UserID == userID
	})
	s.ds.StaleListings = append(s.ds.StaleListings, l)
	s.ds.Roles = slices.DeleteFunc(s.ds.Roles, func(r msads.Role) bool { return r.UserID == userID })
	s.ds.Users = slices.DeleteFunc(s.ds.Users, func(u msads.User) bool { return u.ID == userID })
}

// RevokeCustomerAccess removes the credential's access to customerID: every
// API call in that customer's context (the CustomerId header, or the body's
// CustomerId or predicate value) answers HTTP 401 code 105, even with a
// fresh access token. Other customers keep working; GetCustomersInfo still
// lists it.
func (s *Server) RevokeCustomerAccess(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[customerID] = true
}

// RestoreCustomerAccess undoes RevokeCustomerAccess.
func (s *Server) RestoreCustomerAccess(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.revoked, customerID)
}

// SetUnreachable makes a customer of the data unreachable by the
// credential: calls for it answer HTTP 400 code 106, GetCustomersInfo omits
// it and GetUser omits roles in it. (Customers outside Dataset.Customers
// are always unreachable.)
func (s *Server) SetUnreachable(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unreachable[customerID] = true
	s.reindex()
}

// SetReachable undoes SetUnreachable.
func (s *Server) SetReachable(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.unreachable, customerID)
	s.reindex()
}

// HideFromCustomersInfo keeps customerID reachable by every call while
// GetCustomersInfo omits it: the real GetCustomersInfo need not list every
// customer the credential reaches through its roles.
func (s *Server) HideFromCustomersInfo(customerID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hidden[customerID] = true
}

// SetCustomersInfoCap makes GetCustomersInfo return at most n customers
// whatever its TopN says (0 = no cap).
func (s *Server) SetCustomersInfoCap(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.customersCap = max(n, 0)
}

// Principal returns the default credential's signed-in user
// (Dataset.Principal, else the first user): the user GetUser answers for a
// null or omitted UserId. It returns 0 and "" when there is none.
func (s *Server) Principal() (id int64, userName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id = s.ds.PrincipalID()
	if i := s.userIndexLocked(id); i >= 0 {
		userName = s.ds.Users[i].UserName
	}
	return id, userName
}
