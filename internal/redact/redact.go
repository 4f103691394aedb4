// Package redact removes known secret values from text that ends up in
// errors and logs. A value is removed only where it occurs whole (not as a
// part of a longer word or token), and only when it is long enough to be a
// secret: a 4-character password must not rewrite every word that happens
// to contain it.
package redact

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MinLen is the shortest value redacted by value. Real secrets (developer
// tokens, client secrets, OAuth tokens, token keys) are far longer; shorter
// values would mostly rewrite ordinary words.
const MinLen = 8

// Mask replaces a redacted value.
const Mask = "[redacted]"

// Whole replaces with repl every whole occurrence of secret in s: one not
// preceded or followed by a letter or digit when the secret itself starts
// or ends with one. A secret shorter than MinLen is left alone.
func Whole(s, secret, repl string) string {
	if len(secret) < MinLen || !strings.Contains(s, secret) {
		return s
	}
	first, _ := utf8.DecodeRuneInString(secret)
	last, _ := utf8.DecodeLastRuneInString(secret)
	var b strings.Builder
	done := 0 // s[:done] is written
	for from := 0; ; {
		i := strings.Index(s[from:], secret)
		if i < 0 {
			b.WriteString(s[done:])
			return b.String()
		}
		i += from
		end := i + len(secret)
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if (i > 0 && word(first) && word(before)) || (end < len(s) && word(last) && word(after)) {
			// Part of a longer word: look again one rune further.
			_, n := utf8.DecodeRuneInString(s[i:])
			from = i + n
			continue
		}
		b.WriteString(s[done:i])
		b.WriteString(repl)
		done, from = end, end
	}
}

func word(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// Set is a list of secret values to redact. The zero value is empty and
// ready to use; a Set is not safe for concurrent use while values are
// added.
type Set struct {
	values []string
}

// Add remembers values (those shorter than MinLen are ignored).
func (s *Set) Add(values ...string) {
	for _, v := range values {
		if len(v) < MinLen {
			continue
		}
		if !slices.Contains(s.values, v) {
			s.values = append(s.values, v)
		}
	}
}

// Redact removes every whole occurrence of each value from text, longest
// values first (so a value that contains another is removed whole).
func (s *Set) Redact(text string) string {
	if s == nil {
		return text
	}
	vals := slices.Clone(s.values)
	slices.SortStableFunc(vals, func(a, b string) int { return len(b) - len(a) })
	for _, v := range vals {
		text = Whole(text, v, Mask)
	}
	return text
}
