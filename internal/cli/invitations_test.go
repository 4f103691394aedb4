package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/invite"
	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const day = 24 * time.Hour

// invitationsFixture migrates a schema holding customer 1 (Contoso) with
// invitations first seen 10 days (11) and 2 days (12) ago, and customer 2
// with one first seen 8 days ago (21). None is expired.
func invitationsFixture(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	now := time.Now()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO `+pgx.Identifier{schema, "customers"}.Sanitize()+` (customer_id, name, last_success_at) VALUES (1, 'Contoso', $1), (2, NULL, NULL)`, now.Add(-time.Hour))
	for _, r := range []struct {
		id, customer int64
		email        string
		role         int32
		accounts     []int64
		firstSeen    time.Duration
	}{
		{11, 1, "old@example.com", 41, nil, 10 * day},
		{12, 1, "recent@example.com", 100, []int64{7, 8}, 2 * day},
		{21, 2, "eight@example.com", 100, []int64{9}, 8 * day},
	} {
		exec(`INSERT INTO `+pgx.Identifier{schema, "user_invitations"}.Sanitize()+`
			(invitation_id, customer_id, email, role_id, account_ids, expiration_date, first_seen_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			r.id, r.customer, r.email, r.role, r.accounts, now.Add(30*day-r.firstSeen), now.Add(-r.firstSeen))
	}
	return pool, schema
}

func writeConfig(t *testing.T, schema, webhook string) string {
	t.Helper()
	cfg := fmt.Sprintf(`database:
  url: %q
  schema: %s
customers:
  ids: [1, 2]
invitations:
  stale_after: 168h
  webhook_url: %q
log:
  format: text
  level: warn
`, pgtest.URL(t), schema, webhook)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs the command line in-process.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return code, out.String(), errb.String()
}

func TestInvitationsFailOnStale(t *testing.T) {
	t.Parallel()
	_, schema := invitationsFixture(t)
	cfg := writeConfig(t, schema, "")
	_, empty := pgtest.Schema(t)
	emptyCfg := writeConfig(t, empty, "")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		// Customer 1 synced an hour ago; customer 2 never did.
		{"stale found", []string{"--config", cfg, "--fail-on-stale", "--customer", "1"}, ExitStale},
		{"stale found, no flag", []string{"--config", cfg}, ExitOK},
		{"a configured customer never synced", []string{"--config", cfg, "--fail-on-stale"}, ExitFatal},
		{"threshold above every age", []string{"--config", cfg, "--fail-on-stale", "--older-than", "264h", "--customer", "1"}, ExitOK},
		{"threshold below one age", []string{"--config", cfg, "--fail-on-stale", "--older-than", "216h", "--customer", "1"}, ExitStale},
		{"nothing stale, but the customer never synced", []string{"--config", cfg, "--fail-on-stale", "--older-than", "216h", "--customer", "2"}, ExitFatal},
		{"empty warehouse never passes", []string{"--config", emptyCfg, "--fail-on-stale"}, ExitFatal},
		{"json too", []string{"--config", cfg, "--fail-on-stale", "--format", "json", "--customer", "1"}, ExitStale},
		{"bad format", []string{"--config", cfg, "--format", "xml"}, ExitUsage},
		{"notify without a webhook", []string{"--config", cfg, "--notify"}, ExitFatal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"invitations"}, tc.args...)...)
			if code != tc.want {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.want, stdout, stderr)
			}
		})
	}
}

func TestInvitationsTable(t *testing.T) {
	t.Parallel()
	_, schema := invitationsFixture(t)
	code, stdout, stderr := runCLI(t, "invitations", "--config", writeConfig(t, schema, ""))
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"2 stale invitations", "Customer 1 (Contoso): 1 stale", "old@example.com", "Super Admin", "10d 0h", "Customer 2: 1 stale", "eight@example.com"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "recent@example.com") {
		t.Errorf("output lists a fresh invitation:\n%s", stdout)
	}

	_, empty := pgtest.Schema(t)
	_, stdout, _ = runCLI(t, "invitations", "--config", writeConfig(t, empty, ""))
	if !strings.HasPrefix(stdout, "No stale invitations") {
		t.Errorf("empty schema printed:\n%s", stdout)
	}
}

func TestInvitationsJSON(t *testing.T) {
	t.Parallel()
	_, schema := invitationsFixture(t)
	code, stdout, stderr := runCLI(t, "invitations", "--config", writeConfig(t, schema, ""), "--format", "json", "--older-than", "36h")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc invitationsJSON
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("output is not the JSON document: %v\n%s", err, stdout)
	}
	if doc.OlderThan != "36h0m0s" || doc.OlderThanSeconds != 36*3600 || doc.Stale != 3 || len(doc.Customers) != 2 {
		t.Fatalf("document = %+v", doc)
	}
	c1 := doc.Customers[0]
	if c1.CustomerID != "1" || c1.CustomerName != "Contoso" || len(c1.Invitations) != 2 {
		t.Fatalf("customer 1 = %+v", c1)
	}
	old, recent := c1.Invitations[0], c1.Invitations[1]
	if old.InvitationID != "11" || old.RoleName != "Super Admin" || old.AccountIDs != nil || old.Expired ||
		old.AgeSeconds < int64((10*day-time.Minute)/time.Second) || old.AgeSeconds > int64((10*day+time.Minute)/time.Second) {
		t.Errorf("invitation 11 = %+v", old)
	}
	if old.ExpirationDate == nil || old.EstimatedSentAt == nil || !old.EstimatedSentAt.Equal(old.ExpirationDate.Add(-30*day)) {
		t.Errorf("invitation 11: estimated sent %v, expiration %v", old.EstimatedSentAt, old.ExpirationDate)
	}
	if recent.InvitationID != "12" || !slices.Equal(recent.AccountIDs, []string{"7", "8"}) {
		t.Errorf("invitation 12 = %+v", recent)
	}

	// Nothing stale: an empty list, not null.
	_, stdout, _ = runCLI(t, "invitations", "--config", writeConfig(t, schema, ""), "--format", "json", "--older-than", "720h")
	if !strings.Contains(stdout, `"customers": []`) {
		t.Errorf("empty result:\n%s", stdout)
	}
}

func TestInvitationsCSV(t *testing.T) {
	t.Parallel()
	_, schema := invitationsFixture(t)
	code, stdout, stderr := runCLI(t, "invitations", "--config", writeConfig(t, schema, ""), "--format", "csv")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	records, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	if err != nil {
		t.Fatalf("output is not CSV: %v\n%s", err, stdout)
	}
	if len(records) != 3 || !slices.Equal(records[0], invitationsCSVHeader) {
		t.Fatalf("records = %q", records)
	}
	col := map[string]int{}
	for i, h := range records[0] {
		col[h] = i
	}
	r := records[1]
	if r[col["customer_id"]] != "1" || r[col["customer_name"]] != "Contoso" || r[col["invitation_id"]] != "11" ||
		r[col["account_ids"]] != "all" || r[col["expired"]] != "false" || r[col["role_name"]] != "Super Admin" {
		t.Errorf("row 1 = %q", r)
	}
	for _, name := range []string{"first_seen_at", "estimated_sent_at", "expiration_date"} {
		if _, err := time.Parse(time.RFC3339, r[col[name]]); err != nil {
			t.Errorf("%s = %q: %v", name, r[col[name]], err)
		}
	}
	if r := records[2]; r[col["invitation_id"]] != "21" || r[col["account_ids"]] != "9" {
		t.Errorf("row 2 = %q", r)
	}
}

// recorder is a webhook that records the messages it receives.
type recorder struct {
	mu   sync.Mutex
	fail bool
	got  []invite.Message
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		http.Error(w, "nope", http.StatusBadRequest)
		return
	}
	var m invite.Message
	if err := json.NewDecoder(req.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.got = append(r.got, m)
}

func (r *recorder) take() []invite.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

func TestInvitationsNotify(t *testing.T) {
	t.Parallel()
	_, schema := invitationsFixture(t)
	rec := &recorder{fail: true}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	cfg := writeConfig(t, schema, srv.URL+"/hooks/s3cr3t")

	// A rejected post: exit 1 with one line that does not show the URL.
	code, _, stderr := runCLI(t, "invitations", "--config", cfg, "--notify")
	if code != ExitFatal || strings.Contains(stderr, "s3cr3t") || !strings.Contains(stderr, "HTTP 400") {
		t.Errorf("failing webhook: exit %d, stderr:\n%s", code, stderr)
	}
	rec.mu.Lock()
	rec.fail = false
	rec.mu.Unlock()

	// Announced on the next call, then not again.
	for i, want := range []int{2, 0} {
		// Customer 2 was never synced: --fail-on-stale exits 1 (data is
		// stale) after the announcements.
		code, _, stderr := runCLI(t, "invitations", "--config", cfg, "--notify", "--fail-on-stale")
		if code != ExitFatal || !strings.Contains(stderr, "data is stale: customer 2 was never synced completely") {
			t.Errorf("call %d: exit %d, want %d (data is stale): %s", i, code, ExitFatal, stderr)
		}
		if got := rec.take(); len(got) != want {
			t.Errorf("call %d: %d messages, want %d", i, len(got), want)
		}
	}
	if code, _, _ := runCLI(t, "invitations", "--config", cfg, "--notify", "--dry-run"); code != ExitOK {
		t.Errorf("dry run: exit %d", code)
	}
}

func TestInvitationsUnmigratedSchema(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "invitations", "--config", writeConfig(t, "never_migrated", ""))
	if code != ExitFatal || !strings.Contains(stderr, "syncer migrate") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

// afterRunFixture is the invitations fixture, a webhook recorder and a
// validated configuration that posts to it, for this run's customer 2 only.
func afterRunFixture(t *testing.T) (*pgxpool.Pool, string, *recorder, *config.Config) {
	t.Helper()
	pool, schema := invitationsFixture(t)
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg, err := config.Load(writeConfig(t, schema, srv.URL+"/hooks/s3cr3t"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Customers.IDs = []int64{2} // this run's customers only
	return pool, schema, rec, cfg
}

func TestAfterRun(t *testing.T) {
	t.Parallel()
	pool, _, rec, cfg := afterRunFixture(t)
	m := metrics.New()
	var logs bytes.Buffer
	s := runSetup{cfg: cfg, pool: pool, metrics: m, logger: newLogger(&logs, "text", "info"), gauges: true}
	afterRun(t.Context(), s)
	afterRun(t.Context(), s)

	if got := rec.take(); len(got) != 1 || got[0].CustomerID != "2" {
		t.Errorf("webhook got %+v, want one message for customer 2", got)
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Errorf("logs show the webhook URL:\n%s", logs.String())
	}
	want := map[string]float64{
		`msads_pending_invitations{customer_id="1"}`:                     2,
		`msads_stale_invitations{customer_id="1"}`:                       1,
		`msads_pending_invitations{customer_id="2"}`:                     1,
		`msads_stale_invitations{customer_id="2"}`:                       1,
		`msads_invitation_notices_total{outcome="sent"}`:                 1,
		`msads_customer_last_success_timestamp_seconds{customer_id="1"}`: -1, // present
		// The access exceptions of the warehouse: customer 1's invitation 11
		// and customer 2's 21 are stale; every kind starts at 0 for the
		// run's customers.
		`msads_access_exceptions{customer_id="1",kind="stale_invitation"}`: 1,
		`msads_access_exceptions{customer_id="2",kind="stale_invitation"}`: 1,
		`msads_access_exceptions{customer_id="2",kind="no_owner"}`:         0,
	}
	got := gather(t, m)
	for k, v := range want {
		g, ok := got[k]
		if !ok || (v >= 0 && g != v) {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if _, ok := got[`msads_customer_last_success_timestamp_seconds{customer_id="2"}`]; ok {
		t.Errorf("a never-synced customer has a last-success timestamp")
	}
}

// TestAfterRunWithoutGauges: a run whose metrics nobody reads (no
// Pushgateway) still stores the reconcile rules and announces stale
// invitations, and leaves the warehouse's gauges unread.
func TestAfterRunWithoutGauges(t *testing.T) {
	t.Parallel()
	pool, schema, rec, cfg := afterRunFixture(t)
	cfg.Reconcile.AllowedDomains = []string{"Example.COM"}
	m := metrics.New()
	afterRun(t.Context(), runSetup{cfg: cfg, pool: pool, metrics: m, logger: newLogger(io.Discard, "text", "info")})

	if got := rec.take(); len(got) != 1 {
		t.Errorf("webhook got %d messages, want 1", len(got))
	}
	var domains []string
	if err := pool.QueryRow(t.Context(), "SELECT allowed_domains FROM "+pgx.Identifier{schema, "reconcile_settings"}.Sanitize()).Scan(&domains); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(domains, []string{"example.com"}) {
		t.Errorf("stored allowed_domains = %q, want [example.com]", domains)
	}
	for k := range gather(t, m) {
		if strings.HasPrefix(k, "msads_access_exceptions") || strings.HasPrefix(k, "msads_pending_invitations") {
			t.Errorf("gauge %s set without anyone reading it", k)
		}
	}
}

// gather flattens the registry to "name{label="value"}" → value.
func gather(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			var labels []string
			for _, l := range metric.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case metric.Gauge != nil:
				out[key] = metric.GetGauge().GetValue()
			case metric.Counter != nil:
				out[key] = metric.GetCounter().GetValue()
			}
		}
	}
	return out
}
