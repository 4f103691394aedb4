package redact

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Error returns err with every occurrence of each of secrets in its
// message replaced with Mask, longest first. Unlike Set, it replaces an
// occurrence anywhere, whatever its length: secrets here are values known
// to be secret in this error (a URL, its password). errors.Is and errors.As
// still see err's chain; do not print an unwrapped error, whose message
// may hold a secret. Err itself is returned when its message holds none.
func Error(err error, secrets ...string) error {
	return Map(err, func(msg string) string { return Text(msg, secrets...) })
}

// Map returns err with its message rewritten by f, keeping err's chain for
// errors.Is and errors.As; err itself when f changes nothing.
func Map(err error, f func(msg string) string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	red := f(msg)
	if red == msg {
		return err
	}
	return &redactedError{msg: red, err: err}
}

// Text is s with every occurrence of each of secrets replaced with Mask,
// longest first, wherever it occurs (see Error).
func Text(s string, secrets ...string) string {
	vals := slices.Clone(secrets)
	slices.SortStableFunc(vals, func(a, b string) int { return len(b) - len(a) })
	for _, v := range vals {
		if v != "" {
			s = strings.ReplaceAll(s, v, Mask)
		}
	}
	return s
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }

// Unwrap keeps errors.Is and errors.As working.
func (e *redactedError) Unwrap() error { return e.err }

// Password returns the forms in which password may appear in a message:
// as it is, query-escaped and path-escaped (nil for "").
func Password(password string) []string {
	if password == "" {
		return nil
	}
	return []string{password, url.QueryEscape(password), url.PathEscape(password)}
}

// Userinfo returns the secret forms of rawURL's userinfo when it has a
// password (https://user:password@host): the userinfo as written and the
// password's forms (see Password). Nil when rawURL has no password or does
// not parse.
func Userinfo(rawURL string) []string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return nil
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" {
		return nil
	}
	return append([]string{u.User.String()}, Password(pw)...)
}

// URL returns the forms of a URL that is a secret as a whole (a Slack
// webhook URL carries its token in the path): the URL itself, its path
// (when longer than "/") as it is and escaped, its query, and its userinfo
// (see Userinfo).
func URL(rawURL string) []string {
	if rawURL == "" {
		return nil
	}
	out := []string{rawURL}
	u, err := url.Parse(rawURL)
	if err != nil {
		return out
	}
	if len(u.Path) > 1 {
		out = append(out, u.Path, u.EscapedPath())
	}
	if u.RawQuery != "" {
		out = append(out, u.RawQuery)
	}
	return append(out, Userinfo(rawURL)...)
}

var (
	kvPassword  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	urlPassword = regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
)

// ConnPasswords replaces with Mask whatever looks like a password in a
// connection string: the value of password=… (key=value DSNs) and the
// password of scheme://user:password@ (URLs), whatever its value.
func ConnPasswords(s string) string {
	s = kvPassword.ReplaceAllString(s, "${1}"+Mask)
	return urlPassword.ReplaceAllString(s, "${1}"+Mask+"@")
}
