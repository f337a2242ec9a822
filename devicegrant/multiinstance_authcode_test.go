package devicegrant_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// register registers a client through the proxy and returns its id.
func (c *cluster) register(metadata string) string {
	c.t.Helper()
	return c.registerAt(c.issuer, metadata)
}

// registerAt registers a client at base (the proxy, or one instance's
// URL) and returns its id.
func (c *cluster) registerAt(base, metadata string) string {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"oauth2/registration", strings.NewReader(metadata))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, m := devtest.Do(c.t, req)
	id, _ := m["client_id"].(string)
	if status != http.StatusCreated || id == "" {
		c.t.Fatalf("register at %s: %d %v", base, status, m)
	}
	return id
}

// env is the cluster seen as one server at the proxy, for the helpers
// written for a single core (newApp, verifyIDToken), which use only its
// URL and test.
func (c *cluster) env() *env {
	return &env{Server: &devtest.Server{URL: c.issuer}, t: c.t}
}

// hitCounts is how many requests the proxy has sent to each instance.
func (c *cluster) hitCounts() []int64 {
	out := make([]int64, len(c.hits))
	for i := range c.hits {
		out[i] = c.hits[i].Load()
	}
	return out
}

// at is conf with its token endpoint on one instance's own URL.
func at(conf *oauth2.Config, base string) *oauth2.Config {
	cp := *conf
	cp.Endpoint.TokenURL = base + "oauth2/token"
	return &cp
}

// TestMultiInstanceAuthCode: the authorization-code grant with PKCE S256
// (P-AC-1) against three cores on one PostgreSQL schema behind a
// round-robin proxy (issue 15). The person's sign-in and consent pages
// spread over the instances, each form posted to another instance than
// the one that served it (cookies and CSRF tokens are shared through the
// database); the code is exchanged on one instance, and replayed on
// another it is refused and ends the session it created, on every
// instance (P-AC-3); racing exchanges of one code on all instances redeem
// it once (P-AC-3); a refresh on one instance rotates the pair for all
// (P-RT-1, P-RT-2), a revocation on another is seen by every instance at
// the very next introspection (P-REV-1, P-INT-1), and the id_token
// verifies against the keys any instance publishes (P-OIDC-1).
func TestMultiInstanceAuthCode(t *testing.T) {
	const n = 3
	c := newCluster(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clientID := c.register(appClientJSON)
	e := c.env()
	a := newApp(e, clientID)

	// Sign-in and consent through the proxy: every instance serves part
	// of the walk.
	before := c.hitCounts()
	back := a.authorize(oauth2.SetAuthURLParam("nonce", "n-cluster-1"))
	after := c.hitCounts()
	for i := range n {
		if after[i] == before[i] {
			t.Errorf("instance %d served none of the sign-in and consent pages (hits %v → %v)", i, before, after)
		}
	}
	q := back.Query()
	if q.Get("state") != "state-ü 1" || q.Get("iss") != c.issuer || q.Get("code") == "" {
		t.Fatalf("redirect back: %s", back)
	}
	code := q.Get("code")

	// The exchange on instance 0, the replay on instance 1 (P-AC-3).
	tok, err := at(a.conf, c.instances[0]).Exchange(ctx, code, oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatalf("Exchange at instance 0: %v", err)
	}
	claims := verifyIDToken(t, e, idToken(t, tok))
	if claims["iss"] != c.issuer || claims["aud"] != clientID || claims["nonce"] != "n-cluster-1" {
		t.Errorf("id_token claims %v", claims)
	}
	for i := range n {
		if !c.activeAt(i, tok.AccessToken) {
			t.Fatalf("the exchanged token is inactive at instance %d", i)
		}
	}
	_, err = at(a.conf, c.instances[1]).Exchange(ctx, code, oauth2.VerifierOption(a.verifier))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("the code replayed at instance 1: %v, want invalid_grant (P-AC-3)", err)
	}
	for i := range n {
		if c.activeAt(i, tok.AccessToken) {
			t.Errorf("after the code's replay at instance 1 its token is still active at instance %d (P-AC-3)", i)
		}
	}
	status, m := c.post(c.instances[2], "oauth2/token", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {tok.RefreshToken}, "client_id": {clientID}})
	if status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Errorf("the replayed code's refresh token at instance 2: %d %v, want invalid_grant", status, m)
	}

	// Racing exchanges of one code on every instance: one wins (P-AC-3).
	// The losers are replays, so the winner's session ends too; what
	// matters is that no two of them got tokens.
	a2 := newApp(e, clientID)
	code = a2.authorize().Query().Get("code")
	const perInstance = 3
	var (
		start  = make(chan struct{})
		wg     sync.WaitGroup
		mu     sync.Mutex
		won    int
		others = map[string]int{}
	)
	for i := range n * perInstance {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			status, m := c.post(c.instances[i%n], "oauth2/token", url.Values{"grant_type": {"authorization_code"},
				"client_id": {clientID}, "code": {code}, "redirect_uri": {a2.callback}, "code_verifier": {a2.verifier}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case status == http.StatusOK:
				won++
			case status == http.StatusBadRequest:
				e, _ := m["error"].(string)
				others[e]++
			default:
				t.Errorf("a racing exchange at instance %d answered %d %v", i%n, status, m)
			}
		}()
	}
	close(start)
	wg.Wait()
	if won != 1 || len(others) != 1 || others["invalid_grant"] != n*perInstance-1 {
		t.Errorf("%d racing exchanges of one code on %d instances: %d tokens, refusals %v; want 1 and invalid_grant for the rest (P-AC-3)",
			n*perInstance, n, won, others)
	}

	// A session used across instances: exchange through the proxy,
	// refresh on instance 1, revoke on instance 2.
	a3 := newApp(e, clientID)
	back = a3.authorize()
	tok, err = a3.conf.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(a3.verifier))
	if err != nil {
		t.Fatalf("Exchange through the proxy: %v", err)
	}
	req, err := http.NewRequest(http.MethodGet, c.issuer+"oauth2/userinfo", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	if status, m := devtest.Do(t, req); status != http.StatusOK || m["sub"] == nil {
		t.Errorf("userinfo through the proxy: %d %v", status, m)
	}
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	refreshed, err := at(a3.conf, c.instances[1]).TokenSource(ctx, &stale).Token()
	if err != nil {
		t.Fatalf("refresh at instance 1: %v", err)
	}
	if refreshed.AccessToken == tok.AccessToken || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatal("the refresh at instance 1 did not rotate the pair (P-RT-2)")
	}
	for i := range n {
		if !c.activeAt(i, refreshed.AccessToken) {
			t.Fatalf("the refreshed token is inactive at instance %d", i)
		}
	}
	status, m = c.post(c.instances[2], "oauth2/revoke", url.Values{"token": {refreshed.RefreshToken}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("revoke at instance 2: %d %v", status, m)
	}
	for _, i := range []int{0, 1, 2} {
		if c.activeAt(i, refreshed.AccessToken) {
			t.Errorf("the access token of a session whose refresh token was revoked at instance 2 is active at instance %d (P-REV-1)", i)
		}
	}
	status, m = c.post(c.instances[0], "oauth2/token", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {refreshed.RefreshToken}, "client_id": {clientID}})
	if status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Errorf("the revoked refresh token at instance 0: %d %v, want invalid_grant", status, m)
	}
}

// idToken is the id_token of a token response.
func idToken(t *testing.T, tok *oauth2.Token) string {
	t.Helper()
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("no id_token")
	}
	return raw
}

// TestMultiInstanceAuthCodeWithSynapse: with a homeserver, a code is
// minted only once the Matrix device exists (P-HS-3): while the homeserver
// is down the browser waits on a page that refreshes itself, each refresh
// answered by another instance; once it is back, whichever instance takes
// the outbox call creates the device and the next refresh, wherever it
// lands, sends the browser back with a code. The app exchanges it, and the
// homeserver, introspecting through the load balancer, accepts the token
// (P-INT-1).
func TestMultiInstanceAuthCodeWithSynapse(t *testing.T) {
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: homeserverSecret, RequireProvisioning: true})
	c := newClusterWith(t, 3, func(_ int, cfg *devicegrant.Config) {
		cfg.HomeserverEndpoint = hs.URL()
		cfg.ServerName = hs.ServerName()
	})
	hs.SetAuthEndpoint(c.issuer)
	a := newApp(c.env(), c.register(appClientJSON))
	hs.Down()
	pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier)))
	pg = a.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	pg = a.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})
	if pg.Status != http.StatusOK || !strings.Contains(pg.Body, `http-equiv="refresh"`) {
		t.Fatalf("while the homeserver is down: %d %s", pg.Status, pg.Text())
	}
	waiting := pg.URL.String()
	for range 3 { // one refresh on each instance, still waiting
		if pg := a.phone.Get(waiting); pg.Status != http.StatusOK || !strings.Contains(pg.Body, `http-equiv="refresh"`) {
			t.Fatalf("a refresh while the homeserver is down: %d %s", pg.Status, pg.Text())
		}
	}
	hs.Up()
	back := a.backOnceUp(waiting)
	tok, err := a.conf.Exchange(t.Context(), back.Query().Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatalf("Exchange through the proxy: %v", err)
	}
	req, err := http.NewRequest(http.MethodGet, hs.URL()+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	if status, who := devtest.Do(t, req); status != http.StatusOK || who["device_id"] != "APPDEVICE01" {
		t.Errorf("whoami at the homeserver: %d %v", status, who)
	}
	if !slices.Contains(hs.Devices(testUser), "APPDEVICE01") {
		t.Errorf("the homeserver's devices of %s: %v", testUser, hs.Devices(testUser))
	}
}
