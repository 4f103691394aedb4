package cli

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/extract"
)

func cmdAuth(args []string, io IO) int {
	var c common
	fs := newFlagSet("auth", io, &c)
	redirect := fs.String("redirect-uri", "", "redirect URI registered for the app (default microsoft_ads.redirect_uri)")
	code := fs.String("code", "", "the authorization code or the whole redirected URL (default: read from stdin)")
	if code2, done := parse(fs, args); done {
		return code2
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	if cfg.MicrosoftAds.ClientID == "" {
		return fail(io, errors.New("microsoft_ads.client_id: is empty (register an app first; see README, OAuth setup)"))
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	ctx, cancel := commandContext(io, 30*time.Minute, logger)
	defer cancel()
	pool, err := openDB(ctx, cfg, logger, true)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()

	redirectURI := *redirect
	if redirectURI == "" {
		redirectURI = cfg.MicrosoftAds.RedirectURI
	}
	ecfg := extractConfig(cfg, nil, nil, logger)
	state := randomState()
	fmt.Fprintf(io.Stdout, "1. Open this URL in a browser and sign in with the Microsoft Advertising user the syncer should act as:\n\n   %s\n\n", extract.AuthCodeURL(ecfg, redirectURI, state, ""))
	fmt.Fprintf(io.Stdout, "2. After consent the browser lands on %s?code=...\n   Paste that whole address (or just the code) here and press Enter:\n> ", redirectURI)

	input := *code
	if input == "" {
		line, err := bufio.NewReader(io.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return fail(io, errors.New("no code given on stdin (pass --code or paste the redirected URL)"))
		}
		input = line
	}
	authCode, err := parseAuthCode(strings.TrimSpace(input), state)
	if err != nil {
		return fail(io, err)
	}
	refresh, err := extract.ExchangeCode(ctx, ecfg, redirectURI, authCode, "")
	if err != nil {
		return fail(io, fmt.Errorf("exchange the code: %w", err))
	}
	store := newStore(pool, cfg, false, logger).TokenStore(credentialKey(cfg))
	if err := store.Save(ctx, refresh); err != nil {
		return fail(io, fmt.Errorf("store the refresh token: %w", err))
	}
	enc := "in plain text (set database.token_key to encrypt it)"
	if cfg.Database.TokenKey != "" {
		enc = "encrypted with database.token_key"
	}
	fmt.Fprintf(io.Stdout, "\nSigned in. The refresh token is stored in schema %s, %s.\nEvery run rotates it there; microsoft_ads.refresh_token in the config is no longer needed.\nNext: syncer run --config %s\n", cfg.Database.Schema, enc, c.configPath)
	return ExitOK
}

// parseAuthCode accepts the redirected URL or the bare code. When a URL
// carries a state, it must be ours; an error in the URL is reported.
func parseAuthCode(input, state string) (string, error) {
	if input == "" {
		return "", errors.New("empty code")
	}
	if !strings.Contains(input, "code=") && !strings.Contains(input, "error=") {
		return input, nil
	}
	raw := input
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[i+1:]
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "", fmt.Errorf("cannot read the redirected URL: %w", err)
	}
	if e := q.Get("error"); e != "" {
		return "", fmt.Errorf("sign-in failed: %s: %s", e, q.Get("error_description"))
	}
	if s := q.Get("state"); s != "" && s != state {
		return "", errors.New("the redirected URL belongs to another sign-in attempt (state mismatch): start again")
	}
	if q.Get("code") == "" {
		return "", errors.New("no code in the redirected URL")
	}
	return q.Get("code"), nil
}

func randomState() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
