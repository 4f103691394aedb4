package load

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// benchSnapshots generates 100 customers with 1,000 users each (100,000),
// 150,000 roles (every user one role on its customer, every other user a
// second, account-scoped role on the next customer), 50 invitations each
// (5,000) and 10 accounts each.
func benchSnapshots() []*msads.Snapshot {
	const customers, usersPer, invitationsPer, accountsPer = 100, 1000, 50, 10
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mod := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	snaps := make([]*msads.Snapshot, customers)
	for c := range int64(customers) {
		cid := 10_000 + c
		s := &msads.Snapshot{CustomerID: cid, CustomerName: fmt.Sprint("Customer ", c), AccountsFetched: true}
		for a := range int64(accountsPer) {
			s.Accounts = append(s.Accounts, msads.Account{ID: cid*100 + a, CustomerID: cid, Name: fmt.Sprint("Account ", a), Number: fmt.Sprintf("F%06d", cid*100+a), Status: "Active"})
		}
		for u := range int64(usersPer) {
			uid := c*usersPer + u + 1
			s.Users = append(s.Users, msads.User{ID: uid, CustomerID: cid, HomeCustomerID: cid,
				UserName: fmt.Sprint("user", uid), Email: fmt.Sprintf("user%d@example.com", uid),
				FirstName: "First", LastName: fmt.Sprint("Last", uid), JobTitle: "Analyst", Lcid: "EnglishUS",
				LifecycleStatus: "Active", LastModifiedTime: &mod})
			s.Roles = append(s.Roles, msads.Role{UserID: uid, CustomerID: cid, RoleID: msads.RoleStandardUser})
			if u%2 == 0 {
				next := 10_000 + (c+1)%customers
				s.Roles = append(s.Roles, msads.Role{UserID: uid, CustomerID: next, RoleID: msads.RoleViewer,
					AccountIDs: []int64{next*100 + u%accountsPer, next*100 + (u+1)%accountsPer}})
			}
		}
		for i := range int64(invitationsPer) {
			s.Invitations = append(s.Invitations, msads.Invitation{ID: cid*1000 + i, CustomerID: cid,
				Email: fmt.Sprintf("invitee%d@example.com", cid*1000+i), RoleID: msads.RoleViewer, Lcid: "EnglishUS", ExpirationDate: &exp})
		}
		snaps[c] = s
	}
	return snaps
}

// BenchmarkSnapshotWrite writes 100 customers' snapshots (100,000 users,
// 150,000 roles, 5,000 invitations) into an empty schema, then COPYs the same
// rows into bare tables for comparison (once in one transaction, copy_s, and
// once per customer in 100 transactions, copy_per_customer_s, the floor for a
// writer bound to one transaction per customer), then re-runs the unchanged
// snapshots and counts the row versions the re-run wrote.
//
//	go test -run x -bench Snapshot -benchtime 1x ./internal/load/
func BenchmarkSnapshotWrite(b *testing.B) {
	snaps := benchSnapshots()
	ctx := context.Background()
	for range b.N {
		pool, schema := pgtest.Schema(b)
		s := NewStore(pool, Options{Schema: schema})
		runID, err := s.StartRun(ctx, len(snaps))
		if err != nil {
			b.Fatal(err)
		}

		writeAll := func() (Changes, time.Duration) {
			var total Changes
			start := time.Now()
			for _, snap := range snaps {
				ch, err := s.WriteSnapshot(ctx, runID, snap, SyncInfo{StartedAt: start})
				if err != nil {
					b.Fatal(err)
				}
				total = total.Add(ch)
			}
			return total, time.Since(start)
		}

		ch, full := writeAll()
		if ch.UsersAdded != 100_000 || ch.RolesAdded != 150_000 || ch.InvitationsAdded != 5_000 {
			b.Fatalf("first write changes = %v", ch)
		}

		copyDur := rawCopy(b, pool, schema, snaps)
		copyPerCustomer := rawCopyPerCustomer(b, pool, schema, snaps)

		var before int64
		if err := pool.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&before); err != nil {
			b.Fatal(err)
		}
		ch, rerun := writeAll()
		if ch.Total() != 0 {
			b.Errorf("re-run changes = %v, want none", ch)
		}
		var written int64
		q := func(t string) string { return pgx.Identifier{schema, t}.Sanitize() }
		query := "SELECT 0"
		for _, t := range []string{"users", "user_roles", "user_invitations", "accounts", "users_history", "user_roles_history", "user_invitations_history"} {
			query += " + (SELECT count(*) FROM " + q(t) + " WHERE xmin::text::bigint > $1)"
		}
		if err := pool.QueryRow(ctx, query, before).Scan(&written); err != nil {
			b.Fatal(err)
		}

		// The job writes several customers at once (sync.concurrency); the
		// same load with 4 writers into a fresh schema:
		pool2, schema2 := pgtest.Schema(b)
		s2 := NewStore(pool2, Options{Schema: schema2})
		par := time.Now()
		var g errgroup.Group
		g.SetLimit(4)
		for _, snap := range snaps {
			g.Go(func() error {
				_, err := s2.WriteSnapshot(ctx, 0, snap, SyncInfo{})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		parDur := time.Since(par)

		b.ReportMetric(full.Seconds(), "write_s")
		b.ReportMetric(parDur.Seconds(), "write_4workers_s")
		b.ReportMetric(copyDur.Seconds(), "copy_s")
		b.ReportMetric(copyPerCustomer.Seconds(), "copy_per_customer_s")
		b.ReportMetric(full.Seconds()/copyDur.Seconds(), "write/copy")
		b.ReportMetric(full.Seconds()/copyPerCustomer.Seconds(), "write/copy_per_customer")
		b.ReportMetric(rerun.Seconds(), "rerun_s")
		b.ReportMetric(rerun.Seconds()/copyDur.Seconds(), "rerun/copy")
		b.ReportMetric(rerun.Seconds()/copyPerCustomer.Seconds(), "rerun/copy_per_customer")
		b.ReportMetric(float64(written), "rerun_row_versions")
	}
}

// bareRows are one or more snapshots' users, roles and invitations as rows
// of the bare tables.
type bareRows struct{ users, roles, invs [][]any }

func (r *bareRows) add(s *msads.Snapshot) {
	for _, u := range s.Users {
		r.users = append(r.users, []any{s.CustomerID, u.ID, u.HomeCustomerID, u.UserName, u.Email, u.FirstName, u.LastName, u.JobTitle, u.Lcid, u.LifecycleStatus, u.LastModifiedTime})
	}
	for _, ro := range s.Roles {
		r.roles = append(r.roles, []any{ro.UserID, ro.CustomerID, ro.RoleID, ro.AccountIDs, ro.LinkedAccountIDs, nil})
	}
	for _, i := range s.Invitations {
		r.invs = append(r.invs, []any{i.ID, s.CustomerID, i.Email, i.FirstName, i.LastName, i.RoleID, i.AccountIDs, i.Lcid, i.ExpirationDate})
	}
}

// copyBare COPYs rows into the bare tables in tx.
func copyBare(b *testing.B, tx pgx.Tx, suffix string, r *bareRows) {
	b.Helper()
	ctx := context.Background()
	for _, c := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"bare_users" + suffix, []string{"customer_id", "user_id", "home_customer_id", "user_name", "email", "first_name", "last_name", "job_title", "lcid", "lifecycle_status", "last_modified_time"}, r.users},
		{"bare_roles" + suffix, roleCols, r.roles},
		{"bare_invitations" + suffix, []string{"invitation_id", "customer_id", "email", "first_name", "last_name", "role_id", "account_ids", "lcid", "expiration_date"}, r.invs},
	} {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			b.Fatal(err)
		}
	}
}

type beginner interface {
	Begin(context.Context) (pgx.Tx, error)
}

func bareDDL(suffix string) string {
	return `
		CREATE TABLE bare_users` + suffix + ` (customer_id bigint, user_id bigint, home_customer_id bigint, user_name text, email text, first_name text, last_name text, job_title text, lcid text, lifecycle_status text, last_modified_time timestamptz);
		CREATE TABLE bare_roles` + suffix + ` (user_id bigint, customer_id bigint, role_id integer, account_ids bigint[], linked_account_ids bigint[], customer_link_permission text);
		CREATE TABLE bare_invitations` + suffix + ` (invitation_id bigint, customer_id bigint, email text, first_name text, last_name text, role_id integer, account_ids bigint[], lcid text, expiration_date timestamptz);`
}

// createBare creates the bare tables (no keys, no indexes) named with suffix.
func createBare(b *testing.B, pool beginner, schema, suffix string) {
	b.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{schema}.Sanitize()+";"+bareDDL(suffix)); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
}

// rawCopy COPYs the same users, roles and invitations into bare tables (no
// keys, no indexes) created in the same transaction, and returns how long the
// COPYs and the commit took.
func rawCopy(b *testing.B, pool beginner, schema string, snaps []*msads.Snapshot) time.Duration {
	b.Helper()
	ctx := context.Background()
	var rows bareRows
	for _, s := range snaps {
		rows.add(s)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{schema}.Sanitize()+";"+bareDDL("")); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	copyBare(b, tx, "", &rows)
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// rawCopyPerCustomer COPYs the same rows into other bare tables, one
// transaction per customer as the loader writes them, and returns how long
// it took: the floor for a loader bound to one transaction per customer.
func rawCopyPerCustomer(b *testing.B, pool beginner, schema string, snaps []*msads.Snapshot) time.Duration {
	b.Helper()
	ctx := context.Background()
	rows := make([]bareRows, len(snaps))
	for i, s := range snaps {
		rows[i].add(s)
	}
	createBare(b, pool, schema, "_per_customer")
	start := time.Now() // each transaction's begin, COPYs and commit
	for i := range rows {
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
			b.Fatal(err)
		}
		copyBare(b, tx, "_per_customer", &rows[i])
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
