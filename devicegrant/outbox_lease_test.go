package devicegrant_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestOutboxCallEndsWithinLease: a homeserver call that hangs is cut off
// at half the outbox lease (OutboxLease) and counted as a failed attempt,
// so it never outlives the lease: once the lease has run out another
// instance may make the call, and the two must not overlap (issue 15).
func TestOutboxCallEndsWithinLease(t *testing.T) {
	const lease = 800 * time.Millisecond
	calls := make(chan time.Duration, 16)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		// Read to the end, so that the server notices the caller
		// hanging up.
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done() // the homeserver never answers
		select {
		case calls <- time.Since(began):
		default: // the retries that follow
		}
	}))
	t.Cleanup(hs.Close)
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.HomeserverEndpoint = hs.URL
		c.OutboxLease = lease
	}))
	select {
	case d := <-calls:
		if d >= lease || d < lease/2-100*time.Millisecond {
			t.Errorf("a hanging homeserver call ended after %v; want it cut off at half the %v lease", d, lease)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the hanging call was never cut off")
	}
	eventually(t, "the cut-off call is recorded as a failed attempt", func() bool {
		entries, err := e.Server.Server.Outbox(t.Context(), 10)
		return err == nil && len(entries) > 0 && entries[0].Attempts >= 1 && entries[0].LastError != ""
	})
}
