package schedule

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// everyTick fires every d: cron's own "@every" is limited to whole seconds.
type everyTick time.Duration

func (e everyTick) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

func TestSchedulerSkipsOverlapAndStopWaits(t *testing.T) {
	t.Parallel()
	var runs, concurrent, maxConcurrent atomic.Int32
	release := make(chan struct{})
	job := func(ctx context.Context) {
		runs.Add(1)
		n := concurrent.Add(1)
		if n > maxConcurrent.Load() {
			maxConcurrent.Store(n)
		}
		<-release
		concurrent.Add(-1)
	}
	s := New(cron.ConstantDelaySchedule{Delay: time.Second}, job, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := t.Context()
	s.RunNow(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for runs.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// A second fire while the first runs is skipped.
	s.fire(ctx)
	if got := s.Skipped(); got != 1 {
		t.Fatalf("skipped = %d, want 1", got)
	}
	if got := runs.Load(); got != 1 {
		t.Fatalf("runs = %d, want 1", got)
	}

	// Stop with a short bound gives up while the job runs...
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if s.Stop(short) {
		t.Fatal("Stop reported the job ended while it was still running")
	}
	// ...and waits for it once it is released.
	close(release)
	long, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if !s.Stop(long) {
		t.Fatal("Stop did not see the job end")
	}
	if maxConcurrent.Load() != 1 {
		t.Fatalf("max concurrent runs = %d", maxConcurrent.Load())
	}
}

func TestSchedulerFiresOnSchedule(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	s := New(everyTick(20*time.Millisecond), func(context.Context) { runs.Add(1) }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Start(t.Context())
	deadline := time.Now().Add(10 * time.Second)
	for runs.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s.Stop(ctx)
	if runs.Load() < 2 {
		t.Fatalf("runs = %d after 10s, want >= 2", runs.Load())
	}
	after := runs.Load()
	time.Sleep(100 * time.Millisecond)
	if runs.Load() != after {
		t.Fatal("job fired after Stop")
	}
}
