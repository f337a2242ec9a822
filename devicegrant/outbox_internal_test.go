package devicegrant

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
	"github.com/devicegrant/devicegrant/store/storetest"
)

// These tests reach inside the server: the order of a commit and a
// wake-up, and a re-run between two deliverers, cannot be seen from HTTP
// without timing.

const internalSecret = "internal-test-secret"

// outboxServer is a server on a real SQLite file, seen through wrap, with
// a homeserver that behaves like Synapse and no background work running.
func outboxServer(t *testing.T, wrap func(store.Store) store.Store) (*Server, *sqlite.Store, *fakesynapse.Homeserver) {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	ctx := context.Background()
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: internalSecret})
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "devicegrantd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{
		Issuer:             "http://127.0.0.1:1/",
		HomeserverEndpoint: hs.URL(),
		HomeserverSecret:   internalSecret,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, wrap(st))
	if err != nil {
		t.Fatal(err)
	}
	return s, st, hs
}

// woken reports whether the outbox deliverer was woken, and takes the
// wake-up.
func (s *Server) woken() bool {
	select {
	case <-s.outboxKick:
		return true
	default:
		return false
	}
}

// TestOutboxWakesAfterCommit: the deliverer is woken when a transaction
// that enqueued a homeserver call commits. Woken inside it, the deliverer
// would find nothing yet and sleep until its next tick; after a rollback,
// or a transaction that enqueued nothing, there is nothing to wake for.
func TestOutboxWakesAfterCommit(t *testing.T) {
	ctx := context.Background()
	s, _, _ := outboxServer(t, func(st store.Store) store.Store { return st })
	body := map[string]string{"localpart": "alice"}

	err := s.store.Update(ctx, func(tx store.Tx) error {
		if err := s.enqueue(ctx, tx, "alice", callProvisionUser, body, ""); err != nil {
			return err
		}
		if s.woken() {
			t.Error("the deliverer was woken before the commit")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !s.woken() {
		t.Error("the deliverer was not woken after the commit")
	}

	errRollBack := errors.New("roll back")
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := s.enqueue(ctx, tx, "alice", callProvisionUser, body, ""); err != nil {
			return err
		}
		return errRollBack
	})
	if !errors.Is(err, errRollBack) {
		t.Fatalf("Update = %v", err)
	}
	if s.woken() {
		t.Error("the deliverer was woken for a rolled-back call")
	}
	if err := s.store.Update(ctx, func(tx store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if s.woken() {
		t.Error("the deliverer was woken by a transaction that enqueued nothing")
	}
}

// TestDeliverDecidesAfreshOnRerun: when the store runs the claim again
// (store.Store allows it) and, in between, another deliverer took the
// entry, deliver must not make the call: the first run's decision to claim
// it is void. Without another deliverer, a re-run delivers exactly once.
func TestDeliverDecidesAfreshOnRerun(t *testing.T) {
	ctx := context.Background()
	var rival atomic.Bool // when set, the next Update is raced by another deliverer
	s, st, hs := outboxServer(t, func(st store.Store) store.Store {
		return storetest.Rerun(st, func(ctx context.Context, st store.Store) error {
			if !rival.CompareAndSwap(true, false) {
				return nil
			}
			return st.Update(ctx, func(tx store.Tx) error {
				all, err := tx.Outbox(ctx, 100)
				if err != nil {
					return err
				}
				for _, e := range all {
					e.LeaseUntil = time.Now().Add(time.Hour)
					if err := tx.UpdateOutbox(ctx, e); err != nil {
						return err
					}
				}
				return nil
			})
		})
	})
	due := enqueueOne(t, s, st)

	rival.Store(true)
	if ok, err := s.deliver(ctx, due[0]); ok || err != nil {
		t.Errorf("deliver of an entry another deliverer holds: %v %v, want false, nil", ok, err)
	}
	if calls := hs.Calls(); len(calls) != 0 {
		t.Fatalf("deliver made %d homeserver calls for an entry another deliverer holds", len(calls))
	}

	// The rival's lease ends; the entry is delivered once and removed.
	err := st.Update(ctx, func(tx store.Tx) error {
		e, err := tx.OutboxEntry(ctx, due[0].ID)
		if err != nil {
			return err
		}
		e.LeaseUntil = time.Time{}
		return tx.UpdateOutbox(ctx, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.deliver(ctx, due[0]); !ok || err != nil {
		t.Fatalf("deliver: %v %v, want true, nil", ok, err)
	}
	if calls := hs.Calls(); len(calls) != 1 || calls[0].Path != "/_synapse/mas/provision_user" || calls[0].Status != 201 {
		t.Errorf("homeserver calls %+v, want one provision_user answered 201", calls)
	}
	if left, err := st.Outbox(ctx, 10); err != nil || len(left) != 0 {
		t.Errorf("outbox after delivery: %v %v, want empty", left, err)
	}
}

// TestDeliverKeepsAnotherDeliverersBackoff: a deliverer that read the due
// entries just before another instance's attempt at one failed must not
// claim it anyway: the failure set when it may be tried again, and the
// homeserver gets no call before then (issue 15, several instances on one
// database).
func TestDeliverKeepsAnotherDeliverersBackoff(t *testing.T) {
	ctx := context.Background()
	s, st, hs := outboxServer(t, func(st store.Store) store.Store { return storetest.Rerun(st, nil) })
	due := enqueueOne(t, s, st)
	// Meanwhile another instance tried it, failed, and released it.
	err := st.Update(ctx, func(tx store.Tx) error {
		e, err := tx.OutboxEntry(ctx, due[0].ID)
		if err != nil {
			return err
		}
		e.Attempts, e.LastError, e.NextAttemptAt, e.LeaseUntil = 1, "homeserver answered 503", time.Now().Add(time.Hour), time.Time{}
		return tx.UpdateOutbox(ctx, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.deliver(ctx, due[0]); ok || err != nil {
		t.Errorf("deliver of an entry backing off: %v %v, want false, nil", ok, err)
	}
	if calls := hs.Calls(); len(calls) != 0 {
		t.Errorf("deliver called the homeserver %d times for an entry not due for an hour", len(calls))
	}
}

// TestDeliverOutlivesALostInstance: an instance that dies in the middle
// of a call (SIGKILL, a lost machine) leaves its lease on the entry. The
// others neither make that call nor any later call for the same user
// while the lease lasts (P-HS-3: in order per user), and once it has
// expired they make them all, in order (issue 15).
func TestDeliverOutlivesALostInstance(t *testing.T) {
	ctx := context.Background()
	s, st, hs := outboxServer(t, func(st store.Store) store.Store { return storetest.Rerun(st, nil) })
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	s.now = func() time.Time { return time.UnixMilli(clock.Load()) }
	bodies := []struct {
		call string
		body map[string]string
	}{
		{callProvisionUser, map[string]string{"localpart": "alice"}},
		{callUpsertDevice, map[string]string{"localpart": "alice", "device_id": "LOSTDEV001"}},
		{callUpsertDevice, map[string]string{"localpart": "alice", "device_id": "LOSTDEV002"}},
	}
	for _, b := range bodies {
		if err := st.Update(ctx, func(tx store.Tx) error {
			return s.enqueue(ctx, tx, "alice", b.call, b.body, "")
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The lost instance had claimed the first call.
	lost := s.now().Add(s.cfg.OutboxLease)
	err := st.Update(ctx, func(tx store.Tx) error {
		all, err := tx.Outbox(ctx, 10)
		if err != nil {
			return err
		}
		all[0].LeaseUntil = lost
		return tx.UpdateOutbox(ctx, all[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{s.now(), lost.Add(-time.Second)} {
		clock.Store(at.UnixMilli())
		if s.deliverDue(ctx) {
			t.Errorf("at %v before the lost lease expired, a call was delivered", lost.Sub(at))
		}
		if calls := hs.Calls(); len(calls) != 0 {
			t.Fatalf("%d homeserver calls while the lost instance's lease lasted: %+v", len(calls), calls)
		}
	}
	clock.Store(lost.UnixMilli())
	for s.deliverDue(ctx) {
	}
	calls := hs.Calls()
	if len(calls) != len(bodies) {
		t.Fatalf("%d homeserver calls after the lease expired, want %d: %+v", len(calls), len(bodies), calls)
	}
	for i, c := range calls {
		if c.Path != "/_synapse/mas/"+bodies[i].call || (bodies[i].body["device_id"] != "" && !strings.Contains(string(c.Body), bodies[i].body["device_id"])) || c.Status/100 != 2 {
			t.Errorf("call %d: %s %s %d, want %s %v answered 2xx", i, c.Path, c.Body, c.Status, bodies[i].call, bodies[i].body)
		}
	}
	if left, err := st.Outbox(ctx, 10); err != nil || len(left) != 0 {
		t.Errorf("outbox after delivery: %v %v, want empty", left, err)
	}
}

// TestDeliverKeepsOrderWhenParkedCallsReturn: a deliverer holding a list
// of due calls read before an operator put a parked call back in line
// ("devicegrantd outbox retry") must not make a later call for the same
// user: the call put back comes first again (P-HS-3, in order per user),
// and with several instances another may be making it at that moment.
func TestDeliverKeepsOrderWhenParkedCallsReturn(t *testing.T) {
	ctx := context.Background()
	s, st, hs := outboxServer(t, func(st store.Store) store.Store { return storetest.Rerun(st, nil) })
	for _, dev := range []string{"PARKDEV001", "PARKDEV002"} {
		if err := st.Update(ctx, func(tx store.Tx) error {
			if dev == "PARKDEV001" {
				if err := s.enqueue(ctx, tx, "alice", callProvisionUser, map[string]string{"localpart": "alice"}, ""); err != nil {
					return err
				}
			}
			return s.enqueue(ctx, tx, "alice", callUpsertDevice, map[string]string{"localpart": "alice", "device_id": dev}, "")
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The first call was parked after repeated refusals.
	err := st.Update(ctx, func(tx store.Tx) error {
		all, err := tx.Outbox(ctx, 10)
		if err != nil {
			return err
		}
		all[0].ParkedAt, all[0].Attempts = time.Now(), parkAfter
		return tx.UpdateOutbox(ctx, all[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := st.OutboxDue(ctx, time.Now(), 10)
	if err != nil || len(stale) != 1 || stale[0].Call != callUpsertDevice {
		t.Fatalf("OutboxDue with the head parked: %+v %v", stale, err)
	}
	if n, err := s.RetryParked(ctx); n != 1 || err != nil {
		t.Fatalf("RetryParked: %d %v", n, err)
	}
	if ok, err := s.deliver(ctx, stale[0]); ok || err != nil {
		t.Errorf("deliver of a call behind one put back in line: %v %v, want false, nil", ok, err)
	}
	if calls := hs.Calls(); len(calls) != 0 {
		t.Fatalf("a later call went out before the one put back in line: %+v", calls)
	}
	for s.deliverDue(ctx) {
	}
	var got []string
	for _, c := range hs.Calls() {
		got = append(got, strings.TrimPrefix(c.Path, "/_synapse/mas/"))
	}
	if want := []string{callProvisionUser, callUpsertDevice, callUpsertDevice}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}
}

// enqueueOne queues alice's provision_user and returns the outbox's due
// entries: that one.
func enqueueOne(t *testing.T, s *Server, st store.Store) []store.OutboxEntry {
	t.Helper()
	ctx := context.Background()
	err := st.Update(ctx, func(tx store.Tx) error {
		return s.enqueue(ctx, tx, "alice", callProvisionUser, map[string]string{"localpart": "alice"}, "")
	})
	if err != nil {
		t.Fatal(err)
	}
	due, err := st.OutboxDue(ctx, time.Now(), 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("OutboxDue: %v %v", due, err)
	}
	return due
}
