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
	// ClassTokenExpired is code 109 AuthenticationTokenExpired (or a bare
	// HTTP 401): the access token is refreshed once and the call retried.
	ClassTokenExpired
)

// String returns the class name as used in metrics and logs.
func (c Class) String() string {
	switch c {
	case ClassThrottled:
		return "throttled"
	case ClassTransient:
		return "transient"
	case ClassTokenExpired:
		return "token_expired"
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
)

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
	case has(func(c int) bool { return c == 109 }):
		return ClassTokenExpired
	}
	if len(codes) > 0 && !has(func(c int) bool { return !transientCodes[c] }) {
		return ClassTransient // only codes 0 and 833
	}
	if len(codes) > 0 {
		return ClassPermanent // at least one permanent code, whatever the status
	}
	switch {
	case status >= 500:
		return ClassTransient // no codes, or malformed body
	case status == 401:
		return ClassTokenExpired // bare 401: refresh once, like the .NET SDK
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
