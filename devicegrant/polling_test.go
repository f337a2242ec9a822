package devicegrant_test

import (
	"database/sql"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// deviceAuth asks for a device code with a raw form post, as firmware would.
func (e *env) deviceAuth(clientID, deviceID string) map[string]any {
	e.t.Helper()
	status, m := e.Post("oauth2/device", url.Values{"client_id": {clientID},
		"scope": {apiScope + " urn:matrix:client:device:" + deviceID}})
	if status != http.StatusOK {
		e.t.Fatalf("device authorization: %d %v", status, m)
	}
	return m
}

func (e *env) poll(clientID, deviceCode string) (int, map[string]any) {
	e.t.Helper()
	return e.Post("oauth2/token", url.Values{"grant_type": {deviceGrant}, "device_code": {deviceCode}, "client_id": {clientID}})
}

// wantError checks a token endpoint error: 400 for every code but
// invalid_client, which is 401 (RFC 6749 §5.2; P-DEV-5: the peer's 403 is
// wrong).
func wantError(t *testing.T, what string, status int, m map[string]any, code string) {
	t.Helper()
	want := http.StatusBadRequest
	if code == "invalid_client" {
		want = http.StatusUnauthorized
	}
	if status != want || m["error"] != code {
		t.Errorf("%s: %d %v, want %d %s", what, status, m, want, code)
	}
	if d, _ := m["error_description"].(string); d == "" {
		t.Errorf("%s: no error_description", what)
	}
}

// TestPollingSemantics follows one grant through pending, slow_down with a
// growing interval, and approval, on a settable clock. P-DEV-5, P-DEV-6.
func TestPollingSemantics(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "POLLDEVICE1")
	dc := da["device_code"].(string)

	status, m := e.poll(clientID, dc)
	wantError(t, "first poll", status, m, "authorization_pending")

	// Polling again at once is too fast: slow_down, and the interval grows
	// by 5 s each time (RFC 8628 §3.5).
	status, m = e.poll(clientID, dc)
	wantError(t, "immediate second poll", status, m, "slow_down")
	e.Clock.Advance(2 * time.Second) // enough for the old 1 s interval, not the new 6 s
	status, m = e.poll(clientID, dc)
	wantError(t, "poll 2 s later", status, m, "slow_down")
	if !strings.Contains(m["error_description"].(string), "11s") {
		t.Errorf("interval after two slow_downs: %v, want 11s", m["error_description"])
	}
	e.Clock.Advance(11 * time.Second)
	status, m = e.poll(clientID, dc)
	wantError(t, "poll after the grown interval", status, m, "authorization_pending")
	// A little early is forgiven (a fifth of the interval: ticker jitter),
	// more is not.
	e.Clock.Advance(9 * time.Second)
	status, m = e.poll(clientID, dc)
	wantError(t, "poll 9 s into an 11 s interval", status, m, "authorization_pending")
	e.Clock.Advance(8 * time.Second)
	status, m = e.poll(clientID, dc)
	wantError(t, "poll 8 s into an 11 s interval", status, m, "slow_down")
	e.Clock.Advance(16 * time.Second)

	// Another client cannot redeem this code.
	otherID, _ := e.Register(otherClientJSON)
	e.Clock.Advance(16 * time.Second)
	status, m = e.poll(otherID, dc)
	wantError(t, "poll by another client", status, m, "invalid_grant")

	newPhone(t).Decide(strings.ToLower(da["verification_uri_complete"].(string)), "approve")
	e.Clock.Advance(16 * time.Second)
	status, m = e.poll(clientID, dc)
	if status != http.StatusOK || m["access_token"] == nil || m["refresh_token"] == nil {
		t.Fatalf("poll after approval: %d %v", status, m)
	}
	e.Clock.Advance(16 * time.Second)
	status, m = e.poll(clientID, dc)
	wantError(t, "poll after exchange", status, m, "invalid_grant")

	status, m = e.poll(clientID, "dgd_notarealcodeatallxxxxxxxxxxxxx_AAAAAA")
	wantError(t, "unknown device code", status, m, "invalid_grant")
	status, m = e.Post("oauth2/token", url.Values{"grant_type": {deviceGrant}, "client_id": {clientID}})
	wantError(t, "missing device code", status, m, "invalid_request")
}

// TestDeniedAndExpired: P-DEV-5's access_denied and expired_token, and
// P-DEV-9's ten-minute default lifetime.
func TestDeniedAndExpired(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)

	denied := e.deviceAuth(clientID, "DENIEDDEV01")
	pg := newPhone(t).Decide(denied["verification_uri_complete"].(string), "deny")
	if !strings.Contains(pg.Text(), "Request denied") {
		t.Errorf("deny page: %s", pg.Text())
	}
	status, m := e.poll(clientID, denied["device_code"].(string))
	wantError(t, "poll after deny", status, m, "access_denied")

	expiring := e.deviceAuth(clientID, "EXPIREDEV01")
	if expiring["expires_in"] != float64(600) || expiring["interval"] != float64(1) {
		t.Errorf("expires_in %v interval %v", expiring["expires_in"], expiring["interval"])
	}
	e.Clock.Advance(10*time.Minute + time.Second)
	status, m = e.poll(clientID, expiring["device_code"].(string))
	wantError(t, "poll after expiry", status, m, "expired_token")

	// The phone cannot approve an expired code either.
	pg = newPhone(t).Get(expiring["verification_uri_complete"].(string))
	if pg.Status != http.StatusBadRequest || !strings.Contains(pg.Text(), "expired") {
		t.Errorf("expired code page: %d %s", pg.Status, pg.Text())
	}
}

// TestExactlyOneRedemption: an approved device code yields tokens exactly
// once under concurrent polls (P-DEV-6).
func TestExactlyOneRedemption(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "RACEDEVICE1")
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")

	const n = 24
	var wg sync.WaitGroup
	results := make(chan map[string]any, n)
	statuses := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, m := e.poll(clientID, da["device_code"].(string))
			statuses <- s
			results <- m
		}()
	}
	wg.Wait()
	close(results)
	close(statuses)
	ok := 0
	for m := range results {
		s := <-statuses
		switch {
		case s == http.StatusOK:
			ok++
		case m["error"] != "invalid_grant":
			t.Errorf("losing poll answered %d %v, want invalid_grant", s, m)
		}
	}
	if ok != 1 {
		t.Fatalf("%d polls received tokens, want exactly 1", ok)
	}
}

// TestDeviceAuthorizationErrors: bad requests get clear RFC errors.
// P-DCR-7, P-SCOPE-1, P-SCOPE-2.
func TestDeviceAuthorizationErrors(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	webID, _ := e.Register(`{"client_uri":"https://app.example.org/","redirect_uris":["https://app.example.org/cb"],"token_endpoint_auth_method":"none"}`)
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"no client", url.Values{"scope": {apiScope}}, 401, "invalid_client"},
		{"unknown client", url.Values{"client_id": {"nope"}, "scope": {apiScope}}, 401, "invalid_client"},
		{"P-DCR-7 client without the device grant", url.Values{"client_id": {webID}, "scope": {apiScope}}, 400, "unauthorized_client"},
		{"public client sending a secret", url.Values{"client_id": {clientID}, "client_secret": {"x"}, "scope": {apiScope}}, 401, "invalid_client"},
		{"P-SCOPE-1 no scope", url.Values{"client_id": {clientID}}, 400, "invalid_scope"},
		{"P-SCOPE-1 unknown scope", url.Values{"client_id": {clientID}, "scope": {apiScope + " admin"}}, 400, "invalid_scope"},
		{"P-SCOPE-2 device scope without api scope", url.Values{"client_id": {clientID}, "scope": {"urn:matrix:client:device:ABCDEFGHIJ"}}, 400, "invalid_scope"},
		{"P-SCOPE-2 short device id", url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:client:device:SHORT"}}, 400, "invalid_scope"},
		{"P-SCOPE-2 api scope without a device scope", url.Values{"client_id": {clientID}, "scope": {apiScope}}, 400, "invalid_scope"},
		{"P-SCOPE-2 unstable api scope without a device scope", url.Values{"client_id": {clientID}, "scope": {"urn:matrix:org.matrix.msc2967.client:api:*"}}, 400, "invalid_scope"},
		{"P-SCOPE-2 two device scopes", url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:client:device:ABCDEFGHIJ urn:matrix:client:device:KLMNOPQRST"}}, 400, "invalid_scope"},
		{"P-SCOPE-1 stable and unstable mixed", url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:org.matrix.msc2967.client:device:ABCDEFGHIJ"}}, 400, "invalid_scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, m := e.Post("oauth2/device", tc.form)
			if status != tc.status || m["error"] != tc.code {
				t.Errorf("got %d %v, want %d %s", status, m, tc.status, tc.code)
			}
		})
	}
	// The unstable forms alone are fine.
	status, m := e.Post("oauth2/device", url.Values{"client_id": {clientID},
		"scope": {"urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:ABCDEFGHIJ"}})
	if status != http.StatusOK {
		t.Errorf("unstable scopes: %d %v", status, m)
	}
}

// TestCleanup: a day after expiry a grant is gone (a poll then gets
// invalid_grant); a week after its successor was used a spent refresh
// token is gone (P-RT-2).
func TestCleanup(t *testing.T) {
	e := newEnv(t, withClock())
	ctx := t.Context()
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "CLEANUPDEV")
	tok := e.signIn(clientID, "CLEANUPDV2")
	e.Clock.Advance(2 * time.Second)
	_, fresh := e.refresh(clientID, tok["refresh_token"].(string))
	_, fresh = e.refresh(clientID, fresh["refresh_token"].(string)) // the first successor is used

	e.Clock.Advance(11 * time.Minute)
	status, m := e.poll(clientID, da["device_code"].(string))
	wantError(t, "poll after expiry", status, m, "expired_token")
	e.Clock.Advance(25 * time.Hour)
	if n, err := e.Server.Server.Cleanup(ctx); err != nil || n < 2 {
		t.Fatalf("Cleanup: %d rows, %v", n, err)
	}
	status, m = e.poll(clientID, da["device_code"].(string))
	wantError(t, "poll a day after expiry", status, m, "invalid_grant")

	e.Clock.Advance(7 * 24 * time.Hour)
	if _, err := e.Server.Server.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	status, m = e.refresh(clientID, tok["refresh_token"].(string))
	wantError(t, "the spent refresh token after a week", status, m, "invalid_grant")
	if status, m := e.refresh(clientID, fresh["refresh_token"].(string)); status != 200 {
		t.Errorf("the live refresh token after cleanup: %d %v", status, m)
	}
}

// TestSlowDownIsCapped: a device stuck in a tight poll loop keeps getting
// slow_down, but the interval it is told stops growing at 60 s (it used to
// reach hours, longer than the code lives), polls at the cap write
// nothing, and once it waits the interval it is told it can still redeem
// its approved code. P-DEV-5, RFC 8628 §3.5.
func TestSlowDownIsCapped(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "TIGHTLOOP01")
	dc := da["device_code"].(string)
	status, m := e.poll(clientID, dc)
	wantError(t, "first poll", status, m, "authorization_pending")
	var told time.Duration
	for i := 0; i < 200; i++ {
		e.Clock.Advance(100 * time.Millisecond)
		status, m = e.poll(clientID, dc)
		wantError(t, "tight poll", status, m, "slow_down")
		desc := m["error_description"].(string)
		d, err := time.ParseDuration(desc[strings.LastIndex(desc, "least ")+len("least ") : strings.Index(desc, " between")])
		if err != nil {
			t.Fatalf("interval in %q: %v", desc, err)
		}
		if d > time.Minute {
			t.Fatalf("poll %d: told to wait %v, more than the 60 s cap", i, d)
		}
		told = d
	}
	if told != time.Minute {
		t.Errorf("after 200 fast polls told %v, want the 60 s cap", told)
	}
	// At the cap a fast poll costs a lookup, not a write: the database
	// file does not change (PRAGMA data_version counts other
	// connections' commits that changed it).
	db, err := sql.Open("sqlite3", "file:"+e.sqliteFile()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	version := func() (v int64) {
		if err := db.QueryRow("PRAGMA data_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := version()
	for i := 0; i < 20; i++ {
		e.Clock.Advance(100 * time.Millisecond)
		status, m = e.poll(clientID, dc)
		wantError(t, "tight poll at the cap", status, m, "slow_down")
	}
	if after := version(); after != before {
		t.Errorf("fast polls at the cap wrote to the database (data_version %d -> %d)", before, after)
	}
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	e.Clock.Advance(told)
	status, m = e.poll(clientID, dc)
	if status != http.StatusOK || m["access_token"] == nil {
		t.Fatalf("poll after waiting the interval told: %d %v", status, m)
	}
}
