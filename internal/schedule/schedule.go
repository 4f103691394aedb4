// Package schedule runs the sync on a cron schedule for `syncer serve`. It wraps
// robfig/cron/v3: the schedule is parsed when the configuration loads, runs
// never overlap (a tick that finds the previous run still going is skipped and
// logged), and Stop waits for the running sync within a bound.
//
// Every run, whether cron's tick or RunNow started it, is counted before it
// starts and under the same lock that Stop takes: once Stop has begun no run
// starts, and Stop waits for each run that did.
package schedule

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Job is one scheduled run. Its ctx is the one given to Start or RunNow:
// cancelling it cancels the running job.
type Job func(ctx context.Context)

// Scheduler fires a Job on a cron schedule, never two at once.
type Scheduler struct {
	cron     *cron.Cron
	schedule cron.Schedule
	job      Job
	logger   *slog.Logger

	mu      sync.Mutex
	running bool
	stopped bool
	skipped int
	runs    sync.WaitGroup // every run that began; Add only under mu while !stopped
}

// New returns a Scheduler for schedule (from cron.ParseStandard).
func New(schedule cron.Schedule, job Job, logger *slog.Logger) *Scheduler {
	return &Scheduler{
		cron:     cron.New(cron.WithLocation(time.UTC)),
		schedule: schedule,
		job:      job,
		logger:   logger,
	}
}

// Start begins firing the job; ctx is handed to every run. After Stop it
// does nothing.
func (s *Scheduler) Start(ctx context.Context) {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return
	}
	s.cron.Schedule(s.schedule, cron.FuncJob(func() { s.fire(ctx) }))
	s.cron.Start()
	s.logger.InfoContext(ctx, "scheduler started", slog.Time("next_run", s.Next()))
}

// RunNow starts the job at once, in the background, and reports whether it
// did: it does not when a run is going (the call counts as a skipped tick),
// when Stop has begun, or when ctx is done. A run it starts is one that Stop
// waits for.
func (s *Scheduler) RunNow(ctx context.Context) bool {
	if !s.begin(ctx) {
		return false
	}
	go func() {
		defer s.end()
		s.job(ctx)
	}()
	return true
}

// fire runs the job unless the previous run is still going (cron's ticks).
func (s *Scheduler) fire(ctx context.Context) {
	if !s.begin(ctx) {
		return
	}
	defer s.end()
	s.job(ctx)
}

// begin claims the right to run: not stopped, ctx alive, no run going.
func (s *Scheduler) begin(ctx context.Context) bool {
	s.mu.Lock()
	if s.stopped || ctx.Err() != nil {
		s.mu.Unlock()
		return false
	}
	if s.running {
		s.skipped++
		s.mu.Unlock()
		s.logger.WarnContext(ctx, "previous sync still running: skipping this tick")
		return false
	}
	s.running = true
	s.runs.Add(1)
	s.mu.Unlock()
	return true
}

// end releases what begin claimed.
func (s *Scheduler) end() {
	s.mu.Lock()
	s.running = false
	s.mu.Unlock()
	s.runs.Done()
}

// Next returns when the job fires next.
func (s *Scheduler) Next() time.Time { return s.schedule.Next(time.Now().In(time.UTC)) }

// Skipped returns how many ticks were skipped because a run was still going.
func (s *Scheduler) Skipped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}

// Stop stops firing new runs at once (cron's ticks and RunNow are refused
// from the moment it is called) and waits for every run that began, or for
// ctx to be done, whichever comes first. It reports whether no run is left
// going. Calling it again waits again.
func (s *Scheduler) Stop(ctx context.Context) bool {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	cronDone := s.cron.Stop()
	done := make(chan struct{})
	go func() {
		<-cronDone.Done()
		// No Add can happen any more: stopped was set under mu before.
		s.runs.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
