package extract

import (
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
)

// BenchmarkFetch fetches 20 customers with 110 listed users each (some
// shared: about 2,000 distinct users) from the simulator at 20ms latency per call with a client rate of
// 200 requests/s, 8 customers at a time with one shared UserCache. It
// reports wall time against the ideal calls/rate, and duplicate GetUser
// calls (which must be 0).
func BenchmarkFetch(b *testing.B) {
	const rps = 200.0
	ds := msadstest.Generate(2026, 20, 110)
	srv := msadstest.NewServer(ds.Clone())
	b.Cleanup(srv.Close)
	srv.SetFault(msadstest.AnyOp, msadstest.Fault{Latency: 20 * time.Millisecond})
	cfg := simConfig(b, srv)
	cfg.RequestsPerSecond = rps
	cfg.Store = &MemoryTokenStore{}
	distinct := ds.DistinctListedUsers()

	var wall, ideal float64
	var dups, calls int
	for b.Loop() {
		b.StopTimer()
		c, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		srv.ResetCalls()
		b.StartTimer()
		start := time.Now()
		cache := NewUserCache()
		g, ctx := errgroup.WithContext(b.Context())
		g.SetLimit(8)
		for _, cid := range ds.CustomerIDs() {
			g.Go(func() error {
				_, _, err := c.FetchCustomer(ctx, cid, cache, FetchOptions{Accounts: true})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start).Seconds()
		calls = srv.TotalCalls()
		ideal += float64(calls) / rps
		dups += srv.Calls(msadstest.OpGetUser) - distinct
	}
	n := float64(b.N)
	b.ReportMetric(wall/n, "wall_s")
	b.ReportMetric(ideal/n, "ideal_s")
	b.ReportMetric(wall/ideal, "ratio")
	b.ReportMetric(float64(dups)/n, "dup_getuser")
	b.ReportMetric(float64(calls), "calls")
	b.ReportMetric(float64(ds.DistinctListedUsers()), "users")
}
