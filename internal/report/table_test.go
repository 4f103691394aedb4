package report

import (
	"strings"
	"testing"
	"time"
	"unicode"
)

func TestTableAligns(t *testing.T) {
	t.Parallel()
	tb := NewTable("id", "name", "accounts")
	tb.Row(int64(1), "Ålice", []int64(nil))
	tb.Row(int64(12345), nil, []int64{7, 8})
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := "id     name   accounts\n" +
		"-----  -----  --------\n" +
		"1      Ålice  all\n" +
		"12345         7,8\n" +
		"(2 rows)\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestAge(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		30 * time.Minute:          "30m",
		5*time.Hour + time.Minute: "5h 1m",
		(24*9 + 3) * time.Hour:    "9d 3h",
		-2 * time.Hour:            "-2h 0m",
	} {
		if got := Age(d); got != want {
			t.Errorf("Age(%v) = %q, want %q", d, got, want)
		}
	}
}

// Text from the API cannot drive the terminal or break the alignment.
func TestTableEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	tb := NewTable("name", "n")
	tb.Row("evil\x1b]0;pwned\x07\x1b[2J", 1)
	tb.Row("two\nlines\tand\u0085", 2)
	tb.Row("Zoë ✓", 3)
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsFunc(strings.ReplaceAll(out, "\n", ""), unicode.IsControl) {
		t.Errorf("control characters reached the output: %q", out)
	}
	for _, want := range []string{`evil\x1b]0;pwned\a\x1b[2J`, `two\nlines\tand\u0085`, "Zoë ✓"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 6 {
		t.Errorf("%d lines, want 6 (header, rule, 3 rows, count):\n%s", n, out)
	}
}
