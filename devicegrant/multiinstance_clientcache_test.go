package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestClientTrustHeardByOtherInstance: instance B has a confidential
// client's row in its client cache; the operator changes the client's
// trust through instance A (its admin API, as `devicegrantd client trust`
// on the same database does), and B's very next requests see the change
// well within a second, though B's cache would keep the row 10 s: A's
// transaction announced the client under topic "client" and B, listening
// (PostgreSQL NOTIFY), forgot it (issue 15). Trust lets the client
// introspect other clients' tokens (RFC 7662 §4).
func TestClientTrustHeardByOtherInstance(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.servers[0], c.instances[1]
	deviceClient := c.register(deviceClientJSON)
	dc := c.deviceAuthorization(t, deviceClient, "TRUSTHEARD")
	if pg := devtest.NewPhone(t).Decide(dc.complete, "approve"); pg.Status != http.StatusOK {
		t.Fatalf("approval through the proxy answered %d: %s", pg.Status, pg.Text())
	}
	access, _ := c.redeem(t, deviceClient, dc)

	req, err := http.NewRequest(http.MethodPost, c.issuer+"oauth2/registration", strings.NewReader(confidentialJSON))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, m := devtest.Do(t, req)
	confID, _ := m["client_id"].(string)
	confSecret, _ := m["client_secret"].(string)
	if status != http.StatusCreated || confID == "" || confSecret == "" {
		t.Fatalf("register a confidential client: %d %v", status, m)
	}
	activeAtB := func() bool {
		t.Helper()
		status, m := c.post(b, "oauth2/introspect", url.Values{"token": {access}}, "Authorization", basicAuthHeader(confID, confSecret))
		if status != http.StatusOK {
			t.Fatalf("introspect at B: %d %v", status, m)
		}
		return active(m)
	}
	for _, tc := range []struct {
		trusted bool
		within  time.Duration
	}{
		// The first only waits for B to be listening: it starts
		// listening in the background (Server.Run), and the resync on
		// start drops its caches too.
		{true, 5 * time.Second},
		{false, time.Second},
		{true, time.Second},
	} {
		// B reads the client and keeps it in memory, as it is now.
		if activeAtB() == tc.trusted {
			t.Fatalf("before the change to trusted=%v at A, B already answers as if it were made", tc.trusted)
		}
		if err := a.TrustClient(t.Context(), confID, tc.trusted); err != nil {
			t.Fatal(err)
		}
		changed := time.Now()
		for activeAtB() != tc.trusted {
			if time.Since(changed) > tc.within {
				t.Fatalf("B still sees the client's trust as before %v after A set it to %v: it did not hear of it (its cache keeps a client 10 s)", tc.within, tc.trusted)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("trusted=%v at A reached B after %v", tc.trusted, time.Since(changed).Round(time.Millisecond))
	}
}
