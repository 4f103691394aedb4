package load

import (
	"fmt"
	"log/slog"
	"strings"
)

// Counts is what a snapshot changed (or would change) in one entity table.
// Accounts have no history; an account that reappears counts as changed.
type Counts struct {
	Added      int `json:"added"`
	Changed    int `json:"changed"`
	Removed    int `json:"removed"`
	Reappeared int `json:"reappeared"`
}

// Total is the number of rows changed.
func (c Counts) Total() int { return c.Added + c.Changed + c.Removed + c.Reappeared }

// Add returns c + d.
func (c Counts) Add(d Counts) Counts {
	return Counts{c.Added + d.Added, c.Changed + d.Changed, c.Removed + d.Removed, c.Reappeared + d.Reappeared}
}

// Kinds returns the counts by change kind ("added", "changed", "removed",
// "reappeared": the history tables' change values), in that order.
func (c Counts) Kinds() []KindCount {
	return []KindCount{{"added", c.Added}, {"changed", c.Changed}, {"removed", c.Removed}, {"reappeared", c.Reappeared}}
}

// KindCount is one change kind and its count.
type KindCount struct {
	Kind string
	N    int
}

// add counts n rows of the change kind (a history change value).
func (c *Counts) add(kind string, n int) {
	switch kind {
	case "added":
		c.Added += n
	case "changed":
		c.Changed += n
	case "removed":
		c.Removed += n
	case "reappeared":
		c.Reappeared += n
	}
}

func (c Counts) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("added", c.Added), slog.Int("changed", c.Changed),
		slog.Int("removed", c.Removed), slog.Int("reappeared", c.Reappeared))
}

// Changes is what a snapshot changed (or would change) in the warehouse, per
// entity. The summary JSON is {"users": {"added": 1, ...}, "roles": ...}.
type Changes struct {
	Users       Counts `json:"users"`
	Roles       Counts `json:"roles"`
	Invitations Counts `json:"invitations"`
	Accounts    Counts `json:"accounts"`
	Links       Counts `json:"client_links"`
}

// EntityCounts is one entity's counts, named by its short name (users, roles,
// invitations, accounts, client_links) and its table (users, user_roles, ...).
type EntityCounts struct {
	Name, Table string
	Counts
}

// Entities returns the counts of every entity, in a fixed order: the one
// loop the summary, metrics, logs and customer_syncs use.
func (c Changes) Entities() []EntityCounts {
	return []EntityCounts{
		{"users", "users", c.Users},
		{"roles", "user_roles", c.Roles},
		{"invitations", "user_invitations", c.Invitations},
		{"accounts", "accounts", c.Accounts},
		{"client_links", "client_links", c.Links},
	}
}

// of returns the counts of the entity table.
func (c *Changes) of(table string) *Counts {
	switch table {
	case "users":
		return &c.Users
	case "user_roles":
		return &c.Roles
	case "user_invitations":
		return &c.Invitations
	case "accounts":
		return &c.Accounts
	case "client_links":
		return &c.Links
	}
	panic("load: no counts for table " + table)
}

// Total returns the number of changed rows.
func (c Changes) Total() int {
	n := 0
	for _, e := range c.Entities() {
		n += e.Total()
	}
	return n
}

// Add returns the sum of c and d.
func (c Changes) Add(d Changes) Changes {
	return Changes{c.Users.Add(d.Users), c.Roles.Add(d.Roles), c.Invitations.Add(d.Invitations), c.Accounts.Add(d.Accounts), c.Links.Add(d.Links)}
}

// String summarizes the changes, e.g.
// "users +2 ~1 -0 ^0, roles +3 ~0 -1 ^0, invitations +0 ~0 -0 ^0, accounts +0 ~0 -0 ^0, client_links +0 ~0 -0 ^0"
// (+ added, ~ changed, - removed, ^ reappeared), or "no changes".
func (c Changes) String() string {
	if c.Total() == 0 {
		return "no changes"
	}
	parts := make([]string, 0, 5)
	for _, e := range c.Entities() {
		parts = append(parts, fmt.Sprintf("%s +%d ~%d -%d ^%d", e.Name, e.Added, e.Changed, e.Removed, e.Reappeared))
	}
	return strings.Join(parts, ", ")
}

// LogValue makes Changes print as a group of groups in slog
// (changes.users.added=1 ...).
func (c Changes) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, 5)
	for _, e := range c.Entities() {
		attrs = append(attrs, slog.Any(e.Name, e.Counts))
	}
	return slog.GroupValue(attrs...)
}
