package devicegrant_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// synapseEnv is devicegrantd as the auth server of a homeserver that
// behaves like current Synapse (P-HS-1…5). Like every env, its store
// runs each Update function twice, so the outbox and provisioning code is
// checked to be safe to re-run.
type synapseEnv struct {
	*env
	hs *fakesynapse.Homeserver
}

func newSynapseEnv(t *testing.T, opts ...devtest.Option) *synapseEnv {
	t.Helper()
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: homeserverSecret, RequireProvisioning: true})
	opts = append([]devtest.Option{devtest.WithConfig(func(c *devicegrant.Config) {
		c.HomeserverEndpoint = hs.URL()
		c.ServerName = hs.ServerName()
	})}, opts...)
	e := newEnv(t, opts...)
	hs.SetAuthEndpoint(e.URL)
	return &synapseEnv{env: e, hs: hs}
}

// whoami asks the homeserver who a token belongs to, as a Matrix client
// would; Synapse introspects it at devicegrantd.
func (e *synapseEnv) whoami(token string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.hs.URL()+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return do(e.t, req)
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pollUntilTokens polls a device code until it yields tokens.
func (e *synapseEnv) pollUntilTokens(clientID, deviceCode string) map[string]any {
	e.t.Helper()
	interval := time.Second // what devtest configures
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(interval + 50*time.Millisecond) // a previous poll may have been just now
		status, m := e.poll(clientID, deviceCode)
		switch {
		case status == http.StatusOK:
			return m
		case m["error"] == "slow_down":
			interval += 5 * time.Second
		case m["error"] != "authorization_pending":
			e.t.Fatalf("poll: %d %v", status, m)
		}
	}
	e.t.Fatal("timed out waiting for the device's tokens")
	return nil
}

func calls(hs *fakesynapse.Homeserver, path string) []map[string]any {
	var out []map[string]any
	for _, c := range hs.Calls() {
		if strings.HasSuffix(c.Path, "/"+path) && c.Status < 300 {
			var m map[string]any
			json.Unmarshal(c.Body, &m)
			out = append(out, m)
		}
	}
	return out
}

// TestSynapseDeviceGrantProvisionsFirst: the homeserver has the user and
// the device before the device gets a token, and accepts the token
// (P-HS-2, P-HS-3, P-HS-4).
func TestSynapseDeviceGrantProvisionsFirst(t *testing.T) {
	e := newSynapseEnv(t)
	eventually(t, "alice is provisioned", func() bool { _, ok := e.hs.Users()[testUser]; return ok })

	clientID, _ := e.Register(deviceClientJSON)
	conf := e.oauthConfig(clientID, "SYNAPSEDEV1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *oauth2.Token, 1)
	go func() {
		tok, err := conf.DeviceAccessToken(ctx, da)
		if err != nil {
			t.Errorf("DeviceAccessToken: %v", err)
		}
		got <- tok
	}()
	newPhone(t).Decide(da.VerificationURIComplete, "approve")
	tok := <-got
	if tok == nil {
		t.FailNow()
	}
	// By the time the token exists, so does the device.
	if !slices.Contains(e.hs.Devices(testUser), "SYNAPSEDEV1") {
		t.Fatalf("token issued before the device existed; devices: %v", e.hs.Devices(testUser))
	}
	status, who := e.whoami(tok.AccessToken)
	if status != 200 || who["user_id"] != "@alice:"+e.hs.ServerName() || who["device_id"] != "SYNAPSEDEV1" {
		t.Fatalf("whoami: %d %v", status, who)
	}
	up := calls(e.hs, "upsert_device")
	if len(up) != 1 || up[0]["display_name"] != "Kitchen display" {
		t.Errorf("upsert_device calls: %v", up)
	}
}

// TestSynapseOutageLosesNothing: the homeserver is down while people
// approve devices; the devices wait (authorization_pending), and every
// call arrives once it is back.
func TestSynapseOutageLosesNothing(t *testing.T) {
	e := newSynapseEnv(t)
	eventually(t, "alice is provisioned", func() bool { _, ok := e.hs.Users()[testUser]; return ok })
	clientID, _ := e.Register(deviceClientJSON)

	e.hs.Down()
	devices := []string{"OUTAGEDEV1", "OUTAGEDEV2", "OUTAGEDEV3"}
	codes := map[string]string{}
	p := newPhone(t)
	for _, d := range devices {
		da := e.deviceAuth(clientID, d)
		codes[d] = da["device_code"].(string)
		p.Decide(da["verification_uri_complete"].(string), "approve")
	}
	eventually(t, "deliveries have failed a few times", func() bool {
		entries, _ := e.Server.Server.Outbox(context.Background(), 100)
		return len(entries) == 3 && entries[0].Attempts >= 3
	})
	for _, d := range devices {
		status, m := e.poll(clientID, codes[d])
		if m["error"] != "authorization_pending" {
			t.Fatalf("%s during the outage: %d %v, want authorization_pending", d, status, m)
		}
	}
	e.hs.Up()
	for _, d := range devices {
		tok := e.pollUntilTokens(clientID, codes[d])
		if status, who := e.whoami(tok["access_token"].(string)); status != 200 || who["device_id"] != d {
			t.Errorf("whoami for %s: %d %v", d, status, who)
		}
	}
	entries, _ := e.Server.Server.Outbox(context.Background(), 100)
	if len(entries) != 0 {
		t.Errorf("outbox not empty after the outage: %+v", entries)
	}
}

// TestSynapseRestartResumes: approvals made by a process that dies before
// delivering are delivered by the next process on the same database.
func TestSynapseRestartResumes(t *testing.T) {
	e := newSynapseEnv(t, devtest.WithoutRun())
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "RESTARTDEV")
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	if n := len(e.hs.Calls()); n != 0 {
		t.Fatalf("the stopped process made %d calls", n)
	}

	next, err := devicegrant.New(devicegrant.Config{
		Issuer: e.URL, ServerName: e.hs.ServerName(), HomeserverSecret: homeserverSecret, HomeserverEndpoint: e.hs.URL(),
		OutboxBackoff: devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}, e.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); next.Run(ctx) }()
	defer func() { cancel(); <-done }()

	tok := e.pollUntilTokens(clientID, da["device_code"].(string))
	if status, who := e.whoami(tok["access_token"].(string)); status != 200 || who["device_id"] != "RESTARTDEV" {
		t.Errorf("whoami: %d %v", status, who)
	}
	if users := calls(e.hs, "provision_user"); len(users) == 0 || users[0]["localpart"] != testUser {
		t.Errorf("provision_user calls: %v", users)
	}
}

// TestSynapseEndingSessionsDeletesDevices: revocation, refresh-token
// reuse, the account page and deactivation all remove the device from the
// homeserver, so its token stops working there at once despite Synapse's
// introspection cache.
func TestSynapseEndingSessionsDeletesDevices(t *testing.T) {
	e := newSynapseEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	signIn := func(device string) map[string]any {
		da := e.deviceAuth(clientID, device)
		newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
		tok := e.pollUntilTokens(clientID, da["device_code"].(string))
		if status, _ := e.whoami(tok["access_token"].(string)); status != 200 {
			t.Fatalf("%s: whoami %d", device, status)
		}
		return tok
	}
	gone := func(device string, tok map[string]any) {
		t.Helper()
		eventually(t, device+" is deleted from the homeserver", func() bool {
			return !slices.Contains(e.hs.Devices(testUser), device)
		})
		if status, _ := e.whoami(tok["access_token"].(string)); status != 401 {
			t.Errorf("%s: whoami after the session ended: %d, want 401", device, status)
		}
	}

	revoked := signIn("REVOKEDDEV")
	e.Post("oauth2/revoke", url.Values{"client_id": {clientID}, "token": {revoked["refresh_token"].(string)}})
	gone("REVOKEDDEV", revoked)

	stolen := signIn("STOLENDEV1")
	_, r1 := e.refresh(clientID, stolen["refresh_token"].(string))
	e.refresh(clientID, r1["refresh_token"].(string))
	e.refresh(clientID, stolen["refresh_token"].(string)) // reuse: theft
	gone("STOLENDEV1", r1)

	byPage := signIn("ACCOUNTDEV")
	p := newPhone(t)
	pg := p.Get(e.URL + "account?action=org.matrix.session_end&device_id=ACCOUNTDEV")
	if pg.Form("/login") != nil {
		pg = p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	}
	pg = p.Submit(pg, "/account/sessions/end", url.Values{"password": {testPassword}})
	if !strings.Contains(pg.Text(), "is signed out") {
		t.Fatalf("end session page: %s", pg.Text())
	}
	gone("ACCOUNTDEV", byPage)

	last := signIn("LASTDEVICE")
	pg = p.Get(e.URL + "account?action=org.matrix.account_deactivate")
	pg = p.Submit(pg, "/account/deactivate", url.Values{"password": {testPassword}, "confirm_text": {testUser}})
	if !strings.Contains(pg.Text(), "is deactivated") {
		t.Fatalf("deactivate page: %s", pg.Text())
	}
	gone("LASTDEVICE", last)
	eventually(t, "delete_user reaches the homeserver", func() bool { return e.hs.Users()[testUser].Deactivated })
	if got := calls(e.hs, "delete_device"); len(got) != 3 {
		t.Errorf("delete_device calls = %v, want one per ended session before deactivation", got)
	}
}

// TestSynapseSyncDevicesRepairsDrift: sync_devices makes the homeserver's
// device list match the live sessions again.
func TestSynapseSyncDevicesRepairsDrift(t *testing.T) {
	e := newSynapseEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "KEPTDEVICE")
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	e.pollUntilTokens(clientID, da["device_code"].(string))

	e.hs.AddDevice(testUser, "STRAYDEVICE")
	e.hs.RemoveDevice(testUser, "KEPTDEVICE")
	if err := e.Server.Server.SyncDevices(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the device list is repaired", func() bool {
		return slices.Equal(e.hs.Devices(testUser), []string{"KEPTDEVICE"})
	})
}

// TestSynapseMetadataContract: Synapse reads issuer and
// account_management_uri from the openid-configuration (P-HS-1) and
// serves it as its own auth_metadata.
func TestSynapseMetadataContract(t *testing.T) {
	e := newSynapseEnv(t)
	req, _ := http.NewRequest("GET", e.hs.URL()+"/_matrix/client/v1/auth_metadata", nil)
	status, m := do(t, req)
	if status != 200 || m["issuer"] != e.URL || m["account_management_uri"] != e.URL+"account" {
		t.Fatalf("auth_metadata through the homeserver: %d %v", status, m)
	}
	actions, _ := m["account_management_actions_supported"].([]any)
	for _, a := range []string{"org.matrix.profile", "org.matrix.devices_list", "org.matrix.device_view",
		"org.matrix.device_delete", "org.matrix.account_deactivate", "org.matrix.cross_signing_reset"} {
		if !contains(actions, a) {
			t.Errorf("account_management_actions_supported lacks %s", a)
		}
	}
}

func fakeUser(localpart string) fakesynapse.User { return fakesynapse.User{Localpart: localpart} }
