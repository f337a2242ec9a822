package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// doctorLines runs the doctor with vars and returns its lines by check
// name, and its error.
func doctorLines(t *testing.T, vars map[string]string) (map[string]string, string, error) {
	t.Helper()
	out, err := cli(t, vars, "", "doctor")
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			t.Fatalf("doctor printed %q", l)
		}
		name := f[1]
		if name == "homeserver" && len(f) > 2 && (f[2] == "secret" || f[2] == "metadata") {
			name += " " + f[2]
		}
		lines[name] = l
	}
	return lines, out, err
}

// TestDoctor: green against a daemon and a fake Synapse that delegates to
// it; red, each with its own sentence and fix, for what breaks
// deployments.
func TestDoctor(t *testing.T) {
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: opsSecret})
	vars := opsVars(t, t.TempDir(), hs)
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	hs.SetAuthEndpoint(d.base)

	lines, out, err := doctorLines(t, vars)
	if err != nil {
		t.Fatalf("doctor against a healthy deployment: %v\n%s", err, out)
	}
	for _, c := range []string{"configuration", "issuer", "database", "listener", "homeserver", "homeserver secret", "homeserver metadata", "clock"} {
		if !strings.HasPrefix(lines[c], "ok ") {
			t.Errorf("check %s: %q, want ok\n%s", c, lines[c], out)
		}
	}

	jsonOut, err := cli(t, vars, "", "doctor", "--json")
	var results []result
	if err != nil || json.Unmarshal([]byte(jsonOut), &results) != nil || len(results) != 8 {
		t.Errorf("doctor --json: %v\n%s", err, jsonOut)
	}

	red := []struct {
		name  string
		vars  map[string]string
		setup func(t *testing.T) func()
		check string
		want  []string
		also  []string // other checks that fail as a consequence
	}{
		{name: "wrong secret", vars: with(vars, "DEVICEGRANTD_HOMESERVER_SECRET", "not-the-secret"), check: "homeserver secret",
			want: []string{"FAIL", "the homeserver refused our shared secret", "403", "Fix: make homeserver.secret the same as matrix_authentication_service.secret"}},
		{name: "unreachable homeserver", vars: with(vars, "DEVICEGRANTD_HOMESERVER_ENDPOINT", "http://"+freeAddr(t)+"/"), check: "homeserver",
			want: []string{"FAIL", "cannot reach the homeserver at http://127.0.0.1:", "connection refused", "Fix: start the homeserver, or set homeserver.endpoint"}},
		{name: "world-readable database", vars: vars, check: "database",
			setup: func(t *testing.T) func() {
				if err := os.Chmod(vars["DEVICEGRANTD_DATABASE"], 0o644); err != nil {
					t.Fatal(err)
				}
				return func() { os.Chmod(vars["DEVICEGRANTD_DATABASE"], 0o600) }
			},
			want: []string{"FAIL", "is mode 0644: other users can read the password and token hashes", "Fix: chmod 600 " + vars["DEVICEGRANTD_DATABASE"]}},
		{name: "wal owned by another user", vars: vars, check: "database",
			setup: func(t *testing.T) func() {
				if os.Getuid() != 0 {
					t.Skip("needs root to give a file away")
				}
				wal := vars["DEVICEGRANTD_DATABASE"] + "-wal"
				if err := os.Chown(wal, 65534, 65534); err != nil {
					t.Fatal(err)
				}
				return func() { os.Chown(wal, 0, 0) }
			},
			want: []string{"FAIL", "-wal is owned by uid 65534 but the database by uid 0", "Fix: chown --reference="}},
		{name: "daemon not running", vars: with(vars, "DEVICEGRANTD_LISTEN", freeAddr(t)), check: "listener",
			want: []string{"FAIL", "nothing answers at http://127.0.0.1:", "Fix: start the daemon"},
			also: []string{"homeserver metadata"}}, // it announces the running daemon's issuer
		{name: "public plain http issuer", vars: with(vars, "DEVICEGRANTD_ISSUER", "http://auth.example.org/"), check: "issuer",
			want: []string{"FAIL", "http://auth.example.org/ is not https", "Fix: set issuer to the https URL"},
			also: []string{"homeserver metadata"}},
		{name: "bad configuration", vars: with(vars, "DEVICEGRANTD_ACCESS_TOKEN_TTL", "soon"), check: "configuration",
			want: []string{"FAIL", "DEVICEGRANTD_ACCESS_TOKEN_TTL", "Fix: correct that setting"}},
		{name: "homeserver delegating elsewhere", vars: with(vars, "DEVICEGRANTD_HOMESERVER_ENDPOINT", otherHomeserver(t, "http://127.0.0.1:1/", 0)), check: "homeserver metadata",
			want: []string{"FAIL", "the homeserver could not fetch our metadata", "Fix: set matrix_authentication_service.endpoint"}},
		{name: "clock skew", vars: with(vars, "DEVICEGRANTD_HOMESERVER_ENDPOINT", otherHomeserver(t, d.base, 2*time.Minute)), check: "clock",
			want: []string{"FAIL", "the homeserver's clock is 2m0s ahead of ours", "Fix: enable time synchronisation"}},
	}
	for _, tc := range red {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				defer tc.setup(t)()
			}
			lines, out, err := doctorLines(t, tc.vars)
			if !errors.Is(err, errProblems) || exitCode(err) != 1 {
				t.Errorf("doctor returned %v; want a failure (exit 1)\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[tc.check], w) {
					t.Errorf("check %s: %q lacks %q\n%s", tc.check, lines[tc.check], w, out)
				}
			}
			for _, c := range tc.also {
				if !strings.HasPrefix(lines[c], "FAIL") {
					t.Errorf("check %s: %q; want it to fail too", c, lines[c])
				}
			}
			if n := strings.Count(out, "FAIL"); n != 1+len(tc.also) {
				t.Errorf("%d failures; want only %s and %v to fail\n%s", n, tc.check, tc.also, out)
			}
		})
	}
}

// otherHomeserver starts another fake Synapse with the shared secret,
// delegating to authEndpoint, with its clock off by skew.
func otherHomeserver(t *testing.T, authEndpoint string, skew time.Duration) string {
	t.Helper()
	return fakesynapse.Start(t, fakesynapse.Options{Secret: opsSecret, AuthEndpoint: authEndpoint, DateSkew: skew}).URL()
}

// TestDoctorUntrustedCertificate: a daemon serving TLS with a certificate
// this machine does not trust is reported as such, not as "not running".
func TestDoctorUntrustedCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := selfSigned(t, dir)
	vars := map[string]string{
		"DEVICEGRANTD_LISTEN":        freeAddr(t),
		"DEVICEGRANTD_DATABASE":      filepath.Join(dir, "d.db"),
		"DEVICEGRANTD_TLS_CERT_FILE": certFile,
		"DEVICEGRANTD_TLS_KEY_FILE":  keyFile,
		"DEVICEGRANTD_LOG_LEVEL":     "warn",
	}
	startDaemonWith(t, vars, func() bool {
		_, err := os.Stat(vars["DEVICEGRANTD_DATABASE"] + "-wal")
		return err == nil
	})
	waitFor(t, "the TLS listener", func() bool {
		lines, _, _ := doctorLines(t, vars)
		return !strings.Contains(lines["listener"], "nothing answers")
	})
	lines, out, err := doctorLines(t, vars)
	if !errors.Is(err, errProblems) {
		t.Errorf("doctor: %v\n%s", err, out)
	}
	for _, w := range []string{"FAIL", "answers with a certificate this machine does not trust", "Fix: serve a certificate from a public CA"} {
		if !strings.Contains(lines["listener"], w) {
			t.Errorf("listener: %q lacks %q", lines["listener"], w)
		}
	}
	if !strings.HasPrefix(lines["issuer"], "ok ") || strings.Count(out, "FAIL") != 1 {
		t.Errorf("want only the listener to fail:\n%s", out)
	}
}

// TestDoctorSilentPostgres: the doctor is what an operator runs when
// something is wrong, and a database host that accepts connections and
// then says nothing (a server hung, or half of a failover) must not hang
// it: the database check fails, with its fix, within seconds, and the
// other checks still run.
func TestDoctorSilentPostgres(t *testing.T) {
	vars := opsVars(t, t.TempDir(), nil)
	vars["DEVICEGRANTD_DATABASE"] = "postgres://dg@" + pgtest.SilentServer(t) + "/dg?sslmode=disable"
	began := time.Now()
	done := make(chan struct{})
	var lines map[string]string
	var out string
	go func() {
		defer close(done)
		lines, out, _ = doctorLines(t, vars)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the doctor still hangs after 30 s on a database that answers nothing")
	}
	t.Logf("the doctor took %v", time.Since(began).Round(time.Millisecond))
	if !strings.HasPrefix(lines["database"], "FAIL ") {
		t.Errorf("database check: %q, want FAIL\n%s", lines["database"], out)
	}
	if lines["listener"] == "" {
		t.Errorf("the checks after the database did not run\n%s", out)
	}
}

// TestDoctorPostgresSchema: on PostgreSQL the database check tells a
// schema not created yet, one behind this program and one newer apart,
// and each fix says what to do (issue 15): "devicegrantd migrate" (or
// starting the daemon) for the first two, this program's newer release
// for the last, rather than to check the URL and the connection, which
// work. The notices check runs whatever the schema.
func TestDoctorPostgresSchema(t *testing.T) {
	vars := opsVars(t, t.TempDir(), nil)
	db := pgtest.URL(t)
	vars["DEVICEGRANTD_DATABASE"] = db
	check := func(when, detail, fix string) {
		t.Helper()
		lines, out, err := doctorLines(t, vars)
		if err == nil {
			t.Errorf("%s: the doctor passed\n%s", when, out)
		}
		l := lines["database"]
		if !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, detail) || !strings.Contains(l, "Fix: "+fix) {
			t.Errorf("%s: database check %q, want a failure saying %q and %q", when, l, detail, "Fix: "+fix)
		}
		if !strings.HasPrefix(lines["notices"], "ok ") {
			t.Errorf("%s: notices check %q, want ok\n%s", when, lines["notices"], out)
		}
	}
	check("before the schema exists", "no devicegrant schema yet", "run devicegrantd migrate")

	if out, err := cli(t, vars, "", "migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	ctx := context.Background()
	_, latest, err := postgres.SchemaVersion(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	lines, out, _ := doctorLines(t, vars)
	if !strings.HasPrefix(lines["database"], "ok ") {
		t.Errorf("after migrate: database check %q, want ok\n%s", lines["database"], out)
	}

	cfg, err := pgxpool.ParseConfig(db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	setVersion := func(v int) {
		t.Helper()
		if _, err := conn.Exec(ctx, `UPDATE schema_version SET version = $1 WHERE id = 1`, v); err != nil {
			t.Fatal(err)
		}
	}
	setVersion(latest - 1)
	check("a version behind", fmt.Sprintf("version %d, this program's %d", latest-1, latest), "run devicegrantd migrate")
	setVersion(latest + 1)
	check("a version ahead", fmt.Sprintf("version %d is newer than this program knows (%d)", latest+1, latest), "run the newer devicegrantd")
}
