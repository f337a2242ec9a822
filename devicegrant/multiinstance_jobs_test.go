package devicegrant_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// jobCount reads devicegrant_jobs_total{job, outcome} from one core's
// registry.
func jobCount(t *testing.T, reg *prometheus.Registry, job, outcome string) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "devicegrant_jobs_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["job"] == job && labels["outcome"] == outcome {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

// jobCounts is jobCount on every core.
func jobCounts(t *testing.T, regs []*prometheus.Registry, job, outcome string) []int {
	t.Helper()
	out := make([]int, len(regs))
	for i, r := range regs {
		out[i] = jobCount(t, r, job, outcome)
	}
	return out
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// masCalls returns the homeserver calls to /_synapse/mas/<name> for a
// localpart (every call when name is ""), as the homeserver recorded them,
// in the order they arrived.
func masCalls(hs *fakesynapse.Homeserver, name, localpart string) []fakesynapse.Call {
	var out []fakesynapse.Call
	for _, c := range hs.Calls() {
		if name != "" && c.Path != "/_synapse/mas/"+name {
			continue
		}
		var b struct {
			Localpart string `json:"localpart"`
		}
		if json.Unmarshal(c.Body, &b) != nil || b.Localpart != localpart {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Received.Before(out[j].Received) })
	return out
}

// answered keeps the calls the homeserver answered with success.
func answered(calls []fakesynapse.Call) []fakesynapse.Call {
	var out []fakesynapse.Call
	for _, c := range calls {
		if c.Status >= 200 && c.Status < 300 {
			out = append(out, c)
		}
	}
	return out
}

// TestMultiInstanceJobsRunOnce: three cores started together on one
// PostgreSQL database with a homeserver (issue 15) send the start-up
// sync_devices (and its provision_user) for a user once, not three times
// (P-HS-4), and do the start-up cleanup once; each core's metrics say
// which did the job and which left it to the lease's holder. Then Cleanup
// run by all three at the same moment, with expired rows to delete, is
// done by exactly one, which keeps the job while its lease lasts; another
// takes it once the lease has expired.
func TestMultiInstanceJobsRunOnce(t *testing.T) {
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: devtest.HomeserverSecret, ServerName: "example.org"})
	clock := devtest.NewClock(time.Now())
	const n = 3
	regs := make([]*prometheus.Registry, n)
	c := newClusterWith(t, n, func(i int, cfg *devicegrant.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
		cfg.HomeserverEndpoint = hs.URL()
		cfg.Now = clock.Now
	})

	// Every core has made its start-up decisions once each counts its
	// cleanup, which Run does after the sync.
	eventually(t, "every core decided about the start-up cleanup", func() bool {
		return sum(jobCounts(t, regs, "cleanup", "ran"))+sum(jobCounts(t, regs, "cleanup", "held_elsewhere")) == n
	})
	eventually(t, "the start-up calls for alice were delivered", func() bool {
		return len(answered(masCalls(hs, "sync_devices", devtest.Username))) >= 1
	})
	time.Sleep(500 * time.Millisecond) // time for a duplicate to arrive, if any were queued
	if got := len(masCalls(hs, "sync_devices", devtest.Username)); got != 1 {
		t.Errorf("3 cores started together sent sync_devices for alice %d times, want once", got)
	}
	// One provision_user when she was created, one from the sync at start.
	if got := len(masCalls(hs, "provision_user", devtest.Username)); got != 2 {
		t.Errorf("provision_user for alice sent %d times, want 2 (her creation, and one sync at start)", got)
	}
	for _, job := range []string{"sync_devices", "cleanup"} {
		did, left := jobCounts(t, regs, job, "ran"), jobCounts(t, regs, job, "held_elsewhere")
		t.Logf("start-up %s: ran %v, held elsewhere %v", job, did, left)
		if sum(did) != 1 || sum(left) != n-1 {
			t.Errorf("start-up %s: ran on %v cores, left to the lease's holder on %v; want once and %d times", job, did, left, n-1)
		}
	}

	// Rows for the cleanup: device authorizations, through every core,
	// left to expire.
	status, m := func() (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, c.issuer+"oauth2/registration", strings.NewReader(deviceClientJSON))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		return devtest.Do(t, req)
	}()
	clientID, _ := m["client_id"].(string)
	if status != http.StatusCreated || clientID == "" {
		t.Fatalf("register: %d %v", status, m)
	}
	const grants = 6
	for i := range grants {
		status, m := c.post(c.instances[i%n], "oauth2/device", url.Values{"client_id": {clientID},
			"scope": {fmt.Sprintf("%s urn:matrix:client:device:JOBDEVICE%02d", apiScope, i)}})
		if status != http.StatusOK {
			t.Fatalf("device authorization %d: %d %v", i, status, m)
		}
	}
	clock.Advance(25 * time.Hour) // the grants expired more than a day ago; the start-up lease too

	type result struct {
		n   int64
		ran bool
		err error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := &results[i]
			r.n, r.ran, r.err = c.servers[i].CleanupLeased(t.Context())
		}()
	}
	close(start)
	wg.Wait()
	holder := -1
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("cleanup on core %d: %v", i, r.err)
		}
		if !r.ran {
			if r.n != 0 {
				t.Errorf("core %d did not run the cleanup but deleted %d rows", i, r.n)
			}
			continue
		}
		if holder >= 0 {
			t.Errorf("cores %d and %d both ran the cleanup at the same time", holder, i)
		}
		holder = i
		if r.n < grants {
			t.Errorf("the cleanup deleted %d rows, want at least the %d expired grants", r.n, grants)
		}
	}
	if holder < 0 {
		t.Fatal("no core ran the cleanup")
	}
	t.Logf("concurrent cleanup: %+v", results)

	// The holder keeps the job while the lease lasts; the others do not
	// get it until it has expired.
	other := (holder + 1) % n
	clock.Advance(5 * time.Minute)
	if _, ran, err := c.servers[other].CleanupLeased(t.Context()); err != nil || ran {
		t.Errorf("core %d ran the cleanup while core %d held the lease (%v)", other, holder, err)
	}
	if _, ran, err := c.servers[holder].CleanupLeased(t.Context()); err != nil || !ran {
		t.Errorf("the holder could not run the cleanup again (%v)", err)
	}
	clock.Advance(9 * time.Minute)
	if _, ran, err := c.servers[other].CleanupLeased(t.Context()); err != nil || ran {
		t.Errorf("core %d ran the cleanup while the holder's renewed lease lasted (%v)", other, err)
	}
	clock.Advance(2 * time.Minute)
	if _, ran, err := c.servers[other].CleanupLeased(t.Context()); err != nil || !ran {
		t.Errorf("core %d could not take over the cleanup once the lease had expired (%v)", other, err)
	}
}

// TestMultiInstanceSyncOncePerInterval: with a short SyncInterval, three
// cores on one database queue sync_devices for a user once per interval
// between them (P-HS-4), not once per interval each: consecutive calls
// reach the homeserver about an interval apart.
func TestMultiInstanceSyncOncePerInterval(t *testing.T) {
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: devtest.HomeserverSecret, ServerName: "example.org"})
	const (
		n        = 3
		interval = time.Second
		window   = 3500 * time.Millisecond
	)
	regs := make([]*prometheus.Registry, n)
	c := newClusterWith(t, n, func(i int, cfg *devicegrant.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
		cfg.HomeserverEndpoint = hs.URL()
		cfg.SyncInterval = interval
	})
	time.Sleep(window)
	for _, stop := range c.stops {
		stop()
	}
	calls := masCalls(hs, "sync_devices", devtest.Username)
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		gaps = append(gaps, calls[i].Received.Sub(calls[i-1].Received).Round(time.Millisecond))
	}
	did, left := jobCounts(t, regs, "sync_devices", "ran"), jobCounts(t, regs, "sync_devices", "held_elsewhere")
	t.Logf("%d sync_devices for alice in %v, %v apart; ran %v, held elsewhere %v", len(calls), window, gaps, did, left)
	if len(calls) < 2 || len(calls) > int(window/interval)+2 {
		t.Errorf("%d sync_devices for alice in %v at an interval of %v, want one per interval", len(calls), window, interval)
	}
	for i, g := range gaps {
		if g < interval/2 {
			t.Errorf("sync_devices %d came %v after the one before, at an interval of %v", i+1, g, interval)
		}
	}
	if sum(did) < len(calls) || sum(left) == 0 {
		t.Errorf("the cores' metrics say the sync ran %v times and was left to another %v times", did, left)
	}
}
