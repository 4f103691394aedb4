package cli

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/msads-syncer/syncer/internal/invite"
	"github.com/msads-syncer/syncer/internal/report"
)

// cmdInvitations lists the stale pending invitations (pending longer than
// --older-than, default invitations.stale_after, or expired but still
// listed) per customer, optionally announces them to the webhook, and with
// --fail-on-stale exits ExitStale when there are any.
func cmdInvitations(args []string, io IO) int {
	var c common
	fs := newFlagSet("invitations", io, &c)
	c.addDryRun(fs, "with --notify: post nothing to the webhook")
	c.addCustomer(fs)
	olderThan := durationFlag(fs, "older-than", "list invitations sent longer ago than `DURATION`, e.g. 72h or 7d (default invitations.stale_after)")
	format := fs.String("format", "table", "output `format`: table, json or csv")
	failOnStale := fs.Bool("fail-on-stale", false, "exit 3 when any stale invitation is listed, and exit 1 when a customer has no complete sync within invitations.max_data_age")
	notify := fs.Bool("notify", false, "post the stale invitations not announced within invitations.stale_after to invitations.webhook_url")
	if code, done := parse(fs, args); done {
		return code
	}
	switch *format {
	case "table", "json", "csv":
	default:
		fmt.Fprintf(io.Stderr, "syncer invitations: --format must be table, json or csv, got %q\n", *format)
		return ExitUsage
	}
	if *olderThan < 0 {
		fmt.Fprintln(io.Stderr, "syncer invitations: --older-than must not be negative")
		return ExitUsage
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	if *notify && cfg.Invitations.WebhookURL.Value() == "" {
		return fail(io, errors.New("--notify: invitations.webhook_url is not set in the configuration"))
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	ctx, cancel := commandContext(io, 10*time.Minute, logger)
	defer cancel()

	// A read-mostly command: it does not migrate; a schema that was never
	// migrated gets a clear error below.
	pool, err := openDB(ctx, cfg, logger, false)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	schema := cfg.Database.Schema
	threshold := cmp.Or(*olderThan, cfg.Invitations.StaleAfter.D())
	invs, err := invite.Stale(ctx, pool, schema, threshold, c.customers)
	if err != nil {
		return fail(io, schemaError(schema, err))
	}

	switch *format {
	case "json":
		err = writeInvitationsJSON(io.Stdout, invs, threshold)
	case "csv":
		err = writeInvitationsCSV(io.Stdout, invs)
	default:
		err = writeInvitationsTable(io.Stdout, invs, threshold)
	}
	if err != nil {
		return fail(io, fmt.Errorf("write output: %w", err))
	}

	if *notify {
		if c.dryRun {
			fmt.Fprintln(io.Stderr, "syncer: dry run: nothing posted to the webhook")
		} else {
			n := &invite.Notifier{
				URL:       cfg.Invitations.WebhookURL.Value(),
				Logger:    logger,
				Customers: c.customers,
				Period:    cfg.Invitations.StaleAfter.D(),
			}
			res, err := n.Notify(ctx, pool, schema, threshold, time.Now())
			switch {
			case res.Skipped:
				fmt.Fprintln(io.Stderr, "syncer: another process is announcing stale invitations for this schema; nothing posted")
			case res.Messages > 0 || res.Failed > 0 || err == nil:
				fmt.Fprintf(io.Stderr, "syncer: announced %d stale invitations in %d webhook messages (%d failed; invitations announced within %s are not repeated)\n",
					res.Announced, res.Messages, res.Failed, report.Age(n.Period))
			}
			if err != nil {
				return fail(io, fmt.Errorf("notify: %w", schemaError(schema, err)))
			}
		}
	}
	if *failOnStale {
		// An empty list proves nothing when the data is old or missing.
		ids := c.customers
		if len(ids) == 0 && !cfg.Customers.Discover {
			ids = cfg.Customers.IDs
		}
		gaps, err := invite.DataGaps(ctx, pool, schema, ids, cfg.Invitations.MaxDataAge.D(), time.Now())
		if err != nil {
			return fail(io, schemaError(schema, err))
		}
		if len(gaps) > 0 {
			return fail(io, dataStaleError(gaps, cfg.Invitations.MaxDataAge.D()))
		}
		if len(invs) > 0 {
			return ExitStale
		}
	}
	return ExitOK
}

// dataStaleError names the customers whose data is too old to trust.
func dataStaleError(gaps []invite.DataGap, maxAge time.Duration) error {
	parts := make([]string, 0, len(gaps))
	for _, g := range gaps {
		if g.CustomerID == 0 {
			parts = append(parts, "the warehouse has no synced customer")
			continue
		}
		parts = append(parts, g.String())
	}
	return fmt.Errorf("data is stale: %s (invitations.max_data_age is %s): run `syncer run` and check its errors",
		strings.Join(parts, "; "), report.Age(maxAge))
}

// schemaError explains an error caused by a schema that was never migrated.
func schemaError(schema string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case pgerrcode.UndefinedFunction, pgerrcode.UndefinedTable, pgerrcode.InvalidSchemaName:
			return fmt.Errorf("schema %q has no syncer tables yet: run `syncer migrate` or `syncer run` first: %w", schema, err)
		}
	}
	return err
}

func writeInvitationsTable(w io.Writer, invs []invite.Invitation, threshold time.Duration) error {
	if len(invs) == 0 {
		_, err := fmt.Fprintf(w, "No stale invitations: none sent more than %s ago, none expired.\n", report.Age(threshold))
		return err
	}
	fmt.Fprintf(w, "%d stale invitations: sent more than %s ago (estimated from the expiration date), or expired but still listed.\n"+
		"Anyone who holds an invitation link can accept it; cancel those not needed in the Microsoft Advertising web UI.\n",
		len(invs), report.Age(threshold))
	for _, group := range invite.ByCustomer(invs) {
		c := group[0]
		name := ""
		if c.CustomerName != "" {
			name = " (" + c.CustomerName + ")"
		}
		fmt.Fprintf(w, "\nCustomer %d%s: %d stale\n", c.CustomerID, name, len(group))
		t := report.NewTable("invitation", "email", "role", "accounts", "first seen", "age", "sent about", "expires", "expired")
		for _, inv := range group {
			t.Row(inv.InvitationID, inv.Email, inv.RoleName, inv.AccountIDs, inv.FirstSeenAt, inv.Age,
				dateOnly(inv.EstimatedSentAt), dateOnly(inv.ExpirationDate), inv.Expired)
		}
		if err := t.Write(w); err != nil {
			return err
		}
	}
	return nil
}

func dateOnly(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.DateOnly)
}

// invitationsJSON is the --format json document.
type invitationsJSON struct {
	OlderThan        string                  `json:"older_than"`
	OlderThanSeconds int64                   `json:"older_than_seconds"`
	Stale            int                     `json:"stale"`
	Customers        []customerInvitationsJS `json:"customers"`
}

type customerInvitationsJS struct {
	CustomerID   string                     `json:"customer_id"`
	CustomerName string                     `json:"customer_name"`
	Invitations  []invite.MessageInvitation `json:"invitations"`
}

func writeInvitationsJSON(w io.Writer, invs []invite.Invitation, threshold time.Duration) error {
	doc := invitationsJSON{
		OlderThan:        threshold.String(),
		OlderThanSeconds: int64(threshold / time.Second),
		Stale:            len(invs),
		Customers:        []customerInvitationsJS{},
	}
	for _, group := range invite.ByCustomer(invs) {
		c := customerInvitationsJS{CustomerID: strconv.FormatInt(group[0].CustomerID, 10), CustomerName: group[0].CustomerName}
		for _, inv := range group {
			c.Invitations = append(c.Invitations, inv.JSON())
		}
		doc.Customers = append(doc.Customers, c)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// invitationsCSVHeader is the --format csv header. account_ids is
// space-separated, or "all" for every account of the customer.
var invitationsCSVHeader = []string{
	"customer_id", "customer_name", "invitation_id", "email", "role_id", "role_name", "account_ids",
	"first_seen_at", "age_seconds", "estimated_sent_at", "expiration_date", "expired",
}

func writeInvitationsCSV(w io.Writer, invs []invite.Invitation) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(invitationsCSVHeader); err != nil {
		return err
	}
	rfc := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, inv := range invs {
		accounts := "all"
		if inv.AccountIDs != nil {
			parts := make([]string, len(inv.AccountIDs))
			for i, id := range inv.AccountIDs {
				parts[i] = strconv.FormatInt(id, 10)
			}
			accounts = strings.Join(parts, " ")
		}
		first := inv.FirstSeenAt
		if err := cw.Write([]string{
			strconv.FormatInt(inv.CustomerID, 10), inv.CustomerName, strconv.FormatInt(inv.InvitationID, 10),
			inv.Email, strconv.Itoa(int(inv.RoleID)), inv.RoleName, accounts,
			rfc(&first), strconv.FormatInt(int64(inv.Age/time.Second), 10),
			rfc(inv.EstimatedSentAt), rfc(inv.ExpirationDate), strconv.FormatBool(inv.Expired),
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
