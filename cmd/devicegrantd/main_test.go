package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeDefaults runs the daemon as the README does, with only the
// listen address and database moved, and checks it answers, tells the
// operator what to do next and stops on cancel.
func TestServeDefaults(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	db := filepath.Join(dir, "devicegrantd.db")
	vars := env(map[string]string{"DEVICEGRANTD_LISTEN": addr, "DEVICEGRANTD_DATABASE": db, "DEVICEGRANTD_LOG_LEVEL": "warn"})

	var out bytes.Buffer
	if err := run(context.Background(), []string{"user", "add", "alice", "--password-stdin"}, strings.NewReader("correct horse battery\n"), &out, &out, vars); err != nil {
		t.Fatalf("user add: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "created @alice:"+addr) {
		t.Errorf("user add said %q", out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr devtest.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, strings.NewReader(""), &stderr, &stderr, vars) }()

	base := "http://" + addr + "/"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz never answered 200: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"issuer         " + base, "approval page  " + base + "device", db} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("start-up message lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "No accounts yet") {
		t.Error("start-up message asks for an account although alice exists")
	}
	checkLimits(t, base)
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("database mode %v, want 0600", fi.Mode().Perm())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
}

func TestUserCommands(t *testing.T) {
	db := filepath.Join(t.TempDir(), "d.db")
	vars := env(map[string]string{"DEVICEGRANTD_DATABASE": db, "DEVICEGRANTD_SERVER_NAME": "example.org"})
	ctx := context.Background()
	runOut := func(stdin string, args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, args, strings.NewReader(stdin), &out, &out, vars)
		return out.String(), err
	}
	if out, err := runOut("correct horse battery\n", "user", "add", "--display-name", "Bob B", "bob", "--password-stdin"); err != nil {
		t.Fatalf("add bob: %v %s", err, out)
	}
	cases := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"taken", "correct horse battery\n", []string{"user", "add", "bob", "--password-stdin"}, "taken"},
		{"bad localpart", "correct horse battery\n", []string{"user", "add", "Bob!", "--password-stdin"}, "Matrix localpart"},
		{"short password", "short\n", []string{"user", "add", "carol", "--password-stdin"}, "at least 8"},
		{"no terminal", "", []string{"user", "add", "carol"}, "--password-stdin"},
	}
	for _, tc := range cases {
		out, err := runOut(tc.stdin, tc.args...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%s: err %v out %q, want mention of %q", tc.name, err, out, tc.want)
		}
	}
	out, err := runOut("", "user", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "@bob:example.org") || !strings.Contains(out, "Bob B") || strings.Contains(out, "carol") {
		t.Errorf("user list:\n%s", out)
	}
}

func TestHelpAndUsage(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"--help"}, nil, &out, &out, env(nil)); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"user add", "migrate [--check]", "DEVICEGRANTD_ISSUER", "DEVICEGRANTD_HOMESERVER_SECRET", "DEVICEGRANTD_SERVER_NAME", "DEVICEGRANTD_DATABASE", "DEVICEGRANTD_LISTEN"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	out.Reset()
	if err := run(ctx, []string{"frobnicate"}, nil, &out, &out, env(nil)); !errors.Is(err, errUsage) {
		t.Errorf("unknown command: %v", err)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	os.WriteFile(file, []byte(`
listen: 127.0.0.1:9000
server_name: example.org
homeserver:
  secret_file: `+secret+`
access_token_ttl: 2m
registration:
  enabled: true
rate_limits:
  user_code_failures: 5/30s
`), 0o600)

	c, err := loadConfig(file, env(map[string]string{"DEVICEGRANTD_LISTEN": "127.0.0.1:9001"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" || c.Issuer != "http://127.0.0.1:9001/" {
		t.Errorf("environment should win: listen %q issuer %q", c.Listen, c.Issuer)
	}
	if c.Homeserver.Secret != "s3cret" || c.AccessTokenTTL != 2*time.Minute || c.RateLimits.UserCodeFailures.Burst != 5 || !c.Registration.Enabled {
		t.Errorf("file settings not applied: %+v", c)
	}

	bad := map[string]string{
		"unknown key":      "listn: x\n",
		"bad duration":     "access_token_ttl: soon\n",
		"bad rate":         "rate_limits:\n  login_failures: fast\n",
		"public no issuer": "listen: 0.0.0.0:8080\n",
		"half tls":         "tls:\n  cert_file: x\n",
		"bad bool":         "registration:\n  enabled: maybe\n",
	}
	for name, body := range bad {
		os.WriteFile(file, []byte(body), 0o600)
		if _, err := loadConfig(file, env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// An http issuer that is not loopback is refused when the server starts.
	vars := env(map[string]string{"DEVICEGRANTD_ISSUER": "http://auth.example.org/", "DEVICEGRANTD_DATABASE": filepath.Join(dir, "x.db"), "DEVICEGRANTD_LISTEN": freeAddr(t)})
	var out bytes.Buffer
	err = run(context.Background(), []string{"serve"}, nil, &out, &out, vars)
	if err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("plain http public issuer: %v", err)
	}
}

// TestAdminCommands: outbox, client and keys against a real database.
func TestAdminCommands(t *testing.T) {
	dir := t.TempDir()
	vars := env(map[string]string{
		"DEVICEGRANTD_DATABASE": filepath.Join(dir, "d.db"),
		// Nothing listens there: calls wait in the outbox.
		"DEVICEGRANTD_HOMESERVER_ENDPOINT": "http://" + freeAddr(t) + "/",
		"DEVICEGRANTD_HOMESERVER_SECRET":   "s",
	})
	ctx := context.Background()
	runOut := func(stdin string, args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, args, strings.NewReader(stdin), &out, &out, vars)
		return out.String(), err
	}
	if out, err := runOut("correct horse battery\n", "user", "add", "dana", "--password-stdin"); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	out, err := runOut("", "outbox")
	if err != nil || !strings.Contains(out, "provision_user") || !strings.Contains(out, "dana") || !strings.Contains(out, "due") {
		t.Errorf("outbox: %v\n%s", err, out)
	}
	if out, err := runOut("", "outbox", "retry"); err != nil || !strings.Contains(out, "0 parked") {
		t.Errorf("outbox retry: %v %s", err, out)
	}
	if out, err := runOut("", "keys", "rotate"); err != nil || !strings.HasPrefix(out, "new signing key ") {
		t.Errorf("keys rotate: %v %s", err, out)
	}
	if _, err := runOut("", "client", "trust", "no-such-client"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("trusting an unknown client: %v", err)
	}
	if _, err := runOut("", "client", "frobnicate"); !errors.Is(err, errUsage) {
		t.Errorf("client with a bad subcommand: %v", err)
	}
	if out, err := runOut("", "user", "deactivate", "dana"); err != nil || !strings.Contains(out, "deactivated @dana") {
		t.Errorf("user deactivate: %v %s", err, out)
	}
	if out, _ := runOut("", "outbox"); !strings.Contains(out, "delete_user") {
		t.Errorf("outbox after deactivation lacks delete_user:\n%s", out)
	}
}

// checkLimits: the daemon's HTTP server refuses bloated headers (431) and
// bodies over 64 KiB (413), and sends no HSTS over plain http (issue 10.1,
// 10.10).
func checkLimits(t *testing.T, base string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 24<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("24 KiB header: %d, want 431", resp.StatusCode)
	}
	resp, err = http.Post(base+"oauth2/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type="+strings.Repeat("a", 65<<10)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("65 KiB form: %d, want 413", resp.StatusCode)
	}
	if h := resp.Header.Get("Strict-Transport-Security"); h != "" {
		t.Errorf("plain http sent Strict-Transport-Security %q", h)
	}
}
