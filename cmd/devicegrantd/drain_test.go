package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"syscall"
	"testing"
	"time"
)

// TestShutdownDrain: with shutdown_drain set, SIGTERM does not close the
// port at once. For that long the daemon answers on, /healthz says 503 so
// that a balancer's health check takes it out, a request on a connection
// the balancer kept alive is answered and the connection then closed, and
// a new connection is still taken; then the port closes (connection
// refused, which a balancer tries elsewhere) and serve returns cleanly.
// Without the setting SIGTERM closes the port at once, as before.
func TestShutdownDrain(t *testing.T) {
	const drainFor = 1500 * time.Millisecond
	vars := with(opsVars(t, t.TempDir(), nil), "DEVICEGRANTD_SHUTDOWN_DRAIN", drainFor.String())
	d := startDaemonCtl(t, vars)
	kept := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	get := func(client *http.Client, path string) (status int, reused, closed bool, err error) {
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, reused, false, err
		}
		io.Copy(io.Discard, resp.Body) // read to the end, or the connection is not kept
		resp.Body.Close()
		return resp.StatusCode, reused, resp.Close, nil
	}
	if status, _, closed, err := get(kept, ".well-known/openid-configuration"); err != nil || status != http.StatusOK || closed {
		t.Fatalf("before SIGTERM: %d closed=%v %v", status, closed, err)
	}

	stopped := time.Now()
	d.cancel() // SIGTERM; d.stop below waits for serve to return
	time.Sleep(100 * time.Millisecond)
	if status, reused, closed, err := get(kept, ".well-known/openid-configuration"); err != nil || status != http.StatusOK || !reused || !closed {
		t.Errorf("draining, on the kept-alive connection: %d reused=%v closed=%v %v; want 200 on it, and the connection closed after", status, reused, closed, err)
	}
	if status, reused, closed, err := get(&http.Client{Transport: &http.Transport{}}, "healthz"); err != nil || status != http.StatusServiceUnavailable || reused || !closed {
		t.Errorf("draining, /healthz on a new connection: %d reused=%v closed=%v %v; want 503 and the connection closed", status, reused, closed, err)
	}
	waitFor(t, "the port to close", func() bool {
		_, _, _, err := get(&http.Client{Transport: &http.Transport{}}, "healthz")
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	if took := time.Since(stopped); took < drainFor {
		t.Errorf("the port closed %s after SIGTERM, before the drain of %s ended", took, drainFor)
	}
	if err := d.stop(); err != nil {
		t.Errorf("serve after the drain: %v", err)
	}

	// Without a drain the port closes at once.
	d = startDaemonCtl(t, opsVars(t, t.TempDir(), nil))
	stopped = time.Now()
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := get(&http.Client{Transport: &http.Transport{}}, "healthz"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("without a drain, after SIGTERM: %v, want connection refused", err)
	}
	if took := time.Since(stopped); took > drainFor {
		t.Errorf("without a drain, serve took %s to stop", took)
	}
}
