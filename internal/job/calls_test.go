package job_test

import (
	"testing"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/status"
)

// Figure 6: a fault-free run makes the minimum of calls, per operation:
// GetUsersInfo, SearchUserInvitations and GetAccountsInfo once per
// customer, GetUser once per distinct listed user, and the run's own
// GetUser (the signed-in user) and GetCustomersInfo.
func TestRunMakesTheMinimumOfCalls(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(34, 9, 30)
	b := setup(t, ds, 4)
	res, err := b.runner.Run(t.Context(), job.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Succeeded {
		t.Fatalf("result %+v", res)
	}
	n := len(ds.Customers)
	want := map[string]int{
		msads.OpGetUsersInfo: n, msads.OpSearchUserInvitations: n, msads.OpGetAccountsInfo: n,
		msads.OpGetUser: ds.DistinctListedUsers() + 1, msads.OpGetCustomersInfo: 1,
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
