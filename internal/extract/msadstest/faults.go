package msadstest

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// Fault shapes (Fault.Shape): which fault object a code fault answers.
const (
	// ShapeAdApiFaultDetail is {"Type":"AdApiFaultDetail","Errors":[…]}, the default.
	ShapeAdApiFaultDetail = "AdApiFaultDetail"
	// ShapeApiFault is {"Type":"ApiFault","OperationErrors":[…]}.
	ShapeApiFault = "ApiFault"
	// ShapeApiFaultBatch is an ApiFault whose errors are in BatchErrors,
	// with an empty OperationErrors.
	ShapeApiFaultBatch = "ApiFaultBatch"
)

// Fault makes calls of one operation (or AnyOp) misbehave. Counted faults
// ("next N calls") count down per matching call, in the order Hang,
// Status5xxCode0, Malformed, Throttle, Response, Code, after authentication;
// Burst, Latency and Hang act before authentication.
type Fault struct {
	// CustomerID limits the fault to calls for that customer (the body's
	// CustomerId or predicate value, else the CustomerId header); 0 = any.
	CustomerID int64
	// Latency delays every matching call.
	Latency time.Duration
	// Burst: the next N calls are held until all N have arrived, then go
	// on together (after Latency): N requests in flight at once, whatever
	// the client's goroutines were delayed by.
	Burst int
	// RateLimitPerSec is a server-side limit: calls beyond it answer 117.
	RateLimitPerSec float64
	// Throttle: the next N calls answer 117 CallRateExceeded.
	Throttle int
	// ThrottleStatus is the HTTP status of 117 answers (default 429).
	ThrottleStatus int
	// RetryAfter, when set, is sent (in whole seconds, rounded up) as the
	// Retry-After header of 117 answers.
	RetryAfter time.Duration
	// RetryAfterDate sends Retry-After as an HTTP-date (http.TimeFormat),
	// now + RetryAfter (60s when RetryAfter is 0), instead of seconds.
	RetryAfterDate bool
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
	// Codes, when not empty, is the full list of errors of a code fault
	// (Code is then ignored): several errors in one fault, the first
	// deciding the HTTP status (and the class a client should pick).
	Codes []int
	// Shape is the fault object of code, 5xx and throttling answers: ""
	// or ShapeAdApiFaultDetail, ShapeApiFault, ShapeApiFaultBatch.
	Shape string
	// Response, when set, answers exactly that canned response (after
	// authentication) on every matching call, or on the next
	// Response.Times calls.
	Response *Canned
}

// acts reports whether the fault does anything (a zero Fault clears).
func (f *Fault) acts() bool {
	return f.Latency != 0 || f.Burst != 0 || f.RateLimitPerSec != 0 || f.Throttle != 0 || f.Status5xxCode0 != 0 || f.Malformed != 0 ||
		f.Hang != 0 || f.Code != 0 || len(f.Codes) != 0 || f.Response != nil
}

// codes returns the error codes of a code fault, or nil.
func (f *Fault) codes() []int {
	if len(f.Codes) > 0 {
		return f.Codes
	}
	if f.Code != 0 {
		return []int{f.Code}
	}
	return nil
}

// Canned is a response answered verbatim: any status, content type, body
// and headers (no TrackingId unless in Header). Times > 0 limits it to the
// next Times matching calls; 0 = every call.
type Canned struct {
	Status      int // default 200
	ContentType string
	Body        string
	Header      map[string]string
	Times       int
}

func (c *Canned) clone() *Canned {
	if c == nil {
		return nil
	}
	cp := *c
	if c.Header != nil {
		cp.Header = make(map[string]string, len(c.Header))
		for k, v := range c.Header {
			cp.Header[k] = v
		}
	}
	return &cp
}

func (c *Canned) write(w http.ResponseWriter) {
	for k, v := range c.Header {
		w.Header().Set(k, v)
	}
	if c.ContentType != "" {
		w.Header().Set("Content-Type", c.ContentType)
	} else if w.Header().Get("Content-Type") == "" {
		// Keep net/http from sniffing one.
		w.Header()["Content-Type"] = nil
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(c.Body)))
	st := c.Status
	if st == 0 {
		st = http.StatusOK
	}
	w.WriteHeader(st)
	_, _ = w.Write([]byte(c.Body))
}

// EmptyObject is HTTP 200 with the JSON body {}: no result field at all.
func EmptyObject() *Canned {
	return &Canned{Status: http.StatusOK, ContentType: "application/json; charset=utf-8", Body: "{}"}
}

// HTMLPage is an HTML error page with that status, as a load balancer, IIS
// or Azure Front Door sends it instead of a JSON fault.
func HTMLPage(status int) *Canned {
	text := http.StatusText(status)
	body := fmt.Sprintf(`<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>%d - %s</title>
</head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content">
 <div class="content-container"><fieldset>
  <h2>%d - %s</h2>
  <h3>The service is unavailable or the gateway could not reach it. Please try again later.</h3>
  <p>Ref A: 3F2504E04F8911D39A0C0305E82C3301 Ref B: AMS231020614011 Ref C: 2026-11-30T10:20:30Z</p>
 </fieldset></div>
</div>
</body>
</html>
`, status, text, status, text)
	return &Canned{Status: status, ContentType: "text/html", Body: body}
}

// EmptyBody is that status with a JSON content type and an empty body.
func EmptyBody(status int) *Canned {
	return &Canned{Status: status, ContentType: "application/json; charset=utf-8"}
}

// StatusOnly is that status with no body and no content type (e.g. 401,
// 408, 502, 504 from a proxy).
func StatusOnly(status int) *Canned { return &Canned{Status: status} }

// resultFields are the result fields of each operation.
var resultFields = map[string][]string{
	OpGetUsersInfo:          {"UsersInfo"},
	OpGetUser:               {"User", "CustomerRoles"},
	OpSearchUserInvitations: {"UserInvitations"},
	OpGetCustomersInfo:      {"CustomersInfo"},
	OpGetAccountsInfo:       {"AccountsInfo"},
}

// NullList is HTTP 200 with the operation's result field(s) explicitly
// null: {"UsersInfo": null}, {"User": null, "CustomerRoles": null},
// {"UserInvitations": null}, {"CustomersInfo": null}, {"AccountsInfo": null}.
// It panics for another op.
func NullList(op string) *Canned {
	fields, ok := resultFields[op]
	if !ok {
		panic("msadstest.NullList: no result field for operation " + strconv.Quote(op))
	}
	body := "{"
	for i, f := range fields {
		if i > 0 {
			body += ", "
		}
		body += strconv.Quote(f) + ": null"
	}
	return &Canned{Status: http.StatusOK, ContentType: "application/json; charset=utf-8", Body: body + "}"}
}

type faultKey struct {
	op       string
	customer int64
}

type faultState struct {
	Fault
	// burst is closed when the Burst-th call arrived.
	burst        chan struct{}
	lim          *rate.Limiter
	codeUsedUp   bool
	cannedUsedUp bool
}

// UserFault makes GetUser of one user misbehave (see SetUserFault and
// Dataset.UserFaults).
type UserFault struct {
	// Code, when not 0, answers that fault code with HTTP Status (default
	// 400; 401 for 105 and 109).
	Code   int
	Status int
	// NullUser answers HTTP 200 {"User": null, "CustomerRoles": null}.
	NullUser bool
	// Times > 0 limits the fault to the next Times calls; 0 = every call.
	Times int
}

type userFaultKey struct {
	user, customer int64
}

// Fault codes with their symbols (ErrorCode) and messages. An unknown code
// gets ErrorCode "" (the real service may send codes we do not know).
var symbols = map[int]string{
	0: "InternalError", 100: "NullRequest", 105: "InvalidCredentials", 106: "UserIsNotAuthorized", 108: "UserCompromised",
	109: "AuthenticationTokenExpired", 116: "RequestMissingHeaders", 117: "CallRateExceeded", 120: "UserLoginAccessDenied",
	122: "PersonalIdentityNotAvailable", 201: "InvalidInputParameter", 202: "InternalServiceError", 203: "NullParameter",
	210: "EntityNotExistent", 833: "ServiceTimeOut", 1001: "UserNotFound", 3030: "InvalidPredicate", 3080: "PageInfoMissing",
	3101: "OAuthTokenInvalid",
}

var messages = map[int]string{
	0:    "An internal error has occurred.",
	105:  "Authentication failed. Either supplied credentials are invalid or the account is inactive.",
	106:  "The user does not represent an authorized developer or is not authorized to access the entity.",
	108:  "We've detected suspicious activity in your Microsoft Advertising account. To help protect you, please create a new password.",
	109:  "Authentication token expired. Please renew the authentication token.",
	117:  "You have exceeded the number of calls that you are allowed to make in a given time period. Please resubmit your request after 60 seconds.",
	120:  "The credentials are not valid for the person trying to sign in. Please sign in with the person's primary sign-in credentials.",
	122:  "You must sign in to Microsoft Advertising with a work account.",
	201:  "Invalid input parameter.",
	203:  "A required parameter is null.",
	210:  "The entity does not exist.",
	833:  "The service is temporarily unavailable. Please try again later.",
	1001: "The user was not found.",
	3030: "The Predicate passed in the search is invalid.",
	3101: "The OAuth access token is invalid.",
}

func faultMessage(code int) string {
	if m, ok := messages[code]; ok {
		return m
	}
	return fmt.Sprintf("Simulated fault %d.", code)
}

// defaultStatus is the HTTP status of a code fault whose Status is 0.
func defaultStatus(code int) int {
	if code == 105 || code == 109 {
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

// ---- Server methods ----

// SetFault sets (replacing) the fault of op (or AnyOp) for f.CustomerID.
// A Fault that does nothing (zero Latency, RateLimitPerSec, counters, Code,
// Codes and Response) clears it.
func (s *Server) SetFault(op string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := faultKey{op, f.CustomerID}
	if !f.acts() {
		delete(s.faults, k)
		return
	}
	f.Codes = slices.Clone(f.Codes)
	f.Response = f.Response.clone()
	st := &faultState{Fault: f, burst: make(chan struct{})}
	if f.RateLimitPerSec > 0 {
		st.lim = rate.NewLimiter(rate.Limit(f.RateLimitPerSec), max(1, int(f.RateLimitPerSec/10)))
	}
	s.faults[k] = st
}

// ClearFaults removes every fault set by SetFault, SetUserFault,
// SetTokenError and SetTokenFault. Data (Dataset.UserFaults, stale
// listings), revoked access and customer visibility stay.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[faultKey]*faultState{}
	s.userFaults = map[userFaultKey]UserFault{}
	s.tokenErr = nil
}

// SetUserFault makes GetUser of userID misbehave in the context of
// customerID (the CustomerId request header; 0 = every context). A zero
// UserFault clears it. Faults set here win over Dataset.UserFaults.
func (s *Server) SetUserFault(userID, customerID int64, f UserFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := userFaultKey{userID, customerID}
	if f == (UserFault{}) {
		delete(s.userFaults, k)
		return
	}
	s.userFaults[k] = f
}

// takeUserFaultLocked returns the user fault for GetUser of uid in the
// header context ctx, counting it down.
func (s *Server) takeUserFaultLocked(uid, ctx int64) (UserFault, bool) {
	take := func(f UserFault, set func(UserFault), del func()) (UserFault, bool) {
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				del()
			} else {
				set(f)
			}
		}
		return f, true
	}
	keys := []userFaultKey{{uid, 0}}
	if ctx != 0 {
		keys = []userFaultKey{{uid, ctx}, {uid, 0}}
	}
	for _, k := range keys {
		if f, ok := s.userFaults[k]; ok {
			return take(f, func(f UserFault) { s.userFaults[k] = f }, func() { delete(s.userFaults, k) })
		}
	}
	if f, ok := s.ds.UserFaults[uid]; ok && f != (UserFault{}) {
		return take(f, func(f UserFault) { s.ds.UserFaults[uid] = f }, func() { delete(s.ds.UserFaults, uid) })
	}
	return UserFault{}, false
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

// joinBurst counts a call into the Burst of the first fault that still
// gathers one and returns the channel that closes when the burst is
// complete (nil: no burst).
func (s *Server) joinBurst(faults []*faultState) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if f.Burst > 0 {
			if f.Burst--; f.Burst == 0 {
				close(f.burst)
			}
			return f.burst
		}
	}
	return nil
}

// takeCounted decrements the first positive counter and returns its fault.
func (s *Server) takeCounted(faults []*faultState, field func(*faultState) *int) *faultState {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if p := field(f); *p > 0 {
			*p--
			return f
		}
	}
	return nil
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

func (s *Server) cannedFault(faults []*faultState) (*Canned, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if f.Response == nil || f.cannedUsedUp {
			continue
		}
		if f.Response.Times > 0 {
			f.Response.Times--
			f.cannedUsedUp = f.Response.Times == 0
		}
		return f.Response, true
	}
	return nil, false
}

func (s *Server) codeFault(faults []*faultState) (*faultState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		if len(f.codes()) == 0 || f.codeUsedUp {
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
