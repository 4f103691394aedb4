// Package directory reads a company directory export (a CSV file with a
// header row, from Entra ID, Okta or an HR system) into people, the rows
// `syncer reconcile` loads into the warehouse's directory_people.
//
// The header names of the fields are configured (reconcile.columns) and
// matched without case or surrounding spaces; a UTF-8 byte order mark is
// ignored, and a header with semicolons or tabs but no comma sets the
// delimiter (spreadsheets in many locales export so). Every error names the
// file and the line (and the column, when there is one), and reading
// stops at the first: a directory is loaded whole or not at all.
//
// The values are kept as the file gives them (trimmed): normalizing email
// addresses for matching is the warehouse's normalize_email, one rule in
// one place.
package directory

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Fields of a person, as reconcile.columns names them.
const (
	FieldEmail       = "email"
	FieldUPN         = "upn"
	FieldEmployeeID  = "employee_id"
	FieldStatus      = "status"
	FieldManager     = "manager"
	FieldDepartment  = "department"
	FieldDisplayName = "display_name"
)

// Column maps one field to its CSV header.
type Column struct {
	Field  string // one of the Field* constants
	Header string // the CSV header name; "" when the file has none
	// Key names the setting in errors (reconcile.columns.email), with Line
	// its line in the config file (0: not in the file, a default).
	Key  string
	Line int
	// Required: the CSV must have the column (it was configured
	// explicitly); otherwise a header that is absent leaves the field
	// empty.
	Required bool
}

// Person is one row of the directory.
type Person struct {
	// DirectoryID is the row's key: the employee id when the column is
	// mapped and the row has one, else the UPN, else the email (both
	// lower-cased, so a change of case is no change of person).
	DirectoryID string
	Email       string
	UPN         string
	EmployeeID  string
	Status      string
	Manager     string
	Department  string
	DisplayName string
	Line        int // the row's line in the file
}

// Directory is one export read whole.
type Directory struct {
	Source string // the file name as given
	SHA256 string // hex digest of the file's bytes
	People []Person
	// Mapped lists the fields whose column the file has.
	Mapped []string
}

// Has reports whether the file has the field's column.
func (d *Directory) Has(field string) bool {
	for _, f := range d.Mapped {
		if f == field {
			return true
		}
	}
	return false
}

// MaxFileSize bounds the file read (a directory of a million people is
// well under it).
const MaxFileSize = 512 << 20

// ReadFile reads the directory CSV at path.
func ReadFile(path string, cols []Column) (*Directory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", path, plainPathError(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 {
		return nil, fmt.Errorf("directory %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", path, plainPathError(err))
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("directory %s: larger than %d MiB", path, MaxFileSize>>20)
	}
	return Read(path, b, cols)
}

// plainPathError drops the repeated path of an *os.PathError.
func plainPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Read parses the CSV bytes of the file named source.
func Read(source string, b []byte, cols []Column) (*Directory, error) {
	sum := sha256.Sum256(b)
	d := &Directory{Source: source, SHA256: hex.EncodeToString(sum[:])}
	fail := func(line int, format string, args ...any) error {
		where := source
		if line > 0 {
			where = fmt.Sprintf("%s line %d", source, line)
		}
		return fmt.Errorf("directory %s: %s", where, fmt.Sprintf(format, args...))
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(b) {
		line := 1 + bytes.Count(b[:firstInvalid(b)], []byte("\n"))
		return nil, fail(line, "is not UTF-8 text: export the file as UTF-8 CSV")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fail(0, "is empty: expected a header row and one row per person")
	}
	r := csv.NewReader(bytes.NewReader(b))
	r.Comma = delimiter(b)
	header, err := r.Read()
	if err != nil {
		return nil, csvError(source, err)
	}
	index := map[string]int{} // lower-cased header -> column index
	for i, h := range header {
		k := strings.ToLower(strings.TrimSpace(h))
		if k == "" {
			continue
		}
		if j, dup := index[k]; dup {
			return nil, fail(1, "column %d and column %d have the same header %q", j+1, i+1, strings.TrimSpace(h))
		}
		index[k] = i
	}
	pos := map[string]int{} // field -> column index
	for _, c := range cols {
		if c.Header == "" {
			continue
		}
		i, ok := index[strings.ToLower(c.Header)]
		if !ok {
			if c.Required {
				where := c.Key
				if c.Line > 0 {
					where = fmt.Sprintf("%s (config line %d)", c.Key, c.Line)
				}
				return nil, fail(1, "has no column %q (%s); its header is: %s", c.Header, where, quoteList(header))
			}
			continue
		}
		pos[c.Field] = i
		d.Mapped = append(d.Mapped, c.Field)
	}
	_, hasEmail := pos[FieldEmail]
	_, hasUPN := pos[FieldUPN]
	if !hasEmail && !hasUPN {
		return nil, fail(1, "has neither the email column %q nor the UPN column %q (reconcile.columns.email, reconcile.columns.upn): people are matched by them; its header is: %s",
			headerOf(cols, FieldEmail), headerOf(cols, FieldUPN), quoteList(header))
	}
	r.FieldsPerRecord = len(header)
	seen := map[string]int{} // directory id -> line
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(source, err)
		}
		line, _ := r.FieldPos(0)
		get := func(field string) string {
			if i, ok := pos[field]; ok {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		if allEmpty(rec) {
			continue // a line of only delimiters: spreadsheets append them
		}
		p := Person{Email: get(FieldEmail), UPN: get(FieldUPN), EmployeeID: get(FieldEmployeeID), Status: get(FieldStatus),
			Manager: get(FieldManager), Department: get(FieldDepartment), DisplayName: get(FieldDisplayName), Line: line}
		switch {
		case p.EmployeeID != "":
			p.DirectoryID = p.EmployeeID
		case p.UPN != "":
			p.DirectoryID = strings.ToLower(p.UPN)
		case p.Email != "":
			p.DirectoryID = strings.ToLower(p.Email)
		default:
			return nil, fail(line, "has no employee id, UPN or email: every person needs one of them")
		}
		if first, dup := seen[p.DirectoryID]; dup {
			return nil, fail(line, "repeats the person of line %d (directory id %q): each person must be listed once", first, p.DirectoryID)
		}
		seen[p.DirectoryID] = line
		d.People = append(d.People, p)
	}
	if len(d.People) == 0 {
		return nil, fail(0, "has a header but no person: an empty directory would remove everyone; nothing was loaded")
	}
	return d, nil
}

func headerOf(cols []Column, field string) string {
	for _, c := range cols {
		if c.Field == field {
			return c.Header
		}
	}
	return ""
}

func allEmpty(rec []string) bool {
	for _, v := range rec {
		if strings.TrimSpace(v) != "" {
			return false
		}
	}
	return true
}

// csvError names the line and column of a CSV syntax error.
func csvError(source string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		msg := pe.Err.Error()
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			msg = "has a different number of fields than the header"
		}
		return fmt.Errorf("directory %s line %d, column %d: %s", source, pe.Line, pe.Column, msg)
	}
	return fmt.Errorf("directory %s: %w", source, err)
}

// delimiter is ',' unless the header line has none and has semicolons or
// tabs.
func delimiter(b []byte) rune {
	first, _, _ := bytes.Cut(b, []byte("\n"))
	if bytes.ContainsRune(first, ',') {
		return ','
	}
	switch {
	case bytes.ContainsRune(first, ';'):
		return ';'
	case bytes.ContainsRune(first, '\t'):
		return '\t'
	}
	return ','
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// quoteList prints a header for an error: "a", "b", "c" (at most 20).
func quoteList(h []string) string {
	var b strings.Builder
	for i, s := range h {
		if i == 20 {
			fmt.Fprintf(&b, ", … (%d more)", len(h)-20)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", s)
	}
	return b.String()
}
