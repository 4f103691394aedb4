package job_test

import (
	"fmt"
	"testing"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/status"
)

// Figure 6: a fault-free run makes the minimum of calls, per operation
// (msadstest.Dataset.MinimumCalls): GetUsersInfo, SearchUserInvitations and
// GetAccountsInfo once per customer, GetUser once per distinct listed user,
// the run's own GetUser (the signed-in user) and GetCustomersInfo, and the
// client link searches (three per customer of up to 10 accounts and 100
// links a search; one account's links take two pages here).
func TestRunMakesTheMinimumOfCalls(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(34, 9, 30)
	// 150 agencies linked to one account: its search takes two pages.
	for i := range 150 {
		ds.Links = append(ds.Links, msads.ClientLink{Type: msads.LinkTypeAccount, ClientEntityID: ds.Accounts[0].ID,
			ManagingCustomerID: int64(990000 + i), ManagingCustomerName: fmt.Sprintf("Agency %d", i), Status: "Active"})
	}
	// The credential's user is Super Admin everywhere (as a service
	// account is): every link search is permitted, none split by account.
	ds.PrincipalSuperAdmin()
	b := setup(t, ds, 4)
	b.runner.ClientLinks = true
	res, err := b.runner.Run(t.Context(), job.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Succeeded {
		t.Fatalf("result %+v", res)
	}
	want := ds.MinimumCalls(true)
	if want[msads.OpSearchClientLinks] < 3*len(ds.Customers) {
		t.Fatalf("minimum link searches %d for %d customers: the dataset has no accounts to search", want[msads.OpSearchClientLinks], len(ds.Customers))
	}
	total := 0
	for op, w := range want {
		total += w
		if got := b.sim.Calls(op); got != w {
			t.Errorf("%s calls = %d, want %d", op, got, w)
		}
	}
	if got := b.sim.TotalCalls(); got != total {
		t.Errorf("API calls = %d, want %d (the minimum)", got, total)
	}
}
