package devicegrant

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter counts failures (wrong user codes, wrong passwords) per client
// address, and optionally overall, as token buckets. A request is refused
// while its address's bucket, or the global one, is empty; only failures
// take tokens, so people who type their code right are never slowed.
type limiter struct {
	every time.Duration
	burst int

	mu     sync.Mutex
	perIP  map[string]*rate.Limiter
	global *rate.Limiter // nil when there is no global limit
}

// maxTrackedAddrs bounds the per-address map; full buckets carry no
// information and are dropped first.
const maxTrackedAddrs = 10000

func newLimiter(per RateLimit, global *RateLimit) *limiter {
	l := &limiter{every: per.Every, burst: per.Burst, perIP: map[string]*rate.Limiter{}}
	if global != nil {
		l.global = rate.NewLimiter(rate.Every(global.Every), global.Burst)
	}
	return l
}

// wait returns how long addr must wait before it may try again; zero when
// it may try now.
func (l *limiter) wait(addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	if b, ok := l.perIP[addr]; ok {
		d = untilToken(b, now)
	}
	if l.global != nil {
		d = max(d, untilToken(l.global, now))
	}
	return d
}

// fail records a failure from addr.
func (l *limiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.perIP[addr]
	if !ok {
		if len(l.perIP) >= maxTrackedAddrs {
			l.prune(now)
		}
		b = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.perIP[addr] = b
	}
	b.AllowN(now, 1)
	if l.global != nil {
		l.global.AllowN(now, 1)
	}
}

func (l *limiter) prune(now time.Time) {
	for addr, b := range l.perIP {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.perIP, addr)
		}
	}
}

func untilToken(b *rate.Limiter, now time.Time) time.Duration {
	t := b.TokensAt(now)
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) / float64(b.Limit()) * float64(time.Second))
}
