package devicegrant_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store"
)

// countingStore counts the lookups and writes that reach the database.
type countingStore struct {
	store.Store
	accessTokens, updates, clients atomic.Int64
}

func (c *countingStore) Client(ctx context.Context, id string) (store.Client, error) {
	c.clients.Add(1)
	return c.Store.Client(ctx, id)
}

func (c *countingStore) AccessToken(ctx context.Context, hash []byte) (store.AccessToken, error) {
	c.accessTokens.Add(1)
	return c.Store.AccessToken(ctx, hash)
}

func (c *countingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	c.updates.Add(1)
	return c.Store.Update(ctx, fn)
}

// secondInstance runs another devicegrantd core on the same database, as
// an admin command or a second instance would, counting its store calls.
// It returns its base URL.
func secondInstance(t *testing.T, e *env, now func() time.Time) (string, *countingStore) {
	t.Helper()
	cs := &countingStore{Store: e.Store}
	srv, err := devicegrant.New(devicegrant.Config{Issuer: e.URL, ServerName: "example.org", Now: now,
		HomeserverSecret: devtest.HomeserverSecret, PollInterval: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, cs)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL + "/", cs
}

// TestIntrospectionCache: the homeserver's second question about a token
// is answered without reading the token's rows (issue 14), and a
// revocation made by another process on the same database is seen at
// once: the token epoch tells every cache (P-REV-1, P-INT-1).
func TestIntrospectionCache(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	tok := e.signIn(clientID, "CACHEDEV01")
	access := tok["access_token"].(string)
	other, counts := secondInstance(t, e, nil)
	introspect := func() map[string]any {
		t.Helper()
		status, m := do(t, newPost(t, other+"oauth2/introspect", url.Values{"token": {access}}, "Bearer "+devtest.HomeserverSecret))
		if status != http.StatusOK {
			t.Fatalf("introspect: %d %v", status, m)
		}
		return m
	}
	if !active(introspect()) {
		t.Fatal("fresh token inactive")
	}
	before, writes := counts.accessTokens.Load(), counts.updates.Load()
	for range 5 {
		if !active(introspect()) {
			t.Fatal("token inactive on a later introspection")
		}
	}
	if n := counts.accessTokens.Load() - before; n != 0 {
		t.Errorf("5 introspections of a known token read its rows %d times, want 0", n)
	}
	if n := counts.updates.Load() - writes; n != 0 {
		t.Errorf("5 introspections of a used token wrote %d times, want 0", n)
	}
	// Revoked through the first instance: the second, which has the
	// token in memory, answers inactive at once.
	if status, m := e.Post("oauth2/revoke", url.Values{"token": {access}, "client_id": {clientID}}); status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, m)
	}
	if m := introspect(); active(m) {
		t.Fatalf("P-REV-1: revoked on another instance, still active here: %v", m)
	}
}

// TestPendingPollsWriteNothing: polls of a grant nobody approved yet, and
// polls that come too early, are answered without a write (issue 14); an
// approval made in this process is seen by the very next poll.
func TestPendingPollsWriteNothing(t *testing.T) {
	e := newEnv(t, withClock())
	base, cs := secondInstance(t, e, e.Clock.Now)
	clientID, _ := e.Register(deviceClientJSON)
	status, da := do(t, newPost(t, base+"oauth2/device", url.Values{"client_id": {clientID},
		"scope": {apiScope + " urn:matrix:client:device:POLLCACHE1"}}, ""))
	if status != http.StatusOK {
		t.Fatalf("device authorization: %d %v", status, da)
	}
	poll := func() (int, map[string]any) {
		return do(t, newPost(t, base+"oauth2/token", url.Values{"grant_type": {deviceGrant},
			"device_code": {da["device_code"].(string)}, "client_id": {clientID}}, ""))
	}
	writes := cs.updates.Load()
	for i := range 6 {
		want := "slow_down" // at once after the previous poll
		if i%2 == 0 {
			e.Clock.Advance(30 * time.Second)
			want = "authorization_pending"
		}
		status, m := poll()
		wantError(t, "poll", status, m, want)
	}
	if n := cs.updates.Load() - writes; n != 0 {
		t.Errorf("6 polls of a pending grant wrote %d times, want 0", n)
	}
	// Approved through this instance's pages: the next poll has tokens.
	phone := newPhone(t)
	phone.Decide(base+"D/"+da["user_code"].(string)[:4]+da["user_code"].(string)[5:], "approve")
	e.Clock.Advance(30 * time.Second)
	if status, m := poll(); status != http.StatusOK {
		t.Fatalf("poll after approval: %d %v", status, m)
	}
}

func newPost(t *testing.T, u string, form url.Values, authorization string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return req
}
