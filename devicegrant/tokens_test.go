package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// signIn runs a device flow to the end and returns the token response.
func (e *env) signIn(clientID, deviceID string) map[string]any {
	e.t.Helper()
	da := e.deviceAuth(clientID, deviceID)
	newPhone(e.t).Decide(da["verification_uri_complete"].(string), "approve")
	status, m := e.poll(clientID, da["device_code"].(string))
	if status != http.StatusOK {
		e.t.Fatalf("poll after approval: %d %v", status, m)
	}
	return m
}

func (e *env) refresh(clientID, refreshToken string) (int, map[string]any) {
	e.t.Helper()
	return e.Post("oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "client_id": {clientID}})
}

func active(m map[string]any) bool { return m["active"] == true }

// TestRefreshLostResponse: a retry with the previous refresh token, while
// the new pair is unused, gets a fresh pair (P-RT-2).
func TestRefreshLostResponse(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	first := e.signIn(clientID, "LOSTRESP01")

	status, lost := e.refresh(clientID, first["refresh_token"].(string))
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, lost)
	}
	// The response never arrived; the device retries with the old token.
	status, retry := e.refresh(clientID, first["refresh_token"].(string))
	if status != http.StatusOK {
		t.Fatalf("retry after a lost response: %d %v", status, retry)
	}
	if active(e.Introspect(lost["access_token"].(string))) {
		t.Error("the pair whose response was lost is still active")
	}
	if !active(e.Introspect(retry["access_token"].(string))) {
		t.Fatal("the retried pair is not active")
	}
	// The retried pair is now used; the original token is spent for good.
	status, m := e.refresh(clientID, first["refresh_token"].(string))
	wantError(t, "reuse after the successor was used", status, m, "invalid_grant")
	if active(e.Introspect(retry["access_token"].(string))) {
		t.Error("reuse of a spent refresh token did not end the session (P-RT-2)")
	}
	status, m = e.refresh(clientID, retry["refresh_token"].(string))
	wantError(t, "refresh in an ended session", status, m, "invalid_grant")
}

// TestRefreshReuseAfterRotation: once the new refresh token has been used,
// presenting the old one is theft and ends the session (P-RT-2).
func TestRefreshReuseAfterRotation(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	r0 := e.signIn(clientID, "THEFTDEV01")
	_, r1 := e.refresh(clientID, r0["refresh_token"].(string))
	status, r2 := e.refresh(clientID, r1["refresh_token"].(string))
	if status != http.StatusOK {
		t.Fatalf("second refresh: %d %v", status, r2)
	}
	status, m := e.refresh(clientID, r0["refresh_token"].(string))
	wantError(t, "stolen r0", status, m, "invalid_grant")
	if active(e.Introspect(r2["access_token"].(string))) {
		t.Error("session survived refresh-token reuse")
	}
}

// TestConcurrentRefresh: many refreshes with one token leave exactly one
// live pair (P-RT-3).
func TestConcurrentRefresh(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	r0 := e.signIn(clientID, "CONCURRENT1")
	const n = 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	var tokens []string
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, m := e.refresh(clientID, r0["refresh_token"].(string))
			if status == http.StatusOK {
				mu.Lock()
				tokens = append(tokens, m["access_token"].(string))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(tokens) == 0 {
		t.Fatal("no refresh succeeded")
	}
	live := 0
	for _, tok := range tokens {
		if active(e.Introspect(tok)) {
			live++
		}
	}
	if live != 1 {
		t.Errorf("%d of %d issued pairs are live, want exactly 1", live, len(tokens))
	}
}

// TestSameDeviceReplacesSession: signing in again with a device id ends
// the earlier session of that device (P-SCOPE-4).
func TestSameDeviceReplacesSession(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	old := e.signIn(clientID, "REUSEDDEV1")
	other := e.signIn(clientID, "OTHERDEV01")
	renewed := e.signIn(clientID, "REUSEDDEV1")
	if active(e.Introspect(old["access_token"].(string))) {
		t.Error("old session of the re-used device id is still active")
	}
	if !active(e.Introspect(renewed["access_token"].(string))) || !active(e.Introspect(other["access_token"].(string))) {
		t.Error("the new session, or another device's, is not active")
	}
}

// TestRevocation: either token of a pair revokes the session; unknown
// tokens get 200 and change nothing (P-REV-1).
func TestRevocation(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	tok := e.signIn(clientID, "REVOKEDEV1")
	access := tok["access_token"].(string)

	for _, form := range []url.Values{
		{"token": {"dga_doesnotexist000000000000000000_AAAAAA"}, "client_id": {clientID}},
		{"token": {"not even a token"}, "client_id": {clientID}},
		{"token": {"dgr_doesnotexist000000000000000000_AAAAAA"}},
	} {
		if status, m := e.Post("oauth2/revoke", form); status != http.StatusOK {
			t.Errorf("revoke %v: %d %v", form, status, m)
		}
	}
	if !active(e.Introspect(access)) {
		t.Fatal("revoking unknown tokens revoked a real one")
	}
	if status, m := e.Post("oauth2/revoke", url.Values{"client_id": {clientID}}); status != 400 || m["error"] != "invalid_request" {
		t.Errorf("revoke without token: %d %v", status, m)
	}
	if status, _ := e.Post("oauth2/revoke", url.Values{"token": {access}, "token_type_hint": {"access_token"}, "client_id": {clientID}}); status != 200 {
		t.Fatalf("revoke access token: %d", status)
	}
	if active(e.Introspect(access)) {
		t.Error("access token active after revocation")
	}
	status, m := e.refresh(clientID, tok["refresh_token"].(string))
	wantError(t, "refresh after the access token was revoked", status, m, "invalid_grant")
}

// TestIntrospection: who may ask, and what inactive looks like (P-INT-1,
// P-HS-2).
func TestIntrospection(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	confID, confSecret := e.Register(`{"client_uri":"https://bot.example.org/","token_endpoint_auth_method":"client_secret_basic","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	if confSecret == "" || !strings.HasPrefix(confSecret, "dgs_") {
		t.Fatalf("confidential client secret = %q", confSecret)
	}
	tok := e.signIn(clientID, "INTROSPECT1")
	access := tok["access_token"].(string)
	form := url.Values{"token": {access}}

	req := func(hdr ...string) (int, map[string]any) { return e.Post("oauth2/introspect", form, hdr...) }
	if s, m := req(); s != 401 || m["error"] != "invalid_client" {
		t.Errorf("no credentials: %d %v", s, m)
	}
	if s, m := req("Authorization", "Bearer wrong"); s != 401 {
		t.Errorf("wrong homeserver secret: %d %v", s, m)
	}
	if s, m := e.Post("oauth2/introspect", url.Values{"token": {access}, "client_id": {clientID}}); s != 401 {
		t.Errorf("public client: %d %v", s, m)
	}
	// A confidential client learns nothing about other clients' tokens
	// until the operator trusts it (RFC 7662 §4).
	basic := "Basic " + basicAuth(confID, confSecret)
	if s, m := req("Authorization", basic); s != 200 || len(m) != 1 || active(m) {
		t.Errorf("untrusted confidential client, another client's token: %d %v", s, m)
	}
	if err := e.Server.Server.TrustClient(t.Context(), confID, true); err != nil {
		t.Fatal(err)
	}
	if s, m := req("Authorization", basic); s != 200 || !active(m) {
		t.Errorf("trusted confidential client: %d %v", s, m)
	}
	if s, m := req("Authorization", "Basic "+basicAuth(confID, "dgs_wrong")); s != 401 {
		t.Errorf("confidential client with a wrong secret: %d %v", s, m)
	}

	m := e.Introspect(access)
	for _, k := range []string{"active", "scope", "client_id", "sub", "username", "device_id", "exp", "iat", "expires_in", "token_type"} {
		if _, ok := m[k]; !ok {
			t.Errorf("introspection lacks %q: %v", k, m)
		}
	}
	altered := access[:len(access)-1] + "x"
	if altered == access { // it ended in x already
		altered = access[:len(access)-1] + "y"
	}
	for _, inactive := range []string{tok["refresh_token"].(string), "garbage", altered} {
		if m := e.Introspect(inactive); len(m) != 1 || m["active"] != false {
			t.Errorf("introspect(%.6s…) = %v, want only active:false", inactive, m)
		}
	}
	e.Clock.Advance(5*time.Minute + time.Second)
	if m := e.Introspect(access); len(m) != 1 || m["active"] != false {
		t.Errorf("expired access token: %v", m)
	}
}

// TestConfidentialClient: a confidential device client authenticates with
// its secret, in the form or in HTTP Basic, one method per request. P-DCR-4.
func TestConfidentialClient(t *testing.T) {
	e := newEnv(t)
	id, secret := e.Register(`{"client_uri":"https://bot.example.org/","token_endpoint_auth_method":"client_secret_post","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	scope := apiScope + " urn:matrix:client:device:CONFIDENT1"
	if s, m := e.Post("oauth2/device", url.Values{"client_id": {id}, "scope": {scope}}); s != 401 {
		t.Errorf("without secret: %d %v", s, m)
	}
	// openid-client and others send client_secret_post by default,
	// whatever was registered; the same secret in Basic is as good.
	if s, m := e.Post("oauth2/device", url.Values{"scope": {scope}}, "Authorization", "Basic "+basicAuth(id, secret)); s != 200 {
		t.Errorf("the other secret method (basic, registered post): %d %v", s, m)
	}
	if s, m := e.Post("oauth2/device", url.Values{"scope": {scope}}, "Authorization", "Basic "+basicAuth(id, secret+"x")); s != 401 {
		t.Errorf("wrong secret in Basic: %d %v", s, m)
	}
	if s, m := e.Post("oauth2/device", url.Values{"client_id": {id}, "client_secret": {secret}, "scope": {scope}}, "Authorization", "Basic "+basicAuth(id, secret)); s != 400 || m["error"] != "invalid_request" {
		t.Errorf("two methods in one request (RFC 6749 §2.3): %d %v", s, m)
	}
	if s, m := e.Post("oauth2/device", url.Values{"client_id": {id}, "client_secret": {secret}, "scope": {scope}}); s != 200 {
		t.Errorf("with client_secret_post: %d %v", s, m)
	}
}

// TestRefreshRetryCannotBeHijacked: someone replaying the previous refresh
// token while the client's new pair is still unused gets a pair, but the
// moment the client presents its own (now replaced) refresh token the
// whole session ends, the replayer's pair included (P-RT-2, RFC 9700
// §4.14.2).
func TestRefreshRetryCannotBeHijacked(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	r0 := e.signIn(clientID, "HIJACKDEV1")
	_, client := e.refresh(clientID, r0["refresh_token"].(string)) // the client's pair, not used yet
	status, thief := e.refresh(clientID, r0["refresh_token"].(string))
	if status != 200 {
		t.Fatalf("replay while the new pair is unused: %d %v", status, thief)
	}
	status, m := e.refresh(clientID, client["refresh_token"].(string))
	wantError(t, "the client's replaced refresh token", status, m, "invalid_grant")
	if active(e.Introspect(thief["access_token"].(string))) {
		t.Error("the replayer's pair survived")
	}
}

// TestRefreshRetryAfterLongOutage: a device that lost the answer to a
// refresh (power cut mid-request) and comes back days later, after the
// hourly cleanup has run, retries with its old refresh token and gets a
// working pair (the Matrix spec: the server MUST let a client retry after
// a lost response; P-RT-2). Once the pair it then gets has been used, the
// old token is reuse and ends the session.
func TestRefreshRetryAfterLongOutage(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	r0 := e.signIn(clientID, "OUTAGEDEV1")
	if status, lost := e.refresh(clientID, r0["refresh_token"].(string)); status != 200 || lost["refresh_token"] == "" {
		t.Fatalf("refresh: %d %v", status, lost)
	}
	// The answer never reached the device. Eight days pass, cleanup runs.
	e.Clock.Advance(8 * 24 * time.Hour)
	if _, err := e.Server.Server.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	status, got := e.refresh(clientID, r0["refresh_token"].(string))
	if status != 200 {
		t.Fatalf("P-RT-2: retry of a lost refresh eight days later: %d %v", status, got)
	}
	if !active(e.Introspect(got["access_token"].(string))) {
		t.Fatal("the retried pair does not work")
	}
	// Pair 1' is used now (introspected): R0 again is reuse.
	status, m := e.refresh(clientID, r0["refresh_token"].(string))
	wantError(t, "R0 after its successor was used", status, m, "invalid_grant")
	if active(e.Introspect(got["access_token"].(string))) {
		t.Error("P-RT-2: the session survived reuse of a spent refresh token")
	}
}
