package devicegrant_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/sqlite"
	"github.com/devicegrant/devicegrant/store/storetest"
)

// limitedCluster is a cluster of n cores (newClusterWith) with the budgets
// limits sets, that believe the proxy about client addresses, and that
// have each counted all n instances: every core enforces its share of each
// budget (README, "Rate limits across instances").
func limitedCluster(t *testing.T, n int, limits func(cfg *devicegrant.Config)) *cluster {
	t.Helper()
	regs := make([]*prometheus.Registry, n)
	c := newClusterWith(t, n, func(i int, cfg *devicegrant.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
		limits(cfg)
		cfg.TrustedProxies = []string{"127.0.0.1"}
		// A core counts another until its last beat is 6 s old: slack
		// enough for a loaded test machine.
		cfg.HeartbeatInterval = 2 * time.Second
	})
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < n; {
		if got := instancesCounted(t, regs[i]); got == n {
			i++
			continue
		} else if time.Now().After(deadline) {
			t.Fatalf("core %d counts %d instances after 15 s, want %d", i, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// instancesCounted reads a core's devicegrant_instances gauge.
func instancesCounted(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "devicegrant_instances" {
			return int(f.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no devicegrant_instances gauge")
	return 0
}

// phoneFrom is a browser whose connections come from ip, a loopback
// address of its own (all of 127.0.0.0/8 is loopback on Linux): through
// the cluster's proxy, which says so in X-Forwarded-For, and directly at
// a core alike, the cores see ip as its address.
func phoneFrom(t *testing.T, ip string) *devtest.Phone {
	t.Helper()
	p := newPhone(t)
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	p.Client.Transport = tr
	return p
}

// signInAt submits the sign-in form of the account page at base (the
// proxy, or one core), both requests going wherever base sends them.
func signInAt(t *testing.T, p *devtest.Phone, base, username, password string) *devtest.Page {
	t.Helper()
	pg := p.Get(base + "account")
	if pg.Form("/login") == nil {
		t.Fatalf("no sign-in form at %s: %d %s", base, pg.Status, pg.Text())
	}
	return p.Submit(pg, "/login", url.Values{"username": {username}, "password": {password}})
}

// guess makes tries wrong passwords for username through the proxy, each
// from its own phone at from(i), and returns how many were checked (401)
// and how many refused for the budget (429).
func guess(t *testing.T, c *cluster, username string, tries int, from func(i int) string) (checked, refused int) {
	t.Helper()
	for i := range tries {
		switch got := signInAt(t, phoneFrom(t, from(i)), c.issuer, username, "guess"); got.Status {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("wrong password %d for %s: %d %s", i, username, got.Status, got.Text())
		}
	}
	return checked, refused
}

// TestMultiInstanceBudgets: requests spread by a round-robin balancer
// over three cores are let through no more often, in all, than one server
// would let them (issue 15): wrong passwords for one account from many
// addresses, and from one address for many usernames; wrong user codes
// from many addresses against the global budget (P-DEV-4); device
// authorizations from one address. Each core enforces a third of each
// budget; without the division the three would allow three times it.
func TestMultiInstanceBudgets(t *testing.T) {
	const n, budget = 3, 6
	limit := devicegrant.RateLimit{Burst: budget, Every: time.Hour}
	c := limitedCluster(t, n, func(cfg *devicegrant.Config) {
		cfg.AccountLoginFailures, cfg.LoginFailures = limit, limit
		cfg.UserCodeFailuresGlobal, cfg.DeviceAuthorizations = limit, limit
	})
	check := func(what string, allowed, refused int) {
		t.Helper()
		t.Logf("%s through %d cores: %d let through, %d refused", what, n, allowed, refused)
		if allowed != budget {
			t.Errorf("%s through %d cores: %d let through, want the budget, %d", what, n, allowed, budget)
		}
	}

	// Each try is a page and a sign-in, so the sign-ins go to every core
	// in turn: 8 to each.
	const tries = 8 * n
	checked, refused := guess(t, c, testUser, tries, func(i int) string { return fmt.Sprintf("127.0.1.%d", 10+i) })
	check(fmt.Sprintf("%d wrong passwords for one account from as many addresses", tries), checked, refused)

	checked, refused = 0, 0
	for i := range tries {
		ch, re := guess(t, c, fmt.Sprintf("nobody%02d", i), 1, func(int) string { return "127.0.2.1" })
		checked, refused = checked+ch, refused+re
	}
	check(fmt.Sprintf("%d wrong passwords from one address for as many usernames", tries), checked, refused)

	checked, refused = 0, 0
	for i := range tries {
		switch got := phoneFrom(t, fmt.Sprintf("127.0.5.%d", 10+i)).Get(c.issuer + "D/BBBBBBBB"); got.Status {
		case http.StatusBadRequest:
			checked++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("wrong user code %d: %d %s", i, got.Status, got.Text())
		}
	}
	check(fmt.Sprintf("%d wrong user codes from as many addresses", tries), checked, refused)

	clientID := c.register(deviceClientJSON)
	device := phoneFrom(t, "127.0.6.1").Client
	allowed, refused := 0, 0
	for i := range tries {
		resp, err := device.PostForm(c.issuer+"oauth2/device", url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:client:device:BUDGETDEV" + fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			allowed++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("device authorization %d: %d", i, resp.StatusCode)
		}
	}
	check(fmt.Sprintf("%d device authorizations from one address", tries), allowed, refused)
}

// TestMultiInstanceOwnerNotLockedOut: the owner signed in through one
// core; strangers then spend the account's budget through all three; the
// right password from a stranger's address is refused on every core, but
// the owner, from the address they signed in from, still signs in through
// each of the others: the places an account signed in from are known to
// every core, not just to the one that saw the sign-in (issue 15).
func TestMultiInstanceOwnerNotLockedOut(t *testing.T) {
	const n, budget = 3, 6
	c := limitedCluster(t, n, func(cfg *devicegrant.Config) {
		cfg.AccountLoginFailures = devicegrant.RateLimit{Burst: budget, Every: time.Hour}
		cfg.LoginFailures = devicegrant.RateLimit{Burst: 100, Every: time.Hour}
	})
	const home = "127.0.3.7"
	if got := signInAt(t, phoneFrom(t, home), c.instances[0], testUser, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Fatalf("the owner's sign-in at core 0: %d %s", got.Status, got.Text())
	}

	// Three times the budget: enough to spend it on every core even if
	// each had the whole of it.
	checked, _ := guess(t, c, testUser, 8*n, func(i int) string { return fmt.Sprintf("127.0.4.%d", 10+i) })
	if checked > budget {
		t.Errorf("strangers' wrong passwords checked %d times, want at most %d", checked, budget)
	}
	for i := range n {
		if got := signInAt(t, phoneFrom(t, "127.0.4.200"), c.instances[i], testUser, testPassword); got.Status != http.StatusTooManyRequests {
			t.Errorf("the right password from a stranger's address at core %d with the budget spent: %d, want 429", i, got.Status)
		}
	}
	for _, i := range []int{1, 2, 0} {
		if got := signInAt(t, phoneFrom(t, home), c.instances[i], testUser, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
			t.Errorf("the owner from home at core %d, having signed in at core 0: %d %s", i, got.Status, got.Text())
		}
	}
}

// TestKnownPlaceSurvivesRestart: a restarted server still knows where the
// owner signed in from before, so strangers who spend the account's
// budget after the restart do not lock the owner out (issue 15).
func TestKnownPlaceSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devicegrantd.db")
	const home, stranger = "198.51.100.7", "203.0.113.9"
	base, stop := startCoreOn(t, path, true)
	if got := signInAt(t, fromAddress(newPhone(t), home), base, testUser, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Fatalf("the owner's sign-in before the restart: %d %s", got.Status, got.Text())
	}
	stop()
	// No instance is left in the table (a server alone on SQLite writes
	// no heartbeat at all): the restarted one keeps the whole budgets, as
	// a single server should.
	if st, err := sqlite.Open(context.Background(), path); err != nil {
		t.Fatal(err)
	} else {
		n, err := st.LiveInstances(context.Background(), time.Time{})
		st.Close()
		if err != nil || n != 0 {
			t.Fatalf("instances in the database after the server stopped: %d, %v; want 0", n, err)
		}
	}

	base, _ = startCoreOn(t, path, false)
	checked := 0
	for i := range 5 {
		if got := signInAt(t, fromAddress(newPhone(t), fmt.Sprintf("203.0.113.%d", i+1)), base, testUser, "guess"); got.Status == http.StatusUnauthorized {
			checked++
		}
	}
	if checked != 3 {
		t.Errorf("strangers' wrong passwords after the restart: %d checked, want the account's whole budget, 3", checked)
	}
	if got := signInAt(t, fromAddress(newPhone(t), stranger), base, testUser, testPassword); got.Status != http.StatusTooManyRequests {
		t.Fatalf("the right password from a stranger's address with the budget spent: %d, want 429", got.Status)
	}
	if got := signInAt(t, fromAddress(newPhone(t), home), base, testUser, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Errorf("the owner from home after the restart: %d %s", got.Status, got.Text())
	}
}

// startCoreOn runs a core on the SQLite file at path, its Update functions
// run twice (storetest.Rerun), with an account budget of 3 wrong passwords
// and trusting X-Forwarded-For from loopback; first creates the account.
// stop shuts it down and closes the file; it also runs when the test ends.
func startCoreOn(t *testing.T, path string, first bool) (base string, stop func()) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base = "http://" + ln.Addr().String() + "/"
	srv, err := devicegrant.New(devicegrant.Config{Issuer: base, ServerName: "example.org",
		AccountLoginFailures: devicegrant.RateLimit{Burst: 3, Every: time.Hour},
		TrustedProxies:       []string{"127.0.0.1"},
		Logger:               slog.New(slog.NewTextHandler(io.Discard, nil))}, storetest.Rerun(st, nil))
	if err != nil {
		t.Fatal(err)
	}
	if first {
		if _, err := srv.CreateUser(ctx, testUser, testPassword, "Alice"); err != nil {
			t.Fatal(err)
		}
	}
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: srv}}
	hs.Start()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(runCtx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		hs.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	return base, stop
}
