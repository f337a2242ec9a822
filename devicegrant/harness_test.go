package devicegrant_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

const (
	testUser         = devtest.Username
	testPassword     = devtest.Password
	homeserverSecret = "hs-secret-for-tests"
	apiScope         = "urn:matrix:client:api:*"
	deviceGrant      = "urn:ietf:params:oauth:grant-type:device_code"
)

// env is a real devicegrantd core on loopback HTTP with a real SQLite file,
// and the requests these tests make of it.
type env struct {
	*devtest.Server
	t *testing.T
}

func newEnv(t *testing.T, opts ...devtest.Option) *env {
	t.Helper()
	opts = append([]devtest.Option{devtest.WithConfig(func(c *devicegrant.Config) { c.HomeserverSecret = homeserverSecret })}, opts...)
	return &env{Server: devtest.Start(t, opts...), t: t}
}

func withClock() devtest.Option { return devtest.WithClock() }

func newPhone(t *testing.T) *devtest.Phone { return devtest.NewPhone(t) }

// post sends a form and decodes a JSON answer.
func (e *env) post(path string, form url.Values, hdr ...string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(e.t, req)
}

func (e *env) postJSON(path, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(e.t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: not JSON (%d): %s", req.Method, req.URL.Path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

const deviceClientJSON = `{
	"client_name": "Kitchen display",
	"client_uri": "https://kitchen.example.org/",
	"logo_uri": "https://kitchen.example.org/logo.png",
	"application_type": "native",
	"token_endpoint_auth_method": "none",
	"grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
}`

// register registers a client and returns its id and secret.
func (e *env) register(body string) (id, secret string) {
	e.t.Helper()
	status, m := e.postJSON("oauth2/registration", body)
	if status != http.StatusCreated {
		e.t.Fatalf("register: %d %v", status, m)
	}
	id, _ = m["client_id"].(string)
	secret, _ = m["client_secret"].(string)
	return id, secret
}

// oauthConfig is the device's x/oauth2 configuration.
func (e *env) oauthConfig(clientID, deviceID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: e.URL + "oauth2/device",
			TokenURL:      e.URL + "oauth2/token",
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{apiScope, "urn:matrix:client:device:" + deviceID},
	}
}

func (e *env) introspect(token string) map[string]any {
	e.t.Helper()
	status, m := e.post("oauth2/introspect", url.Values{"token": {token}, "token_type_hint": {"access_token"}},
		"Authorization", "Bearer "+homeserverSecret, "X-MAS-Supports-Device-Id", "1")
	if status != http.StatusOK {
		e.t.Fatalf("introspect: %d %v", status, m)
	}
	return m
}

func basicAuth(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
}
