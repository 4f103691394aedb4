// Package config loads the syncer's YAML configuration: strict decoding (an
// unknown key is an error that names it), ${ENV} and ${file:/path} expansion in
// string values, defaults, then validation that names the field and the values
// it allows.
//
// The keys are a contract (see the design's "Configuration" section); the
// Config type mirrors them one to one.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
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
	Log          Log          `yaml:"log"`

	// CronSchedule is Schedule parsed at load time, so a bad spec fails early.
	CronSchedule cron.Schedule `yaml:"-"`
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

// Duration is a time.Duration written as a Go duration string ("30s", "168h").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML decodes a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 30s or 168h")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("want a duration such as 30s or 168h, got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

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
func Load(path string, getenv func(string) string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s not found (set --config or SYNCER_CONFIG; see config.example.yaml)", path)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(raw, getenv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML text; see Load.
func Parse(raw []byte, getenv func(string) string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if err := expandNode(&root, getenv); err != nil {
		return nil, err
	}
	var cfg Config
	if len(root.Content) > 0 {
		expanded, err := yaml.Marshal(&root)
		if err != nil {
			return nil, fmt.Errorf("re-encode config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(expanded))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, cleanDecodeError(err)
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)

// cleanDecodeError rewrites yaml's "field x not found in type config.Sync"
// into an error that names the key the way the file spells it.
func cleanDecodeError(err error) error {
	msg := err.Error()
	matches := unknownField.FindAllStringSubmatch(msg, -1)
	if len(matches) == 0 {
		return fmt.Errorf("invalid config: %s", strings.TrimPrefix(msg, "yaml: "))
	}
	var parts []string
	for _, m := range matches {
		key := m[2]
		if sec := sectionKey[m[3]]; sec != "" {
			key = sec + "." + key
		}
		parts = append(parts, fmt.Sprintf("unknown key %q (line %s)", key, m[1]))
	}
	return errors.New(strings.Join(parts, "; "))
}

var sectionKey = map[string]string{
	"Database":     "database",
	"MicrosoftAds": "microsoft_ads",
	"Customers":    "customers",
	"Sync":         "sync",
	"Invitations":  "invitations",
	"Metrics":      "metrics",
	"Log":          "log",
}

var refPattern = regexp.MustCompile(`\$\{([^}]*)\}`)

// expandNode replaces ${ENV} and ${file:/path} in every scalar value.
func expandNode(n *yaml.Node, getenv func(string) string) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		var firstErr error
		n.Value = refPattern.ReplaceAllStringFunc(n.Value, func(m string) string {
			ref := m[2 : len(m)-1]
			if p, ok := strings.CutPrefix(ref, "file:"); ok {
				b, err := readRefFile(p)
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("line %d: read ${file:%s}: %w", n.Line, p, err)
				}
				return strings.TrimRight(string(b), "\r\n")
			}
			return getenv(ref)
		})
		if firstErr != nil {
			return firstErr
		}
		// An expanded value is text: quote it so YAML never re-reads a secret's
		// ":" or "#", but let a plain number or boolean keep its type.
		n.Tag = ""
		if _, err := parseScalarAs(n.Value); err != nil || n.Style != 0 {
			n.Style = yaml.DoubleQuotedStyle
		}
	}
	for _, c := range n.Content {
		if err := expandNode(c, getenv); err != nil {
			return err
		}
	}
	return nil
}

// MaxRefFileSize bounds a file named by ${file:/path}: secrets are small,
// and a path such as /dev/zero must not exhaust memory.
const MaxRefFileSize = 1 << 20

// readRefFile reads a ${file:} reference: a regular file (a mounted secret,
// or a symlink to one) of at most MaxRefFileSize bytes. A pipe or device is
// refused, since reading it could block or never end.
func readRefFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no path after file:")
	}
	// Stat before opening: opening a FIFO for reading blocks until a
	// writer comes.
	if st, err := os.Stat(path); err != nil {
		return nil, cmp.Or(errors.Unwrap(err), err)
	} else if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, cmp.Or(errors.Unwrap(err), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, cmp.Or(errors.Unwrap(err), err)
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxRefFileSize+1))
	if err != nil {
		return nil, cmp.Or(errors.Unwrap(err), err)
	}
	if len(b) > MaxRefFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxRefFileSize)
	}
	return b, nil
}

// parseScalarAs lets numbers and booleans from the environment keep their
// type ("5" for requests_per_second, "true" for discover).
func parseScalarAs(v string) (any, error) {
	var out any
	if err := yaml.Unmarshal([]byte(v), &out); err != nil {
		return nil, err
	}
	switch out.(type) {
	case int, float64, bool:
		return out, nil
	}
	return nil, errors.New("not a number or boolean")
}

// SetDefaults fills every unset key with its default.
func (c *Config) SetDefaults() {
	c.Database.Schema = cmp.Or(c.Database.Schema, DefaultSchema)
	m := &c.MicrosoftAds
	m.Environment = cmp.Or(m.Environment, DefaultEnvironment)
	m.RequestsPerSecond = cmp.Or(m.RequestsPerSecond, DefaultRequestsPerSecond)
	m.ThrottleWait = cmp.Or(m.ThrottleWait, Duration(DefaultThrottleWait))
	m.RedirectURI = cmp.Or(m.RedirectURI, DefaultRedirectURI)
	m.Tenant = cmp.Or(m.Tenant, DefaultTenant)
	s := &c.Sync
	s.Concurrency = cmp.Or(s.Concurrency, DefaultConcurrency)
	s.RequestTimeout = cmp.Or(s.RequestTimeout, Duration(DefaultRequestTimeout))
	s.RetryMaxElapsed = cmp.Or(s.RetryMaxElapsed, Duration(DefaultRetryMaxElapsed))
	s.LeaseTTL = cmp.Or(s.LeaseTTL, Duration(DefaultLeaseTTL))
	s.ShutdownTimeout = cmp.Or(s.ShutdownTimeout, Duration(DefaultShutdownTimeout))
	c.Schedule = cmp.Or(c.Schedule, DefaultSchedule)
	c.Invitations.StaleAfter = cmp.Or(c.Invitations.StaleAfter, Duration(DefaultStaleAfter))
	c.Invitations.MaxDataAge = cmp.Or(c.Invitations.MaxDataAge, Duration(DefaultMaxDataAge))
	c.Metrics.Listen = cmp.Or(c.Metrics.Listen, DefaultMetricsListen)
	c.Log.Format = cmp.Or(c.Log.Format, DefaultLogFormat)
	c.Log.Level = cmp.Or(c.Log.Level, DefaultLogLevel)
}

var (
	identPattern    = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	instancePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
)

// Validate checks every key and returns one error naming each bad field.
// Credentials are checked by ValidateCredentials, since some commands
// (migrate, invitations) do not need them.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if !identPattern.MatchString(c.Database.Schema) {
		bad("database.schema", "%q is not a plain lower-case SQL identifier (letters, digits, _)", c.Database.Schema)
	}
	if c.Database.ReaderRole != "" && !identPattern.MatchString(c.Database.ReaderRole) {
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
	if m.ThrottleWait.D() < 0 {
		bad("microsoft_ads.throttle_wait", "must not be negative")
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
		bad("sync.request_timeout", "must be positive")
	}
	if s.RetryMaxElapsed.D() <= 0 {
		bad("sync.retry_max_elapsed", "must be positive")
	}
	if s.ShutdownTimeout.D() <= 0 {
		bad("sync.shutdown_timeout", "must be positive")
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
	if in := c.Metrics.Instance; in != "" && !instancePattern.MatchString(in) {
		bad("metrics.instance", "%q must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit", in)
	}
	if c.Invitations.StaleAfter.D() <= 0 {
		bad("invitations.stale_after", "must be positive")
	}
	if c.Invitations.MaxDataAge.D() <= 0 {
		bad("invitations.max_data_age", "must be positive")
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	return errors.Join(errs...)
}

var (
	guidPattern   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	domainPattern = regexp.MustCompile(`^(?i)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
)

// validTenant accepts the identity platform's tenant values: common,
// organizations, consumers, a tenant id (GUID) or a verified domain.
func validTenant(t string) error {
	switch {
	case t == "" || t == "common" || t == "organizations" || t == "consumers",
		guidPattern.MatchString(t), domainPattern.MatchString(t):
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
		return errors.New("database.url: is empty (set it, e.g. url: ${DATABASE_URL}, and export DATABASE_URL)")
	}
	return nil
}

// ValidateCredentials checks the keys a sync needs to call the API.
func (c *Config) ValidateCredentials() error {
	var errs []error
	m := c.MicrosoftAds
	if m.DeveloperToken == "" {
		errs = append(errs, errors.New("microsoft_ads.developer_token: is empty"))
	}
	if m.ClientID == "" {
		errs = append(errs, errors.New("microsoft_ads.client_id: is empty"))
	}
	if len(c.Customers.IDs) == 0 && !c.Customers.Discover {
		errs = append(errs, errors.New("customers: list customer ids under customers.ids or set customers.discover: true"))
	}
	return errors.Join(errs...)
}
