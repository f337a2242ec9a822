package devicegrant_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// confidentialJSON is a confidential client, which introspection trusts
// with other clients' tokens only once the operator trusts it.
const confidentialJSON = `{"client_uri":"https://bot.example.org/","token_endpoint_auth_method":"client_secret_basic","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`

// TestKnownClientNotReread: polls and refreshes of a client read lately
// are answered without reading its row again (issue 15: on PostgreSQL
// that read was a round trip per poll), until clientCacheTTL has passed
// since the read began.
func TestKnownClientNotReread(t *testing.T) {
	e := newEnv(t, withClock())
	base, cs := secondInstance(t, e, e.Clock.Now)
	clientID, _ := e.Register(deviceClientJSON)
	post := func(path string, form url.Values) (int, map[string]any) {
		return do(t, newPost(t, base+path, form, ""))
	}
	status, da := post("oauth2/device", url.Values{"client_id": {clientID},
		"scope": {apiScope + " urn:matrix:client:device:CLIENTCACHE1"}})
	if status != http.StatusOK {
		t.Fatalf("device authorization: %d %v", status, da)
	}
	poll := func() (int, map[string]any) {
		return post("oauth2/token", url.Values{"grant_type": {deviceGrant},
			"device_code": {da["device_code"].(string)}, "client_id": {clientID}})
	}
	reads := cs.clients.Load()
	for range 4 { // 2 s apart: the interval is 1 s, the cache keeps 10 s
		e.Clock.Advance(2 * time.Second)
		status, m := poll()
		wantError(t, "poll", status, m, "authorization_pending")
	}
	if n := cs.clients.Load() - reads; n != 0 {
		t.Errorf("4 polls within 10 s of the client's read read its row %d times, want 0", n)
	}
	e.Clock.Advance(3 * time.Second) // 11 s after the read
	reads = cs.clients.Load()
	status, m := poll()
	wantError(t, "poll", status, m, "authorization_pending")
	if n := cs.clients.Load() - reads; n != 1 {
		t.Errorf("a poll 11 s after the client's read read its row %d times, want 1 (the cache keeps it 10 s)", n)
	}

	newPhone(t).Decide(base+"D/"+da["user_code"].(string)[:4]+da["user_code"].(string)[5:], "approve")
	e.Clock.Advance(2 * time.Second)
	status, tok := poll()
	if status != http.StatusOK {
		t.Fatalf("poll after approval: %d %v", status, tok)
	}
	reads = cs.clients.Load()
	rt := tok["refresh_token"].(string)
	for range 3 {
		status, m := post("oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}})
		if status != http.StatusOK {
			t.Fatalf("P-RT-2: refresh: %d %v", status, m)
		}
		rt = m["refresh_token"].(string)
	}
	if n := cs.clients.Load() - reads; n != 0 {
		t.Errorf("3 refreshes of a known client read its row %d times, want 0", n)
	}
}

// TestClientTrustChange: a change of a client's trust made in this
// process counts from the next request (committing forgets the cached
// row); one made by an admin command, another process on the same SQLite
// file that can send no notice, within clientCacheTTL (10 s) of the read
// that cached the old row. Trust lets a confidential client introspect
// other clients' tokens (RFC 7662 §4).
func TestClientTrustChange(t *testing.T) {
	e := newEnv(t, withClock())
	dbPath := e.sqliteFile()
	deviceID, _ := e.Register(deviceClientJSON)
	access := e.signIn(deviceID, "TRUSTCACHE")["access_token"].(string)
	confID, confSecret := e.Register(confidentialJSON)
	introspect := func() bool {
		t.Helper()
		status, m := e.Post("oauth2/introspect", url.Values{"token": {access}}, "Authorization", basicAuthHeader(confID, confSecret))
		if status != http.StatusOK {
			t.Fatalf("introspect: %d %v", status, m)
		}
		return active(m)
	}
	if introspect() {
		t.Fatal("an untrusted confidential client sees another client's token")
	}
	// The row, untrusted, is in memory now. Trusted in this process:
	// the next request sees it, with no time passing.
	if err := e.Server.Server.TrustClient(t.Context(), confID, true); err != nil {
		t.Fatal(err)
	}
	if !introspect() {
		t.Fatal("trusted in this process, the next introspection still sees the client untrusted")
	}
	// Untrusted by an admin command on the file.
	admin := adminServer(t, dbPath, e.Clock.Now)
	if err := admin.TrustClient(t.Context(), confID, false); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(9 * time.Second)
	t.Logf("9 s after the read, untrusted by another process: introspection answers active=%v", introspect())
	e.Clock.Advance(time.Second)
	if introspect() {
		t.Fatal("10 s after the read that cached it trusted, an untrust by another process is still not seen")
	}
}

// adminServer is what devicegrantd's admin commands run: a Server of its
// own on the SQLite file, in another process as far as the serving one can
// tell.
func adminServer(t *testing.T, dbPath string, now func() time.Time) *devicegrant.Server {
	t.Helper()
	st, err := sqlite.Open(t.Context(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := devicegrant.New(devicegrant.Config{Issuer: "http://127.0.0.1:1/", Now: now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestDeletedClientFromMemory: cleanup in another process deletes an
// unused client (registered over a day ago, issue 10.9) while this one
// still has its row in memory; a device authorization for it then cannot
// store its grant (the foreign key), and is answered invalid_client, as
// for any unknown client, not a server error (P-DEV-1).
func TestDeletedClientFromMemory(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(deviceClientJSON)
	e.Clock.Advance(25 * time.Hour)
	// A poll with a code that names no grant reads the client, and keeps it.
	status, m := e.poll(clientID, "dgd_nosuchcode")
	wantError(t, "poll of an unknown code", status, m, "invalid_grant")
	deleteUnusedClientBehindServer(t, e)
	status, m = e.Post("oauth2/device", url.Values{"client_id": {clientID},
		"scope": {apiScope + " urn:matrix:client:device:DELETEDCL1"}})
	wantError(t, "device authorization of a client deleted meanwhile", status, m, "invalid_client")
	// Forgotten: the next request does not get that far.
	status, m = e.poll(clientID, "dgd_nosuchcode")
	wantError(t, "poll of a deleted client", status, m, "invalid_client")
}

// TestDeletedClientAtConsent: the same at the authorization endpoint: a
// client deleted by cleanup elsewhere while the person reads the consent
// page (this process has its row in memory) cannot get a code; the
// approval shows the page for an unregistered application, a 400, not a
// server error (P-AC-1).
func TestDeletedClientAtConsent(t *testing.T) {
	e := newEnv(t, withClock())
	clientID, _ := e.Register(appClientJSON)
	e.Clock.Advance(25 * time.Hour)
	a := newApp(e, clientID)
	pg := a.phone.Get(a.conf.AuthCodeURL("state", oauth2.S256ChallengeOption(a.verifier)))
	if pg.Form("/login") != nil {
		pg = a.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	}
	if pg.Form("/oauth2/authorize") == nil {
		t.Fatalf("no consent page: %d %s", pg.Status, pg.Text())
	}
	deleteUnusedClientBehindServer(t, e)
	pg = a.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})
	if pg.Status != http.StatusBadRequest || !strings.Contains(pg.Text(), "not registered") {
		t.Fatalf("approval for a client deleted meanwhile: %d %s", pg.Status, pg.Text())
	}
}

// deleteUnusedClientBehindServer deletes the one client unused for a day
// straight in the store, as cleanup in another process does: this server
// is not told, and has the client's row in memory.
func deleteUnusedClientBehindServer(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	var n int64
	err := e.Store.Update(ctx, func(tx store.Tx) (err error) {
		n, err = tx.DeleteUnusedClients(ctx, e.Clock.Now().Add(-24*time.Hour))
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("cleanup behind the server's back: %d deleted, %v", n, err)
	}
}
