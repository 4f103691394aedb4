package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/msads"
)

// `syncer auth` signs a user in and stores the refresh token. Three modes:
//
//   - default: the authorization code flow with PKCE through a loopback
//     redirect. It listens on microsoft_ads.redirect_uri (http://localhost:
//     <port>/), prints the sign-in URL, opens a browser when there is one and
//     takes the code from the redirect itself.
//   - --no-browser (or --code): it prints the URL and reads the redirected
//     address (or the bare code) from stdin or --code. The state and the PKCE
//     verifier of every started sign-in are kept in the database for 15
//     minutes, so the address can be pasted into a later `syncer auth --code`.
//   - --device: the device authorization grant, for a machine without a
//     browser (the registration must allow public client flows).
//
// Then it calls the API once as the new user, prints who signed in and the
// customers they can see, and stores the refresh token under that user.
func cmdAuth(args []string, io IO) int {
	var c common
	fs := newFlagSet("auth", io, &c)
	redirect := fs.String("redirect-uri", "", "redirect URI registered for the app (default microsoft_ads.redirect_uri)")
	code := fs.String("code", "", "the redirected `address` (or the bare code) of a sign-in started by syncer auth; implies --no-browser")
	noBrowser := fs.Bool("no-browser", false, "print the sign-in URL and read the redirected address (or the code) from stdin instead of listening for it")
	device := fs.Bool("device", false, "sign in with a device code on any other device (the app must allow public client flows)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the sign-in")
	if code2, done := parse(fs, args); done {
		return code2
	}
	if *device && (*noBrowser || *code != "") {
		fmt.Fprintln(io.Stderr, "syncer auth: --device cannot be combined with --no-browser or --code")
		return ExitUsage
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	if cfg.MicrosoftAds.ClientID == "" {
		return fail(io, errors.New("microsoft_ads.client_id: is empty (register an app first; see README, OAuth setup)"))
	}
	if cfg.MicrosoftAds.DeveloperToken == "" {
		return fail(io, errors.New("microsoft_ads.developer_token: is empty (auth checks the sign-in with one API call, which needs it)"))
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	ctx, cancel := commandContext(io, *timeout+5*time.Minute, logger)
	defer cancel()
	pool, err := openDB(ctx, cfg, logger, true)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	a := &authRun{cfg: cfg, io: io, store: newStore(pool, cfg, false, logger), ecfg: extractConfig(cfg, nil, nil, logger),
		redirect: cmpOr(*redirect, cfg.MicrosoftAds.RedirectURI), timeout: *timeout, configPath: c.configPath}

	var refresh string
	switch {
	case *device:
		refresh, err = a.device(ctx)
	case *code != "":
		refresh, err = a.pasted(ctx, *code)
	case *noBrowser:
		refresh, err = a.paste(ctx)
	default:
		refresh, err = a.loopback(ctx)
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, errAuthTimeout) {
			return fail(io, fmt.Errorf("sign-in cancelled: %w", err))
		}
		return fail(io, err)
	}
	if err := a.finish(ctx, refresh); err != nil {
		return fail(io, err)
	}
	return ExitOK
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// authRun is one `syncer auth`.
type authRun struct {
	cfg        *config.Config
	io         IO
	store      *load.Store
	ecfg       extract.Config
	redirect   string
	timeout    time.Duration
	configPath string
}

// errAuthTimeout ends a sign-in nobody finished in time.
var errAuthTimeout = errors.New("timed out waiting for the sign-in")

// begin starts a sign-in: a fresh state and PKCE verifier, kept in the
// database so that `syncer auth --code` can finish it from another process.
func (a *authRun) begin(ctx context.Context, redirectURI string) (load.SignIn, string, error) {
	si := load.SignIn{State: randomState(), Environment: a.cfg.MicrosoftAds.Environment, ClientID: a.cfg.MicrosoftAds.ClientID,
		RedirectURI: redirectURI, Verifier: extract.NewVerifier()}
	if err := a.store.SaveSignIn(ctx, si); err != nil {
		return si, "", err
	}
	return si, extract.AuthCodeURL(a.ecfg, redirectURI, si.State, si.Verifier), nil
}

// exchange redeems the code of sign-in si, which is then forgotten (a
// code is redeemed once). A sign-in that fails before it gets here stays
// in the database for 15 minutes, so its address can still be pasted into
// `syncer auth --code`.
func (a *authRun) exchange(ctx context.Context, si load.SignIn, code string) (string, error) {
	if si.State != "" {
		_, _, _ = a.store.TakeSignIn(ctx, si.Environment, si.ClientID, si.State)
	}
	rt, err := extract.ExchangeCode(ctx, a.ecfg, si.RedirectURI, code, si.Verifier)
	if err != nil {
		return "", fmt.Errorf("redeem the authorization code: %w", err)
	}
	return rt, nil
}

// loopback is the default mode: it listens on the redirect URI and takes
// the code from the browser's redirect.
func (a *authRun) loopback(ctx context.Context) (string, error) {
	lb, err := listenLoopback(a.redirect, a.cfg.MicrosoftAds.ClientSecret == "")
	if err != nil {
		return "", err
	}
	defer lb.close()
	si, signInURL, err := a.begin(ctx, lb.redirectURI)
	if err != nil {
		return "", err
	}
	lb.setState(si.State)
	out := a.io.Stdout
	fmt.Fprintf(out, "Sign in with the Microsoft Advertising user the syncer should act as.\n")
	opened := openBrowser(a.io.Getenv, signInURL)
	if opened {
		fmt.Fprintf(out, "A browser is opening the sign-in page. If it does not, open this URL:\n\n   %s\n\n", signInURL)
	} else {
		fmt.Fprintf(out, "Open this URL in a browser on this machine:\n\n   %s\n\n", signInURL)
	}
	fmt.Fprintf(out, "Waiting for the redirect to %s (%s at most; Ctrl-C cancels).\n"+
		"(Browser on another machine? Copy the address it ends on and run syncer auth --code '<address>'; or use --device.)\n", lb.redirectURI, a.timeout)
	res, err := lb.wait(ctx, a.timeout, a.io.Stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprintln(out, "Got the authorization code; redeeming it.")
	return a.exchange(ctx, si, res)
}

// paste is --no-browser: print the URL, read the redirected address (or
// the code) from stdin.
func (a *authRun) paste(ctx context.Context) (string, error) {
	si, signInURL, err := a.begin(ctx, a.redirect)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(a.io.Stdout, "1. Open this URL in a browser (on any machine) and sign in with the Microsoft Advertising user the syncer should act as:\n\n   %s\n\n", signInURL)
	fmt.Fprintf(a.io.Stdout, "2. The browser then goes to %s?code=...&state=... (the page may not load: nothing needs to listen there).\n"+
		"   Copy that whole address from the address bar (or just the code), paste it here and press Enter:\n> ", si.RedirectURI)
	line, err := readLine(ctx, a.io, a.timeout)
	if err != nil {
		return "", err
	}
	got, err := parseRedirect(line)
	if err != nil {
		return "", err
	}
	if got.hasState && got.state != si.State {
		return "", errors.New("the pasted address belongs to another sign-in attempt (its state is not this one's): " +
			"paste the address of the sign-in URL printed above, or start again")
	}
	return a.exchange(ctx, si, got.code)
}

// pasted is --code: finish a sign-in that an earlier `syncer auth` started,
// found by the state the address carries. A bare code has no state: the
// latest sign-in started for this client is used.
func (a *authRun) pasted(ctx context.Context, input string) (string, error) {
	got, err := parseRedirect(input)
	if err != nil {
		return "", err
	}
	m := a.cfg.MicrosoftAds
	si, found, err := a.store.TakeSignIn(ctx, m.Environment, m.ClientID, got.state)
	if err != nil {
		return "", err
	}
	switch {
	case !found && got.hasState:
		return "", errors.New("the pasted address belongs to no sign-in started in the last 15 minutes for this client id " +
			"(its state is unknown, or the sign-in is too old): run syncer auth --no-browser and paste the address of the URL it prints")
	case !found:
		// A bare code without a started sign-in: redeem it without PKCE.
		si = load.SignIn{RedirectURI: a.redirect}
	}
	return a.exchange(ctx, si, got.code)
}

// device is --device: the device authorization grant.
func (a *authRun) device(ctx context.Context) (string, error) {
	dc, err := extract.StartDeviceCode(ctx, a.ecfg)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(a.io.Stdout, "On any device with a browser, open %s and enter the code %s\n"+
		"then sign in with the Microsoft Advertising user the syncer should act as.\n"+
		"Waiting for the sign-in (the code expires in %s; Ctrl-C cancels)...\n",
		dc.VerificationURI, dc.UserCode, time.Duration(dc.ExpiresIn)*time.Second)
	return extract.PollDeviceToken(ctx, a.ecfg, dc)
}

// finish checks the new refresh token with the API, prints who signed in
// and what they can see, and stores the token under that user.
func (a *authRun) finish(ctx context.Context, refresh string) error {
	mem := &extract.MemoryTokenStore{}
	ecfg := a.ecfg
	ecfg.RefreshToken, ecfg.Store = refresh, mem
	client, err := extract.New(ecfg)
	if err != nil {
		return err
	}
	v := job.Visible(ctx, client)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenSaveWait)
	_ = client.Close(cctx)
	cancel()
	if v.PrincipalErr != nil {
		return fmt.Errorf("signed in, but the API refused the new sign-in (nothing was stored): %w", v.PrincipalErr)
	}
	// The check refreshed the token: keep the newest one.
	latest, _ := mem.Load(ctx)
	latest = cmpOr(latest, refresh)
	ts := a.store.Tokens(tokenKey(a.cfg))
	if err := ts.SetPrincipal(ctx, v.Principal.ID, v.Principal.UserName); err != nil {
		return err
	}
	if err := ts.Save(ctx, latest); err != nil {
		return fmt.Errorf("store the refresh token: %w", err)
	}
	a.report(ctx, v)
	return nil
}

// report prints who signed in and the customers they can see.
func (a *authRun) report(ctx context.Context, v job.Visibility) {
	out := a.io.Stdout
	p := v.Principal
	fmt.Fprintf(out, "\nSigned in as %s (user id %d)", cmpOr(p.UserName, "(no user name)"), p.ID)
	if name := strings.TrimSpace(p.FirstName + " " + p.LastName); name != "" {
		fmt.Fprintf(out, ", %s", name)
	}
	fmt.Fprintln(out, ".")
	roles := map[int64][]string{}
	for _, r := range v.Roles {
		roles[r.CustomerID] = append(roles[r.CustomerID], roleText(r))
	}
	if v.ListErr != nil {
		fmt.Fprintf(out, "Could not list the customers (GetCustomersInfo: %v); those of the user's roles:\n", v.ListErr)
	} else {
		fmt.Fprintf(out, "Customers this user can see (%d):\n", len(v.Customers))
	}
	w := 0
	for _, c := range v.Customers {
		w = max(w, len(customerLabel(c)))
	}
	for _, c := range v.Customers {
		r := "no role of its own (reached through a link or a parent customer)"
		if len(roles[c.ID]) > 0 {
			r = strings.Join(roles[c.ID], "; ")
		}
		fmt.Fprintf(out, "  %-*s  %s\n", w, customerLabel(c), r)
	}
	m := a.cfg.MicrosoftAds
	if !a.cfg.Customers.Discover {
		for _, id := range a.cfg.Customers.IDs {
			if !slices.ContainsFunc(v.Customers, func(c msads.Customer) bool { return c.ID == id }) {
				fmt.Fprintf(out, "Note: customer %d (customers.ids) is not visible to this user: runs will fail it with code 106.\n", id)
			}
		}
	}
	enc := "in plain text (set database.token_key to encrypt it)"
	if a.cfg.Database.TokenKey != "" {
		enc = "encrypted with database.token_key"
	}
	fmt.Fprintf(out, "\nThe refresh token is stored in schema %s, %s, for client id %s and this user.\n"+
		"Every run rotates it there; microsoft_ads.refresh_token in the config is no longer needed.\n", a.cfg.Database.Schema, enc, m.ClientID)
	if _, err := a.store.Tokens(tokenKey(a.cfg)).Load(ctx); errors.Is(err, load.ErrTokenUser) {
		fmt.Fprintf(out, "Several users of this client id have signed in: runs need microsoft_ads.user (%s, or its id %d).\n", p.UserName, p.ID)
	} else if m.User != "" && !strings.EqualFold(m.User, p.UserName) && m.User != strconv.FormatInt(p.ID, 10) {
		fmt.Fprintf(out, "Note: microsoft_ads.user is %q, so runs use that user's token, not this one.\n", m.User)
	}
	fmt.Fprintf(out, "Next: syncer run --config %s\n", a.configPath)
}

func customerLabel(c msads.Customer) string {
	if c.Name == "" {
		return strconv.FormatInt(c.ID, 10)
	}
	return strconv.FormatInt(c.ID, 10) + " " + c.Name
}

func roleText(r msads.Role) string {
	name := msads.RoleNames[r.RoleID]
	if name == "" {
		name = "role " + strconv.Itoa(int(r.RoleID))
	}
	if r.AccountIDs != nil {
		ids := make([]string, len(r.AccountIDs))
		for i, id := range r.AccountIDs {
			ids[i] = strconv.FormatInt(id, 10)
		}
		name += " (accounts " + cmpOr(strings.Join(ids, ", "), "none") + ")"
	}
	return name
}

// tokenKey is whose refresh token a run uses: the configured environment
// and client id (and microsoft_ads.user), with the credential key the
// token was stored under before migration 004.
func tokenKey(cfg *config.Config) load.TokenKey {
	m := cfg.MicrosoftAds
	return load.TokenKey{Environment: m.Environment, ClientID: m.ClientID, User: m.User, LegacyKey: credentialKey(cfg)}
}

// readLine reads one line from stdin, giving up when ctx ends or after
// timeout.
func readLine(ctx context.Context, io IO, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(io.Stdin).ReadString('\n')
		ch <- result{line, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err != nil && strings.TrimSpace(r.line) == "" {
			return "", errors.New("nothing pasted on stdin (paste the redirected address, or pass it with --code)")
		}
		return strings.TrimSpace(r.line), nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
		return "", errAuthTimeout
	}
}

// redirect is what a pasted address (or bare code) carries.
type redirect struct {
	code     string
	state    string
	hasState bool
}

// parseRedirect reads a redirected address (the full URL, or just its
// query) or a bare code. An address's state is returned for the caller to
// check; a bare code has none. An error in the address (error and
// error_description, as after a refused sign-in) is returned with what to
// do.
func parseRedirect(input string) (redirect, error) {
	input = strings.TrimSpace(input)
	if input == "" {
		return redirect{}, errors.New("nothing pasted: paste the redirected address or the code")
	}
	if !strings.Contains(input, "code=") && !strings.Contains(input, "error=") &&
		!strings.HasPrefix(input, "http://") && !strings.HasPrefix(input, "https://") {
		return redirect{code: input}, nil
	}
	raw := input
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[i+1:]
	}
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return redirect{}, fmt.Errorf("cannot read the redirected address: %w", err)
	}
	if e := q.Get("error"); e != "" {
		return redirect{}, signInError(e, q.Get("error_description"))
	}
	if q.Get("code") == "" {
		return redirect{}, errors.New("the pasted address has no code: paste the address the browser went to after the sign-in")
	}
	return redirect{code: q.Get("code"), state: q.Get("state"), hasState: q.Has("state")}, nil
}

// signInError explains an error the identity platform sent back to the
// redirect URI instead of a code.
func signInError(name, desc string) error {
	desc = strings.TrimSpace(firstLine(desc))
	msg := "the sign-in was refused: " + name
	if desc != "" {
		msg += ": " + desc
	}
	switch {
	case strings.Contains(desc, "AADSTS50011") || strings.Contains(desc, "AADSTS500113"):
		msg += ": register the redirect URI exactly (default http://localhost:8400/) under Authentication in the app registration " +
			"(platform \"Mobile and desktop applications\" for a public client, \"Web\" with a secret), or set microsoft_ads.redirect_uri " +
			"(or --redirect-uri) to one that is registered"
	case strings.Contains(desc, "AADSTS65001") || name == "consent_required":
		msg += ": consent was not given: sign in again and accept, or ask a tenant administrator to grant consent to the app"
	case name == "access_denied":
		msg += ": the sign-in was cancelled or consent declined: run syncer auth again and accept"
	case strings.Contains(desc, "AADSTS700016"):
		msg += ": check microsoft_ads.client_id and microsoft_ads.tenant"
	}
	return errors.New(msg)
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func randomState() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
