package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// TestPostgresConnectionsKilled: two daemons share a PostgreSQL schema,
// and every connection they hold, the pools' and the listeners', is
// ended by the server (pg_terminate_backend, as a PostgreSQL restart or
// a failover does). Neither needs a restart: an introspection is never
// answered wrongly (P-INT-1) and does not even fail, a session
// ended afterwards is inactive on both at once (P-REV-1), and the
// listeners reconnect, so that an approval through one reaches a device
// polling the other at its next poll, not after the polling cache's 10 s
// (P-DEV-5, issue 15).
func TestPostgresConnectionsKilled(t *testing.T) {
	k := startKillable(t)
	base, appName, schema, varsA, a, b := k.base, k.appName, k.schema, k.varsA, k.a, k.b
	token := signInDevice(t, a.base, "KILLKIOSK1", devtest.NewPhone(t))
	for _, d := range []*daemon{a, b} {
		if !introspect(t, d.base, token) {
			t.Fatalf("a fresh token is inactive at %s", d.base)
		}
	}
	// The listeners are up (Run starts them in the background).
	waitFor(t, "both listeners", func() bool { return countBackends(t, base, appName, schema, false) >= 4 })

	killed := countBackends(t, base, appName, schema, true)
	t.Logf("terminated %d connections", killed)
	killedAt := time.Now()

	// From now on: every answer given is right, and answers come back.
	var failed int
	var recovered time.Duration
	for _, d := range []*daemon{a, b} {
		for {
			status, active := tryIntrospect(t, d.base, token)
			if status == http.StatusOK {
				if !active {
					t.Fatalf("%s answers inactive for an active token after the connections were killed", d.base)
				}
				break
			}
			failed++
			if time.Since(killedAt) > 10*time.Second {
				t.Fatalf("%s still answers %d to introspection 10 s after its connections were killed", d.base, status)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	recovered = time.Since(killedAt)
	t.Logf("introspection answered again after %v, %d failed answers meanwhile", recovered.Round(time.Millisecond), failed)
	if failed > 0 {
		// The epoch read, which introspection makes first, resets the pool
		// and reads again when it finds its connection lost.
		t.Errorf("%d introspections failed after the connections were killed, want none:\nA:\n%s\nB:\n%s", failed, a.log.String(), b.log.String())
	}

	if out, err := cli(t, varsA, "", "session", "end", "--device", "KILLKIOSK1", "--user", devtest.Username); err != nil {
		t.Fatalf("session end: %v %s", err, out)
	}
	for _, d := range []*daemon{a, b} {
		if introspect(t, d.base, token) {
			t.Errorf("the token of an ended session is still active at %s after the connections were killed", d.base)
		}
	}

	// The listeners came back: B reports the resync.
	waitFor(t, "B's listener to reconnect", func() bool {
		return strings.Contains(b.log.String(), "missed other instances' changes") &&
			countBackends(t, base, appName, schema, false) >= 2
	})
	poll := approvedElsewhere(t, a, b, registerKiosk(t, b.base), "KILLKIOSK2")
	decided := time.Now()
	for {
		m := poll()
		if m["access_token"] != nil {
			t.Logf("the approval at A reached a poll at B after %v", time.Since(decided).Round(time.Millisecond))
			break
		}
		if e := m["error"]; e != "authorization_pending" && e != "slow_down" {
			t.Fatalf("poll at B: %v", m)
		}
		if time.Since(decided) > 3*time.Second {
			t.Fatal("B did not hear of A's approval: its listener did not come back after its connection was killed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killable is two daemons, a and b (a configured by varsA, with alice as
// its user), on a killableDatabase.
type killable struct {
	base, appName, schema string
	varsA                 map[string]string
	a, b                  *daemon
}

func startKillable(t *testing.T) killable {
	t.Helper()
	var k killable
	var dbURL string
	k.base, dbURL, k.appName, k.schema = killableDatabase(t)
	k.varsA = opsVars(t, t.TempDir(), nil)
	k.varsA["DEVICEGRANTD_DATABASE"] = dbURL
	k.varsA["DEVICEGRANTD_LOG_LEVEL"] = "info"
	varsB := with(k.varsA, "DEVICEGRANTD_LISTEN", freeAddr(t))
	addAlice(t, k.varsA)
	k.a, k.b = startDaemonCtl(t, k.varsA), startDaemonCtl(t, varsB)
	return k
}

// killableDatabase is a throwaway schema (base, the URL to inspect it with)
// and the URL for daemons (dbURL), which names their connections appName so
// that countBackends can end this test's connections only.
func killableDatabase(t *testing.T) (base, dbURL, appName, schema string) {
	t.Helper()
	base = pgtest.URL(t)
	app := make([]byte, 6)
	if _, err := rand.Read(app); err != nil {
		t.Fatal(err)
	}
	appName = "dgkill_" + hex.EncodeToString(app)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	schema = q.Get("search_path")
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()
	return base, u.String(), appName, schema
}

// TestPostgresConnectionsKilledMidWrites: as in TestPostgresConnectionsKilled
// every connection of two daemons is ended by the server, but while they
// are busy, and what reaches them first is not an introspection (whose
// epoch read resets the pool) but refreshes, registrations, device
// authorizations and polls, at both at once. Their pooled connections were
// in use a moment before, so the pool hands them out unchecked. Not one
// of these requests may fail or be answered wrongly: a transaction that
// never committed, like a read, can run again on a new connection (issue
// 15: a client never sees a 5xx because of the database's connections).
// A refresh answered with an error would be worse than a 5xx: the client
// would drop a session that is alive (P-RT-2).
func TestPostgresConnectionsKilledMidWrites(t *testing.T) {
	k := startKillable(t)
	base, appName, schema, a, b := k.base, k.appName, k.schema, k.a, k.b
	daemons := []*daemon{a, b}
	phone := devtest.NewPhone(t)

	type chain struct{ clientID, refresh, access string }
	chains := make([]*chain, 4)
	for i := range chains {
		id, tok := signInDeviceTokens(t, a.base, fmt.Sprintf("KILLWRITE%d", i), phone)
		chains[i] = &chain{id, tok.RefreshToken, tok.AccessToken}
	}
	kiosk := registerKiosk(t, b.base)

	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	for round := range 3 {
		// Busy pools: several connections each, used within the last
		// second, which pgxpool hands out again without a ping.
		var warm sync.WaitGroup
		for i := range 16 {
			warm.Go(func() { tryIntrospect(t, daemons[i%2].base, chains[0].access) })
		}
		warm.Wait()
		killed := countBackends(t, base, appName, schema, true)

		var wg sync.WaitGroup
		for i, c := range chains {
			d := daemons[(i+round)%2]
			wg.Go(func() {
				status, m := postForm(d.base+"oauth2/token", url.Values{"grant_type": {"refresh_token"},
					"refresh_token": {c.refresh}, "client_id": {c.clientID}})
				if status != http.StatusOK {
					fail("round %d: refresh at %s: %d %v", round, d.base, status, m)
					return
				}
				c.refresh, _ = m["refresh_token"].(string)
				c.access, _ = m["access_token"].(string)
			})
		}
		for i, d := range daemons {
			wg.Go(func() {
				status, m := postForm(d.base+"oauth2/device", url.Values{"client_id": {kiosk},
					"scope": {scopeAPI + " " + scopeDevice + fmt.Sprintf("KILLPEND%d%d", round, i)}})
				if status != http.StatusOK {
					fail("round %d: device authorization at %s: %d %v", round, d.base, status, m)
					return
				}
				code, _ := m["device_code"].(string)
				status, m = postForm(daemons[1-i].base+"oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
					"device_code": {code}, "client_id": {kiosk}})
				if status != http.StatusBadRequest || m["error"] != "authorization_pending" {
					fail("round %d: poll at %s: %d %v", round, daemons[1-i].base, status, m)
				}
			})
			wg.Go(func() {
				resp, err := http.Post(d.base+"oauth2/registration", "application/json", strings.NewReader(
					`{"client_name":"Kiosk","client_uri":"https://kiosk.example.org/","token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`))
				if err != nil {
					fail("round %d: registration at %s: %v", round, d.base, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					fail("round %d: registration at %s: %d", round, d.base, resp.StatusCode)
				}
			})
		}
		wg.Wait()
		t.Logf("round %d: ended %d connections", round, killed)
	}
	for _, f := range failures {
		t.Error(f)
	}
	if len(failures) > 0 {
		t.Logf("A:\n%s\nB:\n%s", a.log.String(), b.log.String())
	}
	for i, c := range chains {
		for _, d := range daemons {
			if !introspect(t, d.base, c.access) {
				t.Errorf("chain %d: the newest access token is inactive at %s", i, d.base)
			}
		}
	}
}

// postForm posts form to u and returns the status and the JSON answer; a
// transport error is status 0.
func postForm(u string, form url.Values) (int, map[string]any) {
	resp, err := http.PostForm(u, form)
	if err != nil {
		return 0, map[string]any{"transport": err.Error()}
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// countBackends counts, or with kill terminates, the PostgreSQL sessions of
// this test's daemons: their pools' (application_name appName) and their
// listeners' (named after the schema's channel).
func countBackends(t *testing.T, base, appName, schema string, kill bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	what := "1"
	if kill {
		what = "pg_terminate_backend(pid)::int"
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(`+what+`), 0) FROM pg_stat_activity
		WHERE application_name = $1 OR application_name = $2`, appName, "listen devicegrant "+schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// tryIntrospect is introspect that reports a failed answer instead of
// failing the test; a transport error still fails it.
func tryIntrospect(t *testing.T, base, token string) (status int, active bool) {
	t.Helper()
	status, active, err := introspectWith(http.DefaultClient, base, token)
	if err != nil {
		t.Fatal(err)
	}
	return status, active
}

// tryIntrospectWith is tryIntrospect with a client of the caller's, whose
// timeout (any transport error) is a failed answer, status 0, rather than
// the end of the test.
func tryIntrospectWith(t *testing.T, client *http.Client, base, token string) (status int, active bool) {
	t.Helper()
	status, active, err := introspectWith(client, base, token)
	if err != nil && status != 0 {
		t.Fatal(err)
	}
	return status, active
}

// approvedElsewhere has the device authorization of device made at b and
// polled there once, so that b holds the grant as pending in its polling
// cache (the first poll must say authorization_pending), and then the
// person approves it through a. It returns the poll at b: the caller
// checks how soon it answers with tokens (P-DEV-5).
func approvedElsewhere(t *testing.T, a, b *daemon, clientID, device string) (poll func() map[string]any) {
	t.Helper()
	da := postJSON(t, b.base+"oauth2/device", url.Values{"client_id": {clientID},
		"scope": {scopeAPI + " " + scopeDevice + device}}, "")
	code, _ := da["device_code"].(string)
	complete, _ := da["verification_uri_complete"].(string)
	if code == "" || complete == "" {
		t.Fatalf("device authorization at B: %v", da)
	}
	poll = func() map[string]any {
		return postJSON(t, b.base+"oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
			"device_code": {code}, "client_id": {clientID}}, "")
	}
	if m := poll(); m["error"] != "authorization_pending" {
		t.Fatalf("first poll at B: %v", m)
	}
	devtest.NewPhone(t).Decide(strings.Replace(complete, b.base, a.base, 1), "approve")
	return poll
}
