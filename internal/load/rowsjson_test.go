package load

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msads-syncer/syncer/internal/msads"
	"github.com/msads-syncer/syncer/internal/pgtest"
)

// Staged rows passed as JSON (rowsJSON, table.Staged) are read back as
// exactly the values a COPY of the same rows stores: NULL and empty arrays
// apart, times truncated to the microsecond as pgx's binary encoding
// truncates them, strings verbatim (quotes, backslashes, newlines, HTML
// characters, right-to-left text, emoji), the extremes of bigint.
func TestStagedRowsReadAsCopied(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	odd := "quote \" backslash \\ slash / newline \n tab \t <b>&amp;</b> \u202eevil\u202c 😀 \u2028 é"
	at := time.Date(2026, 11, 30, 23, 59, 59, 999999999, time.FixedZone("", -7*3600)) // sub-µs digits, not UTC
	late := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	snap := baseSnapshot()
	snap.Users[0].UserName, snap.Users[0].JobTitle, snap.Users[0].LastModifiedTime = odd, "\\N", &at
	snap.Users = append(snap.Users, msads.User{ID: math.MaxInt64, CustomerID: cust, HomeCustomerID: math.MaxInt64, UserName: "max"})
	snap.Users = append(snap.Users, msads.User{ID: 77, CustomerID: cust, UserName: odd,
		DetailStatus: msads.DetailUnreadable, DetailCode: 1001, DetailTrackingID: "t-1", DetailError: odd})
	snap.Roles = append(snap.Roles,
		msads.Role{UserID: 1, CustomerID: cust, RoleID: msads.RoleViewer, AccountIDs: []int64{}, LinkedAccountIDs: []int64{math.MaxInt64, 1}},
		msads.Role{UserID: math.MaxInt64, CustomerID: cust, RoleID: msads.RoleViewer, CustomerLinkPermission: odd})
	snap.Invitations[0].AccountIDs, snap.Invitations[0].ExpirationDate = []int64{}, &late
	snap.Invitations[1].FirstName, snap.Invitations[1].ExpirationDate = odd, nil
	pause := int32(-1)
	snap.Accounts[0].PauseReason, snap.Accounts[1].Name = &pause, odd
	snap.LinkSearches = complete(11, 12)
	no := false
	l := link(msads.LinkTypeAccount, 11, 901, "Active")
	l.IsBillToClient, l.LastModifiedTime, l.Note, l.LastModifiedByUserID = &no, &at, odd, math.MaxInt64
	snap.Links = []msads.ClientLink{link(msads.LinkTypeCustomer, cust, 900, "Active"), l}
	st, err := stage(snap)
	if err != nil {
		t.Fatal(err)
	}
	people := [][]any{{"e1", odd, nil, "", "Ann", nil, nil, nil}, {"\u00e9\"x", nil, nil, nil, nil, nil, nil, nil}}
	for _, c := range []struct {
		t    *table
		rows [][]any
	}{
		{usersTable, st.users}, {rolesTable, st.roles}, {invitationsTable, st.invitations},
		{accountsTable, st.accounts}, {linksTable, st.links.rows}, {directoryTable, people},
	} {
		j, err := rowsJSON(c.t, c.rows)
		if err != nil {
			t.Fatalf("%s: %v", c.t.Name, err)
		}
		cols := strings.Join(c.t.All(), ", ")
		err = pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(t.Context(), "SET LOCAL search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
				return err
			}
			if _, err := tx.Exec(t.Context(), "CREATE TEMP TABLE copied (LIKE "+c.t.Name+" INCLUDING DEFAULTS) ON COMMIT DROP"); err != nil {
				return err
			}
			if _, err := tx.CopyFrom(t.Context(), pgx.Identifier{"copied"}, c.t.All(), pgx.CopyFromRows(c.rows)); err != nil {
				return err
			}
			var n, onlyCopied, onlyStaged int
			err := tx.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM `+c.t.Staged()+` s),
				(SELECT count(*) FROM (SELECT `+cols+` FROM copied EXCEPT ALL SELECT `+cols+` FROM `+c.t.Staged()+` s) d),
				(SELECT count(*) FROM (SELECT `+cols+` FROM `+c.t.Staged()+` s EXCEPT ALL SELECT `+cols+` FROM copied) d)`,
				pgx.NamedArgs{c.t.RowsArg(): j}).Scan(&n, &onlyCopied, &onlyStaged)
			if err != nil {
				return err
			}
			if n != len(c.rows) || onlyCopied != 0 || onlyStaged != 0 {
				t.Errorf("%s: %d rows staged of %d; %d only as COPYed, %d only as staged\n%s", c.t.Name, n, len(c.rows), onlyCopied, onlyStaged, j)
			}
			// EXCEPT takes NULL and NULL for equal, not NULL and '{}'.
			if c.t == rolesTable {
				var nulls, empties int
				if err := tx.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE account_ids IS NULL), count(*) FILTER (WHERE account_ids = '{}')
					FROM `+c.t.Staged()+` s`, pgx.NamedArgs{c.t.RowsArg(): j}).Scan(&nulls, &empties); err != nil {
					return err
				}
				if nulls == 0 || empties != 1 {
					t.Errorf("roles: %d NULL and %d empty account_ids staged, want some NULL and 1 empty", nulls, empties)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", c.t.Name, err)
		}
	}
	if _, err := rowsJSON(usersTable, [][]any{{int64(1)}}); err == nil {
		t.Error("a row shorter than the table's columns: no error")
	}
	if _, err := rowsJSON(accountsTable, [][]any{{int64(1), int64(2), nil, nil, nil, 1.5}}); err == nil {
		t.Error("a value of a type stage never puts in a row: no error")
	}
}

// The history of the Deferred tables (roles, links) is written from the
// rows their upserts returned as JSON (changeSet), here in chunks of 2:
// each open history row holds exactly the values of its entity row, odd
// strings, arrays and times with microseconds included, after an upsert
// and after a removal.
func TestDeferredHistoryMatchesRows(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	b.store.stagedRows = 2
	odd := "quote \" backslash \\ newline \n <b>&amp;</b> 😀"
	at := time.Date(2026, 11, 30, 23, 59, 59, 123456789, time.UTC)
	snap := linksSnapshot()
	for i := range snap.Links {
		snap.Links[i].Note, snap.Links[i].LastModifiedTime, snap.Links[i].InviterName = odd, &at, odd
	}
	snap.Roles[1].LinkedAccountIDs, snap.Roles[2].CustomerLinkPermission = []int64{}, odd
	b.write(t, snap) // first write: roles by the direct path, links by the upsert
	// Every role and link changed (through the upsert), one of each removed.
	snap.Roles = snap.Roles[:len(snap.Roles)-1]
	for i := range snap.Roles {
		snap.Roles[i].AccountIDs = append(slices.Clone(snap.Roles[i].AccountIDs), 11)
	}
	snap.Links = snap.Links[:len(snap.Links)-1]
	for i := range snap.Links {
		snap.Links[i].InviterPhone = odd
	}
	ch := b.write(t, snap)
	// Every chunk written: 3 roles changed (user 2's {11,12} gains 11
	// again: the same set) and 3 links, one of each removed.
	if want := (Counts{Changed: 3, Removed: 1}); ch.Roles != want || ch.Links != want {
		t.Fatalf("changes %v: want roles and links ~3 -1", ch)
	}
	for _, tb := range []*table{rolesTable, linksTable} {
		cols := strings.Join(tb.All(), ", ")
		equal(t, tb.Name+" rows without their open history row", b.strings(t, `SELECT row(`+cols+`)::text FROM `+tb.Name+
			` WHERE removed_at IS NULL EXCEPT SELECT row(`+cols+`)::text FROM `+tb.History+` WHERE valid_to IS NULL AND change <> 'removed'`), nil)
		equal(t, tb.Name+" removed rows without their 'removed' history row", b.strings(t, `SELECT row(`+cols+`)::text FROM `+tb.Name+
			` WHERE removed_at IS NOT NULL EXCEPT SELECT row(`+cols+`)::text FROM `+tb.History+` WHERE valid_to IS NULL AND change = 'removed'`), nil)
	}
}
