// Package interop runs clients that nobody on the devicegrant team wrote
// against a real devicegrantd on loopback with a real SQLite file, so the
// tests prove more than that our server agrees with our own client.
//
// The Node clients live in node_modules (npm ci in interop/, which
// ./test.sh does). Without node or the modules the tests skip, unless
// DEVICEGRANT_INTEROP_TESTS=1 (test.sh sets it): then they fail, so CI
// never skips them silently.
package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// requireNodeModule skips (or, with DEVICEGRANT_INTEROP_TESTS=1, fails)
// when node or the npm package that package-lock.json pins is missing.
func requireNodeModule(t *testing.T, pkg string) {
	t.Helper()
	problem := nodeModuleProblem(pkg)
	if problem == "" {
		return
	}
	if os.Getenv("DEVICEGRANT_INTEROP_TESTS") == "1" {
		t.Fatalf("interop tests cannot run (DEVICEGRANT_INTEROP_TESTS=1): %s", problem)
	}
	t.Skipf("interop test skipped: %s (./test.sh installs it)", problem)
}

func nodeModuleProblem(pkg string) string {
	if _, err := exec.LookPath("node"); err != nil {
		return "node is not on PATH"
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	b, err := os.ReadFile("package-lock.json")
	if err != nil {
		return err.Error()
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return "interop/package-lock.json: " + err.Error()
	}
	want := lock.Packages["node_modules/"+pkg].Version
	var installed struct {
		Version string `json:"version"`
	}
	b, err = os.ReadFile("node_modules/" + pkg + "/package.json")
	if err != nil {
		return "interop/node_modules/" + pkg + " is missing (cd interop && npm ci)"
	}
	if err := json.Unmarshal(b, &installed); err != nil || installed.Version != want {
		return fmt.Sprintf("interop/node_modules has %s %q, the lock file %q (cd interop && npm ci)", pkg, installed.Version, want)
	}
	return ""
}
