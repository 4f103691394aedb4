package extract

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

func TestFetchCustomerMatchesDataset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	cache := NewUserCache()
	for _, cid := range b.ds.CustomerIDs() {
		snap, st, err := b.client.FetchCustomer(ctx, cid, cache, FetchOptions{Accounts: true})
		if err != nil {
			t.Fatalf("FetchCustomer(%d): %v", cid, err)
		}
		want := b.ds.ListedUserIDs(cid)
		if got := snap.UserIDs(); !slices.Equal(got, want) {
			t.Errorf("customer %d users = %v, want %v", cid, got, want)
		}
		for _, u := range snap.Users {
			if u.CustomerID != cid {
				t.Errorf("user %d CustomerID = %d, want listing customer %d", u.ID, u.CustomerID, cid)
			}
			if u.HomeCustomerID == 0 || u.Email == "" || u.LastModifiedTime == nil || u.Lcid == "" {
				t.Errorf("user %d incompletely decoded: %+v", u.ID, u)
			}
		}
		// Every role returned must be visible (reachable customer) and
		// customer-level roles must have nil AccountIDs.
		reach := map[int64]bool{}
		for _, id := range b.ds.CustomerIDs() {
			reach[id] = true
		}
		for _, r := range snap.Roles {
			if !reach[r.CustomerID] {
				t.Errorf("role of unreachable customer %d returned", r.CustomerID)
			}
			if (r.RoleID == msads.RoleSuperAdmin || r.RoleID == msads.RoleStandardUser) && r.AccountIDs != nil {
				t.Errorf("customer-level role %d has AccountIDs %v", r.RoleID, r.AccountIDs)
			}
		}
		var wantInv int
		for _, inv := range b.ds.Invitations {
			if inv.CustomerID == cid {
				wantInv++
			}
		}
		if len(snap.Invitations) != wantInv || st.Invitations != wantInv {
			t.Errorf("customer %d invitations = %d (stats %d), want %d", cid, len(snap.Invitations), st.Invitations, wantInv)
		}
		for _, inv := range snap.Invitations {
			if inv.ExpirationDate == nil || inv.Email == "" || inv.CustomerID != cid {
				t.Errorf("invitation incompletely decoded: %+v", inv)
			}
		}
		if !snap.AccountsFetched || len(snap.Accounts) < 2 {
			t.Errorf("customer %d accounts = %d fetched=%v", cid, len(snap.Accounts), snap.AccountsFetched)
		}
		if st.Users != len(snap.Users) || st.Calls == 0 {
			t.Errorf("stats = %+v", st)
		}
	}
	if got, want := b.srv.Calls(msadstest.OpGetUser), b.ds.DistinctListedUsers(); got != want {
		t.Errorf("GetUser calls = %d, want %d (one per distinct user)", got, want)
	}
}

func TestUserCacheSingleflightAcrossCustomers(t *testing.T) {
	t.Parallel()
	// Two customers listing the same 30 users, fetched concurrently.
	ds := &msadstest.Dataset{Customers: []msads.Customer{{ID: 1001, Name: "A"}, {ID: 1002, Name: "B"}}}
	for i := range int64(30) {
		ds.Users = append(ds.Users, msads.User{ID: 500 + i, HomeCustomerID: 1001, UserName: "u", Email: "u@x"})
		ds.Roles = append(ds.Roles,
			msads.Role{UserID: 500 + i, CustomerID: 1001, RoleID: msads.RoleSuperAdmin},
			msads.Role{UserID: 500 + i, CustomerID: 1002, RoleID: msads.RoleViewer, AccountIDs: []int64{7}})
	}
	srv := msadstest.NewServer(ds)
	t.Cleanup(srv.Close)
	srv.SetFault(msadstest.OpGetUser, msadstest.Fault{Latency: 5e6})
	c, err := New(simConfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	cache := NewUserCache()
	var wg sync.WaitGroup
	stats := make([]FetchStats, 2)
	snaps := make([]*msads.Snapshot, 2)
	for i, cid := range []int64{1001, 1002} {
		wg.Go(func() {
			snap, st, err := c.FetchCustomer(ctx, cid, cache, FetchOptions{})
			if err != nil {
				t.Errorf("FetchCustomer(%d): %v", cid, err)
			}
			snaps[i], stats[i] = snap, st
		})
	}
	wg.Wait()
	if got := srv.Calls(msadstest.OpGetUser); got != 30 {
		t.Errorf("GetUser calls = %d, want 30", got)
	}
	if got := stats[0].Calls + stats[1].Calls; got != 30+4 {
		t.Errorf("stats calls total = %d, want 34", got)
	}
	for i, s := range snaps {
		if s == nil || len(s.Users) != 30 || len(s.Roles) != 60 {
			t.Fatalf("snapshot %d incomplete", i)
		}
		if s.Users[0].CustomerID != s.CustomerID {
			t.Errorf("user CustomerID = %d, want %d", s.Users[0].CustomerID, s.CustomerID)
		}
	}
}

func TestFetchCustomerFailsWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	bad := b.ds.CustomerIDs()[1]
	b.srv.SetFault(msadstest.AnyOp, msadstest.Fault{CustomerID: bad, Code: 106})
	snap, _, err := b.client.FetchCustomer(ctx, bad, NewUserCache(), FetchOptions{Accounts: true})
	if err == nil || snap != nil {
		t.Fatalf("FetchCustomer(bad) = %v, %v; want error, nil snapshot", snap, err)
	}
	if Classify(err) != ClassPermanent {
		t.Errorf("class = %v, want permanent", Classify(err))
	}
	good := b.ds.CustomerIDs()[0]
	if _, _, err := b.client.FetchCustomer(ctx, good, NewUserCache(), FetchOptions{Accounts: true}); err != nil {
		t.Errorf("good customer failed: %v", err)
	}
	// Unknown customer: the simulator answers 106.
	if _, _, err := b.client.FetchCustomer(ctx, 424242, NewUserCache(), FetchOptions{}); err == nil || !asAPIError(err).HasCode(106) {
		t.Errorf("unknown customer: err = %v, want code 106", err)
	}
}

func TestSharedUserFailureDoesNotLeakAcrossCustomers(t *testing.T) {
	t.Parallel()
	ds := &msadstest.Dataset{Customers: []msads.Customer{{ID: 2001, Name: "A"}, {ID: 2002, Name: "B"}}}
	for i := range int64(10) {
		ds.Users = append(ds.Users, msads.User{ID: 700 + i, HomeCustomerID: 2001, UserName: "u"})
		ds.Roles = append(ds.Roles,
			msads.Role{UserID: 700 + i, CustomerID: 2001, RoleID: msads.RoleSuperAdmin},
			msads.Role{UserID: 700 + i, CustomerID: 2002, RoleID: msads.RoleSuperAdmin})
	}
	srv := msadstest.NewServer(ds)
	t.Cleanup(srv.Close)
	// Customer A's GetUser calls fail permanently (after a delay, so that
	// B's lookups join them in flight); B must still succeed.
	srv.SetFault(msadstest.OpGetUser, msadstest.Fault{CustomerID: 2001, Code: 106, Latency: 20e6})
	c, err := New(simConfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	cache := NewUserCache()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, cid := range []int64{2001, 2002} {
		wg.Go(func() { _, _, errs[i] = c.FetchCustomer(ctx, cid, cache, FetchOptions{}) })
	}
	wg.Wait()
	// Which customer leads each shared fetch is a race; B must succeed
	// whatever happened to A's calls.
	if errs[1] != nil {
		t.Errorf("customer B failed by A's fault: %v", errs[1])
	}
	// A's users are unreadable in A's context: past the default fraction
	// (0), A fails naming the code.
	if errs[0] != nil && (!errors.Is(errs[0], ErrTooManyUnreadable) || !strings.Contains(errs[0].Error(), "106 UserIsNotAuthorized")) {
		t.Errorf("customer A error = %v, want too many unreadable users naming code 106", errs[0])
	}
}

func TestFetchCustomerMergesDuplicateRoles(t *testing.T) {
	t.Parallel()
	got := mergeRoles([][]msads.Role{
		{{UserID: 1, CustomerID: 2, RoleID: 16, AccountIDs: []int64{5}}, {UserID: 1, CustomerID: 2, RoleID: 16, AccountIDs: []int64{3, 5}}},
		{{UserID: 4, CustomerID: 2, RoleID: 41}, {UserID: 4, CustomerID: 2, RoleID: 41, AccountIDs: []int64{9}}},
	})
	want := []msads.Role{{UserID: 1, CustomerID: 2, RoleID: 16, AccountIDs: []int64{3, 5}}, {UserID: 4, CustomerID: 2, RoleID: 41}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergeRoles = %+v, want %+v", got, want)
	}
}

func TestHungSharedUserDoesNotHoldUpOtherCustomers(t *testing.T) {
	t.Parallel()
	ds := &msadstest.Dataset{Customers: []msads.Customer{{ID: 3001, Name: "A"}, {ID: 3002, Name: "B"}}}
	for i := range int64(4) {
		ds.Users = append(ds.Users, msads.User{ID: 900 + i, HomeCustomerID: 3001, UserName: "u"})
		ds.Roles = append(ds.Roles,
			msads.Role{UserID: 900 + i, CustomerID: 3001, RoleID: msads.RoleViewer},
			msads.Role{UserID: 900 + i, CustomerID: 3002, RoleID: msads.RoleViewer})
	}
	srv := msadstest.NewServer(ds)
	t.Cleanup(srv.Close)
	// Every GetUser in A's context hangs; A retries until it gives up.
	srv.SetFault(msadstest.OpGetUser, msadstest.Fault{CustomerID: 3001, Hang: 1000})
	cfg := simConfig(t, srv)
	cfg.RequestTimeout, cfg.RetryMaxElapsed = time.Second, 6*time.Second
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	cache := NewUserCache()
	aStarted := make(chan struct{})
	go func() {
		close(aStarted)
		_, _, _ = c.FetchCustomer(ctx, 3001, cache, FetchOptions{})
	}()
	<-aStarted
	// Start B only once A's GetUser calls are in flight and lead the cache
	// entries (A fetches 4 users at a time).
	for deadline := time.Now().Add(5 * time.Second); srv.Calls(msadstest.OpGetUser) < 4; {
		if time.Now().After(deadline) {
			t.Fatal("A's GetUser calls never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	snap, _, err := c.FetchCustomer(ctx, 3002, cache, FetchOptions{})
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	if len(snap.Users) != 4 || snap.Unreadable() != 0 {
		t.Errorf("B's users = %d (unreadable %d), want 4 readable", len(snap.Users), snap.Unreadable())
	}
	// B waits at most for A's first (hung) attempt to time out, never for
	// A's retries (6 s).
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("B took %v: held up by A's hung GetUser retries", d)
	}
}
