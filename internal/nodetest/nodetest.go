// Package nodetest is for tests that run Node scripts (the browser tests
// in e2e/, the third-party clients in interop/): it checks that node and
// the npm package a test needs are installed at the version that
// package-lock.json pins.
package nodetest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ModuleProblem says what is missing to run pkg from dir/node_modules at
// the version dir/package-lock.json pins, or "" when nothing is.
func ModuleProblem(dir, pkg string) string {
	if _, err := exec.LookPath("node"); err != nil {
		return "node is not on PATH"
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err.Error()
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return filepath.Join(dir, "package-lock.json") + ": " + err.Error()
	}
	want := lock.Packages["node_modules/"+pkg].Version
	var installed struct {
		Version string `json:"version"`
	}
	fix := fmt.Sprintf("(cd %s && npm ci)", filepath.Base(absOr(dir)))
	b, err = os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
	if err != nil {
		return fmt.Sprintf("node_modules/%s is missing %s", pkg, fix)
	}
	if err := json.Unmarshal(b, &installed); err != nil || installed.Version != want {
		return fmt.Sprintf("node_modules has %s %q, the lock file %q %s", pkg, installed.Version, want, fix)
	}
	return ""
}

// Require skips t when problem is not "", or fails it when the
// environment variable env is "1": the test command sets it, so CI never
// skips such a test silently.
func Require(t testing.TB, problem, env string) {
	t.Helper()
	if problem == "" {
		return
	}
	if os.Getenv(env) == "1" {
		t.Fatalf("cannot run (%s=1): %s", env, problem)
	}
	t.Skipf("skipped: %s (./test.sh installs what it needs; set %s=1 to make this a failure)", problem, env)
}

func absOr(dir string) string {
	if a, err := filepath.Abs(dir); err == nil {
		return a
	}
	return dir
}
