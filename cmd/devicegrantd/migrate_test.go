package main

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// TestMigrateCommand: "migrate --check" changes nothing and fails while
// migrations are pending (a database not created yet, or one a version
// behind), "migrate" applies them and says from which version to which,
// a second run has nothing to do, and a daemon then serves on the
// database with an account it holds. A schema newer than the program is
// refused by both (issue 15).
func TestMigrateCommand(t *testing.T) {
	dir := t.TempDir()
	vars := opsVars(t, dir, nil)
	db := vars["DEVICEGRANTD_DATABASE"]

	out, err := cli(t, vars, "", "migrate", "--check")
	if !errors.Is(err, errPending) || !strings.Contains(out, "no schema yet") || !strings.Contains(out, "migrations pending") {
		t.Errorf("migrate --check before the database exists: %v\n%s", err, out)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("migrate --check created the database (%v)", err)
	}
	out, err = cli(t, vars, "", "migrate")
	if err != nil || !strings.Contains(out, "schema version 0 before, 7 after") {
		t.Fatalf("migrate of a new database: %v\n%s", err, out)
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the new database: %v %v, want mode 0600", fi, err)
	}
	out, err = cli(t, vars, "", "migrate")
	if err != nil || !strings.Contains(out, "up to date; nothing to apply") {
		t.Errorf("migrate again: %v\n%s", err, out)
	}
	if out, err = cli(t, vars, "", "migrate", "--check"); err != nil || !strings.Contains(out, "schema version 7, up to date") {
		t.Errorf("migrate --check when current: %v\n%s", err, out)
	}
	addAlice(t, vars)

	// A database one version behind, as the previous release left it.
	sqlDB := func(query string) {
		t.Helper()
		conn, err := sql.Open("sqlite3", db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Exec(query); err != nil {
			t.Fatal(err)
		}
	}
	sqlDB(`DROP TABLE leases; PRAGMA user_version = 6`)
	out, err = cli(t, vars, "", "migrate", "--check")
	if !errors.Is(err, errPending) || !strings.Contains(out, "schema version 6, this program's 7") {
		t.Errorf("migrate --check a version behind: %v\n%s", err, out)
	}
	if out, err = cli(t, vars, "", "migrate"); err != nil || !strings.Contains(out, "schema version 6 before, 7 after") {
		t.Fatalf("migrate a version behind: %v\n%s", err, out)
	}
	d := startDaemonCtl(t, vars)
	if !signInPhone(t, d.base, devtest.NewPhone(t), devtest.Password) {
		t.Error("after the migration alice cannot sign in")
	}
	d.stop()

	sqlDB(`PRAGMA user_version = 99`)
	for _, args := range [][]string{{"migrate", "--check"}, {"migrate"}} {
		out, err := cli(t, vars, "", args...)
		if err == nil || errors.Is(err, errPending) || !strings.Contains(err.Error(), "newer") {
			t.Errorf("%v on a newer schema: %v\n%s", args, err, out)
		}
	}
	if out, err := cli(t, vars, "", "migrate", "extra"); !errors.Is(err, errUsage) {
		t.Errorf("migrate with an argument: %v\n%s", err, out)
	}
}

// TestMigrateTogether: "devicegrantd migrate" run by several processes at
// once on a new SQLite database (real processes of the built binary) and,
// in this process, by several goroutines on a new PostgreSQL schema: every
// one succeeds, exactly one applies the migrations, and the others find
// the schema current (issue 15: instances that start at once).
func TestMigrateTogether(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devicegrantd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const n = 4
	check := func(backend string, outs []string, errs []error) {
		t.Helper()
		applied := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: migrate %d: %v\n%s", backend, i, err, outs[i])
			}
			switch {
			case strings.Contains(outs[i], "schema version 0 before, 7 after"):
				applied++
			case !strings.Contains(outs[i], "schema version 7, up to date; nothing to apply"):
				t.Errorf("%s: migrate %d said:\n%s", backend, i, outs[i])
			}
		}
		if applied != 1 {
			t.Errorf("%s: %d of %d concurrent migrate runs applied the migrations, want 1:\n%s", backend, applied, n, strings.Join(outs, ""))
		}
	}

	db := filepath.Join(dir, "together.db")
	outs, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(bin, "migrate")
			cmd.Env = append(os.Environ(), "DEVICEGRANTD_DATABASE="+db)
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}()
	}
	wg.Wait()
	check("SQLite", outs, errs)

	vars := map[string]string{"DEVICEGRANTD_DATABASE": pgtest.URL(t)}
	if out, err := cli(t, vars, "", "migrate", "--check"); !errors.Is(err, errPending) {
		t.Errorf("migrate --check on a new PostgreSQL schema: %v\n%s", err, out)
	}
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var out strings.Builder
			errs[i] = run(context.Background(), []string{"migrate"}, strings.NewReader(""), &out, &out, env(vars))
			outs[i] = out.String()
		}()
	}
	close(start)
	wg.Wait()
	check("PostgreSQL", outs, errs)
	if out, err := cli(t, vars, "", "migrate", "--check"); err != nil || !strings.Contains(out, "up to date") {
		t.Errorf("migrate --check after the migration: %v\n%s", err, out)
	}
}
