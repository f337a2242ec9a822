package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/devicegrant/devicegrant/store/internal/migration"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrate applies, in order and each in its own transaction, the embedded
// migrations newer than the schema's version. Files are named
// NNNN_what.sql, numbered as the SQLite backend's so that one number means
// one schema on both; schema_version holds the last one applied.
//
// Several instances may start at once: a session advisory lock, keyed on
// the schema, lets one migrate while the others wait and then find
// nothing left to do. The lock goes with the connection, which is closed
// at the end whatever happens. It returns the version it found.
func migrate(ctx context.Context, cfg *pgx.ConnConfig) (int, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("postgres: connect: %w", err)
	}
	defer conn.Close(context.Background())

	var schema pgtype.Text
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return 0, fmt.Errorf("postgres: read current schema: %w", err)
	}
	if !schema.Valid {
		return 0, errors.New("postgres: no schema on the search_path exists; create it, or fix search_path in the URL")
	}
	h := fnv.New64a()
	h.Write([]byte("devicegrant migrations " + schema.String))
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(h.Sum64())); err != nil {
		return 0, fmt.Errorf("postgres: lock for migrations: %w", err)
	}

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)`); err != nil {
		return 0, fmt.Errorf("postgres: create schema_version: %w", err)
	}
	var current int
	err = conn.QueryRow(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&current)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: read schema version: %w", err)
	}

	files, err := migration.List(migrations, "migrations")
	if err != nil {
		return 0, fmt.Errorf("postgres: %w", err)
	}
	latest := migration.Latest(files)
	for _, f := range files {
		version, base := f.Version, f.Name
		if version <= current {
			continue
		}
		body, err := migrations.ReadFile(f.Path)
		if err != nil {
			return 0, fmt.Errorf("postgres: read migration %s: %w", base, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: the simple protocol runs the file's
			// statements as one batch.
			if _, err := tx.Exec(ctx, string(body), pgx.QueryExecModeSimpleProtocol); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_version (id, version) VALUES (1, $1)
				ON CONFLICT (id) DO UPDATE SET version = excluded.version`, version)
			return err
		})
		if err != nil {
			return current, fmt.Errorf("postgres: migration %s: %w", base, err)
		}
	}
	if current > latest {
		return current, fmt.Errorf("postgres: database schema version %d is newer than this program knows (%d); upgrade devicegrantd", current, latest)
	}
	return current, nil
}

// Migrate connects to the database at url and brings its schema up to
// date, as Open does (under the same lock, so beside instances that are
// starting), and returns its schema version before and after.
func Migrate(ctx context.Context, url string) (before, after int, err error) {
	cfg, err := parseURL(url)
	if err != nil {
		return 0, 0, err
	}
	latest, err := latestVersion()
	if err != nil {
		return 0, 0, err
	}
	if before, err = migrate(ctx, cfg.ConnConfig); err != nil {
		return before, before, err
	}
	return before, latest, nil
}

// latestVersion is the schema version the embedded migrations make.
func latestVersion() (int, error) {
	files, err := migration.List(migrations, "migrations")
	if err != nil {
		return 0, fmt.Errorf("postgres: %w", err)
	}
	return migration.Latest(files), nil
}

// SchemaVersion connects to the database at url and reads its schema
// version (0 when it has no devicegrant schema yet) and the latest
// version this program's migrations make, changing nothing.
func SchemaVersion(ctx context.Context, url string) (current, latest int, err error) {
	cfg, err := parseURL(url)
	if err != nil {
		return 0, 0, err
	}
	if latest, err = latestVersion(); err != nil {
		return 0, 0, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return 0, latest, fmt.Errorf("postgres: connect: %w", err)
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&current)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "42P01", errors.Is(err, pgx.ErrNoRows): // undefined_table
		return 0, latest, nil
	case err != nil:
		return 0, latest, fmt.Errorf("postgres: read schema version: %w", err)
	}
	return current, latest, nil
}
