package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// ErrReauth is returned (wrapped) when the token endpoint rejects the refresh
// token with invalid_grant: it expired, was revoked, or consent was removed.
// Only a new interactive sign-in fixes it.
var ErrReauth = errors.New("refresh token expired or revoked: run `syncer auth` to sign in again")

// ErrCredentialsRejected is returned (wrapped) when the API answers 401 (code
// 105 InvalidCredentials) to every call even with a freshly issued access
// token, including the signed-in user's own GetUser: the developer token is
// wrong for the environment, or the user lost access. Every customer would
// fail the same way, so the run stops.
var ErrCredentialsRejected = errors.New("the developer token or the user's access was rejected: check microsoft_ads.developer_token " +
	"(and microsoft_ads.environment), and that the signed-in user can still open Microsoft Advertising; then run `syncer auth` if needed")

// IsRunFatal reports whether err stops the whole run: every customer of the
// credential would fail the same way (the token endpoint refused the client
// or the refresh token, the API refused the credentials themselves). A
// failure of one customer or one user is never run-fatal.
func IsRunFatal(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrReauth) || errors.Is(err, ErrCredentialsRejected) {
		return true
	}
	if te, ok := errors.AsType[*TokenError](err); ok && te.Fatal {
		return true
	}
	if _, ok := errors.AsType[*fatalError](err); ok {
		return true
	}
	if ae, ok := errors.AsType[*APIError](err); ok {
		for _, e := range ae.Errors {
			if identityCodes[e.Code] {
				return true
			}
		}
	}
	return false
}

// Class says how a failed call should be handled.
type Class int

// The error classes. See Classify.
const (
	// ClassPermanent errors are not retried: bad credentials, no access,
	// invalid input, cancelled contexts, anything unknown.
	ClassPermanent Class = iota
	// ClassThrottled is code 117 CallRateExceeded or HTTP 429: every caller of
	// the Client pauses, then the call is retried.
	ClassThrottled
	// ClassTransient is code 0 or 833, HTTP 5xx without a permanent code,
	// network errors and timeouts: retried with exponential backoff.
	ClassTransient
	// ClassAuth is any HTTP 401 (code 105 InvalidCredentials, 109
	// AuthenticationTokenExpired, or none) and code 105 or 109 under any
	// status: the access token is refreshed once (one refresh for all
	// callers) and the call retried. A second 401 with the fresh token is
	// run-fatal when the credentials themselves are refused (see
	// ErrCredentialsRejected), else the failure of that call alone.
	ClassAuth
)

// String returns the class name as used in metrics and logs.
func (c Class) String() string {
	switch c {
	case ClassThrottled:
		return "throttled"
	case ClassTransient:
		return "transient"
	case ClassAuth:
		return "unauthorized"
	case ClassPermanent:
		return "permanent"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// ErrorDetail is one error of a fault body: an AdApiError (Code, ErrorCode,
// Message) or an OperationError (Code, Message; no ErrorCode).
type ErrorDetail struct {
	Code      int
	ErrorCode string
	Message   string
}

// APIError is a failed API call: a fault body, an HTTP error without one, or
// a transport failure (HTTPStatus 0). Its message names the operation and the
// customer and never contains a token or secret.
type APIError struct {
	Op         string // operation name, e.g. "GetUser"
	CustomerID int64  // 0 when the call has no customer
	HTTPStatus int    // 0 when no response was received
	TrackingID string // from the fault body or the TrackingId response header
	Errors     []ErrorDetail
	Class      Class
	// Err is the underlying cause when there is one (network error, decode
	// error, token endpoint failure). Its text is scrubbed of secrets.
	Err error
	// Malformed is set for a 2xx response whose body is not the operation's
	// answer (cut, not JSON, an HTML page, the result field missing). It is
	// retried a few times (ClassTransient), never read as an empty list.
	Malformed bool
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.CustomerID != 0 {
		fmt.Fprintf(&b, " (customer %d)", e.CustomerID)
	}
	b.WriteString(": ")
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, "HTTP %d", e.HTTPStatus)
	} else {
		b.WriteString("no response")
	}
	for i, d := range e.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "code %d", d.Code)
		if d.ErrorCode != "" {
			b.WriteString(" " + d.ErrorCode)
		}
		if d.Message != "" {
			b.WriteString(": " + d.Message)
		}
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.TrackingID != "" {
		b.WriteString(" (tracking id " + e.TrackingID + ")")
	}
	fmt.Fprintf(&b, " [%s]", e.Class)
	return b.String()
}

func (e *APIError) Unwrap() error { return e.Err }

// HasCode reports whether the fault carries the given error code.
func (e *APIError) HasCode(code int) bool {
	for _, d := range e.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// Classify returns the class of any error returned by this package or met
// while calling the API. *APIError carries its own class; ErrReauth and
// context cancellation or deadline are permanent (never retried); network
// errors and timeouts of an HTTP round trip (*url.Error, *net.OpError, other
// net.Error values) are transient; anything else is permanent.
func Classify(err error) Class {
	if err == nil {
		return ClassPermanent
	}
	if ae, ok := errors.AsType[*APIError](err); ok {
		return ae.Class
	}
	if te, ok := errors.AsType[*TokenError](err); ok {
		return te.Class
	}
	if errors.Is(err, ErrReauth) || errors.Is(err, context.Canceled) {
		return ClassPermanent
	}
	if _, ok := errors.AsType[*url.Error](err); ok {
		return ClassTransient // includes http.Client timeouts
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return ClassTransient
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ClassPermanent // the caller's deadline, not a network timeout
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return ClassTransient
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) {
		return ClassTransient
	}
	return ClassPermanent
}

// Codes classified by the API reference (msads-api.md §6.3).
var (
	transientCodes = map[int]bool{0: true, 833: true}
	authCodes      = map[int]bool{105: true, 109: true}
	// identityCodes are about the signed-in identity itself: OAuthTokenInvalid
	// (wrong scope), compromised user, consolidated login and identity-type
	// mismatches. Every customer would fail the same way.
	identityCodes = map[int]bool{3101: true, 108: true, 120: true, 122: true, 123: true, 124: true, 125: true, 126: true}
)

// FirstCode returns the first fault code and its symbol ("106
// UserIsNotAuthorized"), or the HTTP status when the fault has no code.
func (e *APIError) FirstCode() string {
	if len(e.Errors) > 0 {
		d := e.Errors[0]
		if d.ErrorCode != "" {
			return fmt.Sprintf("%d %s", d.Code, d.ErrorCode)
		}
		return fmt.Sprintf("%d", d.Code)
	}
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("HTTP %d", e.HTTPStatus)
	}
	return "no response"
}

// classifyResponse classifies a non-2xx response from its status and the
// fault codes of its body (none when the body is not a fault: then a 5xx is
// transient and a 4xx permanent).
func classifyResponse(status int, codes []int) Class {
	has := func(want func(int) bool) bool {
		for _, c := range codes {
			if want(c) {
				return true
			}
		}
		return false
	}
	switch {
	case status == 429 || has(func(c int) bool { return c == 117 }):
		return ClassThrottled
	case has(func(c int) bool { return identityCodes[c] }):
		return ClassPermanent // no new access token mends these
	case status == 401 || has(func(c int) bool { return authCodes[c] }):
		return ClassAuth
	}
	if len(codes) > 0 && !has(func(c int) bool { return !transientCodes[c] }) {
		return ClassTransient // only codes 0 and 833
	}
	if len(codes) > 0 {
		return ClassPermanent // at least one permanent code, whatever the status
	}
	if status >= 500 || status == 408 {
		return ClassTransient // no codes, or an HTML/empty body from a gateway
	}
	return ClassPermanent
}

// asAPIError returns the *APIError in err's chain, or nil.
func asAPIError(err error) *APIError {
	if err == nil {
		return nil
	}
	ae, _ := errors.AsType[*APIError](err)
	return ae
}
