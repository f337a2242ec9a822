package devtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// HomeserverSecret is the shared secret every Server accepts at
// introspection (Config.HomeserverSecret), unless an option changes it.
const HomeserverSecret = "devtest-homeserver-secret"

// Do sends req and decodes its JSON answer (nil for an empty body). It
// fails the test on a transport error or an answer that is not JSON.
func Do(t testing.TB, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: not JSON (%d): %s", req.Method, req.URL.Path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

// Get fetches a path of the server as JSON.
func (s *Server) Get(path string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return Do(s.t, req)
}

// Post sends a form to a path of the server, with extra headers given as
// name, value pairs.
func (s *Server) Post(path string, form url.Values, hdr ...string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return Do(s.t, req)
}

// PostJSON sends a JSON body to a path of the server.
func (s *Server) PostJSON(path, body string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return Do(s.t, req)
}

// Register registers a client (RFC 7591) and returns its id and secret
// (empty for a public client).
func (s *Server) Register(body string) (id, secret string) {
	s.t.Helper()
	status, m := s.PostJSON("oauth2/registration", body)
	if status != http.StatusCreated {
		s.t.Fatalf("register: %d %v", status, m)
	}
	id, _ = m["client_id"].(string)
	secret, _ = m["client_secret"].(string)
	if id == "" {
		s.t.Fatalf("register: no client_id in %v", m)
	}
	return id, secret
}

// Introspect asks about a token as the homeserver does (P-HS-2).
func (s *Server) Introspect(token string) map[string]any {
	s.t.Helper()
	status, m := s.Post("oauth2/introspect", url.Values{"token": {token}, "token_type_hint": {"access_token"}},
		"Authorization", "Bearer "+s.homeserverSecret, "X-MAS-Supports-Device-Id", "1")
	if status != http.StatusOK {
		s.t.Fatalf("introspect: %d %v", status, m)
	}
	return m
}
