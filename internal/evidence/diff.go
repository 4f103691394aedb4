package evidence

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/load"
	"github.com/msads-syncer/syncer/internal/report"
)

// Diff formats of `syncer review diff`.
var DiffFormats = []string{"table", "csv", "json", "markdown"}

// diffColumns are the columns of a review diff in every format.
var diffColumns = []string{"observed_at", "kind", "change", "customer_id", "customer_name", "id", "subject",
	"before", "after", "net", "run_id"}

// DiffRows returns a review diff's columns and rows (text cells, as the
// pack's CSV and workbook write them).
func DiffRows(changes []load.Change) ([]string, [][]any) {
	rows := make([][]any, 0, len(changes))
	for _, c := range changes {
		before, after := describe(c)
		rows = append(rows, []any{c.At, c.Entity, c.Change, c.CustomerID, c.CustomerName, c.EntityID, c.Subject,
			before, after, c.Net, c.RunID})
	}
	return slices.Clone(diffColumns), rows
}

// describe says what an entity was before and after a change: for a user
// that changed, only the columns that changed; otherwise its main facts
// (a grant's role and scope, an invitation's role, scope and expiry, a
// link's status and permission).
func describe(c load.Change) (before, after string) {
	if c.Entity == "user" && c.Before != nil && c.After != nil {
		var b, a []string
		keys := make([]string, 0, len(c.After))
		for k := range c.After {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if quietColumns[k] {
				continue
			}
			if fmt.Sprint(c.Before[k]) != fmt.Sprint(c.After[k]) {
				b = append(b, k+": "+cmp.Or(value(c.Before[k]), "-"))
				a = append(a, k+": "+cmp.Or(value(c.After[k]), "-"))
			}
		}
		return strings.Join(b, "; "), strings.Join(a, "; ")
	}
	return summarize(c.Entity, c.Before), summarize(c.Entity, c.After)
}

// quietColumns are left out of a changed user's description (they are in
// the JSON form): they change with every failed read.
var quietColumns = map[string]bool{"detail_tracking_id": true, "detail_error": true}

func summarize(entity string, m map[string]any) string {
	if m == nil {
		return ""
	}
	switch entity {
	case "user":
		parts := []string{value(m["email"])}
		if s := value(m["lifecycle_status"]); s != "" {
			parts = append(parts, s)
		}
		if s := value(m["detail_status"]); s != "" && s != "ok" {
			parts = append(parts, "detail "+s)
		}
		return strings.Join(parts, ", ")
	case "grant":
		return value(m["role_name"]) + " on " + scope(m["account_ids"])
	case "invitation":
		s := value(m["role_name"]) + " on " + scope(m["account_ids"])
		if e := value(m["expiration_date"]); e != "" {
			s += ", expires " + e
		}
		return s
	case "client_link":
		parts := []string{value(m["status"])}
		if p := value(m["customer_link_permission"]); p != "" {
			parts = append(parts, p)
		}
		if inv := value(m["inviter_email"]); inv != "" {
			parts = append(parts, "invited by "+inv)
		}
		return strings.Join(parts, ", ")
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// scope is an account id list: null is every account of the customer.
func scope(v any) string {
	ids, ok := v.([]any)
	switch {
	case v == nil:
		return "every account"
	case !ok:
		return value(v)
	case len(ids) == 0:
		return "no listed account"
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = value(id)
	}
	noun := "accounts "
	if len(ids) == 1 {
		noun = "account "
	}
	return noun + strings.Join(parts, ", ")
}

// value formats a JSON value of a history row; JSON numbers are ids here.
func value(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case float64:
		return fmt.Sprintf("%.0f", x)
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return t.UTC().Format(TimeFormat)
		}
		return x
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// WriteDiff writes a review diff in format (one of DiffFormats). The JSON
// form keeps each change's columns before and after in full.
func WriteDiff(w io.Writer, format string, from, to time.Time, changes []load.Change) error {
	cols, rows := DiffRows(changes)
	switch format {
	case "csv":
		return writeCSVRecords(w, cols, rows)
	case "json":
		type change struct {
			ObservedAt   string         `json:"observed_at"`
			Kind         string         `json:"kind"`
			Change       string         `json:"change"`
			CustomerID   int64          `json:"customer_id,string"`
			CustomerName string         `json:"customer_name"`
			ID           string         `json:"id"`
			Subject      string         `json:"subject"`
			Before       map[string]any `json:"before"`
			After        map[string]any `json:"after"`
			Net          string         `json:"net"`
			RunID        int64          `json:"run_id"`
		}
		doc := struct {
			From    string   `json:"from"`
			To      string   `json:"to"`
			Changes []change `json:"changes"`
		}{From: from.UTC().Format(TimeFormat), To: to.UTC().Format(TimeFormat), Changes: []change{}}
		for _, c := range changes {
			doc.Changes = append(doc.Changes, change{c.At.UTC().Format(TimeFormat), c.Entity, c.Change, c.CustomerID, c.CustomerName,
				c.EntityID, c.Subject, c.Before, c.After, c.Net, c.RunID})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	case "markdown":
		fmt.Fprintf(w, "Changes observed after %s up to %s: %d\n\n", from.UTC().Format(TimeFormat), to.UTC().Format(TimeFormat), len(rows))
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(cols, " | "), strings.Repeat(" --- |", len(cols)))
		for _, r := range rows {
			cells := make([]string, len(r))
			for i, v := range r {
				cells[i] = markdownCell(plain(v))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
		return nil
	case "table", "":
		if len(rows) == 0 {
			_, err := fmt.Fprintf(w, "No changes observed after %s up to %s.\n", from.UTC().Format(TimeFormat), to.UTC().Format(TimeFormat))
			return err
		}
		fmt.Fprintf(w, "%d changes observed after %s up to %s (net: how each differs between the two times):\n",
			len(rows), from.UTC().Format(TimeFormat), to.UTC().Format(TimeFormat))
		t := report.NewTable("observed", "kind", "change", "customer", "id", "subject", "before", "after", "net")
		for _, c := range changes {
			before, after := describe(c)
			t.Row(c.At, c.Entity, c.Change, c.CustomerID, c.EntityID, c.Subject, before, after, c.Net)
		}
		return t.Write(w)
	}
	return fmt.Errorf("unknown format %q: use %s", format, strings.Join(DiffFormats, ", "))
}

// plain is Cell without the formula escape, for output that no
// spreadsheet reads.
func plain(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return Cell(v)
}

// markdownCell escapes a cell of a Markdown table: a name from the API
// stays text (no HTML a renderer would run, no table break).
func markdownCell(s string) string {
	return strings.NewReplacer(`\`, `\\`, "|", `\|`, "&", "&amp;", "<", "&lt;", ">", "&gt;",
		"\r\n", "<br>", "\n", "<br>", "\r", "<br>").Replace(s)
}
