package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/report"
	"github.com/msads-syncer/syncer/internal/status"
)

func cmdRun(args []string, io IO) int {
	var c common
	var f syncFlags
	fs := newFlagSet("run", io, &c)
	c.addDryRun(fs, "read everything, write nothing (migrations included), print per customer what would change")
	c.addCustomer(fs)
	f.register(fs)
	summary := fs.String("summary", "", "write a JSON summary per customer to `FILE`")
	if code, done := parse(fs, args); done {
		return code
	}
	s, cleanup, err := openSync(&c, f, io, true)
	if err != nil {
		if code, ok := stoppedAtOnce(io, err); ok {
			return code
		}
		return fail(io, err)
	}
	defer cleanup()
	s.summaryPath = *summary
	s.push = true
	s.gauges = s.cfg.Metrics.PushgatewayURL != ""
	code, finished := untilHardStop(s.ctx, func() int { return executeRun(s.ctx, s) })
	if sc, ok := signalExit(s.ctx); ok {
		if !finished {
			s.logger.Warn("the run did not unwind in time after the second signal: exiting now")
		}
		fmt.Fprintf(io.Stderr, "syncer: %v\n", context.Cause(s.ctx))
		return sc
	}
	return code
}

// stoppedAtOnce reports the exit code of a command that a second signal
// stopped before it could run (while connecting or migrating).
func stoppedAtOnce(io IO, err error) (int, bool) {
	var s *secondSignal
	if !errors.As(err, &s) {
		return 0, false
	}
	fmt.Fprintf(io.Stderr, "syncer: %v\n", s)
	return signalCode(s), true
}

// syncFlags are the flags of the commands that sync (run, serve).
type syncFlags struct {
	allowMassRemoval bool
	skipMigrate      bool
}

func (f *syncFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.allowMassRemoval, "allow-mass-removal", false, "let a snapshot remove more than sync.removal_guard of a customer's users or client links")
	fs.BoolVar(&f.skipMigrate, "skip-migrate", false, "do not apply schema migrations at start")
}

// openSync loads the configuration and builds what a syncing command needs:
// logger (with live progress on a terminal when asked), metrics, the
// two-stage shutdown, the migrated database, store, API client and runner.
// cleanup releases them.
func openSync(c *common, f syncFlags, io IO, withProgress bool) (runSetup, func(), error) {
	cfg, err := loadConfig(c, io)
	if err != nil {
		return runSetup{}, nil, err
	}
	if err := cfg.ValidateCredentials(); err != nil {
		return runSetup{}, nil, err
	}
	logOut, prog := io.Stderr, (*progress)(nil)
	if withProgress {
		logOut, prog = newProgress(io.Stderr, cfg.Log.Format)
	}
	logger := newLogger(logOut, cfg.Log.Format, cfg.Log.Level)
	m := newMetrics(cfg)
	ctx, stop, cancel := signalContexts(io, cfg.Sync.ShutdownTimeout.D(), logger)
	// A dry run writes nothing, migrations included.
	pool, err := openDB(ctx, cfg, logger, !f.skipMigrate && !c.dryRun)
	if err != nil {
		if _, ok := signalExit(ctx); ok {
			err = context.Cause(ctx)
		}
		cancel()
		return runSetup{}, nil, err
	}
	runner, err := newRunner(cfg, newStore(pool, cfg, f.allowMassRemoval, logger), m, logger)
	if err != nil {
		pool.Close()
		cancel()
		return runSetup{}, nil, err
	}
	s := runSetup{
		ctx: ctx, stop: stop,
		cfg: cfg, pool: pool, runner: runner, metrics: m, logger: logger, io: io, progress: prog,
		opts: job.Options{Only: c.customers, DryRun: c.dryRun, Stop: stop},
	}
	cleanup := func() {
		// A refresh token rotated while the run was stopping is still being
		// saved: let it finish (bounded) before the pool goes. After a
		// second signal (even one that comes during this wait) the wait is
		// short, and a pool that does not close at once is left to the
		// process's exit.
		hard := func() bool { _, ok := signalExit(ctx); return ok }
		wait := tokenSaveWait
		if hard() {
			wait = hardCleanupWait
		}
		wctx, wcancel := context.WithTimeout(context.Background(), wait)
		defer wcancel()
		stopWatch := context.AfterFunc(ctx, func() {
			if hard() {
				time.AfterFunc(hardCleanupWait, wcancel)
			}
		})
		defer stopWatch()
		if err := runner.Client.Close(wctx); err != nil {
			logger.Error("a token refresh was still running at exit", slog.Any("error", err))
		}
		closed := make(chan struct{})
		go func() {
			pool.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-wctx.Done(): // after a second signal: bounded
			if !hard() {
				<-closed
			}
		}
		cancel()
	}
	return s, cleanup, nil
}

// runSetup is everything one run needs; `run` and `demo` share it.
type runSetup struct {
	// ctx ends at a second signal or when the grace period after the first
	// is over; stop is closed at the first.
	ctx         context.Context
	stop        <-chan struct{}
	cfg         *config.Config
	pool        *pgxpool.Pool
	runner      *job.Runner
	metrics     *metrics.Metrics
	logger      *slog.Logger
	io          IO
	progress    *progress
	opts        job.Options
	summaryPath string
	push        bool // push metrics to the configured Pushgateway
	// gauges: the metrics are read (served, or pushed to a Pushgateway),
	// so afterRun refreshes the gauges the warehouse gives.
	gauges bool
}

// executeRun runs one sync and its follow-ups (dry-run report, summary,
// invitation alerts, metrics push) and returns the exit code.
func executeRun(ctx context.Context, s runSetup) int {
	if s.progress != nil {
		s.runner.Counters.CustomersDone.Store(0)
		s.progress.start(s.runner.Counters)
	}
	res, err := s.runner.Run(ctx, s.opts)
	if s.progress != nil {
		s.progress.stop()
	}
	if err != nil {
		return fail(s.io, err)
	}
	if res.Status == status.Locked {
		fmt.Fprintln(s.io.Stderr, "syncer: another run holds the lock for these credentials; nothing done")
		return ExitOK
	}
	if s.opts.DryRun {
		printDryRun(s.io, res)
	}
	if s.summaryPath != "" {
		if err := writeSummary(s.summaryPath, res); err != nil {
			s.logger.ErrorContext(ctx, "could not write the summary", slog.Any("error", err))
		}
	}
	if ctx.Err() != nil {
		// Stopped at once (or the grace period is over): no follow-ups.
		s.logger.WarnContext(ctx, "stopped: invitation alerts and metrics push skipped")
		return exitCode(s.io, res)
	}
	// The follow-ups have their own short bounds (the webhook's
	// invite.DefaultPostTimeout, metrics.PushTimeout) and end at once on a
	// second signal.
	if !s.opts.DryRun {
		afterRun(ctx, s)
	}
	if s.push && s.cfg.Metrics.PushgatewayURL != "" {
		if err := s.metrics.Push(ctx, s.cfg.Metrics.PushgatewayURL, pushGroup(s.cfg), nil); err != nil {
			logAfterRun(ctx, s, "metrics push failed", err)
		}
	}
	return exitCode(s.io, res)
}

// pushGroup is the Pushgateway grouping key of the configuration: job
// "syncer", the credential key and, when set, metrics.instance.
func pushGroup(cfg *config.Config) metrics.Group {
	return metrics.Group{Credential: credentialKey(cfg), Instance: cfg.Metrics.Instance}
}

// exitCode maps a run's result to the design's exit codes, printing one clear
// line when nothing could be synced.
func exitCode(io IO, res *job.Result) int {
	succeeded := len(res.Customers) - res.Failed
	switch {
	case res.Status == status.Succeeded:
		return ExitOK
	case res.Fatal != nil:
		return fail(io, res.Fatal)
	case res.Status == status.Partial:
		fmt.Fprintf(io.Stderr, "syncer: %s\n", errorLine(io, failedCustomers(res)))
		return ExitPartial
	case res.Status == status.Canceled && succeeded > 0:
		fmt.Fprintf(io.Stderr, "syncer: run canceled after %d of %d customers\n", succeeded, len(res.Customers))
		return ExitPartial
	case res.Failed > 0:
		return fail(io, errors.New(failedCustomers(res)))
	default:
		return fail(io, errors.New(res.Error))
	}
}

// printDryRun prints, per customer, what the run would add, change and remove.
func printDryRun(io IO, res *job.Result) {
	fmt.Fprintln(io.Stdout, "Dry run: nothing was written. Changes a real run would make:")
	head := []string{"customer", "name", "status"}
	for _, e := range (load.Changes{}).Entities() {
		head = append(head, e.Name+" +/~/-")
	}
	t := report.NewTable(append(head, "error")...)
	for _, c := range res.Customers {
		row := []any{c.CustomerID, c.Name, string(c.Status)}
		for _, e := range c.Changes.Entities() {
			// A reappearing row is added back.
			row = append(row, fmt.Sprintf("%d/%d/%d", e.Added+e.Reappeared, e.Changed, e.Removed))
		}
		t.Row(append(row, c.Error)...)
	}
	_ = t.Write(io.Stdout)
}

// writeSummary writes the run's JSON summary atomically.
func writeSummary(path string, res *job.Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return os.Rename(tmp, path)
}
