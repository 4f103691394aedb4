package e2e_test

import (
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
	"testing"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

// `syncer reconcile` through the binary: an empty warehouse, a bad file
// that loads nothing, a directory that leaves one user without an owner and
// lists one as terminated, the stored directory without --directory, exit 3
// with --fail-on-exceptions, the three formats and the metrics push.
func TestReconcileThroughTheBinary(t *testing.T) {
	t.Parallel()
	pushes := make(chan string, 8)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		pushes <- r.Method + " " + r.URL.Path + "\n" + string(b)
	}))
	defer gw.Close()
	ds := msadstest.Generate(31, 2, 6)
	// Every generated domain is ours: the findings are the directory's.
	e := newEnv(t, ds, "reconcile:\n  allowed_domains: [contoso.com, fabrikam.com, northwind.example, outlook.com, agency.example]\n"+
		"  columns: {email: mail, upn: userPrincipalName, employee_id: employeeId, status: accountEnabled}\n"+
		"metrics:\n  pushgateway_url: "+gw.URL+"\n")

	// Nothing synced, no directory: nothing to report, exit 0.
	r := e.run("reconcile", "--config", e.config, "--fail-on-exceptions")
	if r.code != 0 || !strings.Contains(r.stdout, "No directory is loaded") || !strings.Contains(r.stdout, "No access exceptions.") {
		t.Fatalf("reconcile on an empty warehouse: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	<-pushes // the first push: checked below
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	<-pushes // run's own

	users := slices.Clone(e.ds.Users)
	slices.SortFunc(users, func(a, b msads.User) int { return int(a.ID - b.ID) })
	orphan, leaver := users[0], users[1]
	for _, u := range users[1:] {
		if u.LifecycleStatus == "Active" {
			leaver = u // still active here: the directory says gone
			break
		}
	}
	var rows [][]string
	for i, u := range users {
		switch u.ID {
		case orphan.ID:
			continue
		case leaver.ID:
			rows = append(rows, []string{fmt.Sprint("E", i), strings.ToUpper(u.Email), "", "False"})
		default:
			rows = append(rows, []string{fmt.Sprint("E", i), u.Email, "", "True"})
		}
	}
	write := func(name string, rows [][]string) string {
		p := filepath.Join(e.dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := csv.NewWriter(f)
		_ = w.Write([]string{"employeeId", "mail", "userPrincipalName", "accountEnabled"})
		_ = w.WriteAll(rows)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// A file with one person twice: exit 1 naming both lines, nothing loaded.
	bad := write("bad.csv", append(slices.Clone(rows), rows[0]))
	r = e.run("reconcile", "--config", e.config, "--directory", bad)
	if want := fmt.Sprintf("line %d: repeats the person of line 2", len(rows)+2); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("duplicate person: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
	}
	if n := e.queryInt("SELECT count(*) FROM S.directory_people"); n != 0 {
		t.Errorf("a bad file loaded %d people", n)
	}

	good := write("people.csv", rows)
	r = e.run("reconcile", "--config", e.config, "--directory", good)
	if r.code != 0 {
		t.Fatalf("reconcile --directory: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("Loaded %s: %d people (+%d added", good, len(rows), len(rows)),
		"no_owner  ", fmt.Sprintf("user %d ", orphan.ID),
		"terminated  ", fmt.Sprintf("user %d ", leaver.ID), "(False), none active",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("reconcile output lacks %q:\n%s", want, r.stdout)
		}
	}
	push := <-pushes
	if !strings.HasPrefix(push, "POST /metrics/job/syncer/credential/") || !strings.Contains(push, "msads_access_exceptions") {
		t.Errorf("reconcile push: %q", strings.SplitN(push, "\n", 2)[0])
	}

	// The stored directory, --fail-on-exceptions: exit 3.
	r = e.run("reconcile", "--config", e.config, "--fail-on-exceptions")
	if r.code != 3 || !strings.Contains(r.stdout, fmt.Sprintf("Directory: %d people, loaded", len(rows))) {
		t.Errorf("--fail-on-exceptions: exit %d, want 3\n%s", r.code, r.stdout)
	}
	viewRows := e.queryInt("SELECT count(*) FROM S.access_exceptions")

	r = e.run("reconcile", "--config", e.config, "--format", "json")
	var doc struct {
		Directory *struct {
			People int    `json:"people"`
			Source string `json:"source"`
		} `json:"directory"`
		Counts     map[string]int `json:"counts"`
		Exceptions []struct {
			Kind   string `json:"kind"`
			UserID string `json:"user_id"`
			Reason string `json:"reason"`
		} `json:"exceptions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 {
		t.Fatalf("--format json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if doc.Directory == nil || doc.Directory.People != len(rows) || len(doc.Exceptions) != viewRows || doc.Counts["terminated"] == 0 ||
		doc.Counts["no_owner"] == 0 || doc.Counts["dormant_link"] != 0 {
		t.Errorf("--format json: directory %+v, counts %v, %d exceptions (the view has %d)", doc.Directory, doc.Counts, len(doc.Exceptions), viewRows)
	}
	if !strings.Contains(r.stderr, "Directory:") {
		t.Errorf("--format json: the directory note should go to stderr: %q", r.stderr)
	}

	r = e.run("reconcile", "--config", e.config, "--format", "csv", "--customer", fmt.Sprint(e.ds.CustomerIDs()[0]))
	recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || r.code != 0 || len(recs) < 2 {
		t.Fatalf("--format csv: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if got := strings.Join(recs[0], ","); got != "kind,customer_id,customer_name,user_id,user_name,invitation_id,link_type,client_entity_id,managing_customer_id,email,reason" {
		t.Errorf("csv header %s", got)
	}
	for _, rec := range recs[1:] {
		if rec[1] != fmt.Sprint(e.ds.CustomerIDs()[0]) {
			t.Errorf("--customer did not filter: %v", rec)
		}
	}
}
