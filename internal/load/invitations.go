package load

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PendingInvitation is one row of the pending_invitations view.
type PendingInvitation struct {
	InvitationID    int64
	CustomerID      int64
	Email           string
	RoleID          int32
	RoleName        string
	AccountIDs      []int64 // nil: every account
	ExpirationDate  *time.Time
	FirstSeenAt     time.Time
	EstimatedSentAt *time.Time
	Expired         bool
	Age             time.Duration // since first seen
}

func interval(d time.Duration) string { return fmt.Sprintf("%d microseconds", d.Microseconds()) }

const pendingCols = `p.invitation_id, p.customer_id, coalesce(p.email, ''), coalesce(p.role_id, 0), p.role_name,
	p.account_ids, p.expiration_date, p.first_seen_at, p.estimated_sent_at, p.expired,
	extract(epoch FROM p.age)::float8`

func scanPending(rows pgx.Rows) ([]PendingInvitation, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PendingInvitation, error) {
		var p PendingInvitation
		var age float64
		err := r.Scan(&p.InvitationID, &p.CustomerID, &p.Email, &p.RoleID, &p.RoleName, &p.AccountIDs,
			&p.ExpirationDate, &p.FirstSeenAt, &p.EstimatedSentAt, &p.Expired, &age)
		p.Age = time.Duration(age * float64(time.Second))
		return p, err
	})
}

// StaleInvitations returns the pending invitations first seen more than
// olderThan ago, or already expired (the stale_invitations function).
func (s *Store) StaleInvitations(ctx context.Context, olderThan time.Duration) ([]PendingInvitation, error) {
	var out []PendingInvitation
	err := s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+pendingCols+` FROM stale_invitations($1::interval) p`, interval(olderThan))
		if err != nil {
			return err
		}
		out, err = scanPending(rows)
		return err
	})
	if err != nil {
		return nil, interpret(fmt.Errorf("stale invitations: %w", err))
	}
	return out, nil
}

// InvitationsToAnnounce returns the stale invitations (see StaleInvitations)
// not announced within the last period, so each is announced at most once
// per period. Call MarkAnnounced after a successful announcement.
func (s *Store) InvitationsToAnnounce(ctx context.Context, olderThan, period time.Duration) ([]PendingInvitation, error) {
	var out []PendingInvitation
	err := s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+pendingCols+` FROM stale_invitations($1::interval) p
			LEFT JOIN invitation_alerts a ON a.invitation_id = p.invitation_id
			WHERE a.last_notified_at IS NULL OR a.last_notified_at <= now() - $2::interval`, interval(olderThan), interval(period))
		if err != nil {
			return err
		}
		out, err = scanPending(rows)
		return err
	})
	if err != nil {
		return nil, interpret(fmt.Errorf("invitations to announce: %w", err))
	}
	return out, nil
}

// MarkAnnounced records that the invitations were announced now.
func (s *Store) MarkAnnounced(ctx context.Context, invitationIDs []int64) error {
	if len(invitationIDs) == 0 {
		return nil
	}
	err := s.inTx(ctx, "", true, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO invitation_alerts (invitation_id, last_notified_at)
			SELECT DISTINCT unnest($1::bigint[]), now()
			ON CONFLICT (invitation_id) DO UPDATE SET last_notified_at = excluded.last_notified_at`, invitationIDs)
		return err
	})
	if err != nil {
		return interpret(fmt.Errorf("mark invitations announced: %w", err))
	}
	return nil
}

// CustomerState is a customer's freshness and invitation counts, for
// metrics and alerts.
type CustomerState struct {
	CustomerID         int64
	Name               string
	LastSuccess        time.Time // zero when never
	LastAttempt        time.Time // zero when never
	LastError          string
	PendingInvitations int
	StaleInvitations   int
}

// CustomerStates returns every known customer's state; staleAfter is the
// stale-invitation threshold.
func (s *Store) CustomerStates(ctx context.Context, staleAfter time.Duration) ([]CustomerState, error) {
	var out []CustomerState
	err := s.inTx(ctx, "", false, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
SELECT c.customer_id, coalesce(c.name, ''), c.last_success_at, c.last_attempt_at, coalesce(c.last_error, ''),
       count(p.invitation_id),
       count(p.invitation_id) FILTER (WHERE p.age > $1::interval OR p.expired)
FROM customers c
LEFT JOIN pending_invitations p ON p.customer_id = c.customer_id
GROUP BY c.customer_id
ORDER BY c.customer_id`, interval(staleAfter))
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (CustomerState, error) {
			var cs CustomerState
			var success, attempt *time.Time
			err := r.Scan(&cs.CustomerID, &cs.Name, &success, &attempt, &cs.LastError, &cs.PendingInvitations, &cs.StaleInvitations)
			if success != nil {
				cs.LastSuccess = *success
			}
			if attempt != nil {
				cs.LastAttempt = *attempt
			}
			return cs, err
		})
		return err
	})
	if err != nil {
		return nil, interpret(fmt.Errorf("customer states: %w", err))
	}
	return out, nil
}
