package msadstest

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
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

// authCode is an issued authorization code and the sign-in it came from.
type authCode struct {
	unused      bool        // false once redeemed
	cred        *Credential // nil: any client may redeem it (IssueAuthCode)
	redirectURI string      // "" : not checked (IssueAuthCode)
	challenge   string      // PKCE code_challenge; "" when the sign-in sent none
	method      string      // "S256" or "plain"
}

// nativeClientURI is the redirect URI Microsoft suggests for native apps.
const nativeClientURI = "https://login.microsoftonline.com/common/oauth2/nativeclient"

// SetRedirectURIs sets the redirect URIs registered for the app: the
// authorize endpoint refuses any other with AADSTS50011. As Microsoft does,
// the port of an http://localhost or http://127.0.0.1 URI is not compared.
// With no argument it goes back to the default: any http://localhost or
// http://127.0.0.1 URI (any port, any path) and the nativeclient URI.
func (s *Server) SetRedirectURIs(uris ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirectURIs = slices.Clone(uris)
}

func loopbackHost(h string) bool { return h == "localhost" || h == "127.0.0.1" || h == "::1" }

// redirectRegisteredLocked reports whether ru may receive the sign-in.
func (s *Server) redirectRegisteredLocked(ru *url.URL) bool {
	if s.redirectURIs == nil {
		return (ru.Scheme == "http" && loopbackHost(ru.Hostname())) || ru.String() == nativeClientURI
	}
	for _, r := range s.redirectURIs {
		reg, err := url.Parse(r)
		if err != nil {
			continue
		}
		if reg.Scheme == "http" && loopbackHost(reg.Hostname()) {
			if ru.Scheme == reg.Scheme && ru.Hostname() == reg.Hostname() && cmpOr(ru.EscapedPath(), "/") == cmpOr(reg.EscapedPath(), "/") {
				return true
			}
			continue
		}
		if ru.String() == reg.String() {
			return true
		}
	}
	return false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// redirectError sends the browser back to ru with an OAuth error, as the
// identity platform does after a failed sign-in.
func redirectError(w http.ResponseWriter, r *http.Request, ru *url.URL, state, errName, desc string) {
	v := ru.Query()
	v.Set("error", errName)
	v.Set("error_description", desc)
	if state != "" {
		v.Set("state", state)
	}
	ru.RawQuery = v.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	cred := s.credentialLocked(q.Get("client_id"))
	s.mu.Unlock()
	if cred == nil {
		http.Error(w, "AADSTS700016: Application with identifier '"+q.Get("client_id")+"' was not found in the directory.", http.StatusBadRequest)
		return
	}
	ru, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || ru.Scheme == "" || ru.Host == "" {
		http.Error(w, "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.", http.StatusBadRequest)
		return
	}
	state := q.Get("state")
	s.mu.Lock()
	registered := s.redirectRegisteredLocked(ru)
	s.mu.Unlock()
	if !registered {
		redirectError(w, r, ru, state, "invalid_request", "AADSTS50011: The redirect URI '"+ru.String()+
			"' specified in the request does not match the redirect URIs configured for the application '"+cred.clientID+
			"'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal.")
		return
	}
	if q.Get("response_type") != "code" {
		redirectError(w, r, ru, state, "unsupported_response_type", "AADSTS700054: response_type '"+q.Get("response_type")+"' is not enabled for the application.")
		return
	}
	if !strings.Contains(q.Get("scope"), "msads.manage") {
		redirectError(w, r, ru, state, "invalid_scope", s.tokenDescription(70011))
		return
	}
	method := cmpOr(q.Get("code_challenge_method"), "plain")
	if q.Get("code_challenge") != "" && method != "S256" && method != "plain" {
		redirectError(w, r, ru, state, "invalid_request", "AADSTS501491: Invalid size of Code_Challenge parameter or unsupported code_challenge_method.")
		return
	}
	code := "code-" + randHex(12)
	s.mu.Lock()
	s.codes[code] = &authCode{unused: true, cred: cred, redirectURI: ru.String(), challenge: q.Get("code_challenge"), method: method}
	s.mu.Unlock()
	v := ru.Query()
	v.Set("code", code)
	if state != "" {
		v.Set("state", state)
	}
	ru.RawQuery = v.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

// pkceMatches reports whether verifier answers the sign-in's challenge.
func (c *authCode) pkceMatches(verifier string) bool {
	if c.method == "plain" {
		return verifier == c.challenge
	}
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:]) == c.challenge
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
	// The device code grant carries no scope: it was given at /devicecode.
	if f.Get("grant_type") != deviceGrant && !strings.Contains(f.Get("scope"), "msads.manage") {
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
		rec, issued := s.codes[code]
		if issued && !rec.unused {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 54005, "")
			return
		}
		if code != DemoAuthCode && (!issued || (rec.cred != nil && rec.cred != cred)) {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 70000, "AADSTS70000: The provided value for the 'code' parameter is not valid.")
			return
		}
		if f.Get("redirect_uri") == "" {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_request", 900144, "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.")
			return
		}
		if issued && rec.redirectURI != "" && f.Get("redirect_uri") != rec.redirectURI {
			s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 70000,
				"AADSTS70000: The provided value for the 'redirect_uri' is not valid. The value must exactly match the redirect URI used to obtain the authorization code.")
			return
		}
		if issued && rec.challenge != "" {
			switch v := f.Get("code_verifier"); {
			case v == "":
				s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 50148,
					"AADSTS50148: The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.")
				return
			case !rec.pkceMatches(v):
				s.writeTokenError(w, http.StatusBadRequest, "invalid_grant", 501481,
					"AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.")
				return
			}
		}
		if issued {
			rec.unused = false // redeemed: a second use answers 54005
		}
	case deviceGrant:
		if !s.deviceGrantLocked(w, cred, f.Get("device_code")) {
			return
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

// deviceGrant is the device code grant type (RFC 8628 §3.4).
const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code"

// DeviceFlow shapes the device authorization grant (see SetDeviceFlow).
type DeviceFlow struct {
	// Interval is the poll interval in seconds the device code endpoint
	// announces (default 5); a poll sooner than that after the previous one
	// answers slow_down and adds 5 seconds, as RFC 8628 says.
	Interval int
	// ExpiresIn is the device code's lifetime in seconds (default 900);
	// polls after it answer expired_token.
	ExpiresIn int
	// ApproveAfterPolls > 0 approves the sign-in after that many polls: they
	// answer authorization_pending and the next one gets the tokens. 0 waits
	// for ApproveDeviceCode.
	ApproveAfterPolls int
	// Decline makes the sign-in declined: polls answer
	// authorization_declined.
	Decline bool
}

// deviceAuth is one device authorization grant under way.
type deviceAuth struct {
	cred     *Credential
	userCode string
	flow     DeviceFlow
	expires  time.Time
	interval time.Duration
	lastPoll time.Time
	polls    int
	approved bool
	redeemed bool
}

// SetDeviceFlow shapes the device code grants started from now on.
func (s *Server) SetDeviceFlow(f DeviceFlow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Interval <= 0 {
		f.Interval = 5
	}
	if f.ExpiresIn <= 0 {
		f.ExpiresIn = 900
	}
	s.deviceFlow = f
}

// ApproveDeviceCode approves the sign-in of a device code grant, as the
// person entering userCode at the verification page and consenting would.
// It reports whether such a grant is under way.
func (s *Server) ApproveDeviceCode(userCode string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.userCode == userCode {
			d.approved = true
			return true
		}
	}
	return false
}

// DeviceLoginURL is the verification URI the device code endpoint sends.
func (s *Server) DeviceLoginURL() string { return s.ts.URL + "/devicelogin" }

func (s *Server) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.writeTokenError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "AADSTS900561: The endpoint only accepts POST requests. Received a "+r.Method+" request.")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.writeTokenError(w, http.StatusBadRequest, "invalid_request", 900144, "")
		return
	}
	f := r.PostForm
	s.mu.Lock()
	cred := s.credentialLocked(f.Get("client_id"))
	s.mu.Unlock()
	if cred == nil {
		s.writeTokenError(w, http.StatusBadRequest, "unauthorized_client", 700016, "")
		return
	}
	if !strings.Contains(f.Get("scope"), "msads.manage") {
		s.writeTokenError(w, http.StatusBadRequest, "invalid_scope", 70011, "")
		return
	}
	s.mu.Lock()
	flow := s.deviceFlow
	dc := "DAQABAAEAAA" + randHex(24)
	uc := strings.ToUpper(randHex(4))
	s.devices[dc] = &deviceAuth{cred: cred, userCode: uc, flow: flow, interval: time.Duration(flow.Interval) * time.Second,
		expires: time.Now().Add(time.Duration(flow.ExpiresIn) * time.Second)}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": s.DeviceLoginURL(),
		"expires_in": flow.ExpiresIn, "interval": flow.Interval,
		"message": "To sign in, use a web browser to open the page " + s.DeviceLoginURL() + " and enter the code " + uc + " to authenticate.",
	})
}

// handleDeviceLogin is the verification page: a GET shows it, a POST with
// user_code approves that sign-in.
func (s *Server) handleDeviceLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && s.ApproveDeviceCode(r.FormValue("user_code")) {
		fmt.Fprintln(w, "You have signed in to the syncer application on your device. You may now close this window.")
		return
	}
	fmt.Fprintln(w, "Enter code to allow access (POST user_code).")
}

// deviceGrantLocked answers a device_code grant's poll; it returns true
// when the grant is approved and the tokens should be issued.
func (s *Server) deviceGrantLocked(w http.ResponseWriter, cred *Credential, deviceCode string) bool {
	d := s.devices[deviceCode]
	if d == nil || d.cred != cred || d.redeemed {
		s.writeTokenError(w, http.StatusBadRequest, "bad_verification_code", 70018, "AADSTS70018: Invalid verification code.")
		return false
	}
	now := time.Now()
	d.polls++
	early := !d.lastPoll.IsZero() && now.Sub(d.lastPoll) < d.interval-100*time.Millisecond
	d.lastPoll = now
	switch {
	case now.After(d.expires):
		s.writeTokenError(w, http.StatusBadRequest, "expired_token", 70019, "AADSTS70019: Verification code expired.")
		return false
	case d.flow.Decline:
		s.writeTokenError(w, http.StatusBadRequest, "authorization_declined", 65004, "AADSTS65004: User declined to consent to access the app.")
		return false
	case early:
		d.interval += 5 * time.Second
		s.writeTokenError(w, http.StatusBadRequest, "slow_down", 70016, "AADSTS70016: OAuth 2.0 device flow error. Polling too fast: slow down.")
		return false
	}
	if d.flow.ApproveAfterPolls > 0 && d.polls > d.flow.ApproveAfterPolls {
		d.approved = true
	}
	if !d.approved {
		s.writeTokenError(w, http.StatusBadRequest, "authorization_pending", 70016, "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
		return false
	}
	d.redeemed = true
	return true
}
