package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

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
	cfg, err := Parse([]byte(minimal), env(map[string]string{"DATABASE_URL": "postgres://u:pw@h/db", "DEV": "devtok"}))
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
		{"unknown top key", "databse:\n  url: x\n", `unknown key "databse"`},
		{"unknown nested key", "sync:\n  concurency: 3\n", `unknown key "sync.concurency"`},
		{"bad duration", "sync:\n  request_timeout: 30\n", "duration"},
		{"bad schedule", "schedule: \"every day\"\n", "schedule:"},
		{"bad environment", "microsoft_ads:\n  environment: staging\n", "microsoft_ads.environment"},
		{"bad concurrency", "sync:\n  concurrency: 0\n", ""},
		{"negative concurrency", "sync:\n  concurrency: -2\n", "sync.concurrency"},
		{"bad guard", "sync:\n  removal_guard: 1.5\n", "sync.removal_guard"},
		{"bad schema", "database:\n  schema: \"a-b\"\n", "database.schema"},
		{"bad log format", "log:\n  format: xml\n", "log.format"},
		{"bad url", "invitations:\n  webhook_url: notaurl\n", "invitations.webhook_url"},
		{"bad customer id", "customers:\n  ids: [-1]\n", "customers.ids"},
		{"ids not numbers", "customers:\n  ids: [abc]\n", "invalid config"},
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
	cfg, err := Parse([]byte(minimal+"metrics:\n  instance: eu-west-1.prod\n"), env(nil))
	if err != nil || cfg.Metrics.Instance != "eu-west-1.prod" {
		t.Fatalf("instance = %q, err %v", cfg.Metrics.Instance, err)
	}
	cfg, err = Parse([]byte(minimal), env(nil))
	if err != nil || cfg.Metrics.Instance != "" {
		t.Fatalf("default instance = %q (want none), err %v", cfg.Metrics.Instance, err)
	}
	for _, bad := range []string{`"a/b"`, `"-x"`, `"has space"`, `"` + strings.Repeat("x", 129) + `"`} {
		_, err := Parse([]byte(minimal+"metrics:\n  instance: "+bad+"\n"), env(nil))
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
