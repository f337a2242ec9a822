package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code"

// daemonProcess is devicegrantd running as a separate process, so that the test
// can kill it as a power cut would.
type daemonProcess struct {
	t    *testing.T
	bin  string
	env  []string
	base string
	cmd  *exec.Cmd
	logs *devtest.SyncBuffer
}

func (d *daemonProcess) start() {
	d.t.Helper()
	d.logs = &devtest.SyncBuffer{}
	d.cmd = exec.Command(d.bin, "serve")
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	cmd := d.cmd
	d.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(d.t, "the daemon to answer", func() bool {
		resp, err := http.Get(d.base + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// kill sends SIGKILL: no shutdown, no deferred close, no final commit.
func (d *daemonProcess) kill() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

// post sends a form and decodes the JSON answer; err is a transport error
// (the daemon is gone), never a status.
func post(base, path string, form url.Values, bearer string) (int, map[string]any, error) {
	req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, nil, err
		}
	}
	return resp.StatusCode, m, nil
}

// chain is what one device holds: the newest token pair it received, and
// whether it was told its revocation succeeded.
type chain struct {
	access, refresh string
	revoked         bool
	uncertain       bool // a revocation was in flight when the daemon died
}

// TestCrashKeepsEveryIssuedToken runs device flows and refresh chains
// under load against the real daemon binary, kills it with SIGKILL in the
// middle, and restarts it. Every token a client received still works
// unless the client rotated or revoked it, approved device codes still
// redeem, and the database is intact with nothing half-done (issue 10,
// P-DEV-6, P-RT-2).
func TestCrashKeepsEveryIssuedToken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the daemon binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "devicegrantd")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	db := filepath.Join(dir, "d.db")
	addr := freeAddr(t)
	const secret = "crash-test-homeserver-secret"
	vars := map[string]string{
		"DEVICEGRANTD_LISTEN": addr, "DEVICEGRANTD_DATABASE": db, "DEVICEGRANTD_LOG_LEVEL": "warn",
		"DEVICEGRANTD_POLL_INTERVAL": "1s", "DEVICEGRANTD_HOMESERVER_SECRET": secret,
		"DEVICEGRANTD_DEVICE_AUTHORIZATIONS": "100000/1ms", "DEVICEGRANTD_CLIENT_REGISTRATIONS": "100000/1ms",
	}
	gin.SetMode(gin.ReleaseMode) // for user add, in this process
	var out bytes.Buffer
	if err := run(context.Background(), []string{"user", "add", devtest.Username, "--password-stdin"},
		strings.NewReader(devtest.Password+"\n"), &out, &out, env(vars)); err != nil {
		t.Fatalf("user add: %v\n%s", err, out.String())
	}
	d := &daemonProcess{t: t, bin: bin, base: "http://" + addr + "/"}
	for k, v := range vars {
		d.env = append(d.env, k+"="+v)
	}
	d.start()

	reg := postJSON(t, d.base+"oauth2/registration", nil, `{"client_name":"Crash display","client_uri":"https://crash.example.org/",
		"application_type":"native","token_endpoint_auth_method":"none",
		"grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	clientID, _ := reg["client_id"].(string)
	if clientID == "" {
		t.Fatalf("registration: %v", reg)
	}

	// Approve a batch of device codes first: a person's approval is not
	// what is under test, and the phone helper may only fail the test
	// from this goroutine.
	const workers, codesEach = 4, 8
	phone := devtest.NewPhone(t)
	codes := make([][]string, workers)
	for w := range workers {
		for i := range codesEach {
			device := "CRASHDEV" + string(rune('A'+w)) + string(rune('A'+i))
			st, m, err := post(d.base, "oauth2/device", url.Values{"client_id": {clientID},
				"scope": {"urn:matrix:client:api:* urn:matrix:client:device:" + device}}, "")
			if err != nil || st != http.StatusOK {
				t.Fatalf("device authorization: %d %v %v", st, m, err)
			}
			phone.Decide(m["verification_uri_complete"].(string), "approve")
			codes[w] = append(codes[w], m["device_code"].(string))
		}
	}

	// Load: each worker redeems its codes and refreshes and sometimes
	// revokes its chains, recording only the answers it received, until
	// the daemon dies under it.
	var (
		mu       sync.Mutex
		chains   []*chain
		pending  []string // approved codes never polled: they must still redeem
		redeemed int
		refreshs int
		lost     int // requests whose answer the kill cut off
	)
	enough := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func(mine []string) {
			defer wg.Done()
			var own []*chain
			defer func() {
				mu.Lock()
				pending = append(pending, mine...)
				mu.Unlock()
			}()
			for op := 0; ; op++ {
				if len(mine) > 0 && (op%10 == 0 || len(own) == 0) {
					dc := mine[0]
					mine = mine[1:]
					st, m, err := post(d.base, "oauth2/token", url.Values{"grant_type": {deviceGrant}, "client_id": {clientID}, "device_code": {dc}}, "")
					if err != nil {
						mu.Lock()
						lost++
						mu.Unlock()
						return // in flight when killed: the device never saw the answer
					}
					if st != http.StatusOK {
						t.Errorf("redeeming an approved code: %d %v", st, m)
						return
					}
					c := &chain{access: m["access_token"].(string), refresh: m["refresh_token"].(string)}
					own = append(own, c)
					mu.Lock()
					chains = append(chains, c)
					redeemed++
					mu.Unlock()
					continue
				}
				c := own[op%len(own)]
				mu.Lock()
				skip := c.revoked || c.uncertain
				mu.Unlock()
				if skip {
					continue
				}
				if op == 21 { // each worker revokes one of its chains
					mu.Lock()
					c.uncertain = true
					mu.Unlock()
					st, _, err := post(d.base, "oauth2/revoke", url.Values{"client_id": {clientID}, "token": {c.refresh}}, "")
					if err != nil {
						mu.Lock()
						lost++
						mu.Unlock()
						return
					}
					mu.Lock()
					c.revoked, c.uncertain = st == http.StatusOK, false
					mu.Unlock()
					continue
				}
				st, m, err := post(d.base, "oauth2/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {c.refresh}}, "")
				if err != nil {
					mu.Lock()
					lost++
					mu.Unlock()
					return // the answer was lost: the device keeps its pair
				}
				if st != http.StatusOK {
					t.Errorf("refresh: %d %v", st, m)
					return
				}
				mu.Lock()
				c.access, c.refresh = m["access_token"].(string), m["refresh_token"].(string)
				refreshs++
				if refreshs >= 150 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}(codes[w])
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-enough:
	case <-stopped: // every worker failed or ran out of work: reported below
	}
	d.kill()
	<-stopped
	if refreshs < 150 && !t.Failed() {
		t.Errorf("the workers stopped after %d refreshes, before the kill", refreshs)
	}
	if t.Failed() {
		t.Fatalf("daemon logs:\n%s", d.logs.String())
	}
	t.Logf("killed after %d redemptions and %d refreshes, cutting off %d requests; %d chains, %d approved codes not yet polled",
		redeemed, refreshs, lost, len(chains), len(pending))
	if lost == 0 || len(pending) == 0 {
		t.Errorf("the kill cut off %d requests and left %d approved codes unpolled; want some of each", lost, len(pending))
	}

	checkDatabase(t, db)
	d.start()
	for i, c := range chains {
		if c.uncertain {
			continue
		}
		st, m, err := post(d.base, "oauth2/introspect", url.Values{"token": {c.access}}, secret)
		if err != nil || st != http.StatusOK || m["active"] != !c.revoked {
			t.Errorf("chain %d (revoked %v): introspection after restart: %d %v %v", i, c.revoked, st, m, err)
		}
		st, m, err = post(d.base, "oauth2/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {c.refresh}}, "")
		if c.revoked {
			if err != nil || m["error"] != "invalid_grant" {
				t.Errorf("chain %d: revoked refresh token after restart: %d %v %v", i, st, m, err)
			}
		} else if err != nil || st != http.StatusOK {
			t.Errorf("chain %d: refresh after restart: %d %v %v", i, st, m, err)
		}
	}
	for _, dc := range pending {
		st, m, err := post(d.base, "oauth2/token", url.Values{"grant_type": {deviceGrant}, "client_id": {clientID}, "device_code": {dc}}, "")
		// Codes whose poll the kill cut off are not here: they may
		// have been exchanged unseen. One nobody polled must redeem.
		if err != nil || st != http.StatusOK {
			t.Errorf("approved code after restart: %d %v %v", st, m, err)
		}
	}
	d.kill()
	checkDatabase(t, db)
}

// checkDatabase: SQLite's own integrity and foreign-key checks pass, and
// no protocol state is half-written.
func checkDatabase(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check: %q %v", ok, err)
	}
	rows, err := db.Query("PRAGMA foreign_key_check")
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Error("foreign_key_check found dangling references")
	}
	rows.Close()
	for what, q := range map[string]string{
		"exchanged grants without a session":     `SELECT COUNT(*) FROM device_grants WHERE state = 'exchanged' AND session_id IS NULL`,
		"sessions without tokens":                `SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS (SELECT 1 FROM token_pairs p WHERE p.session_id = s.id)`,
		"rotated pairs without their successor":  `SELECT COUNT(*) FROM token_pairs p WHERE p.successor_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM token_pairs n WHERE n.id = p.successor_id)`,
		"live sessions with two unrotated pairs": `SELECT COUNT(*) FROM (SELECT session_id FROM token_pairs WHERE rotated_at IS NULL AND revoked_at IS NULL GROUP BY session_id HAVING COUNT(*) > 1)`,
	} {
		var n int
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n != 0 {
			t.Errorf("%d %s", n, what)
		}
	}
}
