package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/internal/pairtest"
	"github.com/devicegrant/devicegrant/internal/qrtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds the real matrix-pair once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "matrix-pair-test")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "matrix-pair")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cli runs matrix-pair with a private state directory.
type cli struct {
	t     *testing.T
	state string // XDG_STATE_HOME
}

func newCLI(t *testing.T) *cli { return &cli{t: t, state: t.TempDir()} }

func (c *cli) dir() string { return filepath.Join(c.state, "matrix-pair") }

func (c *cli) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(binary(c.t), args...)
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+c.state, "NO_COLOR=1")
	return cmd
}

// run runs a command to its end and returns stdout, stderr and exit code.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := c.cmd(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	c.t.Fatal(err)
	return "", "", -1
}

// login is a matrix-pair login --json in progress.
type login struct {
	cmd    *exec.Cmd
	lines  *bufio.Scanner
	stderr *bytes.Buffer
	auth   map[string]any
}

func (c *cli) startLogin(args ...string) *login {
	c.t.Helper()
	cmd := c.cmd(append([]string{"login", "--json"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	l := &login{cmd: cmd, lines: bufio.NewScanner(stdout), stderr: new(bytes.Buffer)}
	cmd.Stderr = l.stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cmd.Process.Kill() })
	l.auth = l.next(c.t)
	if l.auth["event"] != "authorization" {
		c.t.Fatalf("first line %v; stderr:\n%s", l.auth, l.stderr)
	}
	return l
}

func (l *login) next(t *testing.T) map[string]any {
	t.Helper()
	if !l.lines.Scan() {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(l.lines.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %q", l.lines.Text())
	}
	return m
}

// finish reads the last JSON line and the exit code.
func (l *login) finish(t *testing.T) (map[string]any, int) {
	t.Helper()
	m := l.next(t)
	err := l.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return m, ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return m, 0
}

func (l *login) uri() string { s, _ := l.auth["verification_uri_complete"].(string); return s }

func jsonOf(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &m); err != nil {
		t.Fatalf("not JSON: %q", s)
	}
	return m
}

func loggedIn(t *testing.T, w *pairtest.World, c *cli, args ...string) map[string]any {
	t.Helper()
	l := c.startLogin(append(args, w.UserID())...)
	w.Phone.Decide(l.uri(), "approve")
	res, code := l.finish(t)
	if code != 0 || res["event"] != "login" {
		t.Fatalf("login: exit %d, %v\n%s", code, res, l.stderr)
	}
	return res
}

func TestCLIWholePath(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	c := newCLI(t)
	res := loggedIn(t, w, c, "--device-id", "BOTDEVICE001")
	if res["user_id"] != w.UserID() || res["device_id"] != "BOTDEVICE001" || res["homeserver"] != w.HS.URL() {
		t.Fatalf("login result %v", res)
	}
	// State in $XDG_STATE_HOME/matrix-pair, private.
	for p, want := range map[string]os.FileMode{c.dir(): 0o700, filepath.Join(c.dir(), "default.json"): 0o600} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	// Logging in again over a live profile is refused.
	if _, _, code := c.run("login", w.UserID()); code != exitError {
		t.Fatalf("second login: exit %d", code)
	}

	out, errOut, code := c.run("token", "--json")
	tok := jsonOf(t, out)
	at, _ := tok["access_token"].(string)
	if code != 0 || at == "" || tok["device_id"] != "BOTDEVICE001" {
		t.Fatalf("token: %d %v %s", code, tok, errOut)
	}
	if in := w.Introspect(at); !in.Active || in.DeviceID != "BOTDEVICE001" {
		t.Fatalf("introspection %+v", in)
	}
	if plain, _, _ := c.run("token"); strings.TrimSpace(plain) != at {
		t.Fatal("plain token differs from the JSON one")
	}

	out, errOut, code = c.run("status", "--json")
	st := jsonOf(t, out)
	if code != 0 || st["whoami_ok"] != true || st["refresh_ok"] != true || st["user_id"] != w.UserID() {
		t.Fatalf("status: %d %v %s", code, st, errOut)
	}
	out, _, code = c.run("status", "--refresh")
	if code != 0 || !strings.Contains(out, "ok (refreshed just now)") || strings.Contains(out, at) {
		t.Fatalf("status --refresh: %d\n%s", code, out)
	}
	statusJSON, _, _ := c.run("status", "--json", "-v")
	if strings.Contains(out, "dga_") || strings.Contains(out, "dgr_") || strings.Contains(statusJSON, "dga_") || strings.Contains(statusJSON, "dgr_") {
		t.Fatal("status shows a token") // devicegrantd's token prefixes
	}

	out, errOut, code = c.run("exec", "--", "sh", "-c", `echo "$MATRIX_HOMESERVER|$MATRIX_USER_ID|$MATRIX_DEVICE_ID|$MATRIX_ACCESS_TOKEN"; exit 7`)
	parts := strings.Split(strings.TrimSpace(out), "|")
	if code != 7 || len(parts) != 4 || parts[0] != w.HS.URL() || parts[1] != w.UserID() || parts[2] != "BOTDEVICE001" {
		t.Fatalf("exec: %d %q %s", code, out, errOut)
	}
	if in := w.Introspect(parts[3]); !in.Active {
		t.Fatal("exec's token is not active")
	}
	if _, _, code := c.run("exec", "--", "no-such-command-here"); code != 127 {
		t.Fatalf("exec of a missing command: exit %d", code)
	}

	out, errOut, code = c.run("logout", "--json")
	if lo := jsonOf(t, out); code != 0 || lo["revoked"] != true || lo["removed"] != true {
		t.Fatalf("logout: %d %v %s", code, lo, errOut)
	}
	if in := w.Introspect(parts[3]); in.Active {
		t.Fatal("token still active after logout")
	}
	if _, err := os.Stat(filepath.Join(c.dir(), "default.json")); !os.IsNotExist(err) {
		t.Fatal("state left after logout")
	}
	out, _, code = c.run("token", "--json")
	if code != exitNotLoggedIn || jsonOf(t, out)["error"] != "not_logged_in" {
		t.Fatalf("token after logout: exit %d %s", code, out)
	}
}

func TestCLIExitCodes(t *testing.T) {
	t.Run("usage", func(t *testing.T) {
		c := newCLI(t)
		for _, args := range [][]string{{}, {"frobnicate"}, {"login"}, {"login", "alice"}, {"token", "extra"}, {"exec"}, {"login", "--no-such-flag"}} {
			if _, _, code := c.run(args...); code != exitUsage {
				t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
			}
		}
		for _, cmd := range []string{"login", "token", "exec", "status", "logout"} {
			_, errOut, code := c.run(cmd, "--help")
			if code != 0 || !strings.Contains(errOut, "Exit codes:") {
				t.Errorf("%s --help: exit %d\n%s", cmd, code, errOut)
			}
			out, _, _ := c.run("help", cmd)
			if !strings.Contains(out, "Exit codes:") || !strings.Contains(out, "matrix-pair "+cmd) || !strings.Contains(out, "-profile") {
				t.Errorf("help %s:\n%s", cmd, out)
			}
		}
	})
	t.Run("not logged in", func(t *testing.T) {
		c := newCLI(t)
		for _, cmd := range []string{"token", "status", "logout"} {
			if _, _, code := c.run(cmd); code != exitNotLoggedIn {
				t.Errorf("%s: exit %d", cmd, code)
			}
		}
		if _, _, code := c.run("exec", "--", "true"); code != exitNotLoggedIn {
			t.Errorf("exec: exit %d", code)
		}
	})
	t.Run("denied", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.Stable)
		c := newCLI(t)
		l := c.startLogin("--homeserver", w.HS.URL())
		w.Phone.Decide(l.uri(), "deny")
		res, code := l.finish(t)
		if code != exitDenied || res["error"] != "denied" {
			t.Fatalf("exit %d %v", code, res)
		}
	})
	t.Run("expired", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.Stable, devtest.WithConfig(func(c *devicegrant.Config) { c.DeviceCodeTTL = 3 * time.Second }))
		c := newCLI(t)
		res, code := c.startLogin(w.UserID()).finish(t)
		if code != exitExpired || res["error"] != "expired" {
			t.Fatalf("exit %d %v", code, res)
		}
	})
	t.Run("no OAuth API", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.None)
		c := newCLI(t)
		_, errOut, code := c.run("login", w.UserID())
		if code != exitUnsupported || !strings.Contains(errOut, "does not offer the Matrix OAuth 2.0 API") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("plain http off loopback", func(t *testing.T) {
		_, errOut, code := newCLI(t).run("login", "--homeserver", "http://matrix.example.org")
		if code != exitError || !strings.Contains(errOut, "loopback") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.Stable)
		c := newCLI(t)
		l := c.startLogin(w.UserID())
		l.cmd.Process.Signal(syscall.SIGINT)
		res, code := l.finish(t)
		if code != exitInterrupted || res["error"] != "interrupted" {
			t.Fatalf("exit %d %v\n%s", code, res, l.stderr)
		}
		if _, err := os.Stat(filepath.Join(c.dir(), "default.json")); !os.IsNotExist(err) {
			t.Fatal("state written after an interrupted login")
		}
	})
}

// editState changes fields of the default profile's state file.
func editState(t *testing.T, c *cli, change map[string]any) {
	t.Helper()
	p := filepath.Join(c.dir(), "default.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	json.Unmarshal(raw, &st)
	for k, v := range change {
		st[k] = v
	}
	raw, _ = json.Marshal(st)
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLIParallelToken: N processes run "matrix-pair token" at once with
// an expired access token: one refresh reaches the server and they all
// print the same new token.
func TestCLIParallelToken(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	c := newCLI(t)
	loggedIn(t, w, c)
	rec := &pairtest.Recorder{}
	proxy := pairtest.Proxy(t, strings.TrimSuffix(w.Auth.URL, "/"), rec.Wrap)
	editState(t, c, map[string]any{"token_endpoint": proxy + "/oauth2/token",
		"expiry": time.Now().Add(-time.Hour).Format(time.RFC3339)})
	const n = 8
	outs := make([]string, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], _, codes[i] = c.run("token")
		}()
	}
	wg.Wait()
	for i := range n {
		if codes[i] != 0 || strings.TrimSpace(outs[i]) == "" || outs[i] != outs[0] {
			t.Fatalf("process %d: exit %d, token same as first: %v", i, codes[i], outs[i] == outs[0])
		}
	}
	if got := len(rec.Requests("grant_type", "refresh_token")); got != 1 {
		t.Fatalf("%d refreshes reached the server, want 1", got)
	}
	if in := w.Introspect(strings.TrimSpace(outs[0])); !in.Active {
		t.Fatal("the printed token is not active")
	}
}

func TestCLILogoutUnreachable(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	c := newCLI(t)
	loggedIn(t, w, c)
	editState(t, c, map[string]any{"revocation_endpoint": "http://127.0.0.1:1/oauth2/revoke"})
	_, errOut, code := c.run("logout")
	if code != exitError || !strings.Contains(errOut, "could not be reached") || !strings.Contains(errOut, "kept") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(c.dir(), "default.json")); err != nil {
		t.Fatal("state removed although the server was unreachable")
	}
	if out, _, code := c.run("logout", "--force", "--json"); code != 0 || jsonOf(t, out)["removed"] != true {
		t.Fatalf("logout --force: %d %s", code, out)
	}
}

// TestCLIReplaceReusesClient: login --replace over a profile whose client
// the server forgot registers again and revokes nothing it cannot.
func TestCLIReplaceReRegisters(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	c := newCLI(t)
	loggedIn(t, w, c)
	editState(t, c, map[string]any{"client_id": "01FORGOTTEN0000000000000000"})
	l := c.startLogin("--replace", w.UserID())
	w.Phone.Decide(l.uri(), "approve")
	res, code := l.finish(t)
	if code != 0 || res["event"] != "login" {
		t.Fatalf("exit %d %v\n%s", code, res, l.stderr)
	}
	raw, _ := os.ReadFile(filepath.Join(c.dir(), "default.json"))
	if bytes.Contains(raw, []byte("01FORGOTTEN")) {
		t.Fatal("the forgotten client id was kept")
	}
}

// TestTmuxLogin runs login in a real terminal (tmux), reads the QR symbol
// off the screen with its colours, decodes it, approves with the phone
// using the decoded URI, and watches the login finish.
func TestTmuxLogin(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed; the terminal test needs it (apt-get install tmux)")
	}
	w := pairtest.Start(t, fakesynapse.Stable)
	c := newCLI(t)
	sock := "mp-test-" + filepath.Base(t.TempDir())
	tm := func(args ...string) (string, error) {
		out, err := exec.Command(tmux, append([]string{"-L", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		return string(out), err
	}
	script := fmt.Sprintf("unset NO_COLOR; XDG_STATE_HOME=%q %q login %q; echo EXIT=$?; sleep 600", c.state, binary(t), w.UserID())
	if out, err := tm("new-session", "-d", "-s", "mp", "-x", "100", "-y", "50", "sh", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { tm("kill-server") })
	var uri, screen string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// -e keeps the colours; -N keeps trailing spaces, without which
		// the white quiet zone right of the symbol would be lost.
		screen, err = tm("capture-pane", "-p", "-e", "-N", "-t", "mp")
		if err != nil {
			t.Fatalf("capture-pane: %v %s", err, screen)
		}
		if !strings.Contains(screen, "\x1b[") && strings.Contains(screen, "expires in") {
			t.Fatalf("no colours on a terminal:\n%s", screen)
		}
		if uri, err = qrtest.DecodeTerminal(screen, qrtest.DarkTheme); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QR symbol on the screen (%v):\n%s", err, screen)
		}
	}
	code := uri[strings.LastIndex(uri, "/")+1:]
	if !strings.HasPrefix(uri, strings.ToUpper(w.Auth.URL)+"D/") || len(code) != 8 ||
		!strings.Contains(screen, code[:4]+"-"+code[4:]) || !strings.Contains(screen, "expires in") {
		t.Fatalf("decoded %q; screen:\n%s", uri, screen)
	}
	w.Phone.Decide(uri, "approve")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		screen, _ = tm("capture-pane", "-p", "-t", "mp")
		if strings.Contains(screen, "EXIT=") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("login did not finish:\n%s", screen)
		}
	}
	if !strings.Contains(screen, "Signed in as "+w.UserID()) || !strings.Contains(screen, "EXIT=0") {
		t.Fatalf("screen:\n%s", screen)
	}
}

// TestCLIDisplayPNG shows the card on a panel (the PNG stand-in, at an
// OLED's 128×64), decodes the symbol from the file and approves with it.
func TestCLIDisplayPNG(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	c := newCLI(t)
	png := filepath.Join(t.TempDir(), "card.png")
	l := c.startLogin("--display", "png:"+png+":128x64", w.UserID())
	var uri string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if f, err := os.Open(png); err == nil {
			img, _, err := image.Decode(f)
			f.Close()
			if err == nil {
				if uri, err = qrtest.Decode(img); err == nil {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no readable card in %s\n%s", png, l.stderr)
		}
	}
	if uri != l.uri() {
		t.Fatalf("panel shows %q, want %q", uri, l.uri())
	}
	w.Phone.Decide(uri, "approve")
	if res, code := l.finish(t); code != 0 || res["event"] != "login" {
		t.Fatalf("exit %d %v\n%s", code, res, l.stderr)
	}
	if !strings.Contains(l.stderr.String(), l.auth["user_code"].(string)) {
		t.Fatalf("the user code is not on stderr:\n%s", l.stderr)
	}
}
