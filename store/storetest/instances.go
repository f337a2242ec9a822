package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// testInstances: heartbeats are one row per instance, LiveInstances
// counts those seen since a time, DeleteInstances removes the long gone
// and DeleteInstance one that stops, and instances beating at the same moment all get through (on a backend
// that retries conflicts, by retrying). A heartbeat in an Update that runs
// twice (Rerun) still counts once.
func testInstances(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	live := func(since time.Time, want int) {
		t.Helper()
		n, err := s.LiveInstances(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("instances seen since t0%+v", since.Sub(t0)), n, want)
	}
	beat := func(st store.Store, id string, at time.Time) {
		t.Helper()
		update(t, st, func(tx store.Tx) error { return tx.Heartbeat(ctx, id, at) })
	}
	live(t0.Add(-time.Hour), 0)
	beat(s, "a", t0)
	beat(Rerun(s, nil), "b", t0.Add(time.Second))
	live(t0, 2)
	live(t0.Add(time.Millisecond), 1)
	live(t0.Add(2*time.Second), 0)
	beat(s, "a", t0.Add(5*time.Second)) // the same row, moved on
	live(t0, 2)
	live(t0.Add(2*time.Second), 1)

	var gone int64
	update(t, s, func(tx store.Tx) error {
		var err error
		gone, err = tx.DeleteInstances(ctx, t0.Add(2*time.Second))
		return err
	})
	mustEqual(t, "instances deleted", gone, int64(1))
	live(t0.Add(-time.Hour), 1)
	update(t, s, func(tx store.Tx) error { return tx.DeleteInstance(ctx, "a") }) // a stops
	live(t0.Add(-time.Hour), 0)
	update(t, s, func(tx store.Tx) error { return tx.DeleteInstance(ctx, "a") }) // gone already

	// Many instances beating at once, several times each.
	const n, beats = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, n*beats)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range beats {
				errs <- s.Update(ctx, func(tx store.Tx) error {
					return tx.Heartbeat(ctx, fmt.Sprintf("beating-%d", i), t0.Add(time.Minute+time.Duration(j)*time.Millisecond))
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent heartbeat failed: %v", err)
		}
	}
	live(t0.Add(time.Minute), n)
}

// testKnownPlaces: a place is one row per user and place whose time
// never moves back, each user keeps only its most recent places, other
// users' places are untouched by that bound, and ForgetPlaces removes the
// places not seen since a time.
func testKnownPlaces(t *testing.T, s store.Store) {
	ctx := context.Background()
	alice, bob := newUser(t, s, "alice"), newUser(t, s, "bob")
	t0 := now()
	remember := func(st store.Store, u store.User, place string, at time.Time, keep int) {
		t.Helper()
		update(t, st, func(tx store.Tx) error { return tx.RememberPlace(ctx, u.ID, place, at, keep) })
	}
	seen := func(u store.User, place string, want time.Time) {
		t.Helper()
		got, err := s.KnownPlace(ctx, u.ID, place)
		if want.IsZero() {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("place %s of %s: %v, %v; want ErrNotFound", place, u.Username, got, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("place %s of %s: %v", place, u.Username, err)
		}
		mustTime(t, "place "+place+" of "+u.Username, got, want)
	}
	const keep = 3
	seen(alice, "198.51.100.7", time.Time{})
	remember(Rerun(s, nil), alice, "198.51.100.7", t0, keep)
	seen(alice, "198.51.100.7", t0)
	seen(bob, "198.51.100.7", time.Time{})
	remember(s, alice, "198.51.100.7", t0.Add(-time.Hour), keep) // late news of an older sign-in
	seen(alice, "198.51.100.7", t0)
	remember(s, alice, "198.51.100.7", t0.Add(time.Second), keep)
	seen(alice, "198.51.100.7", t0.Add(time.Second))
	seen(alice, "198.51.100.7\x00", time.Time{})

	remember(s, bob, "2001:db8:1::/64", t0, keep)
	for i := range 5 { // alice signs in from five more places
		remember(s, alice, fmt.Sprintf("203.0.113.%d", i), t0.Add(time.Duration(2+i)*time.Second), keep)
	}
	seen(alice, "198.51.100.7", time.Time{})
	seen(alice, "203.0.113.0", time.Time{})
	seen(alice, "203.0.113.1", time.Time{})
	for i := 2; i < 5; i++ {
		seen(alice, fmt.Sprintf("203.0.113.%d", i), t0.Add(time.Duration(2+i)*time.Second))
	}
	seen(bob, "2001:db8:1::/64", t0)

	var forgotten int64
	update(t, s, func(tx store.Tx) error {
		var err error
		forgotten, err = tx.ForgetPlaces(ctx, t0.Add(5*time.Second))
		return err
	})
	mustEqual(t, "places forgotten", forgotten, int64(2)) // bob's, and alice's 203.0.113.2
	seen(bob, "2001:db8:1::/64", time.Time{})
	seen(alice, "203.0.113.2", time.Time{})
	seen(alice, "203.0.113.3", t0.Add(5*time.Second))
}
