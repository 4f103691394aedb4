package load

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// TokenStore keeps the OAuth refresh token of one credential in the
// oauth_tokens table. It satisfies the extract package's TokenStore
// interface.
type TokenStore struct {
	s   *Store
	key string
}

// TokenStore returns the token store for credentialKey.
func (s *Store) TokenStore(credentialKey string) *TokenStore {
	return &TokenStore{s: s, key: credentialKey}
}

// Token kinds stored in oauth_tokens.kind.
const (
	tokenPlain  = "plain"
	tokenAESGCM = "aes-gcm"
)

// Load returns the stored refresh token, or "" when none is stored.
func (t *TokenStore) Load(ctx context.Context) (string, error) {
	var kind string
	var data []byte
	err := t.s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT kind, token FROM oauth_tokens WHERE credential_key = $1`, t.key).Scan(&kind, &data)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", interpret(fmt.Errorf("load refresh token: %w", err))
	}
	switch kind {
	case tokenPlain:
		return string(data), nil
	case tokenAESGCM:
		if t.s.opts.TokenKey == "" {
			return "", fmt.Errorf("load refresh token: the stored token is encrypted but database.token_key is not set: %w", ErrTokenKey)
		}
		aead, err := newAEAD(t.s.opts.TokenKey)
		if err != nil {
			return "", err
		}
		ns := aead.NonceSize()
		if len(data) < ns+aead.Overhead() {
			return "", fmt.Errorf("load refresh token: stored ciphertext is truncated: %w", ErrTokenKey)
		}
		plain, err := aead.Open(nil, data[:ns], data[ns:], []byte(t.key))
		if err != nil {
			return "", fmt.Errorf("load refresh token: cannot decrypt the stored token (wrong database.token_key?): %w", ErrTokenKey)
		}
		return string(plain), nil
	default:
		return "", fmt.Errorf("load refresh token: unknown stored kind %q", kind)
	}
}

// Save stores token, encrypted when a token key is configured.
func (t *TokenStore) Save(ctx context.Context, token string) error {
	kind, data := tokenPlain, []byte(token)
	if t.s.opts.TokenKey != "" {
		aead, err := newAEAD(t.s.opts.TokenKey)
		if err != nil {
			return err
		}
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return fmt.Errorf("save refresh token: %w", err)
		}
		kind, data = tokenAESGCM, aead.Seal(nonce, nonce, []byte(token), []byte(t.key))
	}
	err := t.s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO oauth_tokens (credential_key, kind, token, updated_at) VALUES ($1, $2, $3, now())
			ON CONFLICT (credential_key) DO UPDATE SET kind = excluded.kind, token = excluded.token, updated_at = excluded.updated_at`,
			t.key, kind, data)
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("save refresh token: %w", err))
	}
	return nil
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
