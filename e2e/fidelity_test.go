package e2e_test

// The fidelity matrix: every kind of answer the Microsoft Advertising API
// and the identity platform can give, run through the real binary against
// the simulator and a real PostgreSQL. Each case checks the exit code, the
// rows, the JSON summary, the pushed metrics where they apply, and that no
// secret reaches stdout or stderr.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

// fastSync keeps every case bounded: short timeouts, short retries.
const fastSync = "  concurrency: 4\n  request_timeout: 3s\n  retry_max_elapsed: 1s\n"

// fullSummary is the part of `syncer run --summary` these cases read.
type fullSummary struct {
	Status            string `json:"status"`
	Error             string `json:"error"`
	Failed            int    `json:"customers_failed"`
	PrincipalUserID   string `json:"principal_user_id"` // encoded as a JSON string
	PrincipalUserName string `json:"principal_user_name"`
	Customers         []struct {
		CustomerID  int64  `json:"customer_id"`
		Status      string `json:"status"`
		Users       int    `json:"users_seen"`
		Unreadable  int    `json:"users_unreadable"`
		Invitations int    `json:"invitations_seen"`
		Error       string `json:"error"`
	} `json:"customers"`
}

// customer returns the summary entry of a customer (fails the test when
// absent).
func (s *fullSummary) customer(t *testing.T, id int64) (status string, unreadable int, errText string) {
	t.Helper()
	for _, c := range s.Customers {
		if c.CustomerID == id {
			return c.Status, c.Unreadable, c.Error
		}
	}
	t.Fatalf("customer %d not in the summary %+v", id, s)
	return "", 0, ""
}

// fenv is an env plus the run counter of its summaries and, optionally, a
// fake Pushgateway.
type fenv struct {
	*env
	runs int
	gw   *gateway
}

func newFEnv(t *testing.T, ds *msadstest.Dataset, syncYAML string, withGateway bool) *fenv {
	t.Helper()
	if syncYAML == "" {
		syncYAML = fastSync
	}
	var gw *gateway
	extra := ""
	if withGateway {
		gw = newGateway(t)
		extra = "metrics:\n  pushgateway_url: " + gw.srv.URL + "\n"
	}
	return &fenv{env: newEnvSync(t, ds, syncYAML, extra), gw: gw}
}

// syncRun runs `syncer run --summary` and returns the result and the
// summary (nil when none was written). It checks that no secret appears in
// the output.
func (f *fenv) syncRun(args ...string) (result, *fullSummary) {
	f.t.Helper()
	f.runs++
	path := filepath.Join(f.dir, fmt.Sprintf("summary-%d.json", f.runs))
	r := f.run(append([]string{"run", "--config", f.config, "--summary", path}, args...)...)
	f.noSecrets(r)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var s fullSummary
	if err := json.Unmarshal(b, &s); err != nil {
		f.t.Fatalf("summary is not JSON: %v\n%s", err, b)
	}
	return r, &s
}

// mustRun is syncRun expecting an exit code.
func (f *fenv) mustRun(want int, args ...string) (result, *fullSummary) {
	f.t.Helper()
	r, s := f.syncRun(args...)
	if r.code != want {
		f.t.Fatalf("run %d: exit %d, want %d\nstderr: %s", f.runs, r.code, want, tail(r.stderr, 4000))
	}
	return r, s
}

// fatalLine checks the one line `syncer run` prints on stderr when nothing
// could be synced (the last line, after the logs) and that it says want.
func fatalLine(t *testing.T, r result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "syncer: ") || !strings.Contains(last, want) {
		t.Errorf("last stderr line %q does not say %q", last, want)
	}
}

// failedRun checks the summary of a run that synced nothing.
func failedRun(t *testing.T, s *fullSummary, want string) {
	t.Helper()
	if s == nil {
		t.Error("no summary written")
		return
	}
	if s.Status != "failed" || !strings.Contains(s.Error, want) {
		t.Errorf("summary status %q error %q; want failed naming %q", s.Status, s.Error, want)
	}
	for _, c := range s.Customers {
		if c.Status == "succeeded" {
			t.Errorf("summary: customer %d succeeded", c.CustomerID)
		}
	}
}

// nothingWritten checks that no user, role, invitation or succeeded
// customer sync is in the warehouse.
func (f *fenv) nothingWritten() {
	f.t.Helper()
	if n := f.queryInt("SELECT (SELECT count(*) FROM S.users) + (SELECT count(*) FROM S.user_roles) + (SELECT count(*) FROM S.user_invitations) + (SELECT count(*) FROM S.customer_syncs WHERE status = 'succeeded')"); n != 0 {
		f.t.Errorf("%d rows written by a run that could sync nothing", n)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (f *fenv) noSecrets(r result) {
	f.t.Helper()
	out := r.stdout + r.stderr
	for name, s := range map[string]string{"developer token": f.sim.DeveloperToken(), "client secret": f.sim.ClientSecret(), "refresh token": f.sim.RefreshToken()} {
		if s != "" && strings.Contains(out, s) {
			f.t.Errorf("the %s appears in the output", name)
		}
	}
	if strings.Contains(out, "Bearer ") {
		f.t.Error("an Authorization header appears in the output")
	}
}

// exclusiveUsers returns the users listed by customer c and by no other
// customer, the principal excluded: a fault on them touches c alone.
func exclusiveUsers(ds *msadstest.Dataset, c int64) []int64 {
	var out []int64
	for _, id := range ds.ListedUserIDs(c) {
		if id == ds.PrincipalID() {
			continue
		}
		other := false
		for _, o := range ds.CustomerIDs() {
			if o != c && slices.Contains(ds.ListedUserIDs(o), id) {
				other = true
			}
		}
		if !other {
			out = append(out, id)
		}
	}
	return out
}

// gateway is a fake Pushgateway that keeps the pushed bodies.
type gateway struct {
	srv    *httptest.Server
	mu     sync.Mutex
	pushes []push
}

type push struct {
	header http.Header
	body   []byte
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		g.pushes = append(g.pushes, push{r.Header.Clone(), b})
		g.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// gauge returns the value of metric{label=value} in the last push.
func (g *gateway) gauge(t *testing.T, metric, label, value string) (float64, bool) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pushes) == 0 {
		t.Fatal("nothing was pushed to the Pushgateway")
	}
	p := g.pushes[len(g.pushes)-1]
	if !bytes.Contains(p.body, []byte(metric)) {
		return 0, false
	}
	dec := expfmt.NewDecoder(bytes.NewReader(p.body), expfmt.ResponseFormat(p.header))
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("decode the pushed metrics: %v", err)
			}
			return 0, false
		}
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
}

// 1. Users listed but unreadable (106, a lone 105 on 401, a null User)
// under the fraction: the run succeeds, the rows say why and keep what was
// last read.
func TestFidelityUnreadableUsers(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(101, 2, 20)
	e := newFEnv(t, ds, "", true)
	a, b := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
	ex := exclusiveUsers(ds, a)
	if len(ex) < 15 {
		t.Fatalf("customer %d has %d exclusive users; the data set changed", a, len(ex))
	}
	listed := len(ds.ListedUserIDs(a))
	u106, u105, uNull := ex[0], ex[1], ex[2]
	if 3 > 0.2*float64(listed) {
		t.Fatalf("3 unreadable of %d listed is above the default fraction", listed)
	}

	e.mustRun(0)
	const userCols = "SELECT concat_ws('|', email, first_name, last_name, job_title, lifecycle_status, home_customer_id) FROM S.users WHERE customer_id = $1 AND user_id = $2"
	const roleCols = "SELECT coalesce(string_agg(concat_ws('|', role_id, coalesce(account_ids::text, 'NULL'), coalesce(linked_account_ids::text, 'NULL'), customer_link_permission, first_seen_at, updated_at, removed_at, xmin), ',' ORDER BY customer_id, role_id), '') FROM S.user_roles WHERE user_id = $1"
	const roleHist = "SELECT count(*) FROM S.user_roles_history WHERE user_id = $1"
	type before struct {
		user, roles string
		hist        int
	}
	was := map[int64]before{}
	for _, u := range []int64{u106, u105, uNull} {
		was[u] = before{e.queryText(userCols, a, u), e.queryText(roleCols, u), e.queryInt(roleHist, u)}
		if was[u].roles == "" {
			t.Fatalf("user %d has no roles after the clean run", u)
		}
	}

	e.sim.SetUserFault(u106, 0, msadstest.UserFault{Code: 106})
	e.sim.SetUserFault(u105, 0, msadstest.UserFault{Code: 105, Status: http.StatusUnauthorized})
	e.sim.SetUserFault(uNull, 0, msadstest.UserFault{NullUser: true})
	_, s := e.mustRun(0)

	for _, c := range []struct {
		user int64
		code string
	}{{u106, "106"}, {u105, "105"}, {uNull, "<null>"}} {
		st := e.queryText("SELECT concat_ws('|', detail_status, coalesce(detail_code::text, '<null>'), detail_tracking_id IS NOT NULL, detail_error IS NOT NULL, removed_at IS NULL) FROM S.users WHERE customer_id = $1 AND user_id = $2", a, c.user)
		if want := "unreadable|" + c.code + "|t|t|t"; st != want {
			t.Errorf("user %d: detail status|code|tracking|error|current = %s, want %s", c.user, st, want)
		}
		if got := e.queryText(userCols, a, c.user); got != was[c.user].user {
			t.Errorf("user %d: profile changed though unreadable: %q -> %q", c.user, was[c.user].user, got)
		}
		if got := e.queryText(roleCols, c.user); got != was[c.user].roles {
			t.Errorf("user %d: roles changed though unreadable:\n%s\n->\n%s", c.user, was[c.user].roles, got)
		}
		if got := e.queryInt(roleHist, c.user); got != was[c.user].hist {
			t.Errorf("user %d: role history %d -> %d rows", c.user, was[c.user].hist, got)
		}
		if n := e.queryInt("SELECT count(*) FROM S.access WHERE user_id = $1 AND detail_status = 'unreadable'", c.user); n == 0 {
			t.Errorf("user %d: access shows no unreadable row", c.user)
		}
	}
	if n := e.queryInt("SELECT count(*) FROM S.users WHERE detail_status <> 'ok'"); n != 3 {
		t.Errorf("%d users not ok, want 3", n)
	}
	if st, n, _ := s.customer(t, a); st != "succeeded" || n != 3 {
		t.Errorf("summary customer %d: status %s, users_unreadable %d; want succeeded, 3", a, st, n)
	}
	if _, n, _ := s.customer(t, b); n != 0 {
		t.Errorf("summary customer %d: users_unreadable %d, want 0", b, n)
	}
	if n := e.queryInt("SELECT users_unreadable FROM S.customer_syncs WHERE customer_id = $1 ORDER BY run_id DESC LIMIT 1", a); n != 3 {
		t.Errorf("customer_syncs.users_unreadable = %d, want 3", n)
	}
	if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(a)); !ok || v != 3 {
		t.Errorf("pushed msads_unreadable_users{customer_id=%d} = %v (present %v), want 3", a, v, ok)
	}
	if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(b)); !ok || v != 0 {
		t.Errorf("pushed msads_unreadable_users{customer_id=%d} = %v (present %v), want 0", b, v, ok)
	}

	// The same failures again: the rows keep the tracking id that put them
	// in their state, and no history is written.
	const rows = "SELECT string_agg(concat_ws('|', user_id, xmin, detail_tracking_id, updated_at), ',' ORDER BY user_id) FROM S.users WHERE detail_status <> 'ok'"
	const hist = "SELECT (SELECT count(*) FROM S.users_history) + (SELECT count(*) FROM S.user_roles_history)"
	rowsBefore, histBefore := e.queryText(rows), e.queryInt(hist)
	e.mustRun(0)
	if got := e.queryText(rows); got != rowsBefore {
		t.Errorf("the same failures rewrote the unreadable rows:\n%s\n->\n%s", rowsBefore, got)
	}
	if got := e.queryInt(hist); got != histBefore {
		t.Errorf("the same failures wrote history: %d -> %d rows", histBefore, got)
	}
	if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(a)); !ok || v != 3 {
		t.Errorf("run 3: pushed msads_unreadable_users{customer_id=%d} = %v (present %v), want 3", a, v, ok)
	}

	// Readable again: back to ok, the detail columns cleared.
	e.sim.ClearFaults()
	_, s = e.mustRun(0)
	if n := e.queryInt("SELECT count(*) FROM S.users WHERE detail_status <> 'ok' OR detail_code IS NOT NULL OR detail_tracking_id IS NOT NULL OR detail_error IS NOT NULL"); n != 0 {
		t.Errorf("%d users still not ok once readable", n)
	}
	if _, n, _ := s.customer(t, a); n != 0 {
		t.Errorf("summary users_unreadable = %d once readable", n)
	}
	if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(a)); !ok || v != 0 {
		t.Errorf("run 4: pushed msads_unreadable_users{customer_id=%d} = %v (present %v), want 0", a, v, ok)
	}
}

// 2. A user deleted between the listing and GetUser is 'not_found' (1001);
// once no longer listed it is removed.
func TestFidelityDeletedBetweenListAndRead(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(102, 2, 10)
	e := newFEnv(t, ds, "", true)
	a := ds.CustomerIDs()[0]
	u := exclusiveUsers(ds, a)[0]
	e.mustRun(0)

	e.sim.DeleteUserKeepListing(a, u)
	_, s := e.mustRun(0)
	if got := e.queryText("SELECT concat_ws('|', detail_status, detail_code, removed_at IS NULL) FROM S.users WHERE customer_id = $1 AND user_id = $2", a, u); got != "not_found|1001|t" {
		t.Errorf("stale listing: detail_status|code|current = %s, want not_found|1001|t", got)
	}
	if st, n, _ := s.customer(t, a); st != "succeeded" || n != 1 {
		t.Errorf("summary: %s, users_unreadable %d; want succeeded, 1", st, n)
	}
	if n := e.queryInt("SELECT users_unreadable FROM S.customer_syncs WHERE customer_id = $1 ORDER BY run_id DESC LIMIT 1", a); n != 1 {
		t.Errorf("customer_syncs.users_unreadable = %d, want 1", n)
	}
	if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(a)); !ok || v != 1 {
		t.Errorf("pushed msads_unreadable_users{customer_id=%d} = %v (present %v), want 1", a, v, ok)
	}

	// The listing ends: AddUser of the id ends the stale listing, RemoveUser
	// takes the user out of the customer.
	e.sim.AddUser(a, msads.User{ID: u, UserName: "gone@example.com", LifecycleStatus: "Active"}, nil)
	e.sim.RemoveUser(a, u)
	if slices.Contains(e.sim.Dataset().ListedUserIDs(a), u) {
		t.Fatal("the simulator still lists the user")
	}
	e.mustRun(0)
	if n := e.queryInt("SELECT count(*) FROM S.users WHERE customer_id = $1 AND user_id = $2 AND removed_at IS NOT NULL", a, u); n != 1 {
		t.Errorf("user %d no longer listed is not removed", u)
	}
	e.wantListed(a)
}

// 3. More unreadable users than sync.max_unreadable_fraction: that customer
// fails naming the count and the codes; its rows stay as they were.
func TestFidelityTooManyUnreadable(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(103, 3, 10)
	e := newFEnv(t, ds, "", true)
	ids := ds.CustomerIDs()
	a := ids[0]
	ex := exclusiveUsers(ds, a)
	listed := len(ds.ListedUserIDs(a))
	e.mustRun(0)
	const fingerprint = "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM (SELECT u.*, u.xmin FROM S.users u WHERE customer_id = $1) t"
	const rolesFP = "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM (SELECT r.*, r.xmin FROM S.user_roles r WHERE customer_id = $1) t"
	usersBefore, rolesBefore := e.queryText(fingerprint, a), e.queryText(rolesFP, a)
	histBefore := e.queryInt("SELECT count(*) FROM S.users_history WHERE customer_id = $1", a)

	n := 3
	for float64(n) <= 0.2*float64(listed) {
		n++
	}
	for _, u := range ex[:n] {
		e.sim.SetUserFault(u, 0, msadstest.UserFault{Code: 106})
	}
	// A change the failed customer must not write.
	e.sim.RemoveUser(a, ex[n])
	r, s := e.mustRun(2)
	want := fmt.Sprintf("GetUser failed for %d of %d listed users", n, listed-1)
	st, unr, errText := s.customer(t, a)
	if st != "failed" || !strings.Contains(errText, want) || !strings.Contains(errText, "106") {
		t.Errorf("summary customer %d: status %s, error %q; want failed naming %q and 106", a, st, errText, want)
	}
	if unr != n {
		t.Errorf("summary users_unreadable = %d, want %d", unr, n)
	}
	if !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "106") {
		t.Errorf("stderr does not name the count and the code:\n%s", tail(r.stderr, 3000))
	}
	for _, o := range ids[1:] {
		if st, _, _ := s.customer(t, o); st != "succeeded" {
			t.Errorf("customer %d: %s", o, st)
		}
		e.wantListed(o)
	}
	if got := e.queryText(fingerprint, a); got != usersBefore {
		t.Error("the failed customer's users rows changed")
	}
	if got := e.queryText(rolesFP, a); got != rolesBefore {
		t.Error("the failed customer's user_roles rows changed")
	}
	if got := e.queryInt("SELECT count(*) FROM S.users_history WHERE customer_id = $1", a); got != histBefore {
		t.Errorf("the failed customer's users history %d -> %d", histBefore, got)
	}
	if c := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND status = 'failed' AND error LIKE '%106%'", a); c != 1 {
		t.Errorf("failed customer_syncs rows naming 106 = %d, want 1", c)
	}
	// The gauge is "as of the customer's last successful sync": the failed
	// snapshot's count is not published as one.
	if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(a)); ok && v == float64(n) {
		t.Errorf("pushed msads_unreadable_users{customer_id=%d} = %v from a failed sync", a, v)
	} else {
		t.Logf("pushed msads_unreadable_users{customer_id=%d} after its failed sync: %v (present %v)", a, v, ok)
	}
}

// 3b. sync.max_unreadable_fraction is read: at 0 a single unreadable user
// fails its customer; at the fraction exactly the customer is synced.
func TestFidelityUnreadableFractionSetting(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		fraction   string
		unreadable int
		code       int
	}{
		{"fraction 0, one unreadable", "0", 1, 2},
		{"fraction 0.2, exactly a fifth unreadable", "0.2", 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(123, 2, 10)
			a := ds.CustomerIDs()[0]
			ex := exclusiveUsers(ds, a)
			if len(ds.ListedUserIDs(a)) != 10 {
				t.Fatalf("customer %d lists %d users, want 10", a, len(ds.ListedUserIDs(a)))
			}
			e := newFEnv(t, ds, fastSync+"  max_unreadable_fraction: "+c.fraction+"\n", false)
			for _, u := range ex[:c.unreadable] {
				e.sim.SetUserFault(u, 0, msadstest.UserFault{Code: 106})
			}
			_, s := e.mustRun(c.code)
			st, n, errText := s.customer(t, a)
			if n != c.unreadable {
				t.Errorf("users_unreadable = %d, want %d", n, c.unreadable)
			}
			switch c.code {
			case 0:
				if st != "succeeded" {
					t.Errorf("customer %d: %s %q", a, st, errText)
				}
			default:
				if st != "failed" || !strings.Contains(errText, "max_unreadable_fraction") {
					t.Errorf("customer %d: %s %q; want failed naming max_unreadable_fraction", a, st, errText)
				}
				if n := e.queryInt("SELECT count(*) FROM S.users WHERE customer_id = $1", a); n != 0 {
					t.Errorf("%d users written for the failed customer", n)
				}
			}
		})
	}
}

// 4. Lifecycle statuses other than Active, known or not, are kept as text.
func TestFidelityLifecycleStatuses(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(104, 1, 8)
	a := ds.CustomerIDs()[0]
	ex := exclusiveUsers(ds, a)
	statuses := []string{"Inactive", "Pending", "Deleted", "Suspended"}
	want := map[int64]string{}
	for i, st := range statuses {
		for j := range ds.Users {
			if ds.Users[j].ID == ex[i] {
				ds.Users[j].LifecycleStatus = st
			}
		}
		want[ex[i]] = st
	}
	e := newFEnv(t, ds, "", false)
	e.mustRun(0)
	for u, st := range want {
		if got := e.queryText("SELECT lifecycle_status FROM S.users WHERE customer_id = $1 AND user_id = $2", a, u); got != st {
			t.Errorf("user %d: users.lifecycle_status %q, want %q", u, got, st)
		}
		if got := e.queryText("SELECT string_agg(DISTINCT lifecycle_status, ',') FROM S.access WHERE user_id = $1", u); got != st {
			t.Errorf("user %d: access.lifecycle_status %q, want %q", u, got, st)
		}
	}
}

// 5. AccountIds [] and null stay distinct: '{}' and NULL.
func TestFidelityAccountIDsEmptyVersusNull(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(105, 1, 6)
	a := ds.CustomerIDs()[0]
	ex := exclusiveUsers(ds, a)
	uEmpty, uNull := ex[0], ex[1]
	e := newFEnv(t, ds, "", false)
	e.sim.SetRoles(uEmpty, []msads.Role{{CustomerID: a, RoleID: msads.RoleViewer, AccountIDs: []int64{}}})
	e.sim.SetRoles(uNull, []msads.Role{{CustomerID: a, RoleID: msads.RoleAdvertiserCampaignManager}})
	invEmpty := e.sim.AddInvitation(msads.Invitation{CustomerID: a, Email: "empty@example.com", RoleID: msads.RoleViewer, Lcid: "EnglishUS", AccountIDs: []int64{}})
	invNull := e.sim.AddInvitation(msads.Invitation{CustomerID: a, Email: "null@example.com", RoleID: msads.RoleStandardUser, Lcid: "EnglishUS"})
	e.mustRun(0)
	if n := e.queryInt("SELECT count(*) FROM S.user_roles WHERE user_id = $1 AND account_ids IS NOT NULL AND cardinality(account_ids) = 0", uEmpty); n != 1 {
		t.Errorf("AccountIds []: %d roles with '{}', want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_roles WHERE user_id = $1 AND account_ids IS NULL", uNull); n != 1 {
		t.Errorf("AccountIds null: %d roles with NULL, want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.access WHERE user_id = $1", uEmpty); n != 0 {
		t.Errorf("AccountIds []: %d access rows, want 0", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.access WHERE user_id = $1 AND account_id IS NULL", uNull); n != 1 {
		t.Errorf("AccountIds null: %d access rows with account_id NULL, want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_invitations WHERE invitation_id = $1 AND account_ids IS NOT NULL AND cardinality(account_ids) = 0", invEmpty); n != 1 {
		t.Errorf("invitation AccountIds []: not stored as '{}'")
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_invitations WHERE invitation_id = $1 AND account_ids IS NULL", invNull); n != 1 {
		t.Errorf("invitation AccountIds null: not stored as NULL")
	}
}

// 6. A 401 is mended by one refresh.
func TestFidelityUnauthorizedMendedByOneRefresh(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		fault msadstest.Fault
	}{
		{"first call answers 105", msadstest.Fault{Code: 105, CodeTimes: 1}},
		{"first call answers 109", msadstest.Fault{Code: 109, CodeTimes: 1}},
		{"first call answers a bare 401", msadstest.Fault{Response: &msadstest.Canned{Status: http.StatusUnauthorized, Times: 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(106, 2, 6)
			e := newFEnv(t, ds, "", false)
			e.sim.RejectSupersededRefreshTokens(true)
			e.sim.SetFault(msadstest.AnyOp, c.fault)
			_, s := e.mustRun(0)
			if n := e.sim.Calls(msadstest.OpToken); n != 2 {
				t.Errorf("token calls = %d, want 2 (the first grant and one refresh)", n)
			}
			for _, id := range ds.CustomerIDs() {
				e.wantListed(id)
				if st, n, _ := s.customer(t, id); st != "succeeded" || n != 0 {
					t.Errorf("customer %d: %s, %d unreadable", id, st, n)
				}
			}
		})
	}
	t.Run("access tokens expire mid-run", func(t *testing.T) {
		t.Parallel()
		ds := msadstest.Generate(116, 2, 8)
		e := newFEnv(t, ds, "", false)
		// Strict rotation: two refreshes with the same refresh token would
		// fail the second one.
		e.sim.RejectSupersededRefreshTokens(true)
		e.sim.SetFault(msadstest.OpGetUser, msadstest.Fault{Latency: 100 * time.Millisecond})
		ctx := t.Context()
		cmd, o, er := e.start(ctx, "run", "--config", e.config)
		deadline := time.Now().Add(30 * time.Second)
		for e.sim.Calls(msadstest.OpGetUser) < 3 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		e.sim.ExpireAccessTokens()
		r := wait(t, cmd, o, er)
		e.noSecrets(r)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, tail(r.stderr, 3000))
		}
		if n := e.sim.Calls(msadstest.OpToken); n != 2 {
			t.Errorf("token calls = %d, want 2 (the first grant and one refresh)", n)
		}
		for _, id := range ds.CustomerIDs() {
			e.wantListed(id)
		}
	})
}

// 7. A revoked refresh token stops the run at once, whatever the number of
// customers.
func TestFidelityRevokedRefreshToken(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(107, 10, 3)
	e := newFEnv(t, ds, "", false)
	e.sim.SetTokenError(msadstest.TokenError{Error: "invalid_grant", Code: 50173})
	r, s := e.mustRun(1)
	fatalLine(t, r, "syncer auth")
	failedRun(t, s, "syncer auth")
	e.nothingWritten()
	n := e.sim.Calls(msadstest.OpToken)
	t.Logf("token endpoint calls for 10 customers with a revoked refresh token: %d", n)
	if n > 2 {
		t.Errorf("token endpoint called %d times, want at most 2", n)
	}
	if n := e.sim.TotalCalls(); n != 0 {
		t.Errorf("%d API calls made without a token", n)
	}
}

// 7b. The same after a clean run, when the refresh token the run uses is
// the one it stored (rotated) in the database.
func TestFidelityRevokedStoredRefreshToken(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(127, 10, 3)
	e := newFEnv(t, ds, "", false)
	e.mustRun(0)
	const rows = "SELECT (SELECT count(*) FROM S.users WHERE removed_at IS NULL) * 1000 + (SELECT count(*) FROM S.customer_syncs WHERE status = 'succeeded')"
	before := e.queryInt(rows)
	e.sim.ResetCalls()
	e.sim.SetTokenError(msadstest.TokenError{Error: "invalid_grant", Code: 50173})
	r, s := e.mustRun(1)
	fatalLine(t, r, "syncer auth")
	failedRun(t, s, "syncer auth")
	if after := e.queryInt(rows); after != before {
		t.Errorf("rows changed: %d -> %d", before, after)
	}
	n := e.sim.Calls(msadstest.OpToken)
	t.Logf("token endpoint calls for 10 customers with a revoked stored refresh token: %d", n)
	if n > 2 {
		t.Errorf("token endpoint called %d times, want at most 2", n)
	}
}

// 7c. An invalid_grant once (AADSTS70000 is sometimes intermittent) is
// tried once more and the run goes on.
func TestFidelityIntermittentInvalidGrant(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(137, 2, 3)
	e := newFEnv(t, ds, "", false)
	e.sim.SetTokenError(msadstest.TokenError{Code: 70000, Times: 1})
	e.mustRun(0)
	if n := e.sim.Calls(msadstest.OpToken); n != 2 {
		t.Errorf("token calls = %d, want 2", n)
	}
	for _, id := range ds.CustomerIDs() {
		e.wantListed(id)
	}
}

// 8. The identity platform refuses the client or wants a new sign-in.
func TestFidelityTokenEndpointRefusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		err        msadstest.TokenError
		want       string
		tokenCalls int // 0: not checked
	}{
		{"wrong client secret 7000215", msadstest.TokenError{Code: 7000215}, "client_secret", 1},
		{"unknown application 700016", msadstest.TokenError{Code: 700016}, "client_id", 0},
		{"mfa required 50076", msadstest.TokenError{Code: 50076}, "syncer auth", 0},
		{"expired client secret 7000222", msadstest.TokenError{Code: 7000222}, "client_secret", 1},
		{"consent required 65001", msadstest.TokenError{Code: 65001}, "syncer auth", 0},
		{"invalid scope 70011", msadstest.TokenError{Code: 70011}, "microsoft_ads.environment", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newFEnv(t, msadstest.Generate(108, 2, 3), "", false)
			e.sim.SetTokenError(c.err)
			r, s := e.mustRun(1)
			fatalLine(t, r, c.want)
			failedRun(t, s, c.want)
			n := e.sim.Calls(msadstest.OpToken)
			t.Logf("token calls: %d", n)
			if c.tokenCalls != 0 && n != c.tokenCalls {
				t.Errorf("token calls = %d, want %d", n, c.tokenCalls)
			}
			if n > 2 {
				t.Errorf("token calls = %d for a permanent refusal", n)
			}
			e.nothingWritten()
		})
	}
}

// 9. The token endpoint is down (an HTML 503 on every grant): the run gives
// up after retry_max_elapsed.
func TestFidelityTokenEndpointDown(t *testing.T) {
	t.Parallel()
	e := newFEnv(t, msadstest.Generate(109, 2, 3), "  concurrency: 4\n  request_timeout: 3s\n  retry_max_elapsed: 3s\n", false)
	e.sim.SetTokenError(msadstest.TokenError{Canned: msadstest.HTMLPage(http.StatusServiceUnavailable)})
	start := time.Now()
	r, s := e.mustRun(1)
	took := time.Since(start)
	t.Logf("exit after %v, %d token calls", took, e.sim.Calls(msadstest.OpToken))
	if took > 3*time.Second+5*time.Second {
		t.Errorf("exit after %v with retry_max_elapsed 3s", took)
	}
	if n := e.sim.Calls(msadstest.OpToken); n < 2 {
		t.Errorf("token calls = %d: a transient failure was not retried", n)
	}
	fatalLine(t, r, "token endpoint unavailable")
	failedRun(t, s, "token endpoint unavailable")
	e.nothingWritten()
}

// 9b. The token endpoint unavailable for two grants, then fine: the run
// waits it out.
func TestFidelityTokenEndpointRecovers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		err  msadstest.TokenError
	}{
		{"temporarily_unavailable", msadstest.TokenError{Error: "temporarily_unavailable", Times: 2}},
		{"HTML 503", msadstest.TokenError{Canned: msadstest.HTMLPage(http.StatusServiceUnavailable), Times: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(119, 2, 3)
			e := newFEnv(t, ds, "  concurrency: 4\n  request_timeout: 3s\n  retry_max_elapsed: 5s\n", false)
			e.sim.SetTokenError(c.err)
			e.mustRun(0)
			if n := e.sim.Calls(msadstest.OpToken); n != 3 {
				t.Errorf("token calls = %d, want 3", n)
			}
			for _, id := range ds.CustomerIDs() {
				e.wantListed(id)
			}
		})
	}
}

// 10. Every API call answers 105 even with a fresh token.
func TestFidelityCredentialsRejected(t *testing.T) {
	t.Parallel()
	e := newFEnv(t, msadstest.Generate(110, 3, 3), "", false)
	e.sim.SetFault(msadstest.AnyOp, msadstest.Fault{Code: 105})
	r, s := e.mustRun(1)
	t.Logf("token calls %d, API calls %d", e.sim.Calls(msadstest.OpToken), e.sim.TotalCalls())
	fatalLine(t, r, "developer token or the user's access was rejected")
	failedRun(t, s, "developer token or the user's access was rejected")
	e.nothingWritten()
	if n := e.sim.Calls(msadstest.OpToken); n > 3 {
		t.Errorf("token calls = %d for rejected credentials", n)
	}
}

// 11. One customer's access removed: that customer fails, the others are
// written.
func TestFidelityCustomerAccessRevoked(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(111, 3, 5)
	ds.GrantPrincipalEverywhere(msads.RoleSuperAdmin)
	e := newFEnv(t, ds, "", false)
	ids := ds.CustomerIDs()
	bad := ids[1]
	e.mustRun(0)
	gone := exclusiveUsers(ds, bad)[0]
	e.sim.RemoveUser(bad, gone)
	e.sim.RevokeCustomerAccess(bad)
	_, s := e.mustRun(2)
	if st, _, errText := s.customer(t, bad); st != "failed" || !strings.Contains(errText, "105") {
		t.Errorf("customer %d: %s %q; want failed naming 105", bad, st, errText)
	}
	if !e.currentUsers(bad)[gone] {
		t.Error("the failed customer's rows changed")
	}
	if n := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND status = 'failed'", bad); n != 1 {
		t.Errorf("customer_syncs: %d failed rows for %d", n, bad)
	}
	for _, id := range []int64{ids[0], ids[2]} {
		if st, _, _ := s.customer(t, id); st != "succeeded" {
			t.Errorf("customer %d: %s", id, st)
		}
		e.wantListed(id)
	}
}

// 12. A configured customer the credential cannot see fails naming 106.
func TestFidelityUnreachableCustomer(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(112, 3, 4)
	ds.GrantPrincipalEverywhere(msads.RoleSuperAdmin)
	e := newFEnv(t, ds, "", false)
	ids := ds.CustomerIDs()
	bad := ids[2]
	e.sim.SetUnreachable(bad)
	_, s := e.mustRun(2)
	if st, _, errText := s.customer(t, bad); st != "failed" || !strings.Contains(errText, "106") {
		t.Errorf("customer %d: %s %q; want failed naming 106", bad, st, errText)
	}
	if n := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND status = 'failed' AND error LIKE '%106%'", bad); n != 1 {
		t.Errorf("customer_syncs: %d failed rows naming 106", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.users WHERE customer_id = $1", bad); n != 0 {
		t.Errorf("%d users written for the unreachable customer", n)
	}
	for _, id := range ids[:2] {
		e.wantListed(id)
	}
}

var customersSection = regexp.MustCompile(`(?m)^customers:\n  ids: \[.*\]\n`)

// 13. Discovery finds every customer the principal holds a role in, even
// one GetCustomersInfo omits and beyond its cap; the run records who it
// signed in as.
func TestFidelityDiscovery(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(113, 4, 4)
	ds.GrantPrincipalEverywhere(msads.RoleSuperAdmin)
	e := newFEnv(t, ds, "", false)
	y, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if !customersSection.Match(y) {
		t.Fatalf("config has no customers.ids line:\n%s", y)
	}
	if err := os.WriteFile(e.config, customersSection.ReplaceAll(y, []byte("customers:\n  discover: true\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := ds.CustomerIDs()
	e.sim.HideFromCustomersInfo(ids[1])
	e.sim.SetCustomersInfoCap(2)
	_, s := e.mustRun(0)
	if len(s.Customers) != len(ids) {
		t.Errorf("summary has %d customers, want %d", len(s.Customers), len(ids))
	}
	for _, id := range ids {
		if st, _, _ := s.customer(t, id); st != "succeeded" {
			t.Errorf("customer %d: %s", id, st)
		}
		e.wantListed(id)
	}
	pid, pname := e.sim.Principal()
	if got := e.queryText("SELECT principal_user_id::text || '|' || principal_user_name FROM S.sync_runs"); got != fmt.Sprintf("%d|%s", pid, pname) {
		t.Errorf("sync_runs principal = %s, want %d|%s", got, pid, pname)
	}
	if s.PrincipalUserID != fmt.Sprint(pid) || s.PrincipalUserName != pname {
		t.Errorf("summary principal = %s %s, want %d %s", s.PrincipalUserID, s.PrincipalUserName, pid, pname)
	}
	// The visible set is recorded whole (the hidden and the capped-off
	// customers included), for evidence packs.
	want := slices.Sorted(slices.Values(ids))
	if got := e.queryText("SELECT array_to_string(visible_customer_ids, ' ') FROM S.sync_runs"); got != strings.Trim(fmt.Sprint(want), "[]") {
		t.Errorf("sync_runs.visible_customer_ids = %s, want %v", got, want)
	}
}

// 13b. GetCustomersInfo answering {} or a null list. Configured customers
// only lose their names (the run goes on); discovery cannot tell the
// customers from {} (the run fails) while a null list is an answer (the
// principal's roles still find every customer).
func TestFidelityCustomersInfoOddAnswers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		discover bool
		canned   *msadstest.Canned
		code     int
	}{
		{"configured, {}", false, msadstest.EmptyObject(), 0},
		{"discover, {}", true, msadstest.EmptyObject(), 1},
		{"discover, null list", true, msadstest.NullList(msadstest.OpGetCustomersInfo), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(133, 3, 3)
			ds.GrantPrincipalEverywhere(msads.RoleSuperAdmin)
			e := newFEnv(t, ds, "", false)
			if c.discover {
				y, err := os.ReadFile(e.config)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(e.config, customersSection.ReplaceAll(y, []byte("customers:\n  discover: true\n")), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e.sim.SetFault(msadstest.OpGetCustomersInfo, msadstest.Fault{Response: c.canned})
			r, s := e.mustRun(c.code)
			if c.code == 1 {
				fatalLine(t, r, "GetCustomersInfo")
				e.nothingWritten()
				return
			}
			if len(s.Customers) != 3 {
				t.Errorf("%d customers synced, want 3", len(s.Customers))
			}
			for _, id := range ds.CustomerIDs() {
				e.wantListed(id)
			}
		})
	}
}

// 14. A 200 {} is not an empty list: the customer fails and keeps its rows.
// An explicit null list is an answer: the rows go.
func TestFidelityEmptyObjectVersusNullList(t *testing.T) {
	t.Parallel()
	pendingOf := "SELECT count(*) FROM S.user_invitations WHERE customer_id = $1 AND removed_at IS NULL"
	accountsOf := "SELECT count(*) FROM S.accounts WHERE customer_id = $1 AND removed_at IS NULL"
	usersOf := "SELECT count(*) FROM S.users WHERE customer_id = $1 AND removed_at IS NULL AND detail_status = 'ok'"
	for _, c := range []struct {
		name    string
		op      string
		canned  *msadstest.Canned
		code    int
		rows    string
		removed bool
	}{
		{"SearchUserInvitations {}", msadstest.OpSearchUserInvitations, msadstest.EmptyObject(), 2, pendingOf, false},
		{"GetAccountsInfo {}", msadstest.OpGetAccountsInfo, msadstest.EmptyObject(), 2, accountsOf, false},
		{"GetUsersInfo {}", msadstest.OpGetUsersInfo, msadstest.EmptyObject(), 2, usersOf, false},
		{"GetUser {}", msadstest.OpGetUser, msadstest.EmptyObject(), 2, usersOf, false},
		// A gateway's HTML 404 says nothing about the users: the customer
		// fails; no user is marked unreadable.
		{"GetUser HTML 404 from a gateway", msadstest.OpGetUser, msadstest.HTMLPage(404), 2, usersOf, false},
		{"SearchUserInvitations null", msadstest.OpSearchUserInvitations, msadstest.NullList(msadstest.OpSearchUserInvitations), 0, pendingOf, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(114, 2, 4)
			// Any share of unreadable users is accepted, so that a bad
			// answer wrongly read as a per-user failure would show.
			e := newFEnv(t, ds, fastSync+"  max_unreadable_fraction: 1\n", false)
			a, b := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
			e.mustRun(0)
			before := e.queryInt(c.rows, a)
			if before == 0 {
				t.Fatalf("customer %d has no rows to lose after the clean run", a)
			}
			e.sim.SetFault(c.op, msadstest.Fault{CustomerID: a, Response: c.canned})
			_, s := e.mustRun(c.code)
			after := e.queryInt(c.rows, a)
			st, _, errText := s.customer(t, a)
			switch {
			case c.removed:
				if after != 0 || st != "succeeded" {
					t.Errorf("null list: %d of %d rows still current, status %s; want all removed", after, before, st)
				}
			default:
				if after != before {
					t.Errorf("{}: current rows %d -> %d; a malformed answer removed them", before, after)
				}
				if st != "failed" || errText == "" {
					t.Errorf("{}: customer %d status %s error %q; want failed", a, st, errText)
				}
				t.Logf("customer error: %s", errText)
			}
			if st, _, _ := s.customer(t, b); st != "succeeded" {
				t.Errorf("customer %d: %s", b, st)
			}
		})
	}
}

// 15. Gateway answers (HTML 502, empty 504, 408) for two calls are retried:
// the data is complete.
func TestFidelityTransientBodies(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		op     string
		canned *msadstest.Canned
	}{
		{"HTML 502 on GetUsersInfo", msadstest.OpGetUsersInfo, msadstest.HTMLPage(http.StatusBadGateway)},
		{"empty 504 on GetUser", msadstest.OpGetUser, msadstest.EmptyBody(http.StatusGatewayTimeout)},
		{"408 on SearchUserInvitations", msadstest.OpSearchUserInvitations, msadstest.StatusOnly(http.StatusRequestTimeout)},
		{"HTML 502 on GetAccountsInfo", msadstest.OpGetAccountsInfo, msadstest.HTMLPage(http.StatusBadGateway)},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(115, 2, 5)
			e := newFEnv(t, ds, "  concurrency: 4\n  request_timeout: 3s\n  retry_max_elapsed: 5s\n", false)
			cn := *c.canned
			cn.Times = 2
			e.sim.SetFault(c.op, msadstest.Fault{Response: &cn})
			e.mustRun(0)
			if n := e.sim.Calls(c.op); n < 3 {
				t.Errorf("%s called %d times: the canned answers were not served", c.op, n)
			}
			for _, id := range ds.CustomerIDs() {
				e.wantListed(id)
				want := 0
				for _, inv := range ds.Invitations {
					if inv.CustomerID == id {
						want++
					}
				}
				if n := e.queryInt("SELECT count(*) FROM S.user_invitations WHERE customer_id = $1 AND removed_at IS NULL", id); n != want {
					t.Errorf("customer %d: %d invitations, want %d", id, n, want)
				}
				wantAcc := 0
				for _, acc := range ds.Accounts {
					if acc.CustomerID == id {
						wantAcc++
					}
				}
				if n := e.queryInt("SELECT count(*) FROM S.accounts WHERE customer_id = $1 AND removed_at IS NULL", id); n != wantAcc {
					t.Errorf("customer %d: %d accounts, want %d", id, n, wantAcc)
				}
			}
		})
	}
}

// 16. ApiFault shapes with codes the client does not know fail the customer
// naming the code.
func TestFidelityApiFaultShapes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		shape string
		code  int
	}{
		{"ApiFault OperationErrors", msadstest.ShapeApiFault, 4711},
		{"ApiFault BatchErrors", msadstest.ShapeApiFaultBatch, 4712},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ds := msadstest.Generate(117, 2, 4)
			e := newFEnv(t, ds, "", false)
			a, b := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
			e.sim.SetFault(msadstest.OpGetUsersInfo, msadstest.Fault{CustomerID: a, Code: c.code, Shape: c.shape})
			r, s := e.mustRun(2)
			code := fmt.Sprint(c.code)
			if st, _, errText := s.customer(t, a); st != "failed" || !strings.Contains(errText, code) {
				t.Errorf("customer %d: %s %q; want failed naming %s", a, st, errText, code)
			}
			if !strings.Contains(r.stderr, code) {
				t.Errorf("stderr does not name %s", code)
			}
			if n := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND status = 'failed' AND error LIKE '%' || $2 || '%'", a, code); n != 1 {
				t.Errorf("customer_syncs: %d failed rows naming %s", n, code)
			}
			e.wantListed(b)
		})
	}
}

// The demo tenant, which carries every odd user at once, in one run.
func TestFidelityDemoTenant(t *testing.T) {
	t.Parallel()
	ds := msadstest.DemoDataset()
	e := newFEnv(t, ds, "", true)
	c := ds.CustomerIDs()
	_, s := e.mustRun(0)
	for _, u := range []struct {
		customer, user int64
		want           string
	}{
		{c[1], msadstest.DemoUnreadable106, "unreadable|106"},
		{c[2], msadstest.DemoUnreadable105, "unreadable|105"},
		{c[0], msadstest.DemoNullUser, "unreadable|"},
		{c[0], msadstest.DemoDeletedUser, "not_found|1001"},
		{c[0], msadstest.DemoPrincipal, "ok|"},
	} {
		if got := e.queryText("SELECT concat_ws('|', detail_status, coalesce(detail_code::text, '')) FROM S.users WHERE customer_id = $1 AND user_id = $2 AND removed_at IS NULL", u.customer, u.user); got != u.want {
			t.Errorf("user %d in customer %d: %s, want %s", u.user, u.customer, got, u.want)
		}
	}
	for u, st := range map[int64]string{msadstest.DemoInactiveUser: "Inactive", msadstest.DemoPendingUser: "Pending"} {
		if got := e.queryText("SELECT lifecycle_status FROM S.users WHERE user_id = $1", u); got != st {
			t.Errorf("user %d: lifecycle_status %q, want %q", u, got, st)
		}
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_roles WHERE user_id = $1 AND customer_id = $2 AND cardinality(account_ids) = 0", msadstest.DemoTwoCustomers, c[1]); n != 1 {
		t.Errorf("DemoTwoCustomers: AccountIds [] not stored as '{}'")
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_roles WHERE user_id = $1 AND customer_id = $2 AND account_ids IS NULL", msadstest.DemoTwoCustomers, c[0]); n != 1 {
		t.Errorf("DemoTwoCustomers: customer-level role not stored with NULL")
	}
	if n := e.queryInt("SELECT count(*) FROM S.user_roles WHERE user_id = $1 AND account_ids IS NULL AND role_id = $2", msadstest.DemoNullAccounts, msads.RoleAdvertiserCampaignManager); n != 1 {
		t.Errorf("DemoNullAccounts: AccountIds null not stored as NULL")
	}
	want := map[int64]int{c[0]: 2, c[1]: 1, c[2]: 1}
	for id, n := range want {
		if st, got, _ := s.customer(t, id); st != "succeeded" || got != n {
			t.Errorf("customer %d: %s, users_unreadable %d, want %d", id, st, got, n)
		}
		if got := e.queryInt("SELECT users_unreadable FROM S.customer_syncs WHERE customer_id = $1", id); got != n {
			t.Errorf("customer_syncs.users_unreadable of %d = %d, want %d", id, got, n)
		}
		if v, ok := e.gw.gauge(t, "msads_unreadable_users", "customer_id", fmt.Sprint(id)); !ok || v != float64(n) {
			t.Errorf("pushed msads_unreadable_users{customer_id=%d} = %v (present %v), want %d", id, v, ok, n)
		}
	}
	pid, pname := e.sim.Principal()
	if pid != msadstest.DemoPrincipal || s.PrincipalUserID != fmt.Sprint(pid) || s.PrincipalUserName != pname {
		t.Errorf("summary principal %s %s, want %d %s", s.PrincipalUserID, s.PrincipalUserName, pid, pname)
	}
	if n := e.queryInt("SELECT count(*) FROM S.sync_runs WHERE principal_user_id = $1 AND principal_user_name = $2", pid, pname); n != 1 {
		t.Errorf("sync_runs does not record the principal")
	}
}
