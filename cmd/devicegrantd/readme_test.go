package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestREADMEWalkthrough runs the README's curl walk-through of a device
// flow as written, against a real daemon, with the browser step done by a
// phone. Only the address (the test's own port) and "go run
// ./cmd/devicegrantd" (a binary built from this package, on the same
// database) are substituted, so the README stays true to the code.
func TestREADMEWalkthrough(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	var first, second string
	for _, b := range blocks {
		switch {
		case strings.HasPrefix(b[1], "B=http://127.0.0.1:8080"):
			first = b[1]
		case strings.HasPrefix(b[1], "# 4. The device polls"):
			second = b[1]
		}
	}
	if first == "" || second == "" {
		t.Fatal("the README's walk-through blocks were not found (they start with B=http://127.0.0.1:8080 and # 4. The device polls)")
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "devicegrantd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	vars := map[string]string{
		"DEVICEGRANTD_LISTEN":    freeAddr(t),
		"DEVICEGRANTD_DATABASE":  filepath.Join(dir, "devicegrantd.db"),
		"DEVICEGRANTD_LOG_LEVEL": "warn",
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"user", "add", devtest.Username, "--password-stdin"},
		strings.NewReader(devtest.Password+"\n"), &out, &out, env(vars)); err != nil {
		t.Fatalf("user add: %v %s", err, out.String())
	}
	base := startDaemon(t, vars)

	approved := filepath.Join(dir, "approved")
	script := "set -e\n" + first +
		"\nwhile [ ! -e " + approved + " ]; do sleep 0.1; done\n" + second
	script = strings.ReplaceAll(script, "B=http://127.0.0.1:8080", "B="+strings.TrimSuffix(base, "/"))
	script = strings.ReplaceAll(script, "go run ./cmd/devicegrantd", bin)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = append(os.Environ(), "DEVICEGRANTD_DATABASE="+vars["DEVICEGRANTD_DATABASE"])
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		if strings.HasPrefix(line, "HTTP://") && strings.Contains(line, "/D/") {
			// Step 3: what a person does with the QR code.
			devtest.NewPhone(t).Decide(line, "approve")
			if err := os.WriteFile(approved, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the walk-through failed: %v\n%s", err, strings.Join(lines, "\n"))
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{`"access_token":"dga_`, `"active":true`, `"username":"alice"`, `"device_id":"KITCHEN0001"`, `{"active":false}`} {
		if !strings.Contains(all, want) {
			t.Errorf("the walk-through's output lacks %s:\n%s", want, all)
		}
	}
	// The README promises these lines: step 6 active, step 7 inactive.
	if last := lines[len(lines)-1]; last != `{"active":false}` {
		t.Errorf("step 7 printed %q, want {\"active\":false}", last)
	}
}
