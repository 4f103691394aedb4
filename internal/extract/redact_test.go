package extract

import "testing"

// TestRedactorOnlyWholeLongSecrets: the redactor removes secrets by value
// where they occur whole, and never rewrites ordinary words that merely
// contain a short or embedded secret.
func TestRedactorOnlyWholeLongSecrets(t *testing.T) {
	t.Parallel()
	r := newRedactor("Invalid", "devtoken-0123456789")
	r.add("user") // too short to be a secret: ignored
	r.add("refresh-tok-ABCDEFGH")
	in := "Invalid client secret provided for user devtoken-0123456789 (refresh-tok-ABCDEFGH); Invalidated Xdevtoken-0123456789"
	want := "Invalid client secret provided for user [REDACTED] ([REDACTED]); Invalidated Xdevtoken-0123456789"
	// "Invalid" is 7 characters: below the minimum, left alone.
	if got := r.redact(in); got != want {
		t.Errorf("redact =\n  %q\nwant\n  %q", got, want)
	}
}
