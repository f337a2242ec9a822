package postgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A request never gets an epoch read before it arrived: whatever was
// bumped before get was called is in the answer, however many requests
// share reads. The read below, like a database's, sees what committed
// before it started and takes a while; a reader that let a request join a
// read already in flight fails this.
func TestEpochReaderNeverAnswersFromBeforeTheRequest(t *testing.T) {
	var epoch, reads atomic.Int64
	e := newEpochReader(func(context.Context) (int64, error) {
		reads.Add(1)
		v := epoch.Load()
		time.Sleep(500 * time.Microsecond)
		return v, nil
	})
	const workers, rounds = 32, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				committed := epoch.Add(1) // a revocation answered before the request
				got, err := e.get(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if got < committed {
					t.Errorf("got epoch %d, read before the bump to %d that preceded the request", got, committed)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Shared reads are the point: with 32 callers at once far fewer reads
	// than requests run.
	if n := reads.Load(); n > workers*rounds/4 {
		t.Errorf("%d reads for %d requests: reads are not shared", n, workers*rounds)
	}
	t.Logf("%d reads for %d requests", reads.Load(), workers*rounds)
}

// A caller that gives up does not fail the read the others wait for, and a
// read's error reaches exactly the requests that shared it.
func TestEpochReaderCancelAndErrors(t *testing.T) {
	release := make(chan struct{})
	fail := errors.New("database gone")
	var calls atomic.Int64
	leading := make(chan error, 1) // what the first read itself saw
	e := newEpochReader(func(ctx context.Context) (int64, error) {
		if calls.Add(1) == 1 {
			<-release
			leading <- ctx.Err()
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 7, nil
		}
		return 0, fail
	})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := e.get(ctx); first <- err }()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The second request arrives while the first read runs: it waits for
	// the next read, which fails.
	second := make(chan error, 1)
	waitCtx, cancelWait := context.WithCancel(context.Background())
	defer cancelWait()
	go func() { _, err := e.get(waitCtx); second <- err }()
	time.Sleep(5 * time.Millisecond)
	cancel() // the first caller gives up; its read must still finish well
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v, want its own context's error at once", err)
	}
	close(release)
	if err := <-leading; err != nil {
		t.Fatalf("the leading read failed because its caller gave up: %v", err)
	}
	if err := <-second; !errors.Is(err, fail) {
		t.Fatalf("the next read's error = %v, want %v", err, fail)
	}
	// A waiter whose context ends stops waiting.
	block := make(chan struct{})
	e2 := newEpochReader(func(context.Context) (int64, error) { <-block; return 1, nil })
	go func() { _, _ = e2.get(context.Background()) }()
	for {
		e2.mu.Lock()
		busy := e2.inFlight
		e2.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	short, stop := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer stop()
	if _, err := e2.get(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter whose deadline passed got %v", err)
	}
	close(block)
}

// A read that hangs (a connection gone silent: PostgreSQL's host lost
// without a word) neither holds the caller that started it beyond its own
// context, nor every later caller until TCP gives up: the read has a
// bound of its own, and the next read, on a working connection, answers
// the callers that queued behind it. (P-INT-1: introspection reads the
// epoch on every request.)
func TestEpochReaderHungRead(t *testing.T) {
	var calls atomic.Int64
	e := newEpochReader(func(ctx context.Context) (int64, error) {
		if calls.Add(1) == 1 {
			<-ctx.Done() // as pgx does on a dead connection: only ctx ends it
			return 0, ctx.Err()
		}
		return 42, nil
	})
	e.timeout = 200 * time.Millisecond
	type answer struct {
		epoch int64
		err   error
	}
	ask := func(ctx context.Context) <-chan answer {
		ch := make(chan answer, 1)
		go func() { v, err := e.get(ctx); ch <- answer{v, err} }()
		return ch
	}
	within := func(what string, ch <-chan answer, d time.Duration) answer {
		t.Helper()
		select {
		case a := <-ch:
			return a
		case <-time.After(d):
			t.Fatalf("%s: no answer after %v", what, d)
			return answer{}
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if a := within("the caller whose read hangs", ask(short), 150*time.Millisecond); !errors.Is(a.err, context.DeadlineExceeded) {
		t.Fatalf("the caller whose read hangs got %v, want its deadline", a)
	}
	// This one arrives while the hung read still runs, and has no deadline
	// at all (an HTTP request whose client waits).
	if a := within("a caller behind the hung read", ask(context.Background()), 2*time.Second); a.err != nil || a.epoch != 42 {
		t.Fatalf("a caller behind the hung read got %v, want 42 from the next read", a)
	}
	if a := within("a later caller", ask(context.Background()), time.Second); a.err != nil || a.epoch != 42 {
		t.Fatalf("a later caller got %v", a)
	}
}
