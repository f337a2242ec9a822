package devicegrant

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestRateLimitShare: each of n instances gets the rate divided by n and
// the burst divided by n, rounded down but never below one.
func TestRateLimitShare(t *testing.T) {
	budget := RateLimit{Burst: 10, Every: time.Minute}
	for _, tc := range []struct {
		n    int
		want RateLimit
	}{
		{0, budget},
		{1, budget},
		{2, RateLimit{Burst: 5, Every: 2 * time.Minute}},
		{3, RateLimit{Burst: 3, Every: 3 * time.Minute}},
		{10, RateLimit{Burst: 1, Every: 10 * time.Minute}},
		{25, RateLimit{Burst: 1, Every: 25 * time.Minute}},
	} {
		if got := budget.share(tc.n); got != tc.want {
			t.Errorf("share of %v among %d = %v, want %v", budget, tc.n, got, tc.want)
		}
	}
}

// takeAll takes tokens for key from every instance's limiter in turn, as a
// round-robin balancer would send the tries, from start until end, one
// try every step, and returns how many were let through.
func takeAll(instances []*limiter, key string, start, end time.Time, step time.Duration) int {
	allowed := 0
	i := 0
	for now := start; !now.After(end); now = now.Add(step) {
		if _, wait := instances[i%len(instances)].take(key, now, false); wait == 0 {
			allowed++
		}
		i++
	}
	return allowed
}

// TestDividedLimitersHoldTheBudgetTogether: n instances that each enforce
// their share allow, together, no more than one limiter with the whole
// budget: neither at once (the burst) nor over an hour (the rate), for
// the per-key and the global budgets, whatever the instances' order.
// One instance alone allows exactly the budget, as before division.
func TestDividedLimitersHoldTheBudgetTogether(t *testing.T) {
	per := RateLimit{Burst: 12, Every: time.Minute}
	global := RateLimit{Burst: 30, Every: 10 * time.Second}
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for n := 1; n <= 5; n++ {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			instances := make([]*limiter, n)
			for i := range instances {
				instances[i] = newLimiter(per, &global)
				instances[i].divide(n, t0)
			}
			// At once: the per-key burst of one key.
			if got, want := takeAll(instances, "ip:a", t0, t0.Add(99*time.Millisecond), time.Millisecond), n*(per.Burst/n); got != want || got > per.Burst {
				t.Errorf("a burst of tries on one key through %d instances: %d allowed, want %d (the budget is %d)", n, got, want, per.Burst)
			}
			// Over an hour, one try a second on one key: the burst and
			// one a minute, give or take one for the rounding of each
			// instance's refill.
			hour := takeAll(instances, "ip:b", t0, t0.Add(time.Hour), time.Second)
			if most := per.Burst + 60 + n; hour > most {
				t.Errorf("an hour of tries on one key through %d instances: %d allowed, want at most %d", n, hour, most)
			}
			if least := per.Burst/n*n + 60 - n; hour < least {
				t.Errorf("an hour of tries on one key through %d instances: %d allowed, want at least %d", n, hour, least)
			}
			// The global budget, spent on many keys at once.
			allowed := 0
			for k := range 100 {
				if _, wait := instances[k%n].take(fmt.Sprint("ip:many", k), t0.Add(2*time.Hour), false); wait == 0 {
					allowed++
				}
			}
			if want := n * (global.Burst / n); allowed != want {
				t.Errorf("100 keys at once through %d instances: %d allowed by the global budget, want %d", n, allowed, want)
			}
		})
	}
}

// TestDivideAdjustsExistingBuckets: when another instance appears, the
// buckets already in use shrink to the new share at once (tokens beyond
// it are dropped); when it goes, they grow back at their rate, not at
// once.
func TestDivideAdjustsExistingBuckets(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 9, Every: time.Minute}, nil)
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	if _, wait := l.take("k", t0, true); wait != 0 {
		t.Fatal("the first try was refused")
	}
	l.divide(3, t0)
	count := func(at time.Time) int {
		n := 0
		for range 20 {
			if _, wait := l.take("k", at, true); wait == 0 {
				n++
			}
		}
		return n
	}
	if got := count(t0); got != 3 {
		t.Errorf("after dividing among 3: %d tries allowed at once, want the share's burst, 3", got)
	}
	l.divide(1, t0)
	if got := count(t0); got != 0 {
		t.Errorf("back to one instance: %d tries allowed at once with the bucket empty, want 0", got)
	}
	if got := count(t0.Add(time.Hour)); got != 9 {
		t.Errorf("an hour later: %d tries allowed at once, want the whole burst, 9", got)
	}
}

// TestEveryLimiterIsDivided: the heartbeat divides every limiter the
// server has, so a limiter added later cannot be left holding the whole
// budget on each instance.
func TestEveryLimiterIsDivided(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "devicegrantd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{Issuer: "http://127.0.0.1/", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	divided := s.limiters()
	v := reflect.ValueOf(s).Elem()
	fields := 0
	for i := range v.NumField() {
		if v.Field(i).Type() != reflect.TypeFor[*limiter]() {
			continue
		}
		fields++
		if l := (*limiter)(v.Field(i).UnsafePointer()); !slices.Contains(divided, l) {
			t.Errorf("Server.%s is not among the limiters the heartbeat divides", v.Type().Field(i).Name)
		}
	}
	if fields != len(divided) || fields == 0 {
		t.Errorf("%d limiter fields, %d limiters divided", fields, len(divided))
	}
}

// TestManyKeysCostLinearTime: a stranger with many addresses (a free
// tunnelled IPv6 /48 holds 65,536 /64s, each a key of its own) makes one
// try from each. Past maxTrackedKeys buckets, every new key scanned the
// whole map under the limiter's lock for full buckets to drop, finding
// none: 40,000 keys took 21 s of CPU, during which every try on that
// limiter waited. Pruning now waits until the map has doubled since the
// last prune, so the cost per key stays constant; full buckets are still
// dropped.
func TestManyKeysCostLinearTime(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 10, Every: 30 * time.Second}, nil)
	now := time.Unix(1_700_000_000, 0)
	const keys = 40000
	for i := range keys {
		if _, wait := l.take(fmt.Sprintf("2001:db8:%x::/64", i), now, true); wait != 0 {
			t.Fatalf("key %d refused its first try", i)
		}
	}
	// The work counted, not timed: a prune for every new key past
	// maxTrackedKeys looked at some 750 million buckets here (21 s of CPU);
	// pruning when the map has doubled, at fewer than 2 buckets a key.
	if l.scanned > 2*keys {
		t.Errorf("%d keys with one try each made the prunes look at %d buckets, want at most %d", keys, l.scanned, 2*keys)
	}
	if len(l.perKey) != keys {
		t.Errorf("%d keys tracked, want all %d: none was full", len(l.perKey), keys)
	}
	// Once their buckets have refilled they carry no information, and the
	// next prune drops them.
	later := now.Add(10 * 30 * time.Second)
	for i := range keys {
		l.take(fmt.Sprintf("2001:db8:1:%x::/64", i), later, true)
	}
	if len(l.perKey) >= 2*keys {
		t.Errorf("%d keys tracked after the first %d refilled; want those dropped", len(l.perKey), keys)
	}
}
