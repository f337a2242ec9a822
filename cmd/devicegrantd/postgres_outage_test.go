package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
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
	base := pgtest.URL(t)
	app := make([]byte, 6)
	if _, err := rand.Read(app); err != nil {
		t.Fatal(err)
	}
	appName := "dgkill_" + hex.EncodeToString(app)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	q := u.Query()
	q.Set("application_name", appName) // to end this test's connections only
	u.RawQuery = q.Encode()

	varsA := opsVars(t, t.TempDir(), nil)
	varsA["DEVICEGRANTD_DATABASE"] = u.String()
	varsA["DEVICEGRANTD_LOG_LEVEL"] = "info"
	varsB := with(varsA, "DEVICEGRANTD_LISTEN", freeAddr(t))
	addAlice(t, varsA)
	a, b := startDaemonCtl(t, varsA), startDaemonCtl(t, varsB)
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
