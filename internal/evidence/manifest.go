package evidence

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// FormatVersion names the manifest's layout.
const FormatVersion = "syncer-evidence/1"

// File names of a pack.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.sig"
	WorkbookFile  = "access_review.xlsx"
	SummaryFile   = "summary.html"
	DiffFile      = "review_diff.csv"
)

// Manifest is manifest.json. Its fields are written in this order (and
// maps with sorted keys), two-space indented, so the same pack always
// gives the same bytes.
type Manifest struct {
	Format      string   `json:"format"`
	Tool        Tool     `json:"tool"`
	GeneratedAt string   `json:"generated_at"`
	AsOf        string   `json:"as_of"`
	Since       string   `json:"since,omitempty"`
	Database    Database `json:"database"`
	Scope       Scope    `json:"scope"`
	// Credential is whom the data was read as and what it could see.
	Credential Credential `json:"credential"`
	Customers  []Customer `json:"customers"`
	Gaps       []Gap      `json:"gaps"`
	Files      []File     `json:"files"`
	// LeftOut are the populations this database cannot give (a migration
	// not applied), with the reason.
	LeftOut   []LeftOut  `json:"left_out"`
	Checks    []Check    `json:"checks"`
	Notes     []string   `json:"notes"`
	Signature *Signature `json:"signature,omitempty"`
}

// Tool is the program that wrote the pack.
type Tool struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Database is where the data was read from.
type Database struct {
	Name          string `json:"name"`
	ServerVersion string `json:"server_version"`
	Schema        string `json:"schema"`
	SchemaVersion int    `json:"schema_version"`
	// Transaction is how the pack was read; SnapshotAt its now().
	Transaction string `json:"transaction"`
	SnapshotAt  string `json:"snapshot_at"`
}

// Scope is what the pack was asked to cover.
type Scope struct {
	// Customers are the --customer ids; empty for all.
	Customers []int64 `json:"customers"`
	MaxAge    string  `json:"max_age"`
	AllowGaps bool    `json:"allow_gaps"`
}

// Credential is whom the syncs behind the pack read the data as.
type Credential struct {
	// Principals are the signed-in Microsoft Advertising users of the
	// runs that supplied the data.
	Principals []Principal `json:"principals"`
	// Configured are customers.ids of the configuration; Discover is
	// customers.discover (every customer the credential can see).
	Configured []int64 `json:"customers_configured"`
	Discover   bool    `json:"customers_discover"`
	// Synced are the customers with a complete sync at or before as_of;
	// NotVisible those the signed-in user of their last sync attempt could
	// not see (from the run's recorded visible customers, or, for runs
	// that did not record them, the attempt's error); NotSynced the configured ones with no complete
	// sync.
	Synced     []int64 `json:"customers_synced"`
	NotVisible []int64 `json:"customers_not_visible"`
	NotSynced  []int64 `json:"customers_not_synced"`
}

// Principal is one signed-in user and the runs that read as it.
type Principal struct {
	UserID    int64   `json:"user_id,string"`
	UserName  string  `json:"user_name"`
	Runs      []int64 `json:"runs"`
	Customers []int64 `json:"customers"`
	// Visible are the customers this user could see in those runs
	// (GetCustomersInfo and the user's own roles); null when the runs did
	// not record it.
	Visible []int64 `json:"customers_visible"`
}

// Customer is the sync that supplied one customer's data.
type Customer struct {
	CustomerID int64  `json:"customer_id,string"`
	Name       string `json:"name"`
	// RunID is the run of the last complete sync at or before as_of (0:
	// none); CompletedAt its end, Status the customer's sync status and
	// RunStatus the whole run's.
	RunID       int64  `json:"run_id"`
	CompletedAt string `json:"completed_at"`
	Status      string `json:"status"`
	RunStatus   string `json:"run_status"`
	// CompleteAtAsOf: a complete sync finished at or before as_of, within
	// max_age of it.
	CompleteAtAsOf bool   `json:"complete_at_as_of"`
	AgeAtAsOf      string `json:"age_at_as_of"`
	ReadAs         string `json:"read_as"`
	// The last attempt at or before as_of, when it is not the complete
	// sync (a failure after it).
	LastAttemptRunID  int64  `json:"last_attempt_run_id,omitempty"`
	LastAttemptStatus string `json:"last_attempt_status,omitempty"`
	LastAttemptError  string `json:"last_attempt_error,omitempty"`
}

// Gap is a customer the pack cannot vouch for.
type Gap struct {
	CustomerID int64  `json:"customer_id,string"`
	Reason     string `json:"reason"`
}

// File is one file of the pack.
type File struct {
	Name       string `json:"name"`
	Format     string `json:"format"` // csv, xlsx, html
	Population string `json:"population,omitempty"`
	// SQL is the exact text that produced the rows, run with Parameters
	// and the schema first on the search path.
	SQL        string   `json:"sql,omitempty"`
	Parameters []string `json:"parameters,omitempty"`
	AsOf       string   `json:"as_of_note,omitempty"`
	// Rows counts the data rows (a CSV's records less its header), also
	// per customer (the customer_id column).
	Rows            *int           `json:"rows,omitempty"`
	RowsPerCustomer map[string]int `json:"rows_per_customer,omitempty"`
	Bytes           int64          `json:"bytes"`
	SHA256          string         `json:"sha256"`
}

// LeftOut is a population missing from the pack.
type LeftOut struct {
	Population string `json:"population"`
	Reason     string `json:"reason"`
}

// Check results.
const (
	Pass = "pass"
	Fail = "fail"
)

// Check is one completeness check: a count the pack's files must match.
type Check struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// SQL gave Expected (empty when Expected comes from the files or the
	// reads themselves), run with Parameters.
	SQL        string           `json:"sql,omitempty"`
	Parameters []string         `json:"parameters,omitempty"`
	Expected   map[string]int64 `json:"expected"`
	Actual     map[string]int64 `json:"actual"`
	Result     string           `json:"result"`
	Detail     string           `json:"detail,omitempty"`
}

// Signature describes manifest.sig.
type Signature struct {
	Algorithm string `json:"algorithm"` // ed25519
	File      string `json:"file"`
	// PublicKey is the key's 32 bytes, base64; KeyID the first 16 hex
	// digits of its SHA-256.
	PublicKey string `json:"public_key"`
	KeyID     string `json:"key_id"`
}

// Encode returns the manifest's canonical bytes.
func (m *Manifest) Encode() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // SQL keeps its < and >
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// FailedChecks returns the checks that failed.
func (m *Manifest) FailedChecks() []Check {
	var out []Check
	for _, c := range m.Checks {
		if c.Result != Pass {
			out = append(out, c)
		}
	}
	return out
}

// ParseSigningKey reads an Ed25519 private key: PEM (PKCS #8, "PRIVATE
// KEY", as `openssl genpkey -algorithm ed25519` writes it), or base64 of
// the 32-byte seed or the 64-byte key. The error never contains the key.
func ParseSigningKey(text string) (ed25519.PrivateKey, error) {
	text = strings.TrimSpace(text)
	if block, _ := pem.Decode([]byte(text)); block != nil {
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("not a PKCS #8 private key (want the PEM of `openssl genpkey -algorithm ed25519`)")
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
		}
		return priv, nil
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, errors.New("neither PEM nor base64 (want the PEM of `openssl genpkey -algorithm ed25519`)")
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		return ed25519.PrivateKey(raw), nil
	}
	return nil, fmt.Errorf("base64 of %d bytes: an Ed25519 key is a 32-byte seed or 64 bytes", len(raw))
}

// ParsePublicKey reads an Ed25519 public key: PEM ("PUBLIC KEY", as
// `openssl pkey -pubout` writes it) or base64 of its 32 bytes.
func ParsePublicKey(text string) (ed25519.PublicKey, error) {
	text = strings.TrimSpace(text)
	if block, _ := pem.Decode([]byte(text)); block != nil {
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a PKIX public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("neither PEM nor base64 of 32 bytes")
	}
	return ed25519.PublicKey(raw), nil
}

// KeyID is the first 16 hex digits of the SHA-256 of a public key.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// signatureFor describes the signature a key makes.
func signatureFor(priv ed25519.PrivateKey) *Signature {
	pub := priv.Public().(ed25519.PublicKey)
	return &Signature{Algorithm: "ed25519", File: SignatureFile,
		PublicKey: base64.StdEncoding.EncodeToString(pub), KeyID: KeyID(pub)}
}
