package devicegrant

import (
	"context"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
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
	s, st, now, wait := slowReadServer(t, func(st store.Store, advance func()) store.Store {
		return slowClientReads{Store: st, advance: advance}
	})
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
