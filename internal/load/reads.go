package load

// The warehouse's reads for package invite (stale invitations, the
// per-customer gauges, data gaps, the announcer's bookkeeping) and for the
// CLI's checks: package load owns every SQL statement the syncer runs, so
// invite and cli hold none of their own.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Invitation is one pending invitation as the warehouse reads it, with its
// customer's name.
type Invitation struct {
	InvitationID    int64
	CustomerID      int64
	CustomerName    string // "" when the customer's name is unknown
	Email           string
	RoleID          int32
	RoleName        string
	AccountIDs      []int64 // nil: every account of the customer
	ExpirationDate  *time.Time
	EstimatedSentAt *time.Time // expiration date minus 30 days
	FirstSeenAt     time.Time
	Expired         bool
	Age             time.Duration // since EstimatedSentAt (FirstSeenAt when unknown)
}

// StaleInvitations returns the pending invitations of schema sent more
// than olderThan ago, or already expired (the schema's stale_invitations
// function), ordered by customer then age (oldest first). When customers is
// not empty only their invitations are returned.
func StaleInvitations(ctx context.Context, pool *pgxpool.Pool, schema string, olderThan time.Duration, customers []int64) ([]Invitation, error) {
	q := `SELECT p.invitation_id, p.customer_id, coalesce(c.name, ''), coalesce(p.email, ''), coalesce(p.role_id, 0),
       p.role_name, p.account_ids, p.expiration_date, p.estimated_sent_at, p.first_seen_at, p.expired,
       extract(epoch FROM p.age)::float8
FROM ` + ident(schema, "stale_invitations") + `($1) p
LEFT JOIN ` + ident(schema, "customers") + ` c ON c.customer_id = p.customer_id
WHERE coalesce(cardinality($2::bigint[]), 0) = 0 OR p.customer_id = ANY ($2)
ORDER BY p.customer_id, p.age DESC, p.invitation_id`
	rows, err := pool.Query(ctx, q, interval(olderThan), customers)
	if err != nil {
		return nil, fmt.Errorf("query stale invitations: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanInvitation)
	if err != nil {
		return nil, fmt.Errorf("query stale invitations: %w", err)
	}
	return out, nil
}

// DueInvitations returns the invitations of schema that are stale at now
// (sent more than staleAfter before now, or expired) and were not announced
// within period before now (invitation_alerts), ordered by customer then
// age (oldest first). When customers is not empty only their invitations
// are returned.
func DueInvitations(ctx context.Context, pool *pgxpool.Pool, schema string, staleAfter, period time.Duration, now time.Time, customers []int64) ([]Invitation, error) {
	q := `SELECT p.invitation_id, p.customer_id, coalesce(c.name, ''), coalesce(p.email, ''), coalesce(p.role_id, 0),
       p.role_name, p.account_ids, p.expiration_date, p.estimated_sent_at, p.first_seen_at,
       coalesce(p.expiration_date <= $1, false),
       extract(epoch FROM $1 - coalesce(p.estimated_sent_at, p.first_seen_at))::float8
FROM ` + ident(schema, "pending_invitations") + ` p
LEFT JOIN ` + ident(schema, "customers") + ` c ON c.customer_id = p.customer_id
LEFT JOIN ` + ident(schema, "invitation_alerts") + ` a ON a.invitation_id = p.invitation_id
WHERE (coalesce(p.estimated_sent_at, p.first_seen_at) < $1 - $2::interval OR p.expiration_date <= $1)
  AND (a.last_notified_at IS NULL OR a.last_notified_at <= $1 - $3::interval)
  AND (coalesce(cardinality($4::bigint[]), 0) = 0 OR p.customer_id = ANY ($4))
ORDER BY p.customer_id, coalesce(p.estimated_sent_at, p.first_seen_at), p.invitation_id`
	rows, err := pool.Query(ctx, q, now, interval(staleAfter), interval(period), customers)
	if err != nil {
		return nil, fmt.Errorf("query stale invitations: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanInvitation)
	if err != nil {
		return nil, fmt.Errorf("query stale invitations: %w", err)
	}
	return out, nil
}

// RecordAnnounced remembers in invitation_alerts that the invitations ids
// were announced at now, fenced by lease (the announcer's): nothing is
// written once the lease is lost.
func RecordAnnounced(ctx context.Context, pool *pgxpool.Pool, lease *Lease, schema string, ids []int64, now time.Time) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := lease.Fence(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+ident(schema, "invitation_alerts")+` (invitation_id, last_notified_at)
SELECT DISTINCT unnest($1::bigint[]), $2::timestamptz
ON CONFLICT (invitation_id) DO UPDATE SET last_notified_at = excluded.last_notified_at`, ids, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("record announcement: %w", err)
	}
	return nil
}

// scanInvitation scans the columns selected by StaleInvitations and
// DueInvitations.
func scanInvitation(r pgx.CollectableRow) (Invitation, error) {
	var inv Invitation
	var age float64
	err := r.Scan(&inv.InvitationID, &inv.CustomerID, &inv.CustomerName, &inv.Email, &inv.RoleID,
		&inv.RoleName, &inv.AccountIDs, &inv.ExpirationDate, &inv.EstimatedSentAt, &inv.FirstSeenAt, &inv.Expired, &age)
	inv.Age = time.Duration(age * float64(time.Second)).Round(time.Second)
	return inv, err
}

// CustomerState is one customer's state in the warehouse, the source of
// the per-customer gauges (its fields are those of metrics.CustomerState).
type CustomerState struct {
	CustomerID         int64
	LastSuccess        time.Time // zero when never
	PendingInvitations int
	StaleInvitations   int
	Users              int // current users rows (listed by the customer)
	UnreadableUsers    int // of those, detail_status other than ok
	Roles              int // current role grants in the customer
}

// CustomerStates returns, for every customer known to schema (synced, or
// with pending invitations), its pending and stale invitation counts, its
// current users (and how many of them GetUser could not read), its current
// role grants, and the time of its last successful snapshot. staleAfter is
// the stale threshold.
func CustomerStates(ctx context.Context, pool *pgxpool.Pool, schema string, staleAfter time.Duration) ([]CustomerState, error) {
	q := `SELECT ids.customer_id, c.last_success_at, coalesce(p.n, 0), coalesce(s.n, 0),
       coalesce(u.n, 0), coalesce(u.unreadable, 0), coalesce(r.n, 0)
FROM (SELECT customer_id FROM ` + ident(schema, "customers") + `
      UNION SELECT customer_id FROM ` + ident(schema, "pending_invitations") + `) ids
LEFT JOIN ` + ident(schema, "customers") + ` c ON c.customer_id = ids.customer_id
LEFT JOIN (SELECT customer_id, count(*) AS n FROM ` + ident(schema, "pending_invitations") + ` GROUP BY customer_id) p
       ON p.customer_id = ids.customer_id
LEFT JOIN (SELECT customer_id, count(*) AS n FROM ` + ident(schema, "stale_invitations") + `($1) GROUP BY customer_id) s
       ON s.customer_id = ids.customer_id
LEFT JOIN (SELECT customer_id, count(*) AS n, count(*) FILTER (WHERE detail_status <> 'ok') AS unreadable
           FROM ` + ident(schema, "users") + ` WHERE removed_at IS NULL GROUP BY customer_id) u
       ON u.customer_id = ids.customer_id
LEFT JOIN (SELECT customer_id, count(*) AS n FROM ` + ident(schema, "user_roles") + ` WHERE removed_at IS NULL GROUP BY customer_id) r
       ON r.customer_id = ids.customer_id
ORDER BY ids.customer_id`
	rows, err := pool.Query(ctx, q, interval(staleAfter))
	if err != nil {
		return nil, fmt.Errorf("query customer states: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CustomerState, error) {
		var cs CustomerState
		var last *time.Time
		err := r.Scan(&cs.CustomerID, &last, &cs.PendingInvitations, &cs.StaleInvitations, &cs.Users, &cs.UnreadableUsers, &cs.Roles)
		if last != nil {
			cs.LastSuccess = *last
		}
		return cs, err
	})
	if err != nil {
		return nil, fmt.Errorf("query customer states: %w", err)
	}
	return out, nil
}

// DataGap is a customer whose warehouse data is too old to answer for it.
type DataGap struct {
	CustomerID  int64      // 0: the warehouse knows no customer at all
	LastSuccess *time.Time // nil: never synced completely
}

func (g DataGap) String() string {
	if g.LastSuccess == nil {
		return fmt.Sprintf("customer %d was never synced completely", g.CustomerID)
	}
	return fmt.Sprintf("customer %d last synced completely %s ago", g.CustomerID, time.Since(*g.LastSuccess).Round(time.Minute))
}

// DataGaps returns the customers whose last complete sync is older than
// maxAge at now, or missing: each of customers, or, when customers is
// empty, every customer the warehouse knows (and a gap with id 0 when it
// knows none: an empty warehouse never passes).
func DataGaps(ctx context.Context, pool *pgxpool.Pool, schema string, customers []int64, maxAge time.Duration, now time.Time) ([]DataGap, error) {
	q := `SELECT ids.id, c.last_success_at
FROM (SELECT unnest($1::bigint[]) AS id WHERE cardinality($1::bigint[]) > 0
      UNION SELECT customer_id FROM ` + ident(schema, "customers") + ` WHERE coalesce(cardinality($1::bigint[]), 0) = 0) ids
LEFT JOIN ` + ident(schema, "customers") + ` c ON c.customer_id = ids.id
WHERE c.last_success_at IS NULL OR c.last_success_at < $2
ORDER BY ids.id`
	rows, err := pool.Query(ctx, q, customers, now.Add(-maxAge))
	if err != nil {
		return nil, fmt.Errorf("query data age: %w", err)
	}
	gaps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DataGap, error) {
		var g DataGap
		err := r.Scan(&g.CustomerID, &g.LastSuccess)
		return g, err
	})
	if err != nil {
		return nil, fmt.Errorf("query data age: %w", err)
	}
	if len(customers) == 0 {
		var known int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+ident(schema, "customers")).Scan(&known); err != nil {
			return nil, fmt.Errorf("query data age: %w", err)
		}
		if known == 0 {
			gaps = append(gaps, DataGap{})
		}
	}
	return gaps, nil
}

// ServerVersion returns the server's version (SHOW server_version).
func ServerVersion(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var v string
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}

// RoleExists reports whether the database role exists.
func RoleExists(ctx context.Context, pool *pgxpool.Pool, role string) (bool, error) {
	var exists bool
	err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists)
	return exists, err
}

// RoleCanRead reports whether role may use schema and read its access
// view (what `syncer migrate` grants database.reader_role).
func RoleCanRead(ctx context.Context, pool *pgxpool.Pool, role, schema string) (bool, error) {
	var ok bool
	err := pool.QueryRow(ctx, "SELECT has_schema_privilege($1, $2, 'USAGE') AND has_table_privilege($1, $3, 'SELECT')",
		role, schema, ident(schema, "access")).Scan(&ok)
	return ok, err
}

// ident quotes a schema-qualified name.
func ident(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// interval encodes a duration as a PostgreSQL interval.
func interval(d time.Duration) pgtype.Interval {
	return pgtype.Interval{Microseconds: d.Microseconds(), Valid: true}
}
