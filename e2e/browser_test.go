//go:build linux

// Package e2e tests devicegrantd's phone pages in a real browser: Debian's
// Chromium, headless at a phone's size, driven by playwright-core from the
// Node scripts beside this file, against a real devicegrantd on loopback.
// The Go side plays the device (golang.org/x/oauth2), the app's loopback
// redirect and the homeserver's introspection, and asserts on what really
// happened. Every page visited is screenshotted to
// artifacts/browser/<scenario>/NN-<page>.png at the repository root.
//
// Without /usr/bin/chromium or e2e/node_modules (npm ci in e2e/) these
// tests skip, unless DEVICEGRANT_BROWSER_TESTS=1 (test.sh sets it): then
// they fail, so CI never skips them silently.
package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store"
)

const (
	apiScope    = "urn:matrix:client:api:*"
	deviceScope = "urn:matrix:client:device:"
	// scenarioTimeout bounds one browser run, launch included.
	scenarioTimeout = 60 * time.Second
)

func chromiumPath() string {
	if p := os.Getenv("DEVICEGRANT_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// requireBrowser skips the test when the browser or playwright-core is
// missing, or fails it when DEVICEGRANT_BROWSER_TESTS=1.
func requireBrowser(t *testing.T) {
	t.Helper()
	problem := browserProblem()
	if problem == "" {
		return
	}
	if os.Getenv("DEVICEGRANT_BROWSER_TESTS") == "1" {
		t.Fatalf("browser tests cannot run (DEVICEGRANT_BROWSER_TESTS=1): %s", problem)
	}
	t.Skipf("browser tests skipped: %s (./test.sh installs what they need; set DEVICEGRANT_BROWSER_TESTS=1 to make this a failure)", problem)
}

func browserProblem() string {
	if fi, err := os.Stat(chromiumPath()); err != nil || fi.Mode()&0o111 == 0 {
		return chromiumPath() + " is missing (apt-get install chromium)"
	}
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
		return "e2e/package-lock.json: " + err.Error()
	}
	want := lock.Packages["node_modules/playwright-core"].Version
	var installed struct {
		Version string `json:"version"`
	}
	b, err = os.ReadFile("node_modules/playwright-core/package.json")
	if err != nil {
		return "e2e/node_modules/playwright-core is missing (cd e2e && npm ci)"
	}
	if err := json.Unmarshal(b, &installed); err != nil || installed.Version != want {
		return fmt.Sprintf("e2e/node_modules has playwright-core %q, the lock file %q (cd e2e && npm ci)", installed.Version, want)
	}
	return ""
}

// line is one JSON line a scenario prints (see lib.mjs).
type line struct {
	Checkpoint string          `json:"checkpoint"`
	Done       bool            `json:"done"`
	Error      string          `json:"error"`
	URL        string          `json:"url"`
	Data       json.RawMessage `json:"data"`
	Pages      []visitedPage   `json:"pages"`
	Violations []string        `json:"violations"`
	Notes      []string        `json:"notes"`
	Log        []string        `json:"log"`

	raw []byte
}

type visitedPage struct {
	N      int    `json:"n"`
	Name   string `json:"name"`
	URL    string `json:"url"`
	Status int    `json:"status"`
	Title  string `json:"title"`
}

// browserRun is one scenario script running in node.
type browserRun struct {
	t        *testing.T
	scenario string
	dir      string // its screenshots
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	lines    chan line
	stderr   *devtest.SyncBuffer
	cancel   context.CancelFunc
	waitOnce sync.Once
	waitErr  error
}

// startBrowser runs `node <script>.mjs <args>` with the screenshots going
// to artifacts/browser/<scenario>/.
func startBrowser(t *testing.T, script, scenario string, args map[string]any) *browserRun {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "artifacts", "browser", scenario))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	args["artifacts"] = dir
	argJSON, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	cmd := exec.CommandContext(ctx, "node", script+".mjs", string(argJSON))
	cmd.Env = append(os.Environ(), "DEVICEGRANT_CHROMIUM="+chromiumPath())
	// Chromium runs in node's process group; a timeout kills them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	r := &browserRun{t: t, scenario: scenario, dir: dir, cmd: cmd, lines: make(chan line, 16), stderr: &devtest.SyncBuffer{}, cancel: cancel}
	cmd.Stderr = r.stderr
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node %s.mjs: %v", script, err)
	}
	t.Cleanup(func() {
		r.stdin.Close()
		r.wait()
		cancel()
	})
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var l line
			b := append([]byte(nil), sc.Bytes()...)
			if err := json.Unmarshal(b, &l); err != nil {
				l = line{Error: "not a JSON line: " + string(b)}
			}
			l.raw = b
			r.lines <- l
		}
		// Drain so node never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return r
}

func (r *browserRun) wait() error {
	r.waitOnce.Do(func() { r.waitErr = r.cmd.Wait() })
	return r.waitErr
}

// next returns the scenario's next line, failing the test if it ended
// or failed instead.
func (r *browserRun) next() line {
	r.t.Helper()
	l, ok := <-r.lines
	if !ok {
		err := r.wait()
		r.t.Fatalf("%s: the browser script ended without a result (%v); stderr:\n%s", r.scenario, err, r.stderr.String())
	}
	if l.Error != "" {
		r.report(l)
		r.t.Fatalf("%s: the browser script failed at %s: %s\nbrowser log:\n%s\nstderr:\n%s\nscreenshots: %s",
			r.scenario, l.URL, l.Error, strings.Join(l.Log, "\n"), r.stderr.String(), r.dir)
	}
	return l
}

// checkpoint waits for the scenario to reach a checkpoint and decodes
// what it says there into v.
func (r *browserRun) checkpoint(name string, v any) {
	r.t.Helper()
	l := r.next()
	if l.Checkpoint != name {
		r.t.Fatalf("%s: want checkpoint %q, got %s", r.scenario, name, l.raw)
	}
	if err := json.Unmarshal(l.raw, v); err != nil {
		r.t.Fatal(err)
	}
}

// resume lets the scenario go on past a checkpoint.
func (r *browserRun) resume() {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, "continue\n"); err != nil {
		r.t.Fatalf("%s: resume: %v", r.scenario, err)
	}
}

// finish waits for the scenario's result, reports the page audit's
// violations as errors, and decodes its data into v.
func (r *browserRun) finish(v any) []visitedPage {
	r.t.Helper()
	l := r.next()
	if !l.Done {
		r.t.Fatalf("%s: want the result line, got %s", r.scenario, l.raw)
	}
	if err := r.wait(); err != nil {
		r.t.Errorf("%s: node: %v; stderr:\n%s", r.scenario, err, r.stderr.String())
	}
	r.report(l)
	if err := json.Unmarshal(l.Data, v); err != nil {
		r.t.Fatalf("%s: result data: %v: %s", r.scenario, err, l.Data)
	}
	for _, p := range l.Pages {
		shot := filepath.Join(r.dir, fmt.Sprintf("%02d-%s.png", p.N, p.Name))
		if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
			r.t.Errorf("%s: no screenshot of page %d (%s): %v", r.scenario, p.N, p.Name, err)
		}
	}
	return l.Pages
}

func (r *browserRun) report(l line) {
	r.t.Helper()
	for _, v := range l.Violations {
		r.t.Errorf("%s: phone layout: %s", r.scenario, v)
	}
	for _, n := range l.Notes {
		r.t.Logf("%s: note: %s", r.scenario, n)
	}
	for _, p := range l.Pages {
		r.t.Logf("%s: page %02d %-20s %d %s", r.scenario, p.N, p.Name, p.Status, p.URL)
	}
}

func pageNames(pages []visitedPage) string {
	var names []string
	for _, p := range pages {
		names = append(names, p.Name)
	}
	return strings.Join(names, " ")
}

// env is a real devicegrantd on loopback with the requests the tests make
// of it as a device and as the homeserver.
type env struct {
	*devtest.Server
	t *testing.T
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireBrowser(t)
	s := devtest.Start(t)
	return &env{Server: s, t: t}
}

func (e *env) metadata() map[string]any {
	e.t.Helper()
	status, m := e.Get(".well-known/openid-configuration")
	if status != http.StatusOK {
		e.t.Fatalf("metadata: %d %v", status, m)
	}
	return m
}

const deviceClientJSON = `{
	"client_name": "Kitchen display",
	"client_uri": "https://kitchen.example.org/",
	"application_type": "native",
	"token_endpoint_auth_method": "none",
	"grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
}`

// device is a device that asked for a code and polls for its tokens.
type device struct {
	conf *oauth2.Config
	auth *oauth2.DeviceAuthResponse
	id   string // its Matrix device id
}

func (e *env) newDevice(ctx context.Context, deviceID string) *device {
	e.t.Helper()
	clientID, _ := e.Register(deviceClientJSON)
	conf := &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: e.URL + "oauth2/device",
			TokenURL:      e.URL + "oauth2/token",
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{apiScope, deviceScope + deviceID},
	}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		e.t.Fatalf("DeviceAuth: %v", err)
	}
	return &device{conf: conf, auth: da, id: deviceID}
}

type polled struct {
	tok *oauth2.Token
	err error
}

// poll starts the device's polling (x/oauth2 waits one interval before
// its first request).
func (d *device) poll(ctx context.Context) <-chan polled {
	ch := make(chan polled, 1)
	go func() {
		tok, err := d.conf.DeviceAccessToken(ctx, d.auth)
		ch <- polled{tok, err}
	}()
	return ch
}

// pollOnce asks the token endpoint once, as the device would, and returns
// its error code ("" when it handed out tokens).
func (e *env) pollOnce(d *device) string {
	e.t.Helper()
	status, m := e.Post("oauth2/token", url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {d.auth.DeviceCode},
		"client_id":   {d.conf.ClientID},
	})
	code, _ := m["error"].(string)
	if code == "" && status != http.StatusOK {
		e.t.Fatalf("token endpoint: %d %v", status, m)
	}
	return code
}

func (e *env) wantActive(tok, deviceID string) {
	e.t.Helper()
	info := e.Introspect(tok)
	if info["active"] != true || info["username"] != devtest.Username || info["device_id"] != deviceID {
		e.t.Errorf("introspection of the device's token: %v, want active for %s on %s", info, devtest.Username, deviceID)
	}
}

// deviceData is what device.mjs reports.
type deviceData struct {
	Opened     string `json:"opened"`
	ConsentURL string `json:"consentURL"`
	Status     int    `json:"status"`
	H1         string `json:"h1"`
	Message    string `json:"message"`
}

// untickedData is what device.mjs reports after tapping Approve with the
// box not ticked.
type untickedData struct {
	Navigated         bool     `json:"navigated"`
	Requests          []string `json:"requests"`
	ValueMissing      bool     `json:"valueMissing"`
	ValidationMessage string   `json:"validationMessage"`
	URL               string   `json:"url"`
	H1                string   `json:"h1"`
}

// TestBrowserDeviceApprove: scan the QR code's upper-case URL, sign in,
// try Approve without ticking the box (the browser must not send the form
// and the grant stays pending), tick, approve; the device gets tokens.
func TestBrowserDeviceApprove(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := e.newDevice(ctx, "E2EAPPROVE")
	if want := "HTTP://"; !strings.HasPrefix(d.auth.VerificationURIComplete, want) {
		t.Fatalf("verification_uri_complete %q is not upper case", d.auth.VerificationURIComplete)
	}
	code := strings.ReplaceAll(d.auth.UserCode, "-", "")

	run := startBrowser(t, "device", "device-approve", map[string]any{
		"url": d.auth.VerificationURIComplete, "userCode": d.auth.UserCode,
		"username": devtest.Username, "password": devtest.Password,
		"action": "approve", "tryUnticked": true,
	})

	var un untickedData
	run.checkpoint("unticked", &un)
	if un.Navigated || len(un.Requests) != 0 || un.H1 != "Allow this device?" {
		t.Errorf("Approve with the box not ticked left the page: navigated=%v requests=%v h1=%q", un.Navigated, un.Requests, un.H1)
	}
	if !un.ValueMissing || un.ValidationMessage == "" {
		t.Errorf("the box is not flagged as missing: valueMissing=%v message=%q", un.ValueMissing, un.ValidationMessage)
	}
	if got := e.pollOnce(d); got != "authorization_pending" {
		t.Errorf("after Approve with the box not ticked the token endpoint says %q, want authorization_pending", got)
	}
	// Start the device polling only now: the manual poll above and its
	// first poll are an interval apart, so no slow_down.
	tokens := d.poll(ctx)
	run.resume()

	var res deviceData
	pages := run.finish(&res)
	if u, err := url.Parse(res.Opened); err != nil || u.Path != "/D/"+code {
		t.Errorf("the browser opened %q, want path /D/%s", res.Opened, code)
	}
	if res.Status != http.StatusOK || res.H1 != "Device connected" {
		t.Errorf("after Approve: %d %q: %s", res.Status, res.H1, res.Message)
	}
	if got, want := pageNames(pages), "sign-in consent consent-not-ticked approved"; got != want {
		t.Errorf("pages visited: %q, want %q", got, want)
	}

	var p polled
	select {
	case p = <-tokens:
	case <-ctx.Done():
		t.Fatal("the device got no answer")
	}
	if p.err != nil {
		t.Fatalf("the device's DeviceAccessToken: %v", p.err)
	}
	if !strings.HasPrefix(p.tok.AccessToken, "dga_") || p.tok.RefreshToken == "" {
		t.Errorf("tokens: access %.4s… refresh set %v", p.tok.AccessToken, p.tok.RefreshToken != "")
	}
	e.wantActive(p.tok.AccessToken, d.id)
}

// TestBrowserDeviceDeny: the person taps Deny; the device hears
// access_denied.
func TestBrowserDeviceDeny(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := e.newDevice(ctx, "E2EDENY001")
	tokens := d.poll(ctx)
	run := startBrowser(t, "device", "device-deny", map[string]any{
		"url": d.auth.VerificationURIComplete, "userCode": d.auth.UserCode,
		"username": devtest.Username, "password": devtest.Password,
		"action": "deny",
	})
	var res deviceData
	pages := run.finish(&res)
	if res.Status != http.StatusOK || res.H1 != "Request denied" {
		t.Errorf("after Deny: %d %q: %s", res.Status, res.H1, res.Message)
	}
	if got, want := pageNames(pages), "sign-in consent denied"; got != want {
		t.Errorf("pages visited: %q, want %q", got, want)
	}
	var p polled
	select {
	case p = <-tokens:
	case <-ctx.Done():
		t.Fatal("the device got no answer")
	}
	var re *oauth2.RetrieveError
	if !errors.As(p.err, &re) || re.ErrorCode != "access_denied" {
		t.Fatalf("the device got %v (token %v), want access_denied", p.err, p.tok)
	}
}

type wrongCodeData struct {
	Status    int    `json:"status"`
	URL       string `json:"url"`
	H1        string `json:"h1"`
	Error     string `json:"error"`
	ErrorRole string `json:"errorRole"`
	Typed     string `json:"typed"`
}

// TestBrowserWrongCode: a code that no device shows, typed at
// verification_uri, gets a clear error and the form again.
func TestBrowserWrongCode(t *testing.T) {
	e := newEnv(t)
	run := startBrowser(t, "wrongcode", "wrong-code", map[string]any{"url": e.URL + "device", "code": "bcdf-ghjk"})
	var res wrongCodeData
	pages := run.finish(&res)
	if res.Status != http.StatusBadRequest || !strings.Contains(res.Error, "not valid or has expired") || res.ErrorRole != "alert" {
		t.Errorf("wrong code: %d error %q (role %q)", res.Status, res.Error, res.ErrorRole)
	}
	if res.H1 != "Connect a device" || !strings.EqualFold(res.Typed, "bcdf-ghjk") {
		t.Errorf("wrong code: want the form again with the code kept, got h1 %q, field %q", res.H1, res.Typed)
	}
	if got, want := pageNames(pages), "enter-code wrong-code"; got != want {
		t.Errorf("pages visited: %q, want %q", got, want)
	}
}

type authCodeData struct {
	ConsentH1   string `json:"consentH1"`
	ConsentText string `json:"consentText"`
	HasConfirm  bool   `json:"hasConfirm"`
	URL         string `json:"url"`
	Status      int    `json:"status"`
	Text        string `json:"text"`
}

const nativeClientJSON = `{"client_name":"Browser test","client_uri":"https://app.example.org/",` +
	`"application_type":"native","token_endpoint_auth_method":"none",` +
	`"redirect_uris":["http://127.0.0.1/callback"],"grant_types":["authorization_code","refresh_token"]}`

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// authCodeFlow is a native app's authorization request through the
// browser, up to the app's loopback redirect URI.
type authCodeFlow struct {
	conf     *oauth2.Config
	verifier string
	state    string
	issuer   any
	query    url.Values // what reached the redirect URI
	res      authCodeData
}

// runAuthCode registers a native public client with a loopback redirect
// URI (no port), starts the app's loopback server on a random port, and
// drives the browser through sign-in and consent, pressing action
// ("approve" or "deny"; "none" for a trusted client, which is asked no
// consent). A server that lists no authorization_endpoint fails the test:
// the grant exists, so its absence from discovery is a regression.
func runAuthCode(t *testing.T, e *env, scenario, action, deviceID string) *authCodeFlow {
	t.Helper()
	meta := e.metadata()
	authURL, _ := meta["authorization_endpoint"].(string)
	if authURL == "" {
		t.Fatalf("no authorization_endpoint in /.well-known/openid-configuration (P-DISC-2): %v", meta)
	}
	tokenURL, _ := meta["token_endpoint"].(string)
	clientID, _ := e.Register(nativeClientJSON)
	if action == "none" {
		if err := e.Server.Server.TrustClient(context.Background(), clientID, true); err != nil {
			t.Fatal(err)
		}
	}

	calls := make(chan url.Values, 4)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		calls <- r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1">`+
			`<title>Browser test</title><body style="font:17px/1.5 sans-serif;margin:1.25rem">`+
			`<h1>Back in the app</h1><p>You can return to the app.</p>`)
	}))
	t.Cleanup(app.Close)
	redirectURI := app.URL + "/callback" // http://127.0.0.1:PORT/callback

	f := &authCodeFlow{
		conf: &oauth2.Config{
			ClientID:    clientID,
			Endpoint:    oauth2.Endpoint{AuthURL: authURL, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams},
			RedirectURL: redirectURI,
			Scopes:      []string{apiScope, deviceScope + deviceID},
		},
		verifier: oauth2.GenerateVerifier(),
		state:    randomHex(t, 16),
		issuer:   meta["issuer"],
	}
	u := f.conf.AuthCodeURL(f.state, oauth2.S256ChallengeOption(f.verifier), oauth2.SetAuthURLParam("nonce", randomHex(t, 16)))

	run := startBrowser(t, "authcode", scenario, map[string]any{
		"url": u, "username": devtest.Username, "password": devtest.Password, "redirectPrefix": redirectURI, "action": action,
		"wrongPasswordFirst": action == "none",
	})
	pages := run.finish(&f.res)
	if action != "none" {
		t.Logf("consent page (confirm box: %v): %s", f.res.HasConfirm, f.res.ConsentText)
	}
	wantFirst := "sign-in consent "
	if action == "none" {
		wantFirst = "sign-in sign-in " // a wrong password first
	}
	if got := pageNames(pages); !strings.HasPrefix(got, wantFirst) || !strings.HasSuffix(got, " back-in-app") {
		t.Errorf("pages visited: %q, want %s… back-in-app", got, wantFirst)
	}
	select {
	case f.query = <-calls:
	default:
		t.Fatalf("the app's redirect URI was never called; the browser is at %s", f.res.URL)
	}
	if f.query.Get("state") != f.state {
		t.Errorf("redirect: state %q, want %q", f.query.Get("state"), f.state)
	}
	if iss := f.query.Get("iss"); iss != f.issuer {
		t.Errorf("redirect: iss = %q, want the issuer %q (RFC 9207)", iss, f.issuer)
	}
	return f
}

// TestBrowserAuthorizationCode: a native app signs in with the
// authorization-code grant and PKCE; the browser returns to the app's
// loopback redirect URI (registered without a port), whose code the app
// exchanges for tokens, once. It skips until the server lists an
// authorization_endpoint.
func TestBrowserAuthorizationCode(t *testing.T) {
	e := newEnv(t)
	f := runAuthCode(t, e, "authorization-code", "approve", "E2EAUTHCODE")
	conf, verifier, q := f.conf, f.verifier, f.query
	if q.Get("code") == "" || q.Get("error") != "" {
		t.Fatalf("redirect: %v, want a code", q)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Errorf("Exchange gave access %v refresh %v", tok.AccessToken != "", tok.RefreshToken != "")
	}
	e.wantActive(tok.AccessToken, "E2EAUTHCODE")
	// A code is good once.
	_, err = conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("second Exchange of the same code: %v, want invalid_grant", err)
	}
}

// TestBrowserAuthorizationCodeTrusted: a client the operator trusts
// goes straight from the sign-in form back to the app, with a code, also
// when the first password was mistyped (the form then comes back from
// POST /login).
func TestBrowserAuthorizationCodeTrusted(t *testing.T) {
	e := newEnv(t)
	f := runAuthCode(t, e, "authorization-code-trusted", "none", "E2ETRUSTED")
	if f.query.Get("code") == "" || f.query.Get("error") != "" {
		t.Fatalf("redirect: %v, want a code", f.query)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := f.conf.Exchange(ctx, f.query.Get("code"), oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	e.wantActive(tok.AccessToken, "E2ETRUSTED")
}

// TestBrowserAuthorizationCodeCancel: the person presses Cancel on the
// consent page; the app hears access_denied at its redirect URI.
func TestBrowserAuthorizationCodeCancel(t *testing.T) {
	e := newEnv(t)
	f := runAuthCode(t, e, "authorization-code-cancel", "deny", "E2EAUTHDENY")
	if f.query.Get("error") != "access_denied" || f.query.Get("code") != "" {
		t.Errorf("redirect after Cancel: %v, want error=access_denied and no code", f.query)
	}
}

type accountData struct {
	SignedIn       bool   `json:"signedIn"`
	SessionsBefore string `json:"sessionsBefore"`
	SessionText    string `json:"sessionText"`
	ConfirmH1      string `json:"confirmH1"`
	ConfirmText    string `json:"confirmText"`
	Status         int    `json:"status"`
	URL            string `json:"url"`
	H1             string `json:"h1"`
	Notice         string `json:"notice"`
	Error          string `json:"error"`
	SessionsAfter  string `json:"sessionsAfter"`
}

// TestBrowserAccountSignOut: a device is signed in; the account page
// lists it, the person opens it, signs it out with the password, and its
// token is dead at introspection.
func TestBrowserAccountSignOut(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := e.newDevice(ctx, "E2EACCOUNT")
	tokens := d.poll(ctx)
	// The approval itself was tested above; here it is quick, without a
	// browser.
	if pg := devtest.NewPhone(t).Decide(d.auth.VerificationURIComplete, "approve"); !strings.Contains(pg.Text(), "Device connected") {
		t.Fatalf("approval: %d %s", pg.Status, pg.Text())
	}
	p := <-tokens
	if p.err != nil {
		t.Fatalf("DeviceAccessToken: %v", p.err)
	}
	e.wantActive(p.tok.AccessToken, d.id)

	run := startBrowser(t, "account", "account-sign-out", map[string]any{
		"url": e.URL + "account", "deviceID": d.id, "username": devtest.Username, "password": devtest.Password,
	})
	var res accountData
	pages := run.finish(&res)
	if got, want := pageNames(pages), "sign-in account device confirm-sign-out signed-out"; got != want {
		t.Errorf("pages visited: %q, want %q", got, want)
	}
	if !strings.Contains(res.SessionsBefore, "Kitchen display") || !strings.Contains(res.SessionText, d.id) {
		t.Errorf("account page lists %q; device page says %q", res.SessionsBefore, res.SessionText)
	}
	if !strings.Contains(res.ConfirmText, d.id) || !strings.Contains(res.ConfirmH1, "Sign out") {
		t.Errorf("confirmation page: %q: %s", res.ConfirmH1, res.ConfirmText)
	}
	if res.Status != http.StatusOK || res.H1 != "Your account" || !strings.Contains(res.Notice, "is signed out") || res.Error != "" {
		t.Errorf("after signing out: %d %q notice %q error %q", res.Status, res.H1, res.Notice, res.Error)
	}
	if strings.Contains(res.SessionsAfter, d.id) {
		t.Errorf("the account page still lists %s: %q", d.id, res.SessionsAfter)
	}

	if info := e.Introspect(p.tok.AccessToken); info["active"] != false {
		t.Errorf("introspection after signing the device out: %v, want inactive", info)
	}
	stale := *p.tok
	stale.Expiry = time.Now().Add(-time.Minute)
	_, err := d.conf.TokenSource(ctx, &stale).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("refresh after signing the device out: %v, want invalid_grant", err)
	}
}

// TestBrowserTrustedClientFromAnotherSite: a browser already signed in
// follows a link on another site (localhost, while devicegrantd is
// 127.0.0.1: Chromium says Sec-Fetch-Site: cross-site) to a trusted
// client's authorization request. The link approves nothing; the consent
// page shows, and the tap on Continue sends the browser back to the app
// with a code (RFC 6749 §10.12; issue 10 item 6).
func TestBrowserTrustedClientFromAnotherSite(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	meta := e.metadata()
	authURL, _ := meta["authorization_endpoint"].(string)
	clientID, _ := e.Register(nativeClientJSON)
	if err := e.Server.Server.TrustClient(ctx, clientID, true); err != nil {
		t.Fatal(err)
	}
	calls := make(chan url.Values, 4)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls <- r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1">`+
			`<title>Browser test</title><body style="font:17px/1.5 sans-serif;margin:1.25rem"><h1>Back in the app</h1>`)
	}))
	t.Cleanup(app.Close)
	conf := &oauth2.Config{ClientID: clientID, RedirectURL: app.URL + "/callback", Scopes: []string{apiScope, deviceScope + "E2ECROSSSITE"},
		Endpoint: oauth2.Endpoint{AuthURL: authURL}}
	verifier := oauth2.GenerateVerifier()
	link := conf.AuthCodeURL(randomHex(t, 16), oauth2.S256ChallengeOption(verifier))
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1">`+
			`<title>Another site</title><body style="font:17px/1.5 sans-serif;margin:1.25rem"><h1>Win a prize</h1>`+
			`<p><a id="authorize" style="display:inline-block;padding:12px 16px" href="%s">Claim it</a></p>`, html.EscapeString(link))
	}))
	t.Cleanup(other.Close)
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) // another site

	run := startBrowser(t, "crosssite", "trusted-client-cross-site", map[string]any{
		"signIn": e.URL + "account", "username": devtest.Username, "password": devtest.Password,
		"linkPage": otherURL, "redirectPrefix": app.URL + "/callback",
	})
	var cp struct{}
	run.checkpoint("consent", &cp)
	u, err := e.Store.UserByUsername(ctx, devtest.Username)
	if err != nil {
		t.Fatal(err)
	}
	if codes, err := e.Store.AuthCodesOfUser(ctx, u.ID, []store.AuthCodeStatus{store.AuthCodeWaiting, store.AuthCodeReady, store.AuthCodeIssued}, time.Now()); err != nil || len(codes) != 0 {
		t.Errorf("the cross-site link approved %d request(s) (%v)", len(codes), err)
	}
	select {
	case q := <-calls:
		t.Errorf("the app heard from the browser before the tap: %v", q)
	default:
	}
	run.resume()
	var res struct {
		URL string `json:"url"`
	}
	run.finish(&res)
	select {
	case q := <-calls:
		if q.Get("code") == "" {
			t.Errorf("back in the app without a code: %v", q)
		}
	default:
		t.Fatalf("the app's redirect URI was never called; the browser is at %s", res.URL)
	}
}

// legacySSOData is what legacysso.mjs reports.
type legacySSOData struct {
	ConfirmURL  string `json:"confirmURL"`
	ConfirmH1   string `json:"confirmH1"`
	ConfirmText string `json:"confirmText"`
	URL         string `json:"url"`
	Status      int    `json:"status"`
	Sessions    string `json:"sessions"`
	Tags        int    `json:"tags"`
	TagText     string `json:"tagText"`
}

// TestBrowserLegacySSO (P-LEG-3): an app that only speaks the legacy Matrix login
// sends the browser to /login/sso/redirect; the person signs in, confirms
// on a page that names the app's host, and the browser brings a
// loginToken back to the app. The app exchanges it (m.login.token) once;
// a second exchange is refused.
func TestBrowserLegacySSO(t *testing.T) {
	e := newEnv(t)
	calls := make(chan url.Values, 4)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sso-done" {
			http.NotFound(w, r)
			return
		}
		calls <- r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1">`+
			`<title>Old app</title><body style="font:17px/1.5 sans-serif;margin:1.25rem"><h1>Back in the app</h1>`)
	}))
	t.Cleanup(app.Close)
	appURL, _ := url.Parse(app.URL)
	redirect := app.URL + "/sso-done?from=legacy"

	run := startBrowser(t, "legacysso", "legacy-sso", map[string]any{
		"url":      e.URL + "_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(redirect),
		"username": devtest.Username, "password": devtest.Password,
		"appHost": appURL.Host, "redirectPrefix": app.URL + "/sso-done", "accountURL": e.URL + "account",
	})
	var res legacySSOData
	run.checkpoint("back-in-app", &res)
	if !strings.Contains(res.ConfirmText, "@"+devtest.Username+":example.org") || !strings.Contains(res.ConfirmText, redirect) {
		t.Errorf("the confirmation page does not say who signs in where: %s", res.ConfirmText)
	}
	var q url.Values
	select {
	case q = <-calls:
	default:
		t.Fatalf("the app was never called; the browser is at %s", res.URL)
	}
	tok := q.Get("loginToken")
	if q.Get("from") != "legacy" || !strings.HasPrefix(tok, "dgl_") {
		t.Fatalf("the app got %v, want its own query and a loginToken", q)
	}

	body := `{"type":"m.login.token","token":"` + tok + `","device_id":"E2ELEGACYSSO","initial_device_display_name":"Old chat app"}`
	status, m := e.PostJSON("_matrix/client/v3/login", body)
	if status != http.StatusOK || m["device_id"] != "E2ELEGACYSSO" || m["user_id"] != "@"+devtest.Username+":example.org" {
		t.Fatalf("m.login.token: %d %v", status, m)
	}
	e.wantActive(m["access_token"].(string), "E2ELEGACYSSO")

	run.resume()
	pages := run.finish(&res)
	if got, want := pageNames(pages), "sign-in confirm-app back-in-app account"; got != want {
		t.Errorf("pages visited: %q, want %q", got, want)
	}
	if !strings.Contains(res.Sessions, "Old chat app") || !strings.Contains(res.Sessions, "E2ELEGACYSSO") || res.Tags != 1 || res.TagText != "legacy login" {
		t.Errorf("the account page's device list: %q (%d tags, %q)", res.Sessions, res.Tags, res.TagText)
	}

	// A loginToken is good once; the replay ends what it started.
	status, m2 := e.PostJSON("_matrix/client/v3/login", body)
	if status != http.StatusForbidden || m2["errcode"] != "M_FORBIDDEN" {
		t.Errorf("second exchange of the loginToken: %d %v, want 403 M_FORBIDDEN", status, m2)
	}
	if info := e.Introspect(m["access_token"].(string)); info["active"] != false {
		t.Errorf("after the replay the first exchange's token still works: %v", info)
	}
}
