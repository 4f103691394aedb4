package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
)

var authURLRE = regexp.MustCompile(`https?://\S+/oauth2/v2\.0/authorize\?\S+`)

// authBinary runs the built `syncer auth` with args; signIn gets the
// sign-in URL the binary prints and the process's stdin, and plays the
// person at the browser. It returns the exit code and the whole output.
func authBinary(t *testing.T, e *env, args []string, signIn func(url string, stdin io.Writer)) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"auth", "--config", e.config}, args...)...)
	cmd.Env = append(os.Environ(), "TEST_DEV_TOKEN="+e.sim.DeveloperToken(), "TEST_CLIENT_SECRET="+e.sim.ClientSecret(),
		"TEST_REFRESH_TOKEN=", "BROWSER=none")
	stdin, _ := cmd.StdinPipe()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); _ = pw.Close() }()
	for line := range lines {
		out.WriteString(line + "\n")
		if u := authURLRE.FindString(line); u != "" && signIn != nil {
			go signIn(u, stdin)
			signIn = nil
		}
	}
	<-done
	return cmd.ProcessState.ExitCode(), out.String()
}

func withRedirect(t *testing.T, e *env, redirect string) {
	t.Helper()
	y, _ := os.ReadFile(e.config)
	y2 := strings.Replace(string(y), "  throttle_wait: 100ms\n", "  throttle_wait: 100ms\n  redirect_uri: "+redirect+"\n", 1)
	y2 = strings.Replace(y2, "refresh_token: ${TEST_REFRESH_TOKEN}", `refresh_token: ""`, 1)
	if err := os.WriteFile(e.config, []byte(y2), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The loopback mode of the real binary: the test follows the sign-in URL
// with an HTTP client, which the simulator redirects to the binary's
// listener. Its output is the README's transcript.
func TestAuthBinaryLoopback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(41, 2, 3), "")
	withRedirect(t, e, fmt.Sprintf("http://localhost:%d/", freePort(t)))
	code, out := authBinary(t, e, nil, func(u string, _ io.Writer) {
		resp, err := http.Get(u)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
	})
	t.Logf("transcript:\n%s", out)
	if code != 0 || !strings.Contains(out, "Signed in as") {
		t.Fatalf("exit %d", code)
	}
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("run after auth: exit %d: %s", r.code, r.stderr)
	}
}

// --no-browser: the address the browser lands on is pasted on stdin.
func TestAuthBinaryNoBrowser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, msadstest.Generate(42, 2, 3), "")
	withRedirect(t, e, "http://localhost:8400/")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code, out := authBinary(t, e, []string{"--no-browser"}, func(u string, stdin io.Writer) {
		resp, err := noRedirect.Get(u)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		_, _ = io.WriteString(stdin, resp.Header.Get("Location")+"\n")
	})
	t.Logf("transcript:\n%s", out)
	if code != 0 || !strings.Contains(out, "Signed in as") {
		t.Fatalf("exit %d", code)
	}
}
