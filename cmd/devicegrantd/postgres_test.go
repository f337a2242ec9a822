package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// TestServeOnPostgres: with database set to a postgres:// URL the daemon
// and the admin commands share that database (issue 15): an account added
// on the command line signs a device in through a complete device flow
// (P-DEV-1..6) with golang.org/x/oauth2, the token is active at
// introspection, "session end" revokes it for the very next
// introspection, and "backup" points at pg_dump instead of copying.
func TestServeOnPostgres(t *testing.T) {
	vars := opsVars(t, t.TempDir(), nil)
	vars["DEVICEGRANTD_DATABASE"] = pgtest.URL(t)
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	if !strings.Contains(d.log.String(), "postgres") {
		t.Errorf("the welcome does not name the database:\n%s", d.log.String())
	}
	phone := devtest.NewPhone(t)
	token := signInDevice(t, d.base, "PGKIOSK001", phone)
	if !introspect(t, d.base, token) {
		t.Fatal("a fresh token is inactive")
	}
	if out, err := cli(t, vars, "", "session", "end", "--device", "PGKIOSK001", "--user", devtest.Username); err != nil {
		t.Fatalf("session end: %v %s", err, out)
	}
	if introspect(t, d.base, token) {
		t.Error("the token of an ended session is still active")
	}
	out, err := cli(t, vars, "", "backup", t.TempDir()+"/b.db")
	if err == nil || !strings.Contains(err.Error()+out, "pg_dump") {
		t.Errorf("backup of a PostgreSQL database = %v %s; want a pointer to pg_dump", err, out)
	}
	if out, err := cli(t, vars, "", "doctor"); !strings.Contains(out, "reachable and its schema up to date") {
		t.Errorf("doctor: %v\n%s", err, out)
	}
}

// TestWelcomeMasksThePassword: the database URL is shown without its
// password, whether it is in the user information or in pgx's password
// query parameter.
func TestWelcomeMasksThePassword(t *testing.T) {
	got := shownDatabase("postgres://dg:s3cr3t@db.example.org/dg?sslmode=require")
	if strings.Contains(got, "s3cr3t") || !strings.Contains(got, "db.example.org") {
		t.Errorf("shownDatabase = %q", got)
	}
	for _, u := range []string{
		"postgres:///dg?host=/run/postgresql&user=dg&password=s3cr3t&sslmode=disable",
		"postgresql://db.example.org/dg?PASSWORD=s3cr3t",
		"postgres://db.example.org/dg?pass%77ord=s3cr3t",
	} {
		got := shownDatabase(u)
		if strings.Contains(got, "s3cr3t") {
			t.Errorf("shownDatabase(%q) = %q, showing the password", u, got)
		}
		if !strings.Contains(got, "/dg?") {
			t.Errorf("shownDatabase(%q) = %q, no longer naming the database", u, got)
		}
	}
	if got, want := shownDatabase("postgres:///dg?host=/run/postgresql&password=s3cr3t&sslmode=disable"),
		"postgres:///dg?host=/run/postgresql&password=xxxxx&sslmode=disable"; got != want {
		t.Errorf("shownDatabase = %q, want %q (the other parameters as they were)", got, want)
	}
	if got := shownDatabase("./devicegrantd.db"); got != "./devicegrantd.db" {
		t.Errorf("shownDatabase of a path = %q", got)
	}
}

// TestPasswordInTheURLQueryNotShown: PostgreSQL URLs may carry the
// password as a query parameter (?password=..., as libpq and pgx take it)
// rather than before the host; the daemon's log and what migrate,
// migrate --check, doctor and migrate-data print name the database
// without it, as they do a password before the host. (The server here
// trusts the socket, so it accepts the connection whatever the password.)
func TestPasswordInTheURLQueryNotShown(t *testing.T) {
	const secret = "Hunter2InTheQuery"
	vars := opsVars(t, t.TempDir(), nil)
	vars["DEVICEGRANTD_DATABASE"] = pgtest.URL(t) + "&password=" + secret + "&sslpassword=" + secret
	vars["DEVICEGRANTD_LOG_LEVEL"] = "info"
	var shown []string
	for _, args := range [][]string{{"migrate"}, {"migrate", "--check"}, {"doctor"}} {
		out, _ := cli(t, vars, "", args...)
		shown = append(shown, strings.Join(args, " ")+":\n"+out)
	}
	out, _ := cli(t, vars, "", "migrate-data", "--from", t.TempDir()+"/none.db", "--to", vars["DEVICEGRANTD_DATABASE"])
	shown = append(shown, "migrate-data:\n"+out)
	d := startDaemonCtl(t, vars)
	d.stop()
	shown = append(shown, "serve:\n"+d.log.String())
	for _, s := range shown {
		if strings.Contains(s, secret) {
			t.Errorf("the password shows:\n%s", s)
		}
	}
	if !strings.Contains(shown[len(shown)-1], "postgres") {
		t.Errorf("the welcome does not name the database:\n%s", shown[len(shown)-1])
	}
}

// TestMigrateData: "migrate-data" moves the database of a daemon that ran
// on SQLite into PostgreSQL (issue 15); a daemon started on PostgreSQL
// then knows the account and the device's token is active at
// introspection (P-INT-1). A second move into the same database is
// refused as not empty, and missing flags are a usage error.
func TestMigrateData(t *testing.T) {
	dir := t.TempDir()
	vars := opsVars(t, dir, nil)
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	token := signInDevice(t, d.base, "MOVEKIOSK1", devtest.NewPhone(t))
	d.stop()

	pgURL := pgtest.URL(t)
	out, err := cli(t, vars, "", "migrate-data", "--from", vars["DEVICEGRANTD_DATABASE"], "--to", pgURL)
	if err != nil {
		t.Fatalf("migrate-data: %v\n%s", err, out)
	}
	if !strings.Contains(out, "every row verified") || !strings.Contains(out, "users 1") || !strings.Contains(out, "token_pairs 1") {
		t.Errorf("migrate-data does not say what it moved:\n%s", out)
	}
	out, err = cli(t, vars, "", "migrate-data", "--from", vars["DEVICEGRANTD_DATABASE"], "--to", pgURL)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a second move into the same database: %v\n%s", err, out)
	}
	if _, err := cli(t, vars, "", "migrate-data", "--from", vars["DEVICEGRANTD_DATABASE"]); !errors.Is(err, errUsage) {
		t.Errorf("migrate-data without --to: %v, want a usage error", err)
	}
	if out, err := cli(t, vars, "", "migrate-data", "--help"); err != nil || !strings.Contains(out, "every row") {
		t.Errorf("migrate-data --help: %v\n%s", err, out)
	}

	pgVars := opsVars(t, dir, nil)
	pgVars["DEVICEGRANTD_DATABASE"] = pgURL
	if out, err := cli(t, pgVars, "", "user", "list"); err != nil || !strings.Contains(out, "@"+devtest.Username+":") {
		t.Errorf("user list on PostgreSQL after the move: %v\n%s", err, out)
	}
	pg := startDaemonCtl(t, pgVars)
	if !introspect(t, pg.base, token) {
		t.Error("a token issued on SQLite is inactive on PostgreSQL after the move")
	}
}
