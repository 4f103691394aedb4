// Package report renders query results for people as aligned text tables.
package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Table is a text table with a header row.
type Table struct {
	headers []string
	rows    [][]string
}

// NewTable returns an empty table with these column headers.
func NewTable(headers ...string) *Table { return &Table{headers: headers} }

// Row appends a row; values are formatted with Cell.
func (t *Table) Row(values ...any) {
	row := make([]string, len(values))
	for i, v := range values {
		row[i] = Printable(Cell(v))
	}
	t.rows = append(t.rows, row)
}

// Len returns the number of rows.
func (t *Table) Len() int { return len(t.rows) }

// Cell formats one value for a table: nil and nil pointers print as "", times
// in UTC to the minute, durations rounded to the hour or minute.
func Cell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case *string:
		if x == nil {
			return ""
		}
		return *x
	case time.Time:
		if x.IsZero() {
			return ""
		}
		return x.UTC().Format("2006-01-02 15:04")
	case *time.Time:
		if x == nil {
			return ""
		}
		return Cell(*x)
	case time.Duration:
		return Age(x)
	case *int64:
		if x == nil {
			return ""
		}
		return fmt.Sprint(*x)
	case []int64:
		if x == nil {
			return "all"
		}
		parts := make([]string, len(x))
		for i, id := range x {
			parts[i] = fmt.Sprint(id)
		}
		return strings.Join(parts, ",")
	case bool:
		if x {
			return "yes"
		}
		return "no"
	default:
		return fmt.Sprint(x)
	}
}

// Printable returns s with every control character (C0, DEL, C1: escape
// sequences, line breaks, tabs) written as its Go escape ("\x1b", "\n"),
// so that text from the API or a directory export can neither drive the
// reader's terminal nor break a table's alignment. Other text is unchanged.
func Printable(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Age prints a duration as days and hours ("12d 4h"), or minutes when short.
func Age(d time.Duration) string {
	if d < 0 {
		return "-" + Age(-d)
	}
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	default:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
}

// Write prints the table with aligned columns.
func (t *Table) Write(w io.Writer) error {
	widths := make([]int, len(t.headers))
	for i, h := range t.headers {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			if i < len(widths) {
				widths[i] = max(widths[i], utf8.RuneCountInString(c))
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		for i := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			if i == len(widths)-1 {
				b.WriteString(c)
			} else {
				b.WriteString(c)
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		s := strings.TrimRight(b.String(), " ")
		b.Reset()
		fmt.Fprintln(w, s)
	}
	line(t.headers)
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
	_, err := fmt.Fprintf(w, "(%d rows)\n", len(t.rows))
	return err
}
