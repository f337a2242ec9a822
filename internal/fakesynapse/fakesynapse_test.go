package fakesynapse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "s3cret"

// authServer is a tiny stand-in for devicegrantd: introspection answers
// come from a map of token → JSON object.
type authServer struct {
	t        *testing.T
	srv      *httptest.Server
	mu       sync.Mutex
	tokens   map[string]map[string]any
	fail     bool
	noAcct   bool
	requests int
}

func newAuthServer(t *testing.T) *authServer {
	a := &authServer{t: t, tokens: map[string]map[string]any{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *authServer) setToken(tok string, v map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[tok] = v
}

func (a *authServer) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		md := map[string]any{"issuer": a.srv.URL + "/", "token_endpoint": a.srv.URL + "/oauth2/token"}
		if !a.noAcct {
			md["account_management_uri"] = a.srv.URL + "/account"
		}
		_ = json.NewEncoder(w).Encode(md)
	case "/oauth2/introspect":
		a.requests++
		if a.fail {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer "+secret ||
			r.Header.Get("X-MAS-Supports-Device-Id") != "1" || r.Header.Get("Accept") != "application/json" ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" ||
			r.PostFormValue("token_type_hint") != "access_token" {
			a.t.Errorf("bad introspection request: %s %v", r.Method, r.Header)
			http.Error(w, "bad", http.StatusUnauthorized)
			return
		}
		v, ok := a.tokens[r.PostFormValue("token")]
		if !ok {
			v = map[string]any{"active": false}
		}
		_ = json.NewEncoder(w).Encode(v)
	default:
		http.NotFound(w, r)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type resp struct {
	status int
	body   map[string]any
	header http.Header
}

func do(t *testing.T, method, u, auth, body string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out.body); err != nil {
			out.body = map[string]any{"_raw": string(b)}
		}
	}
	return out
}

func expect(t *testing.T, r resp, status int, errcode string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %v)", r.status, status, r.body)
	}
	if errcode != "" && r.body["errcode"] != errcode {
		t.Fatalf("errcode %v, want %s (body %v)", r.body["errcode"], errcode, r.body)
	}
}

func mas(t *testing.T, h *Homeserver, name, body string) resp {
	t.Helper()
	return do(t, http.MethodPost, h.URL()+"/_synapse/mas/"+name, secret, body)
}

func TestSecretRequired(t *testing.T) {
	h := Start(t, Options{Secret: secret})
	for _, p := range []string{"provision_user", "upsert_device", "delete_device", "sync_devices", "delete_user",
		"reactivate_user", "set_displayname", "unset_displayname", "allow_cross_signing_reset", "update_device_display_name"} {
		expect(t, do(t, "POST", h.URL()+"/_synapse/mas/"+p, "wrong", `{"localpart":"a"}`), 403, "M_UNKNOWN")
		expect(t, do(t, "POST", h.URL()+"/_synapse/mas/"+p, "", `{"localpart":"a"}`), 401, "M_MISSING_TOKEN")
	}
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/query_user?localpart=a", "wrong", ""), 403, "M_UNKNOWN")
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/is_localpart_available?localpart=a", "wrong", ""), 403, "M_UNKNOWN")
	if len(h.Users()) != 0 {
		t.Fatal("a refused call changed state")
	}
	calls := h.Calls()
	if len(calls) != 22 || calls[0].Status != 403 || calls[0].Path != "/_synapse/mas/provision_user" ||
		string(calls[0].Body) != `{"localpart":"a"}` {
		t.Fatalf("calls: %d %+v", len(calls), calls[0])
	}
	// Wrong method on a known endpoint.
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/provision_user", secret, ""), 405, "M_UNRECOGNIZED")
}

func TestProvisionAndQuery(t *testing.T) {
	h := Start(t, Options{Secret: secret, ServerName: "example.org"})
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/query_user?localpart=alice", secret, ""), 404, "M_NOT_FOUND")
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/query_user", secret, ""), 400, "M_MISSING_PARAM")
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/is_localpart_available?localpart=alice", secret, ""), 200, "")

	expect(t, mas(t, h, "provision_user", `{"localpart":"alice","set_emails":["a@x","a@x"],"set_avatar_url":"mxc://x/y"}`), 201, "")
	u := h.Users()["alice"]
	if u.DisplayName != "alice" || u.AvatarURL != "mxc://x/y" || len(u.Emails) != 1 {
		t.Fatalf("user after create: %+v", u)
	}
	r := do(t, "GET", h.URL()+"/_synapse/mas/query_user?localpart=alice", secret, "")
	expect(t, r, 200, "")
	if r.body["user_id"] != "@alice:example.org" || r.body["display_name"] != "alice" || r.body["is_deactivated"] != false || r.body["is_suspended"] != false {
		t.Fatalf("query_user: %v", r.body)
	}
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice","set_displayname":"Alice","unset_emails":true,"unset_avatar_url":true,"locked":true}`), 200, "")
	u = h.Users()["alice"]
	if u.DisplayName != "Alice" || u.AvatarURL != "" || len(u.Emails) != 0 || !u.Locked {
		t.Fatalf("user after update: %+v", u)
	}
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice","unset_displayname":true}`), 200, "")
	r = do(t, "GET", h.URL()+"/_synapse/mas/query_user?localpart=alice", secret, "")
	if v, ok := r.body["display_name"]; !ok || v != nil {
		t.Fatalf("display_name should be null: %v", r.body)
	}
	expect(t, mas(t, h, "set_displayname", `{"localpart":"alice","displayname":"A"}`), 200, "")
	if h.Users()["alice"].DisplayName != "A" {
		t.Fatal("set_displayname")
	}
	expect(t, mas(t, h, "unset_displayname", `{"localpart":"alice"}`), 200, "")
	if h.Users()["alice"].DisplayName != "" {
		t.Fatal("unset_displayname")
	}
	expect(t, mas(t, h, "allow_cross_signing_reset", `{"localpart":"alice"}`), 200, "")
	for _, n := range []string{"set_displayname", "unset_displayname", "allow_cross_signing_reset", "reactivate_user"} {
		expect(t, mas(t, h, n, `{"localpart":"bob","displayname":"B"}`), 404, "M_NOT_FOUND")
	}
	expect(t, mas(t, h, "delete_user", `{"localpart":"bob","erase":false}`), 404, "M_NOT_FOUND")

	// Availability.
	for lp, code := range map[string]string{"alice": "M_USER_IN_USE", "ALICE": "M_INVALID_USERNAME", "Alice": "M_INVALID_USERNAME",
		"_x": "M_INVALID_USERNAME", "123": "M_INVALID_USERNAME", "a b": "M_INVALID_USERNAME"} {
		expect(t, do(t, "GET", h.URL()+"/_synapse/mas/is_localpart_available?localpart="+strings.ReplaceAll(lp, " ", "%20"), secret, ""), 400, code)
	}
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/is_localpart_available", secret, ""), 400, "M_UNKNOWN")

	// Malformed bodies.
	expect(t, mas(t, h, "provision_user", `{`), 400, "M_NOT_JSON")
	expect(t, mas(t, h, "provision_user", `[]`), 400, "M_BAD_JSON")
	expect(t, mas(t, h, "provision_user", `{}`), 400, "M_BAD_JSON")
	expect(t, mas(t, h, "provision_user", `{"localpart":1}`), 400, "M_BAD_JSON")
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice","set_displayname":"x","unset_displayname":false}`), 400, "M_BAD_JSON")
	expect(t, mas(t, h, "provision_user", `{"localpart":"Bad!"}`), 400, "M_INVALID_USERNAME")
	expect(t, mas(t, h, "delete_user", `{"localpart":"alice"}`), 400, "M_BAD_JSON")

	// Deactivation with erasure, then reactivation.
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice","set_displayname":"Alice","set_emails":["a@x"]}`), 200, "")
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEV1"}`), 201, "")
	expect(t, mas(t, h, "delete_user", `{"localpart":"alice","erase":true}`), 200, "")
	u = h.Users()["alice"]
	if !u.Deactivated || !u.Erased || u.DisplayName != "" || len(u.Emails) != 0 || len(h.Devices("alice")) != 0 {
		t.Fatalf("after delete_user: %+v devices %v", u, h.Devices("alice"))
	}
	expect(t, do(t, "GET", h.URL()+"/_synapse/mas/is_localpart_available?localpart=alice", secret, ""), 400, "M_USER_IN_USE")
	expect(t, mas(t, h, "reactivate_user", `{"localpart":"alice"}`), 200, "")
	if u := h.Users()["alice"]; u.Deactivated || u.Erased {
		t.Fatalf("after reactivate: %+v", u)
	}
}

func TestDevices(t *testing.T) {
	h := Start(t, Options{Secret: secret})
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEV1"}`), 404, "M_NOT_FOUND")
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice"}`), 201, "")
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEV1","display_name":"Phone"}`), 201, "")
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEV1"}`), 200, "")
	if n, ok := h.DeviceDisplayName("alice", "DEV1"); !ok || n != "Phone" {
		t.Fatalf("display name %q %v", n, ok)
	}
	expect(t, mas(t, h, "update_device_display_name", `{"localpart":"alice","device_id":"DEV1","display_name":"Tablet"}`), 200, "")
	if n, _ := h.DeviceDisplayName("alice", "DEV1"); n != "Tablet" {
		t.Fatalf("display name %q", n)
	}
	expect(t, mas(t, h, "update_device_display_name", `{"localpart":"alice","device_id":"NOPE","display_name":"x"}`), 404, "M_NOT_FOUND")
	expect(t, mas(t, h, "update_device_display_name", `{"localpart":"alice","device_id":"DEV1"}`), 400, "M_BAD_JSON")
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEV2"}`), 201, "")
	if d := h.Devices("alice"); strings.Join(d, ",") != "DEV1,DEV2" {
		t.Fatalf("devices %v", d)
	}
	r := mas(t, h, "delete_device", `{"localpart":"alice","device_id":"DEV1"}`)
	expect(t, r, 204, "")
	expect(t, mas(t, h, "delete_device", `{"localpart":"alice","device_id":"DEV1"}`), 204, "")
	expect(t, mas(t, h, "delete_device", `{"localpart":"bob","device_id":"DEV1"}`), 404, "M_NOT_FOUND")

	// Drift, then sync.
	h.AddDevice("alice", "STRAY")
	h.RemoveDevice("alice", "DEV2")
	expect(t, mas(t, h, "sync_devices", `{"localpart":"alice","devices":["DEV2","DEV3"]}`), 200, "")
	if d := h.Devices("alice"); strings.Join(d, ",") != "DEV2,DEV3" {
		t.Fatalf("devices after sync %v", d)
	}
	expect(t, mas(t, h, "sync_devices", `{"localpart":"alice","devices":"DEV2"}`), 400, "M_BAD_JSON")
	expect(t, mas(t, h, "sync_devices", `{"localpart":"alice","devices":[]}`), 200, "")
	if d := h.Devices("alice"); len(d) != 0 {
		t.Fatalf("devices after empty sync %v", d)
	}
}

func setup(t *testing.T, o Options) (*Homeserver, *authServer, *fakeClock) {
	a := newAuthServer(t)
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	o.Secret, o.AuthEndpoint, o.Now = secret, a.srv.URL, clk.Now
	return Start(t, o), a, clk
}

func whoami(t *testing.T, h *Homeserver, tok string) resp {
	t.Helper()
	return do(t, "GET", h.URL()+"/_matrix/client/v3/account/whoami", tok, "")
}

func TestWhoamiWithoutProvisioning(t *testing.T) {
	h, a, _ := setup(t, Options{ServerName: "hs.test"})
	a.setToken("tokA", map[string]any{"active": true, "scope": "urn:matrix:client:api:* urn:matrix:client:device:DEVICEAAAA", "username": "alice", "expires_in": 300})
	a.setToken("tokU", map[string]any{"active": true, "scope": "urn:matrix:org.matrix.msc2967.client:api:*", "username": "bob", "device_id": "BOBDEVICE1"})
	a.setToken("noapi", map[string]any{"active": true, "scope": "openid", "username": "alice"})
	a.setToken("nouser", map[string]any{"active": true, "scope": "urn:matrix:client:api:*"})
	a.setToken("bad", map[string]any{"active": "yes"})

	r := whoami(t, h, "tokA")
	expect(t, r, 200, "")
	if r.body["user_id"] != "@alice:hs.test" || r.body["device_id"] != "DEVICEAAAA" || r.body["is_guest"] != false {
		t.Fatalf("whoami: %v", r.body)
	}
	r = whoami(t, h, "tokU")
	expect(t, r, 200, "")
	if r.body["user_id"] != "@bob:hs.test" || r.body["device_id"] != "BOBDEVICE1" {
		t.Fatalf("whoami: %v", r.body)
	}
	expect(t, whoami(t, h, "unknown"), 401, "M_UNKNOWN_TOKEN")
	expect(t, whoami(t, h, "noapi"), 401, "M_UNKNOWN_TOKEN")
	expect(t, whoami(t, h, "nouser"), 500, "M_UNKNOWN")
	expect(t, whoami(t, h, "bad"), 503, "M_UNKNOWN")
	expect(t, whoami(t, h, ""), 401, "M_MISSING_TOKEN")
	expect(t, do(t, "GET", h.URL()+"/_matrix/client/v3/account/whoami?access_token=tokA", "", ""), 200, "")

	a.mu.Lock()
	a.fail = true
	a.mu.Unlock()
	expect(t, whoami(t, h, "tokZ"), 503, "M_UNKNOWN")
	h.SetAuthEndpoint("http://127.0.0.1:1")
	expect(t, whoami(t, h, "tokA"), 503, "M_UNKNOWN")
}

func TestWhoamiRequiresProvisioning(t *testing.T) {
	h, a, _ := setup(t, Options{RequireProvisioning: true})
	a.setToken("tok", map[string]any{"active": true, "scope": "urn:matrix:client:api:* urn:matrix:client:device:DEVICEAAAA", "username": "alice"})
	expect(t, whoami(t, h, "tok"), 500, "M_UNKNOWN") // Synapse: "User not found"
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice"}`), 201, "")
	expect(t, whoami(t, h, "tok"), 401, "M_UNKNOWN_TOKEN") // no device
	n := h.Introspections()
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEVICEAAAA"}`), 201, "")
	r := whoami(t, h, "tok")
	expect(t, r, 200, "")
	if r.body["user_id"] != "@alice:"+h.ServerName() || !strings.HasPrefix(h.ServerName(), "127.0.0.1:") {
		t.Fatalf("whoami %v", r.body)
	}
	if h.Introspections() != n+1 {
		t.Fatal("a missing device must drop the cache entry")
	}
	// Deleting the device makes the cached token fail at once.
	expect(t, whoami(t, h, "tok"), 200, "")
	expect(t, mas(t, h, "delete_device", `{"localpart":"alice","device_id":"DEVICEAAAA"}`), 204, "")
	expect(t, whoami(t, h, "tok"), 401, "M_UNKNOWN_TOKEN")
	// So does deactivation, which deletes all devices.
	expect(t, mas(t, h, "upsert_device", `{"localpart":"alice","device_id":"DEVICEAAAA"}`), 201, "")
	expect(t, whoami(t, h, "tok"), 200, "")
	expect(t, mas(t, h, "delete_user", `{"localpart":"alice","erase":false}`), 200, "")
	expect(t, whoami(t, h, "tok"), 401, "M_UNKNOWN_TOKEN")
}

func TestIntrospectionCache(t *testing.T) {
	h, a, clk := setup(t, Options{})
	a.setToken("tok", map[string]any{"active": true, "scope": "urn:matrix:client:api:*", "username": "alice", "device_id": "DEVICEAAAA"})
	expect(t, whoami(t, h, "tok"), 200, "")
	clk.Add(time.Minute)
	expect(t, whoami(t, h, "tok"), 200, "")
	if n := h.Introspections(); n != 1 {
		t.Fatalf("introspections %d, want 1", n)
	}
	clk.Add(61 * time.Second)
	expect(t, whoami(t, h, "tok"), 200, "")
	if n := h.Introspections(); n != 2 {
		t.Fatalf("introspections %d, want 2", n)
	}
	// Inactive answers are cached too: a revoked token stays…
	a.setToken("tok", map[string]any{"active": false})
	expect(t, whoami(t, h, "tok"), 200, "")
	h.FlushCache()
	expect(t, whoami(t, h, "tok"), 401, "M_UNKNOWN_TOKEN")
	a.setToken("tok", map[string]any{"active": true, "scope": "urn:matrix:client:api:*", "username": "alice"})
	expect(t, whoami(t, h, "tok"), 401, "M_UNKNOWN_TOKEN") // cached inactive
	if n := h.Introspections(); n != 3 {
		t.Fatalf("introspections %d, want 3", n)
	}
	// expires_in is honoured inside the cache TTL.
	a.setToken("short", map[string]any{"active": true, "scope": "urn:matrix:client:api:*", "username": "alice", "expires_in": 10})
	expect(t, whoami(t, h, "short"), 200, "")
	clk.Add(11 * time.Second)
	expect(t, whoami(t, h, "short"), 401, "M_UNKNOWN_TOKEN")
	// Failures are not cached.
	a.mu.Lock()
	a.fail = true
	a.mu.Unlock()
	n := h.Introspections()
	expect(t, whoami(t, h, "other"), 503, "")
	expect(t, whoami(t, h, "other"), 503, "")
	if h.Introspections() != n+2 {
		t.Fatal("failures must not be cached")
	}
	// Custom TTL.
	h2, a2, clk2 := setup(t, Options{IntrospectionCacheTTL: time.Second})
	a2.setToken("tok", map[string]any{"active": true, "scope": "urn:matrix:client:api:*", "username": "alice"})
	whoami(t, h2, "tok")
	clk2.Add(2 * time.Second)
	whoami(t, h2, "tok")
	if h2.Introspections() != 2 {
		t.Fatal("custom TTL ignored")
	}
}

func TestDiscovery(t *testing.T) {
	paths := []string{
		"/_matrix/client/v1/auth_metadata",
		"/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
		"/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
	}
	for _, tc := range []struct {
		mode   AuthMetadataMode
		served [3]bool
	}{
		{Stable, [3]bool{true, true, true}},
		{UnstableOnly, [3]bool{false, true, true}},
		{LegacyAuthIssuer, [3]bool{false, false, true}},
		{None, [3]bool{false, false, false}},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			h, a, _ := setup(t, Options{AuthMetadata: tc.mode})
			for i, p := range paths {
				r := do(t, "GET", h.URL()+p, "", "")
				if !tc.served[i] {
					expect(t, r, 404, "M_UNRECOGNIZED")
					continue
				}
				expect(t, r, 200, "")
				if r.body["issuer"] != a.srv.URL+"/" {
					t.Fatalf("%s: %v", p, r.body)
				}
				if i < 2 && r.body["account_management_uri"] != a.srv.URL+"/account" {
					t.Fatalf("%s: %v", p, r.body)
				}
				if i == 2 && len(r.body) != 1 {
					t.Fatalf("%s: %v", p, r.body)
				}
				if r.header.Get("Access-Control-Allow-Origin") != "*" {
					t.Fatalf("%s: no CORS", p)
				}
			}
			r := do(t, "GET", h.URL()+"/.well-known/matrix/client", "", "")
			expect(t, r, 200, "")
			if hs, _ := r.body["m.homeserver"].(map[string]any); hs["base_url"] != h.URL()+"/" || r.header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("well-known: %v", r.body)
			}
		})
	}
	t.Run("metadata without account_management_uri", func(t *testing.T) {
		h, a, _ := setup(t, Options{})
		a.mu.Lock()
		a.noAcct = true
		a.mu.Unlock()
		expect(t, do(t, "GET", h.URL()+paths[0], "", ""), 500, "M_UNKNOWN")
		a.mu.Lock()
		a.noAcct = false
		a.mu.Unlock()
		expect(t, do(t, "GET", h.URL()+paths[0], "", ""), 200, "") // failures are retried
	})
	t.Run("versions and unknown paths", func(t *testing.T) {
		h := Start(t, Options{})
		r := do(t, "GET", h.URL()+"/_matrix/client/versions", "", "")
		expect(t, r, 200, "")
		expect(t, do(t, "GET", h.URL()+"/_matrix/client/v3/login", "", ""), 404, "M_UNRECOGNIZED")
		expect(t, do(t, "GET", h.URL()+"/_matrix/client/v1/auth_metadata", "", ""), 500, "M_UNKNOWN") // no AuthEndpoint
	})
}

func TestDownUp(t *testing.T) {
	h, a, _ := setup(t, Options{})
	a.setToken("tok", map[string]any{"active": true, "scope": "urn:matrix:client:api:*", "username": "alice"})
	c := &http.Client{Timeout: 5 * time.Second}
	get := func() (int, error) {
		res, err := c.Get(h.URL() + "/_matrix/client/versions")
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	if s, err := get(); err != nil || s != 200 {
		t.Fatalf("before Down: %d %v", s, err)
	}
	h.Down()
	for i := 0; i < 3; i++ { // also on a kept-alive connection
		if s, err := get(); err == nil {
			t.Fatalf("request while down answered %d", s)
		}
	}
	if _, err := http.Get(h.URL() + "/_matrix/client/versions"); err == nil {
		t.Fatal("fresh connection while down succeeded")
	}
	h.Up()
	if s, err := get(); err != nil || s != 200 {
		t.Fatalf("after Up: %d %v", s, err)
	}
	expect(t, whoami(t, h, "tok"), 200, "")
}

// TestConcurrent: whoami, provisioning calls and the test accessors used
// at once by many goroutines keep every answer right and lose no state
// (the race detector checks the locking).
func TestConcurrent(t *testing.T) {
	const n = 8
	h, a, _ := setup(t, Options{RequireProvisioning: true})
	a.setToken("tok", map[string]any{"active": true, "scope": "urn:matrix:client:api:*", "username": "alice"})
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice"}`), 201, "")
	// call returns a request's status and JSON body; unlike do it is safe
	// in goroutines (errors are reported, not fatal).
	call := func(method, u, auth, body string) (int, map[string]any) {
		req, err := http.NewRequest(method, u, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, nil
		}
		req.Header.Set("Authorization", "Bearer "+auth)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, nil
		}
		defer res.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, m := call("GET", h.URL()+"/_matrix/client/v3/account/whoami", "tok", ""); st != 200 || m["user_id"] != "@alice:"+h.ServerName() {
				t.Errorf("whoami %d: %d %v", i, st, m)
			}
			body := fmt.Sprintf(`{"localpart":"alice","device_id":"DEV%d"}`, i)
			if st, m := call("POST", h.URL()+"/_synapse/mas/upsert_device", secret, body); st != 201 {
				t.Errorf("upsert_device DEV%d: %d %v", i, st, m)
			}
			h.AddDevice("alice", fmt.Sprintf("STRAY%d", i))
			if _, ok := h.Users()["alice"]; !ok {
				t.Errorf("goroutine %d: alice missing from Users()", i)
			}
			_ = h.Calls()
		}()
	}
	wg.Wait()

	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("DEV%d", i), fmt.Sprintf("STRAY%d", i))
	}
	slices.Sort(want)
	if got := h.Devices("alice"); !slices.Equal(got, want) {
		t.Errorf("devices %v, want %v", got, want)
	}
	upserts := 0
	for _, c := range h.Calls() {
		if c.Path == "/_synapse/mas/upsert_device" && c.Status == 201 {
			upserts++
		}
	}
	if upserts != n {
		t.Errorf("%d upsert_device calls recorded as 201, want %d", upserts, n)
	}
	// Concurrent first requests may each miss the cache, but every
	// introspection counted was really sent, and no more than one per
	// request.
	a.mu.Lock()
	sent := a.requests
	a.mu.Unlock()
	if got := h.Introspections(); got < 1 || got > n || got != sent {
		t.Errorf("Introspections() = %d, auth server saw %d, want the same, between 1 and %d", got, sent, n)
	}
}

// TestMASDelay: with MASDelay a call is answered no sooner than the delay
// after it arrived, both times are recorded, and a call whose client gives
// up during the delay changes nothing and is recorded with status 0.
func TestMASDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	h := Start(t, Options{Secret: secret, MASDelay: delay})
	expect(t, mas(t, h, "provision_user", `{"localpart":"alice"}`), 201, "")

	ctx, cancel := context.WithTimeout(context.Background(), delay/3)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL()+"/_synapse/mas/provision_user", strings.NewReader(`{"localpart":"bob"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("a call cut short by its client was answered: %s", res.Status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(h.Calls()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	calls := h.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d calls recorded, want 2", len(calls))
	}
	if c := calls[0]; c.Status != 201 || c.Answered.Sub(c.Received) < delay {
		t.Errorf("the first call: status %d, answered %v after it arrived; want 201 after at least %v", c.Status, c.Answered.Sub(c.Received), delay)
	}
	if c := calls[1]; c.Status != 0 || c.Answered.Sub(c.Received) >= delay {
		t.Errorf("the abandoned call: status %d, ended %v after it arrived; want 0, before %v", c.Status, c.Answered.Sub(c.Received), delay)
	}
	if _, ok := h.Users()["bob"]; ok {
		t.Error("a call abandoned during the delay provisioned its user")
	}
}
