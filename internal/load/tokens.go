package load

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrTokenUser is returned (wrapped) when the stored refresh token to use
// cannot be chosen: several users of the client have signed in and
// microsoft_ads.user does not pick one of them.
var ErrTokenUser = errors.New("which user's refresh token")

// TokenKey says whose refresh token a TokenStore keeps: the sign-in of one
// user (found out from the API) to one OAuth client in one environment.
type TokenKey struct {
	Environment string // production or sandbox
	ClientID    string
	// User (microsoft_ads.user), a user name or id, picks the token when
	// several users of the client have signed in; "" when only one has.
	User string
	// LegacyKey is the credential key tokens were stored under before
	// migration 004 (a hash of the client id and the developer token). A
	// token saved before the signed-in user is known is kept there too.
	LegacyKey string
}

// TokenStore keeps the OAuth refresh token of one sign-in in the
// oauth_tokens table. It satisfies the extract package's TokenStore and
// PrincipalStore interfaces.
//
// A token is filed under (environment, client id, signed-in user id), so
// rotating the developer token does not orphan it. Load finds it by
// environment and client id (and TokenKey.User when several users have
// signed in); when there is none of that kind it falls back to the row under
// TokenKey.LegacyKey. Once the signed-in user is known (SetPrincipal, called
// by the API client after GetUser), the token moves under the user's key and
// the legacy row is deleted.
type TokenStore struct {
	s *Store
	k TokenKey
	// keyed is false for a store built by Store.TokenStore: only the
	// legacy key, as before migration 004.
	keyed bool

	mu       sync.Mutex
	userID   int64 // the signed-in user, 0 until known
	userName string
}

// Tokens returns the token store of the sign-ins of k.
func (s *Store) Tokens(k TokenKey) *TokenStore {
	return &TokenStore{s: s, k: k, keyed: true}
}

// TokenStore returns a token store that reads and writes only the row
// under credentialKey, as before migration 004. Runs use Tokens.
func (s *Store) TokenStore(credentialKey string) *TokenStore {
	return &TokenStore{s: s, k: TokenKey{LegacyKey: credentialKey}}
}

// Token kinds stored in oauth_tokens.kind.
const (
	tokenPlain  = "plain"
	tokenAESGCM = "aes-gcm"
)

// userKey is the credential_key of a token filed under its signed-in user.
func userKey(env, clientID string, userID int64) string {
	return "user:" + env + ":" + clientID + ":" + strconv.FormatInt(userID, 10)
}

// User returns the signed-in user the token is filed under (0 and "" until
// known).
func (t *TokenStore) User() (int64, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.userID, t.userName
}

// storedToken is one row of oauth_tokens.
type storedToken struct {
	key      string
	userID   int64
	userName string
	kind     string
	data     []byte
}

func (st storedToken) label() string {
	if st.userName == "" {
		return "user id " + strconv.FormatInt(st.userID, 10)
	}
	return st.userName + " (id " + strconv.FormatInt(st.userID, 10) + ")"
}

// Load returns the stored refresh token, or "" when none is stored.
func (t *TokenStore) Load(ctx context.Context) (string, error) {
	if !t.keyed {
		st, found, err := t.row(ctx, t.k.LegacyKey)
		if err != nil || !found {
			return "", err
		}
		return t.open(st)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.userID != 0 {
		st, found, err := t.row(ctx, userKey(t.k.Environment, t.k.ClientID, t.userID))
		if err != nil {
			return "", err
		}
		if found {
			return t.open(st)
		}
	}
	var all []storedToken
	err := t.s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT credential_key, user_id, coalesce(user_name, ''), kind, token FROM oauth_tokens
			WHERE environment = $1 AND client_id = $2 AND user_id IS NOT NULL ORDER BY user_name, user_id`, t.k.Environment, t.k.ClientID)
		if err != nil {
			return err
		}
		all, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedToken, error) {
			var st storedToken
			err := r.Scan(&st.key, &st.userID, &st.userName, &st.kind, &st.data)
			return st, err
		})
		return err
	})
	if err != nil {
		return "", interpret(fmt.Errorf("load refresh token: %w", err))
	}
	picked := all
	if u := strings.TrimSpace(t.k.User); u != "" {
		picked = nil
		for _, st := range all {
			if strconv.FormatInt(st.userID, 10) == u || strings.EqualFold(st.userName, u) {
				picked = append(picked, st)
			}
		}
	}
	switch {
	case len(picked) == 1:
		t.userID, t.userName = picked[0].userID, picked[0].userName
		return t.open(picked[0])
	case len(picked) > 1:
		return "", fmt.Errorf("load refresh token: %w: several users of client id %s have signed in (%s): "+
			"set microsoft_ads.user to the user name or id the syncer should act as", ErrTokenUser, t.k.ClientID, labels(picked))
	}
	// None of the new kind: the row of the credential key (written before
	// migration 004, or before the signed-in user was known).
	st, found, err := t.row(ctx, t.k.LegacyKey)
	if err != nil {
		return "", err
	}
	if found {
		return t.open(st)
	}
	if len(all) > 0 {
		return "", fmt.Errorf("load refresh token: %w: microsoft_ads.user %q has no stored refresh token; the users of client id %s that signed in are %s: "+
			"fix microsoft_ads.user, or run `syncer auth` and sign in as %s", ErrTokenUser, t.k.User, t.k.ClientID, labels(all), t.k.User)
	}
	return "", nil
}

func labels(sts []storedToken) string {
	l := make([]string, len(sts))
	for i, st := range sts {
		l[i] = st.label()
	}
	return strings.Join(l, ", ")
}

// row reads the row under key.
func (t *TokenStore) row(ctx context.Context, key string) (storedToken, bool, error) {
	st := storedToken{key: key}
	err := t.s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT kind, token FROM oauth_tokens WHERE credential_key = $1`, key).Scan(&st.kind, &st.data)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return st, false, nil
	}
	if err != nil {
		return st, false, interpret(fmt.Errorf("load refresh token: %w", err))
	}
	return st, true, nil
}

// open decrypts a stored token (its key is the associated data).
func (t *TokenStore) open(st storedToken) (string, error) {
	plain, err := t.s.unseal(st.kind, st.data, st.key)
	if err != nil {
		return "", fmt.Errorf("load refresh token: %w", err)
	}
	return plain, nil
}

// seal encrypts text with the token key when one is configured, binding it
// to aad (the row's key).
func (s *Store) seal(text, aad string) (kind string, data []byte, err error) {
	if s.opts.TokenKey == "" {
		return tokenPlain, []byte(text), nil
	}
	aead, err := newAEAD(s.opts.TokenKey)
	if err != nil {
		return "", nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, err
	}
	return tokenAESGCM, aead.Seal(nonce, nonce, []byte(text), []byte(aad)), nil
}

// unseal is seal's inverse.
func (s *Store) unseal(kind string, data []byte, aad string) (string, error) {
	switch kind {
	case tokenPlain:
		return string(data), nil
	case tokenAESGCM:
		if s.opts.TokenKey == "" {
			return "", fmt.Errorf("the stored token is encrypted but database.token_key is not set: %w", ErrTokenKey)
		}
		aead, err := newAEAD(s.opts.TokenKey)
		if err != nil {
			return "", err
		}
		ns := aead.NonceSize()
		if len(data) < ns+aead.Overhead() {
			return "", fmt.Errorf("stored ciphertext is truncated: %w", ErrTokenKey)
		}
		plain, err := aead.Open(nil, data[:ns], data[ns:], []byte(aad))
		if err != nil {
			return "", fmt.Errorf("cannot decrypt the stored token (wrong database.token_key?): %w", ErrTokenKey)
		}
		return string(plain), nil
	default:
		return "", fmt.Errorf("unknown stored kind %q", kind)
	}
}

// Save stores token, encrypted when a token key is configured: under the
// signed-in user's key when that is known (deleting the legacy row), else
// under the legacy key.
func (t *TokenStore) Save(ctx context.Context, token string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	key, uid := t.k.LegacyKey, any(nil)
	if t.keyed && t.userID != 0 {
		key, uid = userKey(t.k.Environment, t.k.ClientID, t.userID), t.userID
	}
	kind, data, err := t.s.seal(token, key)
	if err != nil {
		return fmt.Errorf("save refresh token: %w", err)
	}
	err = t.s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		if err := upsertToken(ctx, tx, key, kind, data, t, uid); err != nil {
			return err
		}
		if uid != nil && t.k.LegacyKey != "" {
			_, err := tx.Exec(ctx, `DELETE FROM oauth_tokens WHERE credential_key = $1 AND user_id IS NULL`, t.k.LegacyKey)
			return err
		}
		return nil
	})
	if err != nil {
		return interpret(fmt.Errorf("save refresh token: %w", err))
	}
	return nil
}

func upsertToken(ctx context.Context, tx pgx.Tx, key, kind string, data []byte, t *TokenStore, uid any) error {
	var env, client, name any
	if t.keyed {
		env, client = t.k.Environment, t.k.ClientID
		if uid != nil {
			name = nullIfEmpty(t.userName)
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO oauth_tokens (credential_key, kind, token, updated_at, environment, client_id, user_id, user_name)
		VALUES ($1, $2, $3, now(), $4, $5, $6, $7)
		ON CONFLICT (credential_key) DO UPDATE SET kind = excluded.kind, token = excluded.token, updated_at = excluded.updated_at,
			environment = excluded.environment, client_id = excluded.client_id, user_id = excluded.user_id, user_name = excluded.user_name`,
		key, kind, data, env, client, uid, name)
	return err
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// SetPrincipal files the token under the signed-in user userID (userName
// is kept for listings): a token still under the legacy key moves under
// the user's key (re-encrypted) and the legacy row is deleted, in one
// transaction. It is a no-op on a store built by Store.TokenStore.
func (t *TokenStore) SetPrincipal(ctx context.Context, userID int64, userName string) error {
	if !t.keyed || userID == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.userID != 0 && t.userID != userID {
		return fmt.Errorf("file refresh token: the token stored for user %d signs in as user %d (%s); "+
			"it stays filed under user %d", t.userID, userID, userName, t.userID)
	}
	newKey := userKey(t.k.Environment, t.k.ClientID, userID)
	err := t.s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		if t.userID == userID {
			_, err := tx.Exec(ctx, `UPDATE oauth_tokens SET user_name = $2 WHERE credential_key = $1 AND user_name IS DISTINCT FROM $2`,
				newKey, nullIfEmpty(userName))
			return err
		}
		var st storedToken
		err := tx.QueryRow(ctx, `SELECT kind, token FROM oauth_tokens WHERE credential_key = $1 AND user_id IS NULL FOR UPDATE`,
			t.k.LegacyKey).Scan(&st.kind, &st.data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // nothing saved yet: the next Save files it
		}
		if err != nil {
			return err
		}
		plain, err := t.s.unseal(st.kind, st.data, t.k.LegacyKey)
		if err != nil {
			return err
		}
		kind, data, err := t.s.seal(plain, newKey)
		if err != nil {
			return err
		}
		old := t.userName
		t.userName = userName
		err = upsertToken(ctx, tx, newKey, kind, data, t, userID)
		t.userName = old
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM oauth_tokens WHERE credential_key = $1`, t.k.LegacyKey)
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("file refresh token under user %d: %w", userID, err))
	}
	t.userID, t.userName = userID, userName
	return nil
}

// SignIn is a sign-in that `syncer auth` started and has not finished: what
// the redirect's code must be redeemed with.
type SignIn struct {
	State       string
	Environment string
	ClientID    string
	RedirectURI string
	Verifier    string // the PKCE code verifier
	CreatedAt   time.Time
}

// signInTTL is how long a started sign-in can be finished (the
// authorization code itself lives about 10 minutes).
const signInTTL = 15 * time.Minute

// SaveSignIn records a started sign-in (the verifier encrypted when a token
// key is configured) and forgets those older than 15 minutes.
func (s *Store) SaveSignIn(ctx context.Context, si SignIn) error {
	kind, data, err := s.seal(si.Verifier, "sign-in:"+si.State)
	if err != nil {
		return fmt.Errorf("save sign-in: %w", err)
	}
	err = s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM oauth_sign_ins WHERE created_at < now() - $1::interval`, signInTTL.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO oauth_sign_ins (state, environment, client_id, redirect_uri, kind, verifier) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (state) DO UPDATE SET redirect_uri = excluded.redirect_uri, kind = excluded.kind, verifier = excluded.verifier, created_at = now()`,
			si.State, si.Environment, si.ClientID, si.RedirectURI, kind, data)
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("save sign-in: %w", err))
	}
	return nil
}

// TakeSignIn returns and deletes the started sign-in of environment and
// clientID with state, or, when state is "", the latest one. found is false
// when there is none younger than 15 minutes.
func (s *Store) TakeSignIn(ctx context.Context, environment, clientID, state string) (si SignIn, found bool, err error) {
	var kind string
	var data []byte
	err = s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `DELETE FROM oauth_sign_ins WHERE state = (
				SELECT state FROM oauth_sign_ins WHERE environment = $1 AND client_id = $2 AND ($3 = '' OR state = $3)
					AND created_at >= now() - $4::interval ORDER BY created_at DESC LIMIT 1)
			RETURNING state, environment, client_id, redirect_uri, kind, verifier, created_at`,
			environment, clientID, state, signInTTL.String()).Scan(&si.State, &si.Environment, &si.ClientID, &si.RedirectURI, &kind, &data, &si.CreatedAt)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return SignIn{}, false, nil
	}
	if err != nil {
		return SignIn{}, false, interpret(fmt.Errorf("read sign-in: %w", err))
	}
	si.Verifier, err = s.unseal(kind, data, "sign-in:"+si.State)
	if err != nil {
		return SignIn{}, false, fmt.Errorf("read sign-in: %w", err)
	}
	return si, true, nil
}

func newAEAD(passphrase string) (cipher.AEAD, error) {
	key := sha256.Sum256([]byte(passphrase))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return aead, nil
}
