// Package pgtest gives tests a real PostgreSQL: the server at
// TEST_DATABASE_URL when set (`make test` sets it to one throwaway cluster
// that every test package shares, started by scripts/withpg), otherwise one
// throwaway cluster (pgcluster) per test binary, started by Main. Each test
// gets a migrated schema of its own from Schema (recycled from an earlier
// test when that one left it as migrated), so tests can run in parallel.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		t.Parallel()
//		pool, schema := pgtest.Schema(t)
//		...
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msads-syncer/syncer/internal/pgcluster"
	schemasql "github.com/msads-syncer/syncer/sql"
)

// EnvURL names the environment variable that points tests at an existing
// server instead of a throwaway cluster.
const EnvURL = "TEST_DATABASE_URL"

// EnvOwned, set to 1 beside EnvURL, says that server is a throwaway cluster
// started for the tests (`make test` starts one for every package with
// scripts/withpg), so tests may reconfigure it (pg_hba.conf); see Owned.
const EnvOwned = "TEST_DATABASE_OWNED"

var (
	serverURL string // set by Main
	owned     bool   // the server is a throwaway cluster: set by Main

	poolOnce sync.Once
	pool     *pgxpool.Pool
	poolErr  error
)

// Main runs the package's tests against a PostgreSQL server and exits. Call
// it from TestMain. With TEST_DATABASE_URL set it uses that server; otherwise
// it starts one throwaway cluster for the test binary and stops it after the
// tests.
func Main(m *testing.M) {
	os.Exit(run(m))
}

// Run is Main without the exit: it returns m.Run's code after stopping the
// cluster, for a TestMain that has its own cleanup to do.
func Run(m *testing.M) int { return run(m) }

func run(m *testing.M) int {
	if u := os.Getenv(EnvURL); u != "" {
		serverURL, owned = u, os.Getenv(EnvOwned) == "1"
		defer closePool()
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgcluster.Start(ctx, nil)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	defer func() {
		closePool()
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}()
	serverURL, owned = c.URL(), true
	return m.Run()
}

// Owned reports whether the test server is a throwaway cluster started for
// the tests (by Main, or by scripts/withpg with EnvOwned), which tests may
// reconfigure; a server of TEST_DATABASE_URL alone is not.
func Owned() bool { return owned }

func closePool() {
	if pool != nil {
		pool.Close()
	}
}

// URL returns the URL of the test server.
func URL(t testing.TB) string {
	t.Helper()
	if serverURL == "" {
		t.Fatal("pgtest: no test database: call pgtest.Main(m) from TestMain, or set " + EnvURL)
	}
	return serverURL
}

// Pool returns the pool shared by the test binary's tests.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := URL(t)
	poolOnce.Do(func() {
		cfg, err := pgxpool.ParseConfig(u)
		if err != nil {
			poolErr = err
			return
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "syncer-test"
		cfg.MaxConns = 20
		pool, poolErr = pgxpool.NewWithConfig(context.Background(), cfg)
		if poolErr == nil {
			poolErr = pool.Ping(context.Background())
		}
	})
	if poolErr != nil {
		t.Fatalf("pgtest: connect: %v", poolErr)
	}
	return pool
}

// Schema returns the shared pool and the name of a schema, migrated to the
// latest version, that only this test uses: one an earlier test left as
// migrated, emptied back to what the migrations leave (see recycle.go), or
// a new one. When the test ends the schema is recycled the same way, or
// dropped when the test changed any of its objects.
func Schema(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return schema(t, true)
}

// FreshSchema is Schema without the recycling: a schema migrated for this
// test alone, never used before. Benchmarks and profiles use it: a recycled
// schema's tables keep the planner statistics (relpages, reltuples) its
// earlier tests left, so a first write would be planned as on no real
// warehouse.
func FreshSchema(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return schema(t, false)
}

func schema(t testing.TB, recycled bool) (*pgxpool.Pool, string) {
	t.Helper()
	p := Pool(t)
	ctx := context.Background()
	s, err := seedFor(ctx, p)
	if err != nil {
		t.Fatalf("pgtest: seed schema: %v", err)
	}
	var schema, version string
	if recycled {
		if schema, version, err = takeFree(ctx, p, s); err != nil {
			t.Fatalf("pgtest: take a free schema: %v", err)
		}
	}
	fresh := schema == ""
	if fresh {
		schema = NewSchemaName()
	}
	t.Cleanup(func() {
		ctx := context.Background()
		// A test that failed may have left goroutines writing to its
		// schema: it is dropped, so their writes cannot reach the next
		// test's.
		if !t.Failed() {
			if ok, err := recycle(ctx, p, s, schema, version); ok || errors.Is(err, errNoSchema) {
				return // recycled, or dropped by the test itself
			} else if err != nil {
				t.Logf("pgtest: recycle schema %s: %v (dropping it)", schema, err)
			}
		}
		if _, err := p.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	if fresh {
		if _, err := schemasql.Migrate(ctx, p, schema, "", slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("pgtest: migrate %s: %v", schema, err)
		}
		if version, _, err = catalogVersion(ctx, p, schema, false); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	return p, schema
}

// NewSchemaName returns a random schema name for a test.
func NewSchemaName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test_" + hex.EncodeToString(b)
}
