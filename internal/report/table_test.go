package report

import (
	"strings"
	"testing"
	"time"
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
