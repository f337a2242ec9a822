package devicegrant_test

import (
	"database/sql"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// escapeAll percent-encodes every byte, as RFC 6749 Appendix B allows and
// as some libraries do for characters such as "_" (dgs_… → dgs%5F…).
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// TestBasicCredentialsFormEncoded: HTTP Basic client credentials are
// form-urlencoded before Base64 (RFC 6749 §2.3.1), and every endpoint that
// authenticates a client decodes them, whichever characters were escaped
// (P-DCR-4). Our ids and secrets use A-Z a-z 0-9 and "_".
func TestBasicCredentialsFormEncoded(t *testing.T) {
	e := newEnv(t)
	id, secret := e.Register(`{"client_uri":"https://bot.example.org/","token_endpoint_auth_method":"client_secret_basic",
		"grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	if strings.Trim(id+secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		t.Fatalf("client id %q or secret uses characters this test does not cover", id)
	}
	encodings := []struct {
		name, device string
		enc          func(string) string
	}{
		{"unescaped", "BASICPLAIN", func(s string) string { return s }},
		{"query-escaped", "BASICQUERY", url.QueryEscape},
		{"every byte escaped", "BASICEVERY", escapeAll},
		{"underscore escaped", "BASICUNDER", func(s string) string { return strings.ReplaceAll(s, "_", "%5F") }},
		{"lower-case escapes", "BASICLOWER", func(s string) string { return strings.ToLower(escapeAll(s)) }},
	}
	for _, tc := range encodings {
		name, enc, deviceID := tc.name, tc.enc, tc.device
		t.Run(name, func(t *testing.T) {
			auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(enc(id)+":"+enc(secret)))
			post := func(path string, form url.Values) (int, map[string]any) {
				t.Helper()
				return e.Post(path, form, "Authorization", auth)
			}
			status, da := post("oauth2/device", url.Values{"scope": {apiScope + " urn:matrix:client:device:" + deviceID}})
			if status != http.StatusOK {
				t.Fatalf("device authorization: %d %v", status, da)
			}
			newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
			status, tok := post("oauth2/token", url.Values{"grant_type": {deviceGrant}, "device_code": {da["device_code"].(string)}})
			if status != http.StatusOK {
				t.Fatalf("token: %d %v", status, tok)
			}
			status, tok = post("oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}})
			if status != http.StatusOK {
				t.Fatalf("refresh: %d %v", status, tok)
			}
			access := tok["access_token"].(string)
			if status, m := post("oauth2/introspect", url.Values{"token": {access}}); status != http.StatusOK || !active(m) {
				t.Fatalf("introspection of its own token: %d %v", status, m)
			}
			if status, m := post("oauth2/revoke", url.Values{"token": {access}}); status != http.StatusOK {
				t.Fatalf("revoke: %d %v", status, m)
			}
			if active(e.Introspect(access)) {
				t.Fatal("token active after revocation")
			}
		})
	}
	for name, auth := range map[string]string{
		"wrong secret, escaped": base64.StdEncoding.EncodeToString([]byte(escapeAll(id) + ":" + escapeAll(secret+"x"))),
		"broken escape":         base64.StdEncoding.EncodeToString([]byte(id + ":" + secret + "%G1")),
	} {
		status, m := e.Post("oauth2/device", url.Values{"scope": {apiScope + " urn:matrix:client:device:BADBASIC01"}}, "Authorization", "Basic "+auth)
		if status != http.StatusUnauthorized || m["error"] != "invalid_client" {
			t.Errorf("%s: %d %v, want 401 invalid_client", name, status, m)
		}
	}
}

// TestRevocationByAnyone: the Matrix spec (Token revocation) says that
// when client_id is missing or names another client, the server SHOULD
// still revoke the token, so that secret scanners can revoke leaked ones
// (P-REV-1). A client that sends credentials must send good ones. The
// person is told on the account page.
func TestRevocationByAnyone(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	otherID, _ := e.Register(otherClientJSON)
	confID, confSecret := e.Register(`{"client_uri":"https://bot.example.org/","token_endpoint_auth_method":"client_secret_post",
		"grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)

	cases := []struct {
		name string
		form func(token string) url.Values
		hdr  []string
	}{
		{"no client_id", func(tok string) url.Values { return url.Values{"token": {tok}} }, nil},
		{"another public client's id", func(tok string) url.Values { return url.Values{"token": {tok}, "client_id": {otherID}} }, nil},
		{"an unknown client_id", func(tok string) url.Values { return url.Values{"token": {tok}, "client_id": {"dgc_nosuchclient"}} }, nil},
		{"Basic with an empty password", func(tok string) url.Values { return url.Values{"token": {tok}} }, []string{"Authorization", basicAuthHeader(otherID, "")}},
		{"another, authenticated, confidential client", func(tok string) url.Values {
			return url.Values{"token": {tok}, "client_id": {confID}, "client_secret": {confSecret}}
		}, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, which := range []string{"access_token", "refresh_token"} {
				tok := e.signIn(clientID, fmt.Sprintf("LEAKED%02d%s", i, which[:3]))
				if status, m := e.Post("oauth2/revoke", tc.form(tok[which].(string)), tc.hdr...); status != http.StatusOK {
					t.Fatalf("revoke the %s: %d %v", which, status, m)
				}
				if active(e.Introspect(tok["access_token"].(string))) {
					t.Fatalf("the session survived revocation of its %s", which)
				}
				status, m := e.refresh(clientID, tok["refresh_token"].(string))
				wantError(t, "refresh after revocation", status, m, "invalid_grant")
			}
		})
	}

	// Credentials that are sent must be right: nothing is revoked.
	tok := e.signIn(clientID, "WRONGSECRT")
	status, m := e.Post("oauth2/revoke", url.Values{"token": {tok["access_token"].(string)}, "client_id": {confID}, "client_secret": {"dgs_wrong"}})
	if status != http.StatusUnauthorized || m["error"] != "invalid_client" {
		t.Errorf("revoke with a wrong secret: %d %v", status, m)
	}
	if !active(e.Introspect(tok["access_token"].(string))) {
		t.Error("a revocation with a wrong secret revoked the token")
	}

	// The account page says which sign-ins were ended as leaked, and not
	// the one the app itself signed out.
	own := e.signIn(clientID, "SIGNEDOUT1")
	e.Post("oauth2/revoke", url.Values{"token": {own["refresh_token"].(string)}, "client_id": {clientID}})
	phone := newPhone(t)
	pg := phone.Get(e.URL + "account")
	pg = phone.Submit(pg, "/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}})
	text := pg.Text()
	if n := strings.Count(text, "reported as leaked"); n != 2*len(cases) {
		t.Errorf("account page shows %d leaked sign-ins, want %d:\n%s", n, 2*len(cases), text)
	}
	if !strings.Contains(text, "LEAKED00acc") || strings.Contains(text, "SIGNEDOUT1") {
		t.Errorf("account page names the wrong sessions:\n%s", text)
	}
}

func basicAuthHeader(id, secret string) string { return "Basic " + basicAuth(id, secret) }

// TestIntrospectionNeedsADevice: a session stored by an earlier version
// with the Matrix API scope and no device id is inactive at introspection:
// a homeserver cannot serve it (P-SCOPE-2, P-INT-1).
func TestIntrospectionNeedsADevice(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	tok := e.signIn(clientID, "OLDVERSION")
	control := e.signIn(clientID, "CONTROLDEV")
	// The row is changed behind the server's back, before the token is
	// ever introspected (and cached), as an older version would have left it.
	db, err := sql.Open("sqlite3", e.sqliteFile())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE sessions SET device_id = '', scope = ? WHERE device_id = 'OLDVERSION'`, apiScope); err != nil {
		t.Fatal(err)
	}
	if m := e.Introspect(tok["access_token"].(string)); len(m) != 1 || active(m) {
		t.Errorf("P-SCOPE-2: a Matrix API token without a device introspects as %v", m)
	}
	if !active(e.Introspect(control["access_token"].(string))) {
		t.Error("the untouched session is inactive")
	}
}

// TestDeviceGrantIDToken: a device flow that asks for openid gets an
// id_token, as the authorization-code grant does (P-OIDC-1).
func TestDeviceGrantIDToken(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	status, da := e.Post("oauth2/device", url.Values{"client_id": {clientID},
		"scope": {"openid profile " + apiScope + " urn:matrix:client:device:OIDCDEVICE"}})
	if status != http.StatusOK {
		t.Fatalf("device authorization: %d %v", status, da)
	}
	// Polls before approval do not need, or spend, anything.
	status, m := e.poll(clientID, da["device_code"].(string))
	wantError(t, "poll before approval", status, m, "authorization_pending")
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	e.Clock.Advance(time.Second)
	status, tok := e.poll(clientID, da["device_code"].(string))
	if status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, tok)
	}
	raw, _ := tok["id_token"].(string)
	claims := verifyIDToken(t, e, raw)
	info := e.Introspect(tok["access_token"].(string))
	for k, want := range map[string]any{"iss": e.URL, "aud": clientID, "sub": info["sub"], "preferred_username": "alice"} {
		if claims[k] != want {
			t.Errorf("id_token %s = %v, want %v", k, claims[k], want)
		}
	}
	if _, ok := claims["nonce"]; ok {
		t.Errorf("id_token has a nonce the device never sent: %v", claims)
	}
	e.Clock.Advance(time.Second)
	status, m = e.poll(clientID, da["device_code"].(string))
	wantError(t, "second exchange", status, m, "invalid_grant")

	// Without openid, no id_token.
	plain := e.signIn(clientID, "NOOPENIDDV")
	if _, ok := plain["id_token"]; ok {
		t.Error("an id_token without openid")
	}
}
