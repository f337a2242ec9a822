package devicegrant_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestPageSecurityHeaders: every phone page forbids framing, referrers,
// caching and scripts; cookies are HttpOnly and SameSite=Lax.
func TestPageSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	pg := newPhone(t).Get(e.URL + "device")
	if pg.Status != 200 {
		t.Fatalf("GET /device: %d", pg.Status)
	}
	h := pg.Header
	for k, want := range map[string]string{
		"Referrer-Policy":        "no-referrer",
		"Cache-Control":          "no-store",
		"X-Frame-Options":        "DENY",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"frame-ancestors 'none'", "default-src 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	resp, err := http.Get(e.URL + "device")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The code entry form sets its CSRF cookie; without it the loop below
	// would check nothing.
	names := map[string]bool{}
	for _, c := range resp.Cookies() {
		names[c.Name] = true
	}
	if !names["dg_csrf"] {
		t.Fatalf("GET /device set cookies %v, want dg_csrf among them", names)
	}
	for _, c := range resp.Cookies() {
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
			t.Errorf("cookie %s: HttpOnly %v SameSite %v", c.Name, c.HttpOnly, c.SameSite)
		}
	}
}

// TestSecureCookiesOnHTTPS: with an https issuer, cookies carry Secure and
// the __Host- prefix.
func TestSecureCookiesOnHTTPS(t *testing.T) {
	e := newEnv(t)
	// The same store behind an https issuer; requests go straight to the
	// handler, since this test is about the headers it writes.
	srv, err := devicegrant.New(devicegrant.Config{Issuer: "https://auth.example.org/"}, e.Store)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest("GET", "https://auth.example.org/device", nil))
	cookies := rec.Result().Cookies()
	if len(cookies) == 0 {
		t.Fatal("no cookie set")
	}
	for _, c := range cookies {
		if !c.Secure || !strings.HasPrefix(c.Name, "__Host-") {
			t.Errorf("cookie %s: Secure %v", c.Name, c.Secure)
		}
	}
}

// TestCSRF: a form posted without the CSRF token changes nothing (P-DEV-7).
func TestCSRF(t *testing.T) {
	e := newEnv(t)
	clientID, da, p, _ := e.consent("CSRFDEVICE")
	code := strings.ReplaceAll(da["user_code"].(string), "-", "")

	// A cross-site form post: the browser sends cookies (say, a top-level
	// POST with SameSite=Lax relaxed) but the attacker cannot know the token.
	resp, err := p.Client.PostForm(e.URL+"D/"+code, url.Values{"action": {"approve"}, "confirm": {"yes"}, "csrf": {"guess"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("approve with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	status, m := e.poll(clientID, da["device_code"].(string))
	wantError(t, "poll after the forged approval", status, m, "authorization_pending")
}

// TestApproveNeedsConfirmation: Approve without ticking the box does not
// approve (P-DEV-7).
func TestApproveNeedsConfirmation(t *testing.T) {
	e := newEnv(t)
	clientID, da, p, pg := e.consent("CONFIRMDEV")
	pg = p.Submit(pg, pg.URL.Path, url.Values{"action": {"approve"}})
	if !strings.Contains(pg.Text(), "Tick the box") {
		t.Errorf("approve without confirmation: %s", pg.Text())
	}
	status, m := e.poll(clientID, da["device_code"].(string))
	wantError(t, "poll", status, m, "authorization_pending")
}

// TestConsentPageShowsWhatMatters: P-DEV-7's list.
func TestConsentPageShowsWhatMatters(t *testing.T) {
	e := newEnv(t)
	_, da, _, pg := e.consent("SHOWMEDEV1")
	text := pg.Text()
	for _, want := range []string{
		"Kitchen display",        // client name
		"kitchen.example.org",    // client_uri
		da["user_code"].(string), // the code to compare
		"SHOWMEDEV1",             // the Matrix device id
		"127.0.0.1",              // from which address
		"ago",                    // when
		"Full access",            // scopes in words
		"@alice:example.org",     // whose account
		"Only continue if you started this yourself", // warning
	} {
		if !strings.Contains(text, want) {
			t.Errorf("consent page lacks %q:\n%s", want, text)
		}
	}
	var logo bool
	for _, img := range pg.Find("img") {
		logo = logo || devtest.Attr(img, "src") == "https://kitchen.example.org/logo.png"
	}
	if !logo {
		t.Error("consent page does not show the client's logo")
	}
}

// TestCodeEntry: the code form accepts any case, spaces and dashes; a
// wrong code gets a clear error; and guessing is rate limited (P-DEV-3,
// P-DEV-4).
func TestCodeEntry(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.UserCodeFailures = devicegrant.RateLimit{Burst: 3, Every: 1e12}
	}))
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "ENTRYDEV01")
	code := da["user_code"].(string)
	p := newPhone(t)

	pg := p.Get(da["verification_uri"].(string))
	typed := strings.ToLower(code[:2] + " " + code[2:])
	pg = p.Submit(pg, "/device", url.Values{"user_code": {typed}})
	if pg.Form("/login") == nil || !strings.Contains(pg.Text(), code) {
		t.Fatalf("typed %q: expected sign-in for %s, got %d %s", typed, code, pg.Status, pg.Text())
	}

	pg = p.Get(da["verification_uri"].(string))
	for i := 0; i < 3; i++ {
		pg = p.Submit(pg, "/device", url.Values{"user_code": {"BBBB-BBBB"}})
		if pg.Status != http.StatusBadRequest || !strings.Contains(pg.Text(), "not valid or has expired") {
			t.Fatalf("wrong code %d: %d %s", i, pg.Status, pg.Text())
		}
	}
	// The budget is spent: even the right code is not looked up now.
	pg = p.Submit(pg, "/device", url.Values{"user_code": {code}})
	if pg.Status != http.StatusTooManyRequests || pg.Header.Get("Retry-After") == "" {
		t.Errorf("after the failure budget: %d %s", pg.Status, pg.Text())
	}
}

// TestLogin: wrong passwords and unknown users get the same answer.
func TestLogin(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "LOGINDEV01")
	p := newPhone(t)
	pg := p.Get(da["verification_uri_complete"].(string))
	for _, creds := range [][2]string{{testUser, "wrong password"}, {"mallory", testPassword}} {
		got := p.Submit(pg, "/login", url.Values{"username": {creds[0]}, "password": {creds[1]}})
		if got.Status != http.StatusUnauthorized || !strings.Contains(got.Text(), "Wrong username or password") {
			t.Errorf("login %s: %d %s", creds[0], got.Status, got.Text())
		}
	}
	pg = p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	if !strings.Contains(pg.Text(), "Allow this device?") {
		t.Fatalf("login: %s", pg.Text())
	}
	// Sign out: the next visit asks for the password again.
	if pg = p.Submit(pg, "/logout", nil); pg.Form("/device") == nil {
		t.Errorf("signing out did not lead to the code form: %s", pg.Text())
	}
	pg = p.Get(da["verification_uri_complete"].(string))
	if pg.Form("/login") == nil {
		t.Error("still signed in after signing out")
	}
}

// TestDiscovery: P-DISC-1…4.
func TestDiscovery(t *testing.T) {
	e := newEnv(t)
	var first map[string]any
	for _, path := range []string{
		".well-known/openid-configuration",
		".well-known/oauth-authorization-server",
		"_matrix/client/v1/auth_metadata",
		"_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
	} {
		resp, err := http.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") {
			t.Errorf("%s: CORS %q, Cache-Control %q", path, resp.Header.Get("Access-Control-Allow-Origin"), resp.Header.Get("Cache-Control"))
		}
		if first == nil {
			first = m
		} else if !reflect.DeepEqual(first, m) {
			t.Errorf("%s differs from openid-configuration", path)
		}
	}
	if first["issuer"] != e.URL {
		t.Errorf("issuer = %v, want %s", first["issuer"], e.URL)
	}
	for _, k := range []string{"token_endpoint", "revocation_endpoint", "registration_endpoint", "device_authorization_endpoint", "introspection_endpoint"} {
		u, _ := first[k].(string)
		if !strings.HasPrefix(u, e.URL) {
			t.Errorf("%s = %q", k, u)
		}
	}
	grants, _ := first["grant_types_supported"].([]any)
	if !contains(grants, deviceGrant) || !contains(grants, "refresh_token") {
		t.Errorf("grant_types_supported = %v", grants)
	}
	if m, _ := first["code_challenge_methods_supported"].([]any); !contains(m, "S256") || contains(m, "plain") {
		t.Errorf("code_challenge_methods_supported = %v", m)
	}
}

// TestRegistration: P-DCR-1's status codes and echo through HTTP (the
// rules themselves are tested in clientmeta).
func TestRegistration(t *testing.T) {
	e := newEnv(t)
	status, m := e.PostJSON("oauth2/registration", `{"client_uri":"https://x.example.org/","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"],"token_endpoint_auth_method":"none","software_statement_x":"dropped"}`)
	if status != 201 || m["client_id"] == nil || m["software_statement_x"] != nil || m["client_secret"] != nil {
		t.Errorf("valid: %d %v", status, m)
	}
	for body, code := range map[string]string{
		`not json`: "invalid_client_metadata",
		`{"client_uri":"http://x.example.org/","token_endpoint_auth_method":"none","grant_types":["refresh_token","urn:ietf:params:oauth:grant-type:device_code"]}`: "invalid_client_metadata",
		`{"client_uri":"https://x.example.org/","redirect_uris":["https://evil.example.com/cb"]}`:                                                                   "invalid_redirect_uri",
	} {
		status, m := e.PostJSON("oauth2/registration", body)
		if status != 400 || m["error"] != code || m["error_description"] == "" {
			t.Errorf("%s: %d %v, want 400 %s", body, status, m, code)
		}
	}
	resp, err := http.Post(e.URL+"oauth2/registration", "application/json", strings.NewReader(strings.Repeat(" ", 70<<10)+"{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "64 KiB") {
		t.Errorf("oversized body: %d %s", resp.StatusCode, b)
	}
}

func contains(list []any, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestConsentSaysWhatItReplaces: approving a sign-in on a device id that
// is signed in already ends that session (P-SCOPE-4); the page says so.
func TestConsentSaysWhatItReplaces(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	e.signIn(clientID, "REPLACEDEV1")
	da := e.deviceAuth(clientID, "REPLACEDEV1")
	p, pg := e.consentFor(da)
	if !strings.Contains(pg.Text(), "Approving signs out Kitchen display, signed in as the device REPLACEDEV1") {
		t.Errorf("consent page does not say what it replaces: %s", pg.Text())
	}
	other := e.deviceAuth(clientID, "FRESHDEVICE1")
	if pg := p.Get(other["verification_uri_complete"].(string)); strings.Contains(pg.Text(), "Approving signs out") {
		t.Errorf("consent page for a new device id warns of a replacement: %s", pg.Text())
	}
}

// consent registers a device client, asks for a code for deviceID, and
// walks a new phone to that code's consent page.
func (e *env) consent(deviceID string) (clientID string, da map[string]any, p *devtest.Phone, pg *devtest.Page) {
	e.t.Helper()
	clientID, _ = e.Register(deviceClientJSON)
	da = e.deviceAuth(clientID, deviceID)
	p, pg = e.consentFor(da)
	return clientID, da, p, pg
}

// consentFor walks a new phone from a device authorization's QR link,
// through signing in, to the consent page.
func (e *env) consentFor(da map[string]any) (*devtest.Phone, *devtest.Page) {
	e.t.Helper()
	p := newPhone(e.t)
	pg := p.Get(da["verification_uri_complete"].(string))
	pg = p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	if pg.Form(pg.URL.Path) == nil {
		e.t.Fatalf("no consent form after signing in: %s", pg.Text())
	}
	return p, pg
}

// TestIdenticalPublicRegistrationsShareAClient: P-DCR-6. Confidential
// clients are never shared: each has its own secret.
func TestIdenticalPublicRegistrationsShareAClient(t *testing.T) {
	e := newEnv(t)
	a, _ := e.Register(deviceClientJSON)
	b, _ := e.Register(deviceClientJSON)
	c, _ := e.Register(otherClientJSON)
	if a != b || a == c {
		t.Errorf("client ids %s %s %s: want the first two equal, the third different", a, b, c)
	}
	conf := `{"client_uri":"https://bot.example.org/","token_endpoint_auth_method":"client_secret_basic","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`
	x, sx := e.Register(conf)
	y, sy := e.Register(conf)
	if x == y || sx == sy {
		t.Error("two confidential registrations share a client")
	}
}
