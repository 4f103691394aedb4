package evidence

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/xuri/excelize/v2"
	"golang.org/x/net/html"

	"github.com/msads-syncer/syncer/internal/load"
)

var (
	asOf  = time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)
	since = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func i64(n int64) *int64 { return &n }

// population returns the registry's population of that name.
func population(name string) load.Population {
	for _, p := range load.Populations {
		if p.Name == name {
			return p
		}
	}
	panic(name)
}

// sample is a read with two customers: 10 synced a day before as_of, 20
// only long before.
func sample() *load.Evidence {
	pops := []load.PopulationRows{
		{Population: population("users"), Columns: []string{"customer_id", "user_id", "user_name", "version_from"},
			Rows: [][]any{
				{int64(10), int64(1), "ann", asOf.Add(-48 * time.Hour)},
				{int64(10), int64(2), "=HYPERLINK(\"http://x\")", asOf.Add(-48 * time.Hour)},
				{int64(20), int64(3), "line\nbreak, \"quoted\"", asOf.Add(-48 * time.Hour)},
			},
			Check: map[int64]int64{10: 2, 20: 1}},
		{Population: population("role_grants"), Columns: []string{"customer_id", "user_id", "role_name", "account_id"},
			Rows: [][]any{
				{int64(10), int64(1), "Super Admin", nil},
				{int64(10), int64(2), "Viewer", int64(7)},
				{int64(10), int64(2), "Viewer", int64(8)},
			},
			Check: map[int64]int64{10: 3}},
		{Population: population("invitations"), Columns: []string{"customer_id", "invitation_id", "email"},
			Rows: [][]any{{int64(10), int64(900), "@evil.example"}}, Check: map[int64]int64{10: 1}},
		{Population: population("privileged_access"), Columns: []string{"customer_id", "grantee_kind", "grantee_id", "grantee_name", "role_or_permission"},
			Rows: [][]any{{int64(10), "user", int64(1), "ann", "Super Admin"}}, Check: map[int64]int64{10: 1}},
		{Population: population("exceptions"), Missing: "access_exceptions does not exist in schema s"},
	}
	return &load.Evidence{
		Source:      load.Source{Database: "warehouse", ServerVersion: "17.2", SnapshotAt: asOf.Add(time.Hour), SchemaVersion: 5},
		Populations: pops,
		Syncs: []load.CustomerSync{
			{CustomerID: 10, CustomerName: "Contoso", RunID: 7, FinishedAt: asOf.Add(-24 * time.Hour), Status: "succeeded",
				RunStatus: "succeeded", PrincipalUserID: 55, PrincipalUserName: "reader@example.com", UsersSeen: i64(2), InvitationsSeen: i64(1)},
			{CustomerID: 20, CustomerName: "Fabrikam", RunID: 3, FinishedAt: asOf.Add(-30 * 24 * time.Hour), Status: "succeeded",
				RunStatus: "partial", PrincipalUserID: 55, PrincipalUserName: "reader@example.com", UsersSeen: i64(1), InvitationsSeen: i64(0),
				LastRunID: 7, LastStatus: "failed", LastError: "customer 20 is not visible to the signed-in user reader@example.com (55)"},
		},
		Changes: []load.Change{
			{Entity: "grant", CustomerID: 10, EntityID: "2/100", UserID: 2, Subject: "bob", At: since.Add(24 * time.Hour), RunID: 5,
				Change: load.ChangeRemoved, Before: map[string]any{"role_name": "Viewer", "account_ids": []any{float64(7)}}, Net: load.NetUnchanged},
			{Entity: "grant", CustomerID: 10, EntityID: "2/100", UserID: 2, Subject: "bob", At: since.Add(48 * time.Hour), RunID: 6,
				Change: load.ChangeReappeared, After: map[string]any{"role_name": "Viewer", "account_ids": []any{float64(7)}}, Net: load.NetUnchanged},
			{Entity: "user", CustomerID: 10, EntityID: "3", UserID: 3, Subject: "+cmd", At: since.Add(72 * time.Hour), RunID: 6,
				Change: load.ChangeAdded, After: map[string]any{"email": "c@example.com"}, Net: load.NetAdded},
		},
	}
}

func writeSample(t *testing.T, o Options) (string, *Manifest) {
	t.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "pack")
	}
	o.AsOf = asOf
	o.Schema = "msads"
	o.Tool = Tool{Name: "syncer", Version: "test", Commit: "abc"}
	o.Now = func() time.Time { return asOf.Add(2 * time.Hour) }
	if o.MaxAge == 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	m, err := Write(sample(), o)
	if err != nil {
		t.Fatal(err)
	}
	return o.Dir, m
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("\r\n")) {
		t.Errorf("%s: no CRLF line ends", path)
	}
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// CSV cells: formula-looking text is escaped, quotes and line breaks are
// quoted (RFC 4180), times are UTC ISO 8601, NULL is empty.
func TestCSVCells(t *testing.T) {
	t.Parallel()
	dir, _ := writeSample(t, Options{})
	users := readCSV(t, filepath.Join(dir, "users.csv"))
	want := [][]string{
		{"customer_id", "user_id", "user_name", "version_from"},
		{"10", "1", "ann", "2026-03-29T00:00:00Z"},
		{"10", "2", `'=HYPERLINK("http://x")`, "2026-03-29T00:00:00Z"},
		{"20", "3", "line\nbreak, \"quoted\"", "2026-03-29T00:00:00Z"},
	}
	if !slices.EqualFunc(users, want, slices.Equal) {
		t.Errorf("users.csv:\n got %q\nwant %q", users, want)
	}
	if got := readCSV(t, filepath.Join(dir, "invitations.csv"))[1][2]; got != "'@evil.example" {
		t.Errorf("invitation email cell %q, want it escaped", got)
	}
	if got := readCSV(t, filepath.Join(dir, "role_grants.csv"))[1][3]; got != "" {
		t.Errorf("NULL account cell %q, want empty", got)
	}
	for in, want := range map[string]string{"-1+1": "'-1+1", "+x": "'+x", "\tx": "'\tx", "a=b": "a=b", "": "", "@": "'@"} {
		if got := Safe(in); got != want {
			t.Errorf("Safe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Time{
		"2026-03-31":                asOf,
		"2026-03-31T02:00:00+02:00": asOf,
		"2026-03-31T00:00:00.5Z":    asOf.Add(500 * time.Millisecond),
	} {
		got, err := ParseTime("as-of", in)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "31/03/2026", "2026-13-01", "yesterday"} {
		if _, err := ParseTime("as-of", in); err == nil || !strings.Contains(err.Error(), "--as-of") {
			t.Errorf("ParseTime(%q): error %v, want one naming --as-of", in, err)
		}
	}
}

// The manifest records each file's SQL, rows and hash, the supplying
// syncs, whom the data was read as, the gaps and the checks.
func TestManifest(t *testing.T) {
	t.Parallel()
	dir, m := writeSample(t, Options{Configured: []int64{10, 20}, Since: since})
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := m.Encode()
	if !bytes.Equal(raw, again) {
		t.Error("manifest.json is not the manifest's canonical encoding")
	}
	if bytes.Contains(raw, []byte(`\u003c`)) {
		t.Error("manifest.json escapes < in SQL")
	}
	names := m.Names()
	want := []string{"access_review.xlsx", "invitations.csv", "privileged_access.csv", "review_diff.csv", "role_grants.csv", "summary.html", "users.csv"}
	if !slices.Equal(names, want) {
		t.Errorf("files %v, want %v", names, want)
	}
	for _, f := range m.Files {
		if f.Format == "csv" && (f.SQL == "" || f.Rows == nil || len(f.SHA256) != 64) {
			t.Errorf("%s: incomplete entry %+v", f.Name, f)
		}
	}
	if f := m.Files[0]; f.Name != "users.csv" || *f.Rows != 3 || f.RowsPerCustomer["10"] != 2 || f.SQL != load.Populations[0].SQL ||
		!slices.Equal(f.Parameters, []string{"$1 = 2026-03-31T00:00:00Z", "$2 = '{}'::bigint[]"}) {
		t.Errorf("users.csv entry: %+v", f)
	}
	if len(m.LeftOut) != 1 || m.LeftOut[0].Population != "exceptions" {
		t.Errorf("left out: %+v", m.LeftOut)
	}
	// Customer 20's data is 30 days old: over the 7-day max age.
	if len(m.Gaps) != 1 || m.Gaps[0].CustomerID != 20 || !strings.Contains(m.Gaps[0].Reason, "max_age") {
		t.Errorf("gaps: %+v", m.Gaps)
	}
	if c := m.Customers[0]; c.RunID != 7 || !c.CompleteAtAsOf || c.CompletedAt != "2026-03-30T00:00:00Z" || c.ReadAs != "reader@example.com (user 55)" {
		t.Errorf("customer 10: %+v", c)
	}
	if c := m.Customers[1]; c.CompleteAtAsOf || c.LastAttemptRunID != 7 || c.LastAttemptStatus != "failed" {
		t.Errorf("customer 20: %+v", c)
	}
	cr := m.Credential
	if len(cr.Principals) != 1 || cr.Principals[0].UserID != 55 || !slices.Equal(cr.Principals[0].Runs, []int64{3, 7}) ||
		!slices.Equal(cr.NotVisible, []int64{20}) || !slices.Equal(cr.Synced, []int64{10, 20}) || !slices.Equal(cr.Configured, []int64{10, 20}) {
		t.Errorf("credential: %+v", cr)
	}
	results := map[string]string{}
	for _, c := range m.Checks {
		results[c.Name] = c.Result
	}
	wantChecks := map[string]string{
		"users_count": Pass, "users_written": Pass, "role_grants_count": Pass, "role_grants_written": Pass,
		"invitations_count": Pass, "invitations_written": Pass, "privileged_access_count": Pass, "privileged_access_written": Pass,
		"users_listed_by_sync": Pass, "invitations_listed_by_sync": Pass, "review_diff_written": Pass,
	}
	for k, w := range wantChecks {
		if results[k] != w {
			t.Errorf("check %s: %q, want %q", k, results[k], w)
		}
	}
	if len(results) != len(wantChecks) {
		t.Errorf("checks %v", results)
	}
	diff := readCSV(t, filepath.Join(dir, DiffFile))
	if len(diff) != 4 || diff[1][2] != "removed" || diff[2][2] != "reappeared" || diff[1][9] != "unchanged" || diff[3][6] != "'+cmd" {
		t.Errorf("review_diff.csv: %q", diff)
	}
}

// A check fails when the file's rows per customer differ from the second
// count or from what the sync listed.
func TestChecksFail(t *testing.T) {
	t.Parallel()
	ev := sample()
	ev.Populations[1].Check[10] = 4 // one grant more in the base tables than in the file
	ev.Syncs[0].UsersSeen = i64(3)  // the API listed three users
	m, err := Write(ev, Options{Dir: filepath.Join(t.TempDir(), "p"), AsOf: asOf, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, c := range m.FailedChecks() {
		failed = append(failed, c.Name+": "+c.Detail)
	}
	want := []string{
		"role_grants_count: total expected 4, got 3; 10: expected 4, got 3",
		"users_listed_by_sync: total expected 4, got 3; 10: expected 3, got 2",
	}
	if !slices.Equal(failed, want) {
		t.Errorf("failed checks:\n got %q\nwant %q", failed, want)
	}
	// Both customers are gaps at a one-hour max age.
	if len(m.Gaps) != 2 {
		t.Errorf("gaps %+v", m.Gaps)
	}
}

func TestOutputFolderMustBeEmpty(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(sample(), Options{Dir: dir, AsOf: asOf}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty folder: %v", err)
	}
}

// verify passes on a fresh pack and fails, naming the file, after one byte
// of one CSV changes, a file goes missing, or one is added.
func TestVerifyTamper(t *testing.T) {
	t.Parallel()
	dir, _ := writeSample(t, Options{})
	if v := Verify(dir, nil); !v.Intact {
		t.Fatalf("fresh pack not intact: %+v", v.Findings)
	}
	check := func(what, wantFile string) {
		t.Helper()
		v := Verify(dir, nil)
		if v.Intact {
			t.Errorf("%s: verify says intact", what)
		}
		var bad []string
		for _, f := range v.Findings {
			if !f.OK {
				bad = append(bad, f.Text)
			}
		}
		if len(bad) != 1 || !strings.HasPrefix(bad[0], wantFile+":") {
			t.Errorf("%s: findings %q, want one naming %s", what, bad, wantFile)
		}
	}
	path := filepath.Join(dir, "role_grants.csv")
	orig, _ := os.ReadFile(path)
	b := bytes.Clone(orig)
	i := bytes.Index(b, []byte("Viewer"))
	b[i] = 'v'
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	check("one byte changed", "role_grants.csv")
	_ = os.WriteFile(path, orig, 0o644)

	aside := filepath.Join(t.TempDir(), "aside.csv")
	_ = os.Rename(path, aside)
	check("a file missing", "role_grants.csv")
	_ = os.Rename(aside, path)
	_ = os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	check("an extra file", "notes.txt")
	_ = os.Remove(filepath.Join(dir, "notes.txt"))
	if v := Verify(dir, nil); !v.Intact {
		t.Errorf("restored pack not intact: %+v", v.Findings)
	}
}

// A signed pack verifies with the embedded key and with the right
// --public-key; a wrong key, a changed manifest, or a missing signature
// fail.
func TestSignature(t *testing.T) {
	t.Parallel()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	dir, m := writeSample(t, Options{SigningKey: priv})
	if m.Signature == nil || m.Signature.PublicKey != base64.StdEncoding.EncodeToString(pub) {
		t.Fatalf("signature block %+v", m.Signature)
	}
	v := Verify(dir, nil)
	if !v.Intact || !strings.Contains(strings.Join(v.Notes, " "), "not who signed it") {
		t.Errorf("embedded key: intact %v, notes %q", v.Intact, v.Notes)
	}
	if v := Verify(dir, pub); !v.Intact {
		t.Errorf("right key: %+v", v.Findings)
	}
	if v := Verify(dir, otherPub); v.Intact {
		t.Error("wrong key: intact")
	}
	// A manifest changed after signing (say, a hash made to match a
	// changed file) no longer verifies.
	mp := filepath.Join(dir, ManifestFile)
	raw, _ := os.ReadFile(mp)
	_ = os.WriteFile(mp, bytes.Replace(raw, []byte(`"as_of": "2026`), []byte(`"as_of": "2025`), 1), 0o644)
	if v := Verify(dir, nil); v.Intact {
		t.Error("changed manifest: intact")
	}
	_ = os.WriteFile(mp, raw, 0o644)
	_ = os.Remove(filepath.Join(dir, SignatureFile))
	if v := Verify(dir, nil); v.Intact {
		t.Error("signature removed from a signed pack: intact")
	}
	// An unsigned pack fails when a key is required.
	unsigned, _ := writeSample(t, Options{})
	if v := Verify(unsigned, pub); v.Intact {
		t.Error("unsigned pack with --public-key: intact")
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	for name, text := range map[string]string{
		"pem": pemText, "seed": base64.StdEncoding.EncodeToString(priv.Seed()), "full": base64.StdEncoding.EncodeToString(priv),
	} {
		k, err := ParseSigningKey(text)
		if err != nil || !k.Equal(priv) {
			t.Errorf("%s: %v", name, err)
		}
	}
	pder, _ := x509.MarshalPKIXPublicKey(pub)
	for name, text := range map[string]string{
		"pem": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder})), "raw": base64.StdEncoding.EncodeToString(pub),
	} {
		k, err := ParsePublicKey(text)
		if err != nil || !k.Equal(pub) {
			t.Errorf("public %s: %v", name, err)
		}
	}
	secret := base64.StdEncoding.EncodeToString(priv.Seed()[:20])
	if _, err := ParseSigningKey(secret); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("short key: %v", err)
	}
}

// The workbook has a sheet per population with a frozen header and a
// filter, and the CSV's cells.
func TestWorkbook(t *testing.T) {
	t.Parallel()
	dir, _ := writeSample(t, Options{Since: since})
	f, err := excelize.OpenFile(filepath.Join(dir, WorkbookFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := []string{"about", "users", "role_grants", "invitations", "privileged_access", "review_diff"}
	if got := f.GetSheetList(); !slices.Equal(got, want) {
		t.Errorf("sheets %v, want %v", got, want)
	}
	rows, err := f.GetRows("users")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || rows[2][2] != `'=HYPERLINK("http://x")` || rows[0][0] != "customer_id" {
		t.Errorf("users sheet: %q", rows)
	}
	panes, err := f.GetPanes("users")
	if err != nil || !panes.Freeze || panes.YSplit != 1 {
		t.Errorf("users panes: %+v %v", panes, err)
	}
	if dn, err := f.GetDefinedName(), error(nil); err != nil || !slices.ContainsFunc(dn, func(d excelize.DefinedName) bool {
		return d.Name == "_xlnm._FilterDatabase" && d.Scope == "users" && strings.Contains(d.RefersTo, "$A$1:$D$4")
	}) {
		t.Errorf("users filter: %+v", dn)
	}
}

// summary.html is one self-contained page with the expected sections and
// numbers (parsed, not grepped).
func TestSummaryHTML(t *testing.T) {
	t.Parallel()
	dir, m := writeSample(t, Options{Since: since})
	raw, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]*html.Node{}
	var forbidden []string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			if id := attr(n, "id"); id != "" {
				ids[id] = n
			}
			switch n.Data {
			case "script", "link", "img", "iframe", "object":
				forbidden = append(forbidden, n.Data)
			}
			for _, a := range n.Attr {
				if a.Key == "src" || a.Key == "href" || strings.HasPrefix(a.Key, "on") {
					forbidden = append(forbidden, n.Data+"@"+a.Key)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if len(forbidden) > 0 {
		t.Errorf("not self-contained: %v", forbidden)
	}
	for _, s := range []string{"overview", "counts", "gaps", "privileged", "exceptions", "diff", "checks", "notes"} {
		if n := ids[s]; n == nil || n.Data != "section" {
			t.Errorf("section %q missing", s)
		}
	}
	if got := text(ids["as-of"]); got != m.AsOf {
		t.Errorf("as of %q", got)
	}
	// Counts: customer 10 has 2 users, 3 grants, 1 invitation, 1
	// privileged; the totals row adds customer 20's user.
	rows := map[string][]string{}
	for _, tr := range find(ids["counts"], "tr") {
		cells := []string{}
		for _, td := range find(tr, "td") {
			cells = append(cells, text(td))
		}
		if c := attr(tr, "data-customer"); c != "" {
			rows[c] = cells
		}
		if attr(tr, "id") == "totals" {
			rows["total"] = cells
		}
	}
	if got := rows["10"]; len(got) != 7 || !slices.Equal(got[3:], []string{"2", "3", "1", "1"}) || got[1] != "Contoso" {
		t.Errorf("customer 10 counts %q", got)
	}
	if got := rows["total"]; !slices.Equal(got, []string{"3", "3", "1", "1"}) {
		t.Errorf("totals %q", got)
	}
	if got := text(ids["checks-result"]); got != "all 11 checks passed" {
		t.Errorf("checks result %q", got)
	}
	if got := text(ids["gaps-result"]); got != "1 customers without complete data" {
		t.Errorf("gaps result %q", got)
	}
	if got := text(ids["diff-total"]); got != "3" {
		t.Errorf("diff total %q", got)
	}
	checkRows := 0
	for _, tr := range find(ids["checks"], "tr") {
		if attr(tr, "data-check") != "" {
			checkRows++
			if tds := find(tr, "td"); text(tds[1]) != "pass" {
				t.Errorf("check %s: %s", text(tds[0]), text(tds[1]))
			}
		}
	}
	if checkRows != len(m.Checks) {
		t.Errorf("%d check rows, manifest has %d", checkRows, len(m.Checks))
	}
	if !strings.Contains(text(ids["privileged"]), "Super Admin") {
		t.Errorf("privileged section: %q", text(ids["privileged"]))
	}
	if !strings.Contains(text(ids["exceptions"]), "Not available") {
		t.Errorf("exceptions section: %q", text(ids["exceptions"]))
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func find(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	if n == nil {
		return nil
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode && c.Data == tag {
			out = append(out, c)
		}
		out = append(out, find(c, tag)...)
	}
	return out
}

func text(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// The review diff in each format.
func TestWriteDiffFormats(t *testing.T) {
	t.Parallel()
	ch := sample().Changes
	var b bytes.Buffer
	if err := WriteDiff(&b, "json", since, asOf, ch); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Changes []struct{ Change, Net, Kind string } `json:"changes"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil || len(doc.Changes) != 3 || doc.Changes[0].Change != "removed" || doc.Changes[1].Net != "unchanged" {
		t.Errorf("json: %v %s", err, b.String())
	}
	b.Reset()
	if err := WriteDiff(&b, "markdown", since, asOf, ch); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); len(lines) != 7 || !strings.Contains(lines[4], "| Viewer on account 7 |") || !strings.Contains(lines[6], "| +cmd |") {
		t.Errorf("markdown:\n%s", b.String())
	}
	b.Reset()
	if err := WriteDiff(&b, "table", since, asOf, ch); err != nil || !strings.Contains(b.String(), "reappeared") {
		t.Errorf("table: %v\n%s", err, b.String())
	}
	if err := WriteDiff(&b, "yaml", since, asOf, ch); err == nil {
		t.Error("unknown format: no error")
	}
}

// A customer is "not visible" by the run's recorded visible customers when
// the run has them, whatever its error says; by the error otherwise.
func TestInvisible(t *testing.T) {
	t.Parallel()
	const errText = "customer 20 is not visible to the signed-in user reader@example.com (55)"
	for _, c := range []struct {
		name string
		s    load.CustomerSync
		want bool
	}{
		{"recorded, not among them", load.CustomerSync{CustomerID: 20, LastRunID: 7, LastStatus: "failed", LastVisible: []int64{10, 30}}, true},
		{"recorded, among them", load.CustomerSync{CustomerID: 20, LastRunID: 7, LastStatus: "failed", LastError: errText, LastVisible: []int64{10, 20}}, false},
		{"last attempt is the complete sync", load.CustomerSync{CustomerID: 20, RunID: 7, LastRunID: 7, Visible: []int64{20}}, false},
		{"not recorded: the error", load.CustomerSync{CustomerID: 20, LastRunID: 7, LastStatus: "failed", LastError: errText}, true},
		{"not recorded, another error", load.CustomerSync{CustomerID: 20, LastRunID: 7, LastStatus: "failed", LastError: "timeout"}, false},
		{"no attempt", load.CustomerSync{CustomerID: 20}, false},
	} {
		if got := invisible(c.s); got != c.want {
			t.Errorf("%s: invisible = %v, want %v", c.name, got, c.want)
		}
	}
}

// dropRowConsistently deletes users.csv's last row and edits the manifest
// to match (hash, size, rows, rows per customer): a tamper the file hashes
// alone cannot see.
func dropRowConsistently(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, "users.csv")
	recs := readCSV(t, path)
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.UseCRLF = true
	_ = w.WriteAll(recs[:len(recs)-1])
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, size, err := hashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, per, _ := countCSV(path)
	mp := filepath.Join(dir, ManifestFile)
	raw, _ := os.ReadFile(mp)
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for i := range m.Files {
		if m.Files[i].Name == "users.csv" {
			m.Files[i].SHA256, m.Files[i].Bytes, m.Files[i].Rows, m.Files[i].RowsPerCustomer = sum, size, &n, per
		}
	}
	raw, _ = m.Encode()
	if err := os.WriteFile(mp, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A row deleted from a CSV with the manifest's hash and counts edited to
// match: verify judges the recorded checks again on the files' rows (the
// database's counts no longer match), and a signed pack's signature fails.
// An unsigned pack's note says that only a signature proves the manifest.
func TestVerifyConsistentTamper(t *testing.T) {
	t.Parallel()
	dir, _ := writeSample(t, Options{})
	v := Verify(dir, nil)
	if !v.Intact || !strings.Contains(strings.Join(v.Notes, " "), "nothing proves manifest.json itself") {
		t.Fatalf("fresh unsigned pack: intact %v, notes %q", v.Intact, v.Notes)
	}
	dropRowConsistently(t, dir)
	v = Verify(dir, nil)
	var bad []string
	for _, f := range v.Findings {
		if !f.OK {
			bad = append(bad, f.Text)
		}
	}
	if v.Intact || len(bad) == 0 || !strings.Contains(strings.Join(bad, " "), "check users_count: the manifest says pass, the files give fail") {
		t.Errorf("unsigned, consistent tamper: intact %v, findings %q", v.Intact, bad)
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signed, _ := writeSample(t, Options{SigningKey: priv})
	dropRowConsistently(t, signed)
	v = Verify(signed, pub)
	if v.Intact || !slices.ContainsFunc(v.Findings, func(f Finding) bool {
		return !f.OK && strings.HasPrefix(f.Text, SignatureFile+": the signature does not match")
	}) {
		t.Errorf("signed, consistent tamper: intact %v, findings %+v", v.Intact, v.Findings)
	}
}

// Each check records the parameters its SQL ran with; a binary without a
// commit says so rather than leaving the commit empty.
func TestManifestCheckParametersAndCommit(t *testing.T) {
	t.Parallel()
	ev := sample()
	ev.Query = load.EvidenceQuery{AsOf: asOf, Customers: []int64{10, 20}, Expected: []int64{10, 20, 30}}
	m, err := Write(ev, Options{Dir: filepath.Join(t.TempDir(), "p"), AsOf: asOf, Customers: []int64{10, 20}, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if m.Tool.Commit != UnknownCommit {
		t.Errorf("commit %q, want %q", m.Tool.Commit, UnknownCommit)
	}
	want := map[string][]string{
		"users_count":          {"$1 = 2026-03-31T00:00:00Z", "$2 = '{10,20}'::bigint[]"},
		"users_listed_by_sync": {"$1 = 2026-03-31T00:00:00Z", "$2 = '{10,20}'::bigint[]", "$3 = '{10,20,30}'::bigint[]"},
		"users_written":        nil,
	}
	for _, c := range m.Checks {
		if w, ok := want[c.Name]; ok && !slices.Equal(c.Parameters, w) {
			t.Errorf("check %s: parameters %q, want %q", c.Name, c.Parameters, w)
		}
		if c.SQL != "" && len(c.Parameters) == 0 {
			t.Errorf("check %s has SQL but no parameters", c.Name)
		}
	}
}

// A text longer than a workbook cell holds is cut visibly (a marker with
// its length) rather than silently, control characters become U+FFFD,
// and the manifest says how many cells differ from the CSV's, which hold
// the values whole.
func TestWorkbookUnholdableText(t *testing.T) {
	t.Parallel()
	ev := sample()
	long := strings.Repeat("é", 40000)
	ev.Populations[0].Rows[0][2] = long
	ev.Populations[0].Rows[1][2] = "a\x01b"
	dir := filepath.Join(t.TempDir(), "p")
	m, err := Write(ev, Options{Dir: dir, AsOf: asOf})
	if err != nil {
		t.Fatal(err)
	}
	f, err := excelize.OpenFile(filepath.Join(dir, WorkbookFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := f.GetRows("users")
	if err != nil {
		t.Fatal(err)
	}
	cut := rows[1][2]
	if !strings.HasSuffix(cut, " … [cut: 40000 characters; the CSV holds the whole text]") || len(utf16.Encode([]rune(cut))) > 32767 ||
		!strings.HasPrefix(cut, strings.Repeat("é", 30000)) {
		t.Errorf("long cell: %d characters, ends %q", len([]rune(cut)), cut[max(0, len(cut)-80):])
	}
	if rows[2][2] != "a\uFFFDb" {
		t.Errorf("control character cell %q", rows[2][2])
	}
	if csvRows := readCSV(t, filepath.Join(dir, "users.csv")); csvRows[1][2] != long || csvRows[2][2] != "a\x01b" {
		t.Error("the CSV does not hold the values whole")
	}
	if !slices.ContainsFunc(m.Notes, func(n string) bool { return strings.HasPrefix(n, "access_review.xlsx: 2 text cells differ") }) {
		t.Errorf("notes %q", m.Notes)
	}
}

// A pack lists personal data: its folder and files are not readable by
// other users, and a file already there is never written through.
func TestPackPermissions(t *testing.T) {
	t.Parallel()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir, m := writeSample(t, Options{SigningKey: priv, Since: since})
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("folder mode %v: readable by others", st.Mode().Perm())
	}
	names := append(m.Names(), ManifestFile, SignatureFile)
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s mode %v: readable by others", n, st.Mode().Perm())
		}
	}
	if _, err := writeFile(dir, "users.csv", "csv", func(io.Writer) error { return nil }); err == nil {
		t.Error("writeFile over an existing file: no error")
	}
}

// A Markdown diff keeps names from the API as text: HTML is escaped, a
// pipe or a line break does not break the table.
func TestMarkdownDiffEscapes(t *testing.T) {
	t.Parallel()
	ch := []load.Change{{Entity: "user", CustomerID: 10, EntityID: "3", Subject: "<img src=x onerror=alert(1)>|a\nb & c", At: since.Add(time.Hour),
		Change: load.ChangeAdded, After: map[string]any{"email": "c@example.com"}, Net: load.NetAdded}}
	var b bytes.Buffer
	if err := WriteDiff(&b, "markdown", since, asOf, ch); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	last := lines[len(lines)-1]
	if len(lines) != 5 || strings.Contains(last, "<img") || !strings.Contains(last, `| &lt;img src=x onerror=alert(1)&gt;\|a<br>b &amp; c |`) {
		t.Errorf("markdown:\n%s", b.String())
	}
}
