// Package schedule runs the sync on a cron schedule for `syncer serve`. It wraps
// robfig/cron/v3: the schedule is parsed when the configuration loads, runs
// never overlap (a tick that finds the previous run still going is skipped and
// logged), and Stop waits for the running sync within a bound.
package schedule

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Job is one scheduled run. Its ctx is the one given to Start: cancelling it
// cancels the running job.
type Job func(ctx context.Context)

// Scheduler fires a Job on a cron schedule, never two at once.
type Scheduler struct {
	cron     *cron.Cron
	schedule cron.Schedule
	job      Job
	logger   *slog.Logger

	mu      sync.Mutex
	running bool
	skipped int
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

// Start begins firing the job; ctx is handed to every run.
func (s *Scheduler) Start(ctx context.Context) {
	s.cron.Schedule(s.schedule, cron.FuncJob(func() { s.fire(ctx) }))
	s.cron.Start()
	s.logger.InfoContext(ctx, "scheduler started", slog.Time("next_run", s.Next()))
}

// RunNow fires the job at once, in the background, unless a run is going.
func (s *Scheduler) RunNow(ctx context.Context) {
	go s.fire(ctx)
}

// fire runs the job unless the previous run is still going.
func (s *Scheduler) fire(ctx context.Context) {
	s.mu.Lock()
	if s.running {
		s.skipped++
		s.mu.Unlock()
		s.logger.WarnContext(ctx, "previous sync still running: skipping this tick")
		return
	}
	if ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	s.job(ctx)
}

// Next returns when the job fires next.
func (s *Scheduler) Next() time.Time { return s.schedule.Next(time.Now().In(time.UTC)) }

// Skipped returns how many ticks were skipped because a run was still going.
func (s *Scheduler) Skipped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}

// Stop stops firing new runs and waits for a running one to end, or for ctx
// to be done, whichever comes first. It reports whether the running job ended.
func (s *Scheduler) Stop(ctx context.Context) bool {
	done := s.cron.Stop() // waits for jobs started by cron
	// RunNow jobs are not tracked by cron: wait on our own flag too.
	for {
		select {
		case <-ctx.Done():
			return false
		case <-done.Done():
		}
		s.mu.Lock()
		running := s.running
		s.mu.Unlock()
		if !running {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}
