package cli

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/evidence"
	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/msads"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// Names of the checks of `syncer check`, in the order they run.
const (
	checkConfig      = "config"
	checkDatabase    = "database"
	checkMigrations  = "migrations"
	checkReaderRole  = "reader role"
	checkTokenStore  = "token store"
	checkRefresh     = "refresh"
	checkDevToken    = "developer token"
	checkCustomers   = "customers"
	checkWebhook     = "webhook"
	checkPushgateway = "pushgateway"
	checkSigningKey  = "evidence signing key"
)

// Bounds of the checks that wait on the network.
const (
	checkTimeout         = 3 * time.Minute
	checkDatabaseTimeout = 20 * time.Second
	checkTokenTimeout    = 45 * time.Second
	checkTokenRetryMax   = 15 * time.Second
	checkAPITimeout      = 45 * time.Second
	checkHTTPTimeout     = 10 * time.Second
)

// checkResult is one check: passed (OK), failed (neither OK nor Skipped:
// Detail says what is wrong and Fix what to do), or skipped because a check
// it depends on did not pass (Detail says which).
type checkResult struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Skipped bool   `json:"skipped"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix"`
}

// checker runs the checks and keeps their results.
type checker struct {
	io         IO
	configPath string
	results    []checkResult
}

func (k *checker) pass(name, detail string) {
	k.results = append(k.results, checkResult{Name: name, OK: true, Detail: errorLine(k.io, detail)})
}

func (k *checker) fail(name, detail, fix string) {
	k.results = append(k.results, checkResult{Name: name, Detail: errorLine(k.io, detail), Fix: errorLine(k.io, fix)})
}

// skip records name as skipped because the check dep did not pass.
func (k *checker) skip(name, because string) {
	k.results = append(k.results, checkResult{Name: name, Skipped: true, Detail: "because " + because})
}

// blocked returns why a check that needs deps cannot run (the first
// failed check up the chain: "database failed"), or "" when every one of
// them passed.
func (k *checker) blocked(deps ...string) string {
	for _, d := range deps {
		for _, r := range k.results {
			if r.Name != d {
				continue
			}
			switch {
			case r.Skipped:
				return strings.TrimPrefix(r.Detail, "because ")
			case !r.OK:
				return d + " failed"
			}
		}
	}
	return ""
}

// cmdCheck is `syncer check`: it checks the whole setup in order, one line
// per check (✓, ✗ with the fix, or skipped when a check it depends on did
// not pass), and exits 1 when any check failed. It writes nothing to the
// warehouse, except that a refresh token rotated by the refresh check is
// saved to the token store, as every run does (the old one may be refused
// from then on).
func cmdCheck(args []string, io IO) int {
	var c common
	fs := newFlagSet("check", io, &c)
	asJSON := fs.Bool("json", false, "print a JSON array of {name, ok, skipped, detail, fix} instead of lines")
	if code, done := parse(fs, args); done {
		return code
	}
	level := "error" // the checks report failures themselves
	if c.logLevel != "" {
		level = c.logLevel
	}
	logger := newLogger(io.Stderr, cmp.Or(c.logFormat, "text"), level)
	ctx, cancel := commandContext(io, checkTimeout, logger)
	defer cancel()

	k := &checker{io: io, configPath: c.configPath}
	k.runAll(ctx, &c, logger)

	failed := 0
	var names []string
	for _, r := range k.results {
		if !r.OK && !r.Skipped {
			failed++
			names = append(names, r.Name)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(io.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(k.results); err != nil {
			return fail(io, err)
		}
	} else {
		for _, r := range k.results {
			fmt.Fprintln(io.Stdout, r.line())
		}
	}
	if failed > 0 {
		fmt.Fprintf(io.Stderr, "syncer: %d of %d checks failed: %s\n", failed, len(k.results), strings.Join(names, ", "))
		return ExitFatal
	}
	return ExitOK
}

// line is the check's line: "✓ name: detail", "✗ name: detail — fix" or
// "- name: skipped (because …)".
func (r checkResult) line() string {
	switch {
	case r.Skipped:
		return fmt.Sprintf("- %s: skipped (%s)", r.Name, r.Detail)
	case r.OK:
		return fmt.Sprintf("✓ %s: %s", r.Name, r.Detail)
	case r.Fix != "":
		return fmt.Sprintf("✗ %s: %s — %s", r.Name, r.Detail, r.Fix)
	}
	return fmt.Sprintf("✗ %s: %s", r.Name, r.Detail)
}

// runAll runs every check in order.
func (k *checker) runAll(ctx context.Context, c *common, logger *slog.Logger) {
	all := []string{checkDatabase, checkMigrations, checkReaderRole, checkTokenStore, checkRefresh, checkDevToken, checkCustomers, checkWebhook, checkPushgateway, checkSigningKey}
	cfg, credentialsOK := k.checkConfig(c)
	if cfg == nil {
		for _, name := range all {
			k.skip(name, "config failed")
		}
		return
	}

	pool := k.checkDatabase(ctx, cfg)
	if pool != nil {
		defer pool.Close()
	}
	k.checkMigrations(ctx, cfg, pool)
	k.checkReaderRole(ctx, cfg, pool)

	var ts *load.TokenStore
	if !credentialsOK {
		k.skip(checkTokenStore, "config failed")
	} else {
		ts = k.checkTokenStore(ctx, cfg, pool, logger)
	}
	client, closeClient := k.checkRefresh(ctx, cfg, ts, logger)
	defer closeClient()
	me, roles := k.checkDeveloperToken(ctx, cfg, client)
	k.checkCustomers(ctx, cfg, client, me, roles)
	k.checkWebhook(ctx, cfg)
	k.checkPushgateway(ctx, cfg)
	k.checkSigningKey(cfg)
}

// checkConfig loads and validates the configuration. It returns the
// configuration when it could be read (even when some keys are wrong, so
// that the checks that do not need them still run), and whether the
// credentials and customers a sync needs are set.
func (k *checker) checkConfig(c *common) (*config.Config, bool) {
	cfg, err := loadConfig(c, k.io)
	if err != nil {
		detail, fix := configProblem(err, c.configPath)
		k.fail(checkConfig, detail, fix)
		return nil, false
	}
	credErr := cfg.ValidateCredentials()
	dbErr := cfg.ValidateDatabase()
	if err := errors.Join(dbErr, credErr); err != nil {
		detail, fix := configProblem(err, c.configPath)
		k.fail(checkConfig, c.configPath+": "+detail, fix)
		return cfg, credErr == nil && dbErr == nil
	}
	k.pass(checkConfig, fmt.Sprintf("%s is valid and every ${…} reference resolved", c.configPath))
	return cfg, true
}

// configProblem splits a configuration error into what is wrong (each key
// and its line) and the fixes the errors carry.
func configProblem(err error, path string) (detail, fix string) {
	var fes []*config.FieldError
	var es config.Errors
	var fe *config.FieldError
	for _, e := range unjoin(err) {
		switch {
		case errors.As(e, &es):
			fes = append(fes, es...)
		case errors.As(e, &fe):
			fes = append(fes, fe)
		}
	}
	if len(fes) == 0 {
		msg := err.Error()
		if strings.Contains(msg, "not found") {
			return msg, "pass --config FILE or set SYNCER_CONFIG (see config.example.yaml)"
		}
		return msg, "fix " + path
	}
	var details, fixes []string
	for _, e := range fes {
		details = append(details, e.Where()+e.Msg)
		if e.Fix != "" && !slices.Contains(fixes, e.Fix) {
			fixes = append(fixes, e.Fix)
		}
	}
	if len(fixes) == 0 {
		fixes = []string{"edit " + path}
	}
	return strings.Join(details, "; "), strings.Join(fixes, "; ")
}

// unjoin returns the errors an errors.Join made, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok { //nolint:errorlint // only the top error: errors.Join's own list
		if _, isErrs := err.(config.Errors); !isErrs { //nolint:errorlint // the same
			return j.Unwrap()
		}
	}
	return []error{err}
}

// checkDatabase connects to database.url and tells what failed:
// authentication, the network, or a missing database.
func (k *checker) checkDatabase(ctx context.Context, cfg *config.Config) *pgxpool.Pool {
	dsn := cfg.Database.URL.Value()
	if dsn == "" {
		k.skip(checkDatabase, "database.url is not set")
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, checkDatabaseTimeout)
	defer cancel()
	pool, err := load.Open(dctx, dsn)
	if err != nil {
		detail, fix := databaseProblem(err, dsn)
		k.fail(checkDatabase, detail, fix)
		return nil
	}
	version, err := load.ServerVersion(dctx, pool)
	if err != nil {
		version = "version unknown"
	}
	k.pass(checkDatabase, fmt.Sprintf("connected to %s (PostgreSQL %s)", describeDSN(dsn), strings.Fields(version + " ")[0]))
	return pool
}

// describeDSN names the server of a database URL without its password:
// user@host:port/database.
func describeDSN(dsn string) string {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "the database"
	}
	return fmt.Sprintf("%s@%s:%d/%s", pc.User, pc.Host, pc.Port, pc.Database)
}

// databaseProblem tells an authentication failure (SQLSTATE 28P01, 28000)
// from a network failure (refused, DNS, timeout) and a missing database
// (3D000), each with its fix.
func databaseProblem(err error, dsn string) (detail, fix string) {
	pc, perr := pgconn.ParseConfig(dsn)
	if perr != nil {
		return "database.url cannot be read: " + err.Error(),
			"write a URL such as postgres://user:password@host:5432/dbname?sslmode=require, or a key=value DSN"
	}
	where := fmt.Sprintf("%s:%d", pc.Host, pc.Port)
	var pe *pgconn.PgError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &pe) && pe.Code == "28P01":
		return fmt.Sprintf("password authentication failed for user %q at %s (SQLSTATE 28P01)", pc.User, where),
			"set the right password for that user in database.url (or the user's password in PostgreSQL)"
	case pe != nil && pe.Code == "28000":
		return fmt.Sprintf("the server refused user %q at %s: %s (SQLSTATE 28000)", pc.User, where, pe.Message),
			"allow that user, database and client address in pg_hba.conf, or use a user that may log in, in database.url"
	case pe != nil && pe.Code == "3D000":
		return fmt.Sprintf("database %q does not exist at %s (SQLSTATE 3D000)", pc.Database, where),
			fmt.Sprintf("create it (CREATE DATABASE %s) or fix the database name in database.url", pgx.Identifier{pc.Database}.Sanitize())
	case pe != nil:
		return fmt.Sprintf("the server at %s refused the connection: %s (SQLSTATE %s)", where, pe.Message, pe.Code),
			"see the PostgreSQL message; check the user and database in database.url"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve the host %q of database.url: %s", dnsErr.Name, dnsErr.Err),
			"check the host name in database.url and this machine's DNS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection refused at %s: nothing listens there", where),
			"check the host and port in database.url, and that PostgreSQL is running and listening on that address"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return fmt.Sprintf("no answer from %s within %s", where, checkDatabaseTimeout),
			"check the host and port in database.url, and that no firewall or network policy blocks this machine"
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("no route to %s", where), "check the host in database.url and this machine's network"
	}
	return fmt.Sprintf("cannot connect to %s: %v", where, err), "check database.url and that the server is reachable from here"
}

// checkMigrations compares the schema's version with the latest migration
// this binary embeds (read only: nothing is migrated).
func (k *checker) checkMigrations(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool) {
	if why := k.blocked(checkDatabase); why != "" {
		k.skip(checkMigrations, why)
		return
	}
	schema := cfg.Database.Schema
	latest := schemasql.Latest()
	v, err := schemasql.Version(ctx, pool, schema)
	migrate := fmt.Sprintf("run `syncer migrate --config %s` (a run also migrates at start unless --skip-migrate)", k.configPath)
	switch {
	case err != nil:
		k.fail(checkMigrations, fmt.Sprintf("cannot read the version of schema %s: %v", schema, err),
			"check that the user of database.url may read schema "+schema)
	case v == 0:
		k.fail(checkMigrations, fmt.Sprintf("schema %s has no syncer tables yet (this syncer needs version %d)", schema, latest), migrate)
	case v < latest:
		k.fail(checkMigrations, fmt.Sprintf("schema %s is at version %d; this syncer needs %d", schema, v, latest), migrate)
	case v > latest:
		k.pass(checkMigrations, fmt.Sprintf("schema %s is at version %d, newer than this syncer's %d (migrations only add, so it works; upgrade the syncer)", schema, v, latest))
	default:
		k.pass(checkMigrations, fmt.Sprintf("schema %s is at version %d, the latest", schema, v))
	}
}

// checkReaderRole checks that database.reader_role exists and, once
// migrated, may read the schema.
func (k *checker) checkReaderRole(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool) {
	role, schema := cfg.Database.ReaderRole, cfg.Database.Schema
	if role == "" {
		k.skip(checkReaderRole, "database.reader_role is not set")
		return
	}
	if why := k.blocked(checkDatabase); why != "" {
		k.skip(checkReaderRole, why)
		return
	}
	exists, err := load.RoleExists(ctx, pool, role)
	if err != nil {
		k.fail(checkReaderRole, fmt.Sprintf("cannot look up role %s: %v", role, err), "check that the user of database.url may read pg_roles")
		return
	}
	if !exists {
		k.fail(checkReaderRole, fmt.Sprintf("role %s (database.reader_role) does not exist", role),
			fmt.Sprintf("create it (CREATE ROLE %s NOLOGIN) and run `syncer migrate`, which grants it SELECT on the views; or clear database.reader_role", pgx.Identifier{role}.Sanitize()))
		return
	}
	if k.blocked(checkMigrations) != "" {
		k.pass(checkReaderRole, fmt.Sprintf("role %s exists (its grants come with the migrations)", role))
		return
	}
	canRead, err := load.RoleCanRead(ctx, pool, role, schema)
	switch {
	case err != nil:
		k.fail(checkReaderRole, fmt.Sprintf("cannot check the grants of role %s: %v", role, err), "check that the user of database.url may read the catalog")
	case !canRead:
		k.fail(checkReaderRole, fmt.Sprintf("role %s exists but may not read schema %s", role, schema),
			fmt.Sprintf("run `syncer migrate --config %s`: it grants the reader role SELECT on the views", k.configPath))
	default:
		k.pass(checkReaderRole, fmt.Sprintf("role %s exists and may read schema %s", role, schema))
	}
}

// checkTokenStore reads the stored refresh token the way a run does: it
// must decrypt with database.token_key; with none stored, the config must
// give one.
func (k *checker) checkTokenStore(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool, logger *slog.Logger) *load.TokenStore {
	if why := k.blocked(checkDatabase, checkMigrations); why != "" {
		k.skip(checkTokenStore, why)
		return nil
	}
	ts := newStore(pool, cfg, false, logger).Tokens(tokenKey(cfg))
	tok, err := ts.Load(ctx)
	hasKey := cfg.Database.TokenKey != ""
	switch {
	case errors.Is(err, load.ErrTokenKey) && !hasKey:
		k.fail(checkTokenStore, "the stored refresh token is encrypted, and database.token_key is not set",
			"set database.token_key to the key it was stored with (e.g. ${SYNCER_TOKEN_KEY}), or run `syncer auth` to store a new token")
		return nil
	case errors.Is(err, load.ErrTokenKey):
		k.fail(checkTokenStore, "the stored refresh token does not decrypt with database.token_key (a different key stored it)",
			"set database.token_key to the key the token was stored with, or run `syncer auth` to sign in again and store one with this key")
		return nil
	case errors.Is(err, load.ErrTokenUser):
		k.fail(checkTokenStore, err.Error(), "set microsoft_ads.user to the user name or id whose sign-in the syncer should use")
		return nil
	case err != nil:
		k.fail(checkTokenStore, "cannot read the token store: "+err.Error(), "check that the user of database.url may read the schema's oauth_tokens table")
		return nil
	case tok == "" && cfg.MicrosoftAds.RefreshToken == "":
		k.fail(checkTokenStore, "no refresh token is stored for these credentials, and microsoft_ads.refresh_token is empty",
			fmt.Sprintf("run `syncer auth --config %s` to sign in and store one", k.configPath))
		return nil
	case tok == "":
		k.pass(checkTokenStore, "no refresh token stored yet: runs start from microsoft_ads.refresh_token and store its rotation")
		return ts
	}
	how := "encrypted with database.token_key"
	if !hasKey {
		how = "in plain text (set database.token_key to encrypt it)"
	}
	who := "these credentials"
	if id, name := ts.User(); id != 0 {
		who = fmt.Sprintf("%s (user id %d)", name, id)
	}
	k.pass(checkTokenStore, "a refresh token is stored for "+who+", "+how)
	return ts
}

// countingStore is the token store of the refresh check: the real one,
// counting the rotated tokens it saves.
type countingStore struct {
	extract.TokenStore
	saves int
}

func (s *countingStore) Save(ctx context.Context, token string) error {
	err := s.TokenStore.Save(ctx, token)
	if err == nil {
		s.saves++
	}
	return err
}

// checkRefresh redeems the refresh token once through the real token
// store, so a rotated refresh token is saved as a run would save it.
func (k *checker) checkRefresh(ctx context.Context, cfg *config.Config, ts *load.TokenStore, logger *slog.Logger) (*extract.Client, func()) {
	nop := func() {}
	if why := k.blocked(checkTokenStore); why != "" {
		k.skip(checkRefresh, why)
		return nil, nop
	}
	store := &countingStore{TokenStore: ts}
	ecfg := extractConfig(cfg, store, nil, logger)
	ecfg.RetryMaxElapsed = min(ecfg.RetryMaxElapsed, checkTokenRetryMax)
	client, err := extract.New(ecfg)
	if err != nil {
		k.fail(checkRefresh, err.Error(), "check the microsoft_ads settings")
		return nil, nop
	}
	closeClient := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenSaveWait)
		defer cancel()
		_ = client.Close(cctx)
	}
	tctx, cancel := context.WithTimeout(ctx, checkTokenTimeout)
	defer cancel()
	err = client.Authenticate(tctx)
	if err == nil {
		detail := "the token endpoint issued an access token"
		if store.saves > 0 {
			detail += "; the rotated refresh token was saved to the token store"
		}
		k.pass(checkRefresh, detail)
		return client, closeClient
	}
	var te *extract.TokenError
	switch {
	case errors.As(err, &te) && te.Fix != "":
		fix := te.Fix
		cp := *te
		cp.Fix = ""
		k.fail(checkRefresh, "the token endpoint refused the refresh token: "+cp.Error(), fix)
	case errors.As(err, &te):
		cp := *te
		k.fail(checkRefresh, "the token endpoint did not answer as expected: "+cp.Error(),
			"check microsoft_ads.token_url (or microsoft_ads.environment), that this machine can reach the token endpoint, and try again")
	case errors.Is(err, extract.ErrReauth):
		k.fail(checkRefresh, "no refresh token to redeem", fmt.Sprintf("run `syncer auth --config %s` to sign in", k.configPath))
	case errors.Is(err, context.DeadlineExceeded):
		k.fail(checkRefresh, fmt.Sprintf("the token endpoint did not answer within %s", checkTokenTimeout),
			"check microsoft_ads.token_url and that this machine can reach the token endpoint")
	default:
		k.fail(checkRefresh, err.Error(), "check microsoft_ads.token_url and that this machine can reach the token endpoint")
	}
	return nil, closeClient
}

// checkDeveloperToken asks for the signed-in user (GetUser with a null
// UserId): the API refuses a wrong developer token with code 105.
func (k *checker) checkDeveloperToken(ctx context.Context, cfg *config.Config, client *extract.Client) (msads.User, []msads.Role) {
	if why := k.blocked(checkRefresh); why != "" {
		k.skip(checkDevToken, why)
		return msads.User{}, nil
	}
	actx, cancel := context.WithTimeout(ctx, checkAPITimeout)
	defer cancel()
	me, roles, err := client.Principal(actx)
	var ae *extract.APIError
	switch {
	case err == nil:
		k.pass(checkDevToken, fmt.Sprintf("accepted (%s); signed in as %s (user id %d)", cfg.MicrosoftAds.Environment, cmp.Or(me.UserName, "an unnamed user"), me.ID))
		return me, roles
	case errors.Is(err, extract.ErrCredentialsRejected) || (errors.As(err, &ae) && ae.HasCode(105)):
		k.fail(checkDevToken, "the API refused the credentials (code 105 InvalidCredentials) with a fresh access token",
			"check microsoft_ads.developer_token and microsoft_ads.environment (a sandbox developer token works only with environment: sandbox, a production one only with production), and that the signed-in user can still open Microsoft Advertising")
	default:
		k.fail(checkDevToken, "GetUser for the signed-in user failed: "+err.Error(),
			"check microsoft_ads.api_url and microsoft_ads.environment, then try again")
	}
	return msads.User{}, nil
}

// checkCustomers checks each configured customer against what the
// signed-in user can see (GetCustomersInfo and its own roles), as a run
// resolves them.
func (k *checker) checkCustomers(ctx context.Context, cfg *config.Config, client *extract.Client, me msads.User, roles []msads.Role) {
	if why := k.blocked(checkDevToken); why != "" {
		k.skip(checkCustomers, why)
		return
	}
	actx, cancel := context.WithTimeout(ctx, checkAPITimeout)
	defer cancel()
	infos, err := client.GetCustomersInfo(actx)
	if err != nil {
		k.fail(checkCustomers, "GetCustomersInfo failed: "+err.Error(), "try again; check microsoft_ads.api_url")
		return
	}
	names := map[int64]string{}
	var visible []int64
	for _, c := range infos {
		names[c.ID] = c.Name
		visible = append(visible, c.ID)
	}
	for _, r := range roles {
		visible = append(visible, r.CustomerID)
	}
	slices.Sort(visible)
	visible = slices.Compact(visible)
	who := fmt.Sprintf("%s (%d)", cmp.Or(me.UserName, "user"), me.ID)
	if cfg.Customers.Discover {
		if len(visible) == 0 {
			k.fail(checkCustomers, "discovery is on and the signed-in user "+who+" can see no customer",
				"sign in (`syncer auth`) as a user with access to the customers, or list them under customers.ids")
			return
		}
		k.pass(checkCustomers, fmt.Sprintf("discovery is on: %d customers visible to %s: %s", len(visible), who, customerList(visible, names)))
		return
	}
	var invisible []int64
	for _, id := range cfg.Customers.IDs {
		if _, ok := slices.BinarySearch(visible, id); !ok {
			invisible = append(invisible, id)
		}
	}
	if len(invisible) > 0 {
		k.fail(checkCustomers, fmt.Sprintf("%d of %d configured customers are not visible to the signed-in user %s: %s",
			len(invisible), len(cfg.Customers.IDs), who, customerList(invisible, nil)),
			"remove them from customers.ids, or sign in (`syncer auth`) as a user with access to them")
		return
	}
	k.pass(checkCustomers, fmt.Sprintf("all %d configured customers are visible to %s: %s", len(cfg.Customers.IDs), who, customerList(cfg.Customers.IDs, names)))
}

// customerList names up to 6 customers, "150000001 (Contoso), …, and 4
// more".
func customerList(ids []int64, names map[int64]string) string {
	const show = 6
	var parts []string
	for i, id := range ids {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(ids)-show))
			break
		}
		if n := names[id]; n != "" {
			parts = append(parts, fmt.Sprintf("%d (%s)", id, n))
		} else {
			parts = append(parts, fmt.Sprint(id))
		}
	}
	return strings.Join(parts, ", ")
}

// checkWebhook sends the webhook a HEAD request, which posts no message:
// any HTTP answer below 500 means it is reachable. The URL is a secret:
// only its host is named.
func (k *checker) checkWebhook(ctx context.Context, cfg *config.Config) {
	hook := cfg.Invitations.WebhookURL.Value()
	if hook == "" {
		k.skip(checkWebhook, "invitations.webhook_url is not set")
		return
	}
	k.reach(ctx, checkWebhook, http.MethodHead, hook, "invitations.webhook_url", "to HEAD (reachable; no message posted)")
}

// checkPushgateway asks the Pushgateway whether it is ready (GET /-/ready).
func (k *checker) checkPushgateway(ctx context.Context, cfg *config.Config) {
	pg := cfg.Metrics.PushgatewayURL
	if pg == "" {
		k.skip(checkPushgateway, "metrics.pushgateway_url is not set")
		return
	}
	k.reach(ctx, checkPushgateway, http.MethodGet, strings.TrimRight(pg, "/")+"/-/ready", "metrics.pushgateway_url", "to GET /-/ready (reachable)")
}

// checkSigningKey parses evidence.signing_key, which `syncer evidence`
// signs manifests with, and names the public key verifiers will need.
func (k *checker) checkSigningKey(cfg *config.Config) {
	key, err := signingKey(cfg)
	switch {
	case err != nil:
		k.fail(checkSigningKey, err.Error(),
			"set evidence.signing_key to an Ed25519 private key in PEM (openssl genpkey -algorithm ed25519), e.g. ${file:/etc/syncer/signing.pem}, or remove it to write unsigned packs")
	case key == nil:
		k.skip(checkSigningKey, "evidence.signing_key is not set: packs are written unsigned")
	default:
		k.pass(checkSigningKey, "an Ed25519 key; packs are signed with key id "+evidence.KeyID(key.Public().(ed25519.PublicKey)))
	}
}

// reach sends one request and passes when anything below HTTP 500 answers.
func (k *checker) reach(ctx context.Context, name, method, rawURL, key, note string) {
	host := "the host of " + key
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		host = u.Scheme + "://" + u.Host
	}
	rctx, cancel := context.WithTimeout(ctx, checkHTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, rawURL, nil)
	if err != nil {
		k.fail(name, key+" is not a valid URL", "fix "+key)
		return
	}
	req.Header.Set("User-Agent", "msads-syncer-check")
	resp, err := (&http.Client{Timeout: checkHTTPTimeout}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text holds the URL
			err = ue.Err
		}
		what := err.Error()
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			what = fmt.Sprintf("no answer within %s", checkHTTPTimeout)
		}
		k.fail(name, fmt.Sprintf("cannot reach %s: %s", host, what),
			fmt.Sprintf("check %s and that this machine may reach %s (egress rules, proxy)", key, host))
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		k.fail(name, fmt.Sprintf("%s answered HTTP %d to %s", host, resp.StatusCode, method),
			"the receiver is failing: check its health (and "+key+")")
		return
	}
	k.pass(name, fmt.Sprintf("%s answered HTTP %d %s", host, resp.StatusCode, note))
}
