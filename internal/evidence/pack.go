package evidence

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/report"
)

// Options describe the pack to write.
type Options struct {
	Dir    string // must not exist, or be empty
	AsOf   time.Time
	Since  time.Time // zero: no review diff
	Schema string
	// Customers are the --customer ids (empty: all); Configured and
	// Discover the configuration's customers.
	Customers  []int64
	Configured []int64
	Discover   bool
	// MaxAge: a customer whose complete sync finished longer than this
	// before as_of is a gap.
	MaxAge    time.Duration
	AllowGaps bool
	Tool      Tool
	// SigningKey, when set, signs manifest.json (manifest.sig).
	SigningKey ed25519.PrivateKey
	// Now is the generation time; time.Now when nil.
	Now func() time.Time
}

// UnknownCommit is the manifest's tool commit when the binary carries
// none (built without VCS stamping and without -X ...cli.Commit).
const UnknownCommit = "unknown (the binary was built without its commit)"

// notVisible is how the job words the failure of a configured customer
// the signed-in user cannot see (package job, invisibleCustomer).
const notVisible = "is not visible to the signed-in user"

// Write writes the pack of ev into o.Dir and returns its manifest. The
// pack is written whole even when it has gaps or failed checks: they are
// in the manifest (see Manifest.Gaps and FailedChecks) for the caller to
// act on.
func Write(ev *load.Evidence, o Options) (*Manifest, error) {
	if err := emptyDir(o.Dir); err != nil {
		return nil, err
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	tool := o.Tool
	if tool.Commit == "" {
		tool.Commit = UnknownCommit
	}
	m := &Manifest{
		Format:      FormatVersion,
		Tool:        tool,
		GeneratedAt: now().UTC().Format(TimeFormat),
		AsOf:        o.AsOf.UTC().Format(TimeFormat),
		Database: Database{
			Name: ev.Source.Database, ServerVersion: ev.Source.ServerVersion, Schema: o.Schema,
			SchemaVersion: ev.Source.SchemaVersion, Transaction: "one read-only REPEATABLE READ transaction",
			SnapshotAt: ev.Source.SnapshotAt.UTC().Format(TimeFormat),
		},
		Scope:   Scope{Customers: nonNil(o.Customers), MaxAge: o.MaxAge.String(), AllowGaps: o.AllowGaps},
		Gaps:    []Gap{},
		Files:   []File{},
		Checks:  []Check{},
		LeftOut: []LeftOut{},
		Notes: []string{
			"Times are when a sync observed the state (history valid_from), not when it changed in Microsoft Advertising.",
			"Customer and account names are as last synced: the warehouse keeps no history of names.",
			"Counts per customer are keyed by customer id; a CSV's rows exclude its header.",
		},
	}
	if !o.Since.IsZero() {
		m.Since = o.Since.UTC().Format(TimeFormat)
	}
	m.Customers, m.Gaps, m.Credential = customers(ev.Syncs, o)

	params := []string{"$1 = " + m.AsOf, "$2 = " + arrayLiteral(ev.Query.Customers)}
	var sheets []sheet
	for _, p := range ev.Populations {
		if p.Missing != "" {
			m.LeftOut = append(m.LeftOut, LeftOut{Population: p.Name, Reason: p.Missing})
			continue
		}
		f, err := writeCSV(o.Dir, p.Name+".csv", p.Columns, p.Rows)
		if err != nil {
			return nil, err
		}
		f.Population, f.SQL, f.Parameters, f.AsOf = p.Name, p.SQL, params, p.AsOf
		m.Files = append(m.Files, f)
		count := countCheck(p, f)
		count.Parameters = params
		m.Checks = append(m.Checks, count, writtenCheck(p.Name, len(p.Rows), *f.Rows))
		sheets = append(sheets, sheet{name: p.Name, title: p.Title, columns: p.Columns, rows: p.Rows})
	}
	for _, c := range sourceChecks(ev) {
		c.Parameters = []string{"$1 = " + m.AsOf, "$2 = " + arrayLiteral(ev.Query.Customers), "$3 = " + arrayLiteral(ev.Query.Expected)}
		m.Checks = append(m.Checks, c)
	}
	if !o.Since.IsZero() {
		cols, rows := DiffRows(ev.Changes)
		f, err := writeCSV(o.Dir, DiffFile, cols, rows)
		if err != nil {
			return nil, err
		}
		var sqls []string
		for _, cs := range load.ChangeSets {
			sqls = append(sqls, cs.SQL)
		}
		f.Population, f.SQL = "review_diff", strings.Join(sqls, ";\n\n")
		f.Parameters = []string{"$1 = " + m.Since, "$2 = " + m.AsOf, "$3 = " + arrayLiteral(ev.Query.Customers)}
		f.AsOf = "changes observed after since and up to as_of"
		m.Files = append(m.Files, f)
		m.Checks = append(m.Checks, writtenCheck("review_diff", len(rows), *f.Rows))
		sheets = append(sheets, sheet{name: "review_diff", title: "Changes since " + m.Since, columns: cols, rows: rows})
	}
	for _, p := range ev.Populations {
		if p.Missing == "" {
			m.Notes = append(m.Notes, p.Name+": "+p.AsOf+".")
		}
	}
	if extra := unsynced(ev); len(extra) > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("Rows of customers %v come only through other customers' syncs "+
			"(a user's roles in customers not synced themselves, a link's client customer): no sync of their own vouches for them.", extra))
	}

	changed := 0
	f, err := writeFile(o.Dir, WorkbookFile, "xlsx", func(w io.Writer) error { return writeWorkbook(w, m, sheets, &changed) })
	if err != nil {
		return nil, err
	}
	m.Files = append(m.Files, f)
	if changed > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("%s: %d text cells differ from the CSV files' because a workbook cannot hold them "+
			"(longer than %d characters: cut, with a marker; control characters: replaced by U+FFFD); the CSV files hold them whole.",
			WorkbookFile, changed, maxCellUnits))
	}
	// The summary shows the checks and files above; it cannot list its own
	// hash, which only the manifest holds.
	f, err = writeFile(o.Dir, SummaryFile, "html", func(w io.Writer) error { return writeSummary(w, m, ev) })
	if err != nil {
		return nil, err
	}
	m.Files = append(m.Files, f)

	if o.SigningKey != nil {
		m.Signature = signatureFor(o.SigningKey)
	}
	raw, err := m.Encode()
	if err != nil {
		return nil, err
	}
	if _, err := writeFile(o.Dir, ManifestFile, "json", func(w io.Writer) error { _, err := w.Write(raw); return err }); err != nil {
		return nil, err
	}
	if o.SigningKey != nil {
		sig := base64.StdEncoding.EncodeToString(ed25519.Sign(o.SigningKey, raw)) + "\n"
		if _, err := writeFile(o.Dir, SignatureFile, "sig", func(w io.Writer) error { _, err := io.WriteString(w, sig); return err }); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// A pack lists every user's name and email: its folder and files are not
// readable by other users of the machine (the umask may remove more).
const (
	dirMode  os.FileMode = 0o750
	fileMode os.FileMode = 0o640
)

// emptyDir creates dir, or accepts it when it exists and is empty: a pack
// never mixes with other files (Verify refuses extra files).
func emptyDir(dir string) error {
	if dir == "" {
		return errors.New("no output folder (--out)")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("output folder %s: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("output folder %s is not empty: give a new or empty folder (a pack holds only its own files)", dir)
	}
	return nil
}

// writeFile writes one file of the pack, then reads it back for its size
// and SHA-256 (the bytes on disk, not those meant to be written).
func writeFile(dir, name, format string, write func(io.Writer) error) (File, error) {
	path := filepath.Join(dir, name)
	// O_EXCL: never write through a file (or a link) that appeared in the
	// folder meanwhile.
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return File{}, fmt.Errorf("write %s: %w", name, err)
	}
	if err := write(fh); err != nil {
		_ = fh.Close()
		return File{}, fmt.Errorf("write %s: %w", name, err)
	}
	if err := fh.Close(); err != nil {
		return File{}, fmt.Errorf("write %s: %w", name, err)
	}
	sum, size, err := hashFile(path)
	if err != nil {
		return File{}, err
	}
	return File{Name: name, Format: format, Bytes: size, SHA256: sum}, nil
}

func hashFile(path string) (sum string, size int64, err error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	h := sha256.New()
	size, err = io.Copy(h, fh)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	return hex.EncodeToString(h.Sum(nil)), size, nil
}

// writeCSVRecords writes a header and rows as RFC 4180 CSV (CRLF, quoted
// as needed), each value as Cell writes it.
func writeCSVRecords(w io.Writer, columns []string, rows [][]any) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write(columns); err != nil {
		return err
	}
	rec := make([]string, len(columns))
	for _, r := range rows {
		for i, v := range r {
			rec[i] = Cell(v)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// writeCSV writes rows as an RFC 4180 CSV (CRLF, quoted as needed), then
// parses the file back to count its rows per customer: what the manifest
// records is what is on disk.
func writeCSV(dir, name string, columns []string, rows [][]any) (File, error) {
	f, err := writeFile(dir, name, "csv", func(w io.Writer) error { return writeCSVRecords(w, columns, rows) })
	if err != nil {
		return f, err
	}
	n, per, err := countCSV(filepath.Join(dir, name))
	if err != nil {
		return f, err
	}
	f.Rows, f.RowsPerCustomer = &n, per
	return f, nil
}

// countCSV counts a CSV's data rows, in all and per value of its
// customer_id column (when it has one).
func countCSV(path string) (int, map[string]int, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer fh.Close()
	r := csv.NewReader(fh)
	header, err := r.Read()
	if err != nil {
		return 0, nil, fmt.Errorf("%s: no header: %w", filepath.Base(path), err)
	}
	col := slices.Index(header, "customer_id")
	n := 0
	var per map[string]int
	if col >= 0 {
		per = map[string]int{}
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		n++
		if col >= 0 {
			per[rec[col]]++
		}
	}
	return n, per, nil
}

// countCheck compares a population's rows per customer, as written, with
// its independent count (load.Population.CheckSQL).
func countCheck(p load.PopulationRows, f File) Check {
	c := Check{
		Name:        p.Name + "_count",
		Description: fmt.Sprintf("%s: rows per customer in %s equal a second count straight from the base tables", p.Title, f.Name),
		SQL:         p.CheckSQL,
		Expected:    map[string]int64{},
		Actual:      map[string]int64{},
	}
	for id, n := range p.Check {
		key := strconv.FormatInt(id, 10)
		if id == 0 {
			key = "" // the customer is not known: an empty customer_id cell
		}
		c.Expected[key] = n
	}
	for id, n := range f.RowsPerCustomer {
		c.Actual[id] = int64(n)
	}
	return judge(c)
}

// writtenCheck compares the rows read from the database with the rows
// parsed back from the file written.
func writtenCheck(name string, read, written int) Check {
	return judge(Check{
		Name:        name + "_written",
		Description: fmt.Sprintf("%s: every row read from the database is in the file (parsed back after writing)", name),
		Expected:    map[string]int64{"rows": int64(read)},
		Actual:      map[string]int64{"rows": int64(written)},
	})
}

// sourceChecks compare, per customer with a complete sync, the users and
// pending invitations in the pack with the numbers that sync's API calls
// listed (customer_syncs.users_seen, invitations_seen).
func sourceChecks(ev *load.Evidence) []Check {
	var out []Check
	for _, s := range []struct{ pop, col, what string }{
		{"users", "users_seen", "users"},
		{"invitations", "invitations_seen", "pending invitations"},
	} {
		var rows map[int64]int64
		for _, p := range ev.Populations {
			if p.Name == s.pop && p.Missing == "" {
				rows = map[int64]int64{}
				for _, r := range p.Rows {
					if id, ok := r[0].(int64); ok {
						rows[id]++
					}
				}
			}
		}
		if rows == nil {
			continue
		}
		c := Check{
			Name: s.pop + "_listed_by_sync",
			Description: fmt.Sprintf("per customer, the %s in the pack are as many as the supplying sync listed from the API (customer_syncs.%s)",
				s.what, s.col),
			SQL:      load.SyncsSQL,
			Expected: map[string]int64{},
			Actual:   map[string]int64{},
		}
		for _, sy := range ev.Syncs {
			seen := sy.UsersSeen
			if s.pop == "invitations" {
				seen = sy.InvitationsSeen
			}
			if sy.RunID == 0 || seen == nil {
				continue
			}
			id := strconv.FormatInt(sy.CustomerID, 10)
			c.Expected[id], c.Actual[id] = *seen, rows[sy.CustomerID]
		}
		out = append(out, judge(c))
	}
	return out
}

// judge sets a check's result: every key of both maps equal (a missing
// key counts 0), with the totals in Detail.
func judge(c Check) Check {
	c.Result = Pass
	var te, ta int64
	var bad []string
	keys := map[string]bool{}
	for k := range c.Expected {
		keys[k] = true
	}
	for k := range c.Actual {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)
	for _, k := range sorted {
		e, a := c.Expected[k], c.Actual[k]
		te += e
		ta += a
		if e != a {
			bad = append(bad, fmt.Sprintf("%s: expected %d, got %d", k, e, a))
		}
	}
	c.Detail = fmt.Sprintf("total expected %d, got %d", te, ta)
	if len(bad) > 0 {
		c.Result = Fail
		c.Detail += "; " + strings.Join(bad, "; ")
	}
	return c
}

// invisible reports whether the credential of the customer's last sync
// attempt could not see it: from the run's recorded visible customers when
// it has them, else from the attempt's error.
func invisible(s load.CustomerSync) bool {
	if s.LastRunID == 0 {
		return false
	}
	visible := s.LastVisible
	if s.LastRunID == s.RunID && visible == nil {
		visible = s.Visible
	}
	if visible != nil {
		_, found := slices.BinarySearch(visible, s.CustomerID)
		return !found
	}
	return strings.Contains(s.LastError, notVisible)
}

// customers describes each customer's supplying sync, finds the gaps and
// whom the data was read as.
func customers(syncs []load.CustomerSync, o Options) ([]Customer, []Gap, Credential) {
	out := []Customer{}
	gaps := []Gap{}
	cred := Credential{Principals: []Principal{}, Configured: nonNil(o.Configured), Discover: o.Discover,
		Synced: []int64{}, NotVisible: []int64{}, NotSynced: []int64{}}
	for _, s := range syncs {
		c := Customer{CustomerID: s.CustomerID, Name: s.CustomerName, RunID: s.RunID, Status: s.Status, RunStatus: s.RunStatus}
		if s.LastRunID != 0 && s.LastRunID != s.RunID {
			c.LastAttemptRunID, c.LastAttemptStatus, c.LastAttemptError = s.LastRunID, s.LastStatus, s.LastError
		}
		if invisible(s) {
			cred.NotVisible = append(cred.NotVisible, s.CustomerID)
		}
		if s.RunID == 0 {
			reason := "no complete sync at or before as_of"
			if s.LastError != "" {
				reason += "; last attempt: " + s.LastError
			}
			gaps = append(gaps, Gap{CustomerID: s.CustomerID, Reason: reason})
			if slices.Contains(o.Configured, s.CustomerID) {
				cred.NotSynced = append(cred.NotSynced, s.CustomerID)
			}
			out = append(out, c)
			continue
		}
		age := o.AsOf.Sub(s.FinishedAt)
		c.CompletedAt = s.FinishedAt.UTC().Format(TimeFormat)
		c.AgeAtAsOf = report.Age(age)
		c.ReadAs = principalName(s.PrincipalUserID, s.PrincipalUserName)
		c.CompleteAtAsOf = o.MaxAge <= 0 || age <= o.MaxAge
		if !c.CompleteAtAsOf {
			gaps = append(gaps, Gap{CustomerID: s.CustomerID,
				Reason: fmt.Sprintf("last complete sync (run %d) finished %s before as_of, more than max_age %s", s.RunID, report.Age(age), report.Age(o.MaxAge))})
		}
		cred.Synced = append(cred.Synced, s.CustomerID)
		i := slices.IndexFunc(cred.Principals, func(p Principal) bool {
			return p.UserID == s.PrincipalUserID && p.UserName == s.PrincipalUserName
		})
		if i < 0 {
			cred.Principals = append(cred.Principals, Principal{UserID: s.PrincipalUserID, UserName: s.PrincipalUserName, Runs: []int64{}, Customers: []int64{}})
			i = len(cred.Principals) - 1
		}
		p := &cred.Principals[i]
		if !slices.Contains(p.Runs, s.RunID) {
			p.Runs = append(p.Runs, s.RunID)
			slices.Sort(p.Runs)
		}
		p.Customers = append(p.Customers, s.CustomerID)
		if s.Visible != nil {
			p.Visible = slices.Compact(slices.Sorted(slices.Values(append(p.Visible, s.Visible...))))
		}
		out = append(out, c)
	}
	if len(syncs) == 0 {
		gaps = append(gaps, Gap{Reason: "no customer had a sync at or before as_of"})
	}
	slices.SortFunc(cred.Principals, func(a, b Principal) int { return cmp.Compare(a.UserID, b.UserID) })
	return out, gaps, cred
}

// unsynced returns the customers that rows of the populations name but
// that had no sync of their own, sorted.
func unsynced(ev *load.Evidence) []int64 {
	synced := map[int64]bool{}
	for _, s := range ev.Syncs {
		synced[s.CustomerID] = true
	}
	seen := map[int64]bool{}
	var out []int64
	for _, p := range ev.Populations {
		for _, r := range p.Rows {
			if id, ok := r[0].(int64); ok && !synced[id] && !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	return out
}

func principalName(id int64, name string) string {
	switch {
	case id == 0 && name == "":
		return "unknown (the run could not look up its signed-in user)"
	case name == "":
		return fmt.Sprintf("user %d", id)
	}
	return fmt.Sprintf("%s (user %d)", name, id)
}

// arrayLiteral writes ids as a PostgreSQL array literal.
func arrayLiteral(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return "'{" + strings.Join(parts, ",") + "}'::bigint[]"
}

func nonNil(ids []int64) []int64 {
	if ids == nil {
		return []int64{}
	}
	return slices.Clone(ids)
}
