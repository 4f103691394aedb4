package load

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"

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

// dropCommitReply is a connection that, once armed, loses the reply of
// its next COMMIT: after it writes the COMMIT, its next read takes the
// server's reply (so the server has committed), throws it away, closes the
// connection and fails.
type dropCommitReply struct {
	net.Conn
	armed *atomic.Bool
	drop  bool
}

func (c *dropCommitReply) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil && bytes.Contains(p, []byte("commit\x00")) {
		c.drop = c.armed.CompareAndSwap(true, false)
	}
	return n, err
}

func (c *dropCommitReply) Read(p []byte) (int, error) {
	if c.drop {
		_, _ = c.Conn.Read(p)
		_ = c.Close()
		return 0, io.ErrUnexpectedEOF
	}
	return c.Conn.Read(p)
}

// A snapshot write whose COMMIT reply the connection loses asks the server
// how the transaction ended (its id came with the locks, ahead of the first
// batch: preludeTx) instead of writing the snapshot again.
func TestLostCommitReplyOnTheWire(t *testing.T) {
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
		return &dropCommitReply{Conn: c, armed: &armed}, nil
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
		t.Fatalf("WriteSnapshot with its COMMIT reply lost: %v", err)
	}
	if armed.Load() {
		t.Fatal("the COMMIT's reply was not lost")
	}
	if ch.Users.Added != 4 {
		t.Errorf("changes reported = %+v, want the 4 users the committed attempt added", ch.Users)
	}
	equal(t, "customer_syncs", b.strings(t, `SELECT status, users_seen, users_added, roles_added FROM customer_syncs`),
		[]string{"succeeded|4|4|5"})
	equal(t, "history", b.strings(t, `SELECT change, count(*) FROM users_history GROUP BY 1`), []string{"added|4"})
}
