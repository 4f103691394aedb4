package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/directory"
	"github.com/msads-syncer/syncer/internal/extract/msadstest"
	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/msads"
)

// demoReconcileConfig is the demo company's reconcile: section: its people
// use three brands' domains, fabrikam.example being Fabrikam's old one.
func demoReconcileConfig() config.Reconcile {
	return config.Reconcile{
		AllowedDomains: []string{"contoso.com", "fabrikam.com", "northwind.example"},
		DomainAliases:  map[string]string{"fabrikam.example": "fabrikam.com"},
	}
}

// demoDirectoryCSV is an Entra ID export of the demo company's people, made
// from the simulated tenant: every user of our domains, listed by their
// current address (Fabrikam's people under the new domain), except that
//
//   - the shared mailbox campaigns@northwind.example has no owner;
//   - Tom Twohats (two.hats@contoso.com) has left: accountEnabled false;
//   - Ivan Inactive has left too, but is already Inactive in Microsoft
//     Advertising: no finding.
func demoDirectoryCSV(ds *msadstest.Dataset, r config.Reconcile) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"userPrincipalName", "displayName", "email", "employeeId", "accountEnabled", "department", "manager"})
	users := slices.Clone(ds.Users)
	slices.SortFunc(users, func(a, b msads.User) int { return int(a.ID - b.ID) })
	boss := ""
	for _, u := range users {
		if u.ID == ds.PrincipalID() {
			boss = u.Email
		}
	}
	n := 0
	for _, u := range users {
		local, domain, ok := strings.Cut(strings.ToLower(u.Email), "@")
		if !ok {
			continue
		}
		if to, alias := r.DomainAliases[domain]; alias {
			domain = to
		}
		if !slices.Contains(r.AllowedDomains, domain) || u.ID == msadstest.DemoNullAccounts {
			continue
		}
		n++
		enabled := "true"
		if u.ID == msadstest.DemoTwoCustomers || u.ID == msadstest.DemoInactiveUser {
			enabled = "false"
		}
		dept := cmp.Or(u.JobTitle, "Marketing")
		_ = w.Write([]string{local + "@" + domain, strings.TrimSpace(u.FirstName + " " + u.LastName), local + "@" + domain,
			fmt.Sprintf("E%05d", n), enabled, dept, boss})
	}
	w.Flush()
	return b.Bytes()
}

// demoReconcile writes the demo's directory export to a file, loads it as
// `syncer reconcile --directory FILE` does, and prints the exceptions.
func demoReconcile(ctx context.Context, out io.Writer, s runSetup, ds *msadstest.Dataset) error {
	dir, err := os.MkdirTemp("", "syncer-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	path := filepath.Join(dir, "entra-users.csv")
	data := demoDirectoryCSV(ds, s.cfg.Reconcile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	lines := strings.SplitAfter(string(data), "\n")
	fmt.Fprintf(out, "A directory export from Entra ID (%d people), first lines:\n\n", len(lines)-2)
	for _, l := range lines[:min(4, len(lines))] {
		fmt.Fprint(out, "  "+l)
	}
	r := s.cfg.Reconcile
	fmt.Fprintf(out, "\nwith reconcile: allowed_domains %v, domain_aliases %v, approved_agencies %v\n", r.AllowedDomains, r.DomainAliases, r.ApprovedAgencies)
	fmt.Fprintln(out, "\n$ syncer reconcile --directory entra-users.csv")
	d, err := directory.ReadFile(path, directoryColumns(s.cfg))
	if err != nil {
		return err
	}
	d.Source = "entra-users.csv"
	res, err := s.runner.Store.Reconcile(ctx, load.ReconcileOptions{Settings: reconcileSettings(s.cfg), Directory: d})
	if err != nil {
		return err
	}
	printDirectoryNote(out, res.Directory, d, false)
	return writeExceptionsTable(out, res.Exceptions)
}
