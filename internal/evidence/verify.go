package evidence

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Finding is one line of a verification: what was checked and whether it
// held.
type Finding struct {
	OK   bool
	Text string
}

// Verification is the outcome of Verify.
type Verification struct {
	Findings []Finding
	// Intact: every file is there, unchanged, with its counts, no file is
	// extra, and the signature (when there is one, or when a key was
	// given) verifies.
	Intact bool
	// Manifest is the parsed manifest (nil when unreadable).
	Manifest *Manifest
	// Notes are facts about the pack that do not touch its integrity: the
	// gaps and failed checks it records, what a signature proves.
	Notes []string
}

// Verify checks the pack in dir: manifest.json parses; every file it
// lists exists with the recorded size and SHA-256, and a CSV with the
// recorded row counts (in all and per customer); no other file is in dir;
// manifest.sig verifies. publicKey, when given, is the key the signature
// must verify with (and a pack without a signature then fails); without
// it the manifest's own key is used, which proves the pack unchanged since
// it was signed, not who signed it.
func Verify(dir string, publicKey ed25519.PublicKey) Verification {
	var v Verification
	add := func(ok bool, format string, args ...any) {
		v.Findings = append(v.Findings, Finding{OK: ok, Text: fmt.Sprintf(format, args...)})
	}
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		add(false, "%s: %v", ManifestFile, plainErr(err))
		return v
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		add(false, "%s: not valid JSON: %v", ManifestFile, err)
		return v
	}
	if m.Format != FormatVersion {
		add(false, "%s: format %q, want %q", ManifestFile, m.Format, FormatVersion)
		return v
	}
	v.Manifest = &m
	verifySignature(dir, raw, &m, publicKey, add, &v.Notes)

	listed := map[string]bool{ManifestFile: true, SignatureFile: true}
	counts := map[string]csvCount{}
	for _, f := range m.Files {
		if listed[f.Name] {
			add(false, "%s: listed twice in the manifest", f.Name)
			continue
		}
		listed[f.Name] = true
		if c, ok := verifyFile(dir, f, add); ok && f.Population != "" {
			counts[f.Population] = c
		}
	}
	recheck(m.Checks, counts, add)
	entries, err := os.ReadDir(dir)
	if err != nil {
		add(false, "read %s: %v", dir, plainErr(err))
	}
	for _, e := range entries {
		if !listed[e.Name()] {
			add(false, "%s: not listed in the manifest (an extra file)", e.Name())
		}
	}
	v.Intact = true
	for _, f := range v.Findings {
		v.Intact = v.Intact && f.OK
	}
	if len(m.Gaps) > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("the manifest records %d gaps (customers without complete data at as_of)", len(m.Gaps)))
	}
	if n := len(m.FailedChecks()); n > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("the manifest records %d failed completeness checks", n))
	}
	return v
}

// csvCount is a CSV's data rows as Verify counted them from the file.
type csvCount struct {
	rows        int
	perCustomer map[string]int
}

// verifyFile checks one listed file; for a CSV whose rows it could count
// it returns them and true.
func verifyFile(dir string, f File, add func(bool, string, ...any)) (csvCount, bool) {
	if f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." || f.Name == ManifestFile || f.Name == SignatureFile {
		add(false, "%s: not a plain file name of a pack's data file", f.Name)
		return csvCount{}, false
	}
	path := filepath.Join(dir, f.Name)
	sum, size, err := hashFile(path)
	if err != nil {
		add(false, "%s: %v", f.Name, plainErr(err))
		return csvCount{}, false
	}
	if sum != f.SHA256 || size != f.Bytes {
		add(false, "%s: changed: SHA-256 %s (%d bytes), the manifest says %s (%d bytes)", f.Name, sum, size, f.SHA256, f.Bytes)
		return csvCount{}, false
	}
	if f.Format != "csv" {
		add(true, "%s: SHA-256 matches", f.Name)
		return csvCount{}, false
	}
	n, per, err := countCSV(path)
	switch {
	case err != nil:
		add(false, "%s: %v", f.Name, err)
		return csvCount{}, false
	case f.Rows == nil || n != *f.Rows:
		add(false, "%s: %d rows, the manifest says %v", f.Name, n, rows(f.Rows))
	case !maps.Equal(per, f.RowsPerCustomer):
		add(false, "%s: rows per customer %v, the manifest says %v", f.Name, per, f.RowsPerCustomer)
	default:
		add(true, "%s: SHA-256 matches, %d rows", f.Name, n)
	}
	return csvCount{rows: n, perCustomer: per}, true
}

// recheck judges again, against the rows Verify counted in the files, each
// completeness check whose actual side is a file's rows (<population>_count,
// _written, _listed_by_sync): a file whose rows were changed together with
// its hash and counts in the manifest no longer matches what the database
// gave (the checks' expected side). A check of a file that could not be
// counted is skipped: that file has its own finding.
func recheck(checks []Check, counts map[string]csvCount, add func(bool, string, ...any)) {
	held, bad := 0, 0
	for _, c := range checks {
		var pop string
		var actual map[string]int64
		for _, suffix := range []string{"_count", "_written", "_listed_by_sync"} {
			p, ok := strings.CutSuffix(c.Name, suffix)
			if !ok {
				continue
			}
			cnt, counted := counts[p]
			if !counted {
				break
			}
			pop, actual = p, map[string]int64{}
			switch suffix {
			case "_count":
				for id, n := range cnt.perCustomer {
					actual[id] = int64(n)
				}
			case "_written":
				actual["rows"] = int64(cnt.rows)
			case "_listed_by_sync": // only the customers the sync vouches for
				for id := range c.Expected {
					actual[id] = int64(cnt.perCustomer[id])
				}
			}
			break
		}
		if pop == "" {
			continue
		}
		again := judge(Check{Expected: c.Expected, Actual: actual})
		switch {
		case again.Result != c.Result:
			bad++
			add(false, "check %s: the manifest says %s, the files give %s (%s)", c.Name, c.Result, again.Result, again.Detail)
		case !maps.Equal(actual, nonNilCounts(c.Actual)):
			bad++
			add(false, "check %s: the manifest's actual counts %v differ from the files' %v", c.Name, c.Actual, actual)
		default:
			held++
		}
	}
	if held > 0 && bad == 0 {
		add(true, "checks: %d completeness checks give the manifest's results again on the files' rows", held)
	}
}

func nonNilCounts(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}

func rows(p *int) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

func verifySignature(dir string, raw []byte, m *Manifest, key ed25519.PublicKey, add func(bool, string, ...any), notes *[]string) {
	sigText, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	hasSig := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		add(false, "%s: %v", SignatureFile, plainErr(err))
		return
	}
	switch {
	case !hasSig && m.Signature == nil && key == nil:
		*notes = append(*notes, "the pack is not signed: the files match manifest.json, but nothing proves manifest.json itself "+
			"(whoever can change a file can change its hash and counts there too); only a signature checked with --public-key proves that")
		return
	case !hasSig:
		add(false, "%s: missing (the manifest says the pack is signed, or a public key was given)", SignatureFile)
		return
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigText)))
	if err != nil || len(sig) != ed25519.SignatureSize {
		add(false, "%s: not a base64 Ed25519 signature", SignatureFile)
		return
	}
	embedded := key == nil
	if embedded {
		if m.Signature == nil {
			add(false, "%s: present, but the manifest names no key and no --public-key was given", SignatureFile)
			return
		}
		k, err := base64.StdEncoding.DecodeString(m.Signature.PublicKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			add(false, "%s: the manifest's public key is not base64 of 32 bytes", ManifestFile)
			return
		}
		key = ed25519.PublicKey(k)
	}
	if !ed25519.Verify(key, raw, sig) {
		add(false, "%s: the signature does not match manifest.json (key %s)", SignatureFile, KeyID(key))
		return
	}
	if embedded {
		add(true, "%s: signature verifies with the key in the manifest (%s)", SignatureFile, KeyID(key))
		*notes = append(*notes, "the signature was checked with the key the manifest carries: it proves the pack unchanged since signing, not who signed it; give --public-key to check that")
		return
	}
	add(true, "%s: signature verifies with the given public key (%s)", SignatureFile, KeyID(key))
}

// plainErr drops the operation and path an *os.PathError repeats.
func plainErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Names returns the file names a manifest lists, sorted.
func (m *Manifest) Names() []string {
	out := make([]string, 0, len(m.Files))
	for _, f := range m.Files {
		out = append(out, f.Name)
	}
	slices.Sort(out)
	return out
}
