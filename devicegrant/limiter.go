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
//
// The buckets live in this process, but the budgets are the whole
// server's: with several instances on one database, each enforces its
// share (divide), so that together they allow no more than the budget
// whatever the load balancer sends where.
type limiter struct {
	perCfg    RateLimit  // the per-key budget, for all instances together
	globalCfg *RateLimit // the global one; nil when there is none

	mu      sync.Mutex
	per     RateLimit // this instance's share of perCfg
	shares  int       // how many instances the budgets are divided among
	perKey  map[string]*rate.Limiter
	pruneAt int           // the size of perKey at which the next new key prunes it
	scanned int           // buckets the prunes have looked at, in all: the work they cost
	global  *rate.Limiter // nil when there is no global limit
}

// maxTrackedKeys is the size of the per-key map from which a new key
// prunes it: full buckets carry no information and are dropped. Buckets
// that are not full are kept, however many, since dropping one would give
// its key a fresh budget. After a prune the next waits until the map has
// doubled, so that many keys in use (one stranger's many addresses) cost
// a constant amount per key rather than a scan of the whole map for each
// (TestManyKeysCostLinearTime).
const maxTrackedKeys = 10000

func newLimiter(per RateLimit, global *RateLimit) *limiter {
	l := &limiter{perCfg: per, per: per, shares: 1, perKey: map[string]*rate.Limiter{}, pruneAt: maxTrackedKeys}
	if global != nil {
		g := *global
		l.globalCfg = &g
		l.global = rate.NewLimiter(rate.Every(g.Every), g.Burst)
	}
	return l
}

// share is one of n instances' part of a budget: the rate divided by n,
// and the burst too, rounded down so that the n parts never add up to
// more than the budget, but never below one, so that no instance refuses
// everything (with more instances than the burst, the instances together
// allow one each at once: n rather than the burst).
func (r RateLimit) share(n int) RateLimit {
	if n <= 1 {
		return r
	}
	return RateLimit{Burst: max(1, r.Burst/n), Every: r.Every * time.Duration(n)}
}

// divide makes this instance's buckets its share of the budgets among n
// instances. Tokens a bucket holds beyond its new burst are dropped; a
// bucket whose burst grows fills at its rate, not at once.
func (l *limiter) divide(n int, now time.Time) {
	n = max(n, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.shares {
		return
	}
	l.shares = n
	l.per = l.perCfg.share(n)
	for _, b := range l.perKey {
		setBucket(b, l.per, now)
	}
	if l.global != nil {
		setBucket(l.global, l.globalCfg.share(n), now)
	}
}

func setBucket(b *rate.Limiter, r RateLimit, now time.Time) {
	b.SetLimitAt(now, rate.Every(r.Every))
	b.SetBurstAt(now, r.Burst)
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
		if len(l.perKey) >= l.pruneAt {
			l.prune(now)
			l.pruneAt = max(maxTrackedKeys, 2*len(l.perKey))
		}
		b = rate.NewLimiter(rate.Every(l.per.Every), l.per.Burst)
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
				d = l.per.Every
			}
			return nil, d
		}
		t.reservations = append(t.reservations, r)
	}
	return t, 0
}

func (l *limiter) prune(now time.Time) {
	l.scanned += len(l.perKey)
	for key, b := range l.perKey {
		if b.TokensAt(now) >= float64(l.per.Burst) {
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

// Known places: the addresses (IPv6: /64s) each account signed in from
// successfully lately, in the database (store.Tx.RememberPlace) so that
// every instance knows them and a restart forgets none. Sign-ins from a
// known place count against a budget of their own (see passwordAttempt),
// so that strangers' wrong passwords cannot lock the owner out.
const (
	// knownPlaceTTL is how long a place stays known after the last
	// successful sign-in from it; Cleanup deletes older ones.
	knownPlaceTTL = 30 * 24 * time.Hour
	// placesPerAccount bounds the places kept per account (the most
	// recent stay): only someone who knows the password can add one, but
	// an account's holder could otherwise sign in from endless
	// addresses to fill the database.
	placesPerAccount = 32
	// placeRefresh is how old a place's last sign-in must be before a
	// new one writes it again: most sign-ins come from a known place, and
	// need not each cost a write.
	placeRefresh = time.Hour
)
