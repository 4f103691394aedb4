package e2e_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msads-syncer/syncer/internal/extract/msadstest"
)

// writeKeys writes an Ed25519 private key (PKCS #8 PEM) and its public key
// (PKIX PEM) and returns their paths and the private key's PEM.
func writeKeys(t *testing.T, dir, name string) (privPath, pubPath, privPEM string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pder, _ := x509.MarshalPKIXPublicKey(pub)
	privPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	privPath, pubPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub.pem")
	if err := os.WriteFile(privPath, []byte(privPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644); err != nil {
		t.Fatal(err)
	}
	return privPath, pubPath, privPEM
}

// The whole evidence flow through the binary: two syncs with a change
// between them, a signed pack as of now with the review diff since the
// first sync, verify (with the right key, a wrong one, after one byte
// changed), gaps and --allow-gaps, and review diff.
func TestEvidencePackThroughTheBinary(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	privPath, pubPath, privPEM := writeKeys(t, keys, "signing")
	_, otherPub, _ := writeKeys(t, keys, "other")
	e := newEnv(t, msadstest.Generate(61, 2, 6), fmt.Sprintf("evidence:\n  signing_key: ${file:%s}\n", privPath))
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("first run exit %d: %s", r.code, r.stderr)
	}
	between := time.Now().UTC()
	cust := e.ds.CustomerIDs()[0]
	gone := e.sim.Dataset().ListedUserIDs(cust)[0]
	e.sim.RemoveUser(cust, gone)
	if r := e.run("run", "--config", e.config); r.code != 0 {
		t.Fatalf("second run exit %d: %s", r.code, r.stderr)
	}

	pack := filepath.Join(e.dir, "pack")
	r := e.run("evidence", "--config", e.config, "--out", pack, "--since", between.Format(time.RFC3339Nano))
	if r.code != 0 {
		t.Fatalf("evidence exit %d:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, strings.Split(privPEM, "\n")[1]) {
		t.Error("the signing key appears in the output")
	}
	var m struct {
		Files []struct {
			Name   string `json:"name"`
			Rows   *int   `json:"rows"`
			SQL    string `json:"sql"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
		Checks []struct {
			Name, Result string
		} `json:"checks"`
		Gaps      []any `json:"gaps"`
		Signature *struct {
			KeyID string `json:"key_id"`
		} `json:"signature"`
		Credential struct {
			Principals []struct {
				UserName string  `json:"user_name"`
				Visible  []int64 `json:"customers_visible"`
			} `json:"principals"`
		} `json:"credential"`
	}
	raw, err := os.ReadFile(filepath.Join(pack, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	rows := map[string]int{}
	for _, f := range m.Files {
		if f.Rows != nil {
			rows[f.Name] = *f.Rows
		}
	}
	if want := e.queryInt("SELECT count(*) FROM S.users WHERE removed_at IS NULL"); rows["users.csv"] != want {
		t.Errorf("users.csv: %d rows, the warehouse has %d current users", rows["users.csv"], want)
	}
	if want := e.queryInt("SELECT count(*) FROM S.access"); rows["role_grants.csv"] != want {
		t.Errorf("role_grants.csv: %d rows, view access has %d", rows["role_grants.csv"], want)
	}
	if rows["review_diff.csv"] == 0 {
		t.Error("review_diff.csv is empty: the removed user is not in it")
	}
	for _, c := range m.Checks {
		if c.Result != "pass" {
			t.Errorf("check %s: %s", c.Name, c.Result)
		}
	}
	if len(m.Gaps) != 0 || m.Signature == nil || len(m.Credential.Principals) != 1 || m.Credential.Principals[0].UserName == "" {
		t.Errorf("manifest: gaps %v, signature %v, principals %+v", m.Gaps, m.Signature, m.Credential.Principals)
	} else if got, want := m.Credential.Principals[0].Visible, e.queryText("SELECT array_to_string(visible_customer_ids, ' ') FROM S.sync_runs ORDER BY run_id DESC LIMIT 1"); want == "" || strings.Trim(fmt.Sprint(got), "[]") != want {
		t.Errorf("manifest: customers visible to %s = %v, the last run recorded %q", m.Credential.Principals[0].UserName, got, want)
	}
	diff, err := os.ReadFile(filepath.Join(pack, "review_diff.csv"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(diff)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	for _, rec := range recs[1:] {
		removed = removed || (rec[1] == "user" && rec[2] == "removed" && rec[5] == fmt.Sprint(gone))
	}
	if !removed {
		t.Errorf("review_diff.csv does not list user %d removed:\n%s", gone, diff)
	}

	// verify: intact with the right key, not with another.
	if r := e.run("evidence", "verify", pack, "--public-key", pubPath); r.code != 0 || !strings.Contains(r.stdout, "INTACT") {
		t.Errorf("verify exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := e.run("evidence", "verify", "--public-key", otherPub, pack); r.code != 1 || !strings.Contains(r.stdout, "✗ manifest.sig") {
		t.Errorf("verify with another key: exit %d:\n%s", r.code, r.stdout)
	}
	// One byte of one CSV changed.
	users := filepath.Join(pack, "users.csv")
	b, _ := os.ReadFile(users)
	b[len(b)-3] ^= 1
	if err := os.WriteFile(users, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.run("evidence", "verify", pack); r.code != 1 || !strings.Contains(r.stdout, "✗ users.csv: changed") || !strings.Contains(r.stdout, "NOT INTACT") {
		t.Errorf("verify after a changed byte: exit %d:\n%s", r.code, r.stdout)
	}

	// As of before the first sync: every customer is a gap: exit 1 unless
	// --allow-gaps, the pack written either way.
	early := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	r = e.run("evidence", "--config", e.config, "--out", filepath.Join(e.dir, "early"), "--as-of", early)
	if r.code != 1 || !strings.Contains(r.stderr, "gaps") || !strings.Contains(r.stderr, fmt.Sprint(cust)) {
		t.Errorf("gaps: exit %d:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "early", "manifest.json")); err != nil {
		t.Errorf("gaps: no manifest written: %v", err)
	}
	if r := e.run("evidence", "--config", e.config, "--out", filepath.Join(e.dir, "early2"), "--as-of", early, "--allow-gaps"); r.code != 0 {
		t.Errorf("--allow-gaps: exit %d:\n%s", r.code, r.stderr)
	}
	// --max-age: data older than a microsecond at as_of is a gap.
	if r := e.run("evidence", "--config", e.config, "--out", filepath.Join(e.dir, "aged"), "--max-age", "1us"); r.code != 1 || !strings.Contains(r.stderr, "max_age") {
		t.Errorf("--max-age: exit %d:\n%s", r.code, r.stderr)
	}
	// Bad input: a clear error naming the flag.
	if r := e.run("evidence", "--config", e.config, "--out", filepath.Join(e.dir, "bad"), "--as-of", "31/03/2026"); r.code != 1 || !strings.Contains(r.stderr, "as-of") {
		t.Errorf("bad --as-of: exit %d:\n%s", r.code, r.stderr)
	}
	if r := e.run("evidence", "--config", e.config, "--out", pack); r.code != 1 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("existing pack folder: exit %d:\n%s", r.code, r.stderr)
	}

	// review diff, as JSON.
	r = e.run("review", "diff", "--config", e.config, "--from", between.Format(time.RFC3339Nano), "--format", "json")
	if r.code != 0 {
		t.Fatalf("review diff exit %d: %s", r.code, r.stderr)
	}
	var d struct {
		Changes []struct{ Kind, Change, ID string } `json:"changes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range d.Changes {
		found = found || (c.Kind == "user" && c.Change == "removed" && c.ID == fmt.Sprint(gone))
	}
	if !found || len(d.Changes) != len(recs)-1 {
		t.Errorf("review diff: %d changes (the pack's diff has %d), user %d removed listed: %v", len(d.Changes), len(recs)-1, gone, found)
	}
}

// A bad signing key fails with an error naming the key and its line, and
// without the key's text.
func TestEvidenceBadSigningKey(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	const secret = "bm90LWEta2V5LWJ1dC1hLXNlY3JldA=="
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, msadstest.Generate(62, 1, 2), fmt.Sprintf("evidence:\n  signing_key: ${file:%s}\n", keyFile))
	r := e.run("evidence", "--config", e.config, "--out", filepath.Join(e.dir, "p"))
	if r.code != 1 || !strings.Contains(r.stderr, "evidence.signing_key") || strings.Contains(r.stderr, secret) {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
}
