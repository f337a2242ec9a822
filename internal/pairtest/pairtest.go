// Package pairtest sets up what end-to-end tests of matrix-pair need: a
// fake Synapse (internal/fakesynapse) delegating to a real devicegrantd
// core (internal/devtest) on loopback, a phone to approve with, and small
// reverse proxies that bend the traffic the way networks and other
// servers do (lost answers, duplicated requests, MAS's status codes).
package pairtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// Secret is the homeserver's shared secret with the auth server.
const Secret = "pairtest-homeserver-secret"

// World is a homeserver and its auth server.
type World struct {
	HS    *fakesynapse.Homeserver
	Auth  *devtest.Server
	Phone *devtest.Phone
	t     testing.TB
}

// Start runs a fake Synapse serving the given discovery mode and a
// devicegrantd core for it (ServerName and HomeserverSecret set; opts may
// change more).
func Start(t testing.TB, mode fakesynapse.AuthMetadataMode, opts ...devtest.Option) *World {
	t.Helper()
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: Secret, AuthMetadata: mode})
	opts = append([]devtest.Option{devtest.WithConfig(func(c *devicegrant.Config) {
		c.ServerName = hs.ServerName()
		c.HomeserverSecret = Secret
	})}, opts...)
	as := devtest.Start(t, opts...)
	hs.SetAuthEndpoint(as.URL)
	return &World{HS: hs, Auth: as, Phone: devtest.NewPhone(t), t: t}
}

// UserID is the test account's Matrix user id.
func (w *World) UserID() string { return "@" + devtest.Username + ":" + w.HS.ServerName() }

// Introspection is devicegrantd's answer about an access token.
type Introspection struct {
	Active   bool   `json:"active"`
	Username string `json:"username"`
	DeviceID string `json:"device_id"`
	Scope    string `json:"scope"`
}

// Introspect asks devicegrantd about an access token, as the homeserver
// does (Bearer shared secret).
func (w *World) Introspect(token string) Introspection {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, w.Auth.URL+"oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var in Introspection
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		w.t.Fatalf("introspection: HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		w.t.Fatal(err)
	}
	return in
}

// Proxy runs a reverse proxy to target (a base URL) until the test ends,
// with wrap around the proxying handler, and returns its base URL.
func Proxy(t testing.TB, target string, wrap func(next http.Handler) http.Handler) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var h http.Handler = rp
	if wrap != nil {
		h = wrap(rp)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Request is a request a proxy saw, with its form already read.
type Request struct {
	Path string
	Form url.Values
}

// Recorder records the form requests that pass through a proxy and lets a
// test change the answers. Its methods are safe for concurrent use.
type Recorder struct {
	mu   sync.Mutex
	reqs []Request
	// Rewrite, if set, may replace an answer: it gets the request and the
	// upstream answer and returns the status and body to send.
	Rewrite func(r Request, status int, body []byte) (int, []byte)
	// Before, if set, runs before a request is forwarded; returning false
	// drops the connection without forwarding (a request lost on the way).
	Before func(r Request) bool
	// After, if set, runs after the upstream answered; returning false
	// drops the connection instead of answering (an answer lost on the way).
	After func(r Request) bool
}

// Requests returns the requests seen whose form has the given key=value
// (all requests if key is "").
func (rc *Recorder) Requests(key, value string) []Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Request
	for _, r := range rc.reqs {
		if key == "" || r.Form.Get(key) == value {
			out = append(out, r)
		}
	}
	return out
}

// Wrap is a wrap function for [Proxy].
func (rc *Recorder) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		req := Request{Path: r.URL.Path, Form: form}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, req)
		before, after, rewrite := rc.Before, rc.After, rc.Rewrite
		rc.mu.Unlock()
		if before != nil && !before(req) {
			panic(http.ErrAbortHandler)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		if after != nil && !after(req) {
			panic(http.ErrAbortHandler)
		}
		status, out := rec.Code, rec.Body.Bytes()
		if rewrite != nil {
			status, out = rewrite(req, status, out)
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(status)
		w.Write(out)
	})
}
