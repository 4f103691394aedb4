package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/msads"
)

// syncer run searches every customer's client links (the demo tenant: links
// in every status, into the customers and their accounts, and held by one
// of them as an agency): 3 SearchClientLinks calls per customer of up to 10
// accounts. A re-run writes nothing; a credential refused the searches
// (106) in one customer records that and exits 0, keeping that customer's
// links; a link gone from a complete search is removed, and access_as_of
// still shows it before.
func TestRunClientLinks(t *testing.T) {
	t.Parallel()
	ds := msadstest.DemoDataset()
	e := newEnv(t, ds.Clone(), "")
	sumPath := filepath.Join(e.dir, "summary.json")
	r := e.run("run", "--config", e.config, "--summary", sumPath)
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
	}
	if n := e.queryInt("SELECT count(*) FROM S.client_links WHERE removed_at IS NULL"); n != len(ds.Links) {
		t.Errorf("client_links = %d, want every link of the data (%d)", n, len(ds.Links))
	}
	customers := len(ds.Customers)
	if got := e.sim.Calls(msadstest.OpSearchClientLinks); got != 3*customers {
		t.Errorf("SearchClientLinks calls = %d, want 3 per customer (%d)", got, 3*customers)
	}
	if n := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE links_status = 'complete'"); n != customers {
		t.Errorf("customers with links_status complete = %d, want %d", n, customers)
	}
	if n := e.queryInt("SELECT count(*) FROM S.privileged_access WHERE grantee_kind = 'agency' AND grantee_id = $1", msadstest.DemoAgencyAdmin); n != 1 {
		t.Errorf("the Administrative agency in privileged_access: %d rows, want 1", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.active_client_links WHERE status IN ('LinkPending', 'Inactive', 'LinkDeclined', 'LinkInProgress')"); n != 0 {
		t.Errorf("active_client_links shows %d links that grant no access", n)
	}
	var sum struct {
		Customers []struct {
			CustomerID  int64                     `json:"customer_id"`
			Links       int                       `json:"client_links_seen"`
			LinksStatus string                    `json:"links_status"`
			Changes     map[string]map[string]int `json:"changes"`
		} `json:"customers"`
	}
	b, err := os.ReadFile(sumPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	added := 0
	for _, c := range sum.Customers {
		if c.LinksStatus != msads.LinksComplete || c.Links == 0 {
			t.Errorf("summary of customer %d: links %d, status %q", c.CustomerID, c.Links, c.LinksStatus)
		}
		added += c.Changes["client_links"]["added"]
	}
	if added != len(ds.Links) {
		t.Errorf("summary: %d client links added, want %d", added, len(ds.Links))
	}

	history := "SELECT count(*) FROM S.client_links_history"
	before := e.queryInt(history)
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("re-run exit %d\nstderr: %s", r.code, r.stderr)
	}
	if after := e.queryInt(history); after != before {
		t.Errorf("client_links_history %d -> %d on a no-change re-run", before, after)
	}

	// Customer 1's searches are refused from now on; its agency link
	// changes unseen. Customer 0's account link from DemoAgencyAccount
	// ends.
	var between time.Time
	if err := e.pool.QueryRow(t.Context(), "SELECT clock_timestamp()").Scan(&between); err != nil {
		t.Fatal(err)
	}
	c := ds.CustomerIDs()
	e.sim.DenyLinkSearches(c[1])
	links := e.sim.Dataset().Links
	kept := links[:0]
	for _, l := range links {
		if l.ManagingCustomerID == msadstest.DemoAgencyUnlink {
			l.Status = "Inactive"
		}
		if l.ManagingCustomerID != msadstest.DemoAgencyAccount {
			kept = append(kept, l)
		}
	}
	e.sim.SetLinks(kept)
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("a credential refused the link searches of one customer: exit %d, want 0\nstderr: %s", r.code, r.stderr)
	}
	if n := e.queryInt("SELECT count(*) FROM S.customer_syncs WHERE customer_id = $1 AND links_status = 'not_permitted' AND status = 'succeeded'", c[1]); n != 1 {
		t.Errorf("customer %d: %d succeeded syncs with links_status not_permitted, want 1", c[1], n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.client_links WHERE managing_customer_id = $1 AND status = 'UnlinkPending' AND removed_at IS NULL",
		msadstest.DemoAgencyUnlink); n != 1 {
		t.Errorf("the refused customer's link changed or went (%d current UnlinkPending rows, want 1)", n)
	}
	if n := e.queryInt("SELECT count(*) FROM S.client_links WHERE managing_customer_id = $1 AND removed_at IS NOT NULL", msadstest.DemoAgencyAccount); n != 1 {
		t.Errorf("the ended link: %d removed rows, want 1", n)
	}
	// Who could act on the account at the time between the runs: the
	// agency whose link has since ended, and who invited it.
	q := `WITH x AS (SELECT client_entity_id AS account_id FROM S.client_links WHERE managing_customer_id = $1)
		SELECT count(*) FROM x JOIN S.access_as_of($2) a ON a.account_id = x.account_id
		WHERE a.grantee_kind = 'agency' AND a.managing_customer_id = $1 AND a.inviter_email = 'lead@fabrikampartners.example'`
	if n := e.queryInt(q, msadstest.DemoAgencyAccount, between); n != 1 {
		t.Errorf("access_as_of(between) shows the ended agency link %d times, want 1", n)
	}
	if n := e.queryInt(q, msadstest.DemoAgencyAccount, time.Now()); n != 0 {
		t.Errorf("access_as_of(now) still shows the ended agency link (%d)", n)
	}
}
