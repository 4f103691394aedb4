package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem of the configuration: the key it is about (a
// dotted path such as "sync.concurrency"; "" for the file as a whole), the
// line of the file it is on (0 when unknown, e.g. a key that is absent),
// what is wrong, and, when it is not plain from that, what to do.
type FieldError struct {
	Key  string
	Line int
	Msg  string
	Fix  string
}

func (e *FieldError) Error() string {
	msg := e.Msg
	if e.Fix != "" {
		msg += ": " + e.Fix
	}
	return e.Where() + msg
}

// Where is "key (line N): ", "key: ", "line N: " or "".
func (e *FieldError) Where() string {
	switch {
	case e.Key != "" && e.Line > 0:
		return fmt.Sprintf("%s (line %d): ", e.Key, e.Line)
	case e.Key != "":
		return e.Key + ": "
	case e.Line > 0:
		return fmt.Sprintf("line %d: ", e.Line)
	}
	return ""
}

// Errors is every problem found in one configuration, in file order. Its
// message is one line: the problems joined with "; ".
type Errors []*FieldError

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap gives errors.As and errors.Is each problem.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// errOrNil returns es as an error, or nil when empty.
func (es Errors) errOrNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Env looks a variable up: its value, and whether it is set at all (an
// empty value that is set is not an error; an unset one is).
type Env func(name string) (string, bool)

// GetenvEnv adapts a getenv function: an empty value counts as unset.
func GetenvEnv(getenv func(string) string) Env {
	return func(name string) (string, bool) {
		v := getenv(name)
		return v, v != ""
	}
}

// decoder decodes a YAML node tree into a Go value by its yaml tags, so
// that every error names the key and the line, and every key that is
// present is remembered (a key set to 0 is not a key left out).
type decoder struct {
	env   Env
	errs  Errors
	lines map[string]int // key path -> line of every key set (non-null)
}

func (d *decoder) fail(key string, line int, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Key: key, Line: line, Msg: fmt.Sprintf(format, args...)})
}

var durationType = reflect.TypeFor[Duration]()

// resolve follows aliases (bounded: the walk goes down the Go type, which
// is finite, so a self-referencing anchor cannot loop).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// decode fills v (settable) from n; key names it in errors. It reports
// whether a value was set: a null, or a number, boolean or duration that
// expands to nothing (${X:-}), leaves the key absent, so its default
// applies.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string, line int) (set bool) {
	n = resolve(n)
	if n == nil || n.Kind == yaml.AliasNode {
		d.fail(key, line, "an alias that leads nowhere")
		return false
	}
	if isNull(n) {
		return false
	}
	before := len(d.errs)
	defer func() { set = set && len(d.errs) == before }()
	t := v.Type()
	switch {
	case t == durationType:
		s, ok := d.scalar(n, key, "a duration such as 30s, 5m or 7d")
		if !ok || s == "" {
			return false
		}
		dur, err := ParseDuration(s)
		if err != nil {
			d.fail(key, n.Line, "want a duration such as 30s, 90m, 168h or 7d, got %q", s)
			return false
		}
		v.SetInt(int64(dur))
		return true
	case t.Kind() == reflect.Pointer:
		elem := reflect.New(t.Elem())
		if !d.decode(n, elem.Elem(), key, line) {
			return false
		}
		v.Set(elem)
		return true
	case t.Kind() == reflect.Struct:
		d.decodeStruct(n, v, key)
		return true
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(key, n.Line, "want a list, such as [%s]", exampleOf(t.Elem()))
			return false
		}
		s := reflect.MakeSlice(t, 0, len(n.Content))
		for i, item := range n.Content {
			ev := reflect.New(t.Elem()).Elem()
			if d.decode(item, ev, fmt.Sprintf("%s[%d]", key, i), item.Line) {
				s = reflect.Append(s, ev)
			}
		}
		v.Set(s)
		return true
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode || t.Key().Kind() != reflect.String {
			d.fail(key, n.Line, "want a mapping of names to values, such as {a: b}")
			return false
		}
		m := reflect.MakeMap(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			ev := reflect.New(t.Elem()).Elem()
			if d.decode(val, ev, key+"."+k.Value, k.Line) {
				m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), ev)
			}
		}
		v.Set(m)
		return true
	default:
		return d.decodeScalar(n, v, key)
	}
}

// decodeScalar sets a string, number or boolean; see decode.
func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, key string) bool {
	t := v.Type()
	want := map[reflect.Kind]string{
		reflect.String: "text", reflect.Bool: "true or false",
		reflect.Int: "a whole number", reflect.Int64: "a whole number", reflect.Int32: "a whole number",
		reflect.Float64: "a number", reflect.Float32: "a number",
	}[t.Kind()]
	if want == "" {
		d.fail(key, n.Line, "cannot be set from the file")
		return false
	}
	s, ok := d.scalar(n, key, want)
	if !ok {
		return false
	}
	if s == "" && t.Kind() != reflect.String {
		return false
	}
	switch t.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		switch strings.ToLower(s) {
		case "true", "yes", "on":
			v.SetBool(true)
		case "false", "no", "off":
			v.SetBool(false)
		default:
			d.fail(key, n.Line, "want true or false, got %q", s)
			return false
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, err := parseInt(s)
		if err != nil || v.OverflowInt(i) {
			d.fail(key, n.Line, "want a whole number, got %q", s)
			return false
		}
		v.SetInt(i)
	case reflect.Float64, reflect.Float32:
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
		if err != nil || f != f || f > 1e300 || f < -1e300 {
			d.fail(key, n.Line, "want a number, got %q", s)
			return false
		}
		v.SetFloat(f)
	}
	return true
}

func parseInt(s string) (int64, error) {
	s = strings.ReplaceAll(s, "_", "")
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	return strconv.ParseInt(s, 0, 64) // 0x…, 0o…, 0b…
}

// scalar returns the node's text with ${…} references expanded, or fails
// naming what the key wants when the node is a list or a mapping.
func (d *decoder) scalar(n *yaml.Node, key, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		what := "a list"
		if n.Kind == yaml.MappingNode {
			what = "a mapping of keys"
		}
		d.fail(key, n.Line, "want %s, got %s", want, what)
		return "", false
	}
	s, err := d.expand(n.Value)
	if err != nil {
		err.Key, err.Line = key, n.Line
		d.errs = append(d.errs, err)
		return "", false
	}
	return s, true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, prefix string) {
	if n.Kind != yaml.MappingNode {
		what := "a value"
		if n.Kind == yaml.SequenceNode {
			what = "a list"
		}
		name := "the file"
		if prefix != "" {
			name = prefix
		}
		d.fail(prefix, n.Line, "%s must be a mapping of keys (key: value), got %s", name, what)
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || tag == "-" || tag == "" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		if prefix != "" {
			key = prefix + "." + k.Value
		}
		idx, ok := fields[k.Value]
		if !ok {
			msg := "unknown key"
			if s := closest(k.Value, names); s != "" {
				msg += "; did you mean " + strings.TrimPrefix(prefix+"."+s, ".") + "?"
			}
			d.fail(key, k.Line, "%s", msg)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(key, k.Line, "set twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if d.decode(val, v.Field(idx), key, k.Line) {
			d.lines[key] = k.Line
		}
	}
}

// exampleOf is a sample list item for a type.
func exampleOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "150123456"
	case reflect.String:
		return "example.com"
	}
	return "…"
}

// closest returns the candidate nearest to s by edit distance, when it is
// near enough to be a typo.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if dd := editDistance(s, c); dd < bestD {
			best, bestD = c, dd
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	refPattern  = regexp.MustCompile(`\$\{([^}]*)\}`)
	varName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	varWithDflt = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*):-(.*)$`)
)

// expand replaces ${NAME}, ${NAME:-default} and ${file:/path} in s. An
// unset variable without a default, an unreadable file or a malformed
// reference is an error naming it.
func (d *decoder) expand(s string) (string, *FieldError) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var firstErr *FieldError
	out := refPattern.ReplaceAllStringFunc(s, func(m string) string {
		ref := m[2 : len(m)-1]
		if firstErr != nil {
			return ""
		}
		if p, ok := strings.CutPrefix(ref, "file:"); ok {
			p = strings.TrimSpace(p)
			b, err := readRefFile(p)
			if err != nil {
				firstErr = &FieldError{Msg: fmt.Sprintf("${file:%s}: %v", p, err), Fix: "mount the secret there, or fix the path"}
				return ""
			}
			return strings.TrimRight(string(b), "\r\n")
		}
		if mm := varWithDflt.FindStringSubmatch(ref); mm != nil {
			if v, ok := d.env(mm[1]); ok && v != "" {
				return v
			}
			return mm[2]
		}
		if !varName.MatchString(ref) {
			firstErr = &FieldError{Msg: fmt.Sprintf("%q is not a reference", m), Fix: "write ${NAME}, ${NAME:-default} or ${file:/path}"}
			return ""
		}
		v, ok := d.env(ref)
		if !ok {
			firstErr = &FieldError{Msg: fmt.Sprintf("${%s} is not set", ref),
				Fix: fmt.Sprintf("export %s, or write ${%s:-default} to allow it unset", ref, ref)}
			return ""
		}
		return v
	})
	if firstErr != nil {
		return "", firstErr
	}
	return out, nil
}

// MaxRefFileSize bounds a file named by ${file:/path}: secrets are small,
// and a path such as /dev/zero must not exhaust memory.
const MaxRefFileSize = 1 << 20

// readRefFile reads a ${file:} reference: a regular file (a mounted secret,
// or a symlink to one) of at most MaxRefFileSize bytes. A pipe or device is
// refused, since reading it could block or never end.
func readRefFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no path after \"file:\"")
	}
	// Stat before opening: opening a FIFO for reading blocks until a
	// writer comes.
	st, err := os.Stat(path)
	if err != nil {
		return nil, plainPathError(err)
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, plainPathError(err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, plainPathError(err)
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxRefFileSize+1))
	if err != nil {
		return nil, plainPathError(err)
	}
	if len(b) > MaxRefFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxRefFileSize)
	}
	return b, nil
}

// plainPathError drops the *PathError layer (its text repeats the path,
// which the caller names already).
func plainPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var durationPart = regexp.MustCompile(`^([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h|d)`)

// ParseDuration parses a Go duration ("30s", "1h30m") that may also use d
// for days of 24 hours ("7d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "d") {
		return time.ParseDuration(s)
	}
	neg := false
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		neg, s = true, rest
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	if s == "" {
		return 0, fmt.Errorf("invalid duration %q", orig)
	}
	var total time.Duration
	for s != "" {
		m := durationPart.FindStringSubmatch(s)
		if m == nil {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		s = s[len(m[0]):]
		if m[2] == "d" {
			f, err := strconv.ParseFloat(m[1], 64)
			if err != nil || f*24 > float64(1<<63-1)/float64(time.Hour) {
				return 0, fmt.Errorf("invalid duration %q", orig)
			}
			total += time.Duration(f * 24 * float64(time.Hour))
			continue
		}
		d, err := time.ParseDuration(m[0])
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}
