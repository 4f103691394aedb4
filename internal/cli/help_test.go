package cli

import (
	"errors"
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/redact"
	"github.com/msads-syncer/syncer/internal/status"
)

// TestHelpPerCommand: `syncer help CMD` and `syncer CMD --help` print the
// usage line, a sentence, the command's own flags (only those it takes)
// and an example, on stdout, exit 0.
func TestHelpPerCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cmd           string
		want, notWant []string
	}{
		{"run", []string{"--config FILE", "--dry-run", "--customer ID", "--summary FILE", "--allow-mass-removal", "--skip-migrate", "--log-level LEVEL"}, nil},
		{"serve", []string{"--now", "--dry-run", "--customer ID"}, []string{"--summary"}},
		{"migrate", []string{"--config FILE", "--log-format FORMAT"}, []string{"--dry-run", "--customer", "--summary"}},
		{"invitations", []string{"--older-than DURATION", "--fail-on-stale", "--notify", "--dry-run", "--customer ID"}, nil},
		{"auth", []string{"--config FILE"}, []string{"--dry-run", "--customer"}},
		{"check", []string{"--config FILE", "--json"}, []string{"--dry-run", "--customer"}},
		{"demo", []string{"--log-level LEVEL"}, []string{"--config", "--dry-run", "--customer"}},
		{"version", nil, []string{"--config", "Flags:"}},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{{"help", tt.cmd}, {tt.cmd, "--help"}, {tt.cmd, "-h"}} {
				code, out, errOut := runCLI(t, args...)
				if code != ExitOK || errOut != "" {
					t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
				}
				if !strings.HasPrefix(out, "Usage: syncer "+tt.cmd) {
					t.Errorf("%v: no usage line:\n%s", args, out)
				}
				c, _ := lookupCommand(tt.cmd)
				if !strings.Contains(out, "\n"+c.summary+"\n") || !strings.Contains(out, "Example:\n  syncer "+tt.cmd) {
					t.Errorf("%v: no sentence or example:\n%s", args, out)
				}
				for _, w := range tt.want {
					if !strings.Contains(out, w) {
						t.Errorf("%v: help lacks %q:\n%s", args, w, out)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(out, w) {
						t.Errorf("%v: help offers %q, which %s does not take:\n%s", args, w, tt.cmd, out)
					}
				}
			}
		})
	}
}

func TestHelpAndUsageErrors(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "help")
	if code != ExitOK || !strings.Contains(out, "check ") || !strings.Contains(out, "syncer help <command>") {
		t.Errorf("syncer help: exit %d\n%s", code, out)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"help", "nope"}, `syncer: help: unknown command "nope"; the commands are run, serve, migrate, invitations, reconcile, evidence, review, auth, check, demo, version`},
		{[]string{"nope"}, `syncer: unknown command "nope"; the commands are run,`},
		{[]string{"migrate", "--dry-run"}, "syncer migrate: flag provided but not defined: -dry-run (see syncer help migrate)"},
		{[]string{"--dry-run", "migrate"}, "syncer migrate: flag provided but not defined: -dry-run"},
		{[]string{"check", "--customer", "1"}, "syncer check: flag provided but not defined: -customer"},
		{[]string{"--bogus", "run"}, "syncer: unknown flag --bogus before the command"},
		{[]string{"--config"}, "syncer: flag --config needs a value"},
		{[]string{"run", "extra"}, `syncer run: unexpected argument "extra"`},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(t, tt.args...)
		if code != ExitUsage || out != "" || !strings.HasPrefix(errOut, tt.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and one line starting %q", tt.args, code, out, errOut, tt.want)
		}
	}
}

// TestConfigBeforeOrAfterTheCommand: --config (and the other common flags)
// are taken before or after the command, = or space.
func TestConfigBeforeOrAfterTheCommand(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "no_such_schema_for_flags", "")
	bad := path + ".missing"
	for _, args := range [][]string{
		{"--config", bad, "migrate"},
		{"migrate", "--config", bad},
		{"--config=" + bad, "--log-level", "debug", "migrate"},
		{"--log-level=warn", "migrate", "--config=" + bad},
	} {
		code, _, errOut := runCLI(t, args...)
		if code != ExitFatal || !strings.Contains(errOut, "config file "+bad+" not found") {
			t.Errorf("%v: exit %d, stderr %q; want the --config file named", args, code, errOut)
		}
	}
	// And a good file is really used from either place.
	for _, args := range [][]string{{"--config", path, "invitations"}, {"invitations", "--config", path}} {
		code, _, errOut := runCLI(t, args...)
		if code != ExitFatal || !strings.Contains(errOut, `schema "no_such_schema_for_flags" has no syncer tables`) {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func TestErrorsAreOneRedactedLine(t *testing.T) {
	t.Parallel()
	set := &redact.Set{}
	set.Add("devtoken-abcdef123", "pw")
	io := IO{secrets: set}
	msg := "first line\r\n  second: devtoken-abcdef123 refused\nthe password pw\n\n"
	if got, want := errorLine(io, msg), "first line; second: [redacted] refused; the password pw"; got != want {
		t.Errorf("errorLine = %q, want %q", got, want)
	}
	joined := errors.Join(errors.New("a: b"), errors.New("c"))
	if got := oneLine(joined.Error()); got != "a: b; c" {
		t.Errorf("oneLine(joined) = %q", got)
	}
}

// TestLastLineNamesFailedCustomers: the last stderr line of a partial or
// failed run names each failed customer and its first error, one line,
// each error cut to a bounded length.
func TestLastLineNamesFailedCustomers(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 500)
	res := &job.Result{Status: status.Partial, Failed: 2, Customers: []job.CustomerResult{
		{CustomerID: 150001753, Status: status.Failed, Error: "GetUser (customer 150001753): HTTP 400: code 106 UserIsNotAuthorized:\nline two"},
		{CustomerID: 150001754, Status: status.Succeeded},
		{CustomerID: 150002071, Status: status.Failed, Error: "removal guard: " + long},
	}}
	var stderr strings.Builder
	if code := exitCode(IO{Stderr: &stderr}, res); code != ExitPartial {
		t.Errorf("exit %d", code)
	}
	got := stderr.String()
	want := regexp.MustCompile(`^syncer: 2 of 3 customers failed: 150001753 \(GetUser \(customer 150001753\): HTTP 400: code 106 UserIsNotAuthorized:; line two\); 150002071 \(removal guard: x+…\)\n$`)
	if !want.MatchString(got) {
		t.Errorf("last line = %q", got)
	}
	if len(got) > 600 {
		t.Errorf("last line is %d bytes: the long error was not cut", len(got))
	}
	res.Status, res.Failed = status.Failed, 3
	res.Customers[1] = job.CustomerResult{CustomerID: 1, Status: status.Failed, Error: "boom"}
	stderr.Reset()
	if code := exitCode(IO{Stderr: &stderr}, res); code != ExitFatal || !strings.HasPrefix(stderr.String(), "syncer: all 3 customers failed: 150001753 (") {
		t.Errorf("all failed: exit %d, %q", code, stderr.String())
	}
	if strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("not one line: %q", stderr.String())
	}
}

// Duration flags take days as the configuration does (the help's own
// example is `--older-than 7d`), and a bad one is a usage error naming it.
func TestDurationFlagsTakeDays(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "72h": 72 * time.Hour, "90m": 90 * time.Minute} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		d := durationFlag(fs, "older-than", "")
		if err := fs.Parse([]string{"--older-than", in}); err != nil || *d != want {
			t.Errorf("--older-than %s = %v, %v; want %v", in, *d, err, want)
		}
	}
	var stderr strings.Builder
	code := Main([]string{"invitations", "--older-than", "7x"}, IO{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }})
	if code != ExitUsage || !strings.Contains(stderr.String(), "older-than") || !strings.Contains(stderr.String(), "7d") {
		t.Errorf("--older-than 7x: exit %d, stderr %q; want a usage error naming the flag and the form", code, stderr.String())
	}
}
