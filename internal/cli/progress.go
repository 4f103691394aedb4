package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/msads-syncer/syncer/internal/job"
)

// progress draws a live status line on a terminal's stderr while a run goes:
// customers done of total, users fetched, API calls per second. Log lines go
// through the same writer, which clears the status line first and redraws it
// after, so the two never mix.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	line     string
	counters *job.Counters
	started  time.Time
	done     chan struct{}
	wg       sync.WaitGroup
}

// newProgress returns the writer logs should use and, when stderr is a
// terminal and logs are text, the progress line (nil otherwise: never in JSON
// logs or when piped).
func newProgress(stderr io.Writer, logFormat string) (io.Writer, *progress) {
	f, ok := stderr.(*os.File)
	if !ok || logFormat != "text" || !term.IsTerminal(int(f.Fd())) {
		return stderr, nil
	}
	p := &progress{w: stderr}
	return p, p
}

// Write implements io.Writer for log lines.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.line != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
	n, err := p.w.Write(b)
	if p.line != "" {
		fmt.Fprint(p.w, p.line)
	}
	return n, err
}

func (p *progress) start(c *job.Counters) {
	p.counters = c
	p.started = time.Now()
	p.done = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
}

func (p *progress) draw() {
	c := p.counters
	secs := time.Since(p.started).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(c.Calls.Load()) / secs
	}
	line := fmt.Sprintf("customers %d/%d  users %d  calls %d (%.1f/s)  %s",
		c.CustomersDone.Load(), c.CustomersTotal.Load(), c.UsersFetched.Load(), c.Calls.Load(), rate,
		time.Since(p.started).Round(time.Second))
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line = line
	fmt.Fprint(p.w, "\r\033[K"+line)
}

func (p *progress) stop() {
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.line != "" {
		fmt.Fprint(p.w, "\r\033[K")
		p.line = ""
	}
}
