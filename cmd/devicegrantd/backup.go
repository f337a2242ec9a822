package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres"
)

const backupUsage = `Usage: devicegrantd backup FILE [--config FILE]

Writes a consistent copy of the database to FILE while the daemon keeps
serving (SQLite's VACUUM INTO: one read transaction, writers go on). FILE
must not exist; it is created mode 0600 (it holds password and token
hashes) and checked with PRAGMA integrity_check before this command
reports success.

To restore: stop the daemon, put the copy in place of the database file
(removing any -wal and -shm files beside the old one), keep it owned by the
daemon's user with mode 0600, and start the daemon again.

For a PostgreSQL database (database: postgres://...) use PostgreSQL's own
tools instead: pg_dump, or continuous archiving.
`

func backupCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	a, err := parseAdmin("backup", backupUsage, args, stderr, getenv, nil)
	if err != nil {
		return err
	}
	if len(a.args) != 1 {
		fmt.Fprint(stderr, backupUsage)
		return errUsage
	}
	if postgres.IsURL(a.cfg.Database) {
		// Connecting is pointless: PostgreSQL's own tools back it up.
		return errors.New("the database is PostgreSQL: back it up with its own tools (pg_dump, or continuous archiving), not this command")
	}
	// Opening would create an empty database; a backup of that helps no one.
	if _, err := os.Stat(a.cfg.Database); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	st, err := openStore(ctx, a.cfg.Database)
	if err != nil {
		return err
	}
	defer st.Close()
	b, ok := st.(store.Backuper)
	if !ok {
		return errors.New("this database has no online backup here; use its own tools (pg_dump for PostgreSQL)")
	}
	if err := b.Backup(ctx, a.args[0]); err != nil {
		return err
	}
	fi, err := os.Stat(a.args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backed up %s to %s (%d bytes, mode %v, integrity ok)\n", a.cfg.Database, a.args[0], fi.Size(), fi.Mode().Perm())
	return nil
}
