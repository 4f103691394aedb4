package load

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/msads"
)

// complete are the three link searches of a customer, all complete, with
// accounts as the searched accounts.
func complete(accounts ...int64) []msads.LinkSearch {
	return []msads.LinkSearch{
		{Kind: msads.LinkSearchIntoCustomer, Complete: true},
		{Kind: msads.LinkSearchIntoAccounts, Complete: true, AllAccounts: true, AccountIDs: accounts},
		{Kind: msads.LinkSearchFromCustomer, Complete: true},
	}
}

func link(typ string, entity, managing int64, status string) msads.ClientLink {
	l := msads.ClientLink{Type: typ, ClientEntityID: entity, ManagingCustomerID: managing, Status: status,
		ManagingCustomerName: fmt.Sprint("Agency ", managing), ClientEntityName: fmt.Sprint("Entity ", entity),
		InviterEmail: fmt.Sprintf("boss@agency%d.example", managing), StartDate: ptime("2025-01-02T03:04:05Z")}
	if typ == msads.LinkTypeCustomer {
		l.ClientCustomerID = entity
		l.CustomerLinkPermission = "Administrative"
	} else {
		yes := true
		l.IsBillToClient = &yes
	}
	return l
}

// linksSnapshot is baseSnapshot with links of customer 1001 (accounts 11
// and 12): an Administrative customer link into it from agency 900, account
// links into 11 (agency 901) and 12 (agency 902, pending), and a link it
// holds as an agency for an outside account 5555.
func linksSnapshot() *msads.Snapshot {
	s := baseSnapshot()
	s.LinkSearches = complete(11, 12)
	into := func(l msads.ClientLink) msads.ClientLink { l.ClientCustomerID = cust; return l }
	s.Links = []msads.ClientLink{
		link(msads.LinkTypeCustomer, cust, 900, "Active"),
		into(link(msads.LinkTypeAccount, 11, 901, "Active")),
		into(link(msads.LinkTypeAccount, 12, 902, "LinkPending")),
		link(msads.LinkTypeAccount, 5555, cust, "Active"),
	}
	return s
}

const linkRows = `SELECT type, client_entity_id, managing_customer_id, status, coalesce(client_customer_id::text, 'NULL'),
	searched_from_customer_id, removed_at IS NULL FROM client_links ORDER BY 1, 2, 3`

func TestClientLinksUpsertHistoryRemovalReappear(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	if ch := b.write(t, linksSnapshot()); ch.Links != (Counts{Added: 4}) {
		t.Errorf("first write: links %+v, want 4 added", ch.Links)
	}
	equal(t, "links", b.strings(t, linkRows), []string{
		"AccountLink|11|901|Active|1001|1001|true",
		"AccountLink|12|902|LinkPending|1001|1001|true",
		"AccountLink|5555|1001|Active|NULL|1001|true",
		"CustomerLink|1001|900|Active|1001|1001|true",
	})
	equal(t, "customer_syncs", b.strings(t, `SELECT links_status, coalesce(links_error, ''), client_links_seen, client_links_added FROM customer_syncs`),
		[]string{"complete||4|4"})

	before := b.versions(t)
	if ch := b.write(t, linksSnapshot()); ch.Total() != 0 {
		t.Errorf("re-run = %v, want none", ch)
	}
	b.sameVersions(t, before, "rewritten by a no-change re-run")

	// 902's link becomes Active, 901's disappears.
	s := linksSnapshot()
	s.Links[2].Status = "Active"
	s.Links = slicesDelete(s.Links, 1)
	if ch := b.write(t, s); ch.Links != (Counts{Changed: 1, Removed: 1}) {
		t.Errorf("links %+v, want 1 changed, 1 removed", ch.Links)
	}
	// And comes back.
	if ch := b.write(t, linksSnapshot()); ch.Links != (Counts{Changed: 1, Reappeared: 1}) {
		t.Errorf("links %+v, want 1 changed (902 pending again), 1 reappeared", ch.Links)
	}
	equal(t, "history of 901", b.strings(t, `SELECT change, status FROM client_links_history WHERE managing_customer_id = 901 ORDER BY valid_from`),
		[]string{"added|Active", "removed|Active", "reappeared|Active"})
	historyChains(t, b, linksTable)
}

// Removal covers only what complete searches covered: a search the
// credential may not make removes nothing, and links of other customers are
// never in a customer's scope.
func TestClientLinksRemovalScope(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true}) // the guard: TestClientLinksRemovalGuard
	b.write(t, linksSnapshot())
	// Another customer's link (client account 99 of customer 2002, agency 777).
	other := &msads.Snapshot{CustomerID: 2002, LinkSearches: complete(99),
		Links: []msads.ClientLink{{Type: msads.LinkTypeAccount, ClientEntityID: 99, ManagingCustomerID: 777, Status: "Active", ClientCustomerID: 2002}}}
	b.write(t, other)

	// Nothing permitted: nothing removed, recorded.
	s := linksSnapshot()
	s.Links = nil
	s.LinkSearches = []msads.LinkSearch{
		{Kind: msads.LinkSearchIntoCustomer, Error: "106 UserIsNotAuthorized"},
		{Kind: msads.LinkSearchIntoAccounts, Error: "account 11: 106 UserIsNotAuthorized; account 12: 106 UserIsNotAuthorized", AccountIDs: []int64{}},
		{Kind: msads.LinkSearchFromCustomer, Error: "106 UserIsNotAuthorized"},
	}
	if ch := b.write(t, s); ch.Links.Total() != 0 {
		t.Errorf("not permitted: links %+v, want none", ch.Links)
	}
	equal(t, "not permitted keeps the rows", b.strings(t, `SELECT count(*) FROM client_links WHERE removed_at IS NULL`), []string{"5"})
	equal(t, "recorded", b.strings(t, `SELECT links_status, links_error FROM customer_syncs WHERE customer_id = 1001 ORDER BY finished_at DESC LIMIT 1`),
		[]string{"not_permitted|into_customer: 106 UserIsNotAuthorized; into_accounts: account 11: 106 UserIsNotAuthorized; account 12: 106 UserIsNotAuthorized; from_customer: 106 UserIsNotAuthorized"})

	// Not searched at all (links off): nothing touched, links_status NULL.
	s.LinkSearches = nil
	if ch := b.write(t, s); ch.Links.Total() != 0 {
		t.Errorf("not searched: links %+v, want none", ch.Links)
	}
	equal(t, "not searched", b.strings(t, `SELECT coalesce(links_status, 'NULL'), coalesce(client_links_seen::text, 'NULL') FROM customer_syncs
		WHERE customer_id = 1001 ORDER BY finished_at DESC LIMIT 1`), []string{"NULL|NULL"})

	// Only account 11's search and the agency search complete: 901's link
	// into 11 and the link 1001 holds go; the customer link (search not
	// permitted) and 902's link into 12 (not permitted) stay, and so does
	// customer 2002's link.
	s.LinkSearches = []msads.LinkSearch{
		{Kind: msads.LinkSearchIntoCustomer, Error: "106 UserIsNotAuthorized"},
		{Kind: msads.LinkSearchIntoAccounts, Error: "account 12: 106 UserIsNotAuthorized", AccountIDs: []int64{11}},
		{Kind: msads.LinkSearchFromCustomer, Complete: true},
	}
	if ch := b.write(t, s); ch.Links != (Counts{Removed: 2}) {
		t.Errorf("partial: links %+v, want 2 removed", ch.Links)
	}
	equal(t, "partial", b.strings(t, linkRows), []string{
		"AccountLink|11|901|Active|1001|1001|false",
		"AccountLink|12|902|LinkPending|1001|1001|true",
		"AccountLink|99|777|Active|2002|2002|true",
		"AccountLink|5555|1001|Active|NULL|1001|false",
		"CustomerLink|1001|900|Active|1001|1001|true",
	})
	equal(t, "status partial", b.strings(t, `SELECT links_status FROM customer_syncs WHERE customer_id = 1001 ORDER BY finished_at DESC LIMIT 1`),
		[]string{"partial"})

	// Every search complete, account 12 no longer the customer's (its
	// search is not made): its link goes too, found by its client customer.
	s.LinkSearches = complete(11)
	if ch := b.write(t, s); ch.Links != (Counts{Removed: 2}) {
		t.Errorf("complete: links %+v, want 2 removed (902's into 12, 900's customer link)", ch.Links)
	}
	equal(t, "customer 2002's link stays", b.strings(t, `SELECT managing_customer_id FROM client_links WHERE removed_at IS NULL`), []string{"777"})
	historyChains(t, b, linksTable)
}

// Complete searches that omit every link current in their scope, or more
// than the removal guard's fraction, fail the customer (nothing written)
// unless --allow-mass-removal: the API lists ended links too, so an empty
// answer is more likely a fault than four links gone.
func TestClientLinksRemovalGuard(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.write(t, linksSnapshot())
	before := b.versions(t)
	empty := linksSnapshot()
	empty.Links = nil
	threeGone := linksSnapshot()
	threeGone.Links = threeGone.Links[:1]
	for name, s := range map[string]*msads.Snapshot{"empty answer": empty, "3 of 4 gone": threeGone} {
		_, err := b.store.WriteSnapshot(t.Context(), b.runID, s, SyncInfo{})
		if !errors.Is(err, ErrRemovalGuard) {
			t.Errorf("%s: err = %v, want the removal guard", name, err)
		}
	}
	b.sameVersions(t, before, "written by a guarded snapshot")
	equal(t, "still current", b.strings(t, `SELECT count(*) FROM client_links WHERE removed_at IS NULL`), []string{"4"})

	// Half of them may go (the guard's default 50%), and a new one found
	// meanwhile does not count as current before.
	half := linksSnapshot()
	half.Links = append(half.Links[2:], link(msads.LinkTypeAccount, 6666, cust, "LinkPending"))
	if ch := b.write(t, half); ch.Links != (Counts{Added: 1, Removed: 2}) {
		t.Errorf("half: links %+v, want 1 added, 2 removed", ch.Links)
	}
	// With --allow-mass-removal, the empty answer is taken.
	allow := NewStore(b.pool, Options{Schema: b.schema, AllowMassRemoval: true})
	if _, err := allow.WriteSnapshot(t.Context(), b.runID, empty, SyncInfo{}); err != nil {
		t.Fatal(err)
	}
	equal(t, "all removed", b.strings(t, `SELECT count(*) FROM client_links WHERE removed_at IS NULL`), []string{"0"})
	historyChains(t, b, linksTable)
}

// A link between two synced customers, agency 2001 and client 2002, is found
// by both customers' searches, and both snapshots are written at the same
// moment, round after round, while the link changes, goes and comes back:
// its history still chains (no overlap, no gap, one open interval).
func TestClientLinkSeenByTwoCustomersConcurrently(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{AllowMassRemoval: true})
	const agency, client = 2001, 2002
	statuses := []string{"LinkPending", "Active", "", "UnlinkPending", "Active", "", "Inactive"}
	snapshot := func(cid int64, round int) *msads.Snapshot {
		s := &msads.Snapshot{CustomerID: cid, LinkSearches: complete(21, 22)}
		for a := int64(21); a <= 22; a++ {
			st := statuses[(round+int(a))%len(statuses)]
			if st == "" {
				continue // gone in this round
			}
			l := msads.ClientLink{Type: msads.LinkTypeAccount, ClientEntityID: a, ManagingCustomerID: agency, Status: st,
				ManagingCustomerName: "Agency", Note: fmt.Sprint("round ", round%2)}
			if cid == client {
				l.ClientCustomerID = client
			}
			s.Links = append(s.Links, l)
		}
		cl := msads.ClientLink{Type: msads.LinkTypeCustomer, ClientEntityID: client, ManagingCustomerID: agency, ClientCustomerID: client,
			Status: statuses[round%len(statuses)], CustomerLinkPermission: "Standard"}
		if cl.Status != "" {
			s.Links = append(s.Links, cl)
		}
		return s
	}
	customers := []int64{agency, client}
	for round := range 10 {
		b.writeAtOnce(t, customers, func(cid int64) *msads.Snapshot { return snapshot(cid, round) })
		historyChains(t, b, linksTable)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
	before := b.versions(t)
	for _, cid := range customers {
		if ch := b.write(t, snapshot(cid, 9)); ch.Total() != 0 {
			t.Errorf("customer %d re-run = %v, want none", cid, ch)
		}
	}
	b.sameVersions(t, before, "rewritten by a no-change re-run")
	equal(t, "client customer known from the client's side", b.strings(t,
		`SELECT DISTINCT coalesce(client_customer_id::text, 'NULL') FROM client_links WHERE removed_at IS NULL`), []string{"2002"})
}

// The client's side and the agency's side of a new account link write it at
// the same moment: the client's transaction inserts it (knowing the client
// customer) and has not committed when the agency's upsert meets the key
// and waits; it then updates the row the client wrote. Its statement saw no
// stored row, so without Merge it wrote its own values over the client's:
// client_customer_id NULL (the agency's search does not know it) and
// searched_from_customer_id the agency, with a spurious 'changed' version.
func TestClientLinkFirstWrittenByBothSidesAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	const agency, client, account = 3001, 3002, 31
	snapshot := func(cid int64) *msads.Snapshot {
		l := link(msads.LinkTypeAccount, account, agency, "Active")
		if cid == client {
			l.ClientCustomerID = client
		}
		return &msads.Snapshot{CustomerID: cid, LinkSearches: complete(account), Links: []msads.ClientLink{l}}
	}
	var calls atomic.Int32
	inserted, release := make(chan struct{}), make(chan struct{})
	b.store.testHook = func(step string, _ pgx.Tx) error {
		if step == "links" && calls.Add(1) == 1 {
			close(inserted) // the client's row is written, not committed
			<-release
		}
		return nil
	}
	errs := make(chan error, 2)
	go func() {
		_, err := b.store.WriteSnapshot(context.Background(), b.runID, snapshot(client), SyncInfo{})
		errs <- err
	}()
	<-inserted
	go func() {
		_, err := b.store.WriteSnapshot(context.Background(), b.runID, snapshot(agency), SyncInfo{})
		errs <- err
	}()
	// Until the agency's upsert waits for the client's row lock.
	deadline := time.Now().Add(10 * time.Second)
	for waiting := false; !waiting && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		// The statement names no schema, and pg_stat_activity shows its
		// first 1 kB: any waiting upsert of client_links (parallel tests'
		// waits are as short as a write).
		if err := b.pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'WITH cand AS%client_entity_id%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "the link as the client's side wrote it", b.strings(t,
		`SELECT coalesce(client_customer_id::text, 'NULL') || ' ' || searched_from_customer_id FROM client_links`),
		[]string{"3002 3002"})
	equal(t, "one version", b.strings(t, `SELECT change FROM client_links_history`), []string{"added"})
	historyChains(t, b, linksTable)
}

func TestClientLinksInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, s := range []*msads.Snapshot{
		{CustomerID: 5, Links: []msads.ClientLink{{ClientEntityID: 1, ManagingCustomerID: 2}}},                           // no searches
		{CustomerID: 5, LinkSearches: complete(), Links: []msads.ClientLink{{ClientEntityID: 0, ManagingCustomerID: 2}}}, // no entity
		{CustomerID: 5, LinkSearches: []msads.LinkSearch{{Kind: "sideways", Complete: true}}},                            // unknown search
	} {
		if _, err := b.store.WriteSnapshot(t.Context(), b.runID, s, SyncInfo{}); err == nil {
			t.Errorf("snapshot %+v accepted", s)
		}
	}
	// An empty Type is an account link.
	s := &msads.Snapshot{CustomerID: 5, LinkSearches: complete(7), Links: []msads.ClientLink{{ClientEntityID: 7, ManagingCustomerID: 8, Status: "Active"}}}
	b.write(t, s)
	equal(t, "empty type", b.strings(t, `SELECT type FROM client_links`), []string{"AccountLink"})
}
