package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/schedule"
)

func cmdServe(args []string, io IO) int {
	var c common
	fs := newFlagSet("serve", io, &c)
	now := fs.Bool("now", false, "also sync once at start, not only on the schedule")
	allowMass := fs.Bool("allow-mass-removal", false, "let a snapshot remove more than sync.removal_guard of a customer's users")
	skipMigrate := fs.Bool("skip-migrate", false, "do not apply schema migrations at start")
	if code, done := parse(fs, args); done {
		return code
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	if err := cfg.ValidateCredentials(); err != nil {
		return fail(io, err)
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	m := metrics.New()
	ctx, stop, cancel := signalContexts(io, cfg.Sync.ShutdownTimeout.D(), logger)
	defer cancel()

	pool, err := openDB(ctx, cfg, logger, !*skipMigrate && !c.dryRun)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	runner, err := newRunner(cfg, newStore(pool, cfg, *allowMass, logger), m, logger)
	if err != nil {
		return fail(io, err)
	}

	st := &serveState{}
	setup := runSetup{cfg: cfg, pool: pool, runner: runner, metrics: m, logger: logger, io: io,
		opts: job.Options{Only: c.customers, DryRun: c.dryRun, Stop: stop}}
	sched := schedule.New(cfg.CronSchedule, func(ctx context.Context) {
		res, err := runner.Run(ctx, setup.opts)
		if err != nil {
			logger.ErrorContext(ctx, "sync could not run", slog.Any("error", err))
			st.set("failed")
			return
		}
		if res.Status != job.StatusLocked {
			st.set(res.Status)
		}
		if !setup.opts.DryRun && res.Status != job.StatusLocked {
			afterRun(ctx, setup)
		}
	}, logger)

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Metrics.Listen)
	if err != nil {
		return fail(io, fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err))
	}
	srv := &http.Server{Handler: serveMux(m, pool, st), ReadHeaderTimeout: 10 * time.Second}
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

	<-stop // first signal: stop scheduling, let the running sync finish
	waitCtx, cancelWait := context.WithTimeout(ctx, cfg.Sync.ShutdownTimeout.D())
	defer cancelWait()
	if !sched.Stop(waitCtx) {
		logger.Warn("running sync did not finish in time; it was canceled")
	}
	sctx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	_ = srv.Shutdown(sctx)
	logger.Info("stopped")
	return ExitOK
}

// serveState is what /readyz reports on: the last run's status.
type serveState struct {
	mu         sync.Mutex
	lastStatus string
}

func (s *serveState) set(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastStatus = status
}

func (s *serveState) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastStatus
}

// serveMux serves /metrics, /healthz (process alive) and /readyz (database
// reachable and the last run not failed).
func serveMux(m *metrics.Metrics, pool *pgxpool.Pool, st *serveState) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := pool.Ping(ctx); err != nil {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
			return
		}
		if s := st.get(); s == job.StatusFailed {
			http.Error(w, "last sync failed", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
