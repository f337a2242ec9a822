// Package sqlite is the SQLite backend of store: one database file in WAL
// mode, with foreign keys on and embedded, versioned migrations.
//
// Writes go through a single connection that opens every transaction with
// BEGIN IMMEDIATE, so transactions from this process never deadlock on lock
// upgrades and run one at a time; reads use a separate pool and see the last
// committed state (WAL lets them run beside the writer).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/devicegrant/devicegrant/store"
)

// Store is a store.Store on one SQLite file. Open it with Open.
type Store struct {
	queries
	writer *sql.DB
	reader *sql.DB
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it with mode 0600 when missing) the database at path
// and brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	// Create the file ourselves so that it, and the -wal and -shm files
	// SQLite derives from it, are private to the daemon's user.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: create database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: create database file: %w", err)
	}

	base := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_journal_mode=WAL&_foreign_keys=1&_busy_timeout=10000&_synchronous=FULL"
	writer, err := sql.Open("sqlite3", base+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetConnMaxLifetime(0)
	if err := migrate(ctx, writer); err != nil {
		writer.Close()
		return nil, err
	}
	reader, err := sql.Open("sqlite3", base+"&_query_only=1")
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	reader.SetMaxOpenConns(8)
	reader.SetMaxIdleConns(8)
	if err := reader.PingContext(ctx); err != nil {
		writer.Close()
		reader.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return &Store{queries: queries{db: reader}, writer: writer, reader: reader}, nil
}

// Update runs fn in one IMMEDIATE transaction on the writer connection.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.update(ctx, fn)
		// Another process (say, "devicegrantd user add" beside a running
		// daemon) can hold the lock past the busy timeout; try again a
		// few times before giving up.
		if isBusy(err) && attempt < 3 && ctx.Err() == nil {
			continue
		}
		return err
	}
}

func (s *Store) update(ctx context.Context, fn func(store.Tx) error) error {
	sqlTx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	if err := fn(&tx{queries{db: sqlTx}}); err != nil {
		sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

// Close closes both connection pools.
func (s *Store) Close() error {
	return errors.Join(s.reader.Close(), s.writer.Close())
}

func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

// mapErr turns driver errors into the store's sentinel errors.
func mapErr(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrConstraint &&
		(se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey) {
		return fmt.Errorf("%w: %v", store.ErrAlreadyExists, err)
	}
	return err
}

// ms encodes a time as Unix milliseconds, and the zero time as NULL.
func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// nullTime decodes what ms encoded.
type nullTime struct{ t *time.Time }

func (n nullTime) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*n.t = time.Time{}
	case int64:
		*n.t = time.UnixMilli(v)
	default:
		return fmt.Errorf("sqlite: time column holds %T", v)
	}
	return nil
}

func nt(t *time.Time) nullTime { return nullTime{t} }
