package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
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
	m.RowsWritten("users", "removed", 0) // zero adds nothing: the series starts at 0
	m.InitCustomers([]int64{150, 152})
	m.CustomerSync(150, "succeeded", time.Second)
	m.SetBuildInfo("v1.2.3", "abc123", "go1.26")
	m.Run("partial", time.Minute, time.Unix(1700000000, 0))
	m.SetCustomerStates([]CustomerState{{CustomerID: 150, LastSuccess: time.Unix(1700000000, 0), PendingInvitations: 4, StaleInvitations: 1}})
	m.SetCustomerStates([]CustomerState{{CustomerID: 151, PendingInvitations: 2, Users: 7, UnreadableUsers: 1, Roles: 9}}) // replaces, never-synced has no timestamp
	body := scrape(t, m)
	for _, want := range []string{
		`msads_api_calls_total{operation="GetUser",outcome="ok"} 2`,
		`msads_api_calls_total{operation="GetUsersInfo",outcome="throttled"} 1`,
		`msads_api_retries_total{operation="GetUsersInfo"} 1`,
		`msads_api_throttle_pauses_total 1`,
		`msads_api_throttle_wait_seconds_total 2`,
		`msads_rows_written_total{change="added",entity="users"} 3`,
		`msads_customer_syncs_total{customer_id="150",status="succeeded"} 1`,
		// Counters start at 0 for every configured customer and status.
		`msads_customer_syncs_total{customer_id="150",status="failed"} 0`,
		`msads_customer_syncs_total{customer_id="152",status="succeeded"} 0`,
		`msads_sync_runs_total{status="failed"} 0`,
		`msads_rows_written_total{change="removed",entity="users"} 0`,
		`syncer_build_info{commit="abc123",goversion="go1.26",version="v1.2.3"} 1`,
		`msads_customer_users{customer_id="151"} 7`,
		`msads_unreadable_users{customer_id="151"} 1`,
		`msads_customer_roles{customer_id="151"} 9`,
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
	for _, gone := range []string{`msads_pending_invitations{customer_id="150"`, `msads_customer_last_success_timestamp_seconds{`} {
		if strings.Contains(body, gone) {
			t.Errorf("exposition still has %q", gone)
		}
	}
}

// fakeGateway records the method and path of every push.
func fakeGateway(t *testing.T) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(gw.Close)
	return gw, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func TestPush(t *testing.T) {
	t.Parallel()
	gw, got := fakeGateway(t)
	m := New()
	if err := m.Push(t.Context(), gw.URL, Group{Credential: "cred:0a1b2c"}, nil); err != nil {
		t.Fatal(err)
	}
	if g := got(); len(g) != 1 || g[0] != "PUT /metrics/job/syncer/credential/cred:0a1b2c" {
		t.Errorf("push requests %q", g)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer bad.Close()
	if err := m.Push(t.Context(), bad.URL, Group{Credential: "cred:0a1b2c"}, nil); err == nil {
		t.Error("push to a failing gateway returned no error")
	}
	if err := m.Push(t.Context(), gw.URL, Group{}, nil); err == nil {
		t.Error("push without a credential key returned no error")
	}
}

// Two CronJobs of two credentials push to one gateway: each lands in a group
// of its own (a PUT replaces only its own group), and instance, when set,
// splits further.
func TestPushGroupsByCredentialAndInstance(t *testing.T) {
	t.Parallel()
	gw, got := fakeGateway(t)
	for _, g := range []Group{{Credential: "cred:aaaa"}, {Credential: "cred:bbbb"}, {Credential: "cred:aaaa", Instance: "eu-west"}} {
		if err := New().Push(t.Context(), gw.URL, g, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The Pushgateway's grouping key is a set of labels: the client may
	// write them in any order.
	want := []string{
		"PUT job=syncer credential=cred:aaaa",
		"PUT job=syncer credential=cred:bbbb",
		"PUT job=syncer credential=cred:aaaa instance=eu-west",
	}
	var g []string
	for _, req := range got() {
		g = append(g, groupingKey(t, req))
	}
	if !slices.Equal(g, want) {
		t.Errorf("push requests\n%q\nwant\n%q", g, want)
	}
}

// groupingKey turns "PUT /metrics/job/syncer/credential/x/instance/y" into
// "PUT job=syncer credential=x instance=y", the labels after job sorted.
func groupingKey(t *testing.T, req string) string {
	t.Helper()
	method, path, _ := strings.Cut(req, " ")
	parts := strings.Split(strings.TrimPrefix(path, "/metrics/"), "/")
	if len(parts)%2 != 0 || len(parts) < 2 || parts[0] != "job" {
		t.Fatalf("push path %q is not /metrics/job/<job>[/<label>/<value>…]", path)
	}
	var labels []string
	for i := 2; i < len(parts); i += 2 {
		labels = append(labels, parts[i]+"="+parts[i+1])
	}
	slices.Sort(labels)
	return strings.Join(append([]string{method, "job=" + parts[1]}, labels...), " ")
}

func TestPushHasItsOwnTimeoutAndKeepsTheURLPasswordOut(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer gw.Close()
	defer close(hang)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	u := strings.Replace(gw.URL, "http://", "http://pusher:gw-pass-Secret@", 1)
	start := time.Now()
	err := New().Push(ctx, u, Group{Credential: "cred:aaaa"}, nil)
	if err == nil {
		t.Fatal("push to a hanging gateway returned no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("push to a hanging gateway took %v after its ctx ended", d)
	}
	if strings.Contains(err.Error(), "gw-pass-Secret") {
		t.Errorf("push error shows the gateway password: %v", err)
	}
	if PushTimeout > 15*time.Second {
		t.Errorf("PushTimeout %v is not short", PushTimeout)
	}
}

// The shipped Grafana dashboard and alert rules name only metrics this
// package exports.
func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	m := New()
	m.Call("GetUser", "ok", time.Millisecond)
	m.Retry("GetUser")
	m.Throttle(time.Second)
	m.RowsWritten("users", "added", 1)
	m.CustomerSync(1, "succeeded", time.Second)
	m.Run("succeeded", time.Second, time.Now())
	m.SetCustomerStates([]CustomerState{{CustomerID: 1, LastSuccess: time.Now(), Users: 1}})
	m.InvitationNotice("sent")
	m.SetAccessExceptions([]string{"terminated"}, []int64{1}, nil)
	m.SetBuildInfo("v", "c", "go")
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	nameRE := regexp.MustCompile(`\b(?:msads|syncer)_[a-z_]+`)
	for _, file := range []string{"../../deploy/grafana/syncer-dashboard.json", "../../deploy/helm/syncer/files/prometheus-rules.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := 0
		for _, name := range nameRE.FindAllString(string(b), -1) {
			if strings.HasPrefix(name, "msads_syncer") || name == "msads_syncer" {
				continue // object names, not metrics
			}
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !exported[base] {
				t.Errorf("%s uses %s, which is not exported", file, name)
			}
			used++
		}
		if used == 0 {
			t.Errorf("%s names no metric: the check proves nothing", file)
		}
	}
}

// msads_access_exceptions: every kind at 0 for the customers given, then
// the counts; a new call replaces the old series. PushAccessExceptions
// adds that metric alone to the run's group (POST), leaving the run's
// other metrics there.
func TestAccessExceptions(t *testing.T) {
	t.Parallel()
	m := New()
	m.SetAccessExceptions([]string{"no_owner", "terminated"}, []int64{7}, []ExceptionCount{{Kind: "no_owner", CustomerID: 8, N: 3}})
	m.SetAccessExceptions([]string{"no_owner", "terminated"}, []int64{150}, []ExceptionCount{{Kind: "terminated", CustomerID: 150, N: 2}, {Kind: "no_owner", CustomerID: 151, N: 1}})
	body := scrape(t, m)
	for _, want := range []string{
		`msads_access_exceptions{customer_id="150",kind="no_owner"} 0`,
		`msads_access_exceptions{customer_id="150",kind="terminated"} 2`,
		`msads_access_exceptions{customer_id="151",kind="no_owner"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(body, `customer_id="8"`) || strings.Contains(body, `customer_id="7"`) {
		t.Error("the previous series were not replaced")
	}

	var mu sync.Mutex
	var reqs []string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
	}))
	defer gw.Close()
	if err := m.PushAccessExceptions(t.Context(), gw.URL, Group{Credential: "cred:ab"}, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 1 || !strings.HasPrefix(reqs[0], "POST /metrics/job/syncer/credential/cred:ab ") ||
		!strings.Contains(reqs[0], "msads_access_exceptions") || strings.Contains(reqs[0], "msads_sync_runs_total") {
		t.Errorf("push requests %q", reqs)
	}
	if err := m.PushAccessExceptions(t.Context(), gw.URL, Group{}, nil); err == nil {
		t.Error("push without a credential key returned no error")
	}
}
