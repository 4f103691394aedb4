package extract

import (
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

// A user stays in the cache only while a customer that lists it has not
// fetched yet; a run ends with an empty cache and one GetUser per distinct
// user (figure 5's bounded memory, figure 6's minimum of calls).
func TestUserCacheKeepsUsersOnlyWhileAnotherCustomerNeedsThem(t *testing.T) {
	t.Parallel()
	ds := &msadstest.Dataset{Customers: []msads.Customer{{ID: 1001, Name: "A"}, {ID: 1002, Name: "B"}, {ID: 1003, Name: "C"}}}
	user := func(id int64, customers ...int64) {
		ds.Users = append(ds.Users, msads.User{ID: id, HomeCustomerID: customers[0], UserName: "u", Email: "u@x"})
		for _, c := range customers {
			ds.Roles = append(ds.Roles, msads.Role{UserID: id, CustomerID: c, RoleID: msads.RoleStandardUser})
		}
	}
	user(1, 1001)             // A only
	user(2, 1001, 1002)       // A and B
	user(3, 1001, 1003)       // A and C (C outside the run below)
	user(4, 1002)             // B only
	user(5, 1001, 1002, 1003) // everyone
	srv := msadstest.NewServer(ds)
	t.Cleanup(srv.Close)
	c, err := New(simConfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)

	cache := NewRunUserCache([]int64{1001, 1002})
	if _, _, err := c.FetchCustomer(ctx, 1001, cache, FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	// B still needs 2 and 5; C is not in the run, so 3 is not kept for it.
	if got := cache.Len(); got != 2 {
		t.Errorf("after A: cache holds %d users, want 2 (those B lists)", got)
	}
	snap, _, err := c.FetchCustomer(ctx, 1002, cache, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Users) != 3 || len(snap.Roles) != 6 {
		// users 2, 4, 5: roles 2 (A, B), 4 (B), 5 (A, B, C)
		t.Errorf("B: %d users, %d roles, want 3 users, 6 roles", len(snap.Users), len(snap.Roles))
	}
	if got := cache.Len(); got != 0 {
		t.Errorf("after the run: cache holds %d users, want 0", got)
	}
	if got := srv.Calls(msadstest.OpGetUser); got != 5 {
		t.Errorf("GetUser calls = %d, want 5 (one per distinct user)", got)
	}
	if hits, misses := cache.Stats(); hits != 2 || misses != 5 {
		t.Errorf("stats: hits %d misses %d, want 2 and 5", hits, misses)
	}

	// Without the run's customers, a user with a role in a customer that
	// never fetches stays until that customer finishes.
	cache = NewUserCache()
	if _, _, err := c.FetchCustomer(ctx, 1002, cache, FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := cache.Len(); got != 2 { // 2 (for A), 5 (for A and C)
		t.Errorf("after B: cache holds %d users, want 2", got)
	}
	if _, _, err := c.FetchCustomer(ctx, 1001, cache, FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := cache.Len(); got != 2 { // 3 and 5, for C
		t.Errorf("after B and A: cache holds %d users, want 2", got)
	}
	if _, _, err := c.FetchCustomer(ctx, 1003, cache, FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := cache.Len(); got != 0 {
		t.Errorf("after every customer: cache holds %d users, want 0", got)
	}
}

// Customers fetched concurrently: every user once, an empty cache at the end.
func TestUserCacheConcurrentRunEndsEmpty(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(77, 12, 40)
	srv := msadstest.NewServer(ds.Clone())
	t.Cleanup(srv.Close)
	c, err := New(simConfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	cache := NewRunUserCache(ds.CustomerIDs())
	g, ctx := errgroup.WithContext(testCtx(t))
	g.SetLimit(4)
	for _, cid := range ds.CustomerIDs() {
		g.Go(func() error {
			snap, _, err := c.FetchCustomer(ctx, cid, cache, FetchOptions{})
			if err == nil && len(snap.Users) != len(ds.ListedUserIDs(cid)) {
				t.Errorf("customer %d: %d users, want %d", cid, len(snap.Users), len(ds.ListedUserIDs(cid)))
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := srv.Calls(msadstest.OpGetUser), ds.DistinctListedUsers(); got != want {
		t.Errorf("GetUser calls = %d, want %d", got, want)
	}
	if got := cache.Len(); got != 0 {
		t.Errorf("cache holds %d users after the run, want 0", got)
	}
}
