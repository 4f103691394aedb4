package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// minimalEnv sets the variables minimal refers to.
var minimalEnv = map[string]string{"DATABASE_URL": "postgres://u:pw@h/db", "DEV": "devtok"}

const minimal = `
database:
  url: ${DATABASE_URL}
microsoft_ads:
  developer_token: ${DEV}
  client_id: abc
customers:
  ids: [150123456, 150123457]
`

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal), env(minimalEnv))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Database.URL.Value(); got != "postgres://u:pw@h/db" {
		t.Errorf("database.url = %q", got)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"schema", cfg.Database.Schema, "msads"},
		{"environment", cfg.MicrosoftAds.Environment, "production"},
		{"rps", cfg.MicrosoftAds.RequestsPerSecond, 5.0},
		{"throttle_wait", cfg.MicrosoftAds.ThrottleWait.D(), 60 * time.Second},
		{"account_names", cfg.MicrosoftAds.AccountNamesEnabled(), true},
		{"concurrency", cfg.Sync.Concurrency, 4},
		{"retry_max_elapsed", cfg.Sync.RetryMaxElapsed.D(), 5 * time.Minute},
		{"removal_guard", cfg.Sync.Guard(), 0.5},
		{"stale_after", cfg.Invitations.StaleAfter.D(), 168 * time.Hour},
		{"schedule", cfg.Schedule, "0 */6 * * *"},
		{"listen", cfg.Metrics.Listen, ":9464"},
		{"ids", fmt.Sprint(cfg.Customers.IDs), "[150123456 150123457]"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if cfg.CronSchedule == nil {
		t.Error("schedule not parsed")
	}
	if err := cfg.ValidateCredentials(); err != nil {
		t.Errorf("ValidateCredentials: %v", err)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top key", "databse:\n  url: x\n", `databse (line 1): unknown key; did you mean database?`},
		{"unknown nested key", "sync:\n  concurency: 3\n", `sync.concurency (line 2): unknown key; did you mean sync.concurrency?`},
		{"bad duration", "sync:\n  request_timeout: 30\n", "sync.request_timeout (line 2): want a duration such as 30s, 90m, 168h or 7d, got \"30\""},
		{"bad schedule", "schedule: \"every day\"\n", "schedule (line 1):"},
		{"bad environment", "microsoft_ads:\n  environment: staging\n", "microsoft_ads.environment"},
		{"null concurrency takes the default", "sync:\n  concurrency:\n", ""},
		{"negative concurrency", "sync:\n  concurrency: -2\n", "sync.concurrency"},
		{"bad guard", "sync:\n  removal_guard: 1.5\n", "sync.removal_guard"},
		{"bad schema", "database:\n  schema: \"a-b\"\n", "database.schema"},
		{"bad log format", "log:\n  format: xml\n", "log.format"},
		{"bad url", "invitations:\n  webhook_url: notaurl\n", "invitations.webhook_url"},
		{"bad customer id", "customers:\n  ids: [-1]\n", "customers.ids"},
		{"ids not numbers", "customers:\n  ids: [abc]\n", `customers.ids[0] (line 2): want a whole number, got "abc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), env(nil))
			if tt.want == "" { // zero means default: valid
				if err != nil {
					t.Fatalf("want no error, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestExpansion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("s3cr#t: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := `
microsoft_ads:
  client_secret: ${file:` + secretFile + `}
  requests_per_second: ${RPS}
  developer_token: "pre-${DEV}"
customers:
  discover: ${DISCOVER}
`
	cfg, err := Parse([]byte(y), env(map[string]string{"RPS": "12.5", "DEV": "d", "DISCOVER": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.MicrosoftAds.ClientSecret.Value(); got != "s3cr#t: x" {
		t.Errorf("client_secret = %q", got)
	}
	if cfg.MicrosoftAds.RequestsPerSecond != 12.5 {
		t.Errorf("rps = %v", cfg.MicrosoftAds.RequestsPerSecond)
	}
	if got := cfg.MicrosoftAds.DeveloperToken.Value(); got != "pre-d" {
		t.Errorf("developer_token = %q", got)
	}
	if !cfg.Customers.Discover {
		t.Error("discover not true")
	}

	_, err = Parse([]byte("database:\n  token_key: ${file:/nonexistent/x}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/x") {
		t.Fatalf("missing file error = %v", err)
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal+"  \n"), env(map[string]string{"DATABASE_URL": "postgres://u:hunter2@h/db", "DEV": "devtoken-xyz"}))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%v %+v %#v %s", cfg, cfg, cfg, cfg.MicrosoftAds.DeveloperToken)
	l := slog.New(slog.NewJSONHandler(&b, nil))
	l.Info("cfg", "config", cfg, "db", cfg.Database)
	l2 := slog.New(slog.NewTextHandler(&b, nil))
	l2.Info("cfg", "config", cfg, "token", cfg.MicrosoftAds.DeveloperToken)
	for _, secret := range []string{"hunter2", "devtoken-xyz"} {
		if strings.Contains(b.String(), secret) {
			t.Errorf("secret %q printed: %s", secret, b.String())
		}
	}
}

func TestValidateCredentials(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte("log:\n  level: debug\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.ValidateCredentials()
	for _, want := range []string{"microsoft_ads.developer_token", "microsoft_ads.client_id", "customers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateCredentials = %v, want mention of %s", err, want)
		}
	}
	if err := cfg.ValidateDatabase(); err == nil || !strings.Contains(err.Error(), "database.url") {
		t.Errorf("ValidateDatabase = %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v", err)
	}
}

// TestExampleConfigIsValid keeps config.example.yaml in step with the code.
func TestExampleConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg, err := Load("../../config.example.yaml", env(map[string]string{
		"DATABASE_URL": "postgres://localhost/x", "MSADS_DEVELOPER_TOKEN": "d", "MSADS_CLIENT_ID": "c",
		"SYNCER_TOKEN_KEY": "k",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateCredentials(); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsInstance(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal+"metrics:\n  instance: eu-west-1.prod\n"), env(minimalEnv))
	if err != nil || cfg.Metrics.Instance != "eu-west-1.prod" {
		t.Fatalf("instance = %q, err %v", cfg.Metrics.Instance, err)
	}
	cfg, err = Parse([]byte(minimal), env(minimalEnv))
	if err != nil || cfg.Metrics.Instance != "" {
		t.Fatalf("default instance = %q (want none), err %v", cfg.Metrics.Instance, err)
	}
	for _, bad := range []string{`"a/b"`, `"-x"`, `"has space"`, `"` + strings.Repeat("x", 129) + `"`} {
		_, err := Parse([]byte(minimal+"metrics:\n  instance: "+bad+"\n"), env(minimalEnv))
		if err == nil || !strings.Contains(err.Error(), "metrics.instance") {
			t.Errorf("instance %s: err %v, want one naming metrics.instance", bad, err)
		}
	}
}

func TestFileRefRefusesDevicesAndHugeFiles(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/dev/zero", "/dev/null", os.TempDir()} {
		_, err := Parse([]byte("database:\n  token_key: ${file:"+p+"}\n"), env(nil))
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("${file:%s}: err %v, want not a regular file", p, err)
		}
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, MaxRefFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte("database:\n  token_key: ${file:"+big+"}\n"), env(nil)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge ${file:}: err %v", err)
	}
}

// TestErrorsNameKeyAndLine: every error names the key and its line, says
// what the key wants in plain words (never a Go type), and is one line.
func TestErrorsNameKeyAndLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"concurrency not a number", "log:\n  level: info\nsync:\n  concurrency: many\n",
			[]string{`sync.concurrency (line 4): want a whole number, got "many"`}},
		{"concurrency zero", "sync:\n  request_timeout: 5s\n  concurrency: 0\n",
			[]string{"sync.concurrency (line 3): must be between 1 and 64, got 0"}},
		{"requests_per_second zero", "microsoft_ads:\n  requests_per_second: 0\n",
			[]string{"microsoft_ads.requests_per_second (line 2): must be > 0"}},
		{"requests_per_second text", "microsoft_ads:\n  requests_per_second: fast\n",
			[]string{`microsoft_ads.requests_per_second (line 2): want a number, got "fast"`}},
		{"throttle_wait zero", "microsoft_ads:\n  throttle_wait: 0s\n",
			[]string{"microsoft_ads.throttle_wait (line 2): must be positive"}},
		{"fraction a list", "sync:\n  removal_guard: [1]\n",
			[]string{"sync.removal_guard (line 2): want a number, got a list"}},
		{"duration a number", "invitations:\n  stale_after: 7\n",
			[]string{`invitations.stale_after (line 2): want a duration such as 30s, 90m, 168h or 7d, got "7"`}},
		{"bool", "customers:\n  discover: maybe\n",
			[]string{`customers.discover (line 2): want true or false, got "maybe"`}},
		{"ids a scalar", "customers:\n  ids: 150123456\n",
			[]string{"customers.ids (line 2): want a list, such as [150123456]"}},
		{"section a scalar", "sync: fast\n",
			[]string{"sync (line 1): sync must be a mapping of keys (key: value), got a value"}},
		{"file a list", "- a\n- b\n",
			[]string{"line 1: the file must be a mapping of keys"}},
		{"unknown key and a bad value", "metrics:\n  listen: \":9090\"\n  pushgatway_url: x\nlog:\n  level: loud\n",
			[]string{"metrics.pushgatway_url (line 3): unknown key; did you mean metrics.pushgateway_url?"}},
		{"set twice", "sync:\n  concurrency: 2\n  concurrency: 3\n",
			[]string{"sync.concurrency (line 3): set twice (first on line 2)"}},
		{"several, in file order", "log:\n  level: loud\nsync:\n  concurrency: 0\n",
			[]string{`log.level (line 2): must be debug, info, warn or error, got "loud"; sync.concurrency (line 4): must be between 1 and 64, got 0`}},
		{"yaml syntax", "log:\n  level: info\nsync:\n\tconcurrency: 2\n",
			[]string{"line 4: invalid YAML: found character that cannot start any token"}},
		{"unset variable", "database:\n  schema: msads\n  url: ${NOPE_URL}\n",
			[]string{"database.url (line 3): ${NOPE_URL} is not set: export NOPE_URL, or write ${NOPE_URL:-default} to allow it unset"}},
		{"unset variable in a number", "sync:\n  concurrency: ${NOPE_N}\n",
			[]string{"sync.concurrency (line 2): ${NOPE_N} is not set"}},
		{"malformed reference", "database:\n  url: ${not a name}\n",
			[]string{`database.url (line 2): "${not a name}" is not a reference`}},
		{"missing file", "database:\n  token_key: ${file:/nonexistent/key}\n",
			[]string{"database.token_key (line 2): ${file:/nonexistent/key}: no such file or directory: mount the secret there, or fix the path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n  %s\nwant it to contain\n  %s", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, goType := range []string{"int64", "float64", "!!str", "config.", "time.Duration", "unmarshal"} {
				if strings.Contains(msg, goType) {
					t.Errorf("error names a Go type (%s): %s", goType, msg)
				}
			}
		})
	}
}

// TestExplicitZeroIsKeptAbsentTakesDefault: defaults apply to keys the file
// leaves out (or sets to null, or to a reference that expands to nothing),
// never to a key set to 0.
func TestExplicitZeroIsKeptAbsentTakesDefault(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte("sync:\n  request_timeout: 5s\n  concurrency:\nmicrosoft_ads:\n  requests_per_second: ${RPS:-}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sync.Concurrency != DefaultConcurrency || cfg.MicrosoftAds.RequestsPerSecond != DefaultRequestsPerSecond {
		t.Errorf("concurrency %d, rps %v: want the defaults", cfg.Sync.Concurrency, cfg.MicrosoftAds.RequestsPerSecond)
	}
	if cfg.Sync.RequestTimeout.D() != 5*time.Second || cfg.Sync.RetryMaxElapsed.D() != DefaultRetryMaxElapsed {
		t.Errorf("request_timeout %v, retry_max_elapsed %v", cfg.Sync.RequestTimeout.D(), cfg.Sync.RetryMaxElapsed.D())
	}
	if got := cfg.Line("sync.request_timeout"); got != 2 {
		t.Errorf("Line(sync.request_timeout) = %d, want 2", got)
	}
	if got := cfg.Line("sync.concurrency"); got != 0 {
		t.Errorf("Line(sync.concurrency) = %d for a null value, want 0 (absent)", got)
	}
	for _, y := range []string{"sync:\n  concurrency: 0\n", "microsoft_ads:\n  requests_per_second: 0\n", "sync:\n  retry_max_elapsed: 0s\n", "sync:\n  concurrency: ${N}\n"} {
		if _, err := Parse([]byte(y), env(map[string]string{"N": "0"})); err == nil {
			t.Errorf("%q: no error, want the explicit zero refused", y)
		}
	}
	// A Config built in code still takes the default for every zero value.
	var c Config
	c.SetDefaults()
	if c.Sync.Concurrency != DefaultConcurrency || c.MicrosoftAds.RequestsPerSecond != DefaultRequestsPerSecond {
		t.Errorf("code-built config: concurrency %d, rps %v", c.Sync.Concurrency, c.MicrosoftAds.RequestsPerSecond)
	}
}

func TestDurationsTakeDays(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "0.5d": 12 * time.Hour, "90m": 90 * time.Minute,
		"1d30m15s": 24*time.Hour + 30*time.Minute + 15*time.Second, "-1d": -24 * time.Hour, "168h": 168 * time.Hour,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"d", "7", "7days", "1d 2h", "x1d", "1dd", ""} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q): no error", bad)
		}
	}
	cfg, err := Parse([]byte("invitations:\n  stale_after: 7d\nsync:\n  lease_ttl: 0.01d\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Invitations.StaleAfter.D() != 7*24*time.Hour {
		t.Errorf("stale_after = %v", cfg.Invitations.StaleAfter.D())
	}
}

func TestReferences(t *testing.T) {
	t.Parallel()
	lookup := func(m map[string]string) Env {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	y := "database:\n  url: ${DB:-postgres://localhost/x}\n  token_key: ${KEY}\n  schema: ${SCHEMA:-msads}\nmicrosoft_ads:\n  client_secret: ${SECRET:-}\n"
	cfg, err := ParseEnv([]byte(y), lookup(map[string]string{"KEY": "", "SCHEMA": "other"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.URL.Value() != "postgres://localhost/x" || cfg.Database.Schema != "other" ||
		cfg.Database.TokenKey.Value() != "" || cfg.MicrosoftAds.ClientSecret.Value() != "" {
		t.Errorf("url %q schema %q key %q secret %q", cfg.Database.URL.Value(), cfg.Database.Schema,
			cfg.Database.TokenKey.Value(), cfg.MicrosoftAds.ClientSecret.Value())
	}
	// Set but empty is not unset with a lookup; with a plain getenv it is.
	if _, err := Parse([]byte(y), env(map[string]string{"KEY": ""})); err == nil || !strings.Contains(err.Error(), "database.token_key (line 3): ${KEY} is not set") {
		t.Errorf("getenv, KEY empty: err %v", err)
	}
	// A value in a reference is text: YAML syntax in it is not read.
	cfg, err = ParseEnv([]byte("database:\n  url: ${DB}\n"), lookup(map[string]string{"DB": "a: b # c\n- d"}))
	if err != nil || cfg.Database.URL.Value() != "a: b # c\n- d" {
		t.Errorf("url %q, err %v", cfg.Database.URL.Value(), err)
	}
}

func TestReconcileKeys(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal+"reconcile:\n  allowed_domains: [Example.com, ' corp.example ']\n  domain_aliases: {Old-Name.com: EXAMPLE.com}\n"+
		"  approved_agencies: [7002, 7001, 7002]\n  columns:\n    email: mail\n    manager: \"\"\n"), env(minimalEnv))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Reconcile.Rules()
	if fmt.Sprint(r.AllowedDomains, r.DomainAliases, r.ApprovedAgencies) != "[corp.example example.com] map[old-name.com:example.com] [7001 7002]" ||
		!slices.Contains(r.ActiveStatuses, "true") || !slices.Contains(r.ActiveStatuses, "active") {
		t.Errorf("rules = %+v", r)
	}
	var got []string
	for _, c := range cfg.DirectoryColumns() {
		got = append(got, fmt.Sprintf("%s=%s/%v/%d", c.Field, c.Header, c.Required, c.Line))
	}
	// Set in the file: required (email), or not mapped (manager: ""); left
	// out: the default header, used when the file has it.
	if want := "email=mail/true/14 upn=userPrincipalName/false/0 employee_id=employeeId/false/0 status=accountEnabled/false/0 " +
		"manager=/false/15 department=department/false/0 display_name=displayName/false/0"; strings.Join(got, " ") != want {
		t.Errorf("columns:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}

	for _, tc := range []struct{ yaml, want string }{
		{"reconcile:\n  allowed_domains: [example]\n", `reconcile.allowed_domains (line 2): item 1: "example" is not a domain such as example.com`},
		{"reconcile:\n  domain_aliases: {a.com: b.com, b.com: c.com}\n", "reconcile.domain_aliases (line 2): a.com maps to b.com, which is itself an alias: map a.com to the final domain"},
		{"reconcile:\n  domain_aliases: {a.com: A.com}\n", "reconcile.domain_aliases (line 2): a.com: maps a domain to itself"},
		{"reconcile:\n  active_statuses: []\n", "reconcile.active_statuses (line 2): is empty: nobody would count as active"},
		{"reconcile:\n  approved_agencies: [-1]\n", "reconcile.approved_agencies (line 2): ids must be positive customer ids, got -1"},
		{"reconcile:\n  columns: {email: '', upn: ''}\n", "reconcile.columns (line 2): name the header of reconcile.columns.email or reconcile.columns.upn"},
		{"reconcile:\n  columns: {mail: x}\n", "reconcile.columns.mail (line 2): unknown key; did you mean reconcile.columns.email?"},
	} {
		_, err := Parse([]byte(tc.yaml), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
