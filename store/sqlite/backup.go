package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/devicegrant/devicegrant/store"
)

var _ store.Backuper = (*Store)(nil)

// Backup copies the live database to path with VACUUM INTO: one read
// transaction, so the copy is consistent even while another process (the
// running daemon) writes, and writers are not blocked (WAL). The copy is
// created mode 0600 before SQLite writes into it, fsynced, and checked with
// PRAGMA integrity_check; on any failure it is removed. Its leases are
// emptied (see clearLeases). A restore is
// "stop the daemon, put the copy in place of the database, start it".
func (s *Store) Backup(ctx context.Context, path string) (err error) {
	if path == "" {
		return errors.New("sqlite: backup: empty path")
	}
	// SQLite writes into an empty file; creating it ourselves, exclusively,
	// fixes its mode whatever the umask and never overwrites anything.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
			os.Remove(path + "-journal")
		}
	}()
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	// The reader pool is query_only, which forbids VACUUM INTO; the writer
	// connection reads the source in a plain read transaction.
	if _, err := s.writer.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("sqlite: backup to %s: %w", path, err)
	}
	if err := clearLeases(ctx, path); err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	if err := syncFile(path); err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	if err := Check(ctx, path); err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	return nil
}

// clearLeases empties the copy's leases. They name the processes running
// now; kept, they would make a daemon started on the restored copy
// believe that another instance synced the homeserver lately and skip
// the sync at start, which is what repairs the devices the restore
// brought back or forgot.
func clearLeases(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `DELETE FROM leases`); err != nil {
		return fmt.Errorf("clear the copy's leases: %w", err)
	}
	return db.Close()
}

// Check opens the database at path read-only and runs PRAGMA
// integrity_check on it.
func Check(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: abs}).EscapedPath()+"?mode=ro&_query_only=1")
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("integrity check of %s: %w", path, err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("integrity check of %s failed: %s", path, strings.Join(problems, "; "))
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
