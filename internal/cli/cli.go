// Package cli is the `syncer` command line: it parses the command and its
// flags, loads the configuration, builds the pool, store, API client and
// runner, and maps outcomes to the exit codes of the design. `cmd/syncer`
// only calls Main.
package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/redact"
)

// Exit codes of the design.
const (
	ExitOK      = 0
	ExitFatal   = 1 // nothing could be synced: bad config, database, authentication
	ExitPartial = 2 // some customers failed, others synced
	ExitStale   = 3 // `invitations --fail-on-stale` found stale invitations
	// ExitUsage is a bad command line: like a bad config, nothing could run,
	// so it keeps to the design's codes rather than sysexits' 64.
	ExitUsage = ExitFatal
)

// Version and Commit are set at build time with -ldflags -X.
var (
	Version = "dev"
	Commit  = ""
)

// IO is the process's environment, injected so tests can run commands
// in-process.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// LookupEnv tells an unset variable from an empty one (an unset
	// ${NAME} in the config is an error); nil derives it from Getenv, an
	// empty value then counting as unset.
	LookupEnv func(string) (string, bool)
	// Signals delivers SIGINT/SIGTERM; nil means the process's own.
	Signals <-chan os.Signal

	// secrets are the secret values of the loaded configuration, removed
	// from every error printed (see fail).
	secrets *redact.Set
}

// Main runs the command line and returns the process exit code.
func Main(args []string, io IO) int {
	switch {
	case io.Getenv == nil && io.LookupEnv == nil:
		io.Getenv, io.LookupEnv = os.Getenv, os.LookupEnv
	case io.Getenv == nil:
		lookup := io.LookupEnv
		io.Getenv = func(k string) string { v, _ := lookup(k); return v }
	case io.LookupEnv == nil:
		io.LookupEnv = config.GetenvEnv(io.Getenv)
	}
	if io.secrets == nil {
		io.secrets = &redact.Set{}
	}
	if len(args) == 0 {
		printUsage(io.Stdout)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printUsage(io.Stdout)
		return ExitOK
	case "help":
		return cmdHelp(args[1:], io)
	case "--version", "-version":
		return cmdVersion(nil, io)
	}
	name, rest, err := hoistFlags(args)
	if err != nil {
		return fail(io, err)
	}
	if name == "help" {
		return cmdHelp(rest, io)
	}
	c, ok := lookupCommand(name)
	if !ok {
		return fail(io, fmt.Errorf("unknown command %q; the commands are %s (see syncer help)", name, commandNames()))
	}
	return c.run(rest, io)
}

// common holds the flags every command shares.
type common struct {
	configPath string
	dryRun     bool
	customers  int64List
	logFormat  string
	logLevel   string
}

type int64List []int64

func (l *int64List) String() string { return fmt.Sprint([]int64(*l)) }

func (l *int64List) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(part), 10, 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("%q is not a customer id", part)
		}
		*l = append(*l, v)
	}
	return nil
}

// newFlagSet returns the flag set of a command that reads the config:
// --config, --log-format and --log-level. Commands add --dry-run and
// --customer (addDryRun, addCustomer) only when they honour them.
func newFlagSet(name string, io IO, c *common) *flag.FlagSet {
	fs := newBareFlagSet(name, io)
	def := io.Getenv("SYNCER_CONFIG")
	if def == "" {
		def = "config.yaml"
	}
	fs.StringVar(&c.configPath, "config", def, "read the configuration from `FILE` ($SYNCER_CONFIG changes the default)")
	c.addLogFlags(fs)
	return fs
}

// newBareFlagSet is a flag set with no flags. Parse errors and help are
// printed by parse, not by the flag package: the set's output is a
// flagOutput that drops the package's own messages and carries the
// command's stdout and stderr to parse.
func newBareFlagSet(name string, cio IO) *flag.FlagSet {
	fs := flag.NewFlagSet("syncer "+name, flag.ContinueOnError)
	fs.SetOutput(&flagOutput{stdout: cio.Stdout, stderr: cio.Stderr})
	fs.Usage = func() {}
	return fs
}

// flagOutput is the output of a command's flag set; see newBareFlagSet.
type flagOutput struct{ stdout, stderr io.Writer }

func (*flagOutput) Write(p []byte) (int, error) { return len(p), nil }

// flagIO returns the stdout and stderr of a flag set's command.
func flagIO(fs *flag.FlagSet) (stdout, stderr io.Writer) {
	if o, ok := fs.Output().(*flagOutput); ok {
		return cmp.Or[io.Writer](o.stdout, io.Discard), cmp.Or[io.Writer](o.stderr, io.Discard)
	}
	return io.Discard, fs.Output()
}

func (c *common) addLogFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.logFormat, "log-format", "", "`format` of the logs: json or text (overrides log.format)")
	fs.StringVar(&c.logLevel, "log-level", "", "lowest `level` logged: debug, info, warn or error (overrides log.level)")
}

func (c *common) addDryRun(fs *flag.FlagSet, usage string) {
	fs.BoolVar(&c.dryRun, "dry-run", false, usage)
}

func (c *common) addCustomer(fs *flag.FlagSet) {
	fs.Var(&c.customers, "customer", "only this customer `ID` (repeatable, or comma-separated)")
}

// parse parses a command's flags; it returns done=true with an exit code
// when parsing ended the command: --help (the command's help on stdout,
// exit 0) or a usage error (one line on stderr, exit 1).
func parse(fs *flag.FlagSet, args []string) (code int, done bool) {
	name := strings.TrimPrefix(fs.Name(), "syncer ")
	stdout, stderr := flagIO(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c, _ := lookupCommand(name)
			printCommandHelp(stdout, c, fs)
			return ExitOK, true
		}
		fmt.Fprintf(stderr, "%s: %s (see syncer help %s)\n", fs.Name(), oneLine(err.Error()), name)
		return ExitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (see syncer help %s)\n", fs.Name(), fs.Arg(0), name)
		return ExitUsage, true
	}
	return 0, false
}

// loadConfig loads the file and applies the logging overrides.
func loadConfig(c *common, io IO) (*config.Config, error) {
	cfg, err := config.LoadEnv(c.configPath, io.LookupEnv)
	if err != nil {
		return nil, err
	}
	addSecrets(io, cfg)
	if c.logFormat != "" {
		cfg.Log.Format = c.logFormat
	}
	if c.logLevel != "" {
		cfg.Log.Level = c.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// newLogger builds the slog logger of the configuration.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by config
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// fail prints one clear line to stderr (see errorLine) and returns
// ExitFatal.
func fail(io IO, err error) int {
	fmt.Fprintf(io.Stderr, "syncer: %s\n", errorLine(io, err.Error()))
	return ExitFatal
}

// Bounds of the stop at once (second signal). A command gets hardStopWait
// to unwind (the run recorded as canceled, the lock released) and then
// returns whatever it is doing; cleanup then waits at most hardCleanupWait
// (a rotated token being saved, the pool closing). Together they keep the
// exit within 2 s of the second signal.
const (
	hardStopWait    = 1 * time.Second
	hardCleanupWait = 400 * time.Millisecond
	// tokenSaveWait bounds the wait at exit for a rotated refresh token
	// still being saved, when no second signal came.
	tokenSaveWait = 15 * time.Second
)

// secondSignal is the cause of the signal ctx when a second SIGINT/SIGTERM
// ended it.
type secondSignal struct{ sig os.Signal }

func (e *secondSignal) Error() string { return "stopped at once by a second " + signalName(e.sig) }

func signalName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

// signalExit returns the exit code of a command that a second signal
// stopped: 128 + the signal's number, 130 for SIGINT and 143 for SIGTERM.
func signalExit(ctx context.Context) (int, bool) {
	var s *secondSignal
	if ctx == nil || !errors.As(context.Cause(ctx), &s) {
		return 0, false
	}
	return signalCode(s), true
}

func signalCode(s *secondSignal) int {
	if n, ok := s.sig.(syscall.Signal); ok {
		return 128 + int(n)
	}
	if s.sig == os.Interrupt {
		return 130
	}
	return 143
}

// untilHardStop runs fn and returns its exit code. When a second signal
// ends ctx, fn gets hardStopWait to return; after that untilHardStop returns
// the signal's exit code without it (finished false), leaving fn to the
// process's exit.
func untilHardStop(ctx context.Context, fn func() int) (code int, finished bool) {
	done := make(chan int, 1)
	go func() { done <- fn() }()
	select {
	case code := <-done:
		if sc, ok := signalExit(ctx); ok {
			return sc, true
		}
		return code, true
	case <-ctx.Done():
	}
	sc, ok := signalExit(ctx)
	if !ok {
		// The grace period is over: fn's own bounds end it.
		return <-done, true
	}
	t := time.NewTimer(hardStopWait)
	defer t.Stop()
	select {
	case <-done:
		return sc, true
	case <-t.C:
		return sc, false
	}
}

// signalContexts gives the two-stage shutdown: stop is closed at the first
// SIGINT/SIGTERM; ctx is cancelled at the second one (its cause then a
// *secondSignal, see signalExit), or grace after the first. cancel releases
// the signal handler.
func signalContexts(io IO, grace time.Duration, logger *slog.Logger) (ctx context.Context, stop <-chan struct{}, cancel func()) {
	sigs := io.Signals
	var own chan os.Signal
	if sigs == nil {
		own = make(chan os.Signal, 2)
		signal.Notify(own, os.Interrupt, syscall.SIGTERM)
		sigs = own
	}
	ctx, cancelCtx := context.WithCancelCause(context.Background())
	stopCh := make(chan struct{})
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			if grace > 0 {
				logger.Warn("signal received: stopping after in-flight writes; send it again to stop at once", slog.String("signal", s.String()), slog.Duration("grace", grace))
			} else {
				logger.Warn("signal received: stopping", slog.String("signal", s.String()))
			}
			close(stopCh)
			if grace <= 0 {
				cancelCtx(&secondSignal{sig: s})
				return
			}
		case <-done:
			return
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case s := <-sigs:
			logger.Warn("second signal: stopping now", slog.String("signal", s.String()))
			cancelCtx(&secondSignal{sig: s})
		case <-t.C:
			logger.Warn("grace period over: stopping now")
			cancelCtx(nil)
		case <-done:
			cancelCtx(nil)
		}
	}()
	return ctx, stopCh, func() {
		close(done)
		cancelCtx(nil)
		if own != nil {
			signal.Stop(own)
		}
	}
}

// commandContext is for commands with no graceful stage: its ctx ends at the
// first SIGINT/SIGTERM or after timeout.
func commandContext(io IO, timeout time.Duration, logger *slog.Logger) (context.Context, context.CancelFunc) {
	sigCtx, _, stopSignals := signalContexts(io, 0, logger)
	ctx, cancel := context.WithTimeout(sigCtx, timeout)
	return ctx, func() {
		cancel()
		stopSignals()
	}
}

// openDB opens the pool and, unless skipped, applies migrations.
func openDB(ctx context.Context, cfg *config.Config, logger *slog.Logger, migrate bool) (*pgxpool.Pool, error) {
	if err := cfg.ValidateDatabase(); err != nil {
		return nil, err
	}
	pool, err := openRetrying(ctx, cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("database unreachable: %w", err)
	}
	if migrate {
		if _, err := load.Migrate(ctx, pool, cfg.Database.Schema, cfg.Database.ReaderRole, cfg.Sync.RetryMaxElapsed.D(), logger); err != nil {
			pool.Close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
	}
	return pool, nil
}

// openRetrying is load.Open, tried again for up to sync.retry_max_elapsed
// when the server answered but ended the new connection (terminated by an
// administrator, a crash or shutdown, or still starting up), as migrations
// and writes retry a lost connection. A server that cannot be reached at all
// fails at once with its clear line.
func openRetrying(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*pgxpool.Pool, error) {
	start, wait := time.Now(), 100*time.Millisecond
	for {
		pool, err := load.Open(ctx, cfg.Database.URL.Value())
		if err == nil || !endedByServer(err) || time.Since(start)+wait > cfg.Sync.RetryMaxElapsed.D() {
			return pool, err
		}
		logger.WarnContext(ctx, "database ended the new connection, retrying", slog.Duration("wait", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// endedByServer reports whether err is the server ending a connection it
// had accepted (SQLSTATE 57P01, 57P02, 57P03).
func endedByServer(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow:
		return true
	}
	return false
}

// newStore builds the warehouse store of the configuration.
func newStore(pool *pgxpool.Pool, cfg *config.Config, allowMassRemoval bool, logger *slog.Logger) *load.Store {
	return load.NewStore(pool, load.Options{
		Schema:           cfg.Database.Schema,
		RemovalGuard:     cfg.Sync.Guard(),
		AllowMassRemoval: allowMassRemoval,
		TokenKey:         cfg.Database.TokenKey.Value(),
		Logger:           logger,
		RetryMaxElapsed:  cfg.Sync.RetryMaxElapsed.D(),
	})
}

// credentialKey is the run lock and token key of the configured credentials.
func credentialKey(cfg *config.Config) string {
	return job.CredentialKey(cfg.MicrosoftAds.ClientID, cfg.MicrosoftAds.DeveloperToken.Value())
}

// extractConfig maps the configuration onto the API client's.
func extractConfig(cfg *config.Config, store extract.TokenStore, obs extract.Observer, logger *slog.Logger) extract.Config {
	m := cfg.MicrosoftAds
	return extract.Config{
		Environment:       m.Environment,
		APIURL:            m.APIURL,
		TokenURL:          m.TokenURL,
		Tenant:            m.Tenant,
		DeveloperToken:    m.DeveloperToken.Value(),
		ClientID:          m.ClientID,
		ClientSecret:      m.ClientSecret.Value(),
		RefreshToken:      m.RefreshToken.Value(),
		RequestsPerSecond: m.RequestsPerSecond,
		ThrottleWait:      m.ThrottleWait.D(),
		RequestTimeout:    cfg.Sync.RequestTimeout.D(),
		RetryMaxElapsed:   cfg.Sync.RetryMaxElapsed.D(),
		Store:             store,
		Logger:            logger,
		Observer:          obs,
	}
}

// newRunner builds the API client and the runner on a store.
func newRunner(cfg *config.Config, store *load.Store, m *metrics.Metrics, logger *slog.Logger) (*job.Runner, error) {
	key := credentialKey(cfg)
	counters := &job.Counters{}
	obs := observers{counters}
	if m != nil {
		obs = append(obs, m)
	}
	client, err := extract.New(extractConfig(cfg, store.Tokens(tokenKey(cfg)), obs, logger))
	if err != nil {
		return nil, err
	}
	return &job.Runner{
		Client:        client,
		Counters:      counters,
		Store:         store,
		Metrics:       m,
		Logger:        logger,
		CredentialKey: key,
		CustomerIDs:   cfg.Customers.IDs,
		Discover:      cfg.Customers.Discover,
		Concurrency:   cfg.Sync.Concurrency,
		AccountNames:  cfg.MicrosoftAds.AccountNamesEnabled(),
		ClientLinks:   cfg.MicrosoftAds.ClientLinksEnabled(),

		MaxUnreadableFraction: cfg.Sync.MaxUnreadable(),
		LeaseTTL:              cfg.Sync.LeaseTTL.D(),
	}, nil
}

// observers fans the API client's observations out to several observers.
type observers []extract.Observer

func (o observers) Call(op, outcome string, d time.Duration) {
	for _, x := range o {
		x.Call(op, outcome, d)
	}
}

func (o observers) Retry(op string) {
	for _, x := range o {
		x.Retry(op)
	}
}

func (o observers) Throttle(d time.Duration) {
	for _, x := range o {
		x.Throttle(d)
	}
}

// buildInfo returns the commit (with " (modified)" for a dirty tree; "" when
// unknown) and the Go version of this binary.
func buildInfo() (commit, goVersion string) {
	goVersion = runtime.Version()
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Commit, goVersion
	}
	rev, modified := Commit, ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			if rev == "" {
				rev = s.Value
			}
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev == "" {
		return "", info.GoVersion
	}
	return rev + modified, info.GoVersion
}

func cmdVersion(args []string, io IO) int {
	if code, done := parse(newBareFlagSet("version", io), args); done {
		return code
	}
	fmt.Fprintf(io.Stdout, "syncer %s\n", Version)
	commit, goVersion := buildInfo()
	if commit != "" {
		fmt.Fprintf(io.Stdout, "commit %s\n", commit)
	}
	fmt.Fprintf(io.Stdout, "built with %s\n", goVersion)
	return ExitOK
}

// newMetrics builds the process's metrics: syncer_build_info set, and the
// per-customer counters of the configured customers started at 0.
func newMetrics(cfg *config.Config) *metrics.Metrics {
	m := metrics.New()
	commit, goVersion := buildInfo()
	m.SetBuildInfo(Version, commit, goVersion)
	m.InitCustomers(cfg.Customers.IDs)
	return m
}

func cmdMigrate(args []string, io IO) int {
	var c common
	fs := newFlagSet("migrate", io, &c)
	if code, done := parse(fs, args); done {
		return code
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	ctx, cancel := commandContext(io, 5*time.Minute, logger)
	defer cancel()
	pool, err := openDB(ctx, cfg, logger, false)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	v, err := load.Migrate(ctx, pool, cfg.Database.Schema, cfg.Database.ReaderRole, cfg.Sync.RetryMaxElapsed.D(), logger)
	if err != nil {
		return fail(io, fmt.Errorf("migrate: %w", err))
	}
	fmt.Fprintf(io.Stdout, "schema %s at version %d\n", cfg.Database.Schema, v)
	return ExitOK
}

// days is a duration flag that also counts days ("7d", "1d12h"), as the
// configuration's durations do.
type days time.Duration

func (d *days) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

func (d *days) Set(s string) error {
	v, err := config.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 72h or 7d, got %q", s)
	}
	*d = days(v)
	return nil
}

// durationFlag defines a duration flag that also takes days ("7d").
func durationFlag(fs *flag.FlagSet, name string, usage string) *time.Duration {
	p := new(time.Duration)
	fs.Var((*days)(p), name, usage)
	return p
}
