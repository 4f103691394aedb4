package cli

import (
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// loopback receives the sign-in's redirect on http://localhost:<port>
// (RFC 8252 §7.3): the browser brings the code to the syncer itself.
type loopback struct {
	redirectURI string // the URI to send, with the port actually listened on
	path        string
	srv         *http.Server
	lns         []net.Listener
	got         chan loopbackResult

	mu    sync.Mutex
	state string    // the sign-in's; set (setState) before its URL is handed out
	warn  io.Writer // where refused redirects are reported
	done  bool
}

type loopbackResult struct {
	code string
	err  error
}

// listenLoopback listens on redirectURI's host and port. The URI must be
// http on localhost, 127.0.0.1 or [::1]. Without a port, a public client
// gets a free port (Microsoft accepts any port of an http://localhost
// redirect URI for public clients) and the URI is rewritten with it; a
// confidential one listens on port 80.
func listenLoopback(redirectURI string, public bool) (*loopback, error) {
	u, err := url.Parse(redirectURI)
	if err != nil || u.Scheme != "http" || (u.Hostname() != "localhost" && u.Hostname() != "127.0.0.1" && u.Hostname() != "::1") {
		return nil, fmt.Errorf("microsoft_ads.redirect_uri %q is not a loopback address (http://localhost:<port>/), so syncer auth cannot receive the sign-in itself: "+
			"register and configure http://localhost:8400/, or use syncer auth --no-browser (paste the address) or --device", redirectURI)
	}
	port := u.Port()
	if port == "" && !public {
		port = "80"
	}
	hosts := []string{u.Hostname()}
	if u.Hostname() == "localhost" {
		hosts = []string{"127.0.0.1", "::1"} // a browser may resolve localhost to either
	}
	lb := &loopback{path: cmpOr(u.EscapedPath(), "/"), got: make(chan loopbackResult, 1)}
	for i, h := range hosts {
		p := port
		if p == "" {
			p = "0"
		}
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", net.JoinHostPort(h, p))
		if err != nil {
			if i > 0 {
				continue // IPv6 loopback missing or taken: IPv4 is enough
			}
			lb.close()
			return nil, fmt.Errorf("cannot listen for the sign-in's redirect on %s (from microsoft_ads.redirect_uri %s): %w; "+
				"stop what uses that port, or register and configure another http://localhost:<port>/ redirect URI", net.JoinHostPort(h, p), redirectURI, err)
		}
		if port == "" {
			port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		}
		lb.lns = append(lb.lns, ln)
	}
	if u.Port() == "" && public {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	lb.redirectURI = u.String()
	lb.srv = &http.Server{Handler: lb, ReadHeaderTimeout: 10 * time.Second}
	for _, ln := range lb.lns {
		go func() { _ = lb.srv.Serve(ln) }()
	}
	return lb, nil
}

// setState sets the state the redirect must carry.
func (lb *loopback) setState(state string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.state = state
}

// ServeHTTP answers the browser's redirect.
func (lb *loopback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.EscapedPath() != lb.path || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	lb.mu.Lock()
	state, warn := lb.state, lb.warn
	lb.mu.Unlock()
	if q.Get("state") != state {
		// Not this sign-in's redirect (an old tab, another attempt): refuse
		// it and keep waiting for ours.
		w.WriteHeader(http.StatusBadRequest)
		writePage(w, "Sign-in not accepted", "This address belongs to another sign-in attempt (its state does not match). "+
			"Use the sign-in URL that syncer auth printed last.")
		if warn != nil {
			fmt.Fprintln(warn, "syncer auth: refused a redirect whose state belongs to another sign-in attempt; still waiting")
		}
		return
	}
	var res loopbackResult
	switch {
	case q.Get("error") != "":
		res.err = signInError(q.Get("error"), q.Get("error_description"))
		w.WriteHeader(http.StatusBadRequest)
		writePage(w, "Sign-in failed", res.err.Error()+". You can close this tab; syncer auth says the same in the terminal.")
	case q.Get("code") == "":
		w.WriteHeader(http.StatusBadRequest)
		writePage(w, "Sign-in not accepted", "The address has no authorization code.")
		return
	default:
		res.code = q.Get("code")
		writePage(w, "Signed in", "The syncer got the authorization code. You can close this tab and go back to the terminal.")
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if !lb.done {
		lb.done = true
		lb.got <- res
	}
}

func writePage(w io.Writer, title, text string) {
	fmt.Fprintf(w, "<!doctype html><html><head><meta charset=\"utf-8\"><title>syncer: %s</title></head>"+
		"<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>%s</h1><p>%s</p></body></html>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(text))
}

// wait returns the code of the redirect, or the sign-in's error; it gives
// up after timeout or when ctx ends.
func (lb *loopback) wait(ctx context.Context, timeout time.Duration, warn io.Writer) (string, error) {
	lb.mu.Lock()
	lb.warn = warn
	lb.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-lb.got:
		return r.code, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
		return "", fmt.Errorf("%w (%s) at %s: finish the sign-in in the browser sooner, or use --no-browser or --device when the browser "+
			"cannot reach this machine", errAuthTimeout, timeout, lb.redirectURI)
	}
}

// close stops listening, after letting the last page reach the browser.
func (lb *loopback) close() {
	if lb.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = lb.srv.Shutdown(ctx)
		return
	}
	for _, ln := range lb.lns {
		_ = ln.Close()
	}
}

// openBrowser tries to open url in a browser and reports whether it
// started one. $BROWSER names the command to use ("none": never open);
// otherwise open (macOS), rundll32 (Windows) or xdg-open (elsewhere, only
// with a graphical session). It never fails the sign-in.
func openBrowser(getenv func(string) string, url string) bool {
	var name string
	var args []string
	switch b := strings.TrimSpace(getenv("BROWSER")); {
	case b == "none":
		return false
	case b != "":
		name, args = b, []string{url}
	case runtime.GOOS == "darwin":
		name, args = "open", []string{url}
	case runtime.GOOS == "windows":
		name, args = "rundll32", []string{"url.dll,FileProtocolHandler", url}
	default:
		if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") == "" {
			return false // no graphical session: xdg-open could start a text browser in this terminal
		}
		name, args = "xdg-open", []string{url}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return false
	}
	cmd := exec.CommandContext(context.Background(), path, args...) // the browser outlives the command: never killed
	if err := cmd.Start(); err != nil {
		return false
	}
	go func() { _ = cmd.Wait() }()
	return true
}
