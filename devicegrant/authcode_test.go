package devicegrant_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

const appClientJSON = `{
	"client_name": "Matrix app",
	"client_uri": "https://app.example.org/",
	"application_type": "native",
	"token_endpoint_auth_method": "none",
	"redirect_uris": ["http://127.0.0.1/callback"],
	"grant_types": ["authorization_code", "refresh_token"]
}`

// app is a Matrix client with a browser: x/oauth2 with PKCE, a loopback
// redirect (RFC 8252 §7.3: registered without a port, used with one).
type app struct {
	e        *env
	conf     *oauth2.Config
	verifier string
	phone    *devtest.Phone
	callback string // http://127.0.0.1:PORT/callback
}

func newApp(e *env, clientID string, scopes ...string) *app {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ln.Close() // only the port is needed: the phone stops at the redirect
	cb := "http://" + ln.Addr().String() + "/callback"
	if len(scopes) == 0 {
		scopes = []string{"openid", apiScope, "urn:matrix:client:device:APPDEVICE01"}
	}
	a := &app{e: e, verifier: oauth2.GenerateVerifier(), phone: newPhone(e.t), callback: cb}
	a.conf = &oauth2.Config{ClientID: clientID, RedirectURL: cb, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: e.URL + "oauth2/authorize", TokenURL: e.URL + "oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
	// The phone follows redirects within the server, and stops at the one
	// that leaves for the app, as a browser hands a loopback URL to it.
	host := ln.Addr().String()
	a.phone.Client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Host == host {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return a
}

// authorize walks the browser part and returns where the server sent the
// browser back to.
func (a *app) authorize(opts ...oauth2.AuthCodeOption) *url.URL {
	a.e.t.Helper()
	opts = append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(a.verifier)}, opts...)
	pg := a.phone.Get(a.conf.AuthCodeURL("state-ü 1", opts...))
	if pg.Form("/login") != nil {
		pg = a.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	}
	if pg.Form("/oauth2/authorize") != nil {
		pg = a.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})
	}
	return a.back(a.waitForDevice(pg))
}

// waitForDevice follows the page that waits for the homeserver to create
// the device, as the browser does when it refreshes itself.
func (a *app) waitForDevice(pg *devtest.Page) *devtest.Page {
	a.e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); pg.Status == http.StatusOK && strings.Contains(pg.Body, `http-equiv="refresh"`); {
		if time.Now().After(deadline) {
			a.e.t.Fatal("the device was never created")
		}
		time.Sleep(100 * time.Millisecond)
		pg = a.phone.Get(pg.URL.String())
	}
	return pg
}

// backOnceUp reloads waiting, the page that waits for a homeserver that
// was down, until the browser is sent back to the app, and returns where.
func (a *app) backOnceUp(waiting string) *url.URL {
	a.e.t.Helper()
	var back *url.URL
	eventually(a.e.t, "the browser is sent back with a code", func() bool {
		pg := a.phone.Get(waiting)
		if pg.Status == http.StatusSeeOther {
			back = a.back(pg)
			return true
		}
		return false
	})
	return back
}

func (a *app) back(pg *devtest.Page) *url.URL {
	a.e.t.Helper()
	loc := pg.Header.Get("Location")
	if pg.Status != http.StatusSeeOther || !strings.HasPrefix(loc, a.callback) {
		a.e.t.Fatalf("expected a redirect to the app, got %d %q: %s", pg.Status, loc, pg.Text())
	}
	u, err := url.Parse(loc)
	if err != nil {
		a.e.t.Fatal(err)
	}
	return u
}

// TestAuthCodeFlow: P-AC-1, P-AC-3, P-AC-4, P-OIDC-1, RFC 9207.
func TestAuthCodeFlow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e, clientID)

	back := a.authorize(oauth2.SetAuthURLParam("nonce", "n-0S6_WzA2Mj"))
	q := back.Query()
	if q.Get("state") != "state-ü 1" || q.Get("iss") != e.URL || q.Get("code") == "" {
		t.Fatalf("redirect back: %s", back)
	}
	tok, err := a.conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	info := e.Introspect(tok.AccessToken)
	if info["active"] != true || info["device_id"] != "APPDEVICE01" || info["username"] != testUser {
		t.Errorf("introspection: %v", info)
	}

	// The id_token verifies against the published keys, with the claims
	// OpenID Connect asks for.
	raw, _ := tok.Extra("id_token").(string)
	claims := verifyIDToken(t, e, raw)
	sum := sha256.Sum256([]byte(tok.AccessToken))
	for k, want := range map[string]any{
		"iss": e.URL, "aud": clientID, "nonce": "n-0S6_WzA2Mj",
		"at_hash": base64.RawURLEncoding.EncodeToString(sum[:16]), "sub": info["sub"],
	} {
		if claims[k] != want {
			t.Errorf("id_token %s = %v, want %v", k, claims[k], want)
		}
	}
	if at, _ := claims["auth_time"].(float64); at == 0 || time.Since(time.Unix(int64(at), 0)) > time.Minute {
		t.Errorf("id_token auth_time = %v", claims["auth_time"])
	}

	// userinfo, with the access token.
	req, _ := http.NewRequest("GET", e.URL+"oauth2/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	if status, m := do(t, req); status != 200 || m["sub"] != info["sub"] {
		t.Errorf("userinfo: %d %v", status, m)
	}

	// The refresh token works like the device grant's.
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	if _, err := a.conf.TokenSource(ctx, &stale).Token(); err != nil {
		t.Errorf("refresh: %v", err)
	}
}

func verifyIDToken(t *testing.T, e *env, raw string) map[string]any {
	t.Helper()
	if raw == "" {
		t.Fatal("no id_token")
	}
	var set jose.JSONWebKeySet
	resp, err := http.Get(e.URL + "oauth2/keys.json")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("id_token: %v", err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("id_token kid %q not in the JWKS (%d keys)", tok.Headers[0].KeyID, len(set.Keys))
	}
	var claims map[string]any
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("id_token signature: %v", err)
	}
	return claims
}

// TestAuthCodeFragmentMode: response_mode=fragment puts the answer, with
// the state unchanged, in the fragment (P-AC-1).
func TestAuthCodeFragmentMode(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e, clientID)
	back := a.authorize(oauth2.SetAuthURLParam("response_mode", "fragment"))
	if back.RawQuery != "" {
		t.Errorf("fragment mode put something in the query: %s", back)
	}
	f, err := url.ParseQuery(back.Fragment)
	if err != nil || f.Get("code") == "" || f.Get("state") != "state-ü 1" || f.Get("iss") != e.URL {
		t.Fatalf("fragment %q: %v", back.Fragment, err)
	}
	if _, err := a.conf.Exchange(context.Background(), f.Get("code"), oauth2.VerifierOption(a.verifier)); err != nil {
		t.Errorf("Exchange: %v", err)
	}
}

// TestAuthCodeErrors: before the redirect URI is known good, errors are a
// page; after, a redirect with error and state (P-AC-2).
func TestAuthCodeErrors(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e, clientID)
	good := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {a.callback},
		"scope": {apiScope + " urn:matrix:client:device:APPDEVICE01"}, "state": {"xyz"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(a.verifier)},
		"code_challenge_method": {"S256"}}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = vv
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	for name, q := range map[string]url.Values{
		"unknown client":        with("client_id", "nope"),
		"no client":             with("client_id", ""),
		"unregistered redirect": with("redirect_uri", "http://127.0.0.1:9/elsewhere"),
		"https loopback":        with("redirect_uri", "https://127.0.0.1/callback"),
		"no redirect":           with("redirect_uri", ""),
		"repeated scope":        func() url.Values { q := with("state", "xyz"); q["scope"] = []string{apiScope, "openid"}; return q }(),
	} {
		pg := a.phone.Get(e.URL + "oauth2/authorize?" + q.Encode())
		if pg.Status != http.StatusBadRequest || pg.Header.Get("Location") != "" || !strings.Contains(pg.Text(), "Cannot continue") {
			t.Errorf("%s: %d, Location %q: %s", name, pg.Status, pg.Header.Get("Location"), pg.Text())
		}
	}
	errCases := map[string]struct {
		q    url.Values
		code string
	}{
		"no PKCE":        {with("code_challenge", ""), "invalid_request"},
		"plain PKCE":     {with("code_challenge_method", "plain"), "invalid_request"},
		"token response": {with("response_type", "token"), "unsupported_response_type"},
		"bad scope":      {with("scope", "admin"), "invalid_scope"},
		"P-SCOPE-2 api scope without a device scope": {with("scope", "openid "+apiScope), "invalid_scope"},
		"P-SCOPE-2 two device scopes":                {with("scope", apiScope+" urn:matrix:client:device:APPDEVICE01 urn:matrix:client:device:APPDEVICE02"), "invalid_scope"},
		"prompt=none":                                {with("prompt", "none"), "login_required"},
	}
	// A client nobody approved gets its errors on our page, with a link
	// (RFC 9700 §4.11.2; TestNoOpenRedirectThroughRegisteredClients).
	for name, tc := range errCases {
		pg := a.phone.Get(e.URL + "oauth2/authorize?" + tc.q.Encode())
		link := errorLink(t, pg)
		if pg.Status != http.StatusBadRequest || link.Query().Get("error") != tc.code || link.Query().Get("state") != "xyz" {
			t.Errorf("%s, untrusted client: %d, link %s, want error %s with state", name, pg.Status, link, tc.code)
		}
	}
	// A client the operator trusts gets them back at once.
	if err := e.Server.Server.TrustClient(t.Context(), clientID, true); err != nil {
		t.Fatal(err)
	}
	for name, tc := range errCases {
		pg := a.phone.Get(e.URL + "oauth2/authorize?" + tc.q.Encode())
		back := a.back(pg)
		if back.Query().Get("error") != tc.code || back.Query().Get("state") != "xyz" || back.Query().Get("error_description") == "" {
			t.Errorf("%s: back to %s, want error %s with state", name, back, tc.code)
		}
	}
	// Device-only clients cannot use this grant (P-DCR-7): they have no
	// redirect URI, so the person sees a page.
	devID, _ := e.Register(deviceClientJSON)
	pg := a.phone.Get(e.URL + "oauth2/authorize?" + with("client_id", devID).Encode())
	if pg.Status != http.StatusBadRequest {
		t.Errorf("device-only client: %d", pg.Status)
	}
}

// TestAuthCodeDenyAndExchangeErrors: Cancel goes back with access_denied;
// the exchange checks verifier and redirect URI; a replayed code revokes
// what it issued (P-AC-3).
func TestAuthCodeDenyAndExchangeErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	clientID, _ := e.Register(appClientJSON)

	deny := newApp(e, clientID)
	pg := deny.phone.Get(deny.conf.AuthCodeURL("s1", oauth2.S256ChallengeOption(deny.verifier)))
	pg = deny.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	back := deny.back(deny.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"deny"}}))
	if back.Query().Get("error") != "access_denied" || back.Query().Get("state") != "s1" {
		t.Errorf("deny: %s", back)
	}

	a := newApp(e, clientID)
	code := a.authorize().Query().Get("code")
	exchange := func(form url.Values) (int, map[string]any) {
		base := url.Values{"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {code},
			"redirect_uri": {a.callback}, "code_verifier": {a.verifier}}
		for k, v := range form {
			base[k] = v
		}
		return e.Post("oauth2/token", base)
	}
	status, m := exchange(url.Values{"code_verifier": {oauth2.GenerateVerifier()}})
	wantError(t, "wrong verifier", status, m, "invalid_grant")
	status, m = exchange(url.Values{"redirect_uri": {"http://127.0.0.1:1/callback"}})
	wantError(t, "other redirect_uri", status, m, "invalid_grant")
	status, m = exchange(url.Values{"code_verifier": nil})
	wantError(t, "no verifier", status, m, "invalid_request")

	tok, err := a.conf.Exchange(ctx, code, oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	_, err = a.conf.Exchange(ctx, code, oauth2.VerifierOption(a.verifier))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("replayed code: %v", err)
	}
	if active(e.Introspect(tok.AccessToken)) {
		t.Error("tokens issued with a replayed code are still active")
	}
}

// TestAuthCodeWithSynapse: the Matrix device exists before the app gets
// its code; while the homeserver is down the browser waits on a page that
// refreshes itself (P-HS-3).
func TestAuthCodeWithSynapse(t *testing.T) {
	e := newSynapseEnv(t)
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e.env, clientID)
	e.hs.Down()
	pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier)))
	pg = a.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	pg = a.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})
	if pg.Status != 200 || !strings.Contains(pg.Text(), "setting up the new device") || !strings.Contains(pg.Body, `http-equiv="refresh"`) {
		t.Fatalf("while the homeserver is down: %d %s", pg.Status, pg.Text())
	}
	waiting := pg.URL.String()
	e.hs.Up()
	back := a.backOnceUp(waiting)
	tok, err := a.conf.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	if status, who := e.whoami(tok.AccessToken); status != 200 || who["device_id"] != "APPDEVICE01" {
		t.Errorf("whoami: %d %v", status, who)
	}
}

// TestSelfRegistration: prompt=create with terms, then straight on to the
// app (P-ACCT-2, P-ACCT-3).
func TestSelfRegistration(t *testing.T) {
	e := newSynapseEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.Registration = devicegrant.Registration{Enabled: true, TermsURL: "https://example.org/terms-2026"}
	}))
	_, meta := do(t, mustRequest(t, "GET", e.URL+".well-known/openid-configuration"))
	if p, _ := meta["prompt_values_supported"].([]any); !contains(p, "create") {
		t.Errorf("prompt_values_supported = %v", meta["prompt_values_supported"])
	}
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e.env, clientID)
	pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier), oauth2.SetAuthURLParam("prompt", "create")))
	if pg.Form("/register") == nil {
		t.Fatalf("prompt=create: %s", pg.Text())
	}
	form := url.Values{"username": {"bob"}, "password": {"a long password"}, "repeat": {"a long password"}}
	if got := a.phone.Submit(pg, "/register", form); !strings.Contains(got.Text(), "Accept the terms") {
		t.Errorf("without the terms: %s", got.Text())
	}
	e.hs.AddUser(fakeUser("carol"))
	taken := url.Values{"username": {"carol"}, "password": {"a long password"}, "repeat": {"a long password"}, "terms": {"yes"}}
	if got := a.phone.Submit(pg, "/register", taken); got.Status != http.StatusConflict {
		t.Errorf("a name the homeserver knows: %d %s", got.Status, got.Text())
	}
	if got := a.phone.Submit(pg, "/register", url.Values{"username": {testUser}, "password": {"a long password"}, "repeat": {"a long password"}, "terms": {"yes"}}); got.Status != http.StatusConflict {
		t.Errorf("an existing username: %d", got.Status)
	}
	form.Set("terms", "yes")
	pg = a.phone.Submit(pg, "/register", form)
	back := a.back(a.waitForDevice(a.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})))
	tok, err := a.conf.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	if info := e.Introspect(tok.AccessToken); info["username"] != "bob" {
		t.Errorf("introspection: %v", info)
	}
	u, err := e.Store.UserByUsername(context.Background(), "bob")
	if err != nil || u.TermsURL != "https://example.org/terms-2026" || u.TermsAcceptedAt.IsZero() {
		t.Errorf("recorded terms: %+v %v", u, err)
	}
}

// TestKeyRotation: an id_token signed before a rotation still verifies
// after it; new ones use the new key.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e, clientID)
	tok, err := a.conf.Exchange(ctx, a.authorize().Query().Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	before := tok.Extra("id_token").(string)
	kid, err := e.Server.Server.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	verifyIDToken(t, e, before)
	a2 := newApp(e, clientID)
	tok2, err := a2.conf.Exchange(ctx, a2.authorize().Query().Get("code"), oauth2.VerifierOption(a2.verifier))
	if err != nil {
		t.Fatal(err)
	}
	after, _ := jwt.ParseSigned(tok2.Extra("id_token").(string), []jose.SignatureAlgorithm{jose.RS256})
	if after.Headers[0].KeyID != kid {
		t.Errorf("new id_token signed with %q, want the new key %q", after.Headers[0].KeyID, kid)
	}
}

// TestTrustedClientSkipsConsent: only a client the operator trusts goes
// straight back without the consent page.
func TestTrustedClientSkipsConsent(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(appClientJSON)
	if err := e.Server.Server.TrustClient(context.Background(), clientID, true); err != nil {
		t.Fatal(err)
	}
	a := newApp(e, clientID)
	pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier)))
	pg = a.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	if back := a.back(pg); back.Query().Get("code") == "" {
		t.Errorf("trusted client: %s", back)
	}
	// prompt=consent still shows it.
	pg = a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier), oauth2.SetAuthURLParam("prompt", "consent")))
	if pg.Form("/oauth2/authorize") == nil {
		t.Errorf("prompt=consent on a trusted client: %d %s", pg.Status, pg.Text())
	}
}

// TestSyncKeepsDevicesOfApprovedCodes: a sync_devices that runs between
// approval and code exchange keeps the device being signed in.
func TestSyncKeepsDevicesOfApprovedCodes(t *testing.T) {
	e := newSynapseEnv(t)
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e.env, clientID)
	back := a.authorize()
	if err := e.Server.Server.SyncDevices(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the outbox is empty", func() bool {
		entries, _ := e.Server.Server.Outbox(t.Context(), 10)
		return len(entries) == 0
	})
	tok, err := a.conf.Exchange(t.Context(), back.Query().Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	if status, who := e.whoami(tok.AccessToken); status != 200 || who["device_id"] != "APPDEVICE01" {
		t.Errorf("whoami after a sync between approval and exchange: %d %v", status, who)
	}
}

// TestPromptLoginSignsNobodyOut: prompt=login asks for the password again
// but a mere link (a GET) must not end the person's browser session.
func TestPromptLoginSignsNobodyOut(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(appClientJSON)
	a := newApp(e, clientID)
	a.authorize() // signs the phone in
	pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier), oauth2.SetAuthURLParam("prompt", "login")))
	if pg.Form("/login") == nil {
		t.Fatalf("prompt=login did not ask to sign in: %s", pg.Text())
	}
	if got := a.phone.Get(e.URL + "account"); got.Form("/login") != nil {
		t.Error("following a prompt=login link signed the person out")
	}
	// Signing in again continues without asking once more.
	back := a.back(a.waitForDevice(a.phone.Submit(a.phone.Submit(pg, "/login",
		url.Values{"username": {testUser}, "password": {testPassword}}), "/oauth2/authorize", url.Values{"action": {"approve"}})))
	if back.Query().Get("code") == "" {
		t.Errorf("after prompt=login: %s", back)
	}
}
