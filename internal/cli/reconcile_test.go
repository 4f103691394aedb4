package cli

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"

	"github.com/msads-syncer/syncer/internal/directory"
	"github.com/msads-syncer/syncer/internal/load"
)

// Text cells that a spreadsheet would run as formulas are defused in
// --format csv; ids and kinds are written as they are.
func TestExceptionsCSVIsFormulaSafe(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	es := []load.AccessException{
		{Kind: load.ExceptionNoOwner, CustomerID: 1, CustomerName: "=HYPERLINK(\"http://x\")", UserID: 7, UserName: "+cmd", Email: "@x.com", Reason: "-1+1"},
		{Kind: load.ExceptionDormantLink, CustomerID: 2, LinkType: "AccountLink", ClientEntityID: 11, ManagingCustomerID: 9, Email: "ok@x.com", Reason: "plain"},
	}
	if err := writeExceptionsCSV(&b, es); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{strings.Join(recs[1], "|"), strings.Join(recs[2], "|")}
	want := []string{
		`no_owner|1|'=HYPERLINK("http://x")|7|'+cmd|||||'@x.com|'-1+1`,
		"dormant_link|2|||||AccountLink|11|9|ok@x.com|plain",
	}
	equalLines(t, got, want)
}

func TestExceptionsTable(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := writeExceptionsTable(&b, nil); err != nil || b.String() != "No access exceptions.\n" {
		t.Errorf("empty: %q %v", b.String(), err)
	}
	b.Reset()
	es := []load.AccessException{
		{Kind: load.ExceptionTerminated, CustomerID: 1, CustomerName: "Acme", UserID: 7, Email: "a@x.com", Reason: "gone"},
		{Kind: load.ExceptionStaleInvitation, CustomerID: 1, InvitationID: 70, Email: "b@x.com", Reason: "old"},
		{Kind: load.ExceptionPrivilegedExternal, CustomerID: 1, LinkType: "CustomerLink", ClientEntityID: 1, ManagingCustomerID: 9, Reason: "agency"},
	}
	if err := writeExceptionsTable(&b, es); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 access exceptions: 1 terminated, 1 privileged_external, 1 stale_invitation.",
		"1 Acme    user 7", "invitation 70", "CustomerLink 1 ← 9", "(3 rows)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func equalLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// A --dry-run load is rolled back: the note names no directory load id
// (its id would name no directory_loads row); a real load does.
func TestDirectoryNoteDryRunNamesNoLoad(t *testing.T) {
	t.Parallel()
	latest := &load.DirectoryLoad{LoadID: 0, Source: "okta.csv", People: 3, Changes: load.Counts{Added: 3, Removed: 31}}
	d := &directory.Directory{Source: "okta.csv", Mapped: []string{directory.FieldEmail, directory.FieldStatus}}
	var b bytes.Buffer
	printDirectoryNote(&b, latest, d, true)
	if got := b.String(); got != "Dry run: would load okta.csv: 3 people (+3 added, ~0 changed, -31 removed, ^0 back).\n" {
		t.Errorf("dry-run note %q", got)
	}
	latest.LoadID = 4
	b.Reset()
	printDirectoryNote(&b, latest, d, false)
	if got := b.String(); got != "Loaded okta.csv: 3 people (+3 added, ~0 changed, -31 removed, ^0 back); directory load 4.\n" {
		t.Errorf("load note %q", got)
	}
}
