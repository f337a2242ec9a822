package devicegrant

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a set of token buckets, one per key (a client address, an
// account), with an optional global bucket shared by all keys. A try takes
// a token up front, before the slow or revealing work, and a success gives
// it back: so only failures count, and many parallel tries from one
// address cannot all slip through before the first failure is recorded.
type limiter struct {
	every time.Duration
	burst int

	mu     sync.Mutex
	perKey map[string]*rate.Limiter
	global *rate.Limiter // nil when there is no global limit
}

// maxTrackedKeys bounds the per-key map; full buckets carry no
// information and are dropped first.
const maxTrackedKeys = 10000

func newLimiter(per RateLimit, global *RateLimit) *limiter {
	l := &limiter{every: per.Every, burst: per.Burst, perKey: map[string]*rate.Limiter{}}
	if global != nil {
		l.global = rate.NewLimiter(rate.Every(global.Every), global.Burst)
	}
	return l
}

// try is a token taken by limiter.take.
type try struct {
	reservations []*rate.Reservation
}

// succeeded gives the token back: a success does not count.
func (t *try) succeeded(now time.Time) {
	for _, r := range t.reservations {
		r.CancelAt(now)
	}
}

// take takes a token for key, and from the global bucket unless
// skipGlobal. When a bucket is empty it takes nothing and returns how long
// to wait.
func (l *limiter) take(key string, now time.Time, skipGlobal bool) (*try, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.perKey[key]
	if !ok {
		if len(l.perKey) >= maxTrackedKeys {
			l.prune(now)
		}
		b = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.perKey[key] = b
	}
	buckets := []*rate.Limiter{b}
	if l.global != nil && !skipGlobal {
		buckets = append(buckets, l.global)
	}
	t := &try{}
	for _, bucket := range buckets {
		r := bucket.ReserveN(now, 1)
		if d := r.DelayFrom(now); !r.OK() || d > 0 {
			r.CancelAt(now)
			t.succeeded(now)
			if !r.OK() {
				d = l.every
			}
			return nil, d
		}
		t.reservations = append(t.reservations, r)
	}
	return t, 0
}

func (l *limiter) prune(now time.Time) {
	for key, b := range l.perKey {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.perKey, key)
		}
	}
}

// addressKey is the limiter key of a client address: the address itself
// for IPv4, its /64 for IPv6, since one subscriber usually holds a whole
// /64 and could otherwise rotate addresses for fresh budgets.
func addressKey(ip string) string {
	parsed := net.ParseIP(ip)
	if parsed == nil || parsed.To4() != nil {
		return ip
	}
	return parsed.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// knownPlaces remembers, in memory, the addresses (IPv6: /64s) each account
// signed in from successfully, so that strangers' wrong passwords cannot
// lock the owner out: sign-ins from a known place count against a budget
// of their own (see passwordAttempt).
type knownPlaces struct {
	mu     sync.Mutex
	seen   map[string]time.Time // account + "\x00" + address key → last success
	forget time.Duration
}

// maxKnownPlaces bounds the map; entries older than forget go first, and
// when none has, nothing new is remembered until one does.
const maxKnownPlaces = 100000

func newKnownPlaces(forget time.Duration) *knownPlaces {
	return &knownPlaces{seen: map[string]time.Time{}, forget: forget}
}

func (k *knownPlaces) remember(account, addr string, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := account + "\x00" + addr
	if _, ok := k.seen[key]; !ok && len(k.seen) >= maxKnownPlaces {
		for x, t := range k.seen {
			if now.Sub(t) > k.forget {
				delete(k.seen, x)
			}
		}
		if len(k.seen) >= maxKnownPlaces {
			return
		}
	}
	k.seen[key] = now
}

func (k *knownPlaces) known(account, addr string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.seen[account+"\x00"+addr]
	return ok && now.Sub(t) <= k.forget
}
