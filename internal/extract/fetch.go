package extract

import (
	"context"
	"errors"
	"slices"
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
	Users       int
	Invitations int
	Retries     int
}

// UserCache shares GetUser results between the customers of one run: a user
// listed by several customers is fetched once, even when two customers ask
// at the same time. Failed fetches are not cached. Make one per run.
type UserCache struct {
	mu      sync.Mutex
	entries map[int64]*userEntry
	hits    int
	misses  int
}

type userEntry struct {
	done     chan struct{}
	customer int64 // the customer whose call fetches it
	user     msads.User
	roles    []msads.Role
	err      error
}

// NewUserCache returns an empty cache.
func NewUserCache() *UserCache {
	return &UserCache{entries: make(map[int64]*userEntry)}
}

// Stats returns how many lookups were served from the cache (or joined an
// in-flight fetch) and how many fetched.
func (uc *UserCache) Stats() (hits, misses int) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.hits, uc.misses
}

// get returns the user and roles, fetching them at most once at a time.
func (uc *UserCache) get(ctx context.Context, c *Client, customerID, userID int64, st *callStats) (msads.User, []msads.Role, error) {
	for {
		uc.mu.Lock()
		e, ok := uc.entries[userID]
		if !ok {
			e = &userEntry{done: make(chan struct{}), customer: customerID}
			uc.entries[userID] = e
			uc.misses++
			uc.mu.Unlock()
			e.user, e.roles, e.err = c.getUser(ctx, customerID, userID, st)
			if e.err != nil {
				uc.mu.Lock()
				delete(uc.entries, userID) // let a later caller try again
				uc.mu.Unlock()
			}
			close(e.done)
			return e.user, e.roles, e.err
		}
		uc.hits++
		uc.mu.Unlock()
		select {
		case <-e.done:
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
// GetUser for each listed user (through cache), SearchUserInvitations, and
// GetAccountsInfo when withAccounts. Any failed call fails the whole
// customer: the snapshot is returned only when complete. Stats are returned
// in every case.
func (c *Client) FetchCustomer(ctx context.Context, customerID int64, cache *UserCache, withAccounts bool) (*msads.Snapshot, FetchStats, error) {
	if cache == nil {
		cache = NewUserCache()
	}
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
	if withAccounts {
		g.Go(func() error {
			acc, err := c.getAccountsInfo(gctx, customerID, st)
			snap.Accounts = acc
			snap.AccountsFetched = err == nil
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
	stats.Users, stats.Invitations = len(snap.Users), len(snap.Invitations)
	return snap, stats, nil
}

func (c *Client) fetchUsers(ctx context.Context, customerID int64, cache *UserCache, st *callStats) ([]msads.User, []msads.Role, error) {
	infos, err := c.getUsersInfo(ctx, customerID, st)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]int64, 0, len(infos))
	seen := make(map[int64]bool, len(infos))
	for _, ui := range infos {
		if !seen[ui.ID] {
			seen[ui.ID] = true
			ids = append(ids, ui.ID)
		}
	}
	users := make([]msads.User, len(ids))
	perUser := make([][]msads.Role, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(userFetchConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			u, rs, err := cache.get(gctx, c, customerID, id, st)
			if err != nil {
				return err
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

func union(a, b []int64) []int64 {
	if a == nil && b == nil {
		return nil
	}
	out := slices.Concat(a, b)
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
