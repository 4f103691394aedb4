package cli

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/metrics"
)

func TestSecondSignalCancelsWithItsExitCode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sig  os.Signal
		code int
	}{{syscall.SIGTERM, 143}, {os.Interrupt, 130}} {
		sigs := make(chan os.Signal, 2)
		ctx, stop, cancel := signalContexts(IO{Signals: sigs}, time.Minute, slog.New(slog.DiscardHandler))
		sigs <- tc.sig
		<-stop
		if ctx.Err() != nil {
			t.Fatal("the first signal canceled ctx")
		}
		if _, ok := signalExit(ctx); ok {
			t.Fatal("signalExit before the second signal")
		}
		sigs <- tc.sig
		<-ctx.Done()
		if code, ok := signalExit(ctx); !ok || code != tc.code {
			t.Errorf("%v: signalExit = %d, %v; want %d", tc.sig, code, ok, tc.code)
		}
		cancel()
	}
}

func TestUntilHardStopReturnsWithoutAStuckCommand(t *testing.T) {
	t.Parallel()
	sigs := make(chan os.Signal, 2)
	ctx, _, cancel := signalContexts(IO{Signals: sigs}, time.Minute, slog.New(slog.DiscardHandler))
	defer cancel()
	stuck := make(chan struct{})
	defer close(stuck)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	start := time.Now()
	code, finished := untilHardStop(ctx, func() int { <-stuck; return 0 })
	if code != 143 || finished {
		t.Errorf("untilHardStop = %d, %v; want 143, false", code, finished)
	}
	if d := time.Since(start); d > hardStopWait+time.Second {
		t.Errorf("untilHardStop took %v", d)
	}
	// A command that unwinds in time: its code is replaced by the signal's.
	code, finished = untilHardStop(ctx, func() int { return ExitPartial })
	if code != 143 || !finished {
		t.Errorf("untilHardStop = %d, %v; want 143, true", code, finished)
	}
	// Without a second signal, the command's own code.
	ctx2, _, cancel2 := signalContexts(IO{Signals: make(chan os.Signal)}, time.Minute, slog.New(slog.DiscardHandler))
	defer cancel2()
	if code, _ := untilHardStop(ctx2, func() int { return ExitPartial }); code != ExitPartial {
		t.Errorf("untilHardStop without a signal = %d", code)
	}
}

func TestReadyzMeansCanServe(t *testing.T) {
	t.Parallel()
	st := &serveState{}
	mux := serveMux(metrics.New(), st)
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get(); code != http.StatusServiceUnavailable {
		t.Errorf("starting: /readyz = %d, want 503", code)
	}
	st.ready.Store(true)
	if code, body := get(); code != http.StatusOK || !strings.Contains(body, "none yet") {
		t.Errorf("started: /readyz = %d %q, want 200", code, body)
	}
	// A failed sync does not make the process unready.
	st.set("failed")
	if code, body := get(); code != http.StatusOK || !strings.Contains(body, "last sync: failed") {
		t.Errorf("after a failed sync: /readyz = %d %q, want 200 naming the status", code, body)
	}
	st.ready.Store(false) // first signal: stopping
	if code, _ := get(); code != http.StatusServiceUnavailable {
		t.Errorf("stopping: /readyz = %d, want 503", code)
	}
}
