package main

import (
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// pgProxy stands between the daemons and PostgreSQL's socket, and can cut
// the way (the database down: every connection broken, new ones refused)
// or hang it (the database silent: connections stay open and nothing goes
// through), then restore it.
type pgProxy struct {
	t      *testing.T
	ln     net.Listener
	target [2]string // PostgreSQL's address: network ("unix", "tcp"), address

	mu    sync.Mutex
	cond  *sync.Cond
	state string // "up", "down", "silent"
	conns []net.Conn
}

func newPGProxy(t *testing.T, target [2]string) *pgProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{t: t, ln: ln, target: target, state: "up"}
	p.cond = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.set("down") })
	return p
}

func (p *pgProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.state == "down" {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		s, err := net.Dial(p.target[0], p.target[1])
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

// pipe copies, holding what it read while the proxy is silent.
func (p *pgProxy) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		p.mu.Lock()
		for p.state == "silent" {
			p.cond.Wait()
		}
		down := p.state == "down"
		p.mu.Unlock()
		if err != nil || down {
			from.Close()
			to.Close()
			return
		}
		if _, err := to.Write(buf[:n]); err != nil {
			from.Close()
			return
		}
	}
}

// set changes the state; leaving "up" for "down" or coming back "up" from
// "silent" breaks every connection there is, as a restarted host does.
func (p *pgProxy) set(state string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if state == "down" || (state == "up" && p.state == "silent") {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
	p.state = state
	p.cond.Broadcast()
}

// TestPostgresDownAndSilent: two daemons reach PostgreSQL through a
// proxy that first takes the database away (every connection broken, new
// ones refused, for 2 s) and later makes it silent (connections open,
// nothing answered, for 6 s, longer than the epoch read's 5 s bound).
// Meanwhile introspection is never answered wrongly (P-INT-1) and never
// hangs past the epoch read's bound; once the database is back, each
// daemon serves again by itself, with no restart: introspection,
// a session ended at once everywhere (P-REV-1), and an approval on one
// reaching a device polling the other without the polling cache's 10 s,
// so the listeners came back too (P-DEV-5, issue 15).
func TestPostgresDownAndSilent(t *testing.T) {
	base := pgtest.URL(t)
	proxy, proxied := proxiedPostgres(t, base)

	varsA := opsVars(t, t.TempDir(), nil)
	varsA["DEVICEGRANTD_DATABASE"] = proxied
	varsB := with(varsA, "DEVICEGRANTD_LISTEN", freeAddr(t))
	addAlice(t, varsA)
	a, b := startDaemonCtl(t, varsA), startDaemonCtl(t, varsB)
	token := signInDevice(t, a.base, "DOWNKIOSK1", devtest.NewPhone(t))
	client := &http.Client{Timeout: 20 * time.Second}

	for _, outage := range []struct {
		state string
		lasts time.Duration
	}{{"down", 2 * time.Second}, {"silent", 6 * time.Second}} {
		proxy.set(outage.state)
		began := time.Now()
		for time.Since(began) < outage.lasts {
			for _, d := range []*daemon{a, b} {
				asked := time.Now()
				status, active := tryIntrospectWith(t, client, d.base, token)
				if took := time.Since(asked); took > 7*time.Second {
					t.Errorf("database %s: introspection at %s took %v", outage.state, d.base, took)
				}
				if status == http.StatusOK && !active {
					t.Fatalf("database %s: %s answers an active token inactive", outage.state, d.base)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		proxy.set("up")
		back := time.Now()
		for _, d := range []*daemon{a, b} {
			for {
				status, active := tryIntrospectWith(t, client, d.base, token)
				if status == http.StatusOK {
					if !active {
						t.Fatalf("after the database was %s: %s answers an active token inactive", outage.state, d.base)
					}
					break
				}
				if time.Since(back) > 10*time.Second {
					t.Fatalf("%s still answers %d 10 s after the database came back from %s", d.base, status, outage.state)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		t.Logf("database %s for %v: both answer again %v after it came back", outage.state, outage.lasts, time.Since(back).Round(time.Millisecond))
	}

	if out, err := cli(t, with(varsA, "DEVICEGRANTD_DATABASE", base), "", "session", "end", "--device", "DOWNKIOSK1", "--user", devtest.Username); err != nil {
		t.Fatalf("session end: %v %s", err, out)
	}
	for _, d := range []*daemon{a, b} {
		if introspect(t, d.base, token) {
			t.Errorf("the token of an ended session is still active at %s", d.base)
		}
	}

	// The listeners: an approval at A reaches a poll at B at once. B's
	// listener may still be pausing before it reconnects (at most 10 s);
	// each try is a new device authorization.
	clientID := registerKiosk(t, b.base)
	heard := func(device string) bool {
		poll := approvedElsewhere(t, a, b, clientID, device)
		for decided := time.Now(); time.Since(decided) < 2*time.Second; time.Sleep(100 * time.Millisecond) {
			if m := poll(); m["access_token"] != nil {
				return true
			}
		}
		return false
	}
	for i := 0; !heard("DOWNKIOSK" + string(rune('2'+i))); i++ {
		if i == 5 {
			t.Fatal("B never hears of approvals at A again: its listener did not come back")
		}
	}
}

// proxiedPostgres puts a pgProxy before the PostgreSQL at base and
// returns it with base's URL pointing at it instead.
func proxiedPostgres(t *testing.T, base string) (*pgProxy, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	pgHost, port := q.Get("host"), q.Get("port")
	if pgHost == "" {
		pgHost = u.Hostname()
	}
	if port == "" {
		port = u.Port()
	}
	if port == "" {
		port = "5432"
	}
	target := [2]string{"tcp", net.JoinHostPort(pgHost, port)}
	if strings.HasPrefix(pgHost, "/") {
		target = [2]string{"unix", filepath.Join(pgHost, ".s.PGSQL."+port)}
	} else if pgHost == "" || strings.Contains(pgHost, ",") {
		t.Skip("DEVICEGRANT_POSTGRES_URL names no single host to put a proxy before")
	}
	proxy := newPGProxy(t, target)
	host, pport, _ := net.SplitHostPort(proxy.ln.Addr().String())
	q.Set("host", host)
	q.Set("port", pport)
	u.RawQuery = q.Encode()
	return proxy, u.String()
}

// TestHealthzSilentDatabase: while PostgreSQL is silent (connections
// open, nothing answered) /healthz answers 503 within its 5 s bound, like
// introspection, rather than holding the balancer's health check until
// the balancer gives up; and 200 again once the database answers.
func TestHealthzSilentDatabase(t *testing.T) {
	proxy, proxied := proxiedPostgres(t, pgtest.URL(t))
	vars := opsVars(t, t.TempDir(), nil)
	vars["DEVICEGRANTD_DATABASE"] = proxied
	d := startDaemonCtl(t, vars)
	client := &http.Client{Timeout: 20 * time.Second}
	healthz := func() (int, time.Duration) {
		t.Helper()
		asked := time.Now()
		resp, err := client.Get(d.base + "healthz")
		if err != nil {
			t.Fatalf("/healthz after %v: %v", time.Since(asked), err)
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(asked)
	}
	if status, _ := healthz(); status != http.StatusOK {
		t.Fatalf("/healthz with the database up: %d", status)
	}
	// Down first, until /healthz fails: the daemon has dropped what it
	// held in memory (its listener is gone), so the next /healthz has to
	// ask the database, which is then silent.
	proxy.set("down")
	for down := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if status, _ := healthz(); status == http.StatusServiceUnavailable {
			break
		}
		if time.Since(down) > 10*time.Second {
			t.Fatal("/healthz still answers 200 10 s after the database went away")
		}
	}
	proxy.set("silent")
	// The first checks may fail at once on what the outage left in the
	// pool; go on until one has waited on the silent database.
	for i := 0; i < 4; i++ {
		status, took := healthz()
		if status != http.StatusServiceUnavailable || took > 7*time.Second {
			t.Errorf("/healthz with the database silent: %d after %v, want 503 within the 5 s bound", status, took)
		}
		if took > 4*time.Second {
			break
		}
	}
	proxy.set("up")
	for back := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if status, _ := healthz(); status == http.StatusOK {
			break
		}
		if time.Since(back) > 10*time.Second {
			t.Fatal("/healthz still fails 10 s after the database came back")
		}
	}
}
