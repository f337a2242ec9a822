package devicegrant_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// readmeLegacyRoute is the path pattern the README's nginx and Caddy
// snippets send to devicegrantd, read from the README so that the tests
// route as an operator following it would.
func readmeLegacyRoute(t *testing.T) *regexp.Regexp {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var nginx, caddy string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "@legacy path_regexp "); ok {
			caddy = rest
		}
		if rest, ok := strings.CutPrefix(l, "location ~ "); ok && strings.Contains(rest, "(login|") {
			nginx = strings.TrimSuffix(rest, " {")
		}
	}
	if nginx == "" || nginx != caddy {
		t.Fatalf("README: the nginx (%q) and Caddy (%q) legacy routes differ or are missing", nginx, caddy)
	}
	return regexp.MustCompile(nginx)
}

// TestREADMELegacyRoute (P-LEG-5): the README's route sends every legacy path here
// and nothing else of the client-server API.
func TestREADMELegacyRoute(t *testing.T) {
	re := readmeLegacyRoute(t)
	for _, p := range []string{"login", "login/sso/redirect", "refresh", "logout", "logout/all"} {
		for _, v := range []string{"v3", "r0"} {
			if path := "/_matrix/client/" + v + "/" + p; !re.MatchString(path) {
				t.Errorf("%s is not routed to devicegrantd", path)
			}
		}
	}
	for _, path := range []string{"/_matrix/client/v3/sync", "/_matrix/client/v3/register", "/_matrix/client/v3/loginx",
		"/_matrix/client/v3/account/whoami", "/_matrix/client/v1/auth_metadata", "/_matrix/client/v3/logouts"} {
		if re.MatchString(path) {
			t.Errorf("%s is routed to devicegrantd", path)
		}
	}
}

// legacyProxy is the operator's reverse proxy, set up as the README says:
// the legacy login paths go to devicegrantd, everything else to the
// homeserver.
func legacyProxy(t *testing.T, authURL, homeserverURL string) string {
	t.Helper()
	route := readmeLegacyRoute(t)
	auth, _ := url.Parse(authURL)
	hs, _ := url.Parse(homeserverURL)
	toAuth, toHS := httputil.NewSingleHostReverseProxy(auth), httputil.NewSingleHostReverseProxy(hs)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route.MatchString(r.URL.Path) {
			toAuth.ServeHTTP(w, r)
			return
		}
		toHS.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestLegacyMautrixPasswordLogin (P-LEG-1, P-LEG-2, P-LEG-4): an unmodified
// third-party Matrix client library (mautrix-go) logs in with a password
// through the legacy API; the
// device exists on the homeserver before the login answers (P-HS-3), the
// token works there, introspects with its device and the Matrix API
// scope, refreshes with the legacy semantics (P-RT-2) and logs out, which
// deletes the device.
func TestLegacyMautrixPasswordLogin(t *testing.T) {
	e := newSynapseEnv(t)
	eventually(t, "alice is provisioned", func() bool { _, ok := e.hs.Users()[testUser]; return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := mautrix.NewClient(legacyProxy(t, e.URL, e.hs.URL()), "", "")
	if err != nil {
		t.Fatal(err)
	}

	flows, err := cli.GetLoginFlows(ctx)
	if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) || !flows.HasFlow(mautrix.AuthTypeToken) || !flows.HasFlow("m.login.sso") {
		t.Fatalf("login flows: %+v, %v", flows, err)
	}

	// A bot as most are written: password login, a long-lived token.
	resp, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: testUser},
		Password:                 testPassword,
		InitialDeviceDisplayName: "Weather bot",
		StoreCredentials:         true,
	})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	dev := resp.DeviceID.String()
	if resp.UserID.String() != "@alice:"+e.hs.ServerName() || len(dev) != 10 {
		t.Fatalf("login answer: %+v", resp)
	}
	// Provisioned before the answer: no waiting here.
	if !slices.Contains(e.hs.Devices(testUser), dev) {
		t.Fatalf("login answered before the device existed; devices: %v", e.hs.Devices(testUser))
	}
	if name, _ := e.hs.DeviceDisplayName(testUser, dev); name != "Weather bot" {
		t.Errorf("device display name on the homeserver: %q", name)
	}
	who, err := cli.Whoami(ctx)
	if err != nil || who.UserID != resp.UserID || who.DeviceID != resp.DeviceID {
		t.Fatalf("whoami through the homeserver: %+v, %v", who, err)
	}
	in := e.Introspect(resp.AccessToken)
	if in["active"] != true || in["device_id"] != dev || !strings.Contains(in["scope"].(string), apiScope) ||
		in["username"] != testUser || in["client_id"] != "matrix-legacy-login" {
		t.Errorf("introspection: %v", in)
	}

	// The same device logs in again asking for a refresh token. mautrix
	// v0.22's Login drops refresh_token from the answer, so this goes
	// through the library's own request machinery with its own ReqLogin.
	var withRefresh struct {
		mautrix.RespLogin
		RefreshToken string `json:"refresh_token"`
		ExpiresInMS  int64  `json:"expires_in_ms"`
	}
	_, err = cli.MakeRequest(ctx, http.MethodPost, cli.BuildClientURL("v3", "login"), &mautrix.ReqLogin{
		Type:         mautrix.AuthTypePassword,
		Identifier:   mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "@alice:" + e.hs.ServerName()},
		Password:     testPassword,
		DeviceID:     resp.DeviceID,
		RefreshToken: true,
	}, &withRefresh)
	if err != nil || withRefresh.DeviceID != resp.DeviceID || withRefresh.RefreshToken == "" || withRefresh.ExpiresInMS != 5*60*1000 {
		t.Fatalf("login with refresh_token: %+v, %v", withRefresh, err)
	}
	e.hs.FlushCache() // the homeserver caches introspection answers
	if _, err := cli.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("the replaced session's token: %v, want M_UNKNOWN_TOKEN", err)
	}
	if !slices.Contains(e.hs.Devices(testUser), dev) {
		t.Errorf("logging in again on the device deleted it: %v", e.hs.Devices(testUser))
	}
	cli.AccessToken = withRefresh.AccessToken

	// Refresh with the library's own request machinery (mautrix has no
	// helper for it). A lost answer can be retried with the old refresh
	// token while the new pair is unused.
	var r1, r2 struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresInMS  int64  `json:"expires_in_ms"`
	}
	refreshURL := cli.BuildClientURL("v3", "refresh")
	if _, err := cli.MakeRequest(ctx, http.MethodPost, refreshURL, map[string]string{"refresh_token": withRefresh.RefreshToken}, &r1); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if _, err := cli.MakeRequest(ctx, http.MethodPost, refreshURL, map[string]string{"refresh_token": withRefresh.RefreshToken}, &r2); err != nil {
		t.Fatalf("refresh retried with the old token before the new pair was used: %v", err)
	}
	if r2.AccessToken == "" || r2.RefreshToken == "" || r2.ExpiresInMS != 5*60*1000 || r2.AccessToken == r1.AccessToken {
		t.Fatalf("refresh answer: %+v", r2)
	}
	if in := e.Introspect(r1.AccessToken); in["active"] != false {
		t.Errorf("the pair replaced by the retry still works: %v", in)
	}
	cli.AccessToken = r2.AccessToken
	if who, err := cli.Whoami(ctx); err != nil || who.DeviceID != resp.DeviceID {
		t.Fatalf("whoami with the refreshed token: %+v, %v", who, err)
	}
	if _, err := cli.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
	eventually(t, "the device is deleted", func() bool { return !slices.Contains(e.hs.Devices(testUser), dev) })
	e.hs.FlushCache()
	if _, err := cli.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("whoami after logout: %v, want M_UNKNOWN_TOKEN", err)
	}
}

// legacyLogin posts a JSON login body and returns the answer.
func (e *env) legacyLogin(body string) (int, map[string]any) {
	e.t.Helper()
	return e.PostJSON("_matrix/client/v3/login", body)
}

func passwordLogin(extra string) string {
	return `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"` + testPassword + `"` + extra + `}`
}

// countRows counts the rows of a table in the server's database.
func (e *env) countRows(table string) int {
	e.t.Helper()
	db, err := sql.Open("sqlite3", "file:"+e.sqliteFile()+"?mode=ro")
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestLegacyLoginBadInput (P-LEG-1): each mistake gets a clear Matrix error with
// the spec's status and code, and creates nothing.
func TestLegacyLoginBadInput(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, contentType, body string
		status                  int
		code                    string
	}{
		{"form instead of JSON", "application/x-www-form-urlencoded", "type=m.login.password&user=alice&password=x", 400, "M_NOT_JSON"},
		{"multipart instead of JSON", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nm.login.password\r\n--x--\r\n", 400, "M_NOT_JSON"},
		{"not JSON", "application/json", "{type: m.login.password", 400, "M_NOT_JSON"},
		{"array", "application/json", "[]", 400, "M_BAD_JSON"},
		{"wrong field type", "application/json", `{"type":"m.login.password","password":7}`, 400, "M_BAD_JSON"},
		{"no type", "application/json", `{"password":"x"}`, 400, "M_MISSING_PARAM"},
		{"unknown login type", "application/json", `{"type":"m.login.dummy"}`, 400, "M_UNKNOWN"},
		{"no user", "application/json", `{"type":"m.login.password","password":"x"}`, 400, "M_MISSING_PARAM"},
		{"no password", "application/json", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}}`, 400, "M_MISSING_PARAM"},
		{"third-party identifier", "application/json", `{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"a@example.org"},"password":"x"}`, 400, "M_UNKNOWN"},
		{"no token", "application/json", `{"type":"m.login.token"}`, 400, "M_MISSING_PARAM"},
		{"device_id with a space", "application/json", passwordLogin(`,"device_id":"MY DEVICE 01"`), 400, "M_INVALID_PARAM"},
		{"device_id with a non-ASCII letter", "application/json", passwordLogin(`,"device_id":"DEVICEÄÖÜ01"`), 400, "M_INVALID_PARAM"},
		{"device_id too short", "application/json", passwordLogin(`,"device_id":"SHORT"`), 400, "M_INVALID_PARAM"},
		{"display name too long", "application/json", passwordLogin(`,"initial_device_display_name":"` + strings.Repeat("x", 101) + `"`), 400, "M_INVALID_PARAM"},
		// JSON may carry a NUL (\u0000); PostgreSQL text cannot, and a
		// correct password then got a 500 there.
		{"display name with NUL", "application/json", passwordLogin(`,"initial_device_display_name":"Weather\u0000bot"`), 400, "M_INVALID_PARAM"},
		{"wrong password", "application/json", `{"type":"m.login.password","user":"alice","password":"wrong"}`, 403, "M_FORBIDDEN"},
		{"unknown user", "application/json", `{"type":"m.login.password","user":"@mallory:example.org","password":"x"}`, 403, "M_FORBIDDEN"},
		{"user of another server", "application/json", `{"type":"m.login.password","user":"@alice:elsewhere.example","password":"` + testPassword + `"}`, 403, "M_FORBIDDEN"},
		{"made-up login token", "application/json", `{"type":"m.login.token","token":"dgl_notatoken"}`, 403, "M_FORBIDDEN"},
		{"access token as login token", "application/json", `{"type":"m.login.token","token":"dga_0123456789abcdefghijABCDEFGHIJ_000000"}`, 403, "M_FORBIDDEN"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodPost, e.URL+"_matrix/client/v3/login", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.contentType)
		status, m := do(t, req)
		if status != tc.status || m["errcode"] != tc.code || m["error"] == "" {
			t.Errorf("%s: %d %v, want %d %s", tc.name, status, m, tc.status, tc.code)
		}
	}
	if n := e.countRows("sessions"); n != 0 {
		t.Errorf("%d sessions after bad logins, want none", n)
	}
	if n := e.countRows("clients"); n != 0 {
		t.Errorf("%d clients after bad logins, want none", n)
	}

	// The spec does not require a Content-Type: a JSON body without one
	// is a login, and so is one sent as `curl -d '{…}'` does (form type),
	// which Synapse accepted.
	req, _ := http.NewRequest(http.MethodPost, e.URL+"_matrix/client/r0/login", strings.NewReader(passwordLogin("")))
	if status, m := do(t, req); status != 200 || m["access_token"] == nil {
		t.Errorf("login without Content-Type on the r0 alias: %d %v", status, m)
	}
	req, _ = http.NewRequest(http.MethodPost, e.URL+"_matrix/client/v3/login", strings.NewReader(passwordLogin("")))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if status, m := do(t, req); status != 200 || m["access_token"] == nil {
		t.Errorf("a JSON login sent with curl's form type: %d %v", status, m)
	}
	// Refresh and logout speak the same format.
	if status, m := e.PostJSON("_matrix/client/v3/refresh", `{"refresh_token":"dgr_unknown"}`); status != 401 || m["errcode"] != "M_UNKNOWN_TOKEN" || m["soft_logout"] != false {
		t.Errorf("unknown refresh token: %d %v", status, m)
	}
	if status, m := e.PostJSON("_matrix/client/v3/refresh", `{}`); status != 400 || m["errcode"] != "M_MISSING_PARAM" {
		t.Errorf("refresh without a token: %d %v", status, m)
	}
	if status, m := e.PostJSON("_matrix/client/v3/logout", `{}`); status != 401 || m["errcode"] != "M_MISSING_TOKEN" {
		t.Errorf("logout without a token: %d %v", status, m)
	}
	if status, m := e.Get("_matrix/client/v3/login/get_token"); status != 404 || m["errcode"] != "M_UNRECOGNIZED" {
		t.Errorf("a legacy path not served: %d %v", status, m)
	}
}

// TestLegacyLoginSessions (P-LEG-2, P-LEG-4, P-LEG-5): a password login without refresh_token gets a
// long-lived access token; a re-login with the same device_id replaces
// the session of that device (P-SCOPE-4); the account page marks legacy
// logins and shows the device name; logout/all ends every session; a
// deactivated account gets M_USER_DEACTIVATED and its sessions end.
func TestLegacyLoginSessions(t *testing.T) {
	e := newEnv(t, withClock())
	status, first := e.legacyLogin(passwordLogin(`,"device_id":"BOTDEVICE01","initial_device_display_name":"Weather bot"`))
	if status != 200 || first["device_id"] != "BOTDEVICE01" || first["refresh_token"] != nil || first["expires_in_ms"] != nil {
		t.Fatalf("login: %d %v", status, first)
	}
	tok := first["access_token"].(string)
	e.Clock.Advance(30 * 24 * time.Hour)
	if in := e.Introspect(tok); in["active"] != true || in["device_id"] != "BOTDEVICE01" {
		t.Fatalf("a legacy token without refresh, a month later: %v", in)
	}

	p, pg := signedInPhone(t, e, "account")
	if txt := pg.Text(); !strings.Contains(txt, "Weather bot legacy login") || !strings.Contains(txt, "BOTDEVICE01") {
		t.Errorf("account page: %s", txt)
	}
	pg = p.Get(e.URL + "account?action=org.matrix.session_view&device_id=BOTDEVICE01")
	if !strings.Contains(pg.Text(), "Signed in with legacy login") || !strings.Contains(pg.Text(), "Device name Weather bot") {
		t.Errorf("session page: %s", pg.Text())
	}

	// The same device again: the earlier session ends, the name stays.
	status, second := e.legacyLogin(passwordLogin(`,"device_id":"BOTDEVICE01","initial_device_display_name":"Renamed","refresh_token":true`))
	if status != 200 || second["refresh_token"] == nil {
		t.Fatalf("second login: %d %v", status, second)
	}
	if in := e.Introspect(tok); in["active"] != false {
		t.Errorf("the replaced session's token still works: %v", in)
	}
	if pg := p.Get(e.URL + "account"); strings.Contains(pg.Text(), "Renamed") || !strings.Contains(pg.Text(), "Weather bot") {
		t.Errorf("initial_device_display_name of a known device should be ignored: %s", pg.Text())
	}

	// The built-in client runs no OAuth flow: not at the token endpoint,
	// not at the device endpoint.
	if status, m := e.refresh("matrix-legacy-login", second["refresh_token"].(string)); status != 400 || m["error"] != "unauthorized_client" {
		t.Errorf("a legacy refresh token at the token endpoint: %d %v", status, m)
	}
	form := url.Values{"client_id": {"matrix-legacy-login"}, "scope": {apiScope + " urn:matrix:client:device:PHISHDEVICE"}}
	if status, m := e.Post("oauth2/device", form); status == 200 || m["error"] != "unauthorized_client" {
		t.Errorf("a device authorization as the legacy client: %d %v", status, m)
	}

	// Refresh: the old refresh token works until the new pair is used;
	// presented after that, it is reuse (P-RT-2) and ends the session.
	refresh := func(rt string) (int, map[string]any) {
		return e.PostJSON("_matrix/client/v3/refresh", `{"refresh_token":"`+rt+`"}`)
	}
	status, r1 := refresh(second["refresh_token"].(string))
	if status != 200 || r1["expires_in_ms"] != float64(5*60*1000) {
		t.Fatalf("refresh: %d %v", status, r1)
	}
	if in := e.Introspect(r1["access_token"].(string)); in["active"] != true {
		t.Fatalf("refreshed token: %v", in)
	}
	if status, m := refresh(second["refresh_token"].(string)); status != 401 || m["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Errorf("old refresh token after the new pair was used: %d %v", status, m)
	}
	if in := e.Introspect(r1["access_token"].(string)); in["active"] != false {
		t.Errorf("the session survived a reused refresh token: %v", in)
	}
	status, second = e.legacyLogin(passwordLogin(`,"device_id":"BOTDEVICE01"`))
	if status != 200 {
		t.Fatalf("login after the reuse: %d %v", status, second)
	}

	// logout/all ends an OAuth session of the same person too.
	clientID, _ := e.Register(deviceClientJSON)
	oauthTok := e.signIn(clientID, "OAUTHDEVICE1")["access_token"].(string)
	req, _ := http.NewRequest(http.MethodPost, e.URL+"_matrix/client/v3/logout/all", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+second["access_token"].(string))
	if status, m := do(t, req); status != 200 || len(m) != 0 {
		t.Fatalf("logout/all: %d %v", status, m)
	}
	for _, tk := range []string{second["access_token"].(string), oauthTok} {
		if in := e.Introspect(tk); in["active"] != false {
			t.Errorf("after logout/all a token is active: %v", in)
		}
	}
	if status, m := do(t, req); status != 401 || m["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Errorf("logout/all with an ended session: %d %v", status, m)
	}

	// Deactivation ends legacy sessions; the right password then says so.
	_, third := e.legacyLogin(passwordLogin(""))
	u, err := e.Store.UserByUsername(context.Background(), testUser)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Server.Server.DeactivateUser(context.Background(), u.ID); err != nil {
		t.Fatal(err)
	}
	if in := e.Introspect(third["access_token"].(string)); in["active"] != false {
		t.Errorf("a legacy session outlived deactivation: %v", in)
	}
	if status, m := e.legacyLogin(passwordLogin("")); status != 403 || m["errcode"] != "M_USER_DEACTIVATED" {
		t.Errorf("deactivated account: %d %v", status, m)
	}
}

// TestLegacyPasswordSharesSignInLimits (P-LEG-1): wrong passwords at the legacy
// endpoint and on the sign-in page spend one budget per address, and the
// answer is M_LIMIT_EXCEEDED with retry_after_ms.
func TestLegacyPasswordSharesSignInLimits(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.LoginFailures = devicegrant.RateLimit{Burst: 3, Every: time.Hour}
	}))
	p := newPhone(t)
	pg := p.Get(e.URL + "account")
	for i := 0; i < 2; i++ {
		if got := p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {"wrong"}}); got.Status != http.StatusUnauthorized {
			t.Fatalf("web sign-in %d: %d", i, got.Status)
		}
	}
	if status, m := e.legacyLogin(`{"type":"m.login.password","user":"alice","password":"wrong"}`); status != 403 {
		t.Fatalf("third wrong password, at the legacy endpoint: %d %v", status, m)
	}
	status, m := e.legacyLogin(passwordLogin(""))
	if status != http.StatusTooManyRequests || m["errcode"] != "M_LIMIT_EXCEEDED" || m["retry_after_ms"].(float64) < 1000 {
		t.Errorf("right password with the budget spent: %d %v", status, m)
	}
	if got := p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}}); got.Status != http.StatusTooManyRequests {
		t.Errorf("web sign-in after the legacy endpoint spent the budget: %d", got.Status)
	}
}

// TestLegacyPasswordSharesAccountBudget (P-LEG-1): the per-account budget holds at
// the legacy endpoint however many addresses the passwords come from.
func TestLegacyPasswordSharesAccountBudget(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.AccountLoginFailures = devicegrant.RateLimit{Burst: 3, Every: time.Hour}
		c.TrustedProxies = []string{"127.0.0.1"}
	}))
	var got []int
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest(http.MethodPost, e.URL+"_matrix/client/v3/login", strings.NewReader(`{"type":"m.login.password","user":"alice","password":"wrong"}`))
		req.Header.Set("X-Forwarded-For", "198.51.100."+string(rune('1'+i)))
		status, _ := do(t, req)
		got = append(got, status)
	}
	if want := []int{403, 403, 403, 429, 429}; !equalInts(got, want) {
		t.Errorf("wrong passwords for one account from five addresses: %v, want %v", got, want)
	}
}

// ssoApp is an app's redirect target: it records the loginToken the
// browser brings back.
func ssoApp(t *testing.T) (appURL string, tokens chan string) {
	tokens = make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("keep") != "me" {
			t.Errorf("the app's own query was lost: %s", r.URL)
		}
		tokens <- r.URL.Query().Get("loginToken")
		w.Write([]byte("<p>signed in</p>"))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/cb?keep=me", tokens
}

// TestLegacySSO (P-LEG-3): the SSO redirect dance without a browser engine (the
// browser tests in e2e/ do it in Chromium): sign in, a confirmation page
// naming the app's host, a loginToken back, exchanged once; a second
// exchange is refused and ends the session the first one started.
func TestLegacySSO(t *testing.T) {
	e := newEnv(t)
	app, tokens := ssoApp(t)
	p := newPhone(t)
	pg := p.Get(e.URL + "_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(app))
	pg = p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	host := strings.TrimPrefix(strings.Split(app, "/cb")[0], "http://")
	if txt := pg.Text(); !strings.Contains(txt, "Sign in to "+host+"?") || !strings.Contains(txt, "@alice:example.org") {
		t.Fatalf("confirmation page: %d %s", pg.Status, txt)
	}
	// Cancel shares nothing.
	if got := p.Submit(pg, "/legacy/sso", url.Values{"action": {"deny"}}); !strings.Contains(got.Text(), "Nothing was shared") {
		t.Errorf("cancel: %s", got.Text())
	}
	if len(tokens) != 0 {
		t.Fatal("a token went to the app after Cancel")
	}
	p.Submit(pg, "/legacy/sso", url.Values{"action": {"approve"}})
	tok := <-tokens
	if !strings.HasPrefix(tok, "dgl_") {
		t.Fatalf("loginToken %q", tok)
	}
	login := `{"type":"m.login.token","token":"` + tok + `","initial_device_display_name":"Old app"}`
	status, m := e.legacyLogin(login)
	if status != 200 || m["user_id"] != "@alice:example.org" {
		t.Fatalf("token login: %d %v", status, m)
	}
	if in := e.Introspect(m["access_token"].(string)); in["active"] != true || in["device_id"] != m["device_id"] {
		t.Fatalf("introspection: %v", in)
	}
	sessions := e.countRows("sessions")
	status, again := e.legacyLogin(login)
	if status != 403 || again["errcode"] != "M_FORBIDDEN" || !strings.Contains(again["error"].(string), "already used") {
		t.Errorf("second exchange: %d %v", status, again)
	}
	if n := e.countRows("sessions"); n != sessions {
		t.Errorf("the replay created a session: %d, was %d", n, sessions)
	}
	if in := e.Introspect(m["access_token"].(string)); in["active"] != false {
		t.Errorf("after a replay the first session still works: %v", in)
	}

	// Addresses that cannot take a sign-in back are refused up front.
	for _, bad := range []string{"", "javascript:alert(1)", "/relative", "https://user:pw@app.example/", "data:text/html,x"} {
		status, m := e.Get("_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(bad))
		if status != 400 || (m["errcode"] != "M_INVALID_PARAM" && m["errcode"] != "M_MISSING_PARAM") {
			t.Errorf("redirectUrl %q: %d %v", bad, status, m)
		}
	}
}

// TestLegacyLoginSettings (P-LEG-5): the settings turn password login, or the whole
// legacy API, off; the login flows and the metadata say what is on.
func TestLegacyLoginSettings(t *testing.T) {
	metaFlows := func(e *env) []any {
		_, m := e.Get(".well-known/openid-configuration")
		f, _ := m["io.github.devicegrant.legacy_login_flows"].([]any)
		return f
	}
	on := newEnv(t)
	if f := metaFlows(on); len(f) != 3 {
		t.Errorf("metadata with everything on: %v", f)
	}

	noPw := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) { c.LegacyLogin.PasswordDisabled = true }))
	_, m := noPw.Get("_matrix/client/v3/login")
	b, _ := json.Marshal(m)
	if string(b) != `{"flows":[{"type":"m.login.sso"},{"type":"m.login.token"}]}` {
		t.Errorf("flows without password login: %s", b)
	}
	if f := metaFlows(noPw); len(f) != 2 || slices.Contains(f, any("m.login.password")) {
		t.Errorf("metadata without password login: %v", f)
	}
	if status, m := noPw.legacyLogin(passwordLogin("")); status != 400 || m["errcode"] != "M_UNKNOWN" {
		t.Errorf("password login while off: %d %v", status, m)
	}

	off := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) { c.LegacyLogin.Disabled = true }))
	if f := metaFlows(off); f != nil {
		t.Errorf("metadata with the legacy API off: %v", f)
	}
	for _, path := range []string{"_matrix/client/v3/login", "_matrix/client/r0/login", "_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example%2F"} {
		if status, m := off.Get(path); status != 404 || m["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("GET %s while off: %d %v", path, status, m)
		}
	}
	if status, m := off.legacyLogin(passwordLogin("")); status != 404 || m["errcode"] != "M_UNRECOGNIZED" {
		t.Errorf("POST login while off: %d %v", status, m)
	}
}

// TestLegacyLoginHomeserverDown (P-LEG-2, P-HS-3): while the homeserver cannot create the
// device, the login answers 503 after LegacyLogin.DeviceWait and ends the
// session it started, so no token nobody received lingers; once the
// homeserver is back the device is created and deleted again, in order.
func TestLegacyLoginHomeserverDown(t *testing.T) {
	e := newSynapseEnv(t, devtest.WithConfig(func(c *devicegrant.Config) { c.LegacyLogin.DeviceWait = 300 * time.Millisecond }))
	eventually(t, "alice is provisioned", func() bool { _, ok := e.hs.Users()[testUser]; return ok })
	e.hs.Down()
	status, m := e.legacyLogin(passwordLogin(`,"device_id":"DOWNDEVICE1"`))
	if status != http.StatusServiceUnavailable || m["errcode"] != "M_UNKNOWN" || m["retry_after_ms"] == nil {
		t.Fatalf("login while the homeserver is down: %d %v", status, m)
	}
	u, err := e.Store.UserByUsername(context.Background(), testUser)
	if err != nil {
		t.Fatal(err)
	}
	if live, _ := e.Store.SessionsByUser(context.Background(), u.ID, false); len(live) != 0 {
		t.Errorf("a session outlived the failed login: %+v", live)
	}
	e.hs.Up()
	eventually(t, "the abandoned device is deleted", func() bool {
		return len(calls(e.hs, "delete_device")) == 1 && !slices.Contains(e.hs.Devices(testUser), "DOWNDEVICE1")
	})
	if up := calls(e.hs, "upsert_device"); len(up) != 1 || up[0]["device_id"] != "DOWNDEVICE1" {
		t.Errorf("upsert_device calls: %v", up)
	}
}

// TestLegacyBotMovesToDeviceGrant (P-LEG-2): the README's way off password login. A
// bot logged in with a password pairs again by device grant with its own
// device id: the consent page says the legacy login on that device is
// replaced, the password session ends, and the Matrix device (with the
// bot's encryption keys) is never deleted (P-SCOPE-4).
func TestLegacyBotMovesToDeviceGrant(t *testing.T) {
	e := newSynapseEnv(t)
	eventually(t, "alice is provisioned", func() bool { _, ok := e.hs.Users()[testUser]; return ok })
	status, old := e.legacyLogin(passwordLogin(`,"device_id":"MOVINGBOT01"`))
	if status != 200 {
		t.Fatalf("legacy login: %d %v", status, old)
	}
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "MOVINGBOT01")
	p := newPhone(t)
	pg := p.Get(da["verification_uri_complete"].(string))
	pg = p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	if txt := pg.Text(); !strings.Contains(txt, "Approving signs out Legacy Matrix login, signed in as the device MOVINGBOT01") {
		t.Fatalf("consent page: %s", txt)
	}
	p.Submit(pg, pg.URL.Path, url.Values{"action": {"approve"}, "confirm": {"yes"}})
	tok := e.pollUntilTokens(clientID, da["device_code"].(string))
	if in := e.Introspect(old["access_token"].(string)); in["active"] != false {
		t.Errorf("the password session outlived the pairing: %v", in)
	}
	if status, who := e.whoami(tok["access_token"].(string)); status != 200 || who["device_id"] != "MOVINGBOT01" {
		t.Errorf("whoami with the paired token: %d %v", status, who)
	}
	if d := calls(e.hs, "delete_device"); len(d) != 0 {
		t.Errorf("moving the bot deleted its device: %v", d)
	}
}
