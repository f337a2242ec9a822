package devicegrant_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// slowOutboxRecord is a store whose next outbox read in a transaction,
// once armed, waits first: a database slow to answer one instance while
// the others go on.
type slowOutboxRecord struct {
	*postgres.Store
	armed atomic.Bool
	delay time.Duration
	slept chan struct{} // closed after the wait
}

func (s *slowOutboxRecord) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(slowOutboxTx{tx, s}) })
}

type slowOutboxTx struct {
	store.Tx
	s *slowOutboxRecord
}

func (t slowOutboxTx) OutboxEntry(ctx context.Context, id int64) (store.OutboxEntry, error) {
	if t.s.armed.CompareAndSwap(true, false) {
		time.Sleep(t.s.delay)
		close(t.s.slept)
	}
	return t.Tx.OutboxEntry(ctx, id)
}

// TestOutboxOutcomeAfterTakeover: instance A's homeserver call is cut off
// at half the lease, and the database is slow to record its failure, so
// slow that the lease runs out meanwhile and instance B takes the call
// over and makes it. A's record, when it lands, must leave the call to B:
// clearing the lease that B now holds let A (or a third instance) make
// the call again while B's was still under way, two at once, when the
// outbox promises one instance at a time, in order per user (P-HS-3;
// issue 15). Likewise a success recorded late must not delete the entry
// under B, which would let the user's next call overtake B's.
func TestOutboxOutcomeAfterTakeover(t *testing.T) {
	const lease = time.Second // each call is cut off at 500 ms
	var (
		mu               sync.Mutex
		inFlight, most   int
		calls            int
		firstCall        = make(chan struct{})
		firstCallStarted sync.Once
	)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		inFlight++
		calls++
		most = max(most, inFlight)
		mu.Unlock()
		firstCallStarted.Do(func() { close(firstCall) })
		<-r.Context().Done() // never answers: every call is cut off
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	t.Cleanup(hs.Close)

	dsn := pgtest.URL(t)
	ctx := context.Background()
	start := func(st store.Store) *devicegrant.Server {
		t.Helper()
		srv, err := devicegrant.New(devicegrant.Config{
			Issuer: "https://auth.example.org/", ServerName: "example.org",
			HomeserverEndpoint: hs.URL, HomeserverSecret: devtest.HomeserverSecret,
			OutboxLease:   lease,
			OutboxBackoff: devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 20 * time.Millisecond},
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, st)
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	run := func(srv *devicegrant.Server) {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })
	}
	open := func() *postgres.Store {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	slow := &slowOutboxRecord{Store: open(), delay: 3 * lease / 4, slept: make(chan struct{})}
	a := start(slow)
	b := start(open())
	if _, err := a.CreateUser(ctx, devtest.Username, devtest.Password, "Alice"); err != nil {
		t.Fatal(err)
	}
	// A alone at first, so that A makes the first call; its record of the
	// outcome, after the cut at 500 ms, waits 750 ms: the lease runs out, B
	// takes the call over at 1 s, and its call is under way at 1.25 s.
	run(a)
	select {
	case <-firstCall:
	case <-time.After(10 * time.Second):
		t.Fatal("A never called the homeserver")
	}
	slow.armed.Store(true)
	run(b)
	select {
	case <-slow.slept:
	case <-time.After(10 * time.Second):
		t.Fatal("A never recorded the outcome of its call")
	}
	// B took the call over once the lease ran out, and is making it now;
	// watch a few rounds of the calls that follow.
	time.Sleep(3 * lease)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d calls", calls)
	if calls < 2 {
		t.Fatalf("%d calls; want B to have taken the call over after the lease", calls)
	}
	if most > 1 {
		t.Errorf("up to %d calls for one user were under way at once; want one at a time", most)
	}
}
