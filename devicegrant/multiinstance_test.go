package devicegrant_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// cluster is several devicegrant cores on one PostgreSQL schema, each on
// its own loopback server, behind a round-robin reverse proxy that is
// their common issuer, as a load balancer would be (issue 15).
type cluster struct {
	t         *testing.T
	issuer    string   // the proxy, with its trailing slash
	dsn       string   // the schema they share, for a test that reaches into it
	instances []string // each core's own URL, with its trailing slash
	stores    []*postgres.Store
	hits      []atomic.Int64
	servers   []*devicegrant.Server
	stops     []func() // each ends its core's Run and waits for it to return

	mu       sync.Mutex
	statuses map[int]int // answers through the proxy, by status
	failures []string    // the 5xx answers (and proxy errors) through the proxy
}

// newCluster starts n cores sharing one new schema and the proxy in front
// of them; everything stops when the test ends.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return newClusterWith(t, n, nil)
}

// newClusterWith is newCluster with a hook that adjusts each core's
// configuration (instance i of n) before it starts: a test that needs a
// homeserver, shorter limits or its own clock sets them here.
func newClusterWith(t *testing.T, n int, configure func(i int, cfg *devicegrant.Config)) *cluster {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	dsn := pgtest.URL(t)
	c := &cluster{t: t, dsn: dsn, hits: make([]atomic.Int64, n), statuses: map[int]int{}}
	targets := make([]*url.URL, n)
	var next atomic.Uint64
	proxy := httptest.NewUnstartedServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := int((next.Add(1) - 1) % uint64(n))
			c.hits[i].Add(1)
			r.SetURL(targets[i])
			r.Out.Host = r.In.Host // the issuer's host, as a load balancer keeps it
			// Who the client is, as a load balancer says: cores that
			// trust 127.0.0.1 (TrustedProxies) see each client's own
			// loopback address.
			r.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			c.count(resp.StatusCode, resp.Request.URL.Host+" "+resp.Request.Method+" "+resp.Request.URL.Path)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			c.count(http.StatusBadGateway, r.URL.Host+" "+r.Method+" "+r.URL.Path+": "+err.Error())
			w.WriteHeader(http.StatusBadGateway)
		},
	})
	c.issuer = "http://" + proxy.Listener.Addr().String() + "/"
	ctx := context.Background()
	for i := range n {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		c.stores = append(c.stores, st)
		cfg := devicegrant.Config{
			Issuer:           c.issuer,
			ServerName:       "example.org",
			HomeserverSecret: devtest.HomeserverSecret,
			PollInterval:     time.Second,
			OutboxBackoff:    devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
			Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		if configure != nil {
			configure(i, &cfg)
		}
		srv, err := devicegrant.New(cfg, st)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		if i == 0 {
			// Before Run, so that the sync at start finds her.
			if _, err := srv.CreateUser(ctx, devtest.Username, devtest.Password, "Alice"); err != nil {
				t.Fatal(err)
			}
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Run(runCtx) }()
		stopRun := func() { stop(); <-done }
		t.Cleanup(hs.Close)
		t.Cleanup(stopRun)
		c.servers = append(c.servers, srv)
		c.stops = append(c.stops, stopRun)
		c.instances = append(c.instances, hs.URL+"/")
		if targets[i], err = url.Parse(hs.URL); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Start()
	t.Cleanup(proxy.Close)
	t.Cleanup(c.no5xx)
	return c
}

// count records an answer the proxy passed on (or made, for an error).
func (c *cluster) count(status int, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statuses[status]++
	if status >= 500 {
		c.failures = append(c.failures, fmt.Sprintf("%d %s", status, what))
	}
}

// no5xx fails the test if any answer through the proxy so far was a 5xx:
// a client never sees one because two instances touched the same rows
// (issue 15). Every cluster test checks it at its end.
func (c *cluster) no5xx() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failures) > 0 {
		c.t.Errorf("%d answers through the proxy were 5xx:\n%s", len(c.failures), strings.Join(c.failures, "\n"))
		c.failures = nil
	}
}

// post sends a form to base+path and decodes the JSON answer.
func (c *cluster) post(base, path string, form url.Values, hdr ...string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return devtest.Do(c.t, req)
}

// activeAt asks instance i about an access token, as the homeserver does
// (P-INT-1).
func (c *cluster) activeAt(i int, token string) bool {
	c.t.Helper()
	status, m := c.post(c.instances[i], "oauth2/introspect",
		url.Values{"token": {token}, "token_type_hint": {"access_token"}},
		"Authorization", "Bearer "+devtest.HomeserverSecret)
	if status != http.StatusOK {
		c.t.Fatalf("introspect at instance %d: %d %v", i, status, m)
	}
	return m["active"] == true
}

// oauthConfig is the device's x/oauth2 configuration, against base.
func (c *cluster) oauthConfig(base, clientID, deviceID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: base + "oauth2/device",
			TokenURL:      base + "oauth2/token",
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{apiScope, "urn:matrix:client:device:" + deviceID},
	}
}

// TestMultiInstance: three cores on one PostgreSQL schema behind a
// round-robin proxy behave as one server (issue 15). A device signs in
// with golang.org/x/oauth2 while its polls and the phone's pages spread
// over the instances (P-DEV-1..5); a code approved through one instance
// yields tokens exactly once when polls race on all three (P-DEV-6); a
// refresh on one instance rotates the pair for all, and reuse of the old
// refresh token on another, after the new pair was used on a third, ends
// the session everywhere (P-RT-2); a token revoked through one instance is
// inactive at introspection on every instance as soon as the revocation
// is answered (P-REV-1, P-INT-1), though each had it in its cache.
func TestMultiInstance(t *testing.T) {
	const n = 3
	c := newCluster(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()

	clientID := c.register(deviceClientJSON)
	phone := devtest.NewPhone(t)

	// A complete device flow through the proxy: x/oauth2 polls, and the
	// phone signs in and approves, each request on the next instance.
	// Another instance may answer "pending" from its polling cache for a
	// while after the approval; the device just keeps polling.
	conf := c.oauthConfig(c.issuer, clientID, "CLUSTERDEV1")
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	polled := make(chan result, 1)
	go func() {
		tok, err := conf.DeviceAccessToken(ctx, da)
		polled <- result{tok, err}
	}()
	time.Sleep(1500 * time.Millisecond) // a poll or two land before the approval
	if pg := phone.Decide(da.VerificationURIComplete, "approve"); pg.Status != http.StatusOK ||
		!strings.Contains(pg.Text(), "Device connected") {
		t.Fatalf("approval through the proxy answered %d: %s", pg.Status, pg.Text())
	}
	approved := time.Now()
	r := <-polled
	if r.err != nil {
		t.Fatalf("DeviceAccessToken through the proxy: %v", r.err)
	}
	t.Logf("device flow through the proxy: token %v after the approval", time.Since(approved).Round(time.Millisecond))
	tok := r.tok
	for i := range n {
		if !c.activeAt(i, tok.AccessToken) {
			t.Fatalf("the new token is inactive at instance %d", i)
		}
	}

	// P-RT-2 across instances: refresh on 0, use the new pair on 1, and
	// the old refresh token presented to 2 is theft, ending the session.
	refreshed, err := c.oauthConfig(c.instances[0], clientID, "CLUSTERDEV1").
		TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh at instance 0: %v", err)
	}
	if refreshed.AccessToken == tok.AccessToken || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatal("the refresh did not rotate the pair")
	}
	if !c.activeAt(1, refreshed.AccessToken) {
		t.Fatal("the refreshed token is inactive at instance 1")
	}
	status, m := c.post(c.instances[2], "oauth2/token", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {tok.RefreshToken}, "client_id": {clientID}})
	if status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Fatalf("reuse of the rotated refresh token at instance 2: %d %v, want invalid_grant", status, m)
	}
	for i := range n {
		if c.activeAt(i, refreshed.AccessToken) {
			t.Errorf("after refresh-token reuse the session's token is still active at instance %d (P-RT-2)", i)
		}
	}

	// P-DEV-6 across instances: approve, then polls race on every
	// instance at once. None of them has the grant in its polling cache,
	// so every one reads the approval from the database; exactly one
	// redeems it.
	da, err = c.oauthConfig(c.issuer, clientID, "CLUSTERDEV2").DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	if pg := phone.Decide(da.VerificationURIComplete, "approve"); pg.Status != http.StatusOK {
		t.Fatalf("second approval answered %d: %s", pg.Status, pg.Text())
	}
	const perInstance = 4
	var (
		start    = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		tokens   []string
		refusals = map[string]int{}
	)
	for i := range n * perInstance {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			status, m := c.post(c.instances[i%n], "oauth2/token", url.Values{"grant_type": {deviceGrant},
				"device_code": {da.DeviceCode}, "client_id": {clientID}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case status == http.StatusOK:
				tokens = append(tokens, m["access_token"].(string))
			case status == http.StatusBadRequest:
				e, _ := m["error"].(string)
				refusals[e]++
			default:
				t.Errorf("a racing poll at instance %d answered %d %v", i%n, status, m)
			}
		}()
	}
	close(start)
	wg.Wait()
	t.Logf("%d racing polls on %d instances: %d tokens, refusals %v", n*perInstance, n, len(tokens), refusals)
	if len(tokens) != 1 {
		t.Fatalf("an approved device code yielded %d tokens under concurrent polls on %d instances, want 1 (P-DEV-6)", len(tokens), n)
	}
	for e := range refusals {
		if e != "invalid_grant" && e != "slow_down" {
			t.Errorf("a losing poll was refused with %q, want invalid_grant or slow_down", e)
		}
	}

	// P-REV-1 across instances: every instance has the token in its
	// introspection cache; it is revoked through one, and the very next
	// introspection on each of the others says inactive.
	access := tokens[0]
	for i := range n {
		if !c.activeAt(i, access) {
			t.Fatalf("the raced-for token is inactive at instance %d", i)
		}
	}
	status, m = c.post(c.instances[1], "oauth2/revoke", url.Values{"token": {access}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("revoke at instance 1: %d %v", status, m)
	}
	for _, i := range []int{2, 0, 1} {
		if c.activeAt(i, access) {
			t.Errorf("a token revoked at instance 1 is still active at instance %d (P-REV-1)", i)
		}
	}

	for i := range n {
		if c.hits[i].Load() == 0 {
			t.Errorf("the proxy sent nothing to instance %d", i)
		}
	}
}

// TestMultiInstanceFirstSigningKey: instances that start on one empty
// database and are all asked for their keys at once agree on one signing
// key, instead of each retiring the key another one just made
// (P-OIDC-1): every instance publishes the same single key.
func TestMultiInstanceFirstSigningKey(t *testing.T) {
	const n = 3
	c := newCluster(t, n)
	var wg sync.WaitGroup
	sets := make([]string, n*4)
	for j := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(c.instances[j%n] + "oauth2/keys.json")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("jwks at instance %d: %d %s", j%n, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	for j := range sets {
		resp, err := http.Get(c.instances[j%n] + "oauth2/keys.json")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sets[j] = string(b)
	}
	if got := strings.Count(sets[0], `"kid"`); got != 1 {
		t.Errorf("the JWKS publishes %d keys after a concurrent start, want 1", got)
	}
	for j := range sets {
		if sets[j] != sets[0] {
			t.Errorf("instance %d publishes another key set than instance 0", j%n)
		}
	}
}
