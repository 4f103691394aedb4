package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/directory"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/report"
)

// ExitExceptions is the exit code of `reconcile --fail-on-exceptions` when
// any access exception is found: the same code as stale invitations, "the
// data is fine, what it shows is not".
const ExitExceptions = ExitStale

// cmdReconcile loads the company directory (--directory) and lists the
// access exceptions (view access_exceptions); without --directory it
// reports from the stored directory. Every call writes the reconcile rules
// of the config to the warehouse, which the view reads.
func cmdReconcile(args []string, io IO) int {
	var c common
	fs := newFlagSet("reconcile", io, &c)
	c.addDryRun(fs, "load the directory and list the exceptions it would give, then roll back: write nothing")
	c.addCustomer(fs)
	dirPath := fs.String("directory", "", "load the company directory from this CSV `FILE` (columns: reconcile.columns) before listing")
	format := fs.String("format", "table", "output `format`: table, json or csv")
	failOn := fs.Bool("fail-on-exceptions", false, "exit 3 when any access exception is listed")
	allowMass := fs.Bool("allow-mass-removal", false, "let the directory remove more than sync.removal_guard of the people stored")
	if code, done := parse(fs, args); done {
		return code
	}
	switch *format {
	case "table", "json", "csv":
	default:
		fmt.Fprintf(io.Stderr, "syncer reconcile: --format must be table, json or csv, got %q\n", *format)
		return ExitUsage
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)

	// The file first: a bad file is an error before anything is touched.
	var dir *directory.Directory
	if *dirPath != "" {
		if dir, err = directory.ReadFile(*dirPath, directoryColumns(cfg)); err != nil {
			return fail(io, err)
		}
	}
	ctx, cancel := commandContext(io, 10*time.Minute, logger)
	defer cancel()
	pool, err := openDB(ctx, cfg, logger, !c.dryRun)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	store := newStore(pool, cfg, *allowMass, logger)
	res, err := store.Reconcile(ctx, load.ReconcileOptions{Settings: reconcileSettings(cfg), Directory: dir, DryRun: c.dryRun})
	if err != nil {
		return fail(io, schemaError(cfg.Database.Schema, err))
	}
	if c.dryRun && dir != nil && res.Directory != nil {
		// The load was rolled back: its id names no directory_loads row.
		res.Directory.LoadID = 0
	}
	exceptions := res.Exceptions
	if len(c.customers) > 0 {
		exceptions = slices.DeleteFunc(slices.Clone(exceptions), func(e load.AccessException) bool {
			return !slices.Contains(c.customers, e.CustomerID)
		})
	}

	// What was loaded, and what the findings lack, to stderr when stdout
	// is for a program.
	notes := io.Stdout
	if *format != "table" {
		notes = io.Stderr
	}
	printDirectoryNote(notes, res.Directory, dir, c.dryRun)
	switch *format {
	case "json":
		err = writeExceptionsJSON(io.Stdout, res.Directory, exceptions)
	case "csv":
		err = writeExceptionsCSV(io.Stdout, exceptions)
	default:
		err = writeExceptionsTable(io.Stdout, exceptions)
	}
	if err != nil {
		return fail(io, fmt.Errorf("write output: %w", err))
	}

	if url := cfg.Metrics.PushgatewayURL; url != "" && !c.dryRun {
		m := newMetrics(cfg)
		setExceptionGauges(m, cfg, res.Exceptions)
		if err := m.PushAccessExceptions(ctx, url, pushGroup(cfg), nil); err != nil {
			logger.ErrorContext(ctx, "metrics push failed", "error", err)
		}
	}
	if *failOn && len(exceptions) > 0 {
		return ExitExceptions
	}
	return ExitOK
}

// directoryColumns maps reconcile.columns onto the CSV reader's columns.
func directoryColumns(cfg *config.Config) []directory.Column {
	var out []directory.Column
	for _, c := range cfg.DirectoryColumns() {
		out = append(out, directory.Column{Field: c.Field, Header: c.Header, Key: c.Key, Line: c.Line, Required: c.Required})
	}
	return out
}

// reconcileSettings are the rules of the config that access_exceptions
// applies (reconcile.*, invitations.stale_after).
func reconcileSettings(cfg *config.Config) load.ReconcileSettings {
	r := cfg.Reconcile.Rules()
	return load.ReconcileSettings{AllowedDomains: r.AllowedDomains, DomainAliases: r.DomainAliases,
		ApprovedAgencies: r.ApprovedAgencies, ActiveStatuses: r.ActiveStatuses, StaleAfter: cfg.Invitations.StaleAfter.D()}
}

// setExceptionGauges sets msads_access_exceptions from the exceptions: every
// kind at 0 for the configured customers and those with findings.
func setExceptionGauges(m *metrics.Metrics, cfg *config.Config, es []load.AccessException) {
	customers := slices.Clone(cfg.Customers.IDs)
	type key struct {
		kind string
		id   int64
	}
	n := map[key]int{}
	var keys []key
	for _, e := range es {
		k := key{e.Kind, e.CustomerID}
		if n[k] == 0 {
			keys = append(keys, k)
			customers = append(customers, e.CustomerID)
		}
		n[k]++
	}
	counts := make([]metrics.ExceptionCount, 0, len(keys))
	for _, k := range keys {
		counts = append(counts, metrics.ExceptionCount{Kind: k.kind, CustomerID: k.id, N: n[k]})
	}
	slices.Sort(customers)
	customers = slices.DeleteFunc(slices.Compact(customers), func(id int64) bool { return id == 0 })
	m.SetAccessExceptions(load.ExceptionKinds, customers, counts)
}

// refreshExceptions writes the config's reconcile rules and, with gauges,
// refreshes msads_access_exceptions from the warehouse (after every sync,
// and at serve's start). Without, access_exceptions is not read: planning
// its view is most of the cost (8–18 ms a new session).
func refreshExceptions(ctx context.Context, s runSetup, gauges bool) error {
	store := newStore(s.pool, s.cfg, false, s.logger)
	res, err := store.Reconcile(ctx, load.ReconcileOptions{Settings: reconcileSettings(s.cfg), SkipExceptions: !gauges})
	if err != nil {
		return err
	}
	if gauges {
		setExceptionGauges(s.metrics, s.cfg, res.Exceptions)
	}
	return nil
}

// printDirectoryNote says which directory the findings are against.
func printDirectoryNote(w io.Writer, latest *load.DirectoryLoad, loaded *directory.Directory, dryRun bool) {
	switch {
	case latest == nil:
		fmt.Fprintln(w, "No directory is loaded: no_owner and terminated need one (syncer reconcile --directory FILE).")
	case loaded != nil:
		verb := "Loaded"
		if dryRun {
			verb = "Dry run: would load"
		}
		ch := latest.Changes
		fmt.Fprintf(w, "%s %s: %d people (+%d added, ~%d changed, -%d removed, ^%d back)",
			verb, latest.Source, latest.People, ch.Added, ch.Changed, ch.Removed, ch.Reappeared)
		if latest.LoadID != 0 {
			fmt.Fprintf(w, "; directory load %d", latest.LoadID)
		}
		fmt.Fprintln(w, ".")
		if !loaded.Has(directory.FieldStatus) {
			fmt.Fprintln(w, "Note: the file has no status column (reconcile.columns.status): everyone counts as active, so nobody shows as terminated.")
		}
	default:
		fmt.Fprintf(w, "Directory: %d people, loaded %s from %s (directory load %d).\n",
			latest.Current, report.Cell(latest.LoadedAt), latest.Source, latest.LoadID)
	}
}

// exceptionSubject names what an exception is about: the user, the
// invitation or the link.
func exceptionSubject(e load.AccessException) string {
	switch {
	case e.UserID != 0:
		return fmt.Sprintf("user %d", e.UserID)
	case e.InvitationID != 0:
		return fmt.Sprintf("invitation %d", e.InvitationID)
	case e.LinkType != "":
		return fmt.Sprintf("%s %d ← %d", e.LinkType, e.ClientEntityID, e.ManagingCustomerID)
	}
	return ""
}

func writeExceptionsTable(w io.Writer, es []load.AccessException) error {
	if len(es) == 0 {
		_, err := fmt.Fprintln(w, "No access exceptions.")
		return err
	}
	n := map[string]int{}
	for _, e := range es {
		n[e.Kind]++
	}
	var parts []string
	for _, k := range load.ExceptionKinds {
		if n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[k], k))
		}
	}
	fmt.Fprintf(w, "%d access exceptions: %s.\n", len(es), strings.Join(parts, ", "))
	t := report.NewTable("kind", "customer", "subject", "email", "reason")
	for _, e := range es {
		cust := strconv.FormatInt(e.CustomerID, 10)
		if e.CustomerName != "" {
			cust += " " + e.CustomerName
		}
		email := e.Email
		if email == "" {
			email = e.UserName
		}
		t.Row(e.Kind, cust, exceptionSubject(e), email, e.Reason)
	}
	return t.Write(w)
}

// exceptionJSON is one exception in --format json: ids as strings (they
// exceed JavaScript's exact integers), absent ids omitted.
type exceptionJSON struct {
	Kind               string `json:"kind"`
	CustomerID         string `json:"customer_id"`
	CustomerName       string `json:"customer_name,omitempty"`
	UserID             string `json:"user_id,omitempty"`
	UserName           string `json:"user_name,omitempty"`
	InvitationID       string `json:"invitation_id,omitempty"`
	LinkType           string `json:"link_type,omitempty"`
	ClientEntityID     string `json:"client_entity_id,omitempty"`
	ManagingCustomerID string `json:"managing_customer_id,omitempty"`
	Email              string `json:"email,omitempty"`
	Reason             string `json:"reason"`
}

type directoryJSON struct {
	LoadID   string    `json:"load_id,omitempty"` // none for a --dry-run load (rolled back)
	LoadedAt time.Time `json:"loaded_at"`
	Source   string    `json:"source"`
	SHA256   string    `json:"sha256"`
	People   int       `json:"people"`
}

func idString(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

func writeExceptionsJSON(w io.Writer, latest *load.DirectoryLoad, es []load.AccessException) error {
	doc := struct {
		Directory  *directoryJSON  `json:"directory"`
		Counts     map[string]int  `json:"counts"`
		Exceptions []exceptionJSON `json:"exceptions"`
	}{Counts: map[string]int{}, Exceptions: []exceptionJSON{}}
	if latest != nil {
		doc.Directory = &directoryJSON{LoadID: idString(latest.LoadID), LoadedAt: latest.LoadedAt.UTC(), Source: latest.Source,
			SHA256: latest.SHA256, People: latest.Current}
	}
	for _, k := range load.ExceptionKinds {
		doc.Counts[k] = 0
	}
	for _, e := range es {
		doc.Counts[e.Kind]++
		doc.Exceptions = append(doc.Exceptions, exceptionJSON{Kind: e.Kind, CustomerID: strconv.FormatInt(e.CustomerID, 10),
			CustomerName: e.CustomerName, UserID: idString(e.UserID), UserName: e.UserName, InvitationID: idString(e.InvitationID),
			LinkType: e.LinkType, ClientEntityID: idString(e.ClientEntityID), ManagingCustomerID: idString(e.ManagingCustomerID),
			Email: e.Email, Reason: e.Reason})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// exceptionsCSVHeader is the --format csv header: the view's columns and
// the customer's name.
var exceptionsCSVHeader = []string{"kind", "customer_id", "customer_name", "user_id", "user_name", "invitation_id",
	"link_type", "client_entity_id", "managing_customer_id", "email", "reason"}

func writeExceptionsCSV(w io.Writer, es []load.AccessException) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(exceptionsCSVHeader); err != nil {
		return err
	}
	for _, e := range es {
		if err := cw.Write([]string{e.Kind, strconv.FormatInt(e.CustomerID, 10), csvText(e.CustomerName), idString(e.UserID),
			csvText(e.UserName), idString(e.InvitationID), e.LinkType, idString(e.ClientEntityID), idString(e.ManagingCustomerID),
			csvText(e.Email), csvText(e.Reason)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvText keeps a text cell from being read as a formula by a spreadsheet
// (CSV injection): a cell starting with =, +, -, @, a tab or a carriage
// return gets a leading apostrophe. Names and emails come from the API and
// the directory, which anyone inviting a user can write into.
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
