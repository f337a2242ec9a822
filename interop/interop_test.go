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
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/nodetest"
)

// requireNodeModule skips (or, with DEVICEGRANT_INTEROP_TESTS=1, fails)
// when node or the npm package that package-lock.json pins is missing.
func requireNodeModule(t *testing.T, pkg string) {
	t.Helper()
	nodetest.Require(t, nodetest.ModuleProblem(".", pkg), "DEVICEGRANT_INTEROP_TESTS")
}

// nodeSteps runs a Node client (node script args…) for at most limit. The
// script reports each step as one JSON line on stdout, {"step": NAME, …};
// onStep sees each as it arrives, with every step so far, and may answer
// with send (one JSON line on the script's stdin). A step "error" or a
// script that fails ends the test. nodeSteps returns the steps by name.
func nodeSteps(t *testing.T, limit time.Duration, onStep func(step string, m map[string]any, steps map[string]map[string]any, send func(any)), script string, args ...string) map[string]map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	stderr := &devtest.SyncBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// A failed test leaves node waiting for an answer: end it.
		stdin.Close()
		cancel()
		_ = cmd.Wait()
	}()
	send := func(v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			t.Fatalf("writing to node: %v\nstderr: %s", err, stderr.String())
		}
	}
	steps := map[string]map[string]any{}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line from node: %q", sc.Text())
		}
		step, _ := m["step"].(string)
		steps[step] = m
		if step == "error" {
			t.Fatalf("%s failed: %v\nstderr: %s", script, m, stderr.String())
		}
		if onStep != nil {
			onStep(step, m, steps, send)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node %s: %v\nstderr: %s", script, err, stderr.String())
	}
	return steps
}
