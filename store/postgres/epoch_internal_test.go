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
	e := newEpochReader(func(ctx context.Context) (int64, error) {
		if calls.Add(1) == 1 {
			<-release
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
	close(release)
	if err := <-first; err != nil {
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
