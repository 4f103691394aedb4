package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// faultClass says how a failed transaction is retried (see Store.inTx).
type faultClass int

const (
	// faultPermanent: not retried (bad data, the removal guard, a lost
	// lease, a cancelled context, any error the database did not cause).
	faultPermanent faultClass = iota
	// faultOutage: the connection or the server is gone (refused, reset,
	// closed, 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
	// cannot_connect_now, 53300 too_many_connections, class 08, a pool that
	// cannot connect). Waiting for the database to come back is retried with
	// backoff for up to Options.RetryMaxElapsed.
	faultOutage
	// faultStatement: the statement failed on a working server (57014
	// statement_timeout / query_canceled, 53xxx insufficient resources such
	// as 53100 disk_full, P0001 raise_exception from a trigger). Retried
	// once on a fresh connection, then the write fails.
	faultStatement
	// faultConflict: the transaction lost a race with another one (40001
	// serialization_failure, 40P01 deadlock_detected, 55P03
	// lock_not_available). Retried up to Options.MaxTries attempts.
	faultConflict
)

func (c faultClass) String() string {
	switch c {
	case faultOutage:
		return "outage"
	case faultStatement:
		return "statement"
	case faultConflict:
		return "conflict"
	}
	return "permanent"
}

// classify returns the fault class of err.
func classify(err error) faultClass {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrLeaseLost) {
		return faultPermanent
	}
	if _, ok := errors.AsType[*freshConflictError](err); ok {
		return faultConflict
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow,
			pgerrcode.TooManyConnections:
			return faultOutage
		case pgerrcode.QueryCanceled, pgerrcode.RaiseException:
			return faultStatement
		case pgerrcode.SerializationFailure, pgerrcode.DeadlockDetected, pgerrcode.LockNotAvailable:
			return faultConflict
		}
		switch {
		case pgerrcode.IsConnectionException(pgErr.Code):
			return faultOutage
		case pgerrcode.IsInsufficientResources(pgErr.Code):
			return faultStatement
		}
		return faultPermanent
	}
	if isConnError(err) || errors.Is(err, errCommitPending) {
		return faultOutage
	}
	return faultPermanent
}

// isConnError reports whether err says the connection could not be made or
// was lost (no SQLSTATE, or a class 08 one).
func isConnError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgerrcode.IsConnectionException(pgErr.Code) || pgErr.Code == pgerrcode.AdminShutdown ||
			pgErr.Code == pgerrcode.CrashShutdown || pgErr.Code == pgerrcode.CannotConnectNow
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var netErr net.Error
	var connErr *pgconn.ConnectError
	if errors.As(err, &netErr) || errors.As(err, &connErr) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"conn closed", "unexpected EOF", "connection reset", "broken pipe",
		"connection refused", "failed to connect", "closed network connection"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// describeFault says in words what a database error means, and its SQLSTATE
// ("" when the error has none).
func describeFault(err error) (what, code string) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		if isConnError(err) {
			return "connection to the database lost", ""
		}
		return "database error", ""
	}
	code = pgErr.Code
	switch code {
	case pgerrcode.QueryCanceled:
		if strings.Contains(pgErr.Message, "statement timeout") {
			return "statement timeout", code
		}
		return "query canceled", code
	case pgerrcode.DiskFull:
		return "disk full", code
	case pgerrcode.OutOfMemory:
		return "database out of memory", code
	case pgerrcode.TooManyConnections:
		return "too many connections", code
	case pgerrcode.ConfigurationLimitExceeded:
		return "database configuration limit exceeded", code
	case pgerrcode.RaiseException:
		return "exception raised by a trigger or function", code
	case pgerrcode.SerializationFailure:
		return "serialization failure", code
	case pgerrcode.DeadlockDetected:
		return "deadlock", code
	case pgerrcode.LockNotAvailable:
		return "lock not available", code
	case pgerrcode.AdminShutdown:
		return "connection terminated by the server (admin shutdown)", code
	case pgerrcode.CrashShutdown:
		return "server crashed", code
	case pgerrcode.CannotConnectNow:
		return "server not accepting connections (starting or stopping)", code
	}
	switch {
	case pgerrcode.IsInsufficientResources(code):
		return "database out of resources", code
	case pgerrcode.IsConnectionException(code):
		return "connection failure", code
	}
	return "database error", code
}

// FaultError is a transaction that failed after the retries its fault class
// allows: what happened in words, the SQLSTATE, and the attempts made.
type FaultError struct {
	What     string // e.g. "statement timeout", "disk full"
	Code     string // SQLSTATE, "" when the error had none
	Attempts int
	Err      error
}

func (e *FaultError) Error() string {
	code := ""
	if e.Code != "" {
		code = " (SQLSTATE " + e.Code + ")"
	}
	tries := "once"
	if e.Attempts > 1 {
		tries = fmt.Sprintf("on %d attempts, the last on a fresh connection", e.Attempts)
	}
	return fmt.Sprintf("%s%s, failed %s: %v", e.What, code, tries, e.Err)
}

func (e *FaultError) Unwrap() error { return e.Err }
