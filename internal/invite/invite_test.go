package invite_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/invite"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const day = 24 * time.Hour

// inv is an invitation row to insert directly into the migrated schema.
type inv struct {
	id, customer int64
	email        string
	role         int32
	accounts     []int64
	firstSeen    time.Duration // ago
	expiresIn    time.Duration // from now; negative: expired
	removed      bool
}

func insert(t *testing.T, pool *pgxpool.Pool, schema string, now time.Time, rows ...inv) {
	t.Helper()
	for _, r := range rows {
		var removed *time.Time
		if r.removed {
			removed = &now
		}
		_, err := pool.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{schema, "user_invitations"}.Sanitize()+`
			(invitation_id, customer_id, email, role_id, account_ids, expiration_date, first_seen_at, removed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			r.id, r.customer, r.email, r.role, r.accounts, now.Add(r.expiresIn), now.Add(-r.firstSeen), removed)
		if err != nil {
			t.Fatalf("insert invitation %d: %v", r.id, err)
		}
	}
}

func insertCustomer(t *testing.T, pool *pgxpool.Pool, schema string, id int64, name string, lastSuccess *time.Time) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{schema, "customers"}.Sanitize()+`
		(customer_id, name, last_success_at) VALUES ($1, $2, $3)`, id, name, lastSuccess)
	if err != nil {
		t.Fatalf("insert customer %d: %v", id, err)
	}
}

// fixture: customer 1 (Contoso) and 2 (Fabrikam) with invitations of known ages.
func fixture(t *testing.T) (*pgxpool.Pool, string, time.Time) {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	now := time.Now()
	last := now.Add(-2 * time.Hour)
	insertCustomer(t, pool, schema, 1, "Contoso", &last)
	insertCustomer(t, pool, schema, 2, "Fabrikam", nil)
	insert(t, pool, schema, now,
		inv{id: 11, customer: 1, email: "old@example.com", role: 41, firstSeen: 10 * day, expiresIn: 20 * day},
		inv{id: 12, customer: 1, email: "recent@example.com", role: 100, accounts: []int64{7, 8}, firstSeen: 2 * day, expiresIn: 28 * day},
		inv{id: 13, customer: 1, email: "expired@example.com", role: 203, firstSeen: 1 * day, expiresIn: -time.Hour},
		inv{id: 14, customer: 1, email: "accepted@example.com", role: 41, firstSeen: 30 * day, expiresIn: 5 * day, removed: true},
		inv{id: 21, customer: 2, email: "eight@example.com", role: 16, firstSeen: 8 * day, expiresIn: 22 * day},
	)
	return pool, schema, now
}

func ids(invs []invite.Invitation) []int64 {
	out := make([]int64, len(invs))
	for i, v := range invs {
		out[i] = v.InvitationID
	}
	return out
}

// An invitation sent three weeks before the syncer first saw it is stale on
// the first run: age counts from the estimated sending date (expiration -
// 30 days), not from first_seen_at; without an expiration date, from
// first_seen_at.
func TestStaleFromEstimatedSendingDate(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	now := time.Now()
	insert(t, pool, schema, now,
		inv{id: 31, customer: 1, email: "sent-23-days-ago@example.com", role: 41, firstSeen: time.Minute, expiresIn: 7 * day},
		inv{id: 32, customer: 1, email: "sent-yesterday@example.com", role: 41, firstSeen: time.Minute, expiresIn: 29 * day},
	)
	if _, err := pool.Exec(t.Context(), `INSERT INTO `+pgx.Identifier{schema, "user_invitations"}.Sanitize()+`
		(invitation_id, customer_id, email, role_id, first_seen_at) VALUES (33, 1, 'no-expiry@example.com', 41, $1)`, now.Add(-8*day)); err != nil {
		t.Fatal(err)
	}
	got, err := invite.Stale(t.Context(), pool, schema, 7*day, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), []int64{31, 33}) {
		t.Fatalf("stale = %v, want [31 33]", ids(got))
	}
	if a := got[0].Age; a < 23*day-time.Minute || a > 23*day+time.Minute {
		t.Errorf("age of 31 = %v, want about 23 days", a)
	}
}

func TestDataGaps(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	now := time.Now()
	ctx := t.Context()
	gaps, err := invite.DataGaps(ctx, pool, schema, nil, 48*time.Hour, now)
	if err != nil || len(gaps) != 1 || gaps[0].CustomerID != 0 {
		t.Fatalf("empty warehouse: gaps %v, %v; want one gap (nothing synced)", gaps, err)
	}
	fresh, old := now.Add(-time.Hour), now.Add(-72*time.Hour)
	insertCustomer(t, pool, schema, 1, "fresh", &fresh)
	insertCustomer(t, pool, schema, 2, "old", &old)
	insertCustomer(t, pool, schema, 3, "never", nil)
	for _, tc := range []struct {
		customers []int64
		want      []int64
	}{
		{nil, []int64{2, 3}},
		{[]int64{1}, nil},
		{[]int64{1, 2}, []int64{2}},
		{[]int64{4}, []int64{4}}, // configured, unknown to the warehouse
	} {
		gaps, err := invite.DataGaps(ctx, pool, schema, tc.customers, 48*time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, g := range gaps {
			got = append(got, g.CustomerID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("DataGaps(%v) = %v, want %v", tc.customers, got, tc.want)
		}
	}
}

func TestStaleThresholds(t *testing.T) {
	t.Parallel()
	pool, schema, now := fixture(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name      string
		olderThan time.Duration
		customers []int64
		want      []int64
	}{
		{"week", 7 * day, nil, []int64{13, 11, 21}},
		{"one and a half days", 36 * time.Hour, nil, []int64{13, 11, 12, 21}},
		{"nine days", 9 * day, nil, []int64{13, 11}},
		{"month: only the expired one", 30 * day, nil, []int64{13}},
		{"customer filter", 7 * day, []int64{2}, []int64{21}},
		{"customer filter, several", 7 * day, []int64{1, 2}, []int64{13, 11, 21}},
		{"unknown customer", 7 * day, []int64{99}, []int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := invite.Stale(ctx, pool, schema, tc.olderThan, tc.customers)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("Stale(%v, %v) = %v, want %v", tc.olderThan, tc.customers, ids(got), tc.want)
			}
		})
	}

	got, err := invite.Stale(ctx, pool, schema, 7*day, nil)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[int64]invite.Invitation{}
	for _, v := range got {
		byID[v.InvitationID] = v
	}
	old := byID[11]
	if old.CustomerName != "Contoso" || old.Email != "old@example.com" || old.RoleName != "Super Admin" || old.AccountIDs != nil || old.Expired {
		t.Errorf("invitation 11 = %+v", old)
	}
	if d := old.Age - 10*day; d < -time.Minute || d > time.Minute {
		t.Errorf("invitation 11 age = %v, want about 10 days", old.Age)
	}
	if old.EstimatedSentAt == nil || old.ExpirationDate == nil || !old.EstimatedSentAt.Equal(old.ExpirationDate.Add(-30*day)) {
		t.Errorf("invitation 11 estimated sent %v, expiration %v: want expiration - 30 days", old.EstimatedSentAt, old.ExpirationDate)
	}
	if d := old.EstimatedSentAt.Sub(now.Add(-10 * day)); d < -time.Minute || d > time.Minute {
		t.Errorf("invitation 11 estimated sent %v, want about %v", old.EstimatedSentAt, now.Add(-10*day))
	}
	if e := byID[13]; !e.Expired || e.RoleName != "Standard User" {
		t.Errorf("invitation 13 = %+v, want expired Standard User", e)
	}
	if f := byID[21]; f.CustomerName != "Fabrikam" || f.RoleName != "Advertiser Campaign Manager" {
		t.Errorf("invitation 21 = %+v", f)
	}
}

func TestCustomerStates(t *testing.T) {
	t.Parallel()
	pool, schema, _ := fixture(t)
	// An invitation of a customer that has no customers row yet still counts.
	insert(t, pool, schema, time.Now(), inv{id: 31, customer: 3, email: "x@example.com", role: 41, firstSeen: time.Hour, expiresIn: 29 * day})

	got, err := invite.CustomerStates(t.Context(), pool, schema, 7*day)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d states, want 3: %+v", len(got), got)
	}
	type want struct {
		id             int64
		pending, stale int
		success        bool
	}
	for i, w := range []want{{1, 3, 2, true}, {2, 1, 1, false}, {3, 1, 0, false}} {
		s := got[i]
		if s.CustomerID != w.id || s.PendingInvitations != w.pending || s.StaleInvitations != w.stale || s.LastSuccess.IsZero() == w.success {
			t.Errorf("state %d = %+v, want %+v", i, s, w)
		}
	}
}
