package evidence

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TimeFormat is how a pack writes times: ISO 8601 in UTC, with the
// fraction of a second the database holds (RFC 3339).
const TimeFormat = time.RFC3339Nano

// Cell formats one value read from the database as a pack's text cell:
// nil is empty, times are UTC ISO 8601, text is made formula-safe (see
// Safe).
func Cell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return Safe(x)
	case time.Time:
		return x.UTC().Format(TimeFormat)
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int16:
		return strconv.FormatInt(int64(x), 10)
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = Cell(e)
		}
		return strings.Join(parts, " ")
	}
	return Safe(fmt.Sprint(v))
}

// Safe escapes text that a spreadsheet would run as a formula: a value
// starting with =, +, -, @, a tab or a carriage return gets a leading
// apostrophe (the OWASP CSV injection advice). Other text is unchanged.
func Safe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// ParseTime parses a command-line time: RFC 3339 (2026-03-31T17:00:00Z,
// with any offset), or a date (2026-03-31), which means midnight UTC. flag
// names the flag in the error.
func ParseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("--%s is empty: give a time such as 2026-03-31 or 2026-03-31T17:00:00Z", flag)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--%s %q is not a date (2026-03-31, midnight UTC) or an RFC 3339 time (2026-03-31T17:00:00Z or 2026-03-31T19:00:00+02:00)", flag, s)
}
