// Package fakesynapse is a test homeserver that behaves like current Synapse
// (≥ 1.157, configured with matrix_authentication_service) as far as the
// contract with its authorization server goes (PROTOCOL.md P-HS-1…5,
// P-INT-1, P-DISC-1). It listens on real loopback HTTP so that end-to-end
// tests of devicegrantd and matrix-pair talk to it exactly as they would to
// a homeserver.
//
// What it mirrors from Synapse's source (synapse/api/auth/mas.py,
// synapse/rest/synapse/mas/*.py, synapse/rest/client/auth_metadata.py):
//
//   - Introspection results are cached per token for IntrospectionCacheTTL
//     (Synapse: a ResponseCache with a 2-minute timeout). Every answer the
//     auth server gives that parses — inactive ones included — is cached;
//     transport errors, non-2xx answers and malformed JSON are not.
//     Independently of the cache, an active answer carrying expires_in stops
//     being accepted once expires_in seconds have passed since it was fetched.
//   - After the cache, Synapse checks on each request that the user exists
//     (500 M_UNKNOWN "User not found" if not) and that the device exists; a
//     missing device drops the cache entry and answers 401 M_UNKNOWN_TOKEN.
//     So deleting a device (delete_device, sync_devices, delete_user) makes
//     its tokens fail at once, cache or not. Synapse does not look at the
//     deactivated or locked flags here; deactivation works by deleting the
//     user's devices.
//   - /_synapse/mas/* without any access token answers 401 M_MISSING_TOKEN;
//     with a token that is not the secret, 403 M_UNKNOWN ("This endpoint
//     must only be called by MAS"). Synapse uses the default errcode there,
//     not M_FORBIDDEN.
//   - A failing introspection (auth server unreachable, non-2xx, bad JSON)
//     answers 503 M_UNKNOWN "Unable to introspect the access token".
//   - The auth server's metadata must have string "issuer" and
//     "account_management_uri" (Synapse validates both); once loaded it is
//     kept for the life of the process (Synapse's RetryOnExceptionCachedCall);
//     failures are retried on the next request and answer 500 M_UNKNOWN.
package fakesynapse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// AuthMetadataMode selects which OAuth discovery endpoints the homeserver
// serves. It affects only discovery: whoami and /_synapse/mas/* work in
// every mode.
type AuthMetadataMode int

const (
	// Stable serves GET /_matrix/client/v1/auth_metadata, its unstable alias
	// /_matrix/client/unstable/org.matrix.msc2965/auth_metadata, and the
	// legacy /_matrix/client/unstable/org.matrix.msc2965/auth_issuer, as
	// current Synapse does.
	Stable AuthMetadataMode = iota
	// UnstableOnly serves the unstable auth_metadata and the legacy
	// auth_issuer but not /_matrix/client/v1/auth_metadata, like Synapse
	// releases before the stable endpoint (they always had auth_issuer too).
	UnstableOnly
	// LegacyAuthIssuer serves only the older
	// GET /_matrix/client/unstable/org.matrix.msc2965/auth_issuer → {"issuer": …}.
	LegacyAuthIssuer
	// None serves no OAuth discovery: those paths answer 404 M_UNRECOGNIZED,
	// like a homeserver without delegated auth.
	None
)

// String names the mode.
func (m AuthMetadataMode) String() string {
	switch m {
	case Stable:
		return "Stable"
	case UnstableOnly:
		return "UnstableOnly"
	case LegacyAuthIssuer:
		return "LegacyAuthIssuer"
	case None:
		return "None"
	}
	return fmt.Sprintf("AuthMetadataMode(%d)", int(m))
}

// Options configures a Homeserver. The zero value is usable, but without
// Secret the /_synapse/mas/* endpoints refuse everyone and introspection
// presents an empty Bearer token.
type Options struct {
	// ServerName is the Matrix server name, the domain part of user ids.
	// Default: the listener's host:port, e.g. "127.0.0.1:41234".
	ServerName string
	// Secret is the shared secret: the homeserver presents it as a Bearer
	// token at {AuthEndpoint}/oauth2/introspect, and requires it on
	// /_synapse/mas/*.
	Secret string
	// AuthEndpoint is the auth server's base URL (Synapse's
	// matrix_authentication_service.endpoint). It may be set later with
	// SetAuthEndpoint.
	AuthEndpoint string
	// IntrospectionCacheTTL is how long an introspection answer is reused.
	// Default 2 minutes, like Synapse.
	IntrospectionCacheTTL time.Duration
	// RequireProvisioning, when true, makes whoami check the user and device
	// provisioned through /_synapse/mas, as current Synapse does. When false,
	// any active token with the api scope is accepted.
	RequireProvisioning bool
	// AuthMetadata selects the discovery endpoints served; default Stable.
	AuthMetadata AuthMetadataMode
	// Now is the clock for the introspection cache and token expiry;
	// default time.Now.
	Now func() time.Time
	// DateSkew, when not zero, moves the Date header of every answer
	// that far from the real time, like a homeserver whose clock is off.
	DateSkew time.Duration
	// MASDelay, when not zero, holds every authorized /_synapse/mas/*
	// call that long before handling it, like a slow homeserver, so that
	// a test can see calls overlap (Call.Received, Call.Answered). A call
	// whose client gives up meanwhile changes nothing and is recorded
	// with Status 0.
	MASDelay time.Duration
}

// User is the homeserver's view of an account, as provisioned by the auth
// server.
type User struct {
	Localpart   string
	DisplayName string // "" when unset
	AvatarURL   string // "" when unset
	Emails      []string
	// Locked is set by provision_user's "locked" field, which this fake
	// accepts as an extension (the Synapse source read has no such field
	// and would ignore it). Nothing else looks at it.
	Locked      bool
	Deactivated bool
	Erased      bool
}

// Call is one request received on /_synapse/mas/*.
type Call struct {
	Method string
	Path   string          // URL path, e.g. "/_synapse/mas/provision_user"
	Query  string          // raw query string, for the GET endpoints
	Body   json.RawMessage // raw request body as received (nil when empty)
	Status int             // HTTP status answered (0: the client gave up first)
	// Received and Answered are when the request arrived and when its
	// handling ended.
	Received, Answered time.Time
}

type account struct {
	User
	devices map[string]string // device id → display name
}

type introspection struct {
	raw         map[string]json.RawMessage
	active      bool
	scope       *string
	username    *string
	deviceID    *string
	expiresIn   *int64
	retrievedAt time.Time
}

type cacheEntry struct {
	res      *introspection
	storedAt time.Time
}

// Homeserver is a running fake Synapse. Its methods are safe for
// concurrent use.
type Homeserver struct {
	t           testing.TB
	srv         *http.Server
	url         string
	serverName  string
	secret      string
	ttl         time.Duration
	requireProv bool
	mode        AuthMetadataMode
	now         func() time.Time
	dateSkew    time.Duration
	masDelay    time.Duration
	client      *http.Client

	mu             sync.Mutex
	authEndpoint   string
	accounts       map[string]*account
	calls          []Call
	introspections int
	cache          map[string]cacheEntry
	metadata       map[string]json.RawMessage
	down           bool
	closed         bool
	conns          map[net.Conn]struct{}
}

// Start starts a Homeserver listening on 127.0.0.1 on a free port. It is
// stopped by t.Cleanup.
func Start(t testing.TB, o Options) *Homeserver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fakesynapse: listen: %v", err)
	}
	h := &Homeserver{
		t:            t,
		url:          "http://" + ln.Addr().String(),
		serverName:   o.ServerName,
		secret:       o.Secret,
		ttl:          o.IntrospectionCacheTTL,
		requireProv:  o.RequireProvisioning,
		mode:         o.AuthMetadata,
		now:          o.Now,
		dateSkew:     o.DateSkew,
		masDelay:     o.MASDelay,
		authEndpoint: strings.TrimRight(o.AuthEndpoint, "/"),
		accounts:     map[string]*account{},
		cache:        map[string]cacheEntry{},
		conns:        map[net.Conn]struct{}{},
		client:       &http.Client{Timeout: 10 * time.Second},
	}
	if h.serverName == "" {
		h.serverName = ln.Addr().String()
	}
	if h.ttl <= 0 {
		h.ttl = 2 * time.Minute
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         h.connState,
	}
	go func() { _ = h.srv.Serve(&gateListener{Listener: ln, h: h}) }()
	t.Cleanup(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		_ = h.srv.Close()
		h.client.CloseIdleConnections()
	})
	return h
}

// URL is the base URL, http://127.0.0.1:port (no trailing slash).
func (h *Homeserver) URL() string { return h.url }

// ServerName is the Matrix server name used in user ids.
func (h *Homeserver) ServerName() string { return h.serverName }

// SetAuthEndpoint sets the auth server's base URL. It forgets the cached
// auth metadata and introspection results, as restarting Synapse with a new
// configuration would.
func (h *Homeserver) SetAuthEndpoint(u string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.authEndpoint = strings.TrimRight(u, "/")
	h.metadata = nil
	h.cache = map[string]cacheEntry{}
}

// Down starts an outage: from now on every connection is closed by the
// server as soon as it is accepted, and open connections are closed too
// (requests arriving on a kept-alive connection are dropped without an
// answer). A client therefore sees a transport error — typically "EOF" or
// "connection reset by peer" wrapped in *url.Error — and never an HTTP
// status, which is what a crashed or restarting homeserver looks like.
// The port stays bound, so Up restores service at the same URL without
// another process being able to take the port in between.
func (h *Homeserver) Down() {
	h.mu.Lock()
	h.down = true
	conns := make([]net.Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Up ends an outage started by Down.
func (h *Homeserver) Up() {
	h.mu.Lock()
	h.down = false
	h.mu.Unlock()
}

// logf logs to the test unless it has finished (logging after that panics).
func (h *Homeserver) logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.t.Logf(format, args...)
	}
}

func (h *Homeserver) isDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// Users returns a snapshot of all accounts, by localpart.
func (h *Homeserver) Users() map[string]User {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]User, len(h.accounts))
	for lp, a := range h.accounts {
		u := a.User
		u.Emails = append([]string(nil), a.Emails...)
		out[lp] = u
	}
	return out
}

// Devices returns the device ids of a user, sorted (nil for an unknown user).
func (h *Homeserver) Devices(localpart string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.accounts[localpart]
	if a == nil {
		return nil
	}
	return sortedKeys(a.devices)
}

// AddUser creates or replaces an account directly, bypassing the auth
// server (for example to make a localpart unavailable). Devices of an
// existing account are kept.
func (h *Homeserver) AddUser(u User) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u.Emails = append([]string(nil), u.Emails...)
	if a := h.accounts[u.Localpart]; a != nil {
		a.User = u
		return
	}
	h.accounts[u.Localpart] = &account{User: u, devices: map[string]string{}}
}

// AddDevice creates a device directly, bypassing the auth server, to make
// the homeserver's state drift from the auth server's. The user must exist.
func (h *Homeserver) AddDevice(localpart, deviceID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.accounts[localpart]
	if a == nil {
		h.t.Errorf("fakesynapse: AddDevice(%q, %q): no such user", localpart, deviceID)
		return
	}
	if _, ok := a.devices[deviceID]; !ok {
		a.devices[deviceID] = ""
	}
}

// RemoveDevice deletes a device directly, bypassing the auth server. Unknown
// users or devices are ignored.
func (h *Homeserver) RemoveDevice(localpart, deviceID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a := h.accounts[localpart]; a != nil {
		delete(a.devices, deviceID)
	}
}

// DeviceDisplayName returns a device's display name and whether it exists.
func (h *Homeserver) DeviceDisplayName(localpart, deviceID string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.accounts[localpart]
	if a == nil {
		return "", false
	}
	n, ok := a.devices[deviceID]
	return n, ok
}

// Calls returns every /_synapse/mas/* request received, in order.
func (h *Homeserver) Calls() []Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Call, len(h.calls))
	copy(out, h.calls)
	return out
}

// Introspections is how many introspection requests were sent to the auth
// server (successful or not).
func (h *Homeserver) Introspections() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.introspections
}

// FlushCache forgets all cached introspection results and the cached auth
// metadata.
func (h *Homeserver) FlushCache() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cache = map[string]cacheEntry{}
	h.metadata = nil
}

// ---- outage plumbing ----

type gateListener struct {
	net.Listener
	h *Homeserver
}

func (l *gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.h.isDown() {
			_ = c.Close()
			continue
		}
		return c, nil
	}
}

func (h *Homeserver) connState(c net.Conn, s http.ConnState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch s {
	case http.StateNew:
		h.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(h.conns, c)
	}
}

// ---- routing ----

const (
	pathWellKnown       = "/.well-known/matrix/client"
	pathVersions        = "/_matrix/client/versions"
	pathAuthMetadata    = "/_matrix/client/v1/auth_metadata"
	pathAuthMetadataMSC = "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"
	pathAuthIssuer      = "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer"
	masPrefix           = "/_synapse/mas/"
)

// ServeHTTP implements http.Handler.
func (h *Homeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.isDown() {
		// A request on a connection that was open when Down was called.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if h.dateSkew != 0 {
		// net/http keeps a Date header the handler set.
		w.Header().Set("Date", time.Now().Add(h.dateSkew).UTC().Format(http.TimeFormat))
	}
	p := r.URL.Path
	if strings.HasPrefix(p, masPrefix) {
		h.serveMAS(w, r)
		return
	}
	if strings.HasPrefix(p, "/_matrix/") || strings.HasPrefix(p, "/.well-known/matrix/") {
		setCORS(w)
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	switch p {
	case pathWellKnown:
		h.wellKnown(w, r)
	case pathVersions:
		h.versions(w, r)
	case pathAuthMetadata:
		h.authMetadata(w, r, h.mode == Stable, false)
	case pathAuthMetadataMSC:
		h.authMetadata(w, r, h.mode == Stable || h.mode == UnstableOnly, false)
	case pathAuthIssuer:
		h.authMetadata(w, r, h.mode != None, true)
	case "/_matrix/client/v3/account/whoami", "/_matrix/client/r0/account/whoami":
		h.whoami(w, r)
	default:
		unrecognized(w, http.StatusNotFound)
	}
}

func setCORS(w http.ResponseWriter) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
	w.Header().Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
	w.Header().Set("Access-Control-Expose-Headers", "Synapse-Trace-Id, Server")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func matrixError(w http.ResponseWriter, status int, errcode, msg string) {
	writeJSON(w, status, map[string]string{"errcode": errcode, "error": msg})
}

func unrecognized(w http.ResponseWriter, status int) {
	matrixError(w, status, "M_UNRECOGNIZED", "Unrecognized request")
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		unrecognized(w, http.StatusMethodNotAllowed)
		return false
	}
	return true
}

// ---- client API ----

// wellKnown serves client discovery. Synapse's public_baseurl always ends
// with a slash, and so does this base_url.
func (h *Homeserver) wellKnown(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"m.homeserver": map[string]string{"base_url": h.url + "/"}})
}

func (h *Homeserver) versions(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"versions": []string{"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
			"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"},
		"unstable_features": map[string]bool{},
	})
}

func (h *Homeserver) authMetadata(w http.ResponseWriter, r *http.Request, served, issuerOnly bool) {
	if !served {
		unrecognized(w, http.StatusNotFound)
		return
	}
	if !getOnly(w, r) {
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=600, s-maxage=3600, stale-while-revalidate=600")
	md, err := h.loadMetadata(r)
	if err != nil {
		h.logf("fakesynapse: loading auth metadata: %v", err)
		matrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
		return
	}
	if issuerOnly {
		writeJSON(w, http.StatusOK, map[string]json.RawMessage{"issuer": md["issuer"]})
		return
	}
	writeJSON(w, http.StatusOK, md)
}

// loadMetadata returns the auth server's metadata, fetching it the first
// time; like Synapse, a successful answer is kept and a failure is retried
// on the next call.
func (h *Homeserver) loadMetadata(r *http.Request) (map[string]json.RawMessage, error) {
	h.mu.Lock()
	md, endpoint := h.metadata, h.authEndpoint
	h.mu.Unlock()
	if md != nil {
		return md, nil
	}
	if endpoint == "" {
		return nil, errors.New("no auth endpoint configured")
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, endpoint+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("metadata: HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, &md); err != nil || md == nil {
		return nil, fmt.Errorf("metadata is not a JSON object: %v", err)
	}
	for _, k := range []string{"issuer", "account_management_uri"} {
		var s string
		if err := json.Unmarshal(md[k], &s); err != nil || md[k] == nil || string(md[k]) == "null" {
			return nil, fmt.Errorf("metadata: %q is missing or not a string", k)
		}
	}
	h.mu.Lock()
	if h.authEndpoint == endpoint {
		h.metadata = md
	}
	h.mu.Unlock()
	return md, nil
}

const (
	scopeAPI            = "urn:matrix:client:api:*"
	scopeAPIUnstable    = "urn:matrix:org.matrix.msc2967.client:api:*"
	scopeDevice         = "urn:matrix:client:device:"
	scopeDeviceUnstable = "urn:matrix:org.matrix.msc2967.client:device:"
)

// accessToken extracts the token as Synapse does: one Authorization header
// "Bearer <token>", or the access_token query parameter, not both.
func accessToken(r *http.Request) (string, string) {
	hdrs := r.Header.Values("Authorization")
	q, hasQ := r.URL.Query()["access_token"]
	if len(hdrs) > 0 {
		if hasQ {
			return "", "Mixing Authorization headers and access_token query parameters."
		}
		if len(hdrs) > 1 {
			return "", "Too many Authorization headers."
		}
		parts := strings.Split(hdrs[0], " ")
		if len(parts) == 2 && parts[0] == "Bearer" {
			return parts[1], ""
		}
		return "", "Invalid Authorization header."
	}
	if len(q) == 0 || q[0] == "" {
		return "", "Missing access token"
	}
	return q[0], ""
}

func (h *Homeserver) whoami(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	tok, msg := accessToken(r)
	if msg != "" {
		matrixError(w, http.StatusUnauthorized, "M_MISSING_TOKEN", msg)
		return
	}
	res, err := h.introspect(r, tok)
	if err != nil {
		h.logf("fakesynapse: introspection failed: %v", err)
		matrixError(w, http.StatusServiceUnavailable, "M_UNKNOWN", "Unable to introspect the access token")
		return
	}
	if !res.active || (res.expiresIn != nil && !h.now().Before(res.retrievedAt.Add(time.Duration(*res.expiresIn)*time.Second))) {
		matrixError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Token is not active")
		return
	}
	scopes := map[string]bool{}
	if res.scope != nil {
		for _, s := range strings.Split(*res.scope, " ") {
			if s != "" {
				scopes[s] = true
			}
		}
	}
	if !scopes[scopeAPI] && !scopes[scopeAPIUnstable] {
		matrixError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Token doesn't grant access to the Matrix C-S API")
		return
	}
	if res.username == nil {
		matrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Invalid username claim in the introspection result")
		return
	}
	userID := "@" + *res.username + ":" + h.serverName
	var deviceID *string
	if res.deviceID != nil {
		deviceID = res.deviceID
	} else {
		ids := map[string]bool{}
		for s := range scopes {
			if id, ok := strings.CutPrefix(s, scopeDevice); ok {
				ids[id] = true
			} else if id, ok := strings.CutPrefix(s, scopeDeviceUnstable); ok {
				ids[id] = true
			}
		}
		if len(ids) > 1 {
			matrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Multiple device IDs in scope")
			return
		}
		for id := range ids {
			deviceID = &id
		}
	}
	if deviceID != nil && (len(*deviceID) < 1 || len(*deviceID) > 255) {
		matrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Invalid device ID in introspection result")
		return
	}
	if h.requireProv {
		h.mu.Lock()
		a := h.accounts[*res.username]
		devOK := a != nil
		if a != nil && deviceID != nil {
			_, devOK = a.devices[*deviceID]
			if !devOK {
				delete(h.cache, tok)
			}
		}
		h.mu.Unlock()
		if a == nil {
			matrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "User not found")
			return
		}
		if !devOK {
			matrixError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Token is not active")
			return
		}
	}
	out := map[string]any{"user_id": userID, "is_guest": false}
	if deviceID != nil {
		out["device_id"] = *deviceID
	}
	writeJSON(w, http.StatusOK, out)
}

// introspect returns the (possibly cached) introspection answer for tok.
func (h *Homeserver) introspect(r *http.Request, tok string) (*introspection, error) {
	now := h.now()
	h.mu.Lock()
	if e, ok := h.cache[tok]; ok && now.Sub(e.storedAt) < h.ttl {
		h.mu.Unlock()
		return e.res, nil
	}
	delete(h.cache, tok)
	endpoint := h.authEndpoint
	h.introspections++
	h.mu.Unlock()
	if endpoint == "" {
		return nil, errors.New("no auth endpoint configured")
	}
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, endpoint+"/oauth2/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.secret)
	req.Header.Set("X-MAS-Supports-Device-Id", "1")
	req.Header.Set("User-Agent", "Synapse/1.157.0 (fakesynapse)")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(body) > 1<<20 {
		return nil, errors.New("introspection response too large")
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("introspection: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	res, err := parseIntrospection(body)
	if err != nil {
		return nil, err
	}
	res.retrievedAt = h.now()
	h.mu.Lock()
	if h.authEndpoint == endpoint {
		h.cache[tok] = cacheEntry{res: res, storedAt: res.retrievedAt}
	}
	h.mu.Unlock()
	return res, nil
}

// parseIntrospection validates an answer with Synapse's strictness: active
// must be a boolean; scope, username, sub and device_id strings or null;
// expires_in an integer or null.
func parseIntrospection(body []byte) (*introspection, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("introspection response is not a JSON object: %v", err)
	}
	res := &introspection{raw: raw}
	if err := strictJSON(raw["active"], &res.active); err != nil || raw["active"] == nil || isNull(raw["active"]) {
		return nil, errors.New("introspection: active is missing or not a boolean")
	}
	for k, dst := range map[string]**string{"scope": &res.scope, "username": &res.username, "device_id": &res.deviceID, "sub": new(*string)} {
		if v, ok := raw[k]; ok && !isNull(v) {
			var s string
			if err := strictJSON(v, &s); err != nil {
				return nil, fmt.Errorf("introspection: %s is not a string", k)
			}
			*dst = &s
		}
	}
	if v, ok := raw["expires_in"]; ok && !isNull(v) {
		var n int64
		if err := strictJSON(v, &n); err != nil {
			return nil, errors.New("introspection: expires_in is not an integer")
		}
		res.expiresIn = &n
	}
	return res, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// strictJSON decodes v into dst refusing null (which encoding/json would
// silently accept) and type mismatches.
func strictJSON(v json.RawMessage, dst any) error {
	if v == nil || isNull(v) {
		return errors.New("null")
	}
	return json.Unmarshal(v, dst)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
