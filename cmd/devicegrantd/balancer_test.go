package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// balancer is the load balancer an operator puts in front of several
// instances, for the tests that run real daemons behind one
// (TestMultiInstanceKill, TestRollingUpgrade): round robin over them and,
// as HAProxy's redispatch or nginx's proxy_next_upstream do, a connection
// an instance refuses (it is down or restarting) is tried on the next one.
// A request that reached an instance and was cut off there is not tried
// again, since it may have taken effect; the client gets a 502 marked with
// the instance (X-Balancer-Cut), as from a real balancer. A request
// carrying X-Balancer-Pin goes to that instance first, as with session
// affinity. It keeps connections to the instances alive, as balancers do,
// and an answer from an instance given a label (setLabel: which release
// it runs) carries it in X-Balancer-Label.
type balancer struct {
	url       string   // the balancer, with its trailing slash: the issuer
	addrs     []string // each instance's host:port
	opts      balancerOptions
	transport *http.Transport
	next      atomic.Uint64

	pinnedInflight atomic.Int32 // pinned requests sent and not yet answered

	mu       sync.Mutex
	labels   []string
	down     []bool         // its last health check failed
	out      []bool         // taken out by the operator (takeOut)
	inflight []int          // requests sent to it and not yet answered
	statuses map[string]int // answers the instances gave: "200", "old 400 slow_down" → count
	refused  []int          // connections refused, per instance (tried elsewhere)
	cut      []int          // requests cut off, per instance (502 to the client)
	errs     []string       // 5xx answered by an instance, requests no instance took, and unexpected cuts
}

// balancerOptions are what one test needs of the balancer beyond the
// failover every test has.
type balancerOptions struct {
	// healthChecks: GET /healthz on every instance every 100 ms; an
	// instance whose last check failed gets no requests while another
	// passes.
	healthChecks bool
	// expectCuts: an instance is killed under requests, so a request it
	// cut off is counted (cut) but is not among the failures.
	expectCuts bool
}

// cutError is a request an instance took and never answered.
type cutError struct {
	instance int
	err      error
}

func (e *cutError) Error() string {
	return fmt.Sprintf("instance %d took the request and dropped it: %v", e.instance, e.err)
}

// newBalancer starts a balancer in front of the instances at addrs
// (host:port each, which need not be listening yet); it stops when the
// test ends.
func newBalancer(t *testing.T, addrs []string, opts balancerOptions) *balancer {
	t.Helper()
	n := len(addrs)
	b := &balancer{addrs: addrs, opts: opts, transport: &http.Transport{MaxIdleConnsPerHost: 64},
		labels: make([]string, n), down: make([]bool, n), out: make([]bool, n), inflight: make([]int, n), statuses: map[string]int{},
		refused: make([]int, n), cut: make([]int, n)}
	if opts.healthChecks {
		quit, checked := make(chan struct{}), make(chan struct{})
		go b.check(quit, checked)
		t.Cleanup(func() { close(quit); <-checked })
	}
	srv := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: b.addrs[0]}) // RoundTrip picks the instance
			r.Out.Host = r.In.Host                               // the issuer's host, as a load balancer keeps it
		},
		Transport: b,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var cut *cutError
			if errors.As(err, &cut) {
				w.Header().Set("X-Balancer-Cut", strconv.Itoa(cut.instance))
			}
			if cut == nil || !b.opts.expectCuts {
				b.fail(fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	})
	t.Cleanup(srv.Close)
	t.Cleanup(b.transport.CloseIdleConnections)
	b.url = srv.URL + "/"
	return b
}

// check makes the health checks until quit closes.
func (b *balancer) check(quit <-chan struct{}, checked chan<- struct{}) {
	defer close(checked)
	client := &http.Client{Timeout: time.Second}
	for {
		for i, addr := range b.addrs {
			resp, err := client.Get("http://" + addr + "/healthz")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.mu.Lock()
			b.down[i] = err != nil || resp.StatusCode != http.StatusOK
			b.mu.Unlock()
		}
		select {
		case <-quit:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// takeOut stops sending requests to instance i, as an operator disables a
// server at the balancer before stopping a release that cannot drain
// itself, and returns once the requests already sent to it are answered.
func (b *balancer) takeOut(t *testing.T, i int) {
	t.Helper()
	b.mu.Lock()
	b.out[i] = true
	b.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.mu.Lock()
		busy := b.inflight[i]
		b.mu.Unlock()
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %d still has %d requests in flight 30 s after it was taken out", i, busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// putBack sends requests to instance i again.
func (b *balancer) putBack(i int) {
	b.mu.Lock()
	b.out[i] = false
	b.mu.Unlock()
}

// setLabel names what instance i runs, for its answers and the counts.
func (b *balancer) setLabel(i int, label string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.labels[i] = label
}

func (b *balancer) fail(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs = append(b.errs, s)
}

// failures are the 5xx answers, the requests no instance took, and the
// requests cut off when none was expected.
func (b *balancer) failures() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

func (b *balancer) statusCounts() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.statuses {
		out[k] = v
	}
	return out
}

// refusedTotal is how many connections the instances refused.
func (b *balancer) refusedTotal() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	sum := 0
	for _, n := range b.refused {
		sum += n
	}
	return sum
}

// RoundTrip sends r to the next instance, and on to the following ones
// while they refuse the connection.
func (b *balancer) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			return nil, err
		}
		r.Body.Close()
	}
	n := len(b.addrs)
	first := int((b.next.Add(1) - 1) % uint64(n))
	if pin := r.Header.Get("X-Balancer-Pin"); pin != "" {
		first, _ = strconv.Atoi(pin)
		b.pinnedInflight.Add(1)
		defer b.pinnedInflight.Add(-1)
	}
	// The instances up, in turn; all of them should every one have failed
	// its last check.
	var order, all []int
	b.mu.Lock()
	for k := range n {
		i := (first + k) % n
		all = append(all, i)
		if !b.down[i] && !b.out[i] {
			order = append(order, i)
		}
	}
	b.mu.Unlock()
	if len(order) == 0 {
		order = all
	}
	for _, i := range order {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host = "http", b.addrs[i]
		out.Body, out.GetBody = nil, nil
		if len(body) > 0 {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		b.mu.Lock()
		if b.out[i] {
			// Taken out since the order was made: as if refused.
			b.mu.Unlock()
			continue
		}
		b.inflight[i]++
		label := b.labels[i]
		b.mu.Unlock()
		who := fmt.Sprintf("instance %d", i)
		if label != "" {
			who += " (" + label + ")"
		}
		resp, err := b.transport.RoundTrip(out)
		b.mu.Lock()
		b.inflight[i]--
		b.mu.Unlock()
		switch {
		case err == nil:
			status := strconv.Itoa(resp.StatusCode)
			if resp.StatusCode == http.StatusBadRequest && r.URL.Path == "/oauth2/token" {
				// Which OAuth error: slow_down is worth telling apart.
				raw, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return nil, err
				}
				var e struct {
					Error string `json:"error"`
				}
				json.Unmarshal(raw, &e)
				status += " " + e.Error
				resp.Body = io.NopCloser(bytes.NewReader(raw))
			}
			if label != "" {
				status = label + " " + status
				resp.Header.Set("X-Balancer-Label", label)
			}
			b.mu.Lock()
			b.statuses[status]++
			if resp.StatusCode >= 500 {
				b.errs = append(b.errs, fmt.Sprintf("%s answered %s %s: %s", who, r.Method, r.URL.Path, resp.Status))
			}
			b.mu.Unlock()
			return resp, nil
		case errors.Is(err, syscall.ECONNREFUSED):
			b.mu.Lock()
			b.refused[i]++
			b.mu.Unlock()
			continue
		case r.Context().Err() != nil:
			return nil, err
		default:
			b.mu.Lock()
			b.cut[i]++
			b.mu.Unlock()
			if label != "" {
				err = fmt.Errorf("%s: %w", label, err)
			}
			return nil, &cutError{i, err}
		}
	}
	return nil, errors.New("every instance refused the connection")
}

// pinned is a transport that sends every request of one phone to one
// instance first (session affinity at the balancer).
type pinned struct{ instance int }

func (p pinned) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Balancer-Pin", strconv.Itoa(p.instance))
	return http.DefaultTransport.RoundTrip(r)
}
