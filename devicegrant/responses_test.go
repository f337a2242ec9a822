package devicegrant_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// postForm posts a form and returns the response's status, headers and
// JSON body.
func (e *env) postForm(path string, form url.Values) (int, http.Header, map[string]any) {
	e.t.Helper()
	resp, err := http.PostForm(e.URL+path, form)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		e.t.Fatalf("POST %s: %d, body not JSON: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, resp.Header, m
}

// notCached checks the headers RFC 6749 §5.1 asks of responses carrying
// codes or tokens.
func notCached(t *testing.T, what string, h http.Header) {
	t.Helper()
	if h.Get("Cache-Control") != "no-store" || h.Get("Pragma") != "no-cache" {
		t.Errorf("%s: Cache-Control %q, Pragma %q; want no-store, no-cache", what, h.Get("Cache-Control"), h.Get("Pragma"))
	}
}

// TestDeviceResponsesAreNotCached: the device authorization response and
// every token endpoint answer, error or tokens, forbid caching (P-DEV-1,
// P-AC-4).
func TestDeviceResponsesAreNotCached(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	status, h, da := e.postForm("oauth2/device", url.Values{"client_id": {clientID},
		"scope": {apiScope + " urn:matrix:client:device:NOCACHEDEV1"}})
	if status != http.StatusOK {
		t.Fatalf("device authorization: %d %v", status, da)
	}
	notCached(t, "device authorization", h)

	poll := url.Values{"grant_type": {deviceGrant}, "device_code": {da["device_code"].(string)}, "client_id": {clientID}}
	status, h, m := e.postForm("oauth2/token", poll)
	wantError(t, "first poll", status, m, "authorization_pending")
	notCached(t, "authorization_pending", h)

	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	e.Clock.Advance(2 * time.Second)
	status, h, m = e.postForm("oauth2/token", poll)
	if status != http.StatusOK || m["access_token"] == nil {
		t.Fatalf("poll after approval: %d %v", status, m)
	}
	notCached(t, "token response", h)

	status, h, m = e.postForm("oauth2/token", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {m["refresh_token"].(string)}, "client_id": {clientID}})
	if status != http.StatusOK || m["access_token"] == nil {
		t.Fatalf("refresh: %d %v", status, m)
	}
	notCached(t, "refresh response", h)
}

// TestSecretsAreStoredHashed: after a device has polled its tokens and
// refreshed them, the database files hold the SHA-256 of the device code
// and of every token, and none of them in the clear (P-DEV-2).
func TestSecretsAreStoredHashed(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "HASHEDDEV01")
	deviceCode := da["device_code"].(string)
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	e.Clock.Advance(2 * time.Second)
	status, first := e.poll(clientID, deviceCode)
	if status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, first)
	}
	status, second := e.Post("oauth2/token", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {first["refresh_token"].(string)}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, second)
	}

	// SQLite keeps recent writes in the write-ahead log until a
	// checkpoint: read both files.
	var db []byte
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(e.sqliteFile() + suffix)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		db = append(db, b...)
	}
	secrets := map[string]string{
		"device code":           deviceCode,
		"first access token":    first["access_token"].(string),
		"first refresh token":   first["refresh_token"].(string),
		"second access token":   second["access_token"].(string),
		"second refresh token":  second["refresh_token"].(string),
		"device code, its body": strings.TrimPrefix(deviceCode, "dgd_")[:20],
	}
	for what, secret := range secrets {
		if bytes.Contains(db, []byte(secret)) {
			t.Errorf("the database holds the %s in the clear", what)
		}
		if strings.HasPrefix(what, "device code,") {
			continue
		}
		if sum := sha256.Sum256([]byte(secret)); !bytes.Contains(db, sum[:]) {
			t.Errorf("the database holds no SHA-256 of the %s: the test reads the wrong files", what)
		}
	}
}

// TestDeviceGrantDefaults: without settings, a device code lives ten
// minutes and the device polls every five seconds (P-DEV-9). The other
// tests run at a one-second interval.
func TestDeviceGrantDefaults(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) { c.PollInterval, c.DeviceCodeTTL = 0, 0 }))
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "DEFAULTDEV1")
	if da["expires_in"] != float64(600) || da["interval"] != float64(5) {
		t.Errorf("expires_in %v, interval %v; want 600 and 5", da["expires_in"], da["interval"])
	}
}
