package cli

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/config"
	"github.com/msads-syncer/syncer/internal/evidence"
	"github.com/msads-syncer/syncer/internal/load"
)

// timeFlag is a flag holding a time: RFC 3339 or a date (midnight UTC).
type timeFlag struct {
	name string
	t    time.Time
}

func (f *timeFlag) String() string {
	if f == nil || f.t.IsZero() {
		return ""
	}
	return f.t.Format(evidence.TimeFormat)
}

func (f *timeFlag) Set(s string) error {
	t, err := evidence.ParseTime(f.name, s)
	if err != nil {
		// The flag package prefixes the flag's name; keep the rest.
		return errors.New(strings.TrimPrefix(err.Error(), "--"+f.name+" "))
	}
	f.t = t
	return nil
}

func addTimeFlag(fs *flag.FlagSet, name, usage string) *timeFlag {
	f := &timeFlag{name: name}
	fs.Var(f, name, usage)
	return f
}

// cmdEvidence is `syncer evidence`: it writes an access review pack (see
// package evidence), or with `verify DIR` checks one. Exit codes: 0 the
// pack is written and complete; 1 it has gaps (unless --allow-gaps) or a
// failed completeness check (the pack is still written, the manifest says
// why), or nothing could be written.
func cmdEvidence(args []string, io IO) int {
	if len(args) > 0 && args[0] == "verify" {
		return cmdEvidenceVerify(args[1:], io)
	}
	var c common
	fs := newFlagSet("evidence", io, &c)
	c.addCustomer(fs)
	asOf := addTimeFlag(fs, "as-of", "the point in `TIME` the pack describes: 2026-03-31 (midnight UTC) or RFC 3339 (default now)")
	since := addTimeFlag(fs, "since", "also write the review diff of the changes after `TIME` (the previous review) up to --as-of")
	out := fs.String("out", "", "write the pack into `DIR` (new or empty; required)")
	maxAge := durationFlag(fs, "max-age", "a customer whose last complete sync finished longer than `DURATION` (e.g. 48h or 2d) before --as-of is a gap (default invitations.max_data_age)")
	allowGaps := fs.Bool("allow-gaps", false, "exit 0 even when customers have no complete sync at --as-of (the manifest still lists them)")
	if code, done := parse(fs, args); done {
		return code
	}
	if *out == "" {
		fmt.Fprintln(io.Stderr, "syncer evidence: --out DIR is required (see syncer help evidence)")
		return ExitUsage
	}
	if *maxAge < 0 {
		fmt.Fprintln(io.Stderr, "syncer evidence: --max-age must not be negative")
		return ExitUsage
	}
	now := time.Now().UTC().Truncate(time.Microsecond) // the database's precision
	at := cmp.Or(asOf.t, now)
	if at.After(now.Add(time.Minute)) {
		fmt.Fprintf(io.Stderr, "syncer evidence: --as-of %s is in the future\n", at.Format(evidence.TimeFormat))
		return ExitUsage
	}
	if !since.t.IsZero() && !since.t.Before(at) {
		fmt.Fprintln(io.Stderr, "syncer evidence: --since must be before --as-of")
		return ExitUsage
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	key, err := signingKey(cfg)
	if err != nil {
		return fail(io, err)
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	ctx, cancel := commandContext(io, 30*time.Minute, logger)
	defer cancel()
	// Read-only: no migration (a reader role can write a pack).
	pool, err := openDB(ctx, cfg, logger, false)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	m, err := writePack(ctx, pool, cfg, packRequest{dir: *out, asOf: at, since: since.t, customers: c.customers,
		maxAge: *maxAge, allowGaps: *allowGaps, key: key})
	if err != nil {
		return fail(io, err)
	}
	printPack(io.Stdout, *out, m)
	failed := m.FailedChecks()
	switch {
	case len(failed) > 0:
		names := make([]string, len(failed))
		for i, f := range failed {
			names[i] = f.Name + " (" + f.Detail + ")"
		}
		return fail(io, fmt.Errorf("%d completeness checks failed: %s; the pack in %s records them", len(failed), strings.Join(names, "; "), *out))
	case len(m.Gaps) > 0 && !*allowGaps:
		parts := make([]string, len(m.Gaps))
		for i, g := range m.Gaps {
			parts[i] = g.Reason
			if g.CustomerID != 0 {
				parts[i] = fmt.Sprintf("customer %d: %s", g.CustomerID, g.Reason)
			}
		}
		return fail(io, fmt.Errorf("the pack has gaps: %s; run `syncer run`, or pass --allow-gaps to accept them (the manifest lists them)",
			strings.Join(parts, "; ")))
	}
	return ExitOK
}

// packRequest is what one pack is asked for.
type packRequest struct {
	dir         string
	asOf, since time.Time
	customers   []int64       // --customer
	maxAge      time.Duration // 0: invitations.max_data_age
	allowGaps   bool
	key         ed25519.PrivateKey
}

// writePack reads the warehouse in one transaction and writes the pack.
func writePack(ctx context.Context, pool *pgxpool.Pool, cfg *config.Config, r packRequest) (*evidence.Manifest, error) {
	schema := cfg.Database.Schema
	expected := r.customers
	if len(expected) == 0 && !cfg.Customers.Discover {
		expected = cfg.Customers.IDs
	}
	ev, err := load.ReadEvidence(ctx, pool, schema, load.EvidenceQuery{AsOf: r.asOf, Customers: r.customers, Expected: expected, Since: r.since})
	if err != nil {
		return nil, schemaError(schema, err)
	}
	commit, goVersion := buildInfo()
	return evidence.Write(ev, evidence.Options{
		Dir: r.dir, AsOf: r.asOf, Since: r.since, Schema: schema,
		Customers: r.customers, Configured: cfg.Customers.IDs, Discover: cfg.Customers.Discover,
		MaxAge: cmp.Or(r.maxAge, cfg.Invitations.MaxDataAge.D()), AllowGaps: r.allowGaps,
		Tool:       evidence.Tool{Name: "syncer", Version: Version, Commit: commit, GoVersion: goVersion},
		SigningKey: r.key,
	})
}

// signingKey parses evidence.signing_key; nil when it is not set.
func signingKey(cfg *config.Config) (ed25519.PrivateKey, error) {
	text := cfg.Evidence.SigningKey.Value()
	if text == "" {
		return nil, nil
	}
	key, err := evidence.ParseSigningKey(text)
	if err != nil {
		return nil, &config.FieldError{Key: "evidence.signing_key", Line: cfg.Line("evidence.signing_key"), Msg: err.Error()}
	}
	return key, nil
}

// printPack says what the pack holds, one line per file.
func printPack(w io.Writer, dir string, m *evidence.Manifest) {
	fmt.Fprintf(w, "Wrote the access review pack as of %s to %s:\n", m.AsOf, dir)
	for _, f := range m.Files {
		rows := ""
		if f.Rows != nil {
			rows = fmt.Sprintf("%d rows", *f.Rows)
		}
		fmt.Fprintf(w, "  %-24s %-10s sha256 %s\n", f.Name, rows, f.SHA256[:16])
	}
	fmt.Fprintf(w, "  %-24s the sources, queries, row counts, hashes and checks\n", evidence.ManifestFile)
	if m.Signature != nil {
		fmt.Fprintf(w, "  %-24s Ed25519 signature of manifest.json (key %s)\n", evidence.SignatureFile, m.Signature.KeyID)
	}
	for _, l := range m.LeftOut {
		fmt.Fprintf(w, "Left out %s: %s\n", l.Population, l.Reason)
	}
	failed := len(m.FailedChecks())
	fmt.Fprintf(w, "Checks: %d of %d passed. Gaps: %d.\n", len(m.Checks)-failed, len(m.Checks), len(m.Gaps))
}

// cmdEvidenceVerify is `syncer evidence verify DIR`: exit 0 when the pack
// is intact, 1 when not.
func cmdEvidenceVerify(args []string, io IO) int {
	fs := newBareFlagSet("evidence verify", io)
	pubFile := fs.String("public-key", "", "check manifest.sig with the Ed25519 public key in `FILE` (PEM), which proves who signed; a signed pack must then verify with it")
	// The folder may come before the flags.
	var dir string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dir, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printVerifyHelp(io, fs)
			return ExitOK
		}
		fmt.Fprintf(io.Stderr, "syncer evidence verify: %s (see syncer help evidence)\n", oneLine(err.Error()))
		return ExitUsage
	}
	if dir == "" && fs.NArg() > 0 {
		dir = fs.Arg(0)
	}
	if dir == "" || fs.NArg() > 1 || (fs.NArg() == 1 && fs.Arg(0) != dir) {
		fmt.Fprintln(io.Stderr, "syncer evidence verify: give one pack folder: syncer evidence verify DIR [--public-key FILE]")
		return ExitUsage
	}
	var pub ed25519.PublicKey
	if *pubFile != "" {
		b, err := os.ReadFile(*pubFile)
		if err != nil {
			return fail(io, fmt.Errorf("--public-key: %w", err))
		}
		if pub, err = evidence.ParsePublicKey(string(b)); err != nil {
			return fail(io, fmt.Errorf("--public-key %s: %w", *pubFile, err))
		}
	}
	if !printVerification(io.Stdout, dir, evidence.Verify(dir, pub)) {
		return ExitFatal
	}
	return ExitOK
}

// printVerification prints one line per finding, the notes and the
// verdict; it returns whether the pack is intact.
func printVerification(w io.Writer, dir string, v evidence.Verification) bool {
	bad := 0
	for _, f := range v.Findings {
		mark := "✓"
		if !f.OK {
			mark = "✗"
			bad++
		}
		fmt.Fprintf(w, "%s %s\n", mark, f.Text)
	}
	for _, n := range v.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if !v.Intact {
		fmt.Fprintf(w, "NOT INTACT: %d problems in %s\n", bad, dir)
		return false
	}
	fmt.Fprintf(w, "INTACT: %s: every file listed, none extra, hashes and row counts match\n", dir)
	return true
}

func printVerifyHelp(io IO, fs *flag.FlagSet) {
	c := command{name: "evidence verify", args: "DIR [--public-key FILE]",
		summary: "Recomputes every hash and row count of a pack and checks its signature: exits 0 when intact, 1 when not.",
		example: "syncer evidence verify review-2026-q1 --public-key evidence-signing.pub.pem"}
	printCommandHelp(io.Stdout, c, fs)
}

// cmdReview is `syncer review diff`.
func cmdReview(args []string, io IO) int {
	if len(args) == 0 || args[0] != "diff" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "-help") {
			return cmdReviewDiff([]string{"--help"}, io)
		}
		fmt.Fprintln(io.Stderr, "syncer review: the subcommand is diff: syncer review diff --from T1 --to T2 (see syncer help review)")
		return ExitUsage
	}
	return cmdReviewDiff(args[1:], io)
}

// cmdReviewDiff prints what changed in users, grants, invitations and
// client links between two times.
func cmdReviewDiff(args []string, io IO) int {
	var c common
	fs := newFlagSet("review", io, &c)
	c.addCustomer(fs)
	from := addTimeFlag(fs, "from", "the earlier `TIME` (the previous review): 2026-01-01 or RFC 3339 (required)")
	to := addTimeFlag(fs, "to", "the later `TIME` (default now)")
	format := fs.String("format", "table", "output `format`: "+strings.Join(evidence.DiffFormats, ", "))
	if code, done := parse(fs, args); done {
		return code
	}
	if from.t.IsZero() {
		fmt.Fprintln(io.Stderr, "syncer review diff: --from TIME is required (see syncer help review)")
		return ExitUsage
	}
	end := cmp.Or(to.t, time.Now().UTC().Truncate(time.Microsecond))
	if !from.t.Before(end) {
		fmt.Fprintln(io.Stderr, "syncer review diff: --from must be before --to")
		return ExitUsage
	}
	if !slices.Contains(evidence.DiffFormats, *format) {
		fmt.Fprintf(io.Stderr, "syncer review diff: --format must be one of %s, got %q\n", strings.Join(evidence.DiffFormats, ", "), *format)
		return ExitUsage
	}
	cfg, err := loadConfig(&c, io)
	if err != nil {
		return fail(io, err)
	}
	logger := newLogger(io.Stderr, cfg.Log.Format, cfg.Log.Level)
	ctx, cancel := commandContext(io, 10*time.Minute, logger)
	defer cancel()
	pool, err := openDB(ctx, cfg, logger, false)
	if err != nil {
		return fail(io, err)
	}
	defer pool.Close()
	changes, err := load.ReviewDiff(ctx, pool, cfg.Database.Schema, from.t, end, c.customers)
	if err != nil {
		return fail(io, schemaError(cfg.Database.Schema, err))
	}
	if err := evidence.WriteDiff(io.Stdout, *format, from.t, end, changes); err != nil {
		return fail(io, fmt.Errorf("write output: %w", err))
	}
	return ExitOK
}
