package load

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/pgtest"
)

func TestProfileSteps(t *testing.T) {
	all := benchSnapshots()
	snaps := all
	pool, schema := pgtest.Schema(t)
	s := NewStore(pool, Options{Schema: schema})
	last := time.Now()
	steps := map[string]time.Duration{}
	s.testHook = func(step string) error { steps[step] += time.Since(last); last = time.Now(); return nil }
	for _, snap := range snaps {
		last = time.Now()
		if _, err := s.WriteSnapshot(context.Background(), 0, snap, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Log(steps)
	steps = map[string]time.Duration{}
	for _, snap := range snaps {
		last = time.Now()
		if _, err := s.WriteSnapshot(context.Background(), 0, snap, SyncInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Log("rerun", steps)
	ctx := context.Background()
	snap := all[40]
	snap.Users[5].Email = "changed"
	st, _ := stage(snap)
	tx, _ := pool.Begin(ctx)
	defer tx.Rollback(ctx)
	tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", s.path)
	if _, err := tx.Exec(ctx, createStaging); err != nil { t.Fatal(err) }
	tx.CopyFrom(ctx, pgx.Identifier{"s_users"}, userCols, pgx.CopyFromRows(st.users))
	tx.CopyFrom(ctx, pgx.Identifier{"s_roles"}, roleCols, pgx.CopyFromRows(st.roles))
	tx.CopyFrom(ctx, pgx.Identifier{"s_invitations"}, invitationCols, pgx.CopyFromRows(st.invitations))
	tx.Exec(ctx, "ANALYZE s_users, s_roles, s_invitations, s_accounts")
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{usersUpsert, []any{snap.CustomerID, nil}},
		{usersRemove, []any{snap.CustomerID, nil}},
		{rolesScope, []any{[]int64{}}},
		{"ANALYZE s_scope", nil},
		{rolesLock, nil},
		{rolesUpsert, []any{snap.CustomerID, nil}},
		{rolesRemove, []any{snap.CustomerID, nil}},
		{invitationsUpsert, []any{snap.CustomerID, nil}},
	} {
		sql := "EXPLAIN (ANALYZE, COSTS OFF) " + q.sql
		if strings.HasPrefix(q.sql, "ANALYZE") {
			sql = q.sql
		}
		rows, err := tx.Query(ctx, sql, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, l := range lines {
			t.Log(l)
		}
		t.Log("-----")
	}
}
