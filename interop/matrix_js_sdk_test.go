package interop

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// TestMatrixJSSDK: matrix-js-sdk, the library Element Web uses, signs in
// to a homeserver (fakesynapse, as Synapse with
// matrix_authentication_service) that delegates to devicegrantd, using
// only the SDK's own OAuth API:
//   - discovery through the homeserver's auth_metadata, which the SDK
//     validates, and the same from ours (P-DISC-1, P-DISC-2, P-HS-1);
//   - dynamic registration of a public web client as Element registers
//     one (redirect URI on a subdomain of client_uri, logo, terms and
//     policy on its host) with the SDK's default grant types, the device
//     grant included (P-DCR-1, P-DCR-2, P-DCR-4, P-DCR-5);
//   - the authorization code grant with PKCE S256 and response_mode
//     fragment, the code and state brought back from the phone's browser
//     (P-AC-1, P-AC-3, P-AC-4), the device created at the homeserver
//     before the code is given (P-HS-3);
//   - a refresh by the SDK's token manager when the homeserver says
//     M_UNKNOWN_TOKEN for the expired access token (P-RT-1, P-RT-2), the
//     new token active for the right device at introspection (P-INT-1,
//     P-HS-2, P-SCOPE-1);
//   - reuse of the rotated-out refresh token after the new pair was used:
//     the session ends, its device goes, and the SDK takes our
//     invalid_grant as a logout (P-RT-2, P-HS-3). The rotated-out access
//     token is left to expire, as the Matrix spec allows ("a server can
//     choose to invalidate the old access token immediately, or can choose
//     not to"); the test sees it inactive once expired;
//   - the device grant through the SDK (P-DEV-1, P-DEV-5) and logout,
//     which revokes with client_id only (P-REV-1); a denied device grant
//     ends the SDK's polling with access_denied (P-DEV-5, P-DEV-7).
//
// The SDK (v43) speaks OAuth 2.0 as the Matrix spec profiles it: it asks
// for no openid scope and so gets and checks no id_token (P-OIDC-1 is
// covered by TestOpenIDClientDeviceFlow).
func TestMatrixJSSDK(t *testing.T) {
	requireNodeModule(t, "matrix-js-sdk")
	hs := fakesynapse.Start(t, fakesynapse.Options{
		ServerName: "example.org", Secret: devtest.HomeserverSecret, RequireProvisioning: true,
	})
	// Access tokens that expire within the test, so that the SDK has to
	// refresh on the homeserver's M_UNKNOWN_TOKEN as it would after five
	// minutes in real use. Five seconds leave the Go side time to
	// introspect the refreshed token before it too expires, on a busy
	// machine.
	srv := devtest.Start(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.HomeserverEndpoint = hs.URL()
		c.AccessTokenTTL = 5 * time.Second
	}))
	hs.SetAuthEndpoint(srv.URL)

	steps := nodeSteps(t, 90*time.Second, func(step string, m map[string]any, steps map[string]map[string]any, send func(any)) {
		switch step {
		case "authorize":
			code, state := signInOnPhone(t, m["url"].(string), m["redirect_uri"].(string), srv.URL)
			send(map[string]string{"code": code, "state": state})
		case "refreshed":
			checkRefreshed(t, srv, hs, steps)
			send(map[string]string{})
		case "device":
			devtest.NewPhone(t).Decide(m["verification_uri_complete"].(string), "approve")
		case "device_to_deny":
			devtest.NewPhone(t).Decide(m["verification_uri_complete"].(string), "deny")
		}
	}, "matrix-js-sdk.mjs", hs.URL(), srv.URL)

	if d := steps["discovered"]; d == nil || d["issuer"] != srv.URL || d["same_direct"] != true ||
		d["device_authorization_endpoint"] != srv.URL+"oauth2/device" {
		t.Fatalf("discovery: %v", d)
	}
	reg := steps["registered"]
	if reg == nil || reg["client_id"] == "" {
		t.Fatalf("registration: %v", reg)
	}
	deviceID, _ := steps["authorize"]["device_id"].(string)
	if tok := steps["tokens"]; tok == nil || tok["token_type"] != "Bearer" || tok["has_refresh_token"] != true ||
		!hasScopes(tok["scope"], "urn:matrix:client:api:*", "urn:matrix:client:device:"+deviceID) {
		t.Fatalf("code exchange: %v", tok)
	}
	if w := steps["whoami"]; w == nil || w["user_id"] != "@alice:example.org" || w["device_id"] != deviceID {
		t.Fatalf("whoami with the first token: %v", w)
	}

	// The thief's refresh ended the session (P-RT-2): the SDK saw an OAuth
	// error and logged out, the homeserver no longer knows the device.
	if r := steps["reuse"]; r == nil || r["refused"] != true || r["errcode"] != "M_UNKNOWN_TOKEN" || r["logged_out"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("reuse of the rotated-out refresh token: %v", r)
	}
	if m := srv.Introspect(steps["refreshed"]["access_token"].(string)); m["active"] != false {
		t.Errorf("the session survived reuse of its rotated-out refresh token: %v", m)
	}
	waitForDeviceGone(t, hs, deviceID)

	dev := steps["device_tokens"]
	devDevice, _ := steps["device"]["device_id"].(string)
	if dev == nil || dev["user_id"] != "@alice:example.org" || dev["device_id"] != devDevice || devDevice == deviceID {
		t.Fatalf("device grant: %v (device %q)", dev, devDevice)
	}
	if steps["logged_out"] == nil {
		t.Fatal("no logout")
	}
	if m := srv.Introspect(dev["access_token"].(string)); m["active"] != false {
		t.Errorf("the access token survived the SDK's logout: %v", m)
	}
	waitForDeviceGone(t, hs, devDevice)
	if d := steps["denied"]; d == nil || d["error"] != "access_denied" || d["has_token"] != false {
		t.Fatalf("denied device grant: %v", d)
	}
}

// signInOnPhone opens the authorization URL the SDK made, signs in as the
// test account and approves, and returns the code and state of the
// redirect back to the app (P-AC-1: response_mode fragment, RFC 9207 iss).
func signInOnPhone(t *testing.T, authURL, redirectURI, issuer string) (code, state string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || q.Get("response_mode") != "fragment" {
		t.Fatalf("the SDK's authorization request: %s", authURL)
	}
	app, err := url.Parse(redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	phone := devtest.NewPhone(t)
	// The browser follows redirects within our server and stops at the one
	// that leaves for the app (whose host does not resolve).
	phone.Client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == app.Host {
			return http.ErrUseLastResponse
		}
		return nil
	}
	pg := phone.Get(authURL)
	if pg.Form("/login") != nil {
		pg = phone.Submit(pg, "/login", url.Values{"username": {devtest.Username}, "password": {devtest.Password}})
	}
	if pg.Form("/oauth2/authorize") == nil {
		t.Fatalf("expected the consent page, got %d:\n%s", pg.Status, pg.Text())
	}
	pg = phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})
	// The page that waits for the homeserver to create the device reloads
	// itself (P-HS-3).
	for deadline := time.Now().Add(10 * time.Second); pg.Status == http.StatusOK && strings.Contains(pg.Body, `http-equiv="refresh"`); {
		if time.Now().After(deadline) {
			t.Fatal("the device was never created")
		}
		time.Sleep(100 * time.Millisecond)
		pg = phone.Get(pg.URL.String())
	}
	loc := pg.Header.Get("Location")
	if pg.Status != http.StatusSeeOther || !strings.HasPrefix(loc, redirectURI+"#") {
		t.Fatalf("expected a redirect to %s with a fragment, got %d %q: %s", redirectURI, pg.Status, loc, pg.Text())
	}
	back, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	f, err := url.ParseQuery(back.Fragment)
	if err != nil {
		t.Fatal(err)
	}
	if f.Get("iss") != issuer || f.Get("code") == "" {
		t.Fatalf("redirect back: %s", loc)
	}
	return f.Get("code"), f.Get("state")
}

// checkRefreshed looks, as the homeserver does, at the tokens the SDK
// holds after its refresh.
func checkRefreshed(t *testing.T, srv *devtest.Server, hs *fakesynapse.Homeserver, steps map[string]map[string]any) {
	t.Helper()
	r := steps["refreshed"]
	deviceID := steps["authorize"]["device_id"].(string)
	if r["refreshes"].(float64) < 1 || r["rotated"] != true || r["user_id"] != "@alice:example.org" || r["device_id"] != deviceID {
		t.Fatalf("the SDK's refresh: %v", r)
	}
	m := srv.Introspect(r["access_token"].(string))
	if m["active"] != true || m["username"] != devtest.Username || m["device_id"] != deviceID ||
		m["client_id"] != steps["registered"]["client_id"] ||
		!hasScopes(m["scope"], "urn:matrix:client:api:*", "urn:matrix:client:device:"+deviceID) {
		t.Fatalf("introspection of the refreshed token: %v", m)
	}
	if m := srv.Introspect(steps["tokens"]["access_token"].(string)); m["active"] != false {
		t.Fatalf("the first access token outlived its lifetime: %v", m)
	}
	if !slices.Contains(hs.Devices(devtest.Username), deviceID) {
		t.Fatalf("the homeserver has no device %s: %v", deviceID, hs.Devices(devtest.Username))
	}
}

// waitForDeviceGone waits for the homeserver to have been told to delete
// a device (P-HS-3: ending a session deletes its device).
func waitForDeviceGone(t *testing.T, hs *fakesynapse.Homeserver, deviceID string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); slices.Contains(hs.Devices(devtest.Username), deviceID); {
		if time.Now().After(deadline) {
			t.Fatalf("the homeserver still has device %s", deviceID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasScopes reports whether the space-separated scope v has all of want.
func hasScopes(v any, want ...string) bool {
	s, _ := v.(string)
	have := strings.Fields(s)
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
