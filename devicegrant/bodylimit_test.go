package devicegrant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stallingBody sends prefix, then blocks until release is closed: a
// client that is still sending a huge body. If the server needed the
// whole body before answering, the request would never get an answer.
type stallingBody struct {
	prefix  *strings.Reader
	sent    atomic.Int64
	release <-chan struct{}
	ctx     context.Context
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.prefix.Len() > 0 {
		n, err := b.prefix.Read(p)
		b.sent.Add(int64(n))
		return n, err
	}
	select {
	case <-b.release:
	case <-b.ctx.Done():
	}
	return 0, io.ErrUnexpectedEOF
}

func (b *stallingBody) Close() error { return nil }

// TestLargeBodiesAreRefusedUnread: a 40 MiB POST, multipart or form, to
// an API endpoint or a page is answered 413/400 while the client has sent
// at most 256 KiB of it, so the server cannot have buffered the rest (it
// used to read 32 MiB of multipart into memory before any check).
func TestLargeBodiesAreRefusedUnread(t *testing.T) {
	e := newEnv(t)
	const total = 40 << 20
	const sentAtMost = 256 << 10
	multipart := "--XX\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\n" + strings.Repeat("A", sentAtMost)
	form := "grant_type=" + strings.Repeat("A", sentAtMost)
	cases := []struct {
		name, path, ctype, prefix string
		declared                  bool // Content-Length says 40 MiB; else chunked
		status                    int
		page                      bool
	}{
		{"multipart with length to token", "oauth2/token", "multipart/form-data; boundary=XX", multipart, true, 413, false},
		{"chunked multipart to token", "oauth2/token", "multipart/form-data; boundary=XX", multipart, false, 400, false},
		{"chunked form to token", "oauth2/token", "application/x-www-form-urlencoded", form, false, 413, false},
		{"chunked form to device", "oauth2/device", "application/x-www-form-urlencoded", form, false, 413, false},
		{"chunked form to revoke", "oauth2/revoke", "application/x-www-form-urlencoded", form, false, 413, false},
		{"chunked multipart to introspect", "oauth2/introspect", "multipart/form-data; boundary=XX", multipart, false, 400, false},
		{"chunked JSON to registration", "oauth2/registration", "application/json", `{"client_name":"` + strings.Repeat("A", sentAtMost), false, 400, false},
		{"40 MiB with length to registration", "oauth2/registration", "application/json", `{"client_name":"` + strings.Repeat("A", sentAtMost), true, 400, false},
		{"chunked multipart to the code page", "device", "multipart/form-data; boundary=XX", multipart, false, 400, true},
		{"chunked form to the login page", "login", "application/x-www-form-urlencoded", form, false, 413, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			body := &stallingBody{prefix: strings.NewReader(tc.prefix), release: release, ctx: ctx}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.ctype)
			if tc.declared {
				req.ContentLength = total
			} else {
				req.ContentLength = -1
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("no answer before the body was sent (%d bytes sent): %v", body.sent.Load(), err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if sent := body.sent.Load(); sent > sentAtMost+1024 {
				t.Errorf("the client sent %d bytes", sent)
			}
			if tc.page {
				if !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
					t.Errorf("a page route answered %s", resp.Header.Get("Content-Type"))
				}
				return
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil || m["error"] == nil || m["error_description"] == nil {
				t.Errorf("not an OAuth error: %s", b)
			}
		})
	}
}

// TestFormsMustBeFormEncoded: the OAuth endpoints take only
// application/x-www-form-urlencoded bodies, once per parameter (RFC 6749
// §3.1, §3.2).
func TestFormsMustBeFormEncoded(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	post := func(ctype, body string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, e.URL+"oauth2/device", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return do(t, req)
	}
	good := url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:client:device:FORMDEVICE"}}.Encode()
	if status, m := post("application/x-www-form-urlencoded; charset=utf-8", good); status != http.StatusOK {
		t.Fatalf("a form: %d %v", status, m)
	}
	for _, tc := range []struct{ name, ctype, body string }{
		{"JSON", "application/json", fmt.Sprintf(`{"client_id":%q,"scope":%q}`, clientID, apiScope+" urn:matrix:client:device:FORMDEVICE")},
		{"no content type", "", good},
		{"multipart", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\n" + clientID + "\r\n--XX--\r\n"},
		{"repeated parameter", "application/x-www-form-urlencoded", good + "&client_id=" + clientID},
		{"bad escape", "application/x-www-form-urlencoded", good + "&x=%zz"},
	} {
		status, m := post(tc.ctype, tc.body)
		if status != http.StatusBadRequest || m["error"] != "invalid_request" {
			t.Errorf("%s: %d %v, want 400 invalid_request", tc.name, status, m)
		}
	}
}
