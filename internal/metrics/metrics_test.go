package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	m := New()
	m.Call("GetUser", "ok", 30*time.Millisecond)
	m.Call("GetUser", "ok", 10*time.Millisecond)
	m.Call("GetUsersInfo", "throttled", time.Millisecond)
	m.Retry("GetUsersInfo")
	m.Throttle(2 * time.Second)
	m.RowsWritten("users", "added", 3)
	m.RowsWritten("users", "removed", 0) // zero adds no series
	m.CustomerSync("succeeded", time.Second)
	m.Run("partial", time.Minute, time.Unix(1700000000, 0))
	m.SetCustomerStates([]CustomerState{{CustomerID: 150, LastSuccess: time.Unix(1700000000, 0), PendingInvitations: 4, StaleInvitations: 1}})
	m.SetCustomerStates([]CustomerState{{CustomerID: 151, PendingInvitations: 2}}) // replaces, never-synced has no timestamp
	body := scrape(t, m)
	for _, want := range []string{
		`msads_api_calls_total{operation="GetUser",outcome="ok"} 2`,
		`msads_api_calls_total{operation="GetUsersInfo",outcome="throttled"} 1`,
		`msads_api_retries_total{operation="GetUsersInfo"} 1`,
		`msads_api_throttle_pauses_total 1`,
		`msads_api_throttle_wait_seconds_total 2`,
		`msads_rows_written_total{change="added",entity="users"} 3`,
		`msads_customer_syncs_total{status="succeeded"} 1`,
		`msads_sync_runs_total{status="partial"} 1`,
		`msads_last_run_success 0`,
		`msads_last_run_timestamp_seconds 1.7e+09`,
		`msads_pending_invitations{customer_id="151"} 2`,
		`msads_stale_invitations{customer_id="151"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	for _, gone := range []string{`customer_id="150"`, `entity="users",change="removed"`, `msads_customer_last_success_timestamp_seconds{`} {
		if strings.Contains(body, gone) {
			t.Errorf("exposition still has %q", gone)
		}
	}
}

func TestPush(t *testing.T) {
	t.Parallel()
	var got string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.Path
		w.WriteHeader(http.StatusOK)
	}))
	defer gw.Close()
	m := New()
	if err := m.Push(t.Context(), gw.URL, nil); err != nil {
		t.Fatal(err)
	}
	if got != "PUT /metrics/job/syncer" {
		t.Errorf("push request %q", got)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer bad.Close()
	if err := m.Push(t.Context(), bad.URL, nil); err == nil {
		t.Error("push to a failing gateway returned no error")
	}
}
