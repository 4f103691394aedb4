package extract

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/msads-syncer/syncer/internal/msads"
)

// userFetchConcurrency bounds the GetUser calls in flight for one customer.
// All calls still pass through the Client's shared rate limiter.
const userFetchConcurrency = 4

// FetchStats counts the work done for one customer.
type FetchStats struct {
	Calls       int // HTTP attempts made for this customer (retries included; cached GetUser results cost 0)
	Users       int // users listed (readable or not)
	Unreadable  int // listed users whose GetUser failed permanently
	Invitations int
	Links       int // client links found (LinksStatus says whether every search was permitted)
	Retries     int
}

// FetchOptions are the choices of FetchCustomer.
type FetchOptions struct {
	// Accounts also calls GetAccountsInfo.
	Accounts bool
	// Links also searches the customer's client links (SearchClientLinks:
	// into the customer, into each of its accounts, and from it as an
	// agency). It needs the accounts, so it calls GetAccountsInfo too.
	Links bool
	// MaxUnreadableFraction is the share of a customer's listed users that
	// may be unreadable (GetUser failing permanently for them alone) while
	// the snapshot still counts as complete; above it the customer fails.
	// 0 means any unreadable user fails the customer.
	MaxUnreadableFraction float64
}

// UserCache shares GetUser results between the customers of one run: a user
// listed by several customers is fetched once, even when two customers ask
// at the same time. Failed fetches are not cached. Make one per run.
//
// It keeps a fetched user only while another customer may still ask for
// it: GetUser answers the user's roles in every customer the credential
// reaches, and a customer lists exactly the users with a role in it, so
// the customers that will ask are those of the roles, less the one that
// fetched, those that already took the result and those whose
// FetchCustomer has returned. When none is left the entry goes; a run's
// memory then holds the users shared with customers not yet fetched, not
// every user of the run. (A customer that lists a user it holds no role
// with, the data changing during the run, fetches it again: one call more,
// never a wrong answer.)
type UserCache struct {
	mu      sync.Mutex
	entries map[int64]*userEntry
	hits    int
	misses  int
	// run are the customers of the run (NewRunUserCache); nil: any
	// customer may ask.
	run map[int64]bool
	// finished are the customers whose FetchCustomer returned; waiting
	// lists, per customer, the users whose entry waits for it.
	finished map[int64]bool
	waiting  map[int64][]int64
}

type userEntry struct {
	done     chan struct{}
	slow     chan struct{} // closed when the fetch's first attempt fails
	slowOnce sync.Once
	customer int64 // the customer whose call fetches it
	user     msads.User
	roles    []msads.Role
	err      error
	// Under UserCache.mu: settled once the fetch succeeded and pending
	// was computed; before that, taken are the customers that joined the
	// fetch in flight; after, pending are the customers still expected.
	settled bool
	taken   []int64
	pending []int64
}

// NewUserCache returns an empty cache for a run whose customers are not
// known in advance: a fetched user is kept until every customer it holds a
// role in has taken it or finished.
func NewUserCache() *UserCache {
	return &UserCache{entries: make(map[int64]*userEntry), finished: map[int64]bool{}, waiting: map[int64][]int64{}}
}

// NewRunUserCache returns an empty cache for a run of these customers: a
// user's roles in other customers keep it only for the run's customers.
func NewRunUserCache(customers []int64) *UserCache {
	uc := NewUserCache()
	uc.run = make(map[int64]bool, len(customers))
	for _, id := range customers {
		uc.run[id] = true
	}
	return uc
}

// Stats returns how many lookups were served from the cache (or joined an
// in-flight fetch) and how many fetched.
func (uc *UserCache) Stats() (hits, misses int) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.hits, uc.misses
}

// Len returns how many users the cache holds (fetched or in flight).
func (uc *UserCache) Len() int {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return len(uc.entries)
}

// settleLocked records a successful fetch of userID: the customers still
// expected to ask, or, when there are none, the entry goes.
func (uc *UserCache) settleLocked(userID int64, e *userEntry) {
	e.settled = true
	for _, r := range e.roles {
		c := r.CustomerID
		if c == e.customer || uc.finished[c] || uc.run != nil && !uc.run[c] ||
			slices.Contains(e.taken, c) || slices.Contains(e.pending, c) {
			continue
		}
		e.pending = append(e.pending, c)
		uc.waiting[c] = append(uc.waiting[c], userID)
	}
	e.taken = nil
	if len(e.pending) == 0 && uc.entries[userID] == e {
		delete(uc.entries, userID)
	}
}

// takeLocked records that customerID took (or joined) the entry.
func (uc *UserCache) takeLocked(userID, customerID int64, e *userEntry) {
	if !e.settled {
		e.taken = append(e.taken, customerID)
		return
	}
	if i := slices.Index(e.pending, customerID); i >= 0 {
		e.pending = slices.Delete(e.pending, i, i+1)
		if len(e.pending) == 0 && uc.entries[userID] == e {
			delete(uc.entries, userID)
		}
	}
}

// finish records that customerID's FetchCustomer returned: it asks for no
// more users, so entries kept for it alone go.
func (uc *UserCache) finish(customerID int64) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.finished[customerID] = true
	for _, uid := range uc.waiting[customerID] {
		if e := uc.entries[uid]; e != nil && e.settled {
			uc.takeLocked(uid, customerID, e)
		}
	}
	delete(uc.waiting, customerID)
}

// get returns the user and roles, fetching them at most once at a time. A
// caller of another customer waits for a fetch in flight only while it goes
// well: once an attempt of that fetch fails (a hung call timed out, a fault),
// the waiter fetches for itself rather than wait through the other
// customer's retries.
func (uc *UserCache) get(ctx context.Context, c *Client, customerID, userID int64, st *callStats) (msads.User, []msads.Role, error) {
	for {
		uc.mu.Lock()
		e, ok := uc.entries[userID]
		if !ok {
			e = &userEntry{done: make(chan struct{}), slow: make(chan struct{}), customer: customerID}
			uc.entries[userID] = e
			uc.misses++
			uc.mu.Unlock()
			e.user, e.roles, e.err = c.getUser(ctx, customerID, userID, st, func() { e.slowOnce.Do(func() { close(e.slow) }) })
			uc.mu.Lock()
			if e.err != nil {
				if uc.entries[userID] == e {
					delete(uc.entries, userID) // let a later caller try again
				}
			} else {
				uc.settleLocked(userID, e)
			}
			uc.mu.Unlock()
			close(e.done)
			return e.user, e.roles, e.err
		}
		uc.hits++
		uc.takeLocked(userID, customerID, e)
		uc.mu.Unlock()
		select {
		case <-e.done:
		case <-e.slow:
			if e.customer != customerID {
				// Don't wait through another customer's retries.
				return c.getUser(ctx, customerID, userID, st, nil)
			}
			select {
			case <-e.done:
			case <-ctx.Done():
				return msads.User{}, nil, ctx.Err()
			}
		case <-ctx.Done():
			return msads.User{}, nil, ctx.Err()
		}
		if e.err == nil {
			return e.user, e.roles, nil
		}
		// Another customer's call failed (its context ended, or the API
		// refused it in that customer's context): a customer fails only by
		// its own calls, so try ourselves.
		if ctx.Err() == nil && (e.customer != customerID ||
			errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) {
			continue
		}
		return msads.User{}, nil, e.err
	}
}

// FetchCustomer does steps 1–4 of a sync for one customer: GetUsersInfo,
// GetUser for each listed user (through cache), SearchUserInvitations,
// GetAccountsInfo with opts.Accounts or opts.Links, and the client link
// searches with opts.Links (a search the credential is not permitted is
// recorded in Snapshot.LinkSearches, not a failure). The snapshot is returned only when
// complete: any failed call fails the whole customer, except a GetUser that
// fails permanently for that user alone (see msads.User.DetailStatus),
// while such users are at most opts.MaxUnreadableFraction of the listing.
// Stats are returned in every case.
func (c *Client) FetchCustomer(ctx context.Context, customerID int64, cache *UserCache, opts FetchOptions) (*msads.Snapshot, FetchStats, error) {
	if cache == nil {
		cache = NewUserCache()
	}
	defer cache.finish(customerID)
	st := &callStats{}
	snap := &msads.Snapshot{CustomerID: customerID}
	var (
		users []msads.User
		roles []msads.Role
	)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		users, roles, err = c.fetchUsers(gctx, customerID, cache, st)
		return err
	})
	g.Go(func() error {
		inv, err := c.searchUserInvitations(gctx, customerID, st)
		snap.Invitations = dedupeInvitations(inv)
		return err
	})
	accountsDone := make(chan struct{})
	if opts.Accounts || opts.Links {
		g.Go(func() error {
			defer close(accountsDone)
			acc, err := c.getAccountsInfo(gctx, customerID, st)
			snap.Accounts = acc
			snap.AccountsFetched = err == nil
			return err
		})
	}
	if opts.Links {
		g.Go(func() error {
			accounts := func() ([]int64, bool) {
				select {
				case <-accountsDone:
				case <-gctx.Done():
					return nil, false
				}
				if !snap.AccountsFetched {
					return nil, false
				}
				ids := make([]int64, len(snap.Accounts))
				for i, a := range snap.Accounts {
					ids[i] = a.ID
				}
				return ids, true
			}
			searches, links, err := c.fetchLinks(gctx, customerID, st, accounts)
			snap.LinkSearches, snap.Links = searches, links
			return err
		})
	}
	err := g.Wait()
	stats := FetchStats{Calls: int(st.calls.Load()), Retries: int(st.retries.Load())}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			// A sibling failure is not the cause; the caller's ctx ended.
			err = errors.Join(ctx.Err(), err)
		}
		return nil, stats, err
	}
	snap.Users, snap.Roles = users, roles
	snap.FetchedAt = time.Now().UTC()
	stats.Users, stats.Invitations, stats.Unreadable = len(snap.Users), len(snap.Invitations), snap.Unreadable()
	stats.Links = len(snap.Links)
	if err := checkUnreadable(customerID, snap.Users, opts.MaxUnreadableFraction); err != nil {
		return nil, stats, err
	}
	return snap, stats, nil
}

// ErrTooManyUnreadable is returned (wrapped) when more of a customer's
// listed users are unreadable than FetchOptions.MaxUnreadableFraction.
var ErrTooManyUnreadable = errors.New("too many unreadable users")

func checkUnreadable(customerID int64, users []msads.User, maxFraction float64) error {
	var n int
	var codes []string
	for i := range users {
		u := &users[i]
		if u.Readable() {
			continue
		}
		n++
		if len(codes) < 3 {
			codes = append(codes, fmt.Sprintf("user %d: %s", u.ID, u.DetailError))
		}
	}
	if n == 0 || float64(n) <= maxFraction*float64(len(users)) {
		return nil
	}
	return fmt.Errorf("customer %d: %w: GetUser failed for %d of %d listed users (more than sync.max_unreadable_fraction %g); first: %s",
		customerID, ErrTooManyUnreadable, n, len(users), maxFraction, strings.Join(codes, "; "))
}

// unreadable returns the detail status of a GetUser failure that concerns
// the user alone (the call was refused permanently for it: 1001, 106, a
// lone 105, other 4xx codes, a null User), or "" when the failure should
// fail the customer (transient, throttled, cancelled, run-fatal, 5xx).
func unreadable(err error) string {
	ae := asAPIError(err)
	if ae == nil || ae.Class != ClassPermanent && ae.Class != ClassAuth || IsRunFatal(err) || ae.Malformed {
		return ""
	}
	if errors.Is(err, errNullUser) {
		return msads.DetailUnreadable
	}
	if ae.HTTPStatus < 400 || ae.HTTPStatus >= 500 || len(ae.Errors) == 0 {
		// Not a fault about this user: a gateway's page, a missing route.
		return ""
	}
	for _, d := range ae.Errors {
		if d.Code == 1001 || d.Code == 210 || strings.EqualFold(d.ErrorCode, "UserNotFound") {
			return msads.DetailNotFound
		}
	}
	return msads.DetailUnreadable
}

func (c *Client) fetchUsers(ctx context.Context, customerID int64, cache *UserCache, st *callStats) ([]msads.User, []msads.Role, error) {
	infos, err := c.getUsersInfo(ctx, customerID, st)
	if err != nil {
		return nil, nil, err
	}
	listed := make([]UserInfo, 0, len(infos))
	seen := make(map[int64]bool, len(infos))
	for _, ui := range infos {
		if !seen[ui.ID] {
			seen[ui.ID] = true
			listed = append(listed, ui)
		}
	}
	users := make([]msads.User, len(listed))
	perUser := make([][]msads.Role, len(listed))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(userFetchConcurrency)
	for i, ui := range listed {
		g.Go(func() error {
			u, rs, err := cache.get(gctx, c, customerID, ui.ID, st)
			if err != nil {
				status := unreadable(err)
				if status == "" || gctx.Err() != nil {
					return err
				}
				ae := asAPIError(err)
				users[i] = msads.User{ID: ui.ID, CustomerID: customerID, UserName: ui.UserName, DetailStatus: status,
					DetailTrackingID: ae.TrackingID, DetailError: ae.FirstCode()}
				if len(ae.Errors) > 0 {
					users[i].DetailCode = ae.Errors[0].Code
				}
				if errors.Is(err, errNullUser) {
					users[i].DetailError = "GetUser answered User null"
				}
				c.log.WarnContext(ctx, "listed user cannot be read; keeping its stored details and roles",
					slog.Int64("customer_id", customerID), slog.Int64("user_id", ui.ID), slog.String("detail_status", status),
					slog.String("error", err.Error()))
				return nil
			}
			u.CustomerID = customerID
			users[i] = u
			perUser[i] = rs
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return users, mergeRoles(perUser), nil
}

// mergeRoles flattens the roles into fresh slices (the cache's are shared),
// merging duplicates of one (user, customer, role) key: the load side keys
// roles that way. Customer-level access (nil AccountIDs) wins over a list.
func mergeRoles(perUser [][]msads.Role) []msads.Role {
	type key struct {
		user, customer int64
		role           int32
	}
	var out []msads.Role
	idx := make(map[key]int)
	for _, rs := range perUser {
		for _, r := range rs {
			r.AccountIDs = slices.Clone(r.AccountIDs)
			r.LinkedAccountIDs = slices.Clone(r.LinkedAccountIDs)
			k := key{r.UserID, r.CustomerID, r.RoleID}
			i, dup := idx[k]
			if !dup {
				idx[k] = len(out)
				out = append(out, r)
				continue
			}
			have := &out[i]
			if have.AccountIDs == nil || r.AccountIDs == nil {
				have.AccountIDs = nil
			} else {
				have.AccountIDs = union(have.AccountIDs, r.AccountIDs)
			}
			have.LinkedAccountIDs = union(have.LinkedAccountIDs, r.LinkedAccountIDs)
			if have.CustomerLinkPermission == "" {
				have.CustomerLinkPermission = r.CustomerLinkPermission
			}
		}
	}
	return out
}

// union merges two account lists: nil and nil stay nil (none given), and
// anything else is a sorted non-nil list ([] and [] stay []).
func union(a, b []int64) []int64 {
	if a == nil && b == nil {
		return nil
	}
	out := append(make([]int64, 0, len(a)+len(b)), a...)
	out = append(out, b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func dedupeInvitations(in []msads.Invitation) []msads.Invitation {
	seen := make(map[int64]bool, len(in))
	out := in[:0:0]
	for _, inv := range in {
		if !seen[inv.ID] {
			seen[inv.ID] = true
			out = append(out, inv)
		}
	}
	return out
}
