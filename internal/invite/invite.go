// Package invite finds stale pending invitations and announces them.
//
// A pending Microsoft Advertising invitation can be accepted by anyone who
// holds its link, with any login, and the API cannot cancel it, so old ones
// are a security risk. An invitation is stale when it was sent more than a
// threshold ago (invitations.stale_after), or when it has expired but is
// still listed. The API gives no sending date: it is estimated as the
// expiration date minus 30 days, and age counts from it (from first_seen_at
// when the expiration date is unknown), so an invitation sent weeks before
// the first sync is stale on the first run.
//
// DataGaps tells whether the warehouse can answer at all: a customer without
// a complete sync within invitations.max_data_age makes an empty list of
// stale invitations meaningless.
//
// Stale lists them through the schema's stale_invitations function;
// CustomerStates gives the per-customer gauges of package metrics; a Notifier
// posts one webhook message per customer, each invitation at most once per
// period, remembered in the invitation_alerts table.
package invite

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/metrics"
)

// Invitation is one pending invitation, with its customer's name.
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

// Stale returns the pending invitations of schema sent more than olderThan
// ago, or already expired, ordered by customer then age (oldest first). When customers is not empty only their invitations are returned.
func Stale(ctx context.Context, pool *pgxpool.Pool, schema string, olderThan time.Duration, customers []int64) ([]Invitation, error) {
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

// scanInvitation scans the columns selected by Stale and by the Notifier.
func scanInvitation(r pgx.CollectableRow) (Invitation, error) {
	var inv Invitation
	var age float64
	err := r.Scan(&inv.InvitationID, &inv.CustomerID, &inv.CustomerName, &inv.Email, &inv.RoleID,
		&inv.RoleName, &inv.AccountIDs, &inv.ExpirationDate, &inv.EstimatedSentAt, &inv.FirstSeenAt, &inv.Expired, &age)
	inv.Age = time.Duration(age * float64(time.Second)).Round(time.Second)
	return inv, err
}

// CustomerStates returns, for every customer known to schema (synced, or
// with pending invitations), its pending and stale invitation counts, its
// current users (and how many of them GetUser could not read), its current
// role grants, and the time of its last successful snapshot. staleAfter is
// the stale threshold.
func CustomerStates(ctx context.Context, pool *pgxpool.Pool, schema string, staleAfter time.Duration) ([]metrics.CustomerState, error) {
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
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metrics.CustomerState, error) {
		var cs metrics.CustomerState
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
	CustomerID  int64
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

// ident quotes a schema-qualified name.
func ident(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// interval encodes a duration as a PostgreSQL interval.
func interval(d time.Duration) pgtype.Interval {
	return pgtype.Interval{Microseconds: d.Microseconds(), Valid: true}
}
