package load

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/pgtest"
)

// BEGIN sets the search path from a literal (preludeTx): any schema name
// comes back from the server as it was quoted.
func TestQuoteLiteralRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, s := range []string{"plain", "it's", `back\slash`, `"Schema ""x""", public`, `\'`, "ünïcode"} {
		var got string
		if err := b.pool.QueryRow(t.Context(), "SELECT "+quoteLiteral(s)).Scan(&got); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got != s {
			t.Errorf("quoteLiteral(%q) reads back as %q", s, got)
		}
	}
}

// dropAfterCommit is a connection that, once armed, loses the reply of a
// batch whose statements included COMMIT: after it writes the batch's
// execution (the write after the one that prepared it), its next read
// waits for the server to commit, then closes the connection and fails.
type dropAfterCommit struct {
	net.Conn
	armed          *atomic.Bool
	prepared, drop bool
}

func (c *dropAfterCommit) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil && c.armed.Load() {
		if c.prepared {
			c.drop = c.armed.CompareAndSwap(true, false)
		} else {
			c.prepared = bytes.Contains(p, []byte("COMMIT\x00"))
		}
	}
	return n, err
}

func (c *dropAfterCommit) Read(p []byte) (int, error) {
	if c.drop {
		time.Sleep(300 * time.Millisecond)
		_ = c.Close()
		return 0, io.ErrUnexpectedEOF
	}
	return c.Conn.Read(p)
}

// A snapshot's last batch holds its COMMIT (sendCommitting). When the
// connection is lost after the server committed and before its reply came,
// the write asks the server how the transaction ended instead of writing
// the snapshot again.
func TestLostReplyOfTheCommittingBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &dropAfterCommit{Conn: c, armed: &armed}, nil
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := NewStore(pool, Options{Schema: b.schema})
	armed.Store(true)
	ch, err := s.WriteSnapshot(t.Context(), b.runID, baseSnapshot(), SyncInfo{})
	if err != nil {
		t.Fatalf("WriteSnapshot with the reply of its committing batch lost: %v", err)
	}
	if armed.Load() {
		t.Fatal("the committing batch was not cut off")
	}
	if ch.Users.Added != 4 {
		t.Errorf("changes reported = %+v, want the 4 users the committed attempt added", ch.Users)
	}
	equal(t, "customer_syncs", b.strings(t, `SELECT status, users_seen, users_added, roles_added FROM customer_syncs`),
		[]string{"succeeded|4|4|5"})
	equal(t, "history", b.strings(t, `SELECT change, count(*) FROM users_history GROUP BY 1`), []string{"added|4"})
}
