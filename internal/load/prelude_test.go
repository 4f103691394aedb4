package load

import (
	"testing"
)

// BEGIN sets the search path from a literal (preludeTx): any schema name
// comes back from the server as it was quoted.
func TestQuoteLiteralRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, s := range []string{"plain", "it's", `back\slash`, `"Schema ""x""", public`, `\'`, "ünïcode"} {
		var got string
		if err := b.pool.QueryRow(t.Context(), "SELECT "+quoteLiteral(s)).Scan(&got); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got != s {
			t.Errorf("quoteLiteral(%q) reads back as %q", s, got)
		}
	}
}
