package load

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// preludeTx is the transaction of one attempt (Store.txOnce) whose first
// statements, the prelude (the locks and the transaction id; the lease's
// fence; BEGIN set the search path), are not sent by themselves: they go ahead of the
// body's first batch, in its round trip, or by themselves just before the
// body's first other statement (or its commit). A snapshot write, whose
// first statements are a batch, saves a round trip (two under a lease).
//
// The prelude's results are read before the first of the body's: an error
// of the prelude (a lock timeout, a lost lease) is the error of the body's
// first statement. The server skips the rest of the batch only when the
// prelude failed there (a lock timeout); a lease found lost is decided in
// Go, after the batch ran. So the body's first batch may run, but nothing
// commits: the body fails with that error and the transaction is rolled
// back. No COMMIT is ever sent in a batch (a failure found in Go would
// come too late to stop it).
type preludeTx struct {
	pgx.Tx
	prelude pipeline // emptied once sent
}

// flush sends the prelude by itself if it is not sent yet.
func (t *preludeTx) flush(ctx context.Context) error { return t.prelude.send(ctx, t.Tx) }

// SendBatch sends the prelude and b in one round trip; the results read
// the prelude's first.
func (t *preludeTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.prelude.b.Len() == 0 {
		return t.Tx.SendBatch(ctx, b)
	}
	p := t.prelude
	t.prelude = pipeline{}
	all := &pgx.Batch{QueuedQueries: append(p.b.QueuedQueries, b.QueuedQueries...)}
	return &preludeResults{BatchResults: t.Tx.SendBatch(ctx, all), read: p.read}
}

func (t *preludeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.flush(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *preludeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Query(ctx, sql, args...)
}

func (t *preludeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.flush(ctx); err != nil {
		return errRow{err}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *preludeTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.Tx.CopyFrom(ctx, table, cols, src)
}

func (t *preludeTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Prepare(ctx, name, sql)
}

// Begin (a savepoint) sends the prelude first.
func (t *preludeTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Begin(ctx)
}

// Commit sends the prelude first if the body sent nothing: its locks and
// transaction id are the commit's.
func (t *preludeTx) Commit(ctx context.Context) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	return t.Tx.Commit(ctx)
}

// preludeResults are the results of a batch the prelude went ahead of.
type preludeResults struct {
	pgx.BatchResults
	read []func(pgx.BatchResults) error // the prelude's, not read yet
	err  error
}

// readPrelude reads the prelude's results, once; its error is every
// later read's.
func (r *preludeResults) readPrelude() error {
	for len(r.read) > 0 && r.err == nil {
		r.err = r.read[0](r.BatchResults)
		r.read = r.read[1:]
	}
	return r.err
}

func (r *preludeResults) Exec() (pgconn.CommandTag, error) {
	if err := r.readPrelude(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return r.BatchResults.Exec()
}

func (r *preludeResults) Query() (pgx.Rows, error) {
	if err := r.readPrelude(); err != nil {
		return nil, err
	}
	return r.BatchResults.Query()
}

func (r *preludeResults) QueryRow() pgx.Row {
	if err := r.readPrelude(); err != nil {
		return errRow{err}
	}
	return r.BatchResults.QueryRow()
}

func (r *preludeResults) Close() error {
	err := r.readPrelude()
	if cerr := r.BatchResults.Close(); err == nil {
		err = cerr
	}
	return err
}

// errRow is a row whose Scan fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// preludeError is the failure of the prelude's locks (see Store.txOnce), or
// of the batch they went ahead of before anything ran (its message is the
// error's own: the body's reader names the statement).
type preludeError struct{ err error }

func (e *preludeError) Error() string { return e.err.Error() }

func (e *preludeError) Unwrap() error { return e.err }
