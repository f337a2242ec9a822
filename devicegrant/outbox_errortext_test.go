package devicegrant_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestOutboxFailureWithBinaryAnswer: a homeserver call that fails is
// recorded with the start of the homeserver's answer as its last error,
// shown by "devicegrantd outbox". The answer is whatever the homeserver,
// or a proxy in front of it, sends: bytes that are not UTF-8, a NUL, or
// an error message in a language beyond ASCII cut at 512 bytes inside a
// character. The failure is recorded all the same, as text (on
// PostgreSQL, which refuses such text, the record failed: the entry was
// retried once a lease ran out, never counted an attempt, and so never
// parked; P-HS-3, run with DEVICEGRANT_CORE_STORE=postgres).
func TestOutboxFailureWithBinaryAnswer(t *testing.T) {
	for name, body := range map[string]string{
		"latin-1 page":  "<html>Fehler: ung\xfcltige Anfrage</html>",
		"NUL":           "bad\x00request",
		"cut character": strings.Repeat("x", 511) + "é and more",
	} {
		t.Run(name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, body)
			}))
			t.Cleanup(hs.Close)
			e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
				c.HomeserverEndpoint = hs.URL
				c.OutboxBackoff = devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 20 * time.Millisecond}
			}))
			eventually(t, "the refused calls are recorded as failed attempts", func() bool {
				entries, err := e.Server.Server.Outbox(t.Context(), 10)
				return err == nil && len(entries) > 0 && entries[0].Attempts >= 2 && entries[0].LastError != ""
			})
			entries, err := e.Server.Server.Outbox(t.Context(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if last := entries[0].LastError; !utf8.ValidString(last) || strings.ContainsRune(last, 0) {
				t.Errorf("last error %q is not text", last)
			}
		})
	}
}
