package job_test

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/extract"
	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/job"
	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/status"
)

// credentialRunner returns a Runner of cred (an AddCredential of b.sim) over
// b's store, syncing customers.
func (b bundle) credentialRunner(t *testing.T, cred *msadstest.Credential, customers []int64) *job.Runner {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	client, err := extract.New(extract.Config{
		APIURL: b.sim.APIURL(), TokenURL: b.sim.TokenURL(), DeveloperToken: cred.DeveloperToken(),
		ClientID: cred.ClientID(), ClientSecret: cred.ClientSecret(), RefreshToken: cred.RefreshToken(),
		RequestsPerSecond: 500, ThrottleWait: 50 * time.Millisecond, RetryMaxElapsed: time.Second,
		RequestTimeout: 5 * time.Second, Store: &extract.MemoryTokenStore{}, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &job.Runner{Client: client, Store: b.store, Logger: logger,
		CredentialKey: job.CredentialKey(cred.ClientID(), cred.DeveloperToken()) + b.schema,
		CustomerIDs:   customers, Concurrency: 3, AccountNames: true}
}

func (b bundle) strings(t *testing.T, query string, args ...any) []string {
	t.Helper()
	tx, err := b.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(t.Context()) }()
	if _, err := tx.Exec(t.Context(), "SET LOCAL search_path TO "+pgx.Identifier{b.schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(t.Context(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		v, err := r.Values()
		return fmt.Sprint(v...), err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustRun(t *testing.T, r *job.Runner) *job.Result {
	t.Helper()
	res, err := r.Run(t.Context(), job.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != status.Succeeded {
		t.Fatalf("run %s: %s", res.Status, res.Error)
	}
	return res
}

// Users listed by two customers are removed from both; the run writes the
// customers concurrently. Their roles must go, each once.
func TestRunRemovesSharedUsersRolesAtConcurrency(t *testing.T) {
	t.Parallel()
	// Enough users that removing 20 stays within the removal guard.
	ds := msadstest.Generate(41, 3, 30)
	b := setup(t, ds, 3)
	c1, c2 := ds.CustomerIDs()[0], ds.CustomerIDs()[1]
	mustRun(t, b.runner)
	for round := range 3 {
		var users []int64
		for i := range int64(20) {
			u := int64(800000+round*100) + i
			users = append(users, u)
			b.sim.AddUser(c1, msads.User{ID: u, UserName: fmt.Sprint("shared", u), LifecycleStatus: "Active"},
				[]msads.Role{{CustomerID: c1, RoleID: msads.RoleViewer}, {CustomerID: c2, RoleID: msads.RoleStandardUser}})
		}
		mustRun(t, b.runner)
		if got := b.strings(t, `SELECT count(*) FROM user_roles WHERE user_id = ANY($1) AND removed_at IS NULL`, users); !slices.Equal(got, []string{"40"}) {
			t.Fatalf("round %d: current roles of the new users %v, want 40", round, got)
		}
		for _, u := range users {
			b.sim.RemoveUser(c1, u)
			b.sim.RemoveUser(c2, u)
		}
		res := mustRun(t, b.runner)
		// A customer's write removes the roles in it of the users its
		// listing dropped when no other listing lists them; written at the
		// same moment the customers leave that to the sweep: together,
		// every role once.
		removed := 0
		for _, c := range res.Customers {
			removed += c.Changes.Roles.Removed
		}
		if removed+res.RolesSwept != 40 {
			t.Errorf("round %d: the customers removed %d roles and the sweep %d, want 40 in all", round, removed, res.RolesSwept)
		}
		if got := b.strings(t, `SELECT count(*) FROM user_roles WHERE user_id = ANY($1) AND removed_at IS NULL`, users); !slices.Equal(got, []string{"0"}) {
			t.Errorf("round %d: %v roles of removed users still current", round, got)
		}
		if got := b.strings(t, `SELECT user_id, customer_id, role_id FROM user_roles_history WHERE user_id = ANY($1)
			GROUP BY 1, 2, 3 HAVING count(*) FILTER (WHERE change = 'removed') <> 1`, users); len(got) != 0 {
			t.Errorf("round %d: roles without exactly one 'removed' history row: %v", round, got)
		}
		if got := b.strings(t, `SELECT user_id FROM (SELECT user_id, valid_to,
			lead(valid_from) OVER (PARTITION BY user_id, customer_id, role_id ORDER BY valid_from) AS next FROM user_roles_history) x
			WHERE valid_to IS DISTINCT FROM next`); len(got) != 0 {
			t.Errorf("round %d: history intervals overlap or leave gaps for users %v", round, got)
		}
	}
	if res := mustRun(t, b.runner); res.RolesSwept != 0 {
		t.Errorf("a no-change run swept %d roles", res.RolesSwept)
	}
}

// Two credentials write one schema, each its own customers: A reaches
// c1 and c2, B reaches c2 and c3; users hold roles across all three. When
// the API does not change, runs after the first write no history at all,
// whichever credential runs first; neither removes the other's roles.
func TestTwoCredentialsOneSchemaDoNotUndoEachOther(t *testing.T) {
	t.Parallel()
	ds := msadstest.Generate(42, 3, 4)
	b := setup(t, ds, 3)
	c1, c2, c3 := ds.CustomerIDs()[0], ds.CustomerIDs()[1], ds.CustomerIDs()[2]
	const pa, pb = 700001, 700002
	b.sim.AddUser(c1, msads.User{ID: pa, UserName: "principal-a"}, []msads.Role{{CustomerID: c1, RoleID: msads.RoleSuperAdmin}, {CustomerID: c2, RoleID: msads.RoleSuperAdmin}})
	b.sim.AddUser(c2, msads.User{ID: pb, UserName: "principal-b"}, []msads.Role{{CustomerID: c2, RoleID: msads.RoleSuperAdmin}, {CustomerID: c3, RoleID: msads.RoleSuperAdmin}})
	for i := range int64(10) {
		roles := []msads.Role{{CustomerID: c1, RoleID: msads.RoleViewer}, {CustomerID: c3, RoleID: msads.RoleStandardUser}}
		if i%2 == 0 {
			roles = append(roles, msads.Role{CustomerID: c2, RoleID: msads.RoleViewer})
		}
		b.sim.AddUser(c1, msads.User{ID: 710000 + i, UserName: fmt.Sprint("across", i)}, roles)
	}
	a := b.credentialRunner(t, b.sim.AddCredential(pa, []int64{c1, c2}), []int64{c1, c2})
	bb := b.credentialRunner(t, b.sim.AddCredential(pb, []int64{c2, c3}), []int64{c2, c3})

	history := func() []string {
		return b.strings(t, `SELECT 'roles', count(*) FROM user_roles_history UNION ALL SELECT 'users', count(*) FROM users_history
			UNION ALL SELECT 'invitations', count(*) FROM user_invitations_history`)
	}
	mustRun(t, a)
	mustRun(t, bb)
	first := history()
	// Every role of the API is current, in all three customers.
	if got := b.strings(t, `SELECT count(*) FROM user_roles WHERE user_id BETWEEN 710000 AND 710009 AND removed_at IS NULL`); !slices.Equal(got, []string{"25"}) {
		t.Errorf("current roles of the users across customers %v, want 25", got)
	}
	for round := range 10 {
		order := []*job.Runner{a, bb}
		if round%2 == 1 {
			order = []*job.Runner{bb, a}
		}
		for _, r := range order {
			if res := mustRun(t, r); res.RolesSwept != 0 {
				t.Errorf("round %d: a run swept %d roles", round, res.RolesSwept)
			}
		}
		if got := history(); !slices.Equal(got, first) {
			t.Fatalf("round %d: history grew with no API change: %v, after the first round %v", round, got, first)
		}
	}
	if got := b.strings(t, `SELECT count(*) FROM user_roles_history WHERE change = 'removed'`); !slices.Equal(got, []string{"0"}) {
		t.Errorf("%v false removals in user_roles_history", got)
	}
}
