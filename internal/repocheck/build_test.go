package repocheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// msgpackCodec is the MessagePack codec gin links in unless built with
// the nomsgpack tag. devicegrantd never speaks MessagePack, and the codec
// is about a fifth of the daemon's machine code, whose package
// initializers touch pages of it in every process.
const msgpackCodec = "github.com/ugorji/go/codec"

// TestDaemonBuildLeavesOutMsgpack: the nomsgpack tag still keeps the codec
// out of cmd/devicegrantd, and leaving it out still needs the tag (when a
// gin release drops the codec, the tag and this test can go).
func TestDaemonBuildLeavesOutMsgpack(t *testing.T) {
	root := moduleRoot(t)
	deps := func(args ...string) []string {
		t.Helper()
		cmd := exec.Command("go", append(append([]string{"list", "-deps"}, args...), "./cmd/devicegrantd")...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		return strings.Fields(string(out))
	}
	if slices.Contains(deps("-tags", "nomsgpack"), msgpackCodec) {
		t.Errorf("cmd/devicegrantd built with -tags nomsgpack still links %s", msgpackCodec)
	}
	if !slices.Contains(deps(), msgpackCodec) {
		t.Errorf("cmd/devicegrantd no longer links %s even without -tags nomsgpack: drop the tag from the builds and this test", msgpackCodec)
	}
}

// TestDaemonBuildsUseNomsgpack: every build of cmd/devicegrantd that the
// documentation tells operators to run, and the ones test.sh and the
// benchmark make, carries -tags nomsgpack, so the binary measured is the
// binary installed.
func TestDaemonBuildsUseNomsgpack(t *testing.T) {
	root := moduleRoot(t)
	build := regexp.MustCompile(`go build .*\./cmd/devicegrantd`)
	found := 0
	for _, name := range []string{"README.md", "test.sh", "firmware-notes/README.md"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if build.MatchString(line) {
				found++
				if !strings.Contains(line, "go build -tags nomsgpack ") {
					t.Errorf("%s:%d builds devicegrantd without -tags nomsgpack: %s", name, i+1, line)
				}
			}
		}
	}
	if found < 3 {
		t.Errorf("found %d builds of devicegrantd in the docs and test.sh, want the README's, firmware-notes' and test.sh's", found)
	}
	b, err := os.ReadFile(filepath.Join(root, "internal/bench/daemon.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"go", "build", "-tags", "nomsgpack"`) {
		t.Error("internal/bench builds devicegrantd without -tags nomsgpack")
	}
}
