package config

import (
	"maps"
	"slices"
	"strings"
)

// Reconcile configures `syncer reconcile`: the company directory export it
// loads (which CSV header holds what) and the rules of the access exceptions
// (which email domains are our own, which agencies may hold links, which
// directory statuses mean a person still works here).
type Reconcile struct {
	// AllowedDomains are the email domains of our own people; a user or
	// invitation elsewhere is an external_domain exception. Empty: that
	// check (and privileged_external for users) is off.
	AllowedDomains []string `yaml:"allowed_domains"`
	// DomainAliases map an alias domain to the domain it stands for
	// (old-name.com: example.com), in matching and in the domain checks.
	DomainAliases map[string]string `yaml:"domain_aliases"`
	// ApprovedAgencies are the managing customer ids allowed to hold
	// privileged client links.
	ApprovedAgencies []int64 `yaml:"approved_agencies"`
	// ActiveStatuses are the directory status values (compared without
	// case or surrounding spaces) of a person who still works here.
	ActiveStatuses []string `yaml:"active_statuses"`
	// Columns are the CSV header names of the directory export.
	Columns DirectoryColumns `yaml:"columns"`
}

// DirectoryColumns name the directory CSV's header for each field (compared
// without case or surrounding spaces). "" means the file has no such column.
type DirectoryColumns struct {
	Email       string `yaml:"email"`
	UPN         string `yaml:"upn"`
	EmployeeID  string `yaml:"employee_id"`
	Status      string `yaml:"status"`
	Manager     string `yaml:"manager"`
	Department  string `yaml:"department"`
	DisplayName string `yaml:"display_name"`
}

// DefaultActiveStatuses count as active: Entra ID's accountEnabled (true),
// Okta's user statuses other than SUSPENDED and DEPROVISIONED, and the usual
// HR words. Anything else (false, suspended, deprovisioned, terminated,
// inactive, disabled, …) is not active.
var DefaultActiveStatuses = []string{
	"true", "yes", "1", "active", "enabled", // Entra accountEnabled, HR systems
	"staged", "provisioned", "recovery", "password_expired", "locked_out", // Okta, besides ACTIVE
}

// DefaultDirectoryColumns are the header names of an Entra ID export (Graph
// property names; email: "email").
var DefaultDirectoryColumns = DirectoryColumns{
	Email: "email", UPN: "userPrincipalName", EmployeeID: "employeeId", Status: "accountEnabled",
	Manager: "manager", Department: "department", DisplayName: "displayName",
}

// DirectoryColumn is one field of the directory CSV as configured.
type DirectoryColumn struct {
	Field  string // the field: email, upn, employee_id, status, manager, department, display_name
	Header string // the CSV header name; "" when not mapped
	Key    string // the config key, e.g. reconcile.columns.email
	Line   int    // the key's line in the file; 0 when the key is absent
	// Required: the key is set in the file, so the column must be in the
	// CSV; a default header name is used only when the file has it.
	Required bool
}

// DirectoryColumns returns every field of the directory CSV with its header,
// in a fixed order.
func (c *Config) DirectoryColumns() []DirectoryColumn {
	cols := c.Reconcile.Columns
	out := make([]DirectoryColumn, 0, 7)
	for _, f := range []struct {
		field, header string
	}{
		{"email", cols.Email}, {"upn", cols.UPN}, {"employee_id", cols.EmployeeID}, {"status", cols.Status},
		{"manager", cols.Manager}, {"department", cols.Department}, {"display_name", cols.DisplayName},
	} {
		key := "reconcile.columns." + f.field
		out = append(out, DirectoryColumn{Field: f.field, Header: strings.TrimSpace(f.header), Key: key, Line: c.Line(key),
			Required: c.has(key) && strings.TrimSpace(f.header) != ""})
	}
	return out
}

// setReconcileDefaults fills the reconcile keys the file leaves out.
func (c *Config) setReconcileDefaults() {
	r := &c.Reconcile
	if !c.has("reconcile.active_statuses") && len(r.ActiveStatuses) == 0 {
		r.ActiveStatuses = slices.Clone(DefaultActiveStatuses)
	}
	col := func(field string, v *string, def string) {
		if !c.has("reconcile.columns."+field) && *v == "" {
			*v = def
		}
	}
	d := DefaultDirectoryColumns
	col("email", &r.Columns.Email, d.Email)
	col("upn", &r.Columns.UPN, d.UPN)
	col("employee_id", &r.Columns.EmployeeID, d.EmployeeID)
	col("status", &r.Columns.Status, d.Status)
	col("manager", &r.Columns.Manager, d.Manager)
	col("department", &r.Columns.Department, d.Department)
	col("display_name", &r.Columns.DisplayName, d.DisplayName)
}

// validateReconcile checks the reconcile keys; bad reports one problem.
func (c *Config) validateReconcile(bad func(key, format string, args ...any)) {
	r := c.Reconcile
	for i, d := range r.AllowedDomains {
		if !isDomain(strings.TrimSpace(d)) {
			bad("reconcile.allowed_domains", "item %d: %q is not a domain such as example.com", i+1, d)
		}
	}
	aliases := slices.Sorted(maps.Keys(r.DomainAliases))
	for _, alias := range aliases {
		target := strings.TrimSpace(r.DomainAliases[alias])
		const key = "reconcile.domain_aliases"
		switch {
		case !isDomain(alias):
			bad(key, "%q is not a domain such as old-name.com", alias)
		case !isDomain(target):
			bad(key, "%s: %q is not a domain such as example.com", alias, target)
		case strings.EqualFold(alias, target):
			bad(key, "%s: maps a domain to itself", alias)
		default:
			for _, a := range aliases {
				if strings.EqualFold(a, target) {
					bad(key, "%s maps to %s, which is itself an alias: map %s to the final domain", alias, target, alias)
				}
			}
		}
	}
	for _, id := range r.ApprovedAgencies {
		if id <= 0 {
			bad("reconcile.approved_agencies", "ids must be positive customer ids, got %d", id)
		}
	}
	if len(r.ActiveStatuses) == 0 {
		bad("reconcile.active_statuses", "is empty: nobody would count as active; list the status values of people who still work here (or leave the key out for the defaults)")
	}
	for i, s := range r.ActiveStatuses {
		if strings.TrimSpace(s) == "" {
			bad("reconcile.active_statuses", "item %d is empty", i+1)
		}
	}
	if strings.TrimSpace(r.Columns.Email) == "" && strings.TrimSpace(r.Columns.UPN) == "" {
		bad("reconcile.columns", "name the header of reconcile.columns.email or reconcile.columns.upn: people are matched by them")
	}
}

// ReconcileRules is the normalized form of the reconcile keys: what the
// warehouse stores for the access_exceptions view.
type ReconcileRules struct {
	AllowedDomains   []string
	DomainAliases    map[string]string
	ApprovedAgencies []int64
	ActiveStatuses   []string
}

// Rules returns the reconcile rules normalized: domains and statuses
// lower-cased and trimmed, lists sorted without duplicates.
func (r Reconcile) Rules() ReconcileRules {
	norm := func(in []string) []string {
		out := make([]string, 0, len(in))
		for _, s := range in {
			out = append(out, strings.ToLower(strings.TrimSpace(s)))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	aliases := make(map[string]string, len(r.DomainAliases))
	for a, d := range r.DomainAliases {
		aliases[strings.ToLower(strings.TrimSpace(a))] = strings.ToLower(strings.TrimSpace(d))
	}
	agencies := slices.Clone(r.ApprovedAgencies)
	slices.Sort(agencies)
	if agencies == nil {
		agencies = []int64{}
	}
	return ReconcileRules{AllowedDomains: norm(r.AllowedDomains), DomainAliases: aliases,
		ApprovedAgencies: slices.Compact(agencies), ActiveStatuses: norm(r.ActiveStatuses)}
}
