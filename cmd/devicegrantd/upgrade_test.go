package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// upgradeFrom is the release the rolling upgrade starts from: the last
// commit before migrations 0007 (job leases) and 0008 (instances, known
// places), with the PostgreSQL backend already in place. Its schema is
// older than the tree's, so the test crosses real migrations, and every
// migration added later is rehearsed against it too: one that an old
// binary cannot live with (a dropped or renamed column, a new NOT NULL
// column without a default) makes the old daemons answer 500 after
// "migrate" and fails the test. Move it forward to the last release
// operators run when one is made.
const upgradeFrom = "6d24ca0"

// TestRollingUpgrade rehearses the README's upgrade of several instances
// on one PostgreSQL database with real binaries (issue 15): three
// daemons built from upgradeFrom serve behind a round-robin balancer
// while devices sign in (x/oauth2's device flow, a phone approving through
// the pages), refresh, sign out and are introspected. The new binary's
// "migrate --check" says migrations are pending and "migrate" applies
// them; the old daemons keep serving on the new schema; an old binary
// started then refuses, saying why; each old daemon is stopped with
// SIGTERM and replaced by a new one on its address in turn; then, as the
// next upgrade would, each new daemon, which drains (shutdown_drain), is
// restarted in turn, its /healthz saying 503 while it drains. Throughout,
// no instance answers a 5xx and the balancer cuts off no request; every
// device flow begun ends with tokens (P-DEV-6); refresh chains carry on
// across releases (P-RT-2); a sign-out is inactive at once at every
// instance of either release (P-REV-1, P-INT-1). At the end every pair a
// client holds is active at every instance, the new release publishes the
// old one's signing keys, the homeserver has exactly the signed-in
// devices (P-HS-4), and "migrate --check" finds the schema current.
//
// It builds upgradeFrom from the git history, so it skips when that
// commit is not there (a tarball, a shallow clone), unless
// DEVICEGRANT_UPGRADE_TESTS=1 (test.sh), when a missing commit fails it.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two releases of the daemon and runs six of them")
	}
	// Only a missing commit skips: git refusing to work here (not
	// installed, a repository it deems unsafe) fails, lest CI skip in
	// silence.
	var stderr strings.Builder
	find := exec.Command("git", "rev-parse", "--show-toplevel")
	find.Stderr = &stderr
	root, err := find.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "not a git repository") {
			t.Skipf("not in a git checkout: cannot build release %s", upgradeFrom)
		}
		t.Fatalf("git rev-parse: %v\n%s", err, stderr.String())
	}
	repo := strings.TrimSpace(string(root))
	if err := exec.Command("git", "-C", repo, "cat-file", "-e", upgradeFrom+"^{commit}").Run(); err != nil {
		if os.Getenv("DEVICEGRANT_UPGRADE_TESTS") == "1" {
			// test.sh sets it after deepening a shallow clone: CI must
			// not pass without this test.
			t.Fatalf("commit %s is not in this clone's history: cannot build the old release", upgradeFrom)
		}
		t.Skipf("commit %s is not in this clone's history (shallow?): cannot build the old release", upgradeFrom)
	}
	pgURL := pgtest.URL(t)
	began := time.Now()
	dir := t.TempDir()
	oldBin, newBin, oldLatest := buildReleases(t, repo, dir)
	newLatest := latestPostgresMigration(t, "../../store/postgres/migrations")
	if oldLatest >= newLatest {
		t.Fatalf("release %s has schema version %d, the tree %d: nothing to migrate", upgradeFrom, oldLatest, newLatest)
	}
	built := time.Since(began)

	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: opsSecret})
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	lb := newBalancer(t, addrs, balancerOptions{healthChecks: true})
	daemons := make([]*rollDaemon, len(addrs))
	hs.SetAuthEndpoint(lb.url)
	common := []string{
		"DEVICEGRANTD_ISSUER=" + lb.url,
		"DEVICEGRANTD_DATABASE=" + pgURL,
		"DEVICEGRANTD_HOMESERVER_ENDPOINT=" + hs.URL(),
		"DEVICEGRANTD_HOMESERVER_SECRET=" + opsSecret,
		"DEVICEGRANTD_SERVER_NAME=" + hs.ServerName(),
		"DEVICEGRANTD_LOG_LEVEL=warn",
		"DEVICEGRANTD_POLL_INTERVAL=1s",
		// Every client comes from 127.0.0.1 here: the limits are not
		// what this test is about.
		"DEVICEGRANTD_DEVICE_AUTHORIZATIONS=100000/1ms",
		"DEVICEGRANTD_CLIENT_REGISTRATIONS=100000/1ms",
		"DEVICEGRANTD_NEW_CLIENTS=100000/1ms",
	}
	// The new release drains on SIGTERM, as a deployment behind a
	// balancer should; the old one has no such setting.
	newVars := append(append([]string(nil), common...), "DEVICEGRANTD_SHUTDOWN_DRAIN=2s")
	// The operator's first account, made with the old release (the new
	// one would migrate the schema).
	if out, err := runBinary(oldBin, common, devtest.Password+"\n", "user", "add", devtest.Username, "--password-stdin"); err != nil {
		t.Fatalf("old user add: %v\n%s", err, out)
	}
	// Every daemon started is killed at the end, after the load stopped
	// (cleanups run last registered first).
	var started []*rollDaemon
	t.Cleanup(func() {
		for _, d := range started {
			d.kill()
		}
	})
	// One at a time: two old daemons that start at once on an empty
	// database may each make a signing key (fixed since, d2d4e90).
	for i, addr := range addrs {
		daemons[i] = startRollDaemon(t, &started, oldBin, "old", addr, common)
		lb.setLabel(i, "old")
	}

	keysBefore := rollKeyIDs(t, lb.url)
	load := startRollLoad(t, lb.url, addrs)
	// On a failure, what the clients, the balancer and the daemons saw.
	t.Cleanup(func() {
		load.stop()
		if !t.Failed() {
			return
		}
		for _, e := range rollFirst(load.errors(), 10) {
			t.Logf("client: %s", e)
		}
		for _, e := range rollFirst(lb.failures(), 10) {
			t.Logf("balancer: %s", e)
		}
		for i, d := range daemons {
			t.Logf("daemon %d (%s) log:\n%s", i, d.version, d.logs.String())
		}
	})
	// wait gives up as soon as a client or the balancer saw a failure.
	wait := func(what string, cond func() bool) {
		t.Helper()
		rollWait(t, what, func() bool {
			if n := len(load.errors()) + len(lb.failures()); n > 0 {
				t.Fatalf("waiting for %s: %d failures", what, n)
			}
			return cond()
		})
	}
	wait("device flows and refreshes on the old release", func() bool { return load.refreshedChains() >= 3 })

	syncsOld := rollSyncs(hs)
	out, err := runBinary(newBin, common, "", "migrate", "--check")
	if want := fmt.Sprintf("schema version %d, this program's %d: migrations pending", oldLatest, newLatest); err == nil || !strings.Contains(out, want) {
		t.Errorf("new migrate --check before the upgrade: %v\n%s\nwant it to fail with %q", err, out, want)
	}
	out, err = runBinary(newBin, common, "", "migrate")
	if want := fmt.Sprintf("schema version %d before, %d after", oldLatest, newLatest); err != nil || !strings.Contains(out, want) {
		t.Fatalf("new migrate: %v\n%s\nwant %q", err, out, want)
	}
	load.phase.Store("old on the new schema")
	// The old release keeps serving on the new schema: its clients get on
	// with their flows and refreshes for a while before any restart.
	mark := load.completed()
	wait("device flows on old daemons over the new schema", func() bool { return load.completed() >= mark+2 })

	// An old binary started now refuses, and says why.
	refuse := exec.Command(oldBin, "serve")
	refuse.Env = append(append(os.Environ(), common...), "DEVICEGRANTD_LISTEN="+freeAddr(t))
	refusal, err := runWithTimeout(refuse, 20*time.Second)
	want := fmt.Sprintf("database schema version %d is newer than this program knows (%d); upgrade devicegrantd", newLatest, oldLatest)
	if err == nil || !strings.Contains(refusal, want) {
		t.Errorf("the old release started on the new schema: %v\n%s\nwant it to refuse with %q", err, refusal, want)
	}

	for i, addr := range addrs {
		// The old release cannot drain (shutdown_drain is newer): as
		// README's Upgrading says, take it out of the balancer first, or
		// its SIGTERM may catch a request just sent on a kept-alive
		// connection.
		lb.takeOut(t, i)
		if err := daemons[i].stop(); err != nil {
			t.Errorf("old daemon %d on SIGTERM: %v\n%s", i, err, daemons[i].logs.String())
		}
		daemons[i] = startRollDaemon(t, &started, newBin, "new", addr, newVars)
		lb.setLabel(i, "new")
		lb.putBack(i)
		load.phase.Store("mixed")
		// The old release does not heartbeat: the new daemons divide the
		// rate limits among themselves only (README, Upgrading).
		rollWait(t, "the new daemons' heartbeats", func() bool { return rollInstances(t, pgURL) == i+1 })
		// Mixed versions: let the clients work before the next restart.
		mark := load.completed()
		wait("a device flow after replacing daemon "+strconv.Itoa(i), func() bool { return load.completed() >= mark+1 })
	}
	syncsRoll := rollSyncs(hs) - syncsOld
	load.phase.Store("new")
	mark = load.completed()
	wait("device flows on the new release only", func() bool { return load.completed() >= mark+2 })

	// The next upgrade: the new daemons, which drain on SIGTERM
	// (shutdown_drain), restarted in turn. While one drains, its /healthz
	// says 503 and it still answers the balancer.
	load.phase.Store("new, restarting")
	for i, addr := range addrs {
		d := daemons[i]
		if err := d.term(); err != nil {
			t.Fatal(err)
		}
		rollWait(t, "daemon "+strconv.Itoa(i)+"'s /healthz to say 503 while it drains", func() bool {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatalf("daemon %d refused /healthz during its drain: %v", i, err)
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusServiceUnavailable
		})
		if err := d.wait(); err != nil {
			t.Errorf("new daemon %d on SIGTERM: %v\n%s", i, err, d.logs.String())
		}
		daemons[i] = startRollDaemon(t, &started, newBin, "new", addr, newVars)
		mark := load.completed()
		wait("a device flow after restarting daemon "+strconv.Itoa(i), func() bool { return load.completed() >= mark+1 })
	}
	load.stop()
	// A stopped daemon leaves the instances; its successor joins.
	rollWait(t, "three daemons heartbeating", func() bool { return rollInstances(t, pgURL) == len(addrs) })

	// Every flow begun ended with tokens; no request failed.
	for _, e := range load.errors() {
		t.Error(e)
	}
	for _, e := range lb.failures() {
		t.Error(e)
	}
	chains := load.snapshot()
	if load.begun.Load() != int64(len(chains)) {
		t.Errorf("%d device flows begun, %d ended with tokens", load.begun.Load(), len(chains))
	}

	// Every pair the clients hold is active at every instance, and every
	// chain still refreshes; some chains began on the old release and were
	// refreshed by the new one.
	crossed := 0
	for _, c := range chains {
		for i, addr := range addrs {
			if active := rollIntrospect(t, "http://"+addr+"/", c.access); active == c.revoked {
				t.Errorf("device %s (signed out: %v): its access token's active is %v at instance %d", c.deviceID, c.revoked, active, i)
			}
		}
		if c.issuedBy == "old" && c.refreshedBy["new"] > 0 {
			crossed++
		}
	}
	if crossed == 0 {
		t.Error("no refresh chain began on the old release and went on on the new one")
	}
	if load.revocations.Load() == 0 {
		t.Error("no device signed out")
	}
	for i := range chains {
		if c := &chains[i]; !c.revoked {
			if err := load.refresh(c); err != nil {
				t.Errorf("device %s: a last refresh: %v", c.deviceID, err)
			}
		}
	}
	// The new release signs with the keys the old one made.
	for i, addr := range addrs {
		if got := rollKeyIDs(t, "http://"+addr+"/"); got != keysBefore {
			t.Errorf("instance %d publishes signing keys %s, the old release %s", i, got, keysBefore)
		}
	}

	// The homeserver has every device (old and new deliverers shared the
	// outbox).
	rollWait(t, "every device at the homeserver, and no signed-out one", func() bool {
		have := map[string]bool{}
		for _, d := range hs.Devices(devtest.Username) {
			have[d] = true
		}
		for _, c := range chains {
			if have[c.deviceID] == c.revoked {
				return false
			}
		}
		return len(have) == len(chains)-int(load.revocations.Load())
	})
	if out, err := runBinary(newBin, common, "", "migrate", "--check"); err != nil || !strings.Contains(out, fmt.Sprintf("schema version %d, up to date", newLatest)) {
		t.Errorf("migrate --check after the upgrade: %v\n%s", err, out)
	}

	statuses := lb.statusCounts()
	t.Logf("built in %s; %d device flows (%d chains began on the old release, %d of them refreshed by the new), %d refreshes, %d sign-outs; longest wait from approval to tokens: %s; answers %v; connections refused and retried %d; sync_devices calls %d with the old release alone, %d during the roll, %d after; whole test %s",
		built.Round(100*time.Millisecond), len(chains), countIssuedBy(chains, "old"), crossed, load.refreshes.Load(), load.revocations.Load(),
		load.waits(), statuses, lb.refusedTotal(), syncsOld, syncsRoll, rollSyncs(hs)-syncsOld-syncsRoll, time.Since(began).Round(100*time.Millisecond))
}

// rollWait waits for cond, longer than waitFor: a device flow needs a few
// polls a second apart.
func rollWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(45 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// buildReleases builds the daemon of upgradeFrom (from git archive, in
// dir) and of this tree, at once, and returns both binaries and the old
// release's PostgreSQL schema version.
func buildReleases(t *testing.T, repo, dir string) (oldBin, newBin string, oldLatest int) {
	t.Helper()
	src := filepath.Join(dir, "old-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "old.tar")
	if out, err := exec.Command("git", "-C", repo, "archive", "-o", tarball, upgradeFrom).CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", upgradeFrom, err, out)
	}
	if out, err := exec.Command("tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	oldBin, newBin = filepath.Join(dir, "devicegrantd-old"), filepath.Join(dir, "devicegrantd-new")
	// The archive is no git checkout: no VCS stamp.
	goEnv := append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -buildvcs=false"))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := make([][]byte, 2)
	for i, b := range []struct{ dir, out, pkg string }{{src, oldBin, "./cmd/devicegrantd"}, {".", newBin, "."}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Dir, cmd.Env = b.dir, goEnv
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	for i, which := range []string{"release " + upgradeFrom, "this tree"} {
		if errs[i] != nil {
			t.Fatalf("go build of %s: %v\n%s", which, errs[i], outs[i])
		}
	}
	return oldBin, newBin, latestPostgresMigration(t, filepath.Join(src, "store/postgres/migrations"))
}

// latestPostgresMigration is the version of the last migration in dir.
func latestPostgresMigration(t *testing.T, dir string) int {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(names) == 0 {
		t.Fatalf("the PostgreSQL migrations in %s: %v %v", dir, names, err)
	}
	sort.Strings(names)
	v, err := strconv.Atoi(strings.SplitN(filepath.Base(names[len(names)-1]), "_", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// runBinary runs one command of a built daemon with the given settings.
func runBinary(bin string, vars []string, stdin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), vars...)
	cmd.Stdin = strings.NewReader(stdin)
	return runWithTimeout(cmd, 30*time.Second)
}

// runWithTimeout runs cmd and returns its output; a command still running
// after d is killed and reported as such.
func runWithTimeout(cmd *exec.Cmd, d time.Duration) (string, error) {
	var out devtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("still running after %s", d)
	}
}

// rollDaemon is one "devicegrantd serve" process of either release.
type rollDaemon struct {
	version string
	cmd     *exec.Cmd
	logs    *devtest.SyncBuffer
	done    chan error
}

// startRollDaemon starts bin serving on addr and returns once its
// /healthz answers there; it adds the daemon to started, for the test to
// kill at its end.
func startRollDaemon(t *testing.T, started *[]*rollDaemon, bin, version, addr string, vars []string) *rollDaemon {
	t.Helper()
	d := &rollDaemon{version: version, logs: &devtest.SyncBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(bin, "serve")
	d.cmd.Env = append(append(os.Environ(), vars...), "DEVICEGRANTD_LISTEN="+addr)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	*started = append(*started, d)
	waitFor(t, version+" daemon on "+addr+" to answer /healthz", func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("the %s daemon exited at start: %v\n%s", version, err, d.logs.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return d
}

// kill ends the process, if it still runs, and waits for it.
func (d *rollDaemon) kill() {
	d.cmd.Process.Kill()
	d.done <- <-d.done // for a second kill or stop
}

// stop sends SIGTERM and waits for the process to exit; a graceful stop
// exits 0.
func (d *rollDaemon) stop() error {
	if err := d.term(); err != nil {
		return err
	}
	return d.wait()
}

// term sends SIGTERM.
func (d *rollDaemon) term() error { return d.cmd.Process.Signal(syscall.SIGTERM) }

// wait waits for the process to exit after a term.
func (d *rollDaemon) wait() error {
	select {
	case err := <-d.done:
		d.done <- nil
		return err
	case <-time.After(20 * time.Second):
		return errors.New("still running 20 s after SIGTERM")
	}
}

// rollChain is what one signed-in device holds: its newest pair, which
// release issued its first, and which releases refreshed it.
type rollChain struct {
	deviceID        string
	access, refresh string
	issuedBy        string
	refreshedBy     map[string]int
	revoked         bool // the client revoked it, and was told so
}

// rollLoad is the clients: device flows one after another on two
// workers, each new device then refreshing its pair and having the new
// access token introspected, as a homeserver would, every 300 ms.
type rollLoad struct {
	base      string
	instances []string // host:port of each instance, to ask each directly
	clientID  string
	client    *http.Client
	quit      chan struct{}
	wg        sync.WaitGroup

	begun       atomic.Int64
	refreshes   atomic.Int64
	revocations atomic.Int64
	phase       atomic.Value // string: which releases serve, set by the test

	mu      sync.Mutex
	chains  []*rollChain
	errs    []string
	longest map[string]time.Duration // by phase: the longest wait from approval to tokens
}

func startRollLoad(t *testing.T, base string, instances []string) *rollLoad {
	t.Helper()
	l := &rollLoad{base: base, instances: instances, client: &http.Client{Timeout: 30 * time.Second}, quit: make(chan struct{}),
		longest: map[string]time.Duration{}}
	l.phase.Store("old")
	reg := postJSON(t, base+"oauth2/registration", nil, `{"client_name":"Upgrade rehearsal","client_uri":"https://kiosk.example.org/","token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	if l.clientID, _ = reg["client_id"].(string); l.clientID == "" {
		t.Fatalf("registration: %v", reg)
	}
	for w := range 2 {
		l.wg.Add(1)
		go l.flows(w)
	}
	t.Cleanup(l.stop)
	return l
}

// noteWait records how long a device approved in phase waited for its
// tokens.
func (l *rollLoad) noteWait(phase string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.longest[phase] = max(l.longest[phase], d.Round(10*time.Millisecond))
}

// waits is the longest wait from approval to tokens in each phase.
func (l *rollLoad) waits() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, p := range []string{"old", "old on the new schema", "mixed", "new", "new, restarting"} {
		if d, ok := l.longest[p]; ok {
			out = append(out, fmt.Sprintf("%s %s", p, d))
		}
	}
	return strings.Join(out, ", ")
}

func (l *rollLoad) stop() {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	l.wg.Wait()
}

func (l *rollLoad) stopped() bool {
	select {
	case <-l.quit:
		return true
	default:
		return false
	}
}

func (l *rollLoad) errorf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, args...))
}

func (l *rollLoad) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

func (l *rollLoad) completed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.chains)
}

// refreshedChains counts the devices that refreshed at least once.
func (l *rollLoad) refreshedChains() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.chains {
		if len(c.refreshedBy) > 0 {
			n++
		}
	}
	return n
}

// snapshot copies the chains, once the load has stopped.
func (l *rollLoad) snapshot() []rollChain {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]rollChain, 0, len(l.chains))
	for _, c := range l.chains {
		cp := *c
		cp.refreshedBy = map[string]int{}
		for k, v := range c.refreshedBy {
			cp.refreshedBy[k] = v
		}
		out = append(out, cp)
	}
	return out
}

// flows signs devices in one after another until the load stops; each
// new device refreshes on a goroutine of its own.
func (l *rollLoad) flows(worker int) {
	defer l.wg.Done()
	jar, _ := cookiejar.New(nil)
	phone := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	conf := &oauth2.Config{
		ClientID: l.clientID,
		Endpoint: oauth2.Endpoint{DeviceAuthURL: l.base + "oauth2/device", TokenURL: l.base + "oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	for i := 0; !l.stopped(); i++ {
		deviceID := fmt.Sprintf("UPGRADE%d%04d", worker, i)
		c := *conf
		c.Scopes = []string{scopeAPI, scopeDevice + deviceID}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		da, err := c.DeviceAuth(ctx)
		if err != nil {
			cancel()
			l.errorf("device %s: device authorization: %v", deviceID, err)
			time.Sleep(time.Second)
			continue
		}
		l.begun.Add(1)
		// The device polls from the start, so that instances of both
		// releases hold the grant as pending when the phone approves on
		// one of them (P-DEV-5).
		var release string
		type result struct {
			tok *oauth2.Token
			err error
		}
		polled := make(chan result, 1)
		go func() {
			tok, err := c.DeviceAccessToken(context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: releaseTap{&release}, Timeout: 30 * time.Second}), da)
			polled <- result{tok, err}
		}()
		time.Sleep(2200 * time.Millisecond)
		approved, phase := time.Now(), l.phase.Load().(string)
		if err := rollApprove(ctx, phone, da.VerificationURIComplete); err != nil {
			l.errorf("device %s: the phone's approval: %v", deviceID, err)
			cancel()
		}
		r := <-polled
		cancel()
		if r.err != nil {
			l.errorf("device %s: polling for tokens: %v", deviceID, r.err)
			time.Sleep(time.Second)
			continue
		}
		tok := r.tok
		l.noteWait(phase, time.Since(approved))
		ch := &rollChain{deviceID: deviceID, access: tok.AccessToken, refresh: tok.RefreshToken, issuedBy: release, refreshedBy: map[string]int{}}
		l.mu.Lock()
		l.chains = append(l.chains, ch)
		l.mu.Unlock()
		l.wg.Add(1)
		go l.keepRefreshing(ch, i%4 == 3)
	}
}

// releaseTap notes which release answered the last request.
type releaseTap struct{ release *string }

func (r releaseTap) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		*r.release = resp.Header.Get("X-Balancer-Label")
	}
	return resp, err
}

// keepRefreshing refreshes ch every 300 ms until the load stops; every
// fourth device signs out after five refreshes.
func (l *rollLoad) keepRefreshing(ch *rollChain, signOut bool) {
	defer l.wg.Done()
	for n := 1; ; n++ {
		select {
		case <-l.quit:
			return
		case <-time.After(300 * time.Millisecond):
		}
		if err := l.refresh(ch); err != nil {
			l.errorf("device %s: %v", ch.deviceID, err)
			return
		}
		if signOut && n == 5 {
			if err := l.revoke(ch); err != nil {
				l.errorf("device %s: %v", ch.deviceID, err)
			}
			return
		}
	}
}

// revoke signs ch out through the balancer (RFC 7009) and checks at once,
// at every instance that is up, that its access token is inactive
// (P-REV-1, P-INT-1), whichever release revoked it and whichever answers.
func (l *rollLoad) revoke(ch *rollChain) error {
	l.mu.Lock()
	rt, at := ch.refresh, ch.access
	l.mu.Unlock()
	resp, err := l.client.PostForm(l.base+"oauth2/revoke", url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}, "client_id": {l.clientID}})
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	resp.Body.Close()
	release := resp.Header.Get("X-Balancer-Label")
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke on the %s release: %s", release, resp.Status)
	}
	l.mu.Lock()
	ch.revoked = true
	l.mu.Unlock()
	l.revocations.Add(1)
	for i, addr := range l.instances {
		active, answered, err := rollActive(l.client, "http://"+addr+"/", at)
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue // restarting
		}
		if err != nil {
			return err
		}
		if active {
			return fmt.Errorf("revoked on the %s release, its access token is still active at instance %d (%s release)", release, i, answered)
		}
	}
	return nil
}

// refresh rotates ch's pair (P-RT-2) and checks that the new access token
// is active at introspection (P-INT-1).
func (l *rollLoad) refresh(ch *rollChain) error {
	l.mu.Lock()
	rt := ch.refresh
	l.mu.Unlock()
	resp, err := l.client.PostForm(l.base+"oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {l.clientID}})
	if err != nil {
		return fmt.Errorf("refresh: %w", err)
	}
	var pair struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	release := resp.Header.Get("X-Balancer-Label")
	err = json.NewDecoder(resp.Body).Decode(&pair)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || pair.AccessToken == "" || pair.RefreshToken == "" {
		return fmt.Errorf("refresh on the %s release: %s %v", release, resp.Status, err)
	}
	l.refreshes.Add(1)
	l.mu.Lock()
	ch.access, ch.refresh = pair.AccessToken, pair.RefreshToken
	ch.refreshedBy[release]++
	l.mu.Unlock()
	active, release, err := rollActive(l.client, l.base, pair.AccessToken)
	if err != nil {
		return err
	}
	if !active {
		return fmt.Errorf("a refreshed access token is inactive at introspection on the %s release", release)
	}
	return nil
}

// rollActive asks about an access token as the homeserver does.
func rollActive(client *http.Client, base, token string) (active bool, release string, err error) {
	req, err := http.NewRequest(http.MethodPost, base+"oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return false, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+opsSecret)
	resp, err := client.Do(req)
	if err != nil {
		return false, "", fmt.Errorf("introspect: %w", err)
	}
	defer resp.Body.Close()
	release = resp.Header.Get("X-Balancer-Label")
	var m struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); resp.StatusCode != http.StatusOK || err != nil {
		return false, release, fmt.Errorf("introspect on the %s release: %s %v", release, resp.Status, err)
	}
	return m.Active, release, nil
}

func rollIntrospect(t *testing.T, base, token string) bool {
	t.Helper()
	active, _, err := rollActive(http.DefaultClient, base, token)
	if err != nil {
		t.Fatal(err)
	}
	return active
}

// rollKeyIDs lists the key ids an instance publishes, sorted.
func rollKeyIDs(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "oauth2/keys.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || resp.StatusCode != http.StatusOK || len(set.Keys) == 0 {
		t.Fatalf("keys at %s: %s %v %v", base, resp.Status, set, err)
	}
	var ids []string
	for _, k := range set.Keys {
		ids = append(ids, k.KID)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// rollFirst is at most the first n of errs, and how many more there were.
func rollFirst(errs []string, n int) []string {
	if len(errs) <= n {
		return errs
	}
	return append(errs[:n:n], fmt.Sprintf("... and %d more", len(errs)-n))
}

// rollSyncs counts the sync_devices calls the homeserver received.
func rollSyncs(hs *fakesynapse.Homeserver) int {
	n := 0
	for _, c := range hs.Calls() {
		if strings.HasSuffix(c.Path, "/sync_devices") {
			n++
		}
	}
	return n
}

// rollInstances counts the instances heartbeating into the database.
func rollInstances(t *testing.T, dsn string) int {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM instances`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func countIssuedBy(chains []rollChain, release string) int {
	n := 0
	for _, c := range chains {
		if c.issuedBy == release {
			n++
		}
	}
	return n
}

// rollApprove is a phone opening a verification_uri_complete: it signs
// in as the test account when asked and approves (P-DEV-7).
func rollApprove(ctx context.Context, phone *http.Client, complete string) error {
	at, doc, err := rollPage(ctx, phone, http.MethodGet, complete, nil)
	if err != nil {
		return err
	}
	if rollForm(doc, "/login") != nil {
		if at, doc, err = rollSubmit(ctx, phone, at, doc, "/login", url.Values{"username": {devtest.Username}, "password": {devtest.Password}}); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
	}
	_, doc, err = rollSubmit(ctx, phone, at, doc, at.Path, url.Values{"action": {"approve"}, "confirm": {"yes"}})
	if err != nil {
		return fmt.Errorf("approve: %w", err)
	}
	if !strings.Contains(rollText(doc), "signing in to your account") {
		return errors.New("the page after approving does not say the device is signing in")
	}
	return nil
}

// rollPage fetches or posts a page, following redirects, and parses it.
func rollPage(ctx context.Context, phone *http.Client, method, u string, form url.Values) (*url.URL, *html.Node, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin") // a browser posting the server's own form
	}
	resp, err := phone.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	doc, err := html.Parse(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s %s: %s (%s release): %s", method, u, resp.Status, resp.Header.Get("X-Balancer-Label"), rollText(doc))
	}
	return resp.Request.URL, doc, nil
}

// rollSubmit posts the form whose action ends with suffix, with its hidden
// fields and extra.
func rollSubmit(ctx context.Context, phone *http.Client, at *url.URL, doc *html.Node, suffix string, extra url.Values) (*url.URL, *html.Node, error) {
	form := rollForm(doc, suffix)
	if form == nil {
		return nil, nil, fmt.Errorf("no form with action *%s on %s: %s", suffix, at, rollText(doc))
	}
	data := url.Values{}
	for _, in := range rollFind(form, "input") {
		if rollAttr(in, "type") == "hidden" {
			data.Set(rollAttr(in, "name"), rollAttr(in, "value"))
		}
	}
	for k, v := range extra {
		data[k] = v
	}
	target, err := at.Parse(rollAttr(form, "action"))
	if err != nil {
		return nil, nil, err
	}
	return rollPage(ctx, phone, http.MethodPost, target.String(), data)
}

func rollForm(doc *html.Node, suffix string) *html.Node {
	for _, f := range rollFind(doc, "form") {
		if strings.HasSuffix(strings.ToUpper(rollAttr(f, "action")), strings.ToUpper(suffix)) {
			return f
		}
	}
	return nil
}

func rollFind(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	if n.Type == html.ElementNode && n.Data == tag {
		out = append(out, n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, rollFind(c, tag)...)
	}
	return out
}

func rollAttr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func rollText(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}
