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
	for _, f := range m.Files {
		listed[f.Name] = true
		verifyFile(dir, f, add)
	}
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

func verifyFile(dir string, f File, add func(bool, string, ...any)) {
	if f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." {
		add(false, "%s: not a plain file name", f.Name)
		return
	}
	path := filepath.Join(dir, f.Name)
	sum, size, err := hashFile(path)
	if err != nil {
		add(false, "%s: %v", f.Name, plainErr(err))
		return
	}
	if sum != f.SHA256 || size != f.Bytes {
		add(false, "%s: changed: SHA-256 %s (%d bytes), the manifest says %s (%d bytes)", f.Name, sum, size, f.SHA256, f.Bytes)
		return
	}
	if f.Format != "csv" {
		add(true, "%s: SHA-256 matches", f.Name)
		return
	}
	n, per, err := countCSV(path)
	switch {
	case err != nil:
		add(false, "%s: %v", f.Name, err)
	case f.Rows == nil || n != *f.Rows:
		add(false, "%s: %d rows, the manifest says %v", f.Name, n, rows(f.Rows))
	case !maps.Equal(per, f.RowsPerCustomer):
		add(false, "%s: rows per customer %v, the manifest says %v", f.Name, per, f.RowsPerCustomer)
	default:
		add(true, "%s: SHA-256 matches, %d rows", f.Name, n)
	}
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
		*notes = append(*notes, "the pack is not signed: its hashes show it is complete, not who wrote it")
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
		add(false, "%s: the signature does not match manifest.json (key %s)", SignatureFile, keyID(key))
		return
	}
	if embedded {
		add(true, "%s: signature verifies with the key in the manifest (%s)", SignatureFile, keyID(key))
		*notes = append(*notes, "the signature was checked with the key the manifest carries: it proves the pack unchanged since signing, not who signed it; give --public-key to check that")
		return
	}
	add(true, "%s: signature verifies with the given public key (%s)", SignatureFile, keyID(key))
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
