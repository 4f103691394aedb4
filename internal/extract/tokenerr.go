package extract

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// TokenError is a failure of the OAuth token endpoint (Microsoft identity
// platform), classified once by its OAuth error and AADSTS code into what
// the operator must do (docs/api-notes.md has the table and its sources).
// Its text never contains a token or secret.
type TokenError struct {
	HTTPStatus  int    // 0 when no response was received
	OAuthError  string // "invalid_grant", "invalid_client", …; "" when the body had none
	AADSTS      int    // the first identity platform code, 0 when none
	Description string // first line of error_description (redacted), or what went wrong
	// Fix is one sentence saying what to change; empty for transient
	// failures.
	Fix string
	// Class is ClassTransient (retried with backoff: temporarily_unavailable,
	// 5xx, 429, non-JSON bodies, network errors) or ClassPermanent.
	Class Class
	// Fatal is set when no retry can succeed: the run stops at once.
	Fatal bool
	// Reauth is set when only a new sign-in fixes it (`syncer auth`): the
	// error then matches ErrReauth.
	Reauth bool
}

func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("OAuth token endpoint")
	switch {
	case e.HTTPStatus != 0:
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	default:
		b.WriteString(" (no response)")
	}
	if e.OAuthError != "" {
		b.WriteString(": " + e.OAuthError)
	}
	if e.AADSTS != 0 && !strings.Contains(e.Description, "AADSTS"+strconv.Itoa(e.AADSTS)) {
		fmt.Fprintf(&b, " AADSTS%d", e.AADSTS)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.Fix != "" {
		b.WriteString(": " + e.Fix)
	}
	return b.String()
}

// Is makes a TokenError that needs a new sign-in match ErrReauth.
func (e *TokenError) Is(target error) bool { return target == ErrReauth && e.Reauth }

var (
	aadstsRE       = regexp.MustCompile(`AADSTS(\d+)`)
	oauthErrorWord = regexp.MustCompile(`^[a-z_]{1,64}$`)
)

// tokenErrorBody is the identity platform's error answer.
type tokenErrorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
}

// classifyTokenFailure builds the TokenError of a non-successful token
// endpoint answer (status, body). red scrubs secrets from the description.
func classifyTokenFailure(status int, body []byte, red *redactor) *TokenError {
	te := &TokenError{HTTPStatus: status, Class: ClassPermanent}
	var eb tokenErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
		// An HTML page from a proxy, an empty body, a cut one: the endpoint
		// did not answer as the identity platform does.
		te.Class = ClassTransient
		te.Description = "the answer is not an OAuth error"
		if len(body) == 0 {
			te.Description = "empty answer"
		}
		return te
	}
	// The error field is a fixed word (invalid_grant, …); anything else may
	// be an echo of the request and is kept only redacted, in Description.
	if oauthErrorWord.MatchString(eb.Error) {
		te.OAuthError = eb.Error
	} else {
		te.Description = red.redact(firstLine(eb.Error))
		eb.Error = ""
	}
	if d := red.redact(firstLine(eb.ErrorDescription)); d != "" || te.Description == "" {
		te.Description = d
	}
	if len(eb.ErrorCodes) > 0 {
		te.AADSTS = eb.ErrorCodes[0]
	} else if m := aadstsRE.FindStringSubmatch(eb.ErrorDescription); m != nil {
		te.AADSTS, _ = strconv.Atoi(m[1])
	}
	switch {
	case eb.Error == "temporarily_unavailable" || status >= 500 || status == 429:
		te.Class = ClassTransient
		return te
	case te.AADSTS == 700025:
		te.Fix = "the redirect URI is registered as a public client (platform \"Mobile and desktop applications\"), which must not send a secret: " +
			"leave microsoft_ads.client_secret empty, or register the redirect URI under the \"Web\" platform to use the secret"
	case te.AADSTS == 50011 || te.AADSTS == 500113:
		te.Fix = "the redirect URI is not registered for the app: add microsoft_ads.redirect_uri exactly (default http://localhost:8400/) " +
			"under Authentication in the app registration (platform \"Mobile and desktop applications\" for a public client, \"Web\" with a secret), " +
			"or set redirect_uri to one that is registered"
	case te.AADSTS == 7000218:
		te.Fix = "the app registration is confidential (a web app) and the request had no secret: set microsoft_ads.client_secret, " +
			"or for `syncer auth --device` turn on \"Allow public client flows\" under Authentication"
	case te.AADSTS == 7000215:
		te.Fix = "microsoft_ads.client_secret is wrong: set it to the secret's Value (not its Secret ID) from the app registration"
	case te.AADSTS == 7000222:
		te.Fix = "the client secret has expired: create a new one under Certificates & secrets and set microsoft_ads.client_secret"
	case te.AADSTS == 700016 || te.AADSTS == 90002:
		te.Fix = "the application was not found: check microsoft_ads.client_id (the Application (client) ID) and microsoft_ads.tenant"
	case eb.Error == "invalid_client":
		te.Fix = "the token endpoint refused the client: check microsoft_ads.client_id and microsoft_ads.client_secret"
	case eb.Error == "unauthorized_client":
		te.Fix = "the app registration may not use this grant: check microsoft_ads.client_id, and that the registration's platform " +
			"and \"allow public client flows\" match how it is used (README, OAuth)"
	case eb.Error == "interaction_required" || te.AADSTS == 50076 || te.AADSTS == 50079 || te.AADSTS == 65001:
		te.Reauth = true
		te.Fix = "the sign-in needs multi-factor authentication or consent again: run `syncer auth` to sign in again"
	case eb.Error == "invalid_scope":
		te.Fix = "the token endpoint refused the scope msads.manage: check microsoft_ads.environment (production or sandbox) " +
			"and the API permissions of the app registration"
	case eb.Error == "invalid_grant":
		te.Reauth = true
		te.Fix = "the refresh token expired or was revoked: run `syncer auth` to sign in again"
	default:
		te.Fix = "the token endpoint refused the request: check the microsoft_ads settings (client_id, client_secret, tenant)"
	}
	te.Fatal = true
	return te
}

// retriedOnce reports a token failure worth one more try after a short
// wait before it is believed: invalid_grant is sometimes intermittent
// (AADSTS70000), and a stored refresh token may be superseded by the
// configured one.
func (e *TokenError) retriedOnce() bool { return e.OAuthError == "invalid_grant" }
