package bench

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Result is what one measured row gives.
type Result struct {
	Requests int           // answered requests in the window
	Errors   int           // transport errors and answers check refused
	Example  string        // the first error, for the report
	Elapsed  time.Duration // the measuring window
	P50, P99 time.Duration
}

// PerSecond is the throughput of r.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// closedLoop runs conns workers for d, each calling iter over and over, as
// wrk does with one connection per worker, and measures the iterations
// that succeeded and their latencies. An iteration's error counts against
// it unless the window closed during it.
func closedLoop(ctx context.Context, conns int, d time.Duration, iter func(ctx context.Context, w int) error) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type tally struct {
		lat     []time.Duration
		errors  int
		example string
	}
	tallies := make([]tally, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := &tallies[w]
			for ctx.Err() == nil {
				t0 := time.Now()
				err := iter(ctx, w)
				switch {
				case ctx.Err() != nil:
				case err != nil:
					if t.errors == 0 {
						t.example = err.Error()
					}
					t.errors++
				default:
					t.lat = append(t.lat, time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	res := Result{Elapsed: min(time.Since(start), d)}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.lat...)
		res.Errors += t.errors
		if res.Example == "" {
			res.Example = t.example
		}
	}
	res.Requests = len(all)
	slices.Sort(all)
	res.P50, res.P99 = percentile(all, 0.50), percentile(all, 0.99)
	return res
}

// call sends req and reads the whole answer.
func call(ctx context.Context, client *http.Client, req *http.Request) (int, []byte, error) {
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// newClient returns an HTTP client that keeps one idle connection per
// worker and follows no redirects.
func newClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = conns*2, conns*2, 0
	return &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
