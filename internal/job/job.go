// Package job is one sync run: it takes the credential's run lease
// (load.Store.AcquireLease; a run that finds it held does nothing), resolves
// the customers (the configured list or discovery), fans out across them with
// a bounded errgroup, fetches each customer's complete snapshot through the
// shared API client (one rate limiter, one user cache per run), writes each
// snapshot in its own transaction, and records the run.
//
// A customer that fails leaves its previous data untouched; the others go on.
// A credential-wide failure (the refresh token rejected, invalid credentials)
// stops the run early, since every other customer would fail the same way.
//
// Shutdown has two stages: closing Options.Stop stops starting customers and
// cancels in-flight API calls, while snapshot writes already under way commit
// or roll back; cancelling the ctx given to Run ends everything at once.
package job

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/metrics"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/status"
)

// Runner runs syncs. Its fields are set once and shared by every run.
type Runner struct {
	Client  *extract.Client
	Store   *load.Store
	Metrics *metrics.Metrics // may be nil
	Logger  *slog.Logger
	// Counters, when set, are bumped as the run goes (live progress).
	Counters *Counters

	// CredentialKey identifies the credential (see CredentialKey).
	CredentialKey string
	CustomerIDs   []int64 // configured customers; empty with Discover
	Discover      bool
	Concurrency   int
	AccountNames  bool
	// ClientLinks searches each customer's client links
	// (microsoft_ads.client_links).
	ClientLinks bool
	// MaxUnreadableFraction is sync.max_unreadable_fraction (see
	// extract.FetchOptions).
	MaxUnreadableFraction float64
	// LeaseTTL is the run lease's time-to-live (sync.lease_ttl); default
	// load.DefaultLeaseTTL.
	LeaseTTL time.Duration
}

// ErrLeaseLost is the Fatal error of a run whose lease was lost mid-run.
var ErrLeaseLost = load.ErrLeaseLost

// Options are the per-run choices of the command line.
type Options struct {
	// Only limits the run to these customers (--customer).
	Only []int64
	// DryRun does every read and computes the changes, writing nothing.
	DryRun bool
	// Stop, when closed, starts a graceful stop.
	Stop <-chan struct{}
}

// Counters are live totals of a run, safe to read while it goes. They count
// API calls as an extract.Observer of the run's client.
type Counters struct {
	CustomersTotal atomic.Int64
	CustomersDone  atomic.Int64
	UsersFetched   atomic.Int64
	Calls          atomic.Int64
}

// Call implements extract.Observer.
func (c *Counters) Call(op, outcome string, _ time.Duration) {
	c.Calls.Add(1)
	if op == msads.OpGetUser && outcome == "ok" {
		c.UsersFetched.Add(1)
	}
}

// Retry implements extract.Observer.
func (c *Counters) Retry(string) {}

// Throttle implements extract.Observer.
func (c *Counters) Throttle(time.Duration) {}

// CustomerResult is one customer's outcome.
type CustomerResult struct {
	CustomerID  int64         `json:"customer_id"`
	Name        string        `json:"name,omitempty"`
	Status      status.Status `json:"status"`
	Users       int           `json:"users_seen"`
	Unreadable  int           `json:"users_unreadable"`
	Invitations int           `json:"invitations_seen"`
	// Links are the client links the searches found; LinksStatus how the
	// searches went (msads.LinksComplete, LinksPartial, LinksNotPermitted;
	// empty when not searched) and LinksError why some were not permitted.
	Links       int          `json:"client_links_seen"`
	LinksStatus string       `json:"links_status,omitempty"`
	LinksError  string       `json:"links_error,omitempty"`
	Calls       int          `json:"api_calls"`
	Changes     load.Changes `json:"changes"`
	DurationSec float64      `json:"duration_seconds"`
	Error       string       `json:"error,omitempty"`
}

// Result is one run's outcome.
type Result struct {
	RunID       int64            `json:"run_id,omitempty"`
	Status      status.Status    `json:"status"` // a status.RunOutcomes
	DryRun      bool             `json:"dry_run,omitempty"`
	StartedAt   time.Time        `json:"started_at"`
	FinishedAt  time.Time        `json:"finished_at"`
	DurationSec float64          `json:"duration_seconds"`
	Customers   []CustomerResult `json:"customers"`
	Failed      int              `json:"customers_failed"`
	Error       string           `json:"error,omitempty"`
	// Principal is the signed-in user the data was read as (0 when the
	// lookup failed).
	PrincipalUserID   int64  `json:"principal_user_id,omitempty,string"`
	PrincipalUserName string `json:"principal_user_name,omitempty"`
	// RolesSwept counts the roles of users no customer lists any more that
	// the run removed after writing its customers (load.Store.SweepRoles);
	// they are not in any customer's Changes.
	RolesSwept int `json:"roles_swept"`
	// SweepError is why that removal failed, if it did (the roles stay
	// until a later run removes them).
	SweepError string `json:"sweep_error,omitempty"`
	// Fatal is the credential-wide or setup error that stopped the run, if any.
	Fatal error `json:"-"`
}

// CredentialKey derives the run lock and token store key of a credential
// from the OAuth client id and the developer token, without revealing either.
func CredentialKey(clientID, developerToken string) string {
	h := sha256.Sum256([]byte("msads-syncer\x00" + clientID + "\x00" + developerToken))
	return "cred:" + hex.EncodeToString(h[:12])
}

// recordTimeout bounds the recording of a run's end and of a customer's
// failure; the store itself waits up to load.Options.RecordRetryMax (1m by
// default) for an unreachable database.
const recordTimeout = 75 * time.Second

// ErrNoCustomers is returned when the run has nothing to sync.
var ErrNoCustomers = errors.New("no customers to sync")

// Run performs one sync. It returns an error only when the run could not
// start (lock, database); customer failures and credential-wide failures are
// in the Result.
func (r *Runner) Run(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now().UTC()
	res := &Result{StartedAt: start, DryRun: opts.DryRun}

	// The run lease (see load.Lease): held in sync_leases, renewed in short
	// transactions, so it holds behind a transaction pooler too. Its
	// context is cancelled the moment the lease is lost, which stops
	// fetches and in-flight writes at once; writes made with it are fenced.
	lease, ok, err := r.Store.AcquireLease(ctx, r.CredentialKey, r.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("take the run lease: %w", err)
	}
	if !ok {
		msg := "another sync holds the run lease for these credentials: nothing to do"
		if info, held, herr := r.Store.LeaseHolderOf(ctx, r.CredentialKey); herr == nil && held {
			r.Logger.WarnContext(ctx, msg, slog.String("holder", info.Holder), slog.Int64("holder_run_id", info.RunID),
				slog.Time("expires_at", info.ExpiresAt))
		} else {
			r.Logger.WarnContext(ctx, msg)
		}
		res.Status = status.Locked
		res.FinishedAt = time.Now().UTC()
		r.observeRun(res)
		return res, nil
	}
	parent := ctx
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 10*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			r.Logger.WarnContext(parent, "could not release the run lease", slog.Any("error", err))
		}
	}()
	ctx = lease.Context()

	// fetchCtx ends on the graceful stop; writes keep ctx so they can finish.
	fetchCtx, cancelFetch := context.WithCancelCause(ctx)
	defer cancelFetch(nil)
	stopped := atomic.Bool{}
	if opts.Stop != nil {
		go func() {
			select {
			case <-opts.Stop:
				stopped.Store(true)
				cancelFetch(errors.New("stop requested"))
			case <-fetchCtx.Done():
			}
		}()
	}

	// A token failure remembered by an earlier run of this process is
	// tried again: `syncer auth` may have fixed it meanwhile.
	r.Client.ResetAuthFailure()
	scope, err := r.resolveCustomers(fetchCtx, opts.Only)
	if err != nil {
		res.Fatal = err
	}
	customers := scope.customers
	res.PrincipalUserID, res.PrincipalUserName = scope.principal.ID, scope.principal.UserName

	if !opts.DryRun {
		res.RunID, err = r.Store.StartRun(ctx, len(customers))
		if err != nil {
			return nil, fmt.Errorf("record the run: %w", err)
		}
		if scope.principal.ID != 0 || scope.visible != nil {
			if err := r.Store.SetRunScope(ctx, res.RunID, scope.principal.ID, scope.principal.UserName, scope.visible); err != nil {
				r.Logger.WarnContext(ctx, "could not record who the run signs in as and what it can see", slog.Any("error", err))
			}
		}
	}
	if r.Counters != nil {
		r.Counters.CustomersTotal.Store(int64(len(customers)))
	}
	r.Logger.InfoContext(ctx, "sync started", slog.Int64("run_id", res.RunID),
		slog.Int("customers", len(customers)), slog.Bool("dry_run", opts.DryRun))

	results := make([]customerOutcome, len(customers))
	// The cache keeps a user only while a customer of this run may still
	// ask for it.
	ids := make([]int64, len(customers))
	for i, c := range customers {
		ids[i] = c.ID
	}
	cache := extract.NewRunUserCache(ids)
	var fatalOnce sync.Once
	// The group only bounds concurrency: outcomes go to results, never to
	// the group's error.
	var g errgroup.Group
	g.SetLimit(max(1, r.Concurrency))
	for i, c := range customers {
		if fetchCtx.Err() != nil {
			results[i] = skipped(fetchCtx, c)
			continue
		}
		g.Go(func() error {
			select {
			case <-fetchCtx.Done(): // stopped while queued
				results[i] = skipped(fetchCtx, c)
				return nil
			default:
			}
			var cr customerOutcome
			if reason := scope.invisible[c.ID]; reason != "" {
				cr = r.invisibleCustomer(ctx, res.RunID, c, reason, opts.DryRun)
			} else {
				cr = r.syncCustomer(ctx, fetchCtx, res.RunID, c, cache, scope.roleCustomers, opts.DryRun)
			}
			results[i] = cr
			if cr.fatal != nil {
				fatalOnce.Do(func() {
					res.Fatal = cr.fatal
					cancelFetch(cr.fatal)
				})
			}
			return nil
		})
	}
	_ = g.Wait()

	var synced []int64
	for _, cr := range results {
		if cr.Status != status.Succeeded {
			res.Failed++
		} else {
			synced = append(synced, cr.CustomerID)
		}
		res.Customers = append(res.Customers, cr.CustomerResult)
	}
	if !opts.DryRun {
		r.sweepRoles(ctx, res, scope.roleCustomers, synced)
	}
	switch {
	case lease.Err() != nil:
		res.Status = status.Failed
		res.Fatal = fmt.Errorf("the run lease was lost and the run stopped: %w", lease.Err())
		res.Error = res.Fatal.Error()
	case stopped.Load() || parent.Err() != nil:
		res.Status = status.Canceled
		res.Error = "canceled: stop requested"
	case res.Fatal != nil:
		res.Status = status.Failed
		res.Error = res.Fatal.Error()
	case len(customers) == 0:
		res.Status = status.Failed
		res.Fatal = ErrNoCustomers
		res.Error = ErrNoCustomers.Error()
	case res.Failed == 0:
		res.Status = status.Succeeded
	case res.Failed == len(customers):
		res.Status = status.Failed
		res.Error = fmt.Sprintf("all %d customers failed", res.Failed)
	default:
		res.Status = status.Partial
		res.Error = fmt.Sprintf("%d of %d customers failed", res.Failed, len(customers))
	}
	if res.SweepError != "" && res.Status == status.Succeeded {
		// Every customer was written, but roles that must go are still
		// current: the run did not leave the warehouse right.
		res.Status = status.Partial
		res.Error = "the roles of users no customer lists any more could not be removed (the next run will): " + res.SweepError
	}
	res.FinishedAt = time.Now().UTC()
	res.DurationSec = res.FinishedAt.Sub(start).Seconds()
	if !opts.DryRun {
		// Record the end even when ctx was cancelled by a second signal or
		// the lease was lost (FinishRun is not fenced: it writes only this
		// run's row); FinishRun waits for the database up to its bound.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		if err := r.Store.FinishRun(fctx, res.RunID, res.Status, res.Failed, res.Error); err != nil {
			r.Logger.ErrorContext(ctx, "could not record the run's end", slog.Any("error", err))
		}
	}
	r.observeRun(res)
	level := slog.LevelInfo
	if res.Status != status.Succeeded {
		level = slog.LevelWarn
	}
	r.Logger.Log(ctx, level, "sync finished", slog.Int64("run_id", res.RunID), slog.String("status", string(res.Status)),
		slog.Int("customers", len(customers)), slog.Int("customers_failed", res.Failed),
		slog.Float64("duration_seconds", res.DurationSec), slog.Int("roles_swept", res.RolesSwept), slog.String("error", res.Error))
	return res, nil
}

// sweepRoles removes, once every customer of the run is written, the
// roles of users that no customer lists any more, in every customer the
// credential can see that has a successful sync on record
// (load.Store.SweepRoles), when at least one customer synced in this run.
// Not only in the customers that synced in this run: whether a user is
// listed anywhere is what the users rows say, whatever this run's fetch of
// the role's customer did. (A user listed by A and B, with a role
// in A: A's listing drops the user while B's still lists it, so A keeps
// the role; when B's listing drops it in a run where A fails, the role in
// A was kept, current for a user nobody lists, for as long as A failed:
// malformed-bodies seed 482078697.)
func (r *Runner) sweepRoles(ctx context.Context, res *Result, roleCustomers, synced []int64) {
	if len(synced) == 0 || len(roleCustomers) == 0 || ctx.Err() != nil {
		return
	}
	owners, err := r.Store.SyncedCustomers(ctx, roleCustomers)
	var n int
	if err == nil {
		n, err = r.Store.SweepRoles(ctx, res.RunID, owners, roleCustomers)
	}
	if err != nil {
		res.SweepError = err.Error()
		r.Logger.ErrorContext(ctx, "could not remove the roles of users no customer lists any more; a later run will",
			slog.Int64("run_id", res.RunID), slog.Any("error", err))
		return
	}
	res.RolesSwept = n
	if r.Metrics != nil {
		r.Metrics.RowsWritten("user_roles", "removed", n)
	}
	r.Logger.InfoContext(ctx, "roles of users no customer lists removed", slog.Int64("run_id", res.RunID),
		slog.Int("roles_removed", n), slog.Int("customers", len(owners)))
}

func (r *Runner) observeRun(res *Result) {
	if r.Metrics != nil {
		r.Metrics.Run(res.Status, res.FinishedAt.Sub(res.StartedAt), res.FinishedAt)
	}
}

// runScope is what a run syncs and as whom.
type runScope struct {
	customers []msads.Customer
	principal msads.User
	// invisible maps configured customers that the signed-in user cannot
	// see to the reason, naming code 106: they fail without a call.
	invisible map[int64]string
	// roleCustomers are the customers whose roles the run may remove
	// (msads.Snapshot.RoleCustomers), sorted: the customers the credential
	// can see, or, when that could not be determined, the run's own.
	roleCustomers []int64
	// visible are the customers the credential can see, sorted; nil when
	// that could not be determined.
	visible []int64
}

// resolveCustomers returns the customers of this run, with names when the
// API tells them, and the signed-in user. The customers the credential can
// see are the union of GetCustomersInfo (asked with a growing TopN until
// the answer is not full) and the customers of the signed-in user's own
// roles, so neither a capped list nor a customer reachable only through a
// role is missed. Discovery failing is fatal; a name lookup failing is not,
// unless the credentials themselves were rejected.
func (r *Runner) resolveCustomers(ctx context.Context, only []int64) (runScope, error) {
	var scope runScope
	v := Visible(ctx, r.Client)
	me, perr, err := v.Principal, v.PrincipalErr, v.ListErr
	if perr != nil && (extract.IsRunFatal(perr) || ctx.Err() != nil) {
		return scope, fmt.Errorf("look up the signed-in user: %w", perr)
	}
	if perr != nil {
		r.Logger.WarnContext(ctx, "could not look up the signed-in user; going on without it", slog.Any("error", perr))
	}
	scope.principal = me
	if err != nil {
		if r.Discover || extract.IsRunFatal(err) || ctx.Err() != nil {
			return scope, fmt.Errorf("list customers: %w", err)
		}
		r.Logger.WarnContext(ctx, "could not look up customer names; going on without them", slog.Any("error", err))
	}
	names := make(map[int64]string, len(v.Customers))
	visible := make([]int64, len(v.Customers))
	for i, c := range v.Customers {
		names[c.ID] = c.Name
		visible[i] = c.ID
	}
	var ids []int64
	if r.Discover {
		ids = slices.Clone(visible)
	} else {
		ids = slices.Clone(r.CustomerIDs)
	}
	if len(only) > 0 {
		ids = slices.DeleteFunc(ids, func(id int64) bool { return !slices.Contains(only, id) })
		for _, id := range only {
			if !slices.Contains(ids, id) {
				return scope, fmt.Errorf("--customer %d is not among the configured or discovered customers", id)
			}
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	scope.customers = make([]msads.Customer, len(ids))
	for i, id := range ids {
		scope.customers[i] = msads.Customer{ID: id, Name: names[id]}
	}
	// Only when both lookups answered is "not visible" a fact, and the
	// visible set complete.
	if err == nil && perr == nil {
		scope.roleCustomers = visible
		scope.visible = visible
	} else {
		scope.roleCustomers = slices.Clone(ids)
	}
	if err == nil && perr == nil && !r.Discover {
		for _, id := range ids {
			if _, found := slices.BinarySearch(visible, id); !found {
				if scope.invisible == nil {
					scope.invisible = map[int64]string{}
				}
				scope.invisible[id] = fmt.Sprintf("customer %d is not visible to the signed-in user %s (%d): code 106 UserIsNotAuthorized; "+
					"remove it from customers.ids or sign in (`syncer auth`) as a user with access to it", id, me.UserName, me.ID)
			}
		}
	}
	return scope, nil
}

// invisibleCustomer is the outcome of a configured customer the signed-in
// user cannot see: failed, named, without a call.
func (r *Runner) invisibleCustomer(ctx context.Context, runID int64, c msads.Customer, reason string, dryRun bool) customerOutcome {
	out := customerOutcome{CustomerResult: CustomerResult{CustomerID: c.ID, Name: c.Name, Status: status.Failed, Error: reason}}
	if r.Metrics != nil {
		r.Metrics.CustomerSync(c.ID, status.Failed, 0)
	}
	if r.Counters != nil {
		r.Counters.CustomersDone.Add(1)
	}
	if !dryRun {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		if err := r.Store.RecordCustomerFailure(rctx, runID, c.ID, load.SyncInfo{StartedAt: time.Now().UTC()}, errors.New(reason)); err != nil {
			r.Logger.ErrorContext(ctx, "could not record the customer's failure", slog.Int64("customer_id", c.ID), slog.Any("error", err))
		}
	}
	r.Logger.ErrorContext(ctx, "customer failed", slog.Int64("customer_id", c.ID), slog.String("error", reason))
	return out
}

// skipped is the result of a customer that the run never started.
func skipped(ctx context.Context, c msads.Customer) customerOutcome {
	return customerOutcome{CustomerResult: CustomerResult{CustomerID: c.ID, Name: c.Name, Status: status.Skipped,
		Error: "not started: " + context.Cause(ctx).Error()}}
}

type customerOutcome struct {
	CustomerResult
	fatal error
}

// syncCustomer fetches and writes one customer. fetchCtx carries the graceful
// stop; ctx bounds the write.
func (r *Runner) syncCustomer(ctx, fetchCtx context.Context, runID int64, c msads.Customer, cache *extract.UserCache, roleCustomers []int64, dryRun bool) (out customerOutcome) {
	start := time.Now().UTC()
	out = customerOutcome{CustomerResult: CustomerResult{CustomerID: c.ID, Name: c.Name}}
	log := r.Logger.With(slog.Int64("customer_id", c.ID))
	defer func() {
		d := time.Since(start)
		out.DurationSec = d.Seconds() // a named result: the deferred value is the one returned
		if r.Metrics != nil {
			r.Metrics.CustomerSync(c.ID, out.Status, d)
		}
		if r.Counters != nil {
			r.Counters.CustomersDone.Add(1)
		}
	}()

	snap, stats, err := r.Client.FetchCustomer(fetchCtx, c.ID, cache,
		extract.FetchOptions{Accounts: r.AccountNames, Links: r.ClientLinks, MaxUnreadableFraction: r.MaxUnreadableFraction})
	out.Calls = stats.Calls
	out.Users, out.Unreadable = stats.Users, stats.Unreadable
	if err == nil {
		if snap.CustomerName == "" {
			snap.CustomerName = c.Name
		}
		snap.RoleCustomers = roleCustomers
		out.Invitations = len(snap.Invitations)
		out.Links, out.LinksStatus, out.LinksError = len(snap.Links), snap.LinksStatus(), snap.LinksError()
		info := load.SyncInfo{StartedAt: start, APICalls: stats.Calls, UsersUnreadable: stats.Unreadable}
		if dryRun {
			out.Changes, err = r.Store.DiffSnapshot(ctx, runID, snap, info)
		} else {
			out.Changes, err = r.Store.WriteSnapshot(ctx, runID, snap, info)
		}
	}
	if err != nil {
		// A fetch cut short by the run's end says why (the lease lost,
		// the stop requested), not only "context canceled".
		if cause := context.Cause(fetchCtx); cause != nil && errors.Is(err, context.Canceled) && !errors.Is(err, cause) &&
			!strings.Contains(err.Error(), cause.Error()) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		out.Status = status.Failed
		out.Error = err.Error()
		if extract.IsRunFatal(err) {
			out.fatal = err
		}
		if !dryRun {
			// Record the failure even when the fetch was cancelled.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
			defer cancel()
			info := load.SyncInfo{StartedAt: start, APICalls: stats.Calls, UsersUnreadable: stats.Unreadable}
			if rerr := r.Store.RecordCustomerFailure(rctx, runID, c.ID, info, err); rerr != nil {
				log.ErrorContext(ctx, "could not record the customer's failure", slog.Any("error", rerr))
			}
		}
		level := slog.LevelError
		if errors.Is(err, context.Canceled) {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "customer failed", slog.String("error", out.Error), slog.Int("api_calls", out.Calls))
		return out
	}
	out.Status = status.Succeeded
	if r.Metrics != nil && !dryRun && out.LinksStatus != "" {
		r.Metrics.LinkSearches(c.ID, out.LinksStatus)
	}
	if r.Metrics != nil && !dryRun {
		for _, e := range out.Changes.Entities() {
			for _, k := range e.Kinds() {
				r.Metrics.RowsWritten(e.Table, k.Kind, k.N)
			}
		}
	}
	if out.LinksStatus != "" && out.LinksStatus != msads.LinksComplete {
		log.WarnContext(ctx, "client link searches not permitted to this credential (links_status "+out.LinksStatus+"); "+
			"the links it could not search are kept as they were", slog.String("links_error", out.LinksError))
	}
	log.InfoContext(ctx, "customer synced", slog.Int("users", out.Users), slog.Int("users_unreadable", out.Unreadable), slog.Int("invitations", out.Invitations),
		slog.Int("client_links", out.Links), slog.String("links_status", out.LinksStatus),
		slog.Int("api_calls", out.Calls), slog.Any("changes", out.Changes), slog.Bool("dry_run", dryRun),
		slog.Duration("duration", time.Since(start)))
	return out
}
