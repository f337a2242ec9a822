package interop

import (
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestOpenIDClientDeviceFlow: openid-client registers a confidential
// client_secret_basic client, runs the device grant with openid, refreshes,
// introspects and revokes. It percent-encodes its Basic credentials
// (RFC 6749 §2.3.1), validates our id_token and discovery document itself
// (P-DISC-1, P-DCR-1, P-DEV-1, P-DEV-5, P-RT-2, P-INT-1, P-REV-1, P-OIDC-1).
func TestOpenIDClientDeviceFlow(t *testing.T) {
	requireNodeModule(t, "openid-client")
	srv := devtest.Start(t)
	steps := nodeSteps(t, 60*time.Second, func(step string, m map[string]any, _ map[string]map[string]any, _ func(any)) {
		if step == "device" {
			// The person approves on their phone.
			devtest.NewPhone(t).Decide(m["verification_uri_complete"].(string), "approve")
		}
	}, "openid-client.mjs", srv.URL, "INTEROPDEV1")

	reg := steps["registered"]
	if reg == nil || reg["has_secret"] != true || reg["client_id"] == "" {
		t.Fatalf("registration: %v", reg)
	}
	tok := steps["tokens"]
	if tok == nil || tok["iss"] != srv.URL || tok["aud"] != reg["client_id"] || tok["sub"] == nil {
		t.Fatalf("device grant / id_token: %v", tok)
	}
	if r := steps["refreshed"]; r == nil || r["rotated"] != true {
		t.Fatalf("refresh: %v", r)
	}
	if in := steps["introspected"]; in == nil || in["active"] != true || in["device_id"] != "INTEROPDEV1" || in["client_id"] != reg["client_id"] {
		t.Fatalf("introspection: %v", in)
	}
	if rv := steps["revoked"]; rv == nil || rv["active"] != false {
		t.Fatalf("revocation: %v", rv)
	}
	// What the homeserver sees, independently of the client's view.
	if m := srv.Introspect(steps["refreshed"]["access_token"].(string)); m["active"] != false {
		t.Errorf("the homeserver still sees the revoked token as active: %v", m)
	}
	if m := srv.Introspect(tok["access_token"].(string)); m["active"] != false {
		t.Errorf("the first access token survived rotation and revocation: %v", m)
	}
}
