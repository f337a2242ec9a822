package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestUnusedClientsAreDeleted: registration is open to anyone, so a client
// nobody signs in with is deleted a day after its last registration, while
// one with a session stays (P-DCR-6) and registering again restarts the
// day (issue 10.9).
func TestUnusedClientsAreDeleted(t *testing.T) {
	e := newEnv(t, withClock())
	ctx := t.Context()
	used, _ := e.Register(deviceClientJSON)
	tok := e.signIn(used, "USEDDEVICE")
	unused, _ := e.Register(otherClientJSON)
	confidential, secret := e.Register(strings.Replace(otherClientJSON, `"none"`, `"client_secret_post"`, 1))
	renamed := strings.Replace(deviceClientJSON, "Kitchen display", "Porch display", 1)
	again, _ := e.Register(renamed)

	e.Clock.Advance(20 * time.Hour)
	if id, _ := e.Register(renamed); id != again {
		t.Fatalf("identical registration got %s, want the shared %s", id, again)
	}
	e.Clock.Advance(5 * time.Hour)
	if _, err := e.Server.Server.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for name, form := range map[string]url.Values{
		"unused public":       {"client_id": {unused}, "scope": {apiScope}},
		"unused confidential": {"client_id": {confidential}, "client_secret": {secret}, "scope": {apiScope}},
	} {
		if status, m := e.Post("oauth2/device", form); status != http.StatusUnauthorized || m["error"] != "invalid_client" {
			t.Errorf("%s client after a day: %d %v, want invalid_client", name, status, m)
		}
	}
	if status, m := e.Post("oauth2/device", url.Values{"client_id": {again}, "scope": {apiScope + " urn:matrix:client:device:AGAINDEVICE"}}); status != http.StatusOK {
		t.Errorf("client registered again 5 h ago: %d %v", status, m)
	}
	if status, m := e.refresh(used, tok["refresh_token"].(string)); status != http.StatusOK {
		t.Errorf("client with a session: refresh %d %v", status, m)
	}
}

// TestNewClientsHaveAGlobalBudget: per-address limits do not bound what
// many addresses can store, so registrations that add a client row share
// one server-wide budget; one that reuses an identical public client
// (P-DCR-6) does not spend it, so known apps keep signing in (issue 10.9).
func TestNewClientsHaveAGlobalBudget(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.NewClients = devicegrant.RateLimit{Burst: 2, Every: time.Hour}
	}))
	shared, _ := e.Register(deviceClientJSON)
	e.Register(strings.Replace(otherClientJSON, `"none"`, `"client_secret_post"`, 1))
	status, m := e.PostJSON("oauth2/registration", otherClientJSON)
	if status != http.StatusTooManyRequests || m["error"] != "temporarily_unavailable" {
		t.Errorf("third new client: %d %v, want 429 temporarily_unavailable", status, m)
	}
	for range 3 {
		if id, _ := e.Register(deviceClientJSON); id != shared {
			t.Errorf("identical registration got %s, want %s", id, shared)
		}
	}
}
