package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// gate sits between the instances and the homeserver: each instance has
// its own endpoint on it (/i0, /i1, ...), so the test knows which one
// makes each call. It slows every call down so that calls are in flight
// while the clients work, checks that no two calls for one user are ever
// in flight at once (the outbox delivers one at a time, in order per
// user), and can hold one instance's next device call so that the test
// kills the instance in the middle of it.
type gate struct {
	t     *testing.T
	hs    *fakesynapse.Homeserver
	proxy *httputil.ReverseProxy
	delay time.Duration

	mu       sync.Mutex
	inflight map[string]int // calls in flight per localpart
	overlaps []string
	holdFor  int         // the instance whose next upsert_device is held; -1 for none
	held     chan string // receives the device id of the held call
	upserts  []upsert    // every upsert_device that reached the homeserver
}

type upsert struct {
	instance          int
	localpart, device string
	at                time.Time
}

func newGate(t *testing.T, hs *fakesynapse.Homeserver, delay time.Duration) (*gate, string) {
	target, err := url.Parse(hs.URL())
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{t: t, hs: hs, delay: delay, inflight: map[string]int{}, holdFor: -1, held: make(chan string, 1),
		proxy: httputil.NewSingleHostReverseProxy(target)}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv.URL
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prefix, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/i"), "/")
	instance, err := strconv.Atoi(prefix)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var who struct {
		Localpart string `json:"localpart"`
		DeviceID  string `json:"device_id"`
	}
	_ = json.Unmarshal(body, &who)
	if who.Localpart == "" {
		who.Localpart = r.URL.Query().Get("localpart")
	}
	call := strings.TrimPrefix(rest, "_synapse/mas/")

	g.mu.Lock()
	if g.inflight[who.Localpart]++; g.inflight[who.Localpart] > 1 {
		g.overlaps = append(g.overlaps, fmt.Sprintf("%s for %s by instance %d while another was in flight", call, who.Localpart, instance))
	}
	hold := call == "upsert_device" && instance == g.holdFor
	if hold {
		g.holdFor = -1
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight[who.Localpart]--
		g.mu.Unlock()
	}()
	if hold {
		// The instance dies in the middle of this call: it never gets
		// an answer, and the homeserver never sees the call.
		g.held <- who.DeviceID
		<-r.Context().Done()
		return
	}
	select {
	case <-time.After(g.delay):
	case <-r.Context().Done():
		return
	}
	r.URL.Path = "/" + rest
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	g.proxy.ServeHTTP(rec, r)
	if call == "upsert_device" && rec.Code/100 == 2 {
		g.mu.Lock()
		g.upserts = append(g.upserts, upsert{instance, who.Localpart, who.DeviceID, time.Now()})
		g.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// holdNext makes instance i's next upsert_device hang until the instance
// is gone.
func (g *gate) holdNext(i int) {
	g.mu.Lock()
	g.holdFor = i
	g.mu.Unlock()
}

// decideAs walks the approval pages as user, as devtest.Phone.Decide does
// for alice.
func decideAs(t *testing.T, phone *devtest.Phone, complete, user string) {
	t.Helper()
	pg := phone.Get(complete)
	if pg.Form("/login") != nil {
		pg = phone.Submit(pg, "/login", url.Values{"username": {user}, "password": {devtest.Password}})
	}
	if pg.Status != http.StatusOK || !strings.Contains(pg.Text(), "Allow this device?") {
		t.Fatalf("%s: expected the consent page, got %d:\n%s", user, pg.Status, pg.Text())
	}
	pg = phone.Submit(pg, pg.URL.Path, url.Values{"action": {"approve"}, "confirm": {"yes"}})
	if pg.Status != http.StatusOK || !strings.Contains(pg.Text(), "Device connected") {
		t.Fatalf("%s: approval answered %d:\n%s", user, pg.Status, pg.Text())
	}
}

// flow is one device signing in and then refreshing, as a client sees it.
type flow struct {
	user, device string
	da           *oauth2.DeviceAuthResponse

	mu        sync.Mutex
	tok       *oauth2.Token // the newest pair received
	cutPoll   bool          // a poll was cut off by the kill
	lost      bool          // the code was redeemed by a poll whose answer was lost
	refreshes int
	done      chan struct{} // closed when the device has its first pair, or lost it
}

// cutBy reports which instance cut off a request x/oauth2 saw fail.
func cutBy(err error) (int, bool) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		if s := re.Response.Header.Get("X-Balancer-Cut"); s != "" {
			i, _ := strconv.Atoi(s)
			return i, true
		}
	}
	return 0, false
}

// TestMultiInstanceKill: three real devicegrantd processes on one
// PostgreSQL database behind a load balancer, provisioning a homeserver
// whose calls are slowed down (issue 15). Device flows (x/oauth2) and
// refreshes run across all three; one instance is killed with SIGKILL in
// the middle of a homeserver call for an approval, while a person's
// sign-in is being checked on it. Then:
//   - every approval made finishes: the call the dead instance held is made
//     by a survivor once its lease (homeserver.outbox_lease, 2s here) runs
//     out, and the device that waited for it gets its tokens (P-HS-3,
//     P-DEV-6); no two calls for one user are ever in flight at once;
//   - every token pair a client received stays valid: active at
//     introspection on both survivors (P-INT-1), and its refresh token
//     refreshes there (P-RT-2);
//   - no client sees a 5xx but the balancer's 502 for a request the dead
//     instance took and never answered (the sign-in; a device whose poll
//     or refresh was cut off makes it again, P-RT-2's lost response);
//     once it is dead the balancer finds its port closed and sends
//     everything to the others, as a real one does, and no survivor ever
//     answers 5xx;
//   - the person signs in again, and new device flows after the kill
//     work on the survivors.
func TestMultiInstanceKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the daemon binary and kills it")
	}
	const (
		n       = 3
		victim  = 1
		lease   = 2 * time.Second
		hsDelay = 40 * time.Millisecond
	)
	dir := t.TempDir()
	bin := filepath.Join(dir, "devicegrantd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	gin.SetMode(gin.ReleaseMode) // for the admin commands, in this process

	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: opsSecret})
	g, gateURL := newGate(t, hs, hsDelay)
	addrs := make([]string, n)
	bases := make([]string, n)
	for i := range n {
		addrs[i] = freeAddr(t)
		bases[i] = "http://" + addrs[i] + "/"
	}
	lb := newBalancer(t, addrs, balancerOptions{expectCuts: true})
	issuer := lb.url
	vars := map[string]string{
		"DEVICEGRANTD_ISSUER":                  issuer,
		"DEVICEGRANTD_DATABASE":                pgtest.URL(t),
		"DEVICEGRANTD_LOG_LEVEL":               "warn",
		"DEVICEGRANTD_POLL_INTERVAL":           "1s",
		"DEVICEGRANTD_HOMESERVER_SECRET":       opsSecret,
		"DEVICEGRANTD_SERVER_NAME":             hs.ServerName(),
		"DEVICEGRANTD_HOMESERVER_OUTBOX_LEASE": lease.String(),
		"DEVICEGRANTD_DEVICE_AUTHORIZATIONS":   "100000/1ms",
		"DEVICEGRANTD_CLIENT_REGISTRATIONS":    "100000/1ms",
	}
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	for _, u := range users {
		if out, err := cli(t, vars, devtest.Password+"\n", "user", "add", u, "--password-stdin"); err != nil {
			t.Fatalf("user add %s: %v %s", u, err, out)
		}
	}
	procs := make([]*daemonProcess, n)
	for i := range n {
		procs[i] = &daemonProcess{t: t, bin: bin, base: bases[i]}
		for k, v := range with(vars, "DEVICEGRANTD_LISTEN", addrs[i],
			"DEVICEGRANTD_HOMESERVER_ENDPOINT", gateURL+"/i"+strconv.Itoa(i)) {
			procs[i].env = append(procs[i].env, k+"="+v)
		}
	}
	for _, p := range procs {
		p.start()
	}
	defer func() {
		if t.Failed() {
			for i, p := range procs {
				t.Logf("instance %d logs:\n%s", i, p.logs.String())
			}
		}
	}()

	reg := postJSON(t, issuer+"oauth2/registration", nil, `{"client_name":"Cluster display","client_uri":"https://cluster.example.org/",
		"application_type":"native","token_endpoint_auth_method":"none",
		"grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	clientID, _ := reg["client_id"].(string)
	if clientID == "" {
		t.Fatalf("registration: %v", reg)
	}
	conf := func(device string) *oauth2.Config {
		return &oauth2.Config{ClientID: clientID, Scopes: []string{scopeAPI, scopeDevice + device},
			Endpoint: oauth2.Endpoint{DeviceAuthURL: issuer + "oauth2/device", TokenURL: issuer + "oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
	}

	// Each device polls with x/oauth2 until it has its pair, then
	// refreshes it until the test ends, keeping the newest pair it
	// received. A request the kill cut off is simply made again.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var (
		workers sync.WaitGroup
		flowsMu sync.Mutex
		flows   []*flow
	)
	startFlow := func(user, device string) *flow {
		t.Helper()
		da, err := conf(device).DeviceAuth(ctx)
		if err != nil {
			t.Fatalf("DeviceAuth for %s: %v", device, err)
		}
		f := &flow{user: user, device: device, da: da, done: make(chan struct{})}
		flowsMu.Lock()
		flows = append(flows, f)
		flowsMu.Unlock()
		workers.Add(1)
		go func() {
			defer workers.Done()
			c := conf(device)
			var tok *oauth2.Token
			for tok == nil {
				var err error
				tok, err = c.DeviceAccessToken(ctx, da)
				if err == nil {
					break
				}
				if i, ok := cutBy(err); ok && i == victim {
					f.mu.Lock()
					f.cutPoll = true
					f.mu.Unlock()
					continue
				}
				var re *oauth2.RetrieveError
				if f.cutPoll && errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
					// The poll the kill cut off redeemed the code: the
					// answer is lost, as with a power cut (P-DEV-6).
					f.mu.Lock()
					f.lost = true
					f.mu.Unlock()
					close(f.done)
					return
				}
				t.Errorf("%s: DeviceAccessToken: %v", device, err)
				close(f.done)
				return
			}
			f.mu.Lock()
			f.tok = tok
			f.mu.Unlock()
			close(f.done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(150 * time.Millisecond):
				}
				next, err := c.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
				if i, ok := cutBy(err); ok && i == victim {
					continue // the answer is lost; the device retries with its pair
				}
				if err != nil {
					t.Errorf("%s: refresh: %v", device, err)
					return
				}
				tok = next
				f.mu.Lock()
				f.tok, f.refreshes = tok, f.refreshes+1
				f.mu.Unlock()
			}
		}()
		return f
	}
	refreshes := func() int {
		flowsMu.Lock()
		defer flowsMu.Unlock()
		sum := 0
		for _, f := range flows {
			f.mu.Lock()
			sum += f.refreshes
			f.mu.Unlock()
		}
		return sum
	}

	// Before the kill: nine devices of three people, approved through
	// the balancer, so every instance serves pages and polls, and makes
	// homeserver calls.
	phones := map[string]*devtest.Phone{}
	for k := range 9 {
		user := users[k%3]
		f := startFlow(user, fmt.Sprintf("BEFORE%04d", k))
		if phones[user] == nil {
			phones[user] = devtest.NewPhone(t)
		}
		decideAs(t, phones[user], f.da.VerificationURIComplete, user)
	}
	waitFor(t, "the first devices to refresh", func() bool { return refreshes() >= 20 })

	// The kill: dave approves a device on the victim (session affinity),
	// which then makes the homeserver call for it, and dies in the middle
	// of that call, while erin is signing in on it (argon2 takes a few
	// tens of milliseconds): her sign-in is cut off. If another instance
	// happened to take dave's call, try again with another of his devices.
	davePhone, erinPhone := devtest.NewPhone(t), devtest.NewPhone(t)
	davePhone.Client.Transport, erinPhone.Client.Transport = pinned{victim}, pinned{victim}
	erinFlow := startFlow("erin", "CUTLOGIN01")
	erinLogin := erinPhone.Get(erinFlow.da.VerificationURIComplete)
	if erinLogin.Form("/login") == nil {
		t.Fatalf("erin's phone was not asked to sign in: %d %s", erinLogin.Status, erinLogin.Text())
	}
	var (
		heldDevice string // the device whose call the victim died in
		killedAt   time.Time
		erinCut    *devtest.Page
	)
	g.holdNext(victim)
	for attempt := 0; killedAt.IsZero(); attempt++ {
		if attempt == 3 {
			t.Fatal("the victim never made a homeserver call for an approval it handled")
		}
		f := startFlow("dave", fmt.Sprintf("HELDDEV%03d", attempt))
		decideAs(t, davePhone, f.da.VerificationURIComplete, "dave")
		select {
		case heldDevice = <-g.held:
			answered := make(chan *devtest.Page)
			go func() {
				// Submit fails the test only on a transport error; the
				// balancer always answers.
				answered <- erinPhone.Submit(erinLogin, "/login", url.Values{"username": {"erin"}, "password": {devtest.Password}})
			}()
			for deadline := time.Now().Add(time.Second); lb.pinnedInflight.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(100 * time.Microsecond)
			}
			time.Sleep(10 * time.Millisecond) // the sign-in is being checked
			procs[victim].kill()
			killedAt = time.Now()
			erinCut = <-answered
		case <-time.After(3 * time.Second):
		}
	}
	// Her sign-in was cut off (the usual case), or, on a slow machine,
	// had not reached the victim yet and went to a survivor; nothing else.
	switch {
	case erinCut.Status == http.StatusBadGateway && erinCut.Header.Get("X-Balancer-Cut") == strconv.Itoa(victim):
		t.Log("erin's sign-in was cut off by the kill: the balancer answered 502")
	case erinCut.Status == http.StatusOK && strings.Contains(erinCut.Text(), "Allow this device?"):
		t.Log("erin's sign-in reached a survivor, not the victim")
	default:
		t.Errorf("erin's sign-in on the instance killed under it answered %d (cut by %q): %s; want the balancer's 502 or the consent page",
			erinCut.Status, erinCut.Header.Get("X-Balancer-Cut"), erinCut.Text())
	}
	// The balancer's idle connections to the dead instance close as it
	// notices their peer gone; a request sent on one in the meantime would
	// be cut off like those in flight.
	time.Sleep(200 * time.Millisecond)
	before := refreshes()
	t.Logf("instance %d killed mid-call after %d refreshes", victim, before)

	// After the kill: erin signs in again, and more people sign in
	// devices, through the balancer, which sends them to the survivors.
	decideAs(t, erinPhone, erinFlow.da.VerificationURIComplete, "erin")
	for k := range 6 {
		user := users[3+k%3]
		f := startFlow(user, fmt.Sprintf("AFTER%05d", k))
		if phones[user] == nil {
			phones[user] = devtest.NewPhone(t)
		}
		decideAs(t, phones[user], f.da.VerificationURIComplete, user)
	}
	flowsMu.Lock()
	all := append([]*flow(nil), flows...)
	flowsMu.Unlock()
	for _, f := range all {
		select {
		case <-f.done:
		case <-ctx.Done():
			t.Fatalf("%s of %s never got its tokens", f.device, f.user)
		}
	}
	waitFor(t, "refreshes on the survivors", func() bool { return refreshes() >= before+30 })
	close(stop)
	workers.Wait()

	// The call the victim held was made by a survivor, after its lease.
	g.mu.Lock()
	var redone *upsert
	for _, u := range g.upserts {
		if u.device == heldDevice {
			redone = &u
		}
	}
	overlaps := append([]string(nil), g.overlaps...)
	g.mu.Unlock()
	if redone == nil || redone.instance == victim {
		t.Errorf("the homeserver call the victim died in (device %s) was not made by a survivor: %+v", heldDevice, redone)
	} else {
		t.Logf("the call the victim died in was made by instance %d, %v after the kill (lease %v)",
			redone.instance, redone.at.Sub(killedAt).Round(time.Millisecond), lease)
		if redone.at.Sub(killedAt) < lease-200*time.Millisecond {
			t.Errorf("a survivor made the dead instance's call %v after the kill, before its %v lease ran out", redone.at.Sub(killedAt), lease)
		}
	}
	for _, o := range overlaps {
		t.Errorf("two homeserver calls for one user at once: %s", o)
	}

	// Every pair a client holds works on both survivors; every approved
	// device exists on the homeserver.
	lost, cut := 0, 0
	for _, f := range all {
		if f.cutPoll {
			cut++
		}
		if f.lost {
			lost++
		} else {
			for i := range n {
				if i != victim && !introspect(t, bases[i], f.tok.AccessToken) {
					t.Errorf("%s: the newest access token its client received is inactive at instance %d", f.device, i)
				}
			}
			st, m, err := post(bases[(victim+1)%n], "oauth2/token", url.Values{"grant_type": {"refresh_token"},
				"client_id": {clientID}, "refresh_token": {f.tok.RefreshToken}}, "")
			if err != nil || st != http.StatusOK {
				t.Errorf("%s: its newest refresh token at a survivor: %d %v %v", f.device, st, m, err)
			}
		}
		if !slices.Contains(hs.Devices(f.user), f.device) {
			t.Errorf("%s of %s was approved but is not on the homeserver: %v", f.device, f.user, hs.Devices(f.user))
		}
	}
	waitFor(t, "the outbox to empty", func() bool {
		out, err := cli(t, vars, "", "outbox")
		return err == nil && strings.Contains(out, "Nothing is waiting")
	})

	lb.mu.Lock()
	defer lb.mu.Unlock()
	t.Logf("%d device flows (%d polls cut off by the kill, %d answers lost), %d refreshes; instances answered %v; refused %v, cut off %v",
		len(all), cut, lost, refreshes(), lb.statuses, lb.refused, lb.cut)
	for _, e := range lb.errs {
		t.Errorf("a client saw a 5xx other than a request cut off by the kill: %s", e)
	}
	for i := range n {
		if i != victim && (lb.cut[i] != 0 || lb.refused[i] != 0) {
			t.Errorf("instance %d, which is alive, cut off %d requests and refused %d connections", i, lb.cut[i], lb.refused[i])
		}
	}
	if lb.refused[victim] == 0 {
		t.Error("no request after the kill was sent to the dead instance first: the balancer's failover went untested")
	}
}
