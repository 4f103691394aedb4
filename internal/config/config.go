// Package config loads the syncer's YAML configuration: strict decoding (an
// unknown key is an error that names it), ${ENV} and ${file:/path} expansion in
// string values, defaults, then validation that names the field and the values
// it allows.
//
// The keys are a contract (see the design's "Configuration" section); the
// Config type mirrors them one to one.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	Database     Database     `yaml:"database"`
	MicrosoftAds MicrosoftAds `yaml:"microsoft_ads"`
	Customers    Customers    `yaml:"customers"`
	Sync         Sync         `yaml:"sync"`
	Schedule     string       `yaml:"schedule"`
	Invitations  Invitations  `yaml:"invitations"`
	Metrics      Metrics      `yaml:"metrics"`
	Reconcile    Reconcile    `yaml:"reconcile"`
	Evidence     Evidence     `yaml:"evidence"`
	Log          Log          `yaml:"log"`

	// CronSchedule is Schedule parsed at load time, so a bad spec fails early.
	CronSchedule cron.Schedule `yaml:"-"`

	// lines maps each key the file sets (dotted path) to its line.
	lines map[string]int
}

// Database configures PostgreSQL.
type Database struct {
	URL        Secret `yaml:"url"`
	Schema     string `yaml:"schema"`
	ReaderRole string `yaml:"reader_role"`
	TokenKey   Secret `yaml:"token_key"`
}

// MicrosoftAds configures the API credentials and client.
type MicrosoftAds struct {
	Environment       string   `yaml:"environment"`
	APIURL            string   `yaml:"api_url"`
	TokenURL          string   `yaml:"token_url"`
	DeveloperToken    Secret   `yaml:"developer_token"`
	ClientID          string   `yaml:"client_id"`
	ClientSecret      Secret   `yaml:"client_secret"`
	RefreshToken      Secret   `yaml:"refresh_token"`
	RedirectURI       string   `yaml:"redirect_uri"`
	RequestsPerSecond float64  `yaml:"requests_per_second"`
	ThrottleWait      Duration `yaml:"throttle_wait"`
	AccountNames      *bool    `yaml:"account_names"`
	// ClientLinks searches each customer's client links (agency access);
	// default true. See ClientLinksEnabled.
	ClientLinks *bool `yaml:"client_links"`

	// Tenant is the identity platform tenant of the sign-in endpoints:
	// common (default), organizations, consumers, a tenant id or a domain.
	Tenant string `yaml:"tenant"`
	// User picks the stored refresh token when several users of the same
	// client id have signed in (`syncer auth`): a user name or user id.
	User string `yaml:"user"`
}

// Customers selects the customers to sync.
type Customers struct {
	IDs      []int64 `yaml:"ids"`
	Discover bool    `yaml:"discover"`
}

// Sync tunes one sync run.
type Sync struct {
	Concurrency     int      `yaml:"concurrency"`
	RequestTimeout  Duration `yaml:"request_timeout"`
	RetryMaxElapsed Duration `yaml:"retry_max_elapsed"`
	RemovalGuard    *float64 `yaml:"removal_guard"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// MaxUnreadableFraction is the share of a customer's listed users whose
	// GetUser may fail permanently (stored with detail_status unreadable or
	// not_found) before the customer fails instead; default 0.2.
	MaxUnreadableFraction *float64 `yaml:"max_unreadable_fraction"`
	// LeaseTTL is how long the run lease (sync_leases) lives without a
	// renewal: a crashed run's lease is taken over after at most this long,
	// and a run that cannot renew it for this long stops. Default 2m.
	LeaseTTL Duration `yaml:"lease_ttl"`
}

// Invitations configures stale-invitation alerts.
type Invitations struct {
	StaleAfter Duration `yaml:"stale_after"`
	// MaxDataAge: `syncer invitations --fail-on-stale` also fails when a
	// customer's last complete sync is older than this (or never happened).
	MaxDataAge Duration `yaml:"max_data_age"`
	WebhookURL Secret   `yaml:"webhook_url"`
}

// Metrics configures the metrics endpoints.
type Metrics struct {
	Listen         string `yaml:"listen"`
	PushgatewayURL string `yaml:"pushgateway_url"`
	// Instance, when set, is added to the Pushgateway grouping key
	// (job="syncer", credential=<key>, instance=<this>): set it when two
	// CronJobs share credentials but must keep separate groups.
	Instance string `yaml:"instance"`
}

// Evidence configures access review packs (`syncer evidence`).
type Evidence struct {
	// SigningKey, when set, is the Ed25519 private key (PEM, as `openssl
	// genpkey -algorithm ed25519` writes it; usually ${file:/path}) that
	// signs each pack's manifest.json.
	SigningKey Secret `yaml:"signing_key"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
}

// Defaults of the keys that have one.
const (
	DefaultSchema            = "msads"
	DefaultEnvironment       = "production"
	DefaultRequestsPerSecond = 5
	DefaultThrottleWait      = 60 * time.Second
	DefaultConcurrency       = 4
	DefaultRequestTimeout    = 30 * time.Second
	DefaultRetryMaxElapsed   = 5 * time.Minute
	DefaultLeaseTTL          = 2 * time.Minute
	DefaultRemovalGuard      = 0.5
	DefaultMaxUnreadable     = 0.2
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultSchedule          = "0 */6 * * *"
	DefaultStaleAfter        = 168 * time.Hour
	DefaultMaxDataAge        = 48 * time.Hour
	DefaultMetricsListen     = ":9464" // not 9090, which Prometheus itself uses
	DefaultLogFormat         = "json"
	DefaultLogLevel          = "info"
	DefaultRedirectURI       = "http://localhost:8400/"
	DefaultTenant            = "common"
)

// Secret is a string that never prints itself: fmt, slog and JSON see
// "[redacted]" (or "" when empty). Use Value for the real text.
type Secret string

// Value returns the secret's text.
func (s Secret) Value() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString implements fmt.GoStringer so %#v hides it too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalText keeps secrets out of JSON and text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Duration is a time.Duration written as a Go duration string ("30s",
// "168h"), which may also count days ("7d", "1d12h").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML decodes a duration string (see ParseDuration).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 30s, 168h or 7d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("want a duration such as 30s, 168h or 7d, got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// ClientLinksEnabled reports whether each customer's client links are
// searched (SearchClientLinks; default true). It needs the customer's
// accounts, so GetAccountsInfo is called too.
func (m MicrosoftAds) ClientLinksEnabled() bool { return m.ClientLinks == nil || *m.ClientLinks }

// AccountNamesEnabled reports whether GetAccountsInfo is called (default true).
func (m MicrosoftAds) AccountNamesEnabled() bool { return m.AccountNames == nil || *m.AccountNames }

// Guard returns the removal guard fraction.
func (s Sync) Guard() float64 {
	if s.RemovalGuard == nil {
		return DefaultRemovalGuard
	}
	return *s.RemovalGuard
}

// MaxUnreadable returns sync.max_unreadable_fraction (0 is allowed: then
// any unreadable user fails its customer).
func (s Sync) MaxUnreadable() float64 {
	if s.MaxUnreadableFraction == nil {
		return DefaultMaxUnreadable
	}
	return *s.MaxUnreadableFraction
}

// Load reads, expands, decodes, defaults and validates the file at path.
// getenv resolves ${NAME} references; an empty value counts as unset (see
// LoadEnv to tell them apart).
func Load(path string, getenv func(string) string) (*Config, error) {
	return LoadEnv(path, GetenvEnv(getenv))
}

// LoadEnv is Load with a lookup that tells an unset variable (an error,
// unless the reference gives a default) from one set to "".
func LoadEnv(path string, env Env) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s not found (set --config or SYNCER_CONFIG; see config.example.yaml)", path)
		}
		return nil, fmt.Errorf("read config %s: %w", path, plainPathError(err))
	}
	cfg, err := ParseEnv(raw, env)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML text; see Load.
func Parse(raw []byte, getenv func(string) string) (*Config, error) {
	return ParseEnv(raw, GetenvEnv(getenv))
}

// ParseEnv decodes YAML text; see LoadEnv. Every error names the key and
// the line it is on (a *FieldError, or Errors for several).
func ParseEnv(raw []byte, env Env) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, syntaxError(err)
	}
	var cfg Config
	d := &decoder{env: env, lines: map[string]int{}}
	if len(root.Content) > 0 && !isNull(root.Content[0]) {
		d.decodeStruct(resolve(root.Content[0]), reflect.ValueOf(&cfg).Elem(), "")
	}
	if err := d.errs.errOrNil(); err != nil {
		return nil, err
	}
	cfg.lines = d.lines
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns yaml's "yaml: line 3: mapping values are not allowed in
// this context" into a FieldError on that line.
func syntaxError(err error) error {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &FieldError{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// Line returns the line of the file that sets key (a dotted path such as
// "sync.concurrency"), or 0 when the key is not in the file.
func (c *Config) Line(key string) int { return c.lines[key] }

// has reports whether the file sets key: an explicit 0 is then kept (and
// validated), not replaced by the default.
func (c *Config) has(key string) bool { return c.lines[key] != 0 }

// SetDefaults fills every unset key with its default. A number or
// duration that the file sets explicitly (say concurrency: 0) is kept, so
// Validate reports it instead of it being silently replaced; a Config built
// in code (no file) takes the default for every zero value.
func (c *Config) SetDefaults() {
	num := func(key string, v *int, def int) {
		if !c.has(key) {
			*v = cmp.Or(*v, def)
		}
	}
	dur := func(key string, v *Duration, def time.Duration) {
		if !c.has(key) {
			*v = cmp.Or(*v, Duration(def))
		}
	}
	c.Database.Schema = cmp.Or(c.Database.Schema, DefaultSchema)
	m := &c.MicrosoftAds
	m.Environment = cmp.Or(m.Environment, DefaultEnvironment)
	if !c.has("microsoft_ads.requests_per_second") {
		m.RequestsPerSecond = cmp.Or(m.RequestsPerSecond, DefaultRequestsPerSecond)
	}
	dur("microsoft_ads.throttle_wait", &m.ThrottleWait, DefaultThrottleWait)
	m.RedirectURI = cmp.Or(m.RedirectURI, DefaultRedirectURI)
	m.Tenant = cmp.Or(m.Tenant, DefaultTenant)
	s := &c.Sync
	num("sync.concurrency", &s.Concurrency, DefaultConcurrency)
	dur("sync.request_timeout", &s.RequestTimeout, DefaultRequestTimeout)
	dur("sync.retry_max_elapsed", &s.RetryMaxElapsed, DefaultRetryMaxElapsed)
	dur("sync.lease_ttl", &s.LeaseTTL, DefaultLeaseTTL)
	dur("sync.shutdown_timeout", &s.ShutdownTimeout, DefaultShutdownTimeout)
	c.Schedule = cmp.Or(c.Schedule, DefaultSchedule)
	dur("invitations.stale_after", &c.Invitations.StaleAfter, DefaultStaleAfter)
	dur("invitations.max_data_age", &c.Invitations.MaxDataAge, DefaultMaxDataAge)
	c.Metrics.Listen = cmp.Or(c.Metrics.Listen, DefaultMetricsListen)
	c.Log.Format = cmp.Or(c.Log.Format, DefaultLogFormat)
	c.Log.Level = cmp.Or(c.Log.Level, DefaultLogLevel)
	c.setReconcileDefaults()
}

// Validate checks every key and returns Errors naming each bad key and
// its line. Credentials are checked by ValidateCredentials, since some
// commands (migrate, invitations) do not need them.
func (c *Config) Validate() error {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Line: c.Line(key), Msg: fmt.Sprintf(format, args...)})
	}
	if !isIdent(c.Database.Schema) {
		bad("database.schema", "%q is not a plain lower-case SQL identifier (letters, digits, _)", c.Database.Schema)
	}
	if c.Database.ReaderRole != "" && !isIdent(c.Database.ReaderRole) {
		bad("database.reader_role", "%q is not a plain lower-case SQL identifier", c.Database.ReaderRole)
	}
	m := c.MicrosoftAds
	if m.Environment != "production" && m.Environment != "sandbox" {
		bad("microsoft_ads.environment", "must be production or sandbox, got %q", m.Environment)
	}
	for key, u := range map[string]string{"microsoft_ads.api_url": m.APIURL, "microsoft_ads.token_url": m.TokenURL, "invitations.webhook_url": c.Invitations.WebhookURL.Value(), "metrics.pushgateway_url": c.Metrics.PushgatewayURL} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad(key, "must be an http(s) URL")
		}
	}
	if err := validTenant(m.Tenant); err != nil {
		bad("microsoft_ads.tenant", "%v", err)
	}
	if err := validRedirectURI(m.RedirectURI); err != nil {
		bad("microsoft_ads.redirect_uri", "%v", err)
	}
	if m.RequestsPerSecond <= 0 || m.RequestsPerSecond > 1000 {
		bad("microsoft_ads.requests_per_second", "must be > 0 and <= 1000, got %v", m.RequestsPerSecond)
	}
	if m.ThrottleWait.D() <= 0 {
		bad("microsoft_ads.throttle_wait", "must be positive, got %v", m.ThrottleWait.D())
	}
	for _, id := range c.Customers.IDs {
		if id <= 0 {
			bad("customers.ids", "ids must be positive customer ids, got %d", id)
		}
	}
	s := c.Sync
	if s.Concurrency < 1 || s.Concurrency > 64 {
		bad("sync.concurrency", "must be between 1 and 64, got %d", s.Concurrency)
	}
	if s.RequestTimeout.D() <= 0 {
		bad("sync.request_timeout", "must be positive, got %v", s.RequestTimeout.D())
	}
	if s.RetryMaxElapsed.D() <= 0 {
		bad("sync.retry_max_elapsed", "must be positive, got %v", s.RetryMaxElapsed.D())
	}
	if s.ShutdownTimeout.D() <= 0 {
		bad("sync.shutdown_timeout", "must be positive, got %v", s.ShutdownTimeout.D())
	}
	// Below 10s only tests make sense (a killed run's lease frees quickly).
	if d := s.LeaseTTL.D(); d < time.Second || d > time.Hour {
		bad("sync.lease_ttl", "must be between 1s and 1h (a few minutes in production), got %v", d)
	}
	if g := s.Guard(); g <= 0 || g > 1 {
		bad("sync.removal_guard", "must be a fraction > 0 and <= 1, got %v", g)
	}
	if f := s.MaxUnreadable(); f < 0 || f > 1 {
		bad("sync.max_unreadable_fraction", "must be a fraction >= 0 and <= 1, got %v", f)
	}
	sched, err := cron.ParseStandard(c.Schedule)
	if err != nil {
		bad("schedule", "%q is not a 5-field cron spec or @every/@hourly descriptor: %v", c.Schedule, err)
	}
	c.CronSchedule = sched
	if in := c.Metrics.Instance; in != "" && !isInstance(in) {
		bad("metrics.instance", "%q must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit", in)
	}
	if c.Invitations.StaleAfter.D() <= 0 {
		bad("invitations.stale_after", "must be positive, got %v", c.Invitations.StaleAfter.D())
	}
	if c.Invitations.MaxDataAge.D() <= 0 {
		bad("invitations.max_data_age", "must be positive")
	}
	c.validateReconcile(bad)
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	slices.SortStableFunc(errs, func(a, b *FieldError) int { return cmp.Compare(lineOrder(a.Line), lineOrder(b.Line)) })
	return errs.errOrNil()
}

// lineOrder sorts errors without a line after those with one.
func lineOrder(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}

// validTenant accepts the identity platform's tenant values: common,
// organizations, consumers, a tenant id (GUID) or a verified domain.
func validTenant(t string) error {
	switch {
	case t == "" || t == "common" || t == "organizations" || t == "consumers",
		isGUID(t), isDomain(t):
		return nil
	}
	return fmt.Errorf("%q must be common, organizations, consumers, a tenant id (GUID) or a domain such as contoso.onmicrosoft.com", t)
}

// validRedirectURI accepts what the identity platform does: an https URI,
// or http only on a loopback host (localhost, 127.0.0.1, [::1]).
func validRedirectURI(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || p.Fragment != "" {
		return fmt.Errorf("%q must be an absolute URI such as http://localhost:8400/", u)
	}
	switch {
	case p.Scheme == "https":
	case p.Scheme == "http" && (p.Hostname() == "localhost" || p.Hostname() == "127.0.0.1" || p.Hostname() == "::1"):
	default:
		return fmt.Errorf("%q must be https, or http on localhost, 127.0.0.1 or [::1] (Microsoft refuses other http redirect URIs)", u)
	}
	return nil
}

// ValidateDatabase checks that a database URL is set.
func (c *Config) ValidateDatabase() error {
	if c.Database.URL == "" {
		return &FieldError{Key: "database.url", Line: c.Line("database.url"),
			Msg: "is empty (set it, e.g. url: ${DATABASE_URL}, and export DATABASE_URL)"}
	}
	return nil
}

// ValidateCredentials checks the keys a sync needs to call the API.
func (c *Config) ValidateCredentials() error {
	var errs Errors
	m := c.MicrosoftAds
	if m.DeveloperToken == "" {
		errs = append(errs, &FieldError{Key: "microsoft_ads.developer_token", Line: c.Line("microsoft_ads.developer_token"),
			Msg: "is empty (set it to the developer token of the Microsoft Advertising account, e.g. ${MSADS_DEVELOPER_TOKEN})"})
	}
	if m.ClientID == "" {
		errs = append(errs, &FieldError{Key: "microsoft_ads.client_id", Line: c.Line("microsoft_ads.client_id"),
			Msg: "is empty (set it to the Application (client) ID of the app registration)"})
	}
	if len(c.Customers.IDs) == 0 && !c.Customers.Discover {
		errs = append(errs, &FieldError{Key: "customers", Line: c.Line("customers"),
			Msg: "list customer ids under customers.ids or set customers.discover: true"})
	}
	return errs.errOrNil()
}
