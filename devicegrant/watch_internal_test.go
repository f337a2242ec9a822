package devicegrant

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// scriptedWatcher delivers the notices a test sends, one at a time, and
// says when each has been handled. (TestWatch in store/postgres shows
// PostgreSQL delivering them; this shows what the server does with each.)
type scriptedWatcher struct {
	notes   chan store.Notice
	handled chan struct{}
}

func (w scriptedWatcher) Watch(ctx context.Context, fn func(store.Notice)) error {
	for {
		select {
		case n := <-w.notes:
			fn(n)
			w.handled <- struct{}{}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TestWatchOthersForgets: a notice that another instance changed a grant
// makes the polling cache forget that grant only; a notice that grants
// were deleted, and a resync (notices may have been lost while the
// listener was away), make it forget everything, including a read that
// began before and ends after; notices of other topics change nothing.
func TestWatchOthersForgets(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "watch.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{Issuer: "http://127.0.0.1:1/", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	w := scriptedWatcher{notes: make(chan store.Notice), handled: make(chan struct{})}
	done := make(chan struct{})
	s.others = w // the server runs on SQLite; the test plays the other instances
	go func() { defer close(done); s.watchOthers(ctx) }()
	defer func() { cancel(); <-done }()
	send := func(n store.Notice) { w.notes <- n; <-w.handled }

	keys := []string{pollKey([]byte("hash a")), pollKey([]byte("hash b")), pollKey([]byte("hash c"))}
	fill := func() {
		for _, k := range keys {
			s.polls.put(k, pollView{ID: k}, s.polls.begin())
		}
	}
	cached := func() (n int) {
		for _, k := range keys {
			if _, ok := s.polls.get(k); ok {
				n++
			}
		}
		return n
	}

	fill()
	send(store.Notice{Topic: topicPolls, Key: keys[0]})
	if _, ok := s.polls.get(keys[0]); ok || cached() != 2 {
		t.Fatalf("after a notice of one grant: that grant cached %v, %d of 3 cached, want it gone and 2", ok, cached())
	}
	send(store.Notice{Topic: "something else", Key: keys[1]})
	send(store.Notice{Topic: "something else"})
	if cached() != 2 {
		t.Fatalf("notices of another topic changed the cache: %d of 3 cached, want 2", cached())
	}
	send(store.Notice{Topic: topicPolls})
	if cached() != 0 {
		t.Fatalf("after a notice that grants were deleted, %d cached, want 0", cached())
	}
	fill()
	begun := s.polls.begin() // a poll starts reading a grant
	send(store.Notice{Resync: true, Err: errors.New("listener lost")})
	s.polls.put(keys[0], pollView{}, begun)
	if cached() != 0 {
		t.Fatalf("after a resync, %d cached, want 0", cached())
	}
}
