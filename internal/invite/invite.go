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
// The warehouse's SQL is package load's (load.StaleInvitations and the
// others): invite holds none. Stale lists the stale invitations;
// CustomerStates gives the per-customer gauges of package metrics; a Notifier
// posts one webhook message per customer, each invitation at most once per
// period, remembered in the invitation_alerts table.
package invite

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/metrics"
)

// Invitation is one pending invitation, with its customer's name (see
// load.Invitation for its fields).
type Invitation load.Invitation

// Stale returns the pending invitations of schema sent more than olderThan
// ago, or already expired, ordered by customer then age (oldest first).
// When customers is not empty only their invitations are returned.
func Stale(ctx context.Context, pool *pgxpool.Pool, schema string, olderThan time.Duration, customers []int64) ([]Invitation, error) {
	invs, err := load.StaleInvitations(ctx, pool, schema, olderThan, customers)
	return invitations(invs), err
}

// invitations converts the warehouse's rows.
func invitations(invs []load.Invitation) []Invitation {
	if invs == nil {
		return nil
	}
	out := make([]Invitation, len(invs))
	for i, inv := range invs {
		out[i] = Invitation(inv)
	}
	return out
}

// CustomerStates returns, for every customer known to schema (synced, or
// with pending invitations), its pending and stale invitation counts, its
// current users (and how many of them GetUser could not read), its current
// role grants, and the time of its last successful snapshot. staleAfter is
// the stale threshold.
func CustomerStates(ctx context.Context, pool *pgxpool.Pool, schema string, staleAfter time.Duration) ([]metrics.CustomerState, error) {
	states, err := load.CustomerStates(ctx, pool, schema, staleAfter)
	if err != nil {
		return nil, err
	}
	out := make([]metrics.CustomerState, len(states))
	for i, s := range states {
		out[i] = metrics.CustomerState(s)
	}
	return out, nil
}

// DataGap is a customer whose warehouse data is too old to answer for it.
type DataGap = load.DataGap

// DataGaps returns the customers whose last complete sync is older than
// maxAge at now, or missing: each of customers, or, when customers is
// empty, every customer the warehouse knows (and a gap with id 0 when it
// knows none: an empty warehouse never passes).
func DataGaps(ctx context.Context, pool *pgxpool.Pool, schema string, customers []int64, maxAge time.Duration, now time.Time) ([]DataGap, error) {
	return load.DataGaps(ctx, pool, schema, customers, maxAge, now)
}
