package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/devicegrant/devicegrant/store/internal/migration"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrate applies, in order and each in its own transaction, the embedded
// migrations newer than the database's user_version, and returns the
// version it found: the one under which it applied its first migration,
// or, when another process applied them all meanwhile, the last. Files are
// named NNNN_what.sql; NNNN becomes the user_version once the file is
// applied.
//
// Another process may migrate the same file at once (a second daemon, or
// "devicegrantd migrate" beside serve): each migration's transaction
// begins IMMEDIATE, so one process at a time holds the write lock, and
// reads the version again under it, skipping what the other applied
// while it waited.
func migrate(ctx context.Context, db *sql.DB) (int, error) {
	files, err := migration.List(migrations, "migrations")
	if err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	latest := migration.Latest(files)
	var before int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&before); err != nil {
		return 0, fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if before > latest {
		return before, fmt.Errorf("sqlite: database schema version %d is newer than this program knows (%d); upgrade devicegrantd", before, latest)
	}
	found := -1 // the version under which this process applied its first migration
	current := before
	for _, m := range files {
		if m.Version <= current {
			continue
		}
		applied, err := apply(ctx, db, m, &current)
		if err != nil {
			return before, err
		}
		if applied && found < 0 {
			found = current
		}
		if applied {
			current = m.Version
		}
	}
	if found < 0 {
		return current, nil
	}
	return found, nil
}

// apply runs one migration unless the database already has it; current
// becomes the version it found under the write lock.
func apply(ctx context.Context, db *sql.DB, m migration.File, current *int) (bool, error) {
	body, err := migrations.ReadFile(m.Path)
	if err != nil {
		return false, fmt.Errorf("sqlite: read migration %s: %w", m.Name, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
	}
	defer tx.Rollback() // after Commit, does nothing
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(current); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: read schema version: %w", m.Name, err)
	}
	if *current >= m.Version {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
	}
	// PRAGMA takes no bind parameters; version is an integer we parsed.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.Version)); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
	}
	return true, nil
}

// SchemaVersion reads the schema version of the database at path and the
// latest version this program's migrations make, changing nothing: a
// database that does not exist yet is at version 0.
func SchemaVersion(ctx context.Context, path string) (current, latest int, err error) {
	files, err := migration.List(migrations, "migrations")
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite: %w", err)
	}
	latest = migration.Latest(files)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return 0, latest, nil
	} else if err != nil {
		return 0, latest, fmt.Errorf("sqlite: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, latest, err
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: abs}).EscapedPath()+"?mode=ro&_query_only=1&_busy_timeout=10000")
	if err != nil {
		return 0, latest, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&current); err != nil {
		return 0, latest, fmt.Errorf("sqlite: read the schema version of %s: %w", path, err)
	}
	return current, latest, nil
}

// Migrate brings the database at path (created, mode 0600, when missing)
// to the current schema, as Open does, and returns its schema version
// before and after.
func Migrate(ctx context.Context, path string) (before, after int, err error) {
	writer, err := openWriter(path)
	if err != nil {
		return 0, 0, err
	}
	defer writer.Close()
	if before, err = migrate(ctx, writer); err != nil {
		return before, before, err
	}
	if err := writer.QueryRowContext(ctx, "PRAGMA user_version").Scan(&after); err != nil {
		return before, before, fmt.Errorf("sqlite: read schema version: %w", err)
	}
	return before, after, nil
}
