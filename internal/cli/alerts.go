package cli

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/msads-syncer/syncer/internal/invite"
	"github.com/msads-syncer/syncer/internal/metrics"
)

// afterRunTimeout bounds the follow-ups of one run (gauges and webhook).
const afterRunTimeout = 2 * time.Minute

// afterRun follows every sync that wrote (and `serve`'s start): it writes
// the config's reconcile rules (which the access_exceptions view reads),
// refreshes the per-customer alert gauges from the database when they are
// read (s.gauges: served, or pushed to a Pushgateway) and, when
// invitations.webhook_url is set, announces the stale invitations not
// announced within invitations.stale_after. Failures are logged and counted,
// never fatal: the sync itself already succeeded or failed on its own.
func afterRun(ctx context.Context, s runSetup) {
	ctx, cancel := context.WithTimeout(ctx, afterRunTimeout)
	defer cancel()
	schema := s.cfg.Database.Schema
	staleAfter := s.cfg.Invitations.StaleAfter.D()

	gauges := s.gauges && s.metrics != nil
	if gauges {
		states, err := invite.CustomerStates(ctx, s.pool, schema, staleAfter)
		if err != nil {
			logAfterRun(ctx, s, "could not refresh the invitation and freshness gauges", err)
		} else {
			s.metrics.SetCustomerStates(states)
		}
	}
	if err := refreshExceptions(ctx, s, gauges); err != nil {
		logAfterRun(ctx, s, "could not refresh the access exceptions gauge", err)
	}

	url := s.cfg.Invitations.WebhookURL.Value()
	if url == "" {
		return
	}
	n := &invite.Notifier{URL: url, Logger: s.logger, Customers: notifyCustomers(s)}
	res, err := n.Notify(ctx, s.pool, schema, staleAfter, time.Now())
	if s.metrics != nil {
		for range res.Messages {
			s.metrics.InvitationNotice(metrics.NoticeSent)
		}
		for range res.Failed {
			s.metrics.InvitationNotice(metrics.NoticeFailed)
		}
	}
	if err != nil {
		logAfterRun(ctx, s, "stale invitations not announced; retried after the next run", err)
	}
}

// notifyCustomers is the customers whose invitations a run announces: the
// run's own (--customer, else customers.ids), so CronJobs of several
// credentials writing to one schema each announce their own; every customer
// of the schema when the customers are discovered.
func notifyCustomers(s runSetup) []int64 {
	if len(s.opts.Only) > 0 {
		return s.opts.Only
	}
	if s.cfg.Customers.Discover {
		return nil
	}
	return s.cfg.Customers.IDs
}

func logAfterRun(ctx context.Context, s runSetup, msg string, err error) {
	if s.logger == nil {
		return
	}
	if errors.Is(err, context.Canceled) {
		s.logger.InfoContext(ctx, msg+" (canceled)")
		return
	}
	s.logger.ErrorContext(ctx, msg, slog.Any("error", err))
}
