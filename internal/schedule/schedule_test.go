package schedule

import (
	"context"
	"io"
	"log/slog"
	"sync"
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

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A run that RunNow started just before Stop is one Stop waits for: when Stop
// returns, the run has ended and no run starts afterwards.
func TestStopWaitsForRunNowStartedJustBefore(t *testing.T) {
	t.Parallel()
	for range 200 {
		var started, finished atomic.Int32
		var stopReturned atomic.Bool
		job := func(context.Context) {
			if stopReturned.Load() {
				t.Error("a run started after Stop returned")
			}
			started.Add(1)
			time.Sleep(time.Millisecond)
			finished.Add(1)
		}
		s := New(cron.ConstantDelaySchedule{Delay: time.Hour}, job, discard())
		ran := s.RunNow(t.Context())
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		ok := s.Stop(ctx)
		stopReturned.Store(true)
		cancel()
		if !ok {
			t.Fatal("Stop gave up on a 1ms run")
		}
		if !ran {
			t.Fatal("RunNow before Stop did not run")
		}
		if s, f := started.Load(), finished.Load(); s != 1 || f != 1 {
			t.Fatalf("when Stop returned: %d runs started, %d finished; want 1 and 1", s, f)
		}
	}
	time.Sleep(20 * time.Millisecond) // a stray run would show up here
}

// RunNow racing Stop: either the run is refused, or it began before Stop and
// Stop waited for it. Never a run that starts or goes on after Stop returned.
func TestRunNowRacingStop(t *testing.T) {
	t.Parallel()
	for range 300 {
		var running, after atomic.Int32
		var stopReturned atomic.Bool
		job := func(context.Context) {
			running.Add(1)
			defer running.Add(-1)
			if stopReturned.Load() {
				after.Add(1)
			}
			time.Sleep(100 * time.Microsecond)
		}
		s := New(everyTick(50*time.Microsecond), job, discard())
		s.Start(t.Context())
		var wg sync.WaitGroup
		results := make(chan bool, 8)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- s.RunNow(t.Context())
			}()
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		ok := s.Stop(ctx)
		stopReturned.Store(true)
		cancel()
		if !ok {
			t.Fatal("Stop gave up")
		}
		if n := running.Load(); n != 0 {
			t.Fatalf("%d runs still going when Stop returned", n)
		}
		wg.Wait()
		close(results)
		if s.RunNow(t.Context()) {
			t.Fatal("RunNow after Stop started a run")
		}
		time.Sleep(time.Millisecond)
		if n := after.Load() + running.Load(); n != 0 {
			t.Fatalf("%d runs started after Stop returned", n)
		}
	}
}

func TestRunNowRefusedWhileRunningAndAfterCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var runs atomic.Int32
	s := New(cron.ConstantDelaySchedule{Delay: time.Hour}, func(context.Context) { runs.Add(1); <-release }, discard())
	if !s.RunNow(t.Context()) {
		t.Fatal("first RunNow refused")
	}
	if s.RunNow(t.Context()) {
		t.Fatal("RunNow while a run is going started another")
	}
	if s.Skipped() != 1 {
		t.Fatalf("skipped = %d, want 1", s.Skipped())
	}
	close(release)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if !s.Stop(ctx) {
		t.Fatal("Stop gave up")
	}
	canceled, cancel2 := context.WithCancel(t.Context())
	cancel2()
	s2 := New(cron.ConstantDelaySchedule{Delay: time.Hour}, func(context.Context) { runs.Add(1) }, discard())
	if s2.RunNow(canceled) {
		t.Fatal("RunNow with a done ctx started a run")
	}
	if runs.Load() != 1 {
		t.Fatalf("runs = %d, want 1", runs.Load())
	}
}
