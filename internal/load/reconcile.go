package load

// Reconciliation with the company's directory: the directory load
// (directory_people, replaced per load with history, through the same
// upsert and removal statements as the entity tables), the rules the
// access_exceptions view applies (reconcile_settings) and the read of the
// view.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/directory"
)

// directoryTable: the scope of a directory load is the whole directory
// (a file lists everyone), so its removal removes every current person the
// file does not list; each load is a directory_loads row, whose id the
// history records in load_id.
var directoryTable = &table{Name: "directory_people", History: "directory_people_history", Key: []string{"directory_id"},
	Cols: []string{"email", "upn", "employee_id", "display_name", "status", "manager", "department"},
	Run:  "load_id", scopeWhere: "true"}

// The directory load's statements, rendered once.
var (
	directoryUpsertSQL = render("upsert.sql", directoryTable)
	directoryRemoveSQL = render("remove.sql", removeData{table: directoryTable, Scan: "directory_people t", Where: "true", NotStaged: true})
)

// Kinds of access exception (access_exceptions.kind), in the order they are
// reported.
const (
	ExceptionNoOwner            = "no_owner"
	ExceptionTerminated         = "terminated"
	ExceptionExternalDomain     = "external_domain"
	ExceptionPrivilegedExternal = "privileged_external"
	ExceptionStaleInvitation    = "stale_invitation"
	ExceptionDormantLink        = "dormant_link"
)

// ExceptionKinds lists every kind, in report order.
var ExceptionKinds = []string{ExceptionNoOwner, ExceptionTerminated, ExceptionExternalDomain,
	ExceptionPrivilegedExternal, ExceptionStaleInvitation, ExceptionDormantLink}

// ReconcileSettings are the rules the access_exceptions view applies
// (reconcile_settings), normalized: lower-case domains and statuses.
type ReconcileSettings struct {
	AllowedDomains   []string
	DomainAliases    map[string]string // alias domain -> the domain it stands for
	ApprovedAgencies []int64
	ActiveStatuses   []string
	StaleAfter       time.Duration
}

// AccessException is one row of access_exceptions, with its customer's
// name. Ids are 0 and texts "" where the view has NULL.
type AccessException struct {
	Kind               string
	CustomerID         int64
	CustomerName       string
	UserID             int64
	InvitationID       int64
	LinkType           string
	ClientEntityID     int64
	ManagingCustomerID int64
	Email              string
	UserName           string
	Reason             string
}

// DirectoryLoad describes a load of the directory: the latest one stored,
// or the one a Reconcile call made.
type DirectoryLoad struct {
	LoadID   int64
	LoadedAt time.Time
	Source   string
	SHA256   string
	People   int    // rows in the file
	Current  int    // current directory_people rows
	Changes  Counts // what the load changed
}

// ReconcileOptions say what one Reconcile does.
type ReconcileOptions struct {
	Settings ReconcileSettings
	// Directory, when not nil, replaces the stored directory.
	Directory *directory.Directory
	// DryRun rolls everything back: the exceptions are those the load
	// would give.
	DryRun bool
	// SkipExceptions leaves access_exceptions unread (Result.Exceptions
	// nil): the caller only stores the settings (or the directory).
	SkipExceptions bool
}

// ReconcileResult is what Reconcile found.
type ReconcileResult struct {
	// Directory is the latest load (this call's, when it loaded one); nil
	// when no directory has ever been loaded.
	Directory  *DirectoryLoad
	Exceptions []AccessException
}

// Reconcile writes the settings, loads the directory when one is given, and
// reads access_exceptions (unless Options.SkipExceptions), in one transaction (holding the "directory"
// advisory lock, so loads never interleave): a directory is replaced whole
// or not at all. Settings are written only when they changed. A directory
// that would remove more than Options.RemovalGuard of the current people
// fails with ErrRemovalGuard unless Options.AllowMassRemoval.
func (s *Store) Reconcile(ctx context.Context, o ReconcileOptions) (ReconcileResult, error) {
	var res ReconcileResult
	err := s.inTx(ctx, "directory", !o.DryRun, func(tx pgx.Tx) error {
		res = ReconcileResult{}
		if err := saveSettings(ctx, tx, o.Settings); err != nil {
			return err
		}
		if o.Directory != nil {
			if err := s.loadDirectory(ctx, tx, o.Directory); err != nil {
				return err
			}
		}
		var err error
		if res.Directory, err = latestLoad(ctx, tx); err != nil || o.SkipExceptions {
			return err
		}
		res.Exceptions, err = readExceptions(ctx, tx)
		return err
	})
	if err != nil {
		return ReconcileResult{}, interpret(fmt.Errorf("reconcile: %w", err))
	}
	return res, nil
}

// saveSettings writes reconcile_settings when they differ from the stored
// row.
func saveSettings(ctx context.Context, tx pgx.Tx, st ReconcileSettings) error {
	aliases := st.DomainAliases
	if aliases == nil {
		aliases = map[string]string{}
	}
	js, err := json.Marshal(aliases)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO reconcile_settings AS t (allowed_domains, domain_aliases, approved_agencies, active_statuses, stale_after)
VALUES ($1, $2::jsonb, $3, $4, $5)
ON CONFLICT (singleton) DO UPDATE SET allowed_domains = excluded.allowed_domains, domain_aliases = excluded.domain_aliases,
    approved_agencies = excluded.approved_agencies, active_statuses = excluded.active_statuses, stale_after = excluded.stale_after,
    updated_at = now()
WHERE (t.allowed_domains, t.domain_aliases, t.approved_agencies, t.active_statuses, t.stale_after)
    IS DISTINCT FROM (excluded.allowed_domains, excluded.domain_aliases, excluded.approved_agencies, excluded.active_statuses, excluded.stale_after)`,
		nonNil(st.AllowedDomains), string(js), nonNilIDs(st.ApprovedAgencies), nonNil(st.ActiveStatuses), interval(st.StaleAfter))
	if err != nil {
		return fmt.Errorf("write reconcile_settings: %w", err)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilIDs(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}

// loadDirectory replaces directory_people with d's people: a directory_loads
// row, the upsert (added, changed, reappeared) and the removal of the
// current people d does not list, with history under the load's id.
func (s *Store) loadDirectory(ctx context.Context, tx pgx.Tx, d *directory.Directory) error {
	rows := make([][]any, 0, len(d.People))
	replaced := 0
	for _, p := range d.People {
		if cleanAll(&p.DirectoryID, &p.Email, &p.UPN, &p.EmployeeID, &p.DisplayName, &p.Status, &p.Manager, &p.Department) {
			replaced++
		}
		rows = append(rows, []any{p.DirectoryID, nullable(p.Email), nullable(p.UPN), nullable(p.EmployeeID),
			nullable(p.DisplayName), nullable(p.Status), nullable(p.Manager), nullable(p.Department)})
	}
	if replaced > 0 {
		s.log.WarnContext(ctx, "directory values with NUL bytes: replaced by U+FFFD", slog.Int("people", replaced))
	}
	staged, err := rowsJSON(directoryTable, rows)
	if err != nil {
		return err
	}
	args := pgx.NamedArgs{directoryTable.RowsArg(): staged}
	var current, removing int
	// The people to remove by EXCEPT (hashed or sorted): a NOT EXISTS per
	// stored person would read the staged set once for each.
	if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM directory_people t WHERE t.removed_at IS NULL),
       (SELECT count(*) FROM (SELECT t.directory_id FROM directory_people t WHERE t.removed_at IS NULL
                              EXCEPT SELECT s.directory_id FROM `+directoryTable.Staged()+` s) d)`, args).Scan(&current, &removing); err != nil {
		return fmt.Errorf("count people to remove: %w", err)
	}
	if removing > 0 && !s.opts.AllowMassRemoval {
		if frac := float64(removing) / float64(current); frac > s.opts.RemovalGuard {
			return fmt.Errorf("%w: %s would remove %d of the %d people of the stored directory (%.0f%%, more than the %.0f%% allowed): "+
				"check that it is the whole directory, or rerun with --allow-mass-removal if this is expected",
				ErrRemovalGuard, d.Source, removing, current, frac*100, s.opts.RemovalGuard*100)
		}
	}
	var loadID int64
	if err := tx.QueryRow(ctx, `INSERT INTO directory_loads (source, sha256, people) VALUES ($1, $2, $3) RETURNING load_id`,
		d.Source, d.SHA256, len(rows)).Scan(&loadID); err != nil {
		return fmt.Errorf("record directory load: %w", err)
	}
	var c Counts
	for _, st := range []struct{ what, sql string }{{"write", directoryUpsertSQL}, {"remove", directoryRemoveSQL}} {
		r, err := tx.Query(ctx, st.sql, pgx.NamedArgs{"run_id": loadID, "owners": nil, directoryTable.RowsArg(): staged})
		if err == nil {
			err = countChanges(r, &c)
		}
		if err != nil {
			return fmt.Errorf("%s directory_people: %w", st.what, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE directory_loads SET added = $2, changed = $3, removed = $4, reappeared = $5 WHERE load_id = $1`,
		loadID, c.Added, c.Changed, c.Removed, c.Reappeared); err != nil {
		return fmt.Errorf("record directory load: %w", err)
	}
	s.log.InfoContext(ctx, "directory loaded", slog.String("source", d.Source), slog.Int64("load_id", loadID),
		slog.Int("people", len(rows)), slog.Any("changes", c))
	return nil
}

// latestLoad returns the latest directory load, nil when none.
func latestLoad(ctx context.Context, tx pgx.Tx) (*DirectoryLoad, error) {
	var l DirectoryLoad
	err := tx.QueryRow(ctx, `SELECT l.load_id, l.loaded_at, l.source, l.sha256, l.people, l.added, l.changed, l.removed, l.reappeared,
       (SELECT count(*) FROM directory_people p WHERE p.removed_at IS NULL)
FROM directory_loads l ORDER BY l.load_id DESC LIMIT 1`).Scan(&l.LoadID, &l.LoadedAt, &l.Source, &l.SHA256, &l.People,
		&l.Changes.Added, &l.Changes.Changed, &l.Changes.Removed, &l.Changes.Reappeared, &l.Current)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read directory loads: %w", err)
	}
	return &l, nil
}

// readExceptions reads access_exceptions, in kind order, then by customer
// and the finding's ids.
func readExceptions(ctx context.Context, tx pgx.Tx) ([]AccessException, error) {
	rows, err := tx.Query(ctx, `SELECT e.kind, coalesce(e.customer_id, 0), coalesce(c.name, ''), coalesce(e.user_id, 0), coalesce(e.invitation_id, 0),
       coalesce(e.link_type, ''), coalesce(e.client_entity_id, 0), coalesce(e.managing_customer_id, 0),
       coalesce(e.email, ''), coalesce(e.user_name, ''), coalesce(e.reason, '')
FROM access_exceptions e LEFT JOIN customers c ON c.customer_id = e.customer_id
ORDER BY array_position($1::text[], e.kind), e.customer_id, e.user_id NULLS LAST, e.invitation_id NULLS LAST,
         e.link_type NULLS LAST, e.client_entity_id NULLS LAST, e.managing_customer_id NULLS LAST, e.reason`, ExceptionKinds)
	if err != nil {
		return nil, fmt.Errorf("read access_exceptions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AccessException, error) {
		var e AccessException
		err := r.Scan(&e.Kind, &e.CustomerID, &e.CustomerName, &e.UserID, &e.InvitationID, &e.LinkType, &e.ClientEntityID,
			&e.ManagingCustomerID, &e.Email, &e.UserName, &e.Reason)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read access_exceptions: %w", err)
	}
	return out, nil
}
