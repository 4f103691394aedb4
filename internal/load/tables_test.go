package load

import (
	"slices"
	"testing"
)

// The table descriptions name the schema's columns: every column of each
// entity table is a key column, a written column or bookkeeping, and its
// history table has the same columns plus the interval.
func TestTablesMatchSchema(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	columns := func(table string) []string {
		return b.strings(t, `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY 1`, b.schema, table)
	}
	for _, tb := range append(slices.Clone(tables), directoryTable) {
		want := append(tb.All(), "first_seen_at", "updated_at", "removed_at")
		if tb == directoryTable {
			want = append(want, "loaded_at") // generated from updated_at
		}
		slices.Sort(want)
		equal(t, tb.Name+" columns", columns(tb.Name), want)
		if tb.History == "" {
			continue
		}
		want = append(tb.All(), "valid_from", "valid_to", "change", tb.RunColumn())
		slices.Sort(want)
		equal(t, tb.History+" columns", columns(tb.History), want)
	}
}
