package invite_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/invite"
)

const secretPath = "/services/T0001/B0002/s3cr3tTOKEN"

// webhook is a test receiver: it answers with the queued statuses (then 200)
// and records the messages it accepted.
type webhook struct {
	mu       sync.Mutex
	statuses []int
	attempts int
	got      []invite.Message
	srv      *httptest.Server
}

func newWebhook(t *testing.T, statuses ...int) *webhook {
	w := &webhook{statuses: statuses}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.attempts++
		if r.URL.Path != secretPath || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(rw, "bad request", http.StatusBadRequest)
			return
		}
		if len(w.statuses) > 0 {
			st := w.statuses[0]
			w.statuses = w.statuses[1:]
			if st != http.StatusOK {
				// An echoing server: the error body repeats the path.
				http.Error(rw, "failure at "+r.URL.Path, st)
				return
			}
		}
		var m invite.Message
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.got = append(w.got, m)
		io.WriteString(rw, "ok")
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhook) url() string { return w.srv.URL + secretPath }

// take returns and forgets the accepted messages and the attempt count.
func (w *webhook) take() ([]invite.Message, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	got, n := w.got, w.attempts
	w.got, w.attempts = nil, 0
	return got, n
}

func (w *webhook) fail(statuses ...int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.statuses = statuses
}

func notifier(url string, logs io.Writer) *invite.Notifier {
	if logs == nil {
		logs = io.Discard
	}
	return &invite.Notifier{URL: url, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Attempts: 3, RetryWait: time.Millisecond}
}

func messageIDs(msgs []invite.Message) map[string][]string {
	out := map[string][]string{}
	for _, m := range msgs {
		for _, i := range m.Invitations {
			out[m.CustomerID] = append(out[m.CustomerID], i.InvitationID)
		}
	}
	return out
}

func announced(t *testing.T, pool *pgxpool.Pool, schema string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{schema, "invitation_alerts"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNotifyOncePerPeriod(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	ctx := t.Context()
	hook := newWebhook(t)
	n := notifier(hook.url(), nil)
	const staleAfter = 7 * day

	res, err := n.Notify(ctx, pool, schema, staleAfter, now)
	if err != nil {
		t.Fatal(err)
	}
	if res != (invite.NotifyResult{Messages: 2, Announced: 3}) {
		t.Errorf("first Notify = %+v, want 2 messages, 3 announced", res)
	}
	msgs, _ := hook.take()
	if got, want := messageIDs(msgs), map[string][]string{"1": {"13", "11"}, "2": {"21"}}; !mapsEqual(got, want) {
		t.Fatalf("messages carry %v, want %v", got, want)
	}
	m := msgs[0]
	if m.CustomerID != "1" || m.CustomerName != "Contoso" || m.StaleAfter != "168h0m0s" {
		t.Errorf("message = %+v", m)
	}
	for _, want := range []string{"2 stale Microsoft Advertising invitations", "*Contoso* (1)", "old@example.com: Super Admin, every account; sent about 10d 0h ago", "expired@example.com", "*expired*"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, m.Text)
		}
	}
	if strings.Contains(m.Text, "recent@example.com") {
		t.Errorf("text lists a fresh invitation:\n%s", m.Text)
	}
	// Oldest first: 13 was sent 30 days ago (expired), 11 ten days ago.
	if !m.Invitations[0].Expired || m.Invitations[0].InvitationID != "13" {
		t.Errorf("invitation 13 not first and marked expired: %+v", m.Invitations[0])
	}
	first := m.Invitations[1]
	if first.Email != "old@example.com" || first.RoleID != 41 || first.AccountIDs != nil || first.Expired ||
		first.AgeSeconds < int64((10*day-time.Minute)/time.Second) || first.ExpirationDate == nil || first.EstimatedSentAt == nil ||
		!first.EstimatedSentAt.Equal(first.ExpirationDate.Add(-30*day)) {
		t.Errorf("first invitation = %+v", first)
	}

	// Repeated runs within the period announce nothing.
	for _, later := range []time.Duration{0, time.Hour, 4 * day} {
		res, err := n.Notify(ctx, pool, schema, staleAfter, now.Add(later))
		if err != nil {
			t.Fatal(err)
		}
		if msgs, attempts := hook.take(); attempts != 0 || res != (invite.NotifyResult{}) {
			t.Errorf("Notify %v later = %+v, posted %d times (%v), want nothing", later, res, attempts, messageIDs(msgs))
		}
	}

	// A new stale invitation is announced alone.
	insert(t, pool, schema, now, inv{id: 22, customer: 2, email: "new@example.com", role: 100, accounts: []int64{5}, firstSeen: 0, expiresIn: -time.Minute})
	if _, err := n.Notify(ctx, pool, schema, staleAfter, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	msgs, _ = hook.take()
	if got, want := messageIDs(msgs), map[string][]string{"2": {"22"}}; !mapsEqual(got, want) {
		t.Errorf("after a new expired invitation: messages carry %v, want %v", got, want)
	}
	if len(msgs) == 1 && !slices.Equal(msgs[0].Invitations[0].AccountIDs, []string{"5"}) {
		t.Errorf("account ids = %v, want [5]", msgs[0].Invitations[0].AccountIDs)
	}

	// Invitation 12 (first seen 2 days before now) becomes stale 5 days later.
	if _, err := n.Notify(ctx, pool, schema, staleAfter, now.Add(6*day)); err != nil {
		t.Fatal(err)
	}
	msgs, _ = hook.take()
	if got, want := messageIDs(msgs), map[string][]string{"1": {"12"}}; !mapsEqual(got, want) {
		t.Errorf("6 days later: messages carry %v, want %v", got, want)
	}

	// After the period the first ones are announced again, not those
	// announced later.
	res, err = n.Notify(ctx, pool, schema, staleAfter, now.Add(staleAfter+time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ = hook.take()
	if got, want := messageIDs(msgs), map[string][]string{"1": {"13", "11"}, "2": {"21"}}; !mapsEqual(got, want) {
		t.Errorf("after the period: messages carry %v, want %v (result %+v)", got, want, res)
	}
}

func TestNotifyCustomerFilterAndPeriod(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	hook := newWebhook(t)
	n := notifier(hook.url(), nil)
	n.Customers = []int64{2}
	n.Period = time.Hour
	if _, err := n.Notify(t.Context(), pool, schema, 7*day, now); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Notify(t.Context(), pool, schema, 7*day, now.Add(61*time.Minute)); err != nil {
		t.Fatal(err)
	}
	msgs, _ := hook.take()
	if len(msgs) != 2 || msgs[0].CustomerID != "2" || msgs[1].CustomerID != "2" {
		t.Errorf("got %v, want customer 2 announced twice (period 1h)", messageIDs(msgs))
	}
}

func TestNotifyFailureRetriedNextRun(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	ctx := t.Context()
	hook := newWebhook(t)
	var logs bytes.Buffer
	n := notifier(hook.url(), &logs)
	n.Customers = []int64{1}

	// Every attempt fails: 3 attempts, nothing recorded.
	hook.fail(500, 502, 503)
	res, failure := n.Notify(ctx, pool, schema, 7*day, now)
	if failure == nil {
		t.Fatal("Notify succeeded with a failing webhook")
	}
	if _, attempts := hook.take(); attempts != 3 {
		t.Errorf("webhook got %d attempts, want 3", attempts)
	}
	if res != (invite.NotifyResult{Failed: 1}) {
		t.Errorf("result = %+v, want 1 failed", res)
	}
	var se *invite.StatusError
	if !errors.As(failure, &se) || se.StatusCode != 503 {
		t.Errorf("error %v: want a *StatusError with the last status 503", failure)
	}
	if got := announced(t, pool, schema); got != 0 {
		t.Errorf("%d invitations recorded after a failed post, want 0", got)
	}

	// The next run retries; a transient failure within the run is retried too.
	hook.fail(429)
	res, err := n.Notify(ctx, pool, schema, 7*day, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	msgs, attempts := hook.take()
	if attempts != 2 || res != (invite.NotifyResult{Messages: 1, Announced: 2}) || len(msgs) != 1 {
		t.Errorf("retry run: %d attempts, result %+v, %d messages; want 2 attempts, 1 message of 2", attempts, res, len(msgs))
	}
	if got := announced(t, pool, schema); got != 2 {
		t.Errorf("%d invitations recorded, want 2", got)
	}

	for _, s := range []string{failure.Error(), logs.String()} {
		if strings.Contains(s, "s3cr3tTOKEN") {
			t.Errorf("webhook token leaked: %s", s)
		}
	}
}

func TestNotifyClientErrorNotRetried(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	hook := newWebhook(t, 404)
	n := notifier(hook.url(), nil)
	res, err := n.Notify(t.Context(), pool, schema, 7*day, now)
	if err == nil {
		t.Fatal("Notify succeeded with a 404")
	}
	// The 404 is not retried, and the other customer's message still goes.
	msgs, attempts := hook.take()
	if attempts != 2 || len(msgs) != 1 || msgs[0].CustomerID != "2" || res != (invite.NotifyResult{Messages: 1, Failed: 1, Announced: 1}) {
		t.Errorf("%d attempts, messages %v, result %+v; want 2 attempts, customer 2 announced, 1 failed", attempts, messageIDs(msgs), res)
	}
}

// A receiver that is down is not tried again for every customer.
func TestNotifyReceiverDownStopsEarly(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	hook := newWebhook(t, 503, 503, 503)
	res, err := notifier(hook.url(), nil).Notify(t.Context(), pool, schema, 7*day, now)
	if err == nil {
		t.Fatal("Notify succeeded with a failing webhook")
	}
	if _, attempts := hook.take(); attempts != 3 || res != (invite.NotifyResult{Failed: 2}) {
		t.Errorf("%d attempts, result %+v; want 3 attempts (one customer), 2 failed", attempts, res)
	}
	if got := announced(t, pool, schema); got != 0 {
		t.Errorf("%d invitations recorded, want 0", got)
	}
}

// No error or log line contains the webhook URL, whatever fails.
func TestNotifyNeverLeaksURL(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	echo := func(status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no such hook: "+r.URL.String(), status)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + secretPath + "?token=s3cr3tTOKEN"
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name string
		url  string
	}{
		{"echoing 5xx", echo(500)},
		{"echoing 400", echo(400)},
		{"connection refused", closed.URL + secretPath},
		{"bad host", "http://webhook.invalid" + secretPath + "?token=s3cr3tTOKEN"},
		{"malformed", "http://[::1" + secretPath},
	} {
		var logs bytes.Buffer
		n := notifier(tc.url, &logs)
		n.Client = &http.Client{Timeout: 5 * time.Second}
		_, err := n.Notify(t.Context(), pool, schema, 7*day, now)
		if err == nil {
			t.Errorf("%s: Notify succeeded", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		for _, s := range []string{err.Error(), logs.String()} {
			if strings.Contains(s, "s3cr3tTOKEN") || strings.Contains(s, secretPath) {
				t.Errorf("%s: webhook URL leaked: %s", tc.name, s)
			}
		}
	}
	if got := announced(t, pool, schema); got != 0 {
		t.Errorf("%d invitations recorded, want 0", got)
	}
}

// A second process announcing for the same schema at the same time skips.
func TestNotifyConcurrentCallsPostOnce(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	hook := newWebhook(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := notifier(hook.url(), nil).Notify(t.Context(), pool, schema, 7*day, now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if msgs, _ := hook.take(); len(msgs) != 2 {
		t.Errorf("concurrent Notify posted %d messages, want 2 (one per customer): %v", len(msgs), messageIDs(msgs))
	}
}

func TestNotifyCanceled(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := notifier(srv.URL+secretPath, nil).Notify(ctx, pool, schema, 7*day, now)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Notify took %v after its context ended", d)
	}
	if got := announced(t, pool, schema); got != 0 {
		t.Errorf("%d invitations recorded, want 0", got)
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// A receiver that hangs holds one post for PostTimeout at most, all
// attempts included, even when the caller's ctx has no deadline; the other
// customers are not tried against the same dead receiver.
func TestNotifyPostTimeoutBoundsAHangingReceiver(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	n := notifier(srv.URL+secretPath, nil)
	n.PostTimeout = 300 * time.Millisecond
	start := time.Now()
	res, err := n.Notify(context.WithoutCancel(t.Context()), pool, schema, 7*day, now)
	if err == nil {
		t.Fatal("Notify succeeded against a hanging webhook")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Notify took %v against a hanging webhook with PostTimeout 300ms", d)
	}
	if res.Failed != 2 || res.Messages != 0 {
		t.Errorf("result %+v, want 2 failed", res)
	}
	if strings.Contains(err.Error(), secretPath) {
		t.Errorf("error shows the webhook path: %v", err)
	}
	if invite.DefaultPostTimeout > 15*time.Second {
		t.Errorf("DefaultPostTimeout %v is not short", invite.DefaultPostTimeout)
	}
}
