package load

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	schemasql "github.com/msads-syncer/syncer/sql"
)

// Options configure a Store.
type Options struct {
	// Schema holds the warehouse; default "msads".
	Schema string
	// RemovalGuard is the largest fraction of a customer's current users a
	// snapshot may remove; default 0.5.
	RemovalGuard float64
	// AllowMassRemoval disables the removal guard (--allow-mass-removal).
	AllowMassRemoval bool
	// TokenKey, when set, encrypts stored refresh tokens.
	TokenKey string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// MaxTries bounds the attempts of a transaction failing with transient
	// errors; default 4.
	MaxTries int
}

// Store writes to the warehouse in one schema.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger
	path string // search_path value

	// testHook, when set, is called between the steps of a snapshot write;
	// an error it returns fails the write (tests inject faults with it).
	testHook func(step string, tx pgx.Tx) error
}

// NewStore returns a Store writing through pool.
func NewStore(pool *pgxpool.Pool, opts Options) *Store {
	if opts.Schema == "" {
		opts.Schema = "msads"
	}
	if opts.RemovalGuard <= 0 {
		opts.RemovalGuard = 0.5
	}
	if opts.MaxTries <= 0 {
		opts.MaxTries = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, opts: opts, log: opts.Logger, path: schemasql.SearchPath(opts.Schema)}
}

// Schema returns the store's schema name.
func (s *Store) Schema() string { return s.opts.Schema }

// inTx runs fn in a transaction with the store's search_path, holding the
// transaction-level advisory lock lockKey when not empty. It commits when
// commit is true, else rolls back. Transient failures (serialization,
// deadlock, lost connection) are retried with backoff; every attempt starts
// afresh.
func (s *Store) inTx(ctx context.Context, lockKey string, commit bool, fn func(pgx.Tx) error) error {
	attempt := 0
	op := func() error {
		attempt++
		err := s.txOnce(ctx, lockKey, commit, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !isTransient(err) {
			return backoff.Permanent(err)
		}
		s.log.WarnContext(ctx, "transient database error, retrying",
			slog.Int("attempt", attempt), slog.String("error", err.Error()))
		return err
	}
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = 100 * time.Millisecond
	eb.MaxInterval = 2 * time.Second
	eb.MaxElapsedTime = time.Minute
	err := backoff.Retry(op, backoff.WithContext(backoff.WithMaxRetries(eb, uint64(s.opts.MaxTries-1)), ctx))
	if err != nil && isTransient(err) && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w after %d attempts: %w", ErrUnavailable, attempt, err)
	}
	return err
}

func (s *Store) txOnce(ctx context.Context, lockKey string, commit bool, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if lockKey != "" {
		_, err = tx.Exec(ctx, "SELECT set_config('search_path', $1, true), pg_advisory_xact_lock(hashtextextended($2, 0))",
			s.path, s.lockName(lockKey))
	} else {
		_, err = tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", s.path)
	}
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	if !commit {
		return nil
	}
	return tx.Commit(ctx)
}

// lockName namespaces advisory lock keys by schema, so stores on different
// schemas of one server do not exclude each other.
func (s *Store) lockName(key string) string { return "syncer:" + s.opts.Schema + ":" + key }

// TryLock takes the session-level advisory lock named key without waiting.
// It holds a pooled connection until release is called. ok is false when
// another session holds the lock.
func (s *Store) TryLock(ctx context.Context, key string) (release func(), ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, interpret(fmt.Errorf("try lock %q: %w", key, err))
	}
	name := s.lockName("run:" + key)
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, interpret(fmt.Errorf("try lock %q: %w", key, err))
	}
	if !ok {
		conn.Release()
		return func() {}, false, nil
	}
	release = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var unlocked bool
		if err := conn.QueryRow(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", name).Scan(&unlocked); err != nil || !unlocked {
			// Closing the session releases the lock for sure.
			_ = conn.Hijack().Close(ctx)
			return
		}
		conn.Release()
	})
	return release, true, nil
}

// StartRun records a new run in sync_runs (status running) and returns its id.
func (s *Store) StartRun(ctx context.Context, customersTotal int) (int64, error) {
	host, _ := os.Hostname()
	var id int64
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO sync_runs (customers_total, hostname) VALUES ($1, NULLIF($2, '')) RETURNING run_id`,
			customersTotal, host).Scan(&id)
	})
	if err != nil {
		return 0, interpret(fmt.Errorf("start run: %w", err))
	}
	return id, nil
}

// Run statuses.
const (
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunPartial   = "partial"
	RunFailed    = "failed"
	RunCanceled  = "canceled"
)

// FinishRun closes a run with its final status.
func (s *Store) FinishRun(ctx context.Context, runID int64, status string, customersFailed int, errText string) error {
	switch status {
	case RunSucceeded, RunPartial, RunFailed, RunCanceled:
	default:
		return fmt.Errorf("finish run %d: invalid status %q", runID, status)
	}
	// The run is often finished because ctx was canceled: still record it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var n int64
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE sync_runs SET finished_at = now(), status = $2, customers_failed = $3, error = NULLIF($4, '')
			WHERE run_id = $1`, runID, status, customersFailed, errText)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("finish run %d: %w", runID, err))
	}
	if n == 0 {
		return fmt.Errorf("finish run %d: %w", runID, ErrNotFound)
	}
	return nil
}

// SetRunPrincipal records who the run reads the data as (the credential's
// own user, from GetUser without a user id) in sync_runs.principal_user_id
// and principal_user_name. A userID of 0 or an empty userName is stored as
// NULL. It fails with ErrNotFound when the run does not exist.
func (s *Store) SetRunPrincipal(ctx context.Context, runID int64, userID int64, userName string) error {
	var uid any
	if userID != 0 {
		uid = userID
	}
	var n int64
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE sync_runs SET principal_user_id = $2, principal_user_name = NULLIF($3, '')
			WHERE run_id = $1`, runID, uid, userName)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("set principal of run %d: %w", runID, err))
	}
	if n == 0 {
		return fmt.Errorf("set principal of run %d: %w", runID, ErrNotFound)
	}
	return nil
}

// RecordCustomerFailure records that a customer's sync failed: a failed
// customer_syncs row (when runID is not 0) and the customer's
// last_attempt_at and last_error. Entity rows are left untouched.
func (s *Store) RecordCustomerFailure(ctx context.Context, runID, customerID int64, info SyncInfo, cause error) error {
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO customers (customer_id, last_attempt_at, last_error) VALUES ($1, now(), $2)
			ON CONFLICT (customer_id) DO UPDATE SET last_attempt_at = excluded.last_attempt_at, last_error = excluded.last_error`,
			customerID, msg); err != nil {
			return err
		}
		if runID == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO customer_syncs (run_id, customer_id, started_at, finished_at, status, api_calls, error, users_unreadable)
			VALUES ($1, $2, $3, now(), 'failed', $4, $5, $6)
			ON CONFLICT (run_id, customer_id) DO UPDATE SET finished_at = excluded.finished_at, status = excluded.status,
				api_calls = excluded.api_calls, error = excluded.error, users_unreadable = excluded.users_unreadable`,
			runID, customerID, startedAt(info), info.APICalls, msg, info.UsersUnreadable)
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("record failure of customer %d: %w", customerID, err))
	}
	return nil
}

func startedAt(info SyncInfo) time.Time {
	if info.StartedAt.IsZero() {
		return time.Now()
	}
	return info.StartedAt
}

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
