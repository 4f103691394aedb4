package msadstest

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TokenError makes token endpoint grants fail the way the Microsoft
// identity platform does (see SetTokenError).
type TokenError struct {
	// Error is the OAuth error ("invalid_grant", "invalid_client",
	// "interaction_required", "invalid_scope", "temporarily_unavailable",
	// …); "" derives it from Code (invalid_grant when unknown).
	Error string
	// Code is the AADSTS number (70008, 700082, 50173, 54005, 70000,
	// 7000215, 7000222, 700016, 700025, 50076, 50079, 65001, 70011, …);
	// 0 derives a typical one from Error.
	Code int
	// Status is the HTTP status; 0 = 400, 401 for invalid_client, 503 for
	// temporarily_unavailable.
	Status int
	// Times > 0 limits the error to the next Times grants; 0 = every one.
	Times int
	// Canned, when set, is answered verbatim instead (an HTML 503 page, a
	// non-JSON body…).
	Canned *Canned
}

// errorOfCode is the OAuth error Microsoft sends with each AADSTS code.
var errorOfCode = map[int]string{
	70008: "invalid_grant", 700082: "invalid_grant", 50173: "invalid_grant", 54005: "invalid_grant", 70000: "invalid_grant",
	7000215: "invalid_client", 7000222: "invalid_client", 700016: "invalid_client", 700025: "invalid_client", 7000218: "invalid_client",
	50076: "interaction_required", 50079: "interaction_required", 65001: "interaction_required",
	70011: "invalid_scope", 90033: "temporarily_unavailable", 50011: "invalid_request", 500113: "invalid_request",
	900144: "invalid_request", 900561: "invalid_request", 70003: "unsupported_grant_type",
}

// codeOfError is the typical AADSTS code of each OAuth error.
var codeOfError = map[string]int{
	"invalid_grant": 70008, "invalid_client": 7000215, "interaction_required": 50076, "invalid_scope": 70011,
	"temporarily_unavailable": 90033, "invalid_request": 900144, "unauthorized_client": 700016, "unsupported_grant_type": 70003,
}

// tokenDescription is the error_description text (before the trace lines)
// of an AADSTS code.
func (s *Server) tokenDescription(code int) string {
	issued := time.Now().UTC().Add(-91 * 24 * time.Hour).Format("2006-01-02T15:04:05.0000000Z")
	app := s.def.clientID
	var d string
	switch code {
	case 70008:
		d = "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."
	case 700082:
		d = "The refresh token has expired due to inactivity. The token was issued on " + issued + " and was inactive for 90.00:00:00."
	case 50173:
		d = "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '" +
			issued + "' and the TokensValidFrom date (before which tokens are not valid) for this user is '" + time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04:05.0000000Z") + "'."
	case 54005:
		d = "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."
	case 70000:
		d = "The request was denied because one or more scopes requested are unauthorized or expired. The user must first sign in and grant the client application access to the requested scope."
	case 7000215:
		d = "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '" + app + "'."
	case 7000218:
		d = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
	case 7000222:
		d = "The provided client secret keys for app '" + app + "' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
	case 700016:
		d = "Application with identifier '" + app + "' was not found in the directory 'Microsoft Accounts'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
	case 700025:
		d = "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."
	case 50076:
		d = "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'd42ffc93-c136-491d-b4fd-6f18168c68fd'."
	case 50079:
		d = "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access 'd42ffc93-c136-491d-b4fd-6f18168c68fd'."
	case 65001:
		d = "The user or administrator has not consented to use the application with ID '" + app + "' named 'syncer'. Send an interactive authorization request for this user and resource."
	case 70011:
		d = "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope https://ads.microsoft.com/msads.manage offline_access is not valid."
	case 90033:
		d = "A transient error has occurred. Please try again."
	case 70003:
		d = "The app requested an unsupported grant type."
	case 900144:
		d = "The request body must contain the following parameter: 'grant_type'."
	default:
		d = "The request could not be completed."
	}
	return fmt.Sprintf("AADSTS%d: %s", code, d)
}

func guid() string {
	return randHex(4) + "-" + randHex(2) + "-" + randHex(2) + "-" + randHex(2) + "-" + randHex(6)
}

// writeTokenError answers an identity platform error body:
// {"error","error_description" (with Trace ID, Correlation ID and Timestamp
// lines),"error_codes","timestamp","trace_id","correlation_id","error_uri"}.
// desc "" uses the code's usual description.
func (s *Server) writeTokenError(w http.ResponseWriter, status int, errName string, code int, desc string) {
	if desc == "" {
		desc = s.tokenDescription(code)
	}
	trace, corr := guid(), guid()
	ts := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	writeJSON(w, status, map[string]any{
		"error":             errName,
		"error_description": desc + "\r\nTrace ID: " + trace + "\r\nCorrelation ID: " + corr + "\r\nTimestamp: " + ts,
		"error_codes":       []int{code},
		"timestamp":         ts,
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         "https://login.microsoftonline.com/error?code=" + strconv.Itoa(code),
	})
}

// SetTokenError makes token grants fail with e (every grant, or the next
// e.Times). The zero TokenError clears it.
func (s *Server) SetTokenError(e TokenError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e == (TokenError{}) {
		s.tokenErr = nil
		return
	}
	e.Canned = e.Canned.clone()
	s.tokenErr = &e
}

// SetTokenFault(true) is SetTokenError(TokenError{Error: "invalid_grant",
// Code: 70008}): every grant answers invalid_grant while set. false clears
// the token error.
func (s *Server) SetTokenFault(invalidGrant bool) {
	if invalidGrant {
		s.SetTokenError(TokenError{Error: "invalid_grant", Code: 70008})
	} else {
		s.SetTokenError(TokenError{})
	}
}

// takeTokenErrorLocked returns the token error to answer, counting it down.
func (s *Server) takeTokenErrorLocked() (TokenError, bool) {
	if s.tokenErr == nil {
		return TokenError{}, false
	}
	e := *s.tokenErr
	if s.tokenErr.Times > 0 {
		s.tokenErr.Times--
		if s.tokenErr.Times == 0 {
			s.tokenErr = nil
		}
	}
	if e.Canned == nil {
		if e.Error == "" {
			e.Error = errorOfCode[e.Code]
			if e.Error == "" {
				e.Error = "invalid_grant"
			}
		}
		if e.Code == 0 {
			e.Code = codeOfError[e.Error]
			if e.Code == 0 {
				e.Code = 70000
			}
		}
		if e.Status == 0 {
			switch e.Error {
			case "invalid_client":
				e.Status = http.StatusUnauthorized
			case "temporarily_unavailable":
				e.Status = http.StatusServiceUnavailable
			default:
				e.Status = http.StatusBadRequest
			}
		}
	}
	return e, true
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ru, err := url.Parse(q.Get("redirect_uri"))
	s.mu.Lock()
	known := s.credentialLocked(q.Get("client_id")) != nil
	s.mu.Unlock()
	if !known || err != nil || ru.Scheme == "" || q.Get("response_type") != "code" {
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
		s.writeTokenError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "AADSTS900561: The endpoint only accepts POST requests. Received a "+r.Method+" request.")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		s.writeTokenError(w, http.StatusBadRequest, "invalid_request", 900144, "")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.writeTokenError(w, http.StatusBadRequest, "invalid_request", 900144, "")
		return
	}
	s.mu.Lock()
	te, ok := s.takeTokenErrorLocked()
	s.mu.Unlock()
	if ok {
		if te.Canned != nil {
			te.Canned.write(w)
			return
		}
		s.writeTokenError(w, te.Status, te.Error, te.Code, "")
		return
	}
	f := r.PostForm
	s.mu.Lock()
	cred := s.credentialLocked(f.Get("client_id"))
	s.mu.Unlock()
	if cred == nil {
		s.writeTokenError(w, http.StatusUnauthorized, "invalid_client", 700016, "")
		return
	}
	switch {
	case cred.clientSecret == "" && f.Has("client_secret"):
		s.writeTokenError(w, http.StatusUnauthorized, "invalid_client", 700025, "")
		return
	case cred.clientSecret != "" && !f.Has("client_secret"):
		s.writeTokenError(w, http.StatusUnauthorized, "invalid_client", 7000218, "")
		return
	case cred.clientSecret != "" && f.Get("client_secret") != cred.clientSecret:
		s.writeTokenError(w, http.StatusUnauthorized, "invalid_client", 7000215, "")
		return
	}
	if !strings.Contains(f.Get("scope"), "msads.manage") {
		s.writeTokenError(w, http.StatusBadRequest, "invalid_scope", 70011, "")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f.Get("grant_type") {
	case "refresh_token":
		rt := f.Get("refresh_token")
		st, known := s.refresh[rt]
		// A refresh token is bound to the client it was issued to.
		if !known || st.cred != cred || (st.used && s.rejectSuperseded) {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 70000,
				"AADSTS70000: The provided value for the 'refresh_token' is not valid. The refresh token has expired, been revoked or superseded.")
			return
		}
		st.used = true
	case "authorization_code":
		code := f.Get("code")
		unused, issued := s.codes[code]
		if issued && !unused {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 54005, "")
			return
		}
		if code != DemoAuthCode && !issued {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 70000, "AADSTS70000: The provided value for the 'code' parameter is not valid.")
			return
		}
		if f.Get("redirect_uri") == "" {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_request", 900144, "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.")
			return
		}
		if issued {
			s.codes[code] = false // redeemed: a second use answers 54005
		}
	default:
		s.writeTokenError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "")
		return
	}
	newRT := s.newRefreshLocked(cred)
	cred.latestRefresh = newRT
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "scope": "https://ads.microsoft.com/msads.manage",
		"expires_in": int(s.accessTTL / time.Second), "ext_expires_in": int(s.accessTTL / time.Second),
		"access_token": s.newAccessLocked(cred), "refresh_token": newRT,
	})
}
