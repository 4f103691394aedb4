package retryafter

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v      string
		limit  time.Duration
		want   time.Duration
		wantOK bool
	}{
		{"", 0, 0, false},
		{"7", 0, 7 * time.Second, true},
		{" 1.5 ", 0, 1500 * time.Millisecond, true},
		{"0", 0, 0, true},
		{"-3", 0, 0, false},
		{"NaN", 0, 0, false},
		{"soon", 0, 0, false},
		{"3600", time.Minute, time.Minute, true},
		{"1e300", 0, time.Duration(1 << 62), true},
		{"Mon, 30 Nov 2026 12:00:09 GMT", 0, 9 * time.Second, true},
		{"Mon, 30 Nov 2026 11:00:00 GMT", 0, 0, true},
		{"Tue, 01 Dec 2026 12:00:00 GMT", time.Hour, time.Hour, true},
	} {
		got, ok := Parse(tc.v, now, tc.limit)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("Parse(%q, limit %v) = %v, %v; want %v, %v", tc.v, tc.limit, got, ok, tc.want, tc.wantOK)
		}
	}
}
