// Package metrics defines the syncer's Prometheus metrics on a registry of its
// own: API calls, retries and throttles (it implements the extract client's
// Observer), rows written, run and customer outcomes and durations, and the
// alert gauges named by the design (msads_pending_invitations,
// msads_stale_invitations, msads_customer_last_success_timestamp_seconds).
//
// `syncer serve` exposes the registry on /metrics; `syncer run` pushes it to a
// Pushgateway when one is configured, grouped by job, credential and (when
// set) instance, so that the CronJobs of several credentials keep their own
// groups.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/redact"
	"github.com/msads-syncer/syncer/internal/status"
)

// Metrics holds every metric of the process.
type Metrics struct {
	Registry *prometheus.Registry

	apiCalls        *prometheus.CounterVec
	apiCallDuration *prometheus.HistogramVec
	apiRetries      *prometheus.CounterVec
	apiThrottles    prometheus.Counter
	apiThrottleWait prometheus.Counter

	rowsWritten      *prometheus.CounterVec
	customerSyncs    *prometheus.CounterVec
	customerDuration prometheus.Histogram
	runs             *prometheus.CounterVec
	runDuration      prometheus.Histogram
	lastRunTime      prometheus.Gauge
	lastRunSuccess   prometheus.Gauge

	pendingInvitations *prometheus.GaugeVec
	staleInvitations   *prometheus.GaugeVec
	lastSuccess        *prometheus.GaugeVec
	invitationNotices  *prometheus.CounterVec
	unreadableUsers    *prometheus.GaugeVec
	customerUsers      *prometheus.GaugeVec
	customerRoles      *prometheus.GaugeVec
	linkSearches       *prometheus.GaugeVec
	accessExceptions   *prometheus.GaugeVec
	buildInfo          *prometheus.GaugeVec
}

// Every counter starts at 0 for each status of status.RunOutcomes and
// status.CustomerOutcomes, so that rate() and increase() work from the first
// sample and alerts on "failed" see a series before the first failure.
var (
	changeKinds = []string{"added", "changed", "removed", "reappeared"}
	entities    = []string{"users", "user_roles", "user_invitations", "accounts", "client_links"}
)

// New registers every metric on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.apiCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "msads_api_calls_total", Help: "Customer Management API calls (operation Token: the OAuth token endpoint) by operation and outcome (ok, throttled, transient, unauthorized, permanent, canceled).",
	}, []string{"operation", "outcome"})
	m.apiCallDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "msads_api_call_duration_seconds", Help: "Duration of one API call attempt.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"operation"})
	m.apiRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "msads_api_retries_total", Help: "API call attempts that were retried.",
	}, []string{"operation"})
	m.apiThrottles = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "msads_api_throttle_pauses_total", Help: "Pauses of all callers after the API answered CallRateExceeded (117) or HTTP 429.",
	})
	m.apiThrottleWait = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "msads_api_throttle_wait_seconds_total", Help: "Time spent paused by throttling.",
	})
	m.rowsWritten = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "msads_rows_written_total", Help: "Warehouse rows written by entity and change (added, changed, removed, reappeared).",
	}, []string{"entity", "change"})
	m.customerSyncs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "msads_customer_syncs_total", Help: "Customer syncs by customer and status (" + joinStatuses(status.CustomerOutcomes) + ").",
	}, []string{"customer_id", "status"})
	m.customerDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "msads_customer_sync_duration_seconds", Help: "Duration of one customer's sync, fetch and write.",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
	})
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "msads_sync_runs_total", Help: "Sync runs by status (" + joinStatuses(status.RunOutcomes) + ").",
	}, []string{"status"})
	m.runDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "msads_sync_run_duration_seconds", Help: "Duration of a whole sync run.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14),
	})
	m.lastRunTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "msads_last_run_timestamp_seconds", Help: "When the last sync run of this process ended.",
	})
	m.lastRunSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "msads_last_run_success", Help: "1 when the last run synced every customer, else 0.",
	})
	m.pendingInvitations = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_pending_invitations", Help: "Pending user invitations per customer (expired ones included).",
	}, []string{"customer_id"})
	m.staleInvitations = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_stale_invitations", Help: "Pending invitations older than invitations.stale_after, or expired, per customer.",
	}, []string{"customer_id"})
	m.lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_customer_last_success_timestamp_seconds", Help: "When each customer's last successful snapshot was written.",
	}, []string{"customer_id"})
	m.invitationNotices = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "msads_invitation_notices_total", Help: "Stale-invitation webhook posts by outcome.",
	}, []string{"outcome"})
	m.unreadableUsers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_unreadable_users", Help: "Users a customer lists but GetUser cannot read (detail_status unreadable or not_found), from the warehouse: as of the customer's last successful sync.",
	}, []string{"customer_id"})
	m.customerUsers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_customer_users", Help: "Current users listed by each customer (readable or not), from the warehouse.",
	}, []string{"customer_id"})
	m.customerRoles = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_customer_roles", Help: "Current role grants in each customer, from the warehouse.",
	}, []string{"customer_id"})
	m.linkSearches = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_client_link_searches", Help: "Per customer, 1 for the outcome of its last client link searches (complete, partial, not_permitted: the credential may not search some or all of its links), 0 for the others.",
	}, []string{"customer_id", "status"})
	m.accessExceptions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "msads_access_exceptions", Help: "Findings of the access review (view access_exceptions) by kind and customer, from the warehouse.",
	}, []string{"kind", "customer_id"})
	m.buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "syncer_build_info", Help: "Always 1: the version, commit and Go version of the running syncer.",
	}, []string{"version", "commit", "goversion"})
	for _, st := range status.RunOutcomes {
		m.runs.WithLabelValues(string(st))
	}
	for _, e := range entities {
		for _, k := range changeKinds {
			m.rowsWritten.WithLabelValues(e, k)
		}
	}
	for _, c := range []prometheus.Collector{
		m.unreadableUsers, m.customerUsers, m.customerRoles, m.linkSearches, m.accessExceptions, m.buildInfo, m.apiCalls, m.apiCallDuration, m.apiRetries, m.apiThrottles, m.apiThrottleWait,
		m.rowsWritten, m.customerSyncs, m.customerDuration, m.runs, m.runDuration,
		m.lastRunTime, m.lastRunSuccess, m.pendingInvitations, m.staleInvitations,
		m.lastSuccess, m.invitationNotices,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}

// joinStatuses lists statuses for a metric's help text.
func joinStatuses(sts []status.Status) string {
	s := make([]string, len(sts))
	for i, st := range sts {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

// Call implements the extract client's Observer.
func (m *Metrics) Call(op, outcome string, d time.Duration) {
	m.apiCalls.WithLabelValues(op, outcome).Inc()
	m.apiCallDuration.WithLabelValues(op).Observe(d.Seconds())
}

// Retry implements the extract client's Observer.
func (m *Metrics) Retry(op string) { m.apiRetries.WithLabelValues(op).Inc() }

// Throttle implements the extract client's Observer.
func (m *Metrics) Throttle(wait time.Duration) {
	m.apiThrottles.Inc()
	m.apiThrottleWait.Add(wait.Seconds())
}

// RowsWritten adds n rows of entity with the given change.
func (m *Metrics) RowsWritten(entity, change string, n int) {
	if n > 0 {
		m.rowsWritten.WithLabelValues(entity, change).Add(float64(n))
	}
}

// SetBuildInfo sets syncer_build_info to 1 for this build.
func (m *Metrics) SetBuildInfo(version, commit, goVersion string) {
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(version, commit, goVersion).Set(1)
}

// InitCustomers starts the per-customer counters of the configured
// customers at 0 for every status.
func (m *Metrics) InitCustomers(ids []int64) {
	for _, id := range ids {
		for _, st := range status.CustomerOutcomes {
			m.customerSyncs.WithLabelValues(strconv.FormatInt(id, 10), string(st))
		}
	}
}

// CustomerSync records one customer's outcome.
func (m *Metrics) CustomerSync(customerID int64, st status.Status, d time.Duration) {
	m.customerSyncs.WithLabelValues(strconv.FormatInt(customerID, 10), string(st)).Inc()
	m.customerDuration.Observe(d.Seconds())
}

// LinkSearches records the outcome of a customer's client link searches
// (msads.LinksComplete, LinksPartial or LinksNotPermitted).
func (m *Metrics) LinkSearches(customerID int64, outcome string) {
	id := strconv.FormatInt(customerID, 10)
	for _, o := range []string{msads.LinksComplete, msads.LinksPartial, msads.LinksNotPermitted} {
		v := 0.0
		if o == outcome {
			v = 1
		}
		m.linkSearches.WithLabelValues(id, o).Set(v)
	}
}

// Run records one run's outcome.
func (m *Metrics) Run(st status.Status, d time.Duration, end time.Time) {
	m.runs.WithLabelValues(string(st)).Inc()
	if st == status.Locked {
		return
	}
	m.runDuration.Observe(d.Seconds())
	m.lastRunTime.Set(float64(end.Unix()))
	if st == status.Succeeded {
		m.lastRunSuccess.Set(1)
	} else {
		m.lastRunSuccess.Set(0)
	}
}

// CustomerState is one customer's gauges, read from the warehouse: they
// hold between runs and whatever a run's outcome.
type CustomerState struct {
	CustomerID         int64
	LastSuccess        time.Time // zero when never
	PendingInvitations int
	StaleInvitations   int
	Users              int // current users rows (listed by the customer)
	UnreadableUsers    int // of those, detail_status unreadable or not_found
	Roles              int // current role grants in the customer
}

// SetCustomerStates replaces the per-customer gauges.
func (m *Metrics) SetCustomerStates(states []CustomerState) {
	for _, g := range []*prometheus.GaugeVec{m.pendingInvitations, m.staleInvitations, m.lastSuccess, m.customerUsers, m.customerRoles, m.unreadableUsers} {
		g.Reset()
	}
	for _, s := range states {
		id := strconv.FormatInt(s.CustomerID, 10)
		m.pendingInvitations.WithLabelValues(id).Set(float64(s.PendingInvitations))
		m.staleInvitations.WithLabelValues(id).Set(float64(s.StaleInvitations))
		m.customerUsers.WithLabelValues(id).Set(float64(s.Users))
		m.customerRoles.WithLabelValues(id).Set(float64(s.Roles))
		m.unreadableUsers.WithLabelValues(id).Set(float64(s.UnreadableUsers))
		if !s.LastSuccess.IsZero() {
			m.lastSuccess.WithLabelValues(id).Set(float64(s.LastSuccess.Unix()))
		}
	}
}

// ExceptionCount is how many access exceptions of a kind a customer has.
type ExceptionCount struct {
	Kind       string
	CustomerID int64
	N          int
}

// SetAccessExceptions replaces msads_access_exceptions: every kind of kinds
// at 0 for every customer of customers (so alerts see a series before the
// first finding), then counts.
func (m *Metrics) SetAccessExceptions(kinds []string, customers []int64, counts []ExceptionCount) {
	m.accessExceptions.Reset()
	for _, id := range customers {
		for _, k := range kinds {
			m.accessExceptions.WithLabelValues(k, strconv.FormatInt(id, 10)).Set(0)
		}
	}
	for _, c := range counts {
		id := ""
		if c.CustomerID != 0 {
			id = strconv.FormatInt(c.CustomerID, 10)
		}
		m.accessExceptions.WithLabelValues(c.Kind, id).Set(float64(c.N))
	}
}

// Outcomes of a webhook post (msads_invitation_notices_total).
const (
	NoticeSent   = "sent"
	NoticeFailed = "failed"
)

// InvitationNotice counts a webhook post by outcome (NoticeSent,
// NoticeFailed).
func (m *Metrics) InvitationNotice(outcome string) {
	m.invitationNotices.WithLabelValues(outcome).Inc()
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// PushTimeout bounds one push to the Pushgateway, the whole request; the
// push is a follow-up of the run and never holds the process longer.
const PushTimeout = 10 * time.Second

// PushJob is the value of the job label of every push.
const PushJob = "syncer"

// Group is the grouping key of a push besides job="syncer". Several CronJobs
// (one per credential) push to one Pushgateway: each must land in a group of
// its own, or the last push replaces the others' metrics.
type Group struct {
	// Credential is the credential key (a hash of the OAuth client id and
	// developer token, never a secret); always sent.
	Credential string
	// Instance is metrics.instance; sent only when set.
	Instance string
}

// Push sends the registry to a Pushgateway, replacing the metrics of its
// group: /metrics/job/syncer/credential/<key>[/instance/<instance>]. A nil
// client means one with PushTimeout; ctx is bounded by PushTimeout as well.
func (m *Metrics) Push(ctx context.Context, url string, group Group, client *http.Client) error {
	if group.Credential == "" {
		return errors.New("push metrics to pushgateway: no credential key for the grouping key")
	}
	ctx, cancel := context.WithTimeout(ctx, PushTimeout)
	defer cancel()
	if err := pusher(url, group, m.Registry, client).PushContext(ctx); err != nil {
		return fmt.Errorf("push metrics to pushgateway: %w", redactUserinfo(err, url))
	}
	return nil
}

// PushAccessExceptions sends msads_access_exceptions alone to the group
// that Push replaces (`syncer reconcile`): it replaces that metric of the
// group and leaves the run's others as they are (the Pushgateway's POST).
func (m *Metrics) PushAccessExceptions(ctx context.Context, url string, group Group, client *http.Client) error {
	if group.Credential == "" {
		return errors.New("push metrics to pushgateway: no credential key for the grouping key")
	}
	ctx, cancel := context.WithTimeout(ctx, PushTimeout)
	defer cancel()
	r := prometheus.NewRegistry()
	r.MustRegister(m.accessExceptions)
	if err := pusher(url, group, r, client).AddContext(ctx); err != nil {
		return fmt.Errorf("push metrics to pushgateway: %w", redactUserinfo(err, url))
	}
	return nil
}

// pusher pushes g under group; a nil client means one with PushTimeout.
func pusher(url string, group Group, g prometheus.Gatherer, client *http.Client) *push.Pusher {
	if client == nil {
		client = &http.Client{Timeout: PushTimeout}
	}
	p := push.New(url, PushJob).Gatherer(g).Client(client).Grouping("credential", group.Credential)
	if group.Instance != "" {
		p = p.Grouping("instance", group.Instance)
	}
	return p
}

// redactUserinfo keeps a password given in the Pushgateway URL
// (https://user:password@host) out of an error: the push library names the
// full URL in its errors.
func redactUserinfo(err error, rawURL string) error {
	return redact.Error(err, redact.Userinfo(rawURL)...)
}
