package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/schedule"
	"github.com/msads-syncer/syncer/internal/status"
)

func cmdServe(args []string, io IO) int {
	var c common
	var f syncFlags
	fs := newFlagSet("serve", io, &c)
	c.addDryRun(fs, "every scheduled sync reads everything and writes nothing")
	c.addCustomer(fs)
	f.register(fs)
	now := fs.Bool("now", false, "also sync once at start, not only on the schedule")
	if code, done := parse(fs, args); done {
		return code
	}
	setup, cleanup, err := openSync(&c, f, io, false)
	if err != nil {
		if code, ok := stoppedAtOnce(io, err); ok {
			return code
		}
		return fail(io, err)
	}
	defer cleanup()
	setup.gauges = true // served on metrics.listen
	ctx, stop, cfg, logger, runner, m := setup.ctx, setup.stop, setup.cfg, setup.logger, setup.runner, setup.metrics

	st := &serveState{}
	sched := schedule.New(cfg.CronSchedule, func(ctx context.Context) {
		res, err := runner.Run(ctx, setup.opts)
		if err != nil {
			logger.ErrorContext(ctx, "sync could not run", slog.Any("error", err))
			st.set(status.Failed)
			return
		}
		if res.Status != status.Locked {
			st.set(res.Status)
		}
		if !setup.opts.DryRun && res.Status != status.Locked {
			afterRun(ctx, setup)
		}
	}, logger)

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Metrics.Listen)
	if err != nil {
		return fail(io, fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err))
	}
	srv := &http.Server{Handler: serveMux(m, st), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", slog.Any("error", err))
		}
	}()
	logger.InfoContext(ctx, "serving", slog.String("listen", ln.Addr().String()), slog.String("schedule", cfg.Schedule))

	// Gauges from the database at start, so alerts work before the first run.
	afterRun(ctx, setup)
	sched.Start(ctx)
	if *now {
		sched.RunNow(ctx)
	}
	st.ready.Store(true)

	<-stop // first signal: stop scheduling, let the running sync finish
	st.ready.Store(false)
	waitCtx, cancelWait := context.WithTimeout(ctx, cfg.Sync.ShutdownTimeout.D())
	defer cancelWait()
	if !sched.Stop(waitCtx) {
		if _, hard := signalExit(ctx); hard {
			// Second signal: the sync's ctx is canceled; give it a moment
			// to record the run as canceled, then go whatever it is doing.
			hctx, cancelHard := context.WithTimeout(context.Background(), hardStopWait)
			if !sched.Stop(hctx) {
				logger.Warn("the running sync did not unwind in time after the second signal: exiting now")
			}
			cancelHard()
		} else {
			logger.Warn("running sync did not finish in time; it was canceled")
		}
	}
	sctx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	stopWatch := context.AfterFunc(ctx, func() {
		if _, hard := signalExit(ctx); hard {
			cancelShutdown()
		}
	})
	defer stopWatch()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if code, hard := signalExit(ctx); hard {
		fmt.Fprintf(io.Stderr, "syncer: %v\n", context.Cause(ctx))
		return code
	}
	logger.Info("stopped")
	return ExitOK
}

// serveState is what /readyz reports on: whether the process can serve
// (started: migrated, scheduling, metrics registered; not stopping), and,
// for people reading the probe, the last run's status. A failed sync does
// not make the process unready: restarting it would not mend the sync, and
// the metrics and alerts say what failed.
type serveState struct {
	ready      atomic.Bool
	mu         sync.Mutex
	lastStatus status.Status
}

func (s *serveState) set(st status.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastStatus = st
}

func (s *serveState) get() status.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastStatus
}

// serveMux serves /metrics, /healthz (process alive) and /readyz (started
// and not stopping: able to serve /metrics and to sync on schedule).
func serveMux(m *metrics.Metrics, st *serveState) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !st.ready.Load() {
			http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
			return
		}
		last := st.get()
		if last == "" {
			last = "none yet"
		}
		fmt.Fprintf(w, "ready (last sync: %s)\n", last)
	})
	return mux
}
