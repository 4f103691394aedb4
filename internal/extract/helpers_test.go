package extract

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
)

// recObserver records Observer events.
type recObserver struct {
	mu        sync.Mutex
	calls     map[string]int // op+"/"+outcome
	retries   int
	throttles []time.Duration
}

func (o *recObserver) Call(op, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[string]int{}
	}
	o.calls[op+"/"+outcome]++
}

func (o *recObserver) Retry(string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retries++
}

func (o *recObserver) Throttle(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.throttles = append(o.throttles, d)
}

func (o *recObserver) throttleCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.throttles)
}

func (o *recObserver) count(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls[key]
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// simConfig returns a Config for the simulator with fast test timings.
func simConfig(t testing.TB, s *msadstest.Server) Config {
	t.Helper()
	return Config{
		APIURL:               s.APIURL(),
		TokenURL:             s.TokenURL(),
		DeveloperToken:       s.DeveloperToken(),
		ClientID:             s.ClientID(),
		ClientSecret:         s.ClientSecret(),
		RefreshToken:         s.RefreshToken(),
		RequestsPerSecond:    1000,
		ThrottleWait:         50 * time.Millisecond,
		RequestTimeout:       2 * time.Second,
		RetryMaxElapsed:      3 * time.Second,
		RetryInitialInterval: 5 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

type bundle struct {
	srv    *msadstest.Server
	ds     *msadstest.Dataset
	client *Client
	obs    *recObserver
	store  *MemoryTokenStore
}

// setup starts a simulator over a small generated data set and a client.
func setup(t testing.TB, mutate ...func(*Config)) *bundle {
	t.Helper()
	ds := msadstest.Generate(42, 3, 12)
	srv := msadstest.NewServer(ds.Clone())
	t.Cleanup(srv.Close)
	b := &bundle{srv: srv, ds: ds, obs: &recObserver{}, store: &MemoryTokenStore{}}
	cfg := simConfig(t, srv)
	cfg.Observer = b.obs
	cfg.Store = b.store
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.client = c
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
