package extract

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

// linksSetup starts a simulator whose principal is Super Admin everywhere,
// with the links given.
func linksSetup(t *testing.T, links func(ds *msadstest.Dataset) []msads.ClientLink) (*bundle, *msadstest.Dataset) {
	t.Helper()
	b := setup(t)
	ds := b.srv.Dataset()
	b.srv.SetLinks(links(ds))
	return b, ds
}

func accountsOf(ds *msadstest.Dataset, cid int64) []int64 {
	var out []int64
	for _, a := range ds.Accounts {
		if a.CustomerID == cid {
			out = append(out, a.ID)
		}
	}
	return out
}

// The three searches page with Size 100 until a short page: 230 customer
// links into the customer take 3 calls, 100 links it holds as an agency 2
// (the second page is empty), its accounts' links 1 (In, ≤ 10 accounts).
func TestFetchCustomerLinksPaging(t *testing.T) {
	t.Parallel()
	var c0 int64
	b, ds := linksSetup(t, func(ds *msadstest.Dataset) []msads.ClientLink {
		c0 = ds.Customers[0].ID
		var out []msads.ClientLink
		for i := range int64(230) {
			out = append(out, msads.ClientLink{Type: msads.LinkTypeCustomer, ClientEntityID: c0, ManagingCustomerID: 700_000 + i,
				Status: "Active", CustomerLinkPermission: "Standard"})
		}
		for i := range int64(100) {
			out = append(out, msads.ClientLink{Type: msads.LinkTypeAccount, ClientEntityID: 900_000 + i, ManagingCustomerID: c0, Status: "LinkPending"})
		}
		for i, a := range accountsOf(ds, c0) {
			out = append(out, msads.ClientLink{Type: msads.LinkTypeAccount, ClientEntityID: a, ManagingCustomerID: 800_000 + int64(i), Status: "SomethingNew"})
		}
		// Another customer's link: not found.
		out = append(out, msads.ClientLink{Type: msads.LinkTypeCustomer, ClientEntityID: ds.Customers[1].ID, ManagingCustomerID: 1, Status: "Active"})
		return out
	})
	_ = ds
	ctx := testCtx(t)
	// The principal must be Super Admin in the customer to search its
	// customer links.
	roles := []msads.Role{{CustomerID: c0, RoleID: msads.RoleSuperAdmin}}
	b.srv.SetRoles(b.srv.Dataset().PrincipalID(), roles)
	snap, stats, err := b.client.FetchCustomer(ctx, c0, nil, FetchOptions{Links: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.LinksStatus(); got != msads.LinksComplete {
		t.Errorf("links status %q (%s), want complete", got, snap.LinksError())
	}
	nAcc := len(accountsOf(b.srv.Dataset(), c0))
	if want := 230 + 100 + nAcc; len(snap.Links) != want || stats.Links != want {
		t.Errorf("links = %d (stats %d), want %d", len(snap.Links), stats.Links, want)
	}
	if got := b.srv.Calls(msadstest.OpSearchClientLinks); got != 3+2+1 {
		t.Errorf("SearchClientLinks calls = %d, want 6", got)
	}
	if !snap.AccountsFetched {
		t.Error("links need the accounts: AccountsFetched false")
	}
	for _, l := range snap.Links {
		switch {
		case l.Type == msads.LinkTypeAccount && l.ManagingCustomerID >= 800_000 && l.ManagingCustomerID < 900_000:
			if l.ClientCustomerID != c0 || l.Status != "SomethingNew" {
				t.Errorf("account link into the customer: %+v, want client customer %d and the unknown status kept", l, c0)
			}
		case l.Type == msads.LinkTypeAccount:
			if l.ClientCustomerID != 0 {
				t.Errorf("link held as an agency: client customer %d, want unknown (0)", l.ClientCustomerID)
			}
		case l.Type == msads.LinkTypeCustomer:
			if l.ClientCustomerID != c0 || l.CustomerLinkPermission != "Standard" {
				t.Errorf("customer link %+v", l)
			}
		default:
			t.Errorf("link of type %q (an empty Type is an AccountLink)", l.Type)
		}
	}
}

// A credential whose user is not Super Admin gets 106 for the link searches:
// recorded per search, the customer still syncs. A Standard User scoped to
// one account may search that account's links only.
func TestFetchCustomerLinksNotPermitted(t *testing.T) {
	t.Parallel()
	var c0 int64
	b, _ := linksSetup(t, func(ds *msadstest.Dataset) []msads.ClientLink {
		c0 = ds.Customers[0].ID
		var out []msads.ClientLink
		for _, a := range accountsOf(ds, c0) {
			out = append(out, msads.ClientLink{Type: msads.LinkTypeAccount, ClientEntityID: a, ManagingCustomerID: 42, Status: "Active"})
		}
		return append(out, msads.ClientLink{Type: msads.LinkTypeCustomer, ClientEntityID: c0, ManagingCustomerID: 43, Status: "Active"})
	})
	ctx := testCtx(t)
	p := b.srv.Dataset().PrincipalID()
	accounts := accountsOf(b.srv.Dataset(), c0)

	b.srv.SetRoles(p, []msads.Role{{CustomerID: c0, RoleID: msads.RoleViewer}})
	snap, _, err := b.client.FetchCustomer(ctx, c0, nil, FetchOptions{Links: true})
	if err != nil {
		t.Fatalf("a Viewer's link searches failed the customer: %v", err)
	}
	if got := snap.LinksStatus(); got != msads.LinksNotPermitted || len(snap.Links) != 0 {
		t.Errorf("Viewer: status %q, %d links; want not_permitted, none", got, len(snap.Links))
	}
	if e := snap.LinksError(); e == "" || !contains(e, "106") {
		t.Errorf("links error %q, want the 106 named", e)
	}

	b.srv.SetRoles(p, []msads.Role{{CustomerID: c0, RoleID: msads.RoleStandardUser, AccountIDs: accounts[:1]}})
	snap, _, err = b.client.FetchCustomer(ctx, c0, nil, FetchOptions{Links: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.LinksStatus(); got != msads.LinksPartial {
		t.Errorf("Standard on one account: status %q, want partial", got)
	}
	var into msads.LinkSearch
	for _, ls := range snap.LinkSearches {
		if ls.Kind == msads.LinkSearchIntoAccounts {
			into = ls
		}
	}
	if !slices.Equal(into.AccountIDs, accounts[:1]) || into.Complete {
		t.Errorf("into_accounts = %+v, want only account %d searched", into, accounts[0])
	}
	if len(snap.Links) != 1 || snap.Links[0].ClientEntityID != accounts[0] {
		t.Errorf("links = %+v, want the one into account %d", snap.Links, accounts[0])
	}

	// Other failures fail the customer, as for invitations.
	b.srv.SetRoles(p, []msads.Role{{CustomerID: c0, RoleID: msads.RoleSuperAdmin}})
	b.srv.SetFault(msadstest.OpSearchClientLinks, msadstest.Fault{Code: 3030})
	if _, _, err := b.client.FetchCustomer(ctx, c0, nil, FetchOptions{Links: true}); err == nil {
		t.Error("a SearchClientLinks fault other than 106 did not fail the customer")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// linkPages serves SearchClientLinks pages (by PageInfo.Index) from pages,
// an empty page past the end, behind a token endpoint that always grants.
func linkPages(t *testing.T, pages ...string) (*Client, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"token_type":"Bearer","expires_in":3600,"access_token":"A","refresh_token":"R"}`)
	})
	mux.HandleFunc("/api/CustomerManagement/v13/ClientLinks/Search", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req struct{ PageInfo struct{ Index, Size int } }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.PageInfo.Size != 100 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if req.PageInfo.Index >= len(pages) {
			fmt.Fprint(w, `{"ClientLinks":[]}`)
			return
		}
		fmt.Fprint(w, pages[req.PageInfo.Index])
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := New(Config{APIURL: srv.URL + "/api", TokenURL: srv.URL + "/token", DeveloperToken: "D", ClientID: "c",
		RefreshToken: "S", RequestsPerSecond: 1000, ThrottleWait: time.Millisecond, RequestTimeout: 2 * time.Second,
		RetryMaxElapsed: 20 * time.Millisecond, RetryInitialInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c, &calls
}

func linksJSON(from, n int, nulls int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`{"Type":"AccountLink","ClientEntityId":"%d","ManagingCustomerId":"7","Status":"Active"}`, from+i))
	}
	for range nulls {
		parts = append(parts, "null")
	}
	return `{"ClientLinks":[` + strings.Join(parts, ",") + `]}`
}

// A full page (100 entries) with a null entry among them is still a full
// page: the search asks for the next one instead of stopping with what it
// has (which would remove, as omitted, the links of the pages not read).
// A short page exactly at 100 (100 links, then an empty page) ends it.
func TestSearchClientLinksNullEntryInFullPage(t *testing.T) {
	t.Parallel()
	c, calls := linkPages(t, linksJSON(1, 99, 1), linksJSON(1000, 3, 0))
	links, err := c.SearchClientLinks(t.Context(), 1, linkPredicate("ClientCustomerId", "Equals", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 102 || calls.Load() != 2 {
		t.Errorf("got %d links in %d calls, want 102 in 2", len(links), calls.Load())
	}

	c, calls = linkPages(t, linksJSON(1, 100, 0))
	links, err = c.SearchClientLinks(t.Context(), 1, linkPredicate("ClientCustomerId", "Equals", "1"))
	if err != nil || len(links) != 100 || calls.Load() != 2 {
		t.Errorf("exactly 100: got %d links in %d calls (%v), want 100 in 2", len(links), calls.Load(), err)
	}

	// A full page of nulls is not an answer to page on for ever.
	c, calls = linkPages(t, linksJSON(1, 0, 100), linksJSON(1, 0, 100), linksJSON(1, 0, 100))
	if _, err := c.SearchClientLinks(t.Context(), 1, linkPredicate("ClientCustomerId", "Equals", "1")); err == nil || calls.Load() != 1 {
		t.Errorf("a page of 100 nulls: err %v after %d calls, want an error after 1", err, calls.Load())
	}
}

// A service that refuses ClientAccountId In with a permanent fault whose
// code the reference does not give (not only 3030 or 201) is asked each
// account with Equals, as the reference has a client customer's user do;
// the customer does not fail on the In.
func TestSearchAccountLinksInRefusedAnyCode(t *testing.T) {
	t.Parallel()
	var in, equals atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"token_type":"Bearer","expires_in":3600,"access_token":"A","refresh_token":"R"}`)
	})
	mux.HandleFunc("/api/CustomerManagement/v13/ClientLinks/Search", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Predicates []struct{ Field, Operator, Value string }
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if len(req.Predicates) != 1 || req.Predicates[0].Operator == "In" {
			in.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"TrackingId":"t","Type":"AdApiFaultDetail","Errors":[{"Code":4321,"ErrorCode":"SomethingNew"}]}`)
			return
		}
		equals.Add(1)
		fmt.Fprintf(w, `{"ClientLinks":[{"ClientEntityId":"%s","ManagingCustomerId":"7","Status":"Active"}]}`, req.Predicates[0].Value)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := New(Config{APIURL: srv.URL + "/api", TokenURL: srv.URL + "/token", DeveloperToken: "D", ClientID: "c",
		RefreshToken: "S", RequestsPerSecond: 1000, ThrottleWait: time.Millisecond, RequestTimeout: 2 * time.Second,
		RetryMaxElapsed: 20 * time.Millisecond, RetryInitialInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := c.searchAccountLinks(t.Context(), 1, []int64{1001, 1002, 1003}, nil)
	if err != nil {
		t.Fatalf("In refused with code 4321 failed the customer: %v", err)
	}
	if len(acc.links) != 3 || !acc.search.Complete || in.Load() != 1 || equals.Load() != 3 {
		t.Errorf("links %d, complete %v, In calls %d, Equals calls %d: want 3, true, 1, 3", len(acc.links), acc.search.Complete, in.Load(), equals.Load())
	}
}
