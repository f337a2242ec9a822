package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestDeviceAuthorizationUserAgentNotUTF8: the device authorization
// keeps the requester's User-Agent for the approval page (P-DEV-1, P-DEV-7), and a
// header may carry any byte from 0x80 up, which no form check sees. A
// User-Agent that is not UTF-8, or a long one that the cut at 256 bytes
// splits inside a character, is stored as text all the same: PostgreSQL
// refused the row and the device got a 500 (run with
// DEVICEGRANT_CORE_STORE=postgres). The page shows valid text.
func TestDeviceAuthorizationUserAgentNotUTF8(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	for _, tc := range []struct{ name, agent, device string }{
		{"raw bytes", "kiosk/1.0 \xff\xfe\xc0\xaf", "AGENTBYTES"},
		// 401 bytes: the cut at 256 falls inside the 128th é.
		{"cut inside a character", "x" + strings.Repeat("é", 200), "AGENTSPLIT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := e.Post("oauth2/device", url.Values{"client_id": {clientID},
				"scope": {apiScope + " urn:matrix:client:device:" + tc.device}}, "User-Agent", tc.agent)
			if status != http.StatusOK {
				t.Fatalf("device authorization: %d %v", status, m)
			}
			complete, _ := m["verification_uri_complete"].(string)
			phone, _ := signedInPhone(t, e, "account")
			pg := phone.Get(complete)
			if pg.Status != http.StatusOK {
				t.Fatalf("approval page: %d %s", pg.Status, pg.Text())
			}
			if !utf8.ValidString(pg.Body) {
				t.Error("the approval page is not valid UTF-8")
			}
		})
	}
}
