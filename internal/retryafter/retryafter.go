// Package retryafter reads the HTTP Retry-After header (RFC 9110 §10.2.3)
// the one way every client of the syncer needs it: the Microsoft
// Advertising API after throttling, the webhook receiver, the token
// endpoint.
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Parse reads v, a number of seconds (fractions accepted) or an HTTP date,
// as the wait from now, capped at limit (no cap when limit <= 0). A date in
// the past is a wait of 0. ok is false when v is empty or neither form.
func Parse(v string, now time.Time, limit time.Duration) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs != secs { // negative or NaN
			return 0, false
		}
		if limit > 0 && secs > limit.Seconds() {
			return limit, true
		}
		if secs > float64(1<<62)/float64(time.Second) {
			secs = float64(1<<62) / float64(time.Second)
		}
		d = time.Duration(secs * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	if limit > 0 {
		d = min(d, limit)
	}
	return d, true
}
