package main

import (
	"os/exec"
	"strings"
	"testing"
)

// Test scaffolding stays out of the binary, except what a user-facing
// command needs: `syncer demo` runs the API simulator (msadstest) and a
// throwaway cluster (pgcluster); the test database helper (pgtest) and the
// test-only packages never reach production.
func TestBinaryLeavesTestScaffoldingOut(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps gave %d packages: the check proves nothing", len(deps))
	}
	for _, d := range deps {
		switch {
		case strings.HasSuffix(d, "/internal/pgtest"), d == "testing", strings.HasPrefix(d, "testing/"):
			t.Errorf("the syncer binary imports %s", d)
		}
	}
}
