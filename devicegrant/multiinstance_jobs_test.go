package devicegrant_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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
// (P-HS-4), and do the start-up cleanup and sweep for lapsed approvals
// once; each core's metrics say
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
	for _, job := range []string{"cleanup", "lapsed_approvals"} {
		eventually(t, "every core decided about the start-up "+job, func() bool {
			return sum(jobCounts(t, regs, job, "ran"))+sum(jobCounts(t, regs, job, "held_elsewhere")) == n
		})
	}
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
	// The sweep for lapsed approvals comes round again only after 30 s of
	// the test's clock, which stands still here.
	for _, job := range []string{"sync_devices", "cleanup", "lapsed_approvals"} {
		did, left := jobCounts(t, regs, job, "ran"), jobCounts(t, regs, job, "held_elsewhere")
		t.Logf("start-up %s: ran %v, held elsewhere %v", job, did, left)
		if sum(did) != 1 || sum(left) != n-1 {
			t.Errorf("start-up %s: ran on %v cores, left to the lease's holder on %v; want once and %d times", job, did, left, n-1)
		}
	}

	// Rows for the cleanup: device authorizations, through every core,
	// left to expire.
	clientID := c.register(deviceClientJSON)
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
	// Deliveries lag their enqueueing by a varying few milliseconds;
	// without the lease the three cores' syncs come milliseconds apart.
	for i, g := range gaps {
		if g < interval/4 {
			t.Errorf("sync_devices %d came %v after the one before, at an interval of %v", i+1, g, interval)
		}
	}
	if sum(did) < len(calls) || sum(left) == 0 {
		t.Errorf("the cores' metrics say the sync ran %v times and was left to another %v times", did, left)
	}
}

// counterSum adds up every series of a counter in one core's registry.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int(n)
}

// approveAs walks a person's phone through the approval of a device
// code, signing in as username when asked.
func approveAs(t *testing.T, phone *devtest.Phone, username, uri string) {
	t.Helper()
	pg := phone.Get(uri)
	if pg.Form("/login") != nil {
		pg = phone.Submit(pg, "/login", url.Values{"username": {username}, "password": {devtest.Password}})
	}
	if pg.Status != http.StatusOK || !strings.Contains(pg.Text(), "Allow this device?") {
		t.Fatalf("%s: expected the consent page, got %d:\n%s", username, pg.Status, pg.Text())
	}
	if pg = phone.Submit(pg, pg.URL.Path, url.Values{"action": {"approve"}, "confirm": {"yes"}}); pg.Status != http.StatusOK {
		t.Fatalf("%s: the approval answered %d:\n%s", username, pg.Status, pg.Text())
	}
}

// checkOutboxCalls checks what the homeserver received for one user: no
// two calls in flight at once, upsert_device in the order the devices
// were approved (each device id its index in order), and each device
// created by exactly one successful call. It returns the upserts
// answered.
func checkOutboxCalls(t *testing.T, hs *fakesynapse.Homeserver, user string, order map[string]int) int {
	t.Helper()
	calls := masCalls(hs, "", user)
	var busyUntil time.Time
	last := -1
	done := map[string]int{}
	for i, c := range calls {
		if c.Received.Before(busyUntil) {
			t.Errorf("%s: call %d (%s) arrived %v before the call before it was answered (P-HS-3: one at a time per user)",
				user, i, c.Path, busyUntil.Sub(c.Received))
		}
		if c.Answered.After(busyUntil) {
			busyUntil = c.Answered
		}
		if c.Path != "/_synapse/mas/upsert_device" {
			continue
		}
		var b struct {
			DeviceID string `json:"device_id"`
		}
		if err := json.Unmarshal(c.Body, &b); err != nil {
			t.Fatal(err)
		}
		k, ok := order[b.DeviceID]
		if !ok {
			t.Errorf("%s: upsert_device for a device never approved: %s", user, b.DeviceID)
			continue
		}
		if k < last {
			t.Errorf("%s: upsert_device for %s (approved #%d) arrived after #%d's", user, b.DeviceID, k, last)
		}
		last = k
		if c.Status >= 200 && c.Status < 300 {
			done[b.DeviceID]++
		}
	}
	for dev, n := range done {
		if n != 1 {
			t.Errorf("%s: device %s created by %d successful upsert_device calls, want exactly 1", user, dev, n)
		}
	}
	return len(done)
}

// TestMultiInstanceOutbox: three cores on one database deliver the
// provisioning outbox as one server would (issue 15, P-HS-3, P-HS-4).
// Approvals for several people are spread over the cores through the
// proxy while the homeserver takes its time over each call; every core
// delivers some of the calls, yet for each person no two calls are ever
// in flight at once, upsert_device calls arrive in the order the devices
// were approved, and each device is created by exactly one call. Then one
// core is stopped in the middle of a call: the homeserver sees that call
// abandoned, and the other cores deliver it and everything after it, in
// order, once each.
func TestMultiInstanceOutbox(t *testing.T) {
	const delay = 200 * time.Millisecond
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: devtest.HomeserverSecret, ServerName: "example.org", MASDelay: delay})
	// Each core reaches the homeserver through a relay of its own that
	// tells the test when one of its calls is in flight: whichever core
	// makes the next call is the one lost mid-call (which core claims a
	// user's next call is a race the test does not fix).
	var (
		armed    sync.Mutex
		watching bool
		inFlight = make(chan int, 1) // the core with a call in flight
		cut      atomic.Int64        // calls cut short at a relay
	)
	hsURL, err := url.Parse(hs.URL())
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(hsURL)
	forward.ErrorLog = log.New(io.Discard, "", 0) // the call cut short is the point
	const n = 3
	relays := make([]string, n)
	for i := range relays {
		relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			armed.Lock()
			if watching {
				select {
				case inFlight <- i:
				default:
				}
			}
			armed.Unlock()
			forward.ServeHTTP(w, r)
			if r.Context().Err() != nil {
				// The core gave the call up before the answer, perhaps
				// before it reached the homeserver at all.
				cut.Add(1)
			}
		}))
		t.Cleanup(relay.Close)
		relays[i] = relay.URL
	}

	regs := make([]*prometheus.Registry, n)
	c := newClusterWith(t, n, func(i int, cfg *devicegrant.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
		cfg.HomeserverEndpoint = relays[i]
		cfg.DeviceAuthorizations = devicegrant.RateLimit{Burst: 1000, Every: time.Millisecond}
	})
	ctx := t.Context()
	users := []string{devtest.Username, "bob", "carol", "dave"}
	for i, u := range users[1:] {
		if _, err := c.servers[i%n].CreateUser(ctx, u, devtest.Password, strings.ToUpper(u[:1])+u[1:]); err != nil {
			t.Fatal(err)
		}
	}
	clientID := c.register(deviceClientJSON)
	phones := map[string]*devtest.Phone{}
	order := map[string]map[string]int{} // user → device id → approval index
	for _, u := range users {
		phones[u] = devtest.NewPhone(t)
		order[u] = map[string]int{}
	}
	// approveRound approves one more device for each of users, through
	// the proxy (so on the cores in turn).
	approveRound := func(users []string) {
		for _, u := range users {
			k := len(order[u])
			dev := fmt.Sprintf("OUTBOX%s%02d", strings.ToUpper(u), k)
			status, m := c.post(c.issuer, "oauth2/device", url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:client:device:" + dev}})
			uri, _ := m["verification_uri_complete"].(string)
			if status != http.StatusOK || uri == "" {
				t.Fatalf("device authorization for %s: %d %v", dev, status, m)
			}
			approveAs(t, phones[u], u, uri)
			order[u][dev] = k
		}
	}
	delivered := func(users []string) func() bool {
		return func() bool {
			for _, u := range users {
				if len(answered(masCalls(hs, "upsert_device", u))) < len(order[u]) {
					return false
				}
			}
			return true
		}
	}

	const perUser = 6
	first := users[:3]
	began := time.Now()
	for range perUser {
		approveRound(first)
	}
	approved := time.Since(began)
	eventually(t, "every approved device was created on the homeserver", delivered(first))
	t.Logf("%d approvals for %d people in %v, delivered after %v (each call takes %v)",
		perUser*len(first), len(first), approved.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), delay)
	for _, u := range first {
		if got := checkOutboxCalls(t, hs, u, order[u]); got != perUser {
			t.Errorf("%s: %d devices created, want %d", u, got, perUser)
		}
	}
	cores := 0
	for i := range n {
		d := counterSum(t, regs[i], "devicegrant_outbox_delivered_total")
		t.Logf("core %d delivered %d calls", i, d)
		if d > 0 {
			cores++
		}
	}
	if cores < 2 {
		t.Errorf("only %d core(s) delivered calls; the test means them spread", cores)
	}

	// A core is lost in the middle of a call. (Its HTTP side stays up, so
	// the proxy still routes approvals to it.)
	armed.Lock()
	watching = true
	armed.Unlock()
	second := []string{devtest.Username, "dave"}
	stopped := make(chan struct{})
	lost := -1
	go func() {
		defer close(stopped)
		select {
		case lost = <-inFlight:
			c.stops[lost]()
		case <-time.After(20 * time.Second):
		}
	}()
	for range perUser {
		approveRound(second)
	}
	select {
	case <-stopped:
	case <-time.After(25 * time.Second):
		t.Fatal("no core was stopped")
	}
	armed.Lock()
	watching = false
	armed.Unlock()
	if lost < 0 {
		t.Fatal("no core made a homeserver call within 20 s of the second round's approvals")
	}
	// The homeserver records an abandoned call once it notices, which may
	// be after the core has stopped; a call cut before it reached the
	// homeserver shows at the relay only.
	abandoned := 0
	eventually(t, "the lost core's call in flight was cut short", func() bool {
		abandoned = 0
		for _, u := range second {
			for _, call := range masCalls(hs, "", u) {
				if call.Status == 0 {
					abandoned++
				}
			}
		}
		return abandoned > 0 || cut.Load() > 0
	})
	eventually(t, "the other cores delivered what was left", delivered(second))
	for _, u := range second {
		want := perUser
		if u == devtest.Username {
			want = 2 * perUser
		}
		if got := checkOutboxCalls(t, hs, u, order[u]); got != want {
			t.Errorf("%s: %d devices created, want %d", u, got, want)
		}
	}
	t.Logf("%d call(s) abandoned at the homeserver, %d cut at a relay, when core %d stopped; then delivered by the others", abandoned, cut.Load(), lost)
}
