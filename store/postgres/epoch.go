package postgres

import (
	"context"
	"sync"
	"time"
)

// epochReader shares token-epoch reads among concurrent introspections.
//
// Every introspection answered from memory first reads the token epoch
// (devicegrant/cache.go), and under load that read, a round trip to
// PostgreSQL, is most of its work. Yet
// concurrent requests need not each read it. What a request needs is a
// value read after it arrived: a revocation answered before the request
// was sent committed before that, so any read that starts later sees its
// bump. A read already in flight when a request arrives may have started
// too early, so the request waits for the next one, which everybody who
// arrived meanwhile shares. Under load that makes one read per round trip
// instead of one per request; alone, a request reads for itself at once.
// (SQLite reads in process, for less than this coordination costs: the
// benchmark showed it slower there, so store/sqlite reads directly.)
type epochReader struct {
	read func(context.Context) (int64, error)
	// timeout bounds each read. A read serves callers other than the one
	// that started it, so no caller's context may end it; without a bound
	// of its own, a read on a connection that hangs without a word (a host
	// gone, a half-open TCP connection) would hold every later
	// introspection behind it until TCP gives up, many minutes later, even
	// once the pool's other connections work again.
	timeout time.Duration

	mu       sync.Mutex
	inFlight bool        // a read is running
	next     *epochBatch // requests waiting for the read after it; nil if none
}

// epochReadTimeout is epochReader.timeout: far above a round trip to a
// healthy database, short enough that a hung read delays introspection
// for seconds, not minutes.
const epochReadTimeout = 5 * time.Second

// epochBatch is one read and the requests that share it.
type epochBatch struct {
	done  chan struct{} // closed when epoch and err are set
	epoch int64
	err   error
}

func newEpochReader(read func(context.Context) (int64, error)) *epochReader {
	return &epochReader{read: read, timeout: epochReadTimeout}
}

// get returns the token epoch as read by a read that started after get was
// called, or ctx's error if ctx ends first.
func (e *epochReader) get(ctx context.Context) (int64, error) {
	e.mu.Lock()
	if e.next == nil {
		e.next = &epochBatch{done: make(chan struct{})}
	}
	b := e.next
	if !e.inFlight {
		e.inFlight, e.next = true, nil
		// On a goroutine of its own, even for the caller that starts it:
		// the read serves whoever joins meanwhile too, so one caller
		// giving up must not fail it for the others, nor wait for it.
		go e.run(context.WithoutCancel(ctx), b)
	}
	e.mu.Unlock()
	select {
	case <-b.done:
		return b.epoch, b.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run reads for batch b, then for each batch that gathered meanwhile,
// until none has.
func (e *epochReader) run(ctx context.Context, b *epochBatch) {
	for b != nil {
		read, cancel := context.WithTimeout(ctx, e.timeout)
		b.epoch, b.err = e.read(read)
		cancel()
		close(b.done)
		e.mu.Lock()
		b, e.next = e.next, nil
		if b == nil {
			e.inFlight = false
		}
		e.mu.Unlock()
	}
}
