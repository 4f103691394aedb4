package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/msads-syncer/syncer/internal/evidence"
	"github.com/msads-syncer/syncer/internal/load"
)

// demoEvidence writes a signed evidence pack as of now with the changes
// since the first sync, shows its manifest, verifies it, verifies a copy
// with one byte of one CSV changed (which fails), and prints the review
// diff between the two syncs. The pack goes into keepDir when not empty
// (demo --keep), else into a temporary folder removed afterwards.
func demoEvidence(ctx context.Context, out io.Writer, s runSetup, firstSync time.Time, keepDir string) error {
	base := keepDir
	if base == "" {
		tmp, err := os.MkdirTemp("", "syncer-demo-evidence-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		base = tmp
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	pubFile := filepath.Join(base, "signing.pub.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		return err
	}
	dir := filepath.Join(base, "pack")
	now := time.Now().UTC().Truncate(time.Microsecond)
	fmt.Fprintf(out, "$ syncer evidence --as-of %s --since %s --out %s   (evidence.signing_key: a key made for the demo)\n",
		now.Format(evidence.TimeFormat), firstSync.Format(evidence.TimeFormat), dir)
	m, err := writePack(ctx, s.pool, s.cfg, packRequest{dir: dir, asOf: now, since: firstSync, key: priv})
	if err != nil {
		return err
	}
	printPack(out, dir, m)

	fmt.Fprintf(out, "\n== The pack's manifest (%s, abridged: each file's SQL is there in full) ==\n", evidence.ManifestFile)
	printManifest(out, m)

	fmt.Fprintf(out, "\n$ syncer evidence verify %s --public-key %s\n", dir, pubFile)
	if !printVerification(out, dir, evidence.Verify(dir, pub)) {
		return fmt.Errorf("the demo's own pack does not verify")
	}

	// The same on a copy with one byte of one CSV changed.
	tampered := filepath.Join(base, "pack-tampered")
	if err := copyDir(dir, tampered); err != nil {
		return err
	}
	target := filepath.Join(tampered, "role_grants.csv")
	b, err := os.ReadFile(target)
	if err != nil {
		return err
	}
	i := strings.Index(string(b), "Super Admin")
	if i < 0 {
		i = len(b) / 2
	}
	b[i] ^= 0x20 // "Super" -> "super"
	if err := os.WriteFile(target, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nOne byte of %s changed in a copy of the pack:\n$ syncer evidence verify %s\n", filepath.Base(target), tampered)
	v := evidence.Verify(tampered, pub)
	if printVerification(out, tampered, v) {
		return fmt.Errorf("a tampered pack verified")
	}
	fmt.Fprintln(out, "(exit code 1)")

	fmt.Fprintf(out, "\n== What changed between the first and the last sync (syncer review diff --from %s --to %s) ==\n",
		firstSync.Format(evidence.TimeFormat), now.Format(evidence.TimeFormat))
	changes, err := load.ReviewDiff(ctx, s.pool, s.cfg.Database.Schema, firstSync, now, nil)
	if err != nil {
		return err
	}
	if err := evidence.WriteDiff(out, "table", firstSync, now, changes); err != nil {
		return err
	}
	if keepDir != "" {
		fmt.Fprintf(out, "\nThe pack is kept in %s (open summary.html first).\n", dir)
	}
	return nil
}

// printManifest prints the parts of a manifest a reader looks at first.
func printManifest(w io.Writer, m *evidence.Manifest) {
	fmt.Fprintf(w, "tool %s %s (commit %s), generated %s, as_of %s, since %s\n", m.Tool.Name, m.Tool.Version, m.Tool.Commit,
		m.GeneratedAt, m.AsOf, m.Since)
	fmt.Fprintf(w, "database %s (PostgreSQL %s), schema %s version %d, %s\n", m.Database.Name, m.Database.ServerVersion,
		m.Database.Schema, m.Database.SchemaVersion, m.Database.Transaction)
	for _, p := range m.Credential.Principals {
		visible := "not recorded"
		if p.Visible != nil {
			visible = fmt.Sprint(p.Visible)
		}
		fmt.Fprintf(w, "read as %s (user %d), runs %v, customers %v; the user could see %s\n", p.UserName, p.UserID, p.Runs, p.Customers, visible)
	}
	fmt.Fprintf(w, "customers: configured %v (discover %v), synced %v, not visible %v, not synced %v\n", m.Credential.Configured,
		m.Credential.Discover, m.Credential.Synced, m.Credential.NotVisible, m.Credential.NotSynced)
	for _, c := range m.Customers {
		fmt.Fprintf(w, "  customer %d %q: run %d completed %s (%s, run %s), complete at as_of: %v\n", c.CustomerID, c.Name, c.RunID,
			c.CompletedAt, c.Status, c.RunStatus, c.CompleteAtAsOf)
	}
	fmt.Fprintln(w, "files:")
	for _, f := range m.Files {
		first := ""
		if f.SQL != "" {
			first = "  sql: " + firstStatementLine(f.SQL)
		}
		rows := ""
		if f.Rows != nil {
			rows = fmt.Sprintf(", %d rows", *f.Rows)
		}
		fmt.Fprintf(w, "  %s%s, sha256 %s%s\n", f.Name, rows, f.SHA256, first)
	}
	fmt.Fprintln(w, "checks:")
	for _, c := range m.Checks {
		fmt.Fprintf(w, "  %-4s %s: %s\n", c.Result, c.Name, c.Detail)
	}
	if len(m.Gaps) == 0 {
		fmt.Fprintln(w, "gaps: none")
	}
	for _, g := range m.Gaps {
		fmt.Fprintf(w, "gap: customer %d: %s\n", g.CustomerID, g.Reason)
	}
}

// firstStatementLine is the first line of SQL that is not a comment.
func firstStatementLine(sql string) string {
	for _, l := range strings.Split(sql, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--") {
			return l + " …"
		}
	}
	return ""
}

// copyDir copies the files of a folder (not its subfolders).
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
