package postgres

import (
	"context"
	"sync"
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

	mu       sync.Mutex
	inFlight bool        // a read is running
	next     *epochBatch // requests waiting for the read after it; nil if none
}

// epochBatch is one read and the requests that share it.
type epochBatch struct {
	done  chan struct{} // closed when epoch and err are set
	epoch int64
	err   error
}

func newEpochReader(read func(context.Context) (int64, error)) *epochReader {
	return &epochReader{read: read}
}

// get returns the token epoch as read by a read that started after get was
// called.
func (e *epochReader) get(ctx context.Context) (int64, error) {
	e.mu.Lock()
	if e.next == nil {
		e.next = &epochBatch{done: make(chan struct{})}
	}
	b := e.next
	if e.inFlight {
		e.mu.Unlock()
		select {
		case <-b.done:
			return b.epoch, b.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	e.inFlight, e.next = true, nil
	e.mu.Unlock()
	e.run(ctx, b)
	return b.epoch, b.err
}

// run reads for batch b, then for the batch that gathered meanwhile, if
// any, on a goroutine of its own: the caller has its answer and should not
// wait for other requests' reads.
func (e *epochReader) run(ctx context.Context, b *epochBatch) {
	// The read serves others too, so one caller giving up must not fail
	// it for all of them.
	b.epoch, b.err = e.read(context.WithoutCancel(ctx))
	close(b.done)
	e.mu.Lock()
	next := e.next
	if next == nil {
		e.inFlight = false
		e.mu.Unlock()
		return
	}
	e.next = nil
	e.mu.Unlock()
	go e.run(context.WithoutCancel(ctx), next)
}
