package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgcluster"
	"github.com/msads-syncer/syncer/internal/report"
)

// cmdDemo runs the whole job with no account: the API simulator with a
// realistic data set and a throwaway PostgreSQL (or $DATABASE_URL), a real
// sync through the same code path as `run`, a second sync after some changes
// in the simulated account, then the access-review reports.
func cmdDemo(args []string, io IO) int {
	var c common
	fs := newBareFlagSet("demo", io)
	c.addLogFlags(fs)
	keep := fs.Bool("keep", false, "leave the throwaway PostgreSQL running after the demo and print the psql command to explore it")
	if code, done := parse(fs, args); done {
		return code
	}
	format, level := "text", "warn"
	if c.logFormat != "" {
		format = c.logFormat
	}
	if c.logLevel != "" {
		level = c.logLevel
	}
	logOut, prog := newProgress(io.Stderr, format)
	logger := newLogger(logOut, format, level)
	ctx, stop, cancel := signalContexts(io, 10*time.Second, logger)
	defer cancel()

	out := io.Stdout
	kept := false // set when the demo got to its end: only then is --keep honoured
	dbURL := io.Getenv("DATABASE_URL")
	schema := "msads_demo"
	if dbURL == "" {
		fmt.Fprintln(out, "Starting a throwaway PostgreSQL cluster...")
		cluster, err := pgcluster.Start(ctx, logger)
		if err != nil {
			return fail(io, fmt.Errorf("start PostgreSQL: %w (or set DATABASE_URL to use an existing server)", err))
		}
		dbURL = cluster.URL()
		schema = "msads"
		defer func() {
			if *keep && kept {
				stopCmd, err := cluster.Keep()
				if err == nil {
					fmt.Fprintf(out, "\nThe warehouse is still running. Explore it with:\n\n  psql %q -c 'SET search_path = %s' -c '%s'\n"+
						"  (or: psql %q, then SET search_path = %s;)\n\nStop and remove it with:\n\n  %s\n",
						dbURL, schema, load.ExploreSQL, dbURL, schema, stopCmd)
					return
				}
				fmt.Fprintf(io.Stderr, "syncer: --keep: %v; removing the cluster\n", err)
			}
			_ = cluster.Stop()
		}()
	} else {
		fmt.Fprintf(out, "Using $DATABASE_URL, schema %s.\n", schema)
	}

	sim := msadstest.NewServer(msadstest.DemoDataset())
	defer sim.Close()
	fmt.Fprintf(out, "Started the Microsoft Advertising API simulator at %s\n\n", sim.APIURL())

	cfg := &config.Config{
		Database: config.Database{URL: config.Secret(dbURL), Schema: schema},
		MicrosoftAds: config.MicrosoftAds{
			APIURL:            sim.APIURL(),
			TokenURL:          sim.TokenURL(),
			DeveloperToken:    config.Secret(sim.DeveloperToken()),
			ClientID:          sim.ClientID(),
			ClientSecret:      config.Secret(sim.ClientSecret()),
			RefreshToken:      config.Secret(sim.RefreshToken()),
			RequestsPerSecond: 50,
		},
		Customers: config.Customers{Discover: true},
		Reconcile: demoReconcileConfig(),
		Log:       config.Log{Format: format, Level: level},
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return fail(io, err)
	}
	pool, err := openDB(ctx, cfg, logger, true)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	m := newMetrics(cfg)
	runner, err := newRunner(cfg, newStore(pool, cfg, false, logger), m, logger)
	if err != nil {
		return fail(io, err)
	}
	setup := runSetup{cfg: cfg, pool: pool, runner: runner, metrics: m, logger: logger, io: io, progress: prog,
		opts: job.Options{Stop: stop}}

	fmt.Fprintln(out, "== Sync 1: first load (syncer run, discovering every customer) ==")
	if code := executeRun(ctx, setup); code != ExitOK {
		return code
	}
	if err := printRuns(ctx, out, pool, schema); err != nil {
		return fail(io, err)
	}
	firstSync := time.Now().UTC().Truncate(time.Microsecond) // the review diff below starts here

	changed := demoChanges(sim)
	fmt.Fprintf(out, "\nMeanwhile in Microsoft Advertising: %s\n\n", changed)
	fmt.Fprintln(out, "== Sync 2: the same job again ==")
	if code := executeRun(ctx, setup); code != ExitOK {
		return code
	}
	if err := printRuns(ctx, out, pool, schema); err != nil {
		return fail(io, err)
	}
	for _, r := range load.AccessReviewReports(cfg.Invitations.StaleAfter.D()) {
		fmt.Fprintf(out, "\n== %s ==\n%s\n", r.Title, sqlComment(r.SQL))
		if err := queryTable(ctx, out, pool, schema, r); err != nil {
			return fail(io, fmt.Errorf("%s: %w", r.Title, err))
		}
	}
	fmt.Fprintln(out, "\n== Reconciliation with the company directory (syncer reconcile, view access_exceptions) ==")
	if err := demoReconcile(ctx, out, setup, sim.Dataset()); err != nil {
		return fail(io, fmt.Errorf("reconcile: %w", err))
	}
	fmt.Fprintln(out, "\n== Evidence for the auditor: an access review pack (syncer evidence) ==")
	packDir := ""
	if *keep {
		if packDir, err = os.MkdirTemp("", "syncer-demo-evidence-"); err != nil {
			return fail(io, err)
		}
	}
	if err := demoEvidence(ctx, out, setup, firstSync, packDir); err != nil {
		return fail(io, fmt.Errorf("evidence: %w", err))
	}
	fmt.Fprintf(out, "\nThe warehouse is schema %q; every query above works as it is in psql.\n", schema)
	if !*keep {
		fmt.Fprintln(out, "Run `make demo ARGS=--keep` (or `syncer demo --keep`) to keep the warehouse running and explore it with psql.")
	}
	kept = true
	return ExitOK
}

// demoChanges makes the kind of changes an access review looks for in the
// simulated account: someone leaves, someone's access widens, an invitation
// is accepted, a new one is sent. It returns what it did.
func demoChanges(sim *msadstest.Server) string {
	ds := sim.Dataset()
	cust := ds.CustomerIDs()[0]
	var did []string
	if listed := ds.ListedUserIDs(cust); len(listed) > 1 {
		sim.RemoveUser(cust, listed[0])
		did = append(did, fmt.Sprintf("user %d left customer %d", listed[0], cust))
		promoted := listed[1]
		var roles []msads.Role
		for _, r := range ds.Roles {
			if r.UserID == promoted {
				if r.CustomerID == cust {
					r.RoleID, r.AccountIDs = msads.RoleSuperAdmin, nil
				}
				roles = append(roles, r)
			}
		}
		sim.SetRoles(promoted, roles)
		did = append(did, fmt.Sprintf("user %d became Super Admin of every account of customer %d", promoted, cust))
	}
	// Two users read fine in sync 1 turn odd: the warehouse keeps their
	// details and roles, and says why they could not be read.
	if listed := ds.ListedUserIDs(cust); len(listed) > 2 {
		sim.SetUserFault(listed[2], 0, msadstest.UserFault{Code: 106})
		did = append(did, fmt.Sprintf("user %d can no longer be read by the signed-in user (106)", listed[2]))
	}
	if ids := ds.CustomerIDs(); len(ids) > 1 {
		if listed := ds.ListedUserIDs(ids[1]); len(listed) > 2 {
			sim.DeleteUserKeepListing(ids[1], listed[2])
			did = append(did, fmt.Sprintf("user %d was deleted but customer %d still lists it", listed[2], ids[1]))
		}
	}
	for _, inv := range ds.Invitations {
		if inv.CustomerID == cust && inv.ExpirationDate != nil && inv.ExpirationDate.After(time.Now()) {
			sim.AcceptInvitation(inv.ID)
			did = append(did, fmt.Sprintf("%s accepted invitation %d", inv.Email, inv.ID))
			break
		}
	}
	// The pending agency request is accepted and becomes Active; the
	// Administrative agency starts to unlink.
	links := ds.Links
	for i := range links {
		switch links[i].ManagingCustomerID {
		case msadstest.DemoAgencyPending:
			links[i].Status = "Active"
			did = append(did, fmt.Sprintf("%s's pending link to %s became Active", links[i].ManagingCustomerName, links[i].ClientEntityName))
		case msadstest.DemoAgencyAdmin:
			links[i].Status = "UnlinkRequested"
			did = append(did, fmt.Sprintf("%s asked to unlink from %s", links[i].ManagingCustomerName, links[i].ClientEntityName))
		}
	}
	sim.SetLinks(links)
	id := sim.AddInvitation(msads.Invitation{CustomerID: cust, Email: "agency.freelancer@outlook.example", FirstName: "Agency",
		LastName: "Freelancer", RoleID: msads.RoleStandardUser, Lcid: "EnglishUS"})
	did = append(did, fmt.Sprintf("a new invitation %d was sent to agency.freelancer@outlook.example", id))
	return strings.Join(did, "; ") + "."
}

// sqlComment prints a query as an SQL comment, one line per line.
func sqlComment(sql string) string {
	var b strings.Builder
	for i, line := range strings.Split(sql, "\n") {
		if i > 0 {
			b.WriteString("\n")
		}
		line = strings.TrimSpace(line)
		if i > 0 {
			line = "  " + line
		}
		b.WriteString("-- " + line)
	}
	return b.String()
}

// printRuns prints the runs recorded so far.
func printRuns(ctx context.Context, w io.Writer, pool *pgxpool.Pool, schema string) error {
	return queryTable(ctx, w, pool, schema, load.RunsReport)
}

// queryTable runs the report (load owns its SQL) and prints the rows.
func queryTable(ctx context.Context, w io.Writer, pool *pgxpool.Pool, schema string, r load.Report) error {
	headers, rows, err := load.QueryReport(ctx, pool, schema, r)
	if err != nil {
		return err
	}
	t := report.NewTable(headers...)
	for _, vals := range rows {
		for i, v := range vals {
			vals[i] = plainValue(v)
		}
		t.Row(vals...)
	}
	return t.Write(w)
}

// plainValue turns pgx's numeric, interval and array values into ones the
// table prints readably.
func plainValue(v any) any {
	switch x := v.(type) {
	case pgtype.Numeric:
		if f, err := x.Float64Value(); err == nil && f.Valid {
			return strconv.FormatFloat(f.Float64, 'f', -1, 64)
		}
		return nil
	case pgtype.Interval:
		if !x.Valid {
			return nil
		}
		return time.Duration(x.Microseconds)*time.Microsecond + time.Duration(x.Days)*24*time.Hour + time.Duration(x.Months)*30*24*time.Hour
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = report.Cell(plainValue(e))
		}
		return strings.Join(parts, ",")
	}
	return v
}
