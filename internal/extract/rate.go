package extract

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// governor is the Client's shared pacing: one token-bucket limiter for every
// call, plus a shared pause after the API throttles. When a 117/429 arrives,
// every caller waits until the pause ends; answers to requests that were
// already in flight when the pause began belong to the same storm and do not
// start or extend another pause. Each new pause also halves the rate (down to
// a floor); the rate climbs back by 10% per recoverEvery successful calls.
type governor struct {
	lim        *rate.Limiter
	configured float64
	floor      float64
	now        func() time.Time

	mu          sync.Mutex
	pausedUntil time.Time // zero when never paused
	current     float64
	successes   int
}

const recoverEvery = 20

func newGovernor(rps float64) *governor {
	burst := 1
	return &governor{
		lim:        rate.NewLimiter(rate.Limit(rps), burst),
		configured: rps,
		floor:      math.Min(rps, math.Max(rps/16, 0.2)),
		current:    rps,
		now:        time.Now,
	}
}

// wait blocks until no pause is in force and a limiter token is available,
// or ctx ends.
func (g *governor) wait(ctx context.Context) error {
	if err := g.waitPause(ctx); err != nil {
		return err
	}
	if err := g.lim.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The limiter refuses when the wait would exceed ctx's deadline.
		return context.DeadlineExceeded
	}
	// A pause may have begun while we waited for the token.
	return g.waitPause(ctx)
}

func (g *governor) waitPause(ctx context.Context) error {
	for {
		g.mu.Lock()
		until := g.pausedUntil
		g.mu.Unlock()
		d := until.Sub(g.now())
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// throttled records a throttle answer to a request sent at sent. It returns
// the new pause length, or 0 when the answer belongs to a storm whose pause
// already began (the request was sent before the current pause ended).
func (g *governor) throttled(sent time.Time, wait time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.pausedUntil.IsZero() && sent.Before(g.pausedUntil) {
		return 0
	}
	g.pausedUntil = g.now().Add(wait)
	g.successes = 0
	if next := math.Max(g.current/2, g.floor); next != g.current {
		g.current = next
		g.lim.SetLimit(rate.Limit(next))
	}
	return wait
}

// succeeded records a successful call and recovers the rate gradually.
func (g *governor) succeeded() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.current >= g.configured {
		return
	}
	g.successes++
	if g.successes < recoverEvery {
		return
	}
	g.successes = 0
	g.current = math.Min(g.configured, g.current*1.1)
	g.lim.SetLimit(rate.Limit(g.current))
}

// rate returns the current request rate.
func (g *governor) rate() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.current
}
