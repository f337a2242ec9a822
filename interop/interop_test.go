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
	"testing"

	"github.com/devicegrant/devicegrant/internal/nodetest"
)

// requireNodeModule skips (or, with DEVICEGRANT_INTEROP_TESTS=1, fails)
// when node or the npm package that package-lock.json pins is missing.
func requireNodeModule(t *testing.T, pkg string) {
	t.Helper()
	nodetest.Require(t, nodetest.ModuleProblem(".", pkg), "DEVICEGRANT_INTEROP_TESTS")
}
