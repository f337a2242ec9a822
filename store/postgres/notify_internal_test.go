package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// watching runs st.Watch until the test ends and hands over what it hears.
func watching(t *testing.T, st *Store) <-chan store.Notice {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	notes := make(chan store.Notice, 4096)
	done := make(chan error, 1)
	go func() { done <- st.Watch(ctx, func(n store.Notice) { notes <- n }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v after its context was cancelled, want context.Canceled", err)
		}
	})
	return notes
}

// next waits for the next notice.
func next(t *testing.T, notes <-chan store.Notice, what string) store.Notice {
	t.Helper()
	select {
	case n := <-notes:
		return n
	case <-time.After(10 * time.Second):
		t.Fatalf("no notice within 10 s: %s", what)
		return store.Notice{}
	}
}

// expect takes the next notices and fails unless they are want, in order.
func expect(t *testing.T, notes <-chan store.Notice, what string, want ...store.Notice) {
	t.Helper()
	for i, w := range want {
		if got := next(t, notes, what); got != w {
			t.Fatalf("%s: notice %d is %+v, want %+v", what, i, got, w)
		}
	}
}

// announce commits a transaction that announces keys of topic.
func announce(t *testing.T, st *Store, topic string, keys ...string) {
	t.Helper()
	err := st.Update(context.Background(), func(tx store.Tx) error {
		for _, k := range keys {
			tx.(store.Announcer).Announce(topic, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatch: what a transaction announces reaches another Store's Watch
// after the commit, in commit order; a transaction that rolls back, and a
// run of Update that is rolled back to run again, announce nothing; a
// Store does not hear itself; keys too many for one notification all
// arrive, and a key too long for any (or not UTF-8) turns into the whole
// topic; a listener that waits long without a notice checks its
// connection and keeps it; and a listener whose connection is killed
// reconnects and reports a resync first, since what was sent meanwhile is
// lost (issue 15).
func TestWatch(t *testing.T) {
	dsn := pgtest.URL(t)
	ctx := context.Background()
	a, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.notify.idle = 200 * time.Millisecond // exercise the idle check
	notes := watching(t, b)
	expect(t, notes, "watch started", store.Notice{Resync: true})

	// Rolled back: nothing.
	errNo := errors.New("changed my mind")
	err = a.Update(ctx, func(tx store.Tx) error {
		tx.(store.Announcer).Announce("grant", "rolled-back")
		return errNo
	})
	if !errors.Is(err, errNo) {
		t.Fatalf("Update: %v", err)
	}
	// A run that fails to serialize is rolled back and run again: only
	// the run that commits is heard of.
	runs := 0
	err = a.Update(ctx, func(tx store.Tx) error {
		runs++
		tx.(store.Announcer).Announce("grant", fmt.Sprintf("run-%d", runs))
		if runs == 1 {
			return fmt.Errorf("as if: %w", &pgconn.PgError{Code: "40001"})
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Fatalf("Update: %v after %d runs, want success after 2", err, runs)
	}
	// Committed: each key once, topics in the order announced; an empty
	// key (the whole topic) swallows the topic's other keys.
	announce(t, b, "grant", "own") // b's own: b does not hear it
	err = a.Update(ctx, func(tx store.Tx) error {
		an := tx.(store.Announcer)
		an.Announce("grant", "g1")
		an.Announce("other", "o1")
		an.Announce("grant", "g1")
		an.Announce("grant", "g2")
		an.Announce("all", "x")
		an.Announce("all", "")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, notes, "after the commits",
		store.Notice{Topic: "grant", Key: "run-2"},
		store.Notice{Topic: "grant", Key: "g1"},
		store.Notice{Topic: "grant", Key: "g2"},
		store.Notice{Topic: "other", Key: "o1"},
		store.Notice{Topic: "all", Key: ""},
	)

	// More keys than one payload holds: all of them, in several.
	var many []string
	for i := range 1000 {
		many = append(many, fmt.Sprintf("%040d", i))
	}
	announce(t, a, "many", many...)
	for i, k := range many {
		if n := next(t, notes, "many keys"); n != (store.Notice{Topic: "many", Key: k}) {
			t.Fatalf("key %d of many: got %+v", i, n)
		}
	}
	// A key longer than a payload may be, or one JSON would alter: the
	// whole topic.
	announce(t, a, "huge", strings.Repeat("k", 9000))
	expect(t, notes, "a huge key", store.Notice{Topic: "huge", Key: ""})
	announce(t, a, "binary", "ok", "\xff\xfe")
	expect(t, notes, "a key that is not UTF-8", store.Notice{Topic: "binary", Key: ""})

	// Quiet for several idle periods: the listener pings and stays.
	time.Sleep(time.Second)
	announce(t, a, "grant", "after-quiet")
	expect(t, notes, "after a quiet second", store.Notice{Topic: "grant", Key: "after-quiet"})

	// The listener's connection is killed: it comes back, says resync
	// (with the reason), and hears again.
	var killed int
	err = a.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`,
		b.notify.conn.RuntimeParams["application_name"]).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminating the listener: %d terminated, %v", killed, err)
	}
	n := next(t, notes, "after the listener was killed")
	if !n.Resync || n.Err == nil {
		t.Fatalf("after the listener was killed: %+v, want a resync with the error", n)
	}
	t.Logf("resync after: %v", n.Err)
	announce(t, a, "grant", "after-reconnect")
	expect(t, notes, "after the reconnect", store.Notice{Topic: "grant", Key: "after-reconnect"})
	select {
	case n := <-notes:
		t.Fatalf("an extra notice: %+v", n)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestListenerSilentServer: a listener whose database accepts the
// connection and then says nothing (a server hung, a failover's old
// address half there) gives up within its bound and tries again, instead
// of waiting for TCP to give up, minutes after the database is back;
// until it is back the polling cache's age bound covers what it misses
// (issue 15).
func TestListenerSilentServer(t *testing.T) {
	addr := pgtest.SilentServer(t)
	cfg, err := pgx.ParseConfig("postgres://nobody@" + addr + "/none?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	n := notifier{channel: "devicegrant silent", origin: "test", conn: cfg, idle: time.Second, wait: 200 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		done <- n.listen(context.Background(), func(store.Notice) { t.Error("a notice from a server that said nothing") }, nil)
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("listen returned no error from a silent server")
		}
		t.Logf("gave up: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the listener still waits for a server that said nothing, 5 s on")
	}
}
