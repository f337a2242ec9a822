package devicegrant_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestPollHearsOtherInstance: a device polls instance B, which then has
// its grant in its polling cache as pending; the person approves (or
// denies) through instance A, and B's very next poll answers with the
// tokens (or access_denied) well within a second, though B's cache would
// keep the pending state for 10 s: A's transaction announced the change
// and B, listening (PostgreSQL NOTIFY), forgot it (issue 15, P-DEV-5).
func TestPollHearsOtherInstance(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.instances[0], c.instances[1]
	clientID := c.registerAt(a, deviceClientJSON)
	phone := devtest.NewPhone(t)

	tokens := func(status int, m map[string]any) bool { return status == http.StatusOK && m["access_token"] != nil }
	denied := func(status int, m map[string]any) bool {
		return status == http.StatusBadRequest && m["error"] == "access_denied"
	}
	for _, tc := range []struct {
		action, device string
		want           func(status int, m map[string]any) bool
		within         time.Duration
	}{
		// The first only waits for B to be listening: it starts listening
		// in the background (Server.Run), and a resync on start drops
		// its cache too.
		{"deny", "NOTIFYDEV0", denied, 5 * time.Second},
		{"approve", "NOTIFYDEV1", tokens, time.Second},
		{"deny", "NOTIFYDEV2", denied, time.Second},
	} {
		status, da := c.post(b, "oauth2/device", url.Values{"client_id": {clientID},
			"scope": {apiScope + " urn:matrix:client:device:" + tc.device}})
		code, _ := da["device_code"].(string)
		complete, err := url.Parse(fmt.Sprint(da["verification_uri_complete"]))
		if status != http.StatusOK || code == "" || err != nil || complete.Path == "" {
			t.Fatalf("device authorization at B: %d %v", status, da)
		}
		poll := func() (int, map[string]any) {
			return c.post(b, "oauth2/token", url.Values{"grant_type": {deviceGrant}, "device_code": {code}, "client_id": {clientID}})
		}
		// B reads the grant and keeps it in memory as pending.
		if status, m := poll(); status != http.StatusBadRequest || m["error"] != "authorization_pending" {
			t.Fatalf("first poll at B: %d %v, want authorization_pending", status, m)
		}
		// The phone's pages go to A itself, not through the proxy.
		before := c.hits[0].Load() + c.hits[1].Load()
		if pg := phone.Decide(a+strings.TrimPrefix(complete.Path, "/"), tc.action); pg.Status != http.StatusOK {
			t.Fatalf("%s through A answered %d: %s", tc.action, pg.Status, pg.Text())
		}
		if after := c.hits[0].Load() + c.hits[1].Load(); after != before {
			t.Fatalf("the phone's pages went through the proxy (%d requests), so maybe to B", after-before)
		}
		decided := time.Now()
		// B is polled as fast as a broken device would: while B still
		// believes the grant pending it answers slow_down (pacing), once it
		// has heard of the decision it answers it.
		for {
			status, m := poll()
			if tc.want(status, m) {
				t.Logf("%s through A reached a poll at B after %v", tc.action, time.Since(decided).Round(time.Millisecond))
				break
			}
			e := m["error"]
			if status != http.StatusBadRequest || (e != "slow_down" && e != "authorization_pending") {
				t.Fatalf("poll at B after the %s at A: %d %v", tc.action, status, m)
			}
			if time.Since(decided) > tc.within {
				t.Fatalf("B still answers %v %v after the %s at A: it did not hear of it (its cache keeps a grant 10 s)", e, tc.within, tc.action)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
