// Package load writes customer snapshots (msads.Snapshot) to the PostgreSQL
// warehouse.
//
// Each snapshot is written in one transaction, one path per entity table
// (tables.go describes them; the SQL is in sql/, rendered once): with the
// staged rows as a JSON parameter (table.Staged), one statement per table
// (per chunk of at most maxStagedRows rows) inserts the new rows and
// updates the changed ones (IS DISTINCT FROM: unchanged rows are neither
// written nor locked) and one soft-removes (removed_at) the rows of the
// snapshot's scope it omits, under the one ownership rule (ownedBy);
// both append the history from what they wrote (RETURNING), so a re-run that
// finds nothing new writes no row version at all. Before that, the rows are
// compared in Go with the stored ones read back (readback.go), so only rows
// that may change are staged; and on a customer's first write the rows whose
// keys have no history at all are COPYed straight into their tables with
// their 'added' history (the direct path, sql/fresh.sql and sql/direct.sql),
// so a first load stages nothing. A removal guard refuses snapshots that
// would remove too many of a customer's users.
//
// A listed user whose GetUser failed (msads.User.Readable false) counts as
// listed: its users row takes only the listing's user name and the
// detail_status/detail_* columns, keeps its other values, and its roles are
// left exactly as stored. Account id lists keep nil (NULL, every account)
// distinct from empty ('{}', no account listed).
package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/redact"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrRemovalGuard: a snapshot would remove more of a customer's users
	// than the removal guard allows.
	ErrRemovalGuard = errors.New("removal guard")
	// ErrInvalidSnapshot: a snapshot is inconsistent (wrong customer ids,
	// roles of unlisted users).
	ErrInvalidSnapshot = errors.New("invalid snapshot")
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrTokenKey: the stored refresh token cannot be decrypted (no
	// token_key configured, or the wrong one).
	ErrTokenKey = errors.New("token key")
	// ErrUnavailable: the database could not be reached or kept failing with
	// transient errors.
	ErrUnavailable = errors.New("database unavailable")
)

// Default session settings of pools built by Open, unless the URL sets them.
const (
	defaultStatementTimeout   = "5min"
	defaultIdleInTxSessionTTL = "10min"
	defaultMaxConns           = 16
)

// Open builds a pool from a libpq/pgx URL or DSN, with application_name
// "syncer" and statement and idle-in-transaction timeouts (unless the URL
// sets them), and pings the server once. Errors never contain the password.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, scrub(fmt.Errorf("parse database url: %w", err), dsn, "")
	}
	password := cfg.ConnConfig.Password
	rp := cfg.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "syncer"
	}
	if rp["statement_timeout"] == "" {
		rp["statement_timeout"] = defaultStatementTimeout
	}
	if rp["idle_in_transaction_session_timeout"] == "" {
		rp["idle_in_transaction_session_timeout"] = defaultIdleInTxSessionTTL
	}
	// pgxpool's default (4 on small machines) is too few for a run's lock
	// connection plus several customers written at once.
	if !strings.Contains(dsn, "pool_max_conns") && cfg.MaxConns < defaultMaxConns {
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, scrub(fmt.Errorf("open database: %w", err), dsn, password)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, scrub(fmt.Errorf("connect to database %s: %w: %w", describe(cfg), ErrUnavailable, err), dsn, password)
	}
	return pool, nil
}

// describe names the server without credentials: user@host:port/db.
func describe(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// Migrate applies the embedded migrations to schema (see package
// github.com/msads-syncer/syncer/sql) and returns the schema's version.
// A lost connection or a server going away (an outage-class fault) is
// retried with backoff for up to retryFor, as writes are: the pending
// migrations are one transaction that checks the version first, so applying
// again after a lost commit reply skips what committed.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema, readerRole string, retryFor time.Duration, logger *slog.Logger) (int, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = 100 * time.Millisecond
	eb.MaxInterval = 2 * time.Second
	eb.MaxElapsedTime = 0
	eb.Reset()
	start := time.Now()
	for {
		v, err := schemasql.Migrate(ctx, pool, schema, readerRole, logger)
		if err == nil {
			return v, nil
		}
		if classify(err) != faultOutage || ctx.Err() != nil || time.Since(start) >= retryFor {
			return v, interpret(err)
		}
		wait := min(eb.NextBackOff(), max(retryFor-time.Since(start), time.Millisecond))
		logger.WarnContext(ctx, "database error during migration, retrying", slog.Duration("wait", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, interpret(err)
		case <-t.C:
		}
	}
}

// scrub removes the password of dsn (and anything that looks like one) from
// err's message, keeping err's chain.
func scrub(err error, dsn, password string) error {
	if err == nil {
		return nil
	}
	if password == "" {
		if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
			password, _ = u.User.Password()
		}
	}
	secrets := redact.Password(password)
	return redact.Map(err, func(msg string) string { return redact.ConnPasswords(redact.Text(msg, secrets...)) })
}

// interpret maps driver errors to the package's sentinels, keeping the
// original in the chain.
func interpret(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case isConnError(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
