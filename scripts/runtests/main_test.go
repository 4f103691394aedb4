package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A module of three packages: one whose tests pass, one whose test fails,
// one without tests. runtests must report each as go test does, exit 1
// for the failure, run each binary in its package's folder, and on the
// next run start the package that took longest first.
func TestRunReportsFailuresAndOrdersByLastDuration(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	mod := t.TempDir()
	files := map[string]string{
		"go.mod":       "module example.com/m\n\ngo 1.22\n",
		"pass/pass.go": "package pass\n",
		"pass/pass_test.go": `package pass

import (
	"os"
	"testing"
	"time"
)

func TestPass(t *testing.T) {
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat("here.txt"); err != nil {
		t.Fatal("not run in its package's folder:", err)
	}
}
`,
		"pass/here.txt":     "",
		"fail/fail.go":      "package fail\n",
		"fail/fail_test.go": "package fail\n\nimport \"testing\"\n\nfunc TestFail(t *testing.T) { t.Error(\"the failure's own words\") }\n",
		"notests/n.go":      "package notests\n",
		"crash/crash.go":    "package crash\n",
		"crash/crash_test.go": `package crash

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(3) }
`,
	}
	for name, body := range files {
		p := filepath.Join(mod, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(mod)
	t.Setenv("GOFLAGS", "-mod=mod")

	var out bytes.Buffer
	if code := run([]string{"-p", "1", "./..."}, &out); code != 1 {
		t.Fatalf("exit %d with a failing package, want 1:\n%s", code, &out)
	}
	got := out.String()
	for _, want := range []string{"ok  \texample.com/m/pass\t", "the failure's own words", "FAIL\texample.com/m/fail\t",
		"runtests: exit status 3\nFAIL\texample.com/m/crash\t", "\nFAIL\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "notests") {
		t.Errorf("a package without tests was run:\n%s", got)
	}

	// pass took longer (its sleep): it runs first now.
	out.Reset()
	if code := run([]string{"-p", "1", "./..."}, &out); code != 1 {
		t.Fatalf("second run: exit %d, want 1", code)
	}
	if i, j := strings.Index(out.String(), "example.com/m/pass"), strings.Index(out.String(), "example.com/m/fail"); i < 0 || j < 0 || i > j {
		t.Errorf("the package that took longest did not run first:\n%s", &out)
	}

	// Only the passing package: exit 0.
	out.Reset()
	if code := run([]string{"./pass"}, &out); code != 0 {
		t.Errorf("exit %d with every package passing, want 0:\n%s", code, &out)
	}

	// A package that does not build: exit 2, nothing run.
	if err := os.WriteFile(filepath.Join(mod, "pass", "broken_test.go"), []byte("package pass\n\nfunc broken() { undefined() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"./pass"}, &out); code != 2 || strings.Contains(out.String(), "ok ") {
		t.Errorf("exit %d with a package that does not build, want 2 and nothing run:\n%s", code, &out)
	}
}

func TestBinaryNameAsGoTestNamesIt(t *testing.T) {
	for path, want := range map[string]string{
		"github.com/msads-syncer/syncer/internal/load": "load.test",
		"github.com/msads-syncer/syncer/cmd/syncer":    "syncer.test",
		"example.com/m/v2":                             "m.test",
		"example.com/m/v1":                             "v1.test",
		"example.com/m/v0":                             "v0.test",
		"example.com/m/v2x":                            "v2x.test",
	} {
		if got := binaryName(path); got != want {
			t.Errorf("binaryName(%q) = %q, want %q", path, got, want)
		}
	}
}
