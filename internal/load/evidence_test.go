package load

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/pgtest"
)

// day returns midnight UTC of 2026-mm-dd, plus hours.
func day(mm, dd int, hours ...int) time.Time {
	t := time.Date(2026, time.Month(mm), dd, 0, 0, 0, 0, time.UTC)
	for _, h := range hours {
		t = t.Add(time.Duration(h) * time.Hour)
	}
	return t
}

// version is one history row: when it began, its change, and its
// columns beyond the key.
type version struct {
	at     time.Time
	change string
	cols   map[string]any
}

// historyFixture writes history tables directly, with exact times, each
// key's versions chained (valid_to = the next version's valid_from).
type historyFixture struct {
	t      *testing.T
	pool   *pgxpool.Pool
	schema string
}

func (f historyFixture) exec(sql string, args ...any) {
	f.t.Helper()
	sql = strings.ReplaceAll(sql, "S.", `"`+f.schema+`".`)
	if _, err := f.pool.Exec(f.t.Context(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f historyFixture) history(table string, key map[string]any, vs ...version) {
	f.t.Helper()
	for i, v := range vs {
		cols := []string{"valid_from", "valid_to", "change", "run_id"}
		var validTo any
		if i+1 < len(vs) {
			validTo = vs[i+1].at
		}
		args := []any{v.at, validTo, v.change, 1}
		for _, m := range []map[string]any{key, v.cols} {
			names := make([]string, 0, len(m))
			for k := range m {
				names = append(names, k)
			}
			slices.Sort(names)
			for _, k := range names {
				cols = append(cols, k)
				args = append(args, m[k])
			}
		}
		ph := make([]string, len(cols))
		for j := range ph {
			ph[j] = fmt.Sprintf("$%d", j+1)
		}
		f.exec("INSERT INTO S."+table+" ("+strings.Join(cols, ", ")+") VALUES ("+strings.Join(ph, ", ")+")", args...)
	}
}

func (f historyFixture) user(customer, user int64, vs ...version) {
	f.t.Helper()
	f.history("users_history", map[string]any{"customer_id": customer, "user_id": user}, vs...)
}

func (f historyFixture) grant(user, customer int64, role int, vs ...version) {
	f.t.Helper()
	f.history("user_roles_history", map[string]any{"user_id": user, "customer_id": customer, "role_id": role}, vs...)
}

func (f historyFixture) invitation(id, customer int64, vs ...version) {
	f.t.Helper()
	for i := range vs {
		if vs[i].cols == nil {
			vs[i].cols = map[string]any{}
		}
		vs[i].cols["customer_id"] = customer
	}
	f.history("user_invitations_history", map[string]any{"invitation_id": id}, vs...)
}

func v(at time.Time, change string, kv ...any) version {
	cols := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		cols[kv[i].(string)] = kv[i+1]
	}
	return version{at: at, change: change, cols: cols}
}

// reviewFixture is a history with known changes around T1 = Feb 1 and
// T2 = Mar 1 in customer 10, and one change in customer 20.
func reviewFixture(t *testing.T) (historyFixture, time.Time, time.Time) {
	pool, schema := pgtest.Schema(t)
	f := historyFixture{t, pool, schema}
	f.exec(`INSERT INTO S.sync_runs (status) VALUES ('succeeded')`)
	f.exec(`INSERT INTO S.customers (customer_id, name) VALUES (10, 'Contoso'), (20, 'Fabrikam')`)
	f.exec(`INSERT INTO S.accounts (account_id, customer_id, name) VALUES (7, 10, 'Seven'), (8, 10, 'Eight')`)
	name := func(n string) []any { return []any{"user_name", n, "email", n + "@example.com", "job_title", "staff"} }
	// Unchanged throughout.
	f.user(10, 1, v(day(1, 1), "added", name("ann")...))
	// Changed after T1.
	f.user(10, 2, v(day(1, 15), "added", name("bob")...),
		v(day(2, 10), "changed", "user_name", "bob", "email", "bob@example.com", "job_title", "lead"))
	// Added after T1; and a change exactly at T1 (not in the diff: it is
	// part of the state at T1).
	f.user(10, 3, v(day(2, 5), "added", name("cid")...))
	f.user(10, 6, v(day(2, 1), "added", name("eve")...))
	// Removed after T1.
	f.user(10, 4, v(day(1, 1), "added", name("dan")...), v(day(2, 20), "removed", name("dan")...))
	// Removed before T1, back after T1.
	f.user(10, 5, v(day(1, 1), "added", name("fay")...), v(day(1, 20), "removed", name("fay")...),
		v(day(2, 12), "reappeared", name("fay")...))
	// Another customer.
	f.user(20, 9, v(day(2, 2), "added", name("gus")...))

	// A grant removed and re-added between T1 and T2.
	f.grant(1, 10, 100, v(day(1, 1), "added", "account_ids", []int64{7}),
		v(day(2, 3), "removed", "account_ids", []int64{7}), v(day(2, 25), "reappeared", "account_ids", []int64{7}))
	// A role replaced by another in one sync.
	f.grant(2, 10, 203, v(day(1, 15), "added", "account_ids", []int64{7, 8}), v(day(2, 14), "removed", "account_ids", []int64{7, 8}))
	f.grant(2, 10, 41, v(day(2, 14), "added", "account_ids", nil))
	// Scope widened; the change at T2 itself is in the diff.
	f.grant(1, 10, 16, v(day(1, 1), "added", "account_ids", []int64{7}), v(day(3, 1), "changed", "account_ids", nil))
	f.grant(5, 10, 100, v(day(1, 1), "added", "account_ids", nil), v(day(1, 20), "removed", "account_ids", nil),
		v(day(2, 12), "reappeared", "account_ids", nil))
	// After T2: not in the diff.
	f.grant(3, 10, 100, v(day(3, 2), "added", "account_ids", nil))

	f.invitation(900, 10, v(day(1, 2), "added", "email", "x@example.com", "role_id", 203), v(day(2, 6), "removed", "email", "x@example.com", "role_id", 203))
	f.invitation(901, 10, v(day(2, 7), "added", "email", "y@outlook.example", "role_id", 100))
	f.invitation(902, 20, v(day(2, 7), "added", "email", "z@outlook.example", "role_id", 100))
	// An agency's administrative link to customer 10, from Feb 4.
	f.history("client_links_history", map[string]any{"type": "CustomerLink", "client_entity_id": 10, "managing_customer_id": 500},
		v(day(2, 4), "added", "status", "Active", "customer_link_permission", "Administrative", "inviter_email", "boss@agency.example",
			"managing_customer_name", "Agency", "searched_from_customer_id", 10, "client_customer_id", 10))
	return f, day(2, 1), day(3, 1)
}

// changeLine renders a change for comparison.
func changeLine(c Change) string {
	return fmt.Sprintf("%s %s %d/%s %s %s net=%s before=%v after=%v", c.At.Format("01-02"), c.Entity, c.CustomerID, c.EntityID,
		c.Subject, c.Change, c.Net, pick(c.Before), pick(c.After))
}

// pick keeps the columns that tell the fixture's states apart.
func pick(m map[string]any) string {
	if m == nil {
		return "-"
	}
	var parts []string
	for _, k := range []string{"job_title", "role_name", "account_ids", "email", "status", "inviter_email"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s:%v", k, v))
		}
	}
	return strings.Join(parts, ",")
}

// The diff between T1 and T2 lists every change after T1 up to T2, each
// once, in time order per kind; a grant removed and re-added in between is
// listed twice (removed, then reappeared), its net outcome unchanged.
func TestReviewDiffExact(t *testing.T) {
	t.Parallel()
	f, t1, t2 := reviewFixture(t)
	got, err := ReviewDiff(t.Context(), f.pool, f.schema, t1, t2, []int64{10})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range got {
		lines = append(lines, changeLine(c))
	}
	want := []string{
		"02-05 user 10/3 cid added net=added before=- after=job_title:staff,email:cid@example.com",
		"02-10 user 10/2 bob changed net=changed before=job_title:staff,email:bob@example.com after=job_title:lead,email:bob@example.com",
		"02-12 user 10/5 fay reappeared net=added before=- after=job_title:staff,email:fay@example.com",
		"02-20 user 10/4 dan removed net=removed before=job_title:staff,email:dan@example.com after=-",
		"02-03 grant 10/1/100 ann removed net=unchanged before=role_name:Viewer,account_ids:[7] after=-",
		"02-12 grant 10/5/100 fay reappeared net=added before=- after=role_name:Viewer,account_ids:<nil>",
		"02-14 grant 10/2 bob role_changed net=changed before=role_name:Standard User,account_ids:[7 8] after=role_name:Super Admin,account_ids:<nil>",
		"02-25 grant 10/1/100 ann reappeared net=unchanged before=- after=role_name:Viewer,account_ids:[7]",
		"03-01 grant 10/1/16 ann changed net=changed before=role_name:Advertiser Campaign Manager,account_ids:[7] after=role_name:Advertiser Campaign Manager,account_ids:<nil>",
		"02-06 invitation 10/900 x@example.com removed net=removed before=role_name:Standard User,account_ids:<nil>,email:x@example.com after=-",
		"02-07 invitation 10/901 y@outlook.example added net=added before=- after=role_name:Viewer,account_ids:<nil>,email:y@outlook.example",
		"02-04 client_link 10/CustomerLink/10/500 Agency added net=added before=- after=status:Active,inviter_email:boss@agency.example",
	}
	if d := diffLines(want, lines); d != "" {
		t.Errorf("review diff (-want +got):\n%s", d)
	}

	// Without a customer filter, customer 20's changes come too.
	all, err := ReviewDiff(t.Context(), f.pool, f.schema, t1, t2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(got)+2 {
		t.Errorf("all customers: %d changes, want %d", len(all), len(got)+2)
	}
	if _, err := ReviewDiff(t.Context(), f.pool, f.schema, t2, t1, nil); err == nil {
		t.Error("from after to: no error")
	}
}

// diffLines shows the lines only in want (-) and only in got (+), or "".
func diffLines(want, got []string) string {
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			b.WriteString("- " + w + "\n")
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			b.WriteString("+ " + g + "\n")
		}
	}
	if b.Len() == 0 && !slices.Equal(want, got) {
		return "same lines, other order:\n  " + strings.Join(got, "\n  ")
	}
	return b.String()
}

// ReadEvidence reads each population as of a time, counts it a second
// way, and finds the sync that supplied each customer's data.
func TestReadEvidenceAsOf(t *testing.T) {
	t.Parallel()
	f, _, _ := reviewFixture(t)
	f.exec(`INSERT INTO S.sync_runs (status, principal_user_id, principal_user_name) VALUES ('partial', 77, 'auditor@example.com')`)
	f.exec(`INSERT INTO S.customer_syncs (run_id, customer_id, started_at, finished_at, status, users_seen, invitations_seen)
		VALUES (1, 10, $1, $2, 'succeeded', 6, 1), (2, 10, $3, $3, 'failed', NULL, NULL), (2, 20, $4, $4, 'succeeded', 1, 1)`,
		day(2, 14), day(2, 14, 1), day(2, 14, 12), day(3, 5))
	ev, err := ReadEvidence(t.Context(), f.pool, f.schema, EvidenceQuery{AsOf: day(2, 15)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range ev.Populations {
		if p.Missing != "" {
			got[p.Name] = "missing"
			continue
		}
		var keys []string
		for _, r := range p.Rows {
			keys = append(keys, fmt.Sprint(r[0], "/", r[2]))
		}
		got[p.Name] = fmt.Sprint(keys, " check=", p.Check)
	}
	want := map[string]string{
		"users":             "[10/1 10/2 10/3 10/4 10/5 10/6 20/9] check=map[10:6 20:1]",
		"role_grants":       "[10/1 10/2 10/5] check=map[10:3]",
		"invitations":       "[10/901 20/902] check=map[10:1 20:1]",
		"privileged_access": "[10/user 10/agency] check=map[10:2]",
		"client_links":      "[10/CustomerLink] check=map[10:1]",
	}
	if len(got) != len(Populations) {
		t.Errorf("populations read: %v", got)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %s, want %s", name, got[name], w)
		}
	}
	// Customer 20's only sync started after as_of: it is not reported
	// unless asked for.
	if len(ev.Syncs) != 1 {
		t.Fatalf("syncs: %+v", ev.Syncs)
	}
	s10 := ev.Syncs[0]
	if s10.CustomerID != 10 || s10.RunID != 1 || !s10.FinishedAt.Equal(day(2, 14, 1)) || s10.LastRunID != 2 || s10.LastStatus != "failed" ||
		s10.CustomerName != "Contoso" || deref(s10.UsersSeen) != 6 {
		t.Errorf("customer 10's sync: %+v", s10)
	}
	if ev.Source.SchemaVersion < 5 || ev.Source.Database == "" || ev.Source.ServerVersion == "" {
		t.Errorf("source: %+v", ev.Source)
	}

	// Narrowed to customer 20, which had no complete sync by as_of.
	ev, err = ReadEvidence(t.Context(), f.pool, f.schema, EvidenceQuery{AsOf: day(2, 15), Customers: []int64{20}, Expected: []int64{20}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Syncs) != 1 || ev.Syncs[0].RunID != 0 || ev.Syncs[0].LastRunID != 0 {
		t.Errorf("customer 20 at Feb 15: %+v", ev.Syncs)
	}
	if n := len(ev.Populations[0].Rows); n != 1 {
		t.Errorf("customer 20: %d users, want 1", n)
	}
}

// Point in time: each population is the state at as_of exactly — a
// version that begins at as_of is in it, one that ends at as_of (a
// removal at as_of) is not; a user removed before as_of is absent, one
// removed and back is present again; a grant removed and re-added is
// absent in between.
func TestReadEvidencePointInTime(t *testing.T) {
	t.Parallel()
	f, _, _ := reviewFixture(t)
	keys := func(ev *Evidence, name string, cols ...int) string {
		for _, p := range ev.Populations {
			if p.Name != name {
				continue
			}
			var out []string
			for _, r := range p.Rows {
				parts := make([]string, len(cols))
				for i, c := range cols {
					parts[i] = fmt.Sprint(r[c])
				}
				out = append(out, strings.Join(parts, "/"))
			}
			return strings.Join(out, " ")
		}
		return "no " + name
	}
	for _, c := range []struct {
		name          string
		at            time.Time
		users, grants string // users: customer/user; grants: user/role/account
		invitations   string
	}{
		{"before any change", day(1, 1, -1), "", "", ""},
		{"a user's removal exactly at as_of", day(1, 20),
			"10/1 10/2 10/4", "1/16/7 1/100/7 2/203/7 2/203/8", "10/900"},
		{"a user's addition exactly at as_of", day(2, 1),
			"10/1 10/2 10/4 10/6", "1/16/7 1/100/7 2/203/7 2/203/8", "10/900"},
		{"a grant removed exactly at as_of", day(2, 3),
			"10/1 10/2 10/4 10/6 20/9", "1/16/7 2/203/7 2/203/8", "10/900"},
		{"just before that removal", day(2, 3).Add(-time.Microsecond),
			"10/1 10/2 10/4 10/6 20/9", "1/16/7 1/100/7 2/203/7 2/203/8", "10/900"},
		{"between removal and re-adding, after the role change", day(2, 20),
			"10/1 10/2 10/3 10/5 10/6 20/9", "1/16/7 2/41/<nil> 5/100/<nil>", "10/901 20/902"},
		{"after the re-adding", day(2, 25),
			"10/1 10/2 10/3 10/5 10/6 20/9", "1/16/7 1/100/7 2/41/<nil> 5/100/<nil>", "10/901 20/902"},
	} {
		ev, err := ReadEvidence(t.Context(), f.pool, f.schema, EvidenceQuery{AsOf: c.at})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range []struct{ name, got, want string }{
			{"users", keys(ev, "users", 0, 2), c.users},
			{"role_grants", keys(ev, "role_grants", 2, 5, 8), c.grants},
			{"invitations", keys(ev, "invitations", 0, 2), c.invitations},
		} {
			if g.got != g.want {
				t.Errorf("%s (%s): %s\n got %q\nwant %q", c.name, c.at.Format(time.RFC3339Nano), g.name, g.got, g.want)
			}
		}
		for _, p := range ev.Populations {
			if p.Missing != "" {
				continue
			}
			per := map[int64]int64{}
			for _, r := range p.Rows {
				per[deref(ptr(r[0]))]++
			}
			if fmt.Sprint(per) != fmt.Sprint(p.Check) {
				t.Errorf("%s: %s rows per customer %v, its check %v", c.name, p.Name, per, p.Check)
			}
		}
	}
}

func ptr(v any) *int64 {
	if id, ok := v.(int64); ok {
		return &id
	}
	return nil
}
