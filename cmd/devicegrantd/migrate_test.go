package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
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
	files := sqliteMigrations(t)
	latest := files[len(files)-1].version
	previous := files[len(files)-2].version

	out, err := cli(t, vars, "", "migrate", "--check")
	if !errors.Is(err, errPending) || !strings.Contains(out, "no schema yet") || !strings.Contains(out, "migrations pending") {
		t.Errorf("migrate --check before the database exists: %v\n%s", err, out)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("migrate --check created the database (%v)", err)
	}
	out, err = cli(t, vars, "", "migrate")
	if err != nil || !strings.Contains(out, fmt.Sprintf("schema version 0 before, %d after", latest)) {
		t.Fatalf("migrate of a new database: %v\n%s", err, out)
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the new database: %v %v, want mode 0600", fi, err)
	}
	out, err = cli(t, vars, "", "migrate")
	if err != nil || !strings.Contains(out, "up to date; nothing to apply") {
		t.Errorf("migrate again: %v\n%s", err, out)
	}
	if out, err = cli(t, vars, "", "migrate", "--check"); err != nil || !strings.Contains(out, fmt.Sprintf("schema version %d, up to date", latest)) {
		t.Errorf("migrate --check when current: %v\n%s", err, out)
	}

	// A database one version behind, as the previous release left it:
	// every migration but the last, applied as the backend does.
	behind := filepath.Join(dir, "behind.db")
	conn, err := sql.Open("sqlite3", behind)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range files[:len(files)-1] {
		if _, err := conn.Exec(m.body); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
	if _, err := conn.Exec(fmt.Sprintf("PRAGMA user_version = %d", previous)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	vars["DEVICEGRANTD_DATABASE"] = behind
	out, err = cli(t, vars, "", "migrate", "--check")
	if !errors.Is(err, errPending) || !strings.Contains(out, fmt.Sprintf("schema version %d, this program's %d", previous, latest)) {
		t.Errorf("migrate --check a version behind: %v\n%s", err, out)
	}
	if out, err = cli(t, vars, "", "migrate"); err != nil || !strings.Contains(out, fmt.Sprintf("schema version %d before, %d after", previous, latest)) {
		t.Fatalf("migrate a version behind: %v\n%s", err, out)
	}
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	if !signInPhone(t, d.base, devtest.NewPhone(t), devtest.Password) {
		t.Error("after the migration alice cannot sign in")
	}
	d.stop()

	conn, err = sql.Open("sqlite3", behind)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(`PRAGMA user_version = 9999`); err != nil {
		t.Fatal(err)
	}
	conn.Close()
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
// one succeeds and none applies a migration another applied (which would
// fail: the tables exist). On PostgreSQL one run applies them all under
// the advisory lock and the others find the schema current; on SQLite the
// runs may take turns migration by migration (issue 15: instances that
// start at once).
func TestMigrateTogether(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devicegrantd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	files := sqliteMigrations(t)
	latest := files[len(files)-1].version
	const n = 4
	// check: every run succeeded, one found the schema empty, and the
	// others found it current or, on SQLite, where each migration is a
	// transaction of its own and runs take turns migration by migration,
	// part way.
	check := func(backend string, outs []string, errs []error, partWay bool) {
		t.Helper()
		fromEmpty := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: migrate %d: %v\n%s", backend, i, err, outs[i])
				continue
			}
			var before, after int
			switch {
			case strings.Contains(outs[i], fmt.Sprintf("schema version %d, up to date; nothing to apply", latest)):
			case !strings.Contains(outs[i], "before,"):
				t.Errorf("%s: migrate %d said:\n%s", backend, i, outs[i])
			default:
				if _, err := fmt.Sscanf(outs[i][strings.Index(outs[i], "schema version"):], "schema version %d before, %d after", &before, &after); err != nil || after != latest {
					t.Errorf("%s: migrate %d said:\n%s", backend, i, outs[i])
				}
				if before == 0 {
					fromEmpty++
				} else if !partWay {
					t.Errorf("%s: migrate %d started from version %d: the runs did not take turns for the whole migration", backend, i, before)
				}
			}
		}
		if fromEmpty != 1 {
			t.Errorf("%s: %d of %d concurrent migrate runs found the schema empty, want 1:\n%s", backend, fromEmpty, n, strings.Join(outs, ""))
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
	check("SQLite", outs, errs, true)

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
	check("PostgreSQL", outs, errs, false)
	if out, err := cli(t, vars, "", "migrate", "--check"); err != nil || !strings.Contains(out, "up to date") {
		t.Errorf("migrate --check after the migration: %v\n%s", err, out)
	}
}

// migrationFile is one of the SQLite backend's migrations, read from the
// source tree.
type migrationFile struct {
	name    string
	version int
	body    string
}

// sqliteMigrations reads the SQLite backend's migrations, in order, so
// that these tests follow when one is added (PostgreSQL's are numbered
// alike).
func sqliteMigrations(t *testing.T) []migrationFile {
	t.Helper()
	names, err := filepath.Glob("../../store/sqlite/migrations/*.sql")
	if err != nil || len(names) < 2 {
		t.Fatalf("the SQLite migrations: %v %v", names, err)
	}
	sort.Strings(names)
	var out []migrationFile
	for _, name := range names {
		base := filepath.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		body, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, migrationFile{name: base, version: v, body: string(body)})
	}
	return out
}
