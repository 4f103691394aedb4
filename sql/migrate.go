// Package sql embeds the schema migrations (the NNN_name.sql files in this
// folder) and applies them.
//
// The files are written without a schema qualifier: Migrate creates the
// configured schema and runs each file with search_path set to
// "<schema>, public", so one set of files serves any schema name. The
// pending migrations and their rows in schema_migrations commit in one
// transaction (a schema is at one version or the next, never half-way; one
// transaction instead of one per file makes a fresh schema about a third
// cheaper), under a transaction-level advisory lock keyed by the schema name,
// taken before the version is read, so two processes migrating at once are
// safe: the second waits, then finds nothing left to do. A schema already at
// the latest version is recognised first, without the lock: what every start
// after the first finds.
package sql

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed *.sql
var files embed.FS

// Migration is one embedded migration file.
type Migration struct {
	Version int
	Name    string // file name, e.g. "001_init.sql"
	SQL     string
}

var nameRE = regexp.MustCompile(`^([0-9]{3})_[a-z0-9_]+\.sql$`)

// Migrations returns the embedded migrations in version order. It fails when
// a file name does not match NNN_name.sql or versions are not 1, 2, 3, ….
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := nameRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name must be NNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %03d (versions must be contiguous from 001)", m.Name, i+1)
		}
	}
	return ms, nil
}

// Latest returns the highest embedded migration version.
func Latest() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Objects a reader role may read. oauth_tokens is deliberately absent.
var (
	readerRelations = []string{
		"access", "pending_invitations", "customer_freshness",
		"users", "user_roles", "user_invitations", "accounts", "roles", "customers",
		"users_history", "user_roles_history", "user_invitations_history",
		"sync_runs", "customer_syncs", "sync_leases",
		"client_links", "client_links_history", "client_link_statuses", "client_link_permissions",
		"active_client_links", "privileged_access",
		"access_exceptions", "directory_people", "directory_people_history", "directory_loads", "reconcile_settings",
	}
	readerFunctions = []string{
		"stale_invitations(interval)",
		"access_as_of(timestamptz)",
		"client_links_as_of(timestamptz)",
		"normalize_email(text)", "email_domain(text)", "normalize_email(text, jsonb)", "email_domain(text, jsonb)",
	}
)

// Migrate applies the pending migrations to schema, in order, and returns the
// schema's version afterwards. When readerRole is not empty it grants the role
// USAGE on the schema, SELECT on the views and tables (never on the token
// table) and EXECUTE on the functions; the grants are repeated on every call,
// which is harmless.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema, readerRole string, logger *slog.Logger) (int, error) {
	if schema == "" {
		return 0, errors.New("migrate: schema name is empty")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ms, err := Migrations()
	if err != nil {
		return 0, err
	}
	if len(ms) == 0 {
		return 0, errors.New("migrate: no embedded migrations")
	}
	// Fast path: a schema already at the latest version (every start after
	// the first) is read in two short queries, without the lock.
	version, err := Version(ctx, pool, schema)
	if err != nil {
		return 0, fmt.Errorf("migrate schema %s: %w", schema, err)
	}
	if version < ms[len(ms)-1].Version {
		var applied []Migration
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			applied = nil
			v, err := lockAndVersion(ctx, tx, schema)
			if err != nil {
				return err
			}
			version = v
			if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", searchPath(schema)); err != nil {
				return fmt.Errorf("set search_path: %w", err)
			}
			for _, m := range ms {
				if m.Version <= v {
					continue
				}
				if _, err := tx.Exec(ctx, m.SQL); err != nil {
					return fmt.Errorf("apply migration %s: %w", m.Name, err)
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+ident(schema)+".schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
					return fmt.Errorf("record migration %s: %w", m.Name, err)
				}
				version = m.Version
				applied = append(applied, m)
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("migrate schema %s: %w", schema, err)
		}
		for _, m := range applied {
			logger.InfoContext(ctx, "applied migration", slog.String("schema", schema), slog.Int("version", m.Version), slog.String("name", m.Name))
		}
	}
	if readerRole != "" {
		if err := grantReader(ctx, pool, schema, readerRole); err != nil {
			return version, fmt.Errorf("migrate schema %s: grant reader role %s: %w", schema, readerRole, err)
		}
	}
	return version, nil
}

// Version returns the schema's current version (0 when never migrated).
func Version(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", ident(schema)+".schema_migrations").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+ident(schema)+".schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

func lockAndVersion(ctx context.Context, tx pgx.Tx, schema string) (int, error) {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "syncer.migrate:"+schema); err != nil {
		return 0, fmt.Errorf("take migration lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+ident(schema)); err != nil {
		return 0, fmt.Errorf("create schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+ident(schema)+`.schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var v int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+ident(schema)+".schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

func grantReader(ctx context.Context, pool *pgxpool.Pool, schema, role string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "syncer.migrate:"+schema); err != nil {
			return err
		}
		s, r := ident(schema), ident(role)
		// A named reader role that does not exist yet is created without
		// login (a group role: grant it to the people or tools that read).
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			// Roles are cluster-wide: another schema's migration may create it
			// at the same moment (a savepoint keeps this transaction alive).
			if _, err := tx.Exec(ctx, "SAVEPOINT create_reader"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "CREATE ROLE "+r+" NOLOGIN"); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && (pe.Code == pgerrcode.DuplicateObject || pe.Code == pgerrcode.UniqueViolation) {
					if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT create_reader"); err != nil {
						return err
					}
				} else if errors.As(err, &pe) && pe.Code == pgerrcode.InsufficientPrivilege {
					return fmt.Errorf("role %s does not exist and this database user may not create it: create it once "+
						"(CREATE ROLE %s NOLOGIN) or leave database.reader_role empty: %w", role, r, err)
				} else {
					return fmt.Errorf("create reader role %s: %w", role, err)
				}
			}
		}
		stmts := []string{"GRANT USAGE ON SCHEMA " + s + " TO " + r}
		for _, rel := range readerRelations {
			stmts = append(stmts, "GRANT SELECT ON "+s+"."+ident(rel)+" TO "+r)
		}
		for _, fn := range readerFunctions {
			stmts = append(stmts, "GRANT EXECUTE ON FUNCTION "+s+"."+fn+" TO "+r)
		}
		for _, st := range stmts {
			if _, err := tx.Exec(ctx, st); err != nil {
				return fmt.Errorf("%s: %w", st, err)
			}
		}
		return nil
	})
}

func searchPath(schema string) string { return ident(schema) + ", public" }

// SearchPath returns the search_path setting ("<quoted schema>, public") that
// the migrations and the loader use for schema.
func SearchPath(schema string) string { return searchPath(schema) }

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
