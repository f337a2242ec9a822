package devicegrant

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// slowClientReads is a store whose client reads take readTime on the
// server's clock, as on a database under load.
type slowClientReads struct {
	store.Store
	advance func()
}

func (s slowClientReads) Client(ctx context.Context, id string) (store.Client, error) {
	c, err := s.Store.Client(ctx, id)
	s.advance() // the row was read at the start; the answer arrives later
	return c, err
}

// TestClientCacheAgesFromTheRead: a client row is answered from memory
// for at most clientCacheTTL after the read that learned it began, however
// long that read took, so an untrust made by another process with no
// notice (an admin command on the SQLite file) counts no later than the
// documented 10 s after the read saw the client trusted.
func TestClientCacheAgesFromTheRead(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "clients.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var mu sync.Mutex
	clock := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	wait := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	const readTime = 8 * time.Second
	s, err := New(Config{Issuer: "http://127.0.0.1:1/", Now: now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		slowClientReads{Store: st, advance: func() { wait(readTime) }})
	if err != nil {
		t.Fatal(err)
	}
	c := store.Client{ID: "client1", Metadata: []byte(`{"client_uri":"https://kitchen.example.org/","token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code"]}`), CreatedAt: now(), Trusted: true}
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.CreateClient(ctx, c) }); err != nil {
		t.Fatal(err)
	}
	if cl, err := s.loadClient(ctx, c.ID); err != nil || !cl.Trusted {
		t.Fatalf("first read: %+v %v", cl, err)
	}
	// Untrusted behind the cache's back, as another process would.
	c.Trusted = false
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.UpdateClient(ctx, c) }); err != nil {
		t.Fatal(err)
	}
	wait(clientCacheTTL - readTime + time.Second) // 11 s after the read saw it trusted
	if cl, err := s.loadClient(ctx, c.ID); err != nil || cl.Trusted {
		t.Fatalf("%v after the read that saw it trusted, the client is still trusted (%v)", clientCacheTTL+time.Second, err)
	}
}
