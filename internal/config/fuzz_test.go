package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fuzzEnv is the fake environment of FuzzLoad: a few names with values of
// every kind a config takes, the rest empty.
func fuzzEnv(k string) string {
	return map[string]string{
		"DATABASE_URL": "postgres://u:pw@h/db",
		"DEV":          "devtok",
		"NUM":          "5",
		"BOOL":         "true",
		"ODD":          "a: b # c\n- d",
		"DUR":          "30s",
	}[k]
}

// dangerousRef matches ${file:} references to pseudo-files that look
// regular but may block or never end (/proc/kmsg): the fuzzer must not read
// them. Devices and FIFOs elsewhere are refused by Load itself.
var dangerousRef = regexp.MustCompile(`file:\s*/+(proc|sys)(/|\})`)

// FuzzLoad feeds any bytes to Load as a config file: it must never panic,
// and a failure must say what is wrong (a key or the reason), never be empty.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		minimal,
		"",
		"database:\n  url: ${DATABASE_URL}\n  token_key: ${file:@SECRET@}\nmicrosoft_ads:\n  developer_token: ${DEV}\n  client_id: x\n  requests_per_second: ${NUM}\ncustomers:\n  discover: ${BOOL}\n",
		"sync:\n  concurrency: 0\n  request_timeout: -1s\n  removal_guard: 2\nschedule: \"not cron\"\nlog:\n  level: loud\n",
		"metrics:\n  instance: \"bad/instance\"\n  pushgateway_url: ftp://x\n",
		"metrics:\n  instance: eu-west-1\n  listen: \":9464\"\n",
		"invitations:\n  stale_aftr: 24h\n",
		"microsoft_ads:\n  client_secret: ${ODD}\n  throttle_wait: [1, 2]\n",
		"a: &a [*a, *a]\n",
		"database: ${file:/nonexistent}\n",
		"customers:\n  ids: [1, -2, x]\n",
		"- list\n- at root\n",
		"{{{",
		"\t:\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		text := strings.ReplaceAll(string(data), "@SECRET@", secret)
		if dangerousRef.MatchString(text) {
			t.Skip("reference to /proc or /sys")
		}
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path, fuzzEnv)
		if err != nil {
			msg := err.Error()
			prefix := "config " + path + ": "
			if !strings.HasPrefix(msg, prefix) {
				t.Fatalf("error does not name the file: %q", msg)
			}
			what := strings.TrimSpace(strings.TrimPrefix(msg, prefix))
			if len(what) < 4 || strings.Contains(what, "%!") {
				t.Fatalf("error does not say what is wrong: %q", msg)
			}
			return
		}
		if cfg == nil {
			t.Fatal("no config and no error")
		}
		if cfg.CronSchedule == nil {
			t.Fatal("loaded config without a parsed schedule")
		}
		// A loaded config stays valid: Validate is idempotent.
		if err := cfg.Validate(); err != nil {
			t.Fatalf("loaded config fails Validate: %v", err)
		}
	})
}
