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

// slowGrantReads is a store whose grant reads take readTime on the
// server's clock, as on a database under load.
type slowGrantReads struct {
	store.Store
	advance func()
}

func (s slowGrantReads) DeviceGrantByDeviceCode(ctx context.Context, hash []byte) (store.DeviceGrant, error) {
	g, err := s.Store.DeviceGrantByDeviceCode(ctx, hash)
	s.advance() // the row was read at the start; the answer arrives later
	return g, err
}

// readTime is how long slowReadServer's slow reads take on its clock.
const readTime = 8 * time.Second

// slowReadServer is a server on a new SQLite file whose clock moves only
// by wait, and whose store, as wrap makes it, calls advance to take
// readTime for the reads under test. It returns the server, the store
// itself (for changes made behind the server's back, as another process
// would), and the clock.
func slowReadServer(t *testing.T, wrap func(st store.Store, advance func()) store.Store) (s *Server, st store.Store, now func() time.Time, wait func(time.Duration)) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "slow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var mu sync.Mutex
	clock := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	wait = func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	s, err = New(Config{Issuer: "http://127.0.0.1:1/", Now: now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		wrap(st, func() { wait(readTime) }))
	if err != nil {
		t.Fatal(err)
	}
	return s, st, now, wait
}

// TestPollCacheAgesFromTheRead: the polling cache answers a grant's state
// from memory for at most pollCacheTTL after the read that learned it
// began, however long that read took: a change it was not told of (a
// lost notice, another process) reaches the device's poll no later than
// the documented 10 s after the read saw the old state (P-DEV-5, issue
// 15). A cache that counted from the end of a slow read kept the old
// state that much longer.
func TestPollCacheAgesFromTheRead(t *testing.T) {
	ctx := context.Background()
	s, st, now, wait := slowReadServer(t, func(st store.Store, advance func()) store.Store {
		return slowGrantReads{Store: st, advance: advance}
	})
	hash := []byte("device code hash of a pending grant")
	g := store.DeviceGrant{ID: "grant1", DeviceCodeHash: hash, UserCode: "BCDFGHJK", ClientID: "client1",
		Scope: "openid", CreatedAt: now(), ExpiresAt: now().Add(time.Hour), Interval: 5 * time.Second, State: store.GrantPending}
	if err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateClient(ctx, store.Client{ID: "client1", Metadata: []byte(`{}`), CreatedAt: now()}); err != nil {
			return err
		}
		return tx.CreateDeviceGrant(ctx, g)
	}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.pollState(ctx, hash); err != nil || !ok || v.State != store.GrantPending {
		t.Fatalf("first poll: %v %v %v", v.State, ok, err)
	}
	// Denied behind the cache's back: through the store itself, as
	// another process would, with no notice reaching this one.
	g.State, g.DecidedAt = store.GrantDenied, now()
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.UpdateDeviceGrant(ctx, g) }); err != nil {
		t.Fatal(err)
	}
	wait(pollCacheTTL - readTime + time.Second) // 11 s after the read saw "pending"
	if v, ok, err := s.pollState(ctx, hash); err != nil || !ok || v.State != store.GrantDenied {
		t.Fatalf("%v after the read that saw it pending, a poll still gets %q (%v %v), want the denial", pollCacheTTL+time.Second, v.State, ok, err)
	}
}
