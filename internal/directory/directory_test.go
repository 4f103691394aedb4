package directory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entra are the default columns (config.DefaultDirectoryColumns), none
// required.
var entra = []Column{
	{Field: FieldEmail, Header: "email", Key: "reconcile.columns.email"},
	{Field: FieldUPN, Header: "userPrincipalName", Key: "reconcile.columns.upn"},
	{Field: FieldEmployeeID, Header: "employeeId", Key: "reconcile.columns.employee_id"},
	{Field: FieldStatus, Header: "accountEnabled", Key: "reconcile.columns.status"},
	{Field: FieldManager, Header: "manager", Key: "reconcile.columns.manager"},
	{Field: FieldDepartment, Header: "department", Key: "reconcile.columns.department"},
	{Field: FieldDisplayName, Header: "displayName", Key: "reconcile.columns.display_name"},
}

func TestRead(t *testing.T) {
	t.Parallel()
	csv := "\xef\xbb\xbfUserPrincipalName , EMAIL,employeeId,accountEnabled,Department,unused\r\n" +
		"Ann@Corp.example,ann@example.com,E1,True,Sales,x\r\n" +
		"bob@corp.example,,,false,\"Research, \"\"Labs\"\"\",y\r\n" +
		",cat@example.com,,,,z\r\n" +
		",,,,,\r\n" + // a line of only delimiters
		"\r\n"
	d, err := Read("people.csv", []byte(csv), entra)
	if err != nil {
		t.Fatal(err)
	}
	want := []Person{
		{DirectoryID: "E1", Email: "ann@example.com", UPN: "Ann@Corp.example", EmployeeID: "E1", Status: "True", Department: "Sales", Line: 2},
		{DirectoryID: "bob@corp.example", UPN: "bob@corp.example", Status: "false", Department: `Research, "Labs"`, Line: 3},
		{DirectoryID: "cat@example.com", Email: "cat@example.com", Line: 4},
	}
	if len(d.People) != len(want) {
		t.Fatalf("people = %+v", d.People)
	}
	for i := range want {
		if d.People[i] != want[i] {
			t.Errorf("person %d = %+v, want %+v", i, d.People[i], want[i])
		}
	}
	if got := strings.Join(d.Mapped, ","); got != "email,upn,employee_id,status,department" {
		t.Errorf("mapped = %s", got)
	}
	if d.Has(FieldManager) || !d.Has(FieldStatus) || len(d.SHA256) != 64 {
		t.Errorf("Has/SHA256: %+v", d)
	}
}

// A semicolon-separated export (spreadsheets in many locales) is read too.
func TestReadSemicolons(t *testing.T) {
	t.Parallel()
	d, err := Read("hr.csv", []byte("email;Status\nann@example.com;Active\nbob@example.com;Terminated\n"),
		[]Column{{Field: FieldEmail, Header: "Email"}, {Field: FieldStatus, Header: "status", Required: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.People) != 2 || d.People[1].Status != "Terminated" {
		t.Errorf("people = %+v", d.People)
	}
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	required := append([]Column{}, entra...)
	required[4] = Column{Field: FieldManager, Header: "managerUpn", Key: "reconcile.columns.manager", Line: 12, Required: true}
	tests := []struct {
		name, csv string
		cols      []Column
		want      string
	}{
		{"empty", "", entra, "directory f.csv: is empty: expected a header row and one row per person"},
		{"blank", " \n\n", entra, "directory f.csv: is empty"},
		{"header only", "email,userPrincipalName\n", entra, "directory f.csv: has a header but no person: an empty directory would remove everyone; nothing was loaded"},
		{"required column missing", "email,manager\na@x.com,b\n", required,
			`directory f.csv line 1: has no column "managerUpn" (reconcile.columns.manager (config line 12)); its header is: "email", "manager"`},
		{"no email nor upn", "mail,upn\na@x.com,b\n", entra,
			`directory f.csv line 1: has neither the email column "email" nor the UPN column "userPrincipalName" (reconcile.columns.email, reconcile.columns.upn): people are matched by them; its header is: "mail", "upn"`},
		{"duplicate header", "email,Email\na,b\n", entra, `directory f.csv line 1: column 1 and column 2 have the same header "Email"`},
		{"duplicate person", "email,employeeId\na@x.com,7\nb@x.com,8\nc@x.com,7\n", entra,
			`directory f.csv line 4: repeats the person of line 2 (directory id "7"): each person must be listed once`},
		{"duplicate by case", "email\nA@x.com\na@X.com\n", entra, `directory f.csv line 3: repeats the person of line 2 (directory id "a@x.com")`},
		{"no id", "email,employeeId,department\na@x.com,1,S\n,,Sales\n", entra,
			"directory f.csv line 3: has no employee id, UPN or email: every person needs one of them"},
		{"field count", "email,department\na@x.com,S\nb@x.com\n", entra,
			"directory f.csv line 3, column 1: has a different number of fields than the header"},
		{"bare quote", "email,department\na@x.com,S\"x\n", entra, `directory f.csv line 2, column 10: bare " in non-quoted-field`},
		{"not utf-8", "email\na@x.com\nb\xff@x.com\n", entra, "directory f.csv line 3: is not UTF-8 text: export the file as UTF-8 CSV"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := Read("f.csv", []byte(tc.csv), tc.cols)
			if err == nil {
				t.Fatalf("no error; people %+v", d.People)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n  %v\nwant:\n  %s", err, tc.want)
			}
		})
	}
}

func TestReadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := ReadFile(filepath.Join(dir, "missing.csv"), entra); err == nil ||
		err.Error() != "directory "+filepath.Join(dir, "missing.csv")+": no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	if _, err := ReadFile(dir, entra); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	p := filepath.Join(dir, "ok.csv")
	if err := os.WriteFile(p, []byte("email\na@x.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := ReadFile(p, entra)
	if err != nil || len(d.People) != 1 || d.Source != p {
		t.Errorf("ReadFile = %+v, %v", d, err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte("email,employeeId\na@x.com,1\n"))
	f.Add([]byte("email;status\n\"a;b\"@x.com;Active\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Read("f.csv", b, entra)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range d.People {
			if p.DirectoryID == "" || seen[p.DirectoryID] {
				t.Fatalf("bad person %+v", p)
			}
			seen[p.DirectoryID] = true
		}
	})
}
