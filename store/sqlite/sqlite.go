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
	"sync"
	"sync/atomic"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/devicegrant/devicegrant/store"
)

// Store is a store.Store on one SQLite file. Open it with Open.
type Store struct {
	queries
	writer *sql.DB
	reader *sql.DB

	writes  chan *write   // Update's requests, for the write loop
	commits atomic.Uint64 // transactions committed
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the write loop has ended
	once    sync.Once
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it with mode 0600 when missing) the database at path
// and brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	writer, err := openWriter(path)
	if err != nil {
		return nil, err
	}
	if _, err := migrate(ctx, writer); err != nil {
		writer.Close()
		return nil, err
	}
	reader, err := sql.Open("sqlite3", dsn(path)+"&_query_only=1")
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
	s := &Store{queries: queries{db: reader, hot: &hotStatements{db: reader}}, writer: writer, reader: reader,
		writes: make(chan *write), stop: make(chan struct{}), done: make(chan struct{})}
	go s.writeLoop()
	return s, nil
}

// dsn is the driver's name for the database at path, with the settings
// every connection needs.
//
// synchronous=FULL: a commit is on disk (fsync of the WAL) before
// Update returns, so every token or code a client receives survives a
// crash or a power cut. Group commit (see writeLoop) is what makes
// that affordable.
func dsn(path string) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_journal_mode=WAL&_foreign_keys=1&_busy_timeout=10000&_synchronous=FULL"
}

// openWriter creates the database file when missing and opens the one
// connection that writes.
func openWriter(path string) (*sql.DB, error) {
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
	writer, err := sql.Open("sqlite3", dsn(path)+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetConnMaxLifetime(0)
	return writer, nil
}

// write is one Update waiting for the write loop. The loop lends the
// caller its transaction (turn) and the caller runs fn on its own
// goroutine, so a panic or t.Fatal in fn stays where it belongs.
type write struct {
	ctx    context.Context
	turn   chan *sql.Tx // the loop lends the transaction: run fn now
	ran    chan ran     // the caller says how fn went
	result chan error   // the final answer, after the commit
	gone   bool         // the caller left (fn panicked or exited): never lend again
}

// ran is how one run of fn went.
type ran struct {
	err  error
	gone bool // fn panicked or called runtime.Goexit; the caller is leaving
}

// maxBatch bounds how many Updates share one commit.
const maxBatch = 256

// errClosed is what Update returns once the store is closed.
var errClosed = errors.New("sqlite: store closed")

// Update runs fn in a write transaction. Updates from concurrent callers
// share one transaction and one commit (group commit): each runs inside a
// savepoint of its own, in turn, so it sees the writes of those before it,
// and a failing fn rolls back only its own writes. Every caller is
// answered after the commit that made its writes durable. When the batch
// cannot commit, each fn runs again in a transaction of its own: fn must
// have no effect outside tx (the store.Store contract), so running it
// again is safe.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	w := &write{ctx: ctx, turn: make(chan *sql.Tx), ran: make(chan ran, 1), result: make(chan error, 1)}
	select {
	case s.writes <- w:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return errClosed
	}
	for {
		select {
		case sqlTx := <-w.turn:
			w.ran <- runFn(w, sqlTx, fn)
		case err := <-w.result:
			return err
		}
	}
}

// runFn runs fn on the caller's goroutine. If fn panics or exits the
// goroutine, the loop is told before the panic goes on.
func runFn(w *write, sqlTx *sql.Tx, fn func(store.Tx) error) (r ran) {
	normal := false
	defer func() {
		if !normal {
			w.ran <- ran{err: errors.New("sqlite: Update function did not return"), gone: true}
		}
	}()
	r.err = fn(&tx{queries{db: sqlTx}})
	normal = true
	return r
}

// writeLoop owns the writer connection: it takes the Updates waiting,
// runs them in one transaction and commits once. While one batch commits
// (the fsync), the next gathers.
func (s *Store) writeLoop() {
	defer close(s.done)
	batch := make([]*write, 0, maxBatch)
	for {
		select {
		case w := <-s.writes:
			batch = append(batch[:0], w)
		case <-s.stop:
			return
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
			default:
				break gather
			}
		}
		s.runBatch(batch)
	}
}

// runBatch runs a batch in one transaction, or, when that transaction
// fails as a whole, each of its writes in a transaction of its own.
func (s *Store) runBatch(batch []*write) {
	if len(batch) > 1 {
		results, err := s.commitBatch(batch)
		if err == nil {
			for i, w := range batch {
				w.result <- results[i]
			}
			return
		}
	}
	for _, w := range batch {
		switch {
		case w.gone:
			w.result <- errors.New("sqlite: Update function did not return")
		case w.ctx.Err() != nil:
			w.result <- w.ctx.Err()
		default:
			w.result <- s.updateAlone(w)
		}
	}
}

// lend hands the transaction to w's caller and waits until fn is done.
func lend(w *write, sqlTx *sql.Tx) error {
	w.turn <- sqlTx
	r := <-w.ran
	w.gone = w.gone || r.gone
	return r.err
}

// commitBatch runs every write of the batch in a savepoint of one
// transaction and commits it. It returns each write's own result, or an
// error when the transaction failed as a whole (then nothing committed).
func (s *Store) commitBatch(batch []*write) ([]error, error) {
	ctx := context.Background() // one caller's cancellation must not end the others' transaction
	sqlTx, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	results := make([]error, len(batch))
	for i, w := range batch {
		if w.ctx.Err() != nil {
			results[i] = w.ctx.Err()
			continue
		}
		if _, err := sqlTx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			sqlTx.Rollback()
			return nil, err
		}
		results[i] = lend(w, sqlTx)
		end := "RELEASE w"
		if results[i] != nil {
			end = "ROLLBACK TO w; RELEASE w"
		}
		// This fails when the whole transaction was rolled back under
		// us (an interrupted statement, a full disk): then the batch
		// runs again, write by write.
		if _, err := sqlTx.ExecContext(ctx, end); err != nil {
			sqlTx.Rollback()
			return nil, err
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	s.commits.Add(1)
	return results, nil
}

// updateAlone runs one write in a transaction of its own.
func (s *Store) updateAlone(w *write) error {
	sqlTx, err := s.begin(w.ctx)
	if err != nil {
		return err
	}
	if err := lend(w, sqlTx); err != nil {
		sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	s.commits.Add(1)
	return nil
}

// Commits returns how many write transactions were committed. With group
// commit it grows slower than the number of Updates; metrics and tests
// read it.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// begin opens an IMMEDIATE transaction on the writer connection. Another
// process (say, "devicegrantd user add" beside a running daemon) can hold
// the lock past the busy timeout; it tries again a few times before
// giving up.
func (s *Store) begin(ctx context.Context) (*sql.Tx, error) {
	for attempt := 0; ; attempt++ {
		sqlTx, err := s.writer.BeginTx(ctx, nil)
		if err == nil {
			return sqlTx, nil
		}
		if !isBusy(err) || attempt >= 3 || ctx.Err() != nil {
			return nil, fmt.Errorf("sqlite: begin: %w", err)
		}
	}
}

// Close stops the write loop, once the batch it runs is done, and closes
// both connection pools. Updates after Close fail.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return errors.Join(s.hot.close(), s.reader.Close(), s.writer.Close())
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

// optionalText decodes an optional text column: NULL is "".
type optionalText struct{ s *string }

func (n optionalText) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*n.s = ""
	case string:
		*n.s = v
	case []byte:
		*n.s = string(v)
	default:
		return fmt.Errorf("sqlite: text column holds %T", v)
	}
	return nil
}

// nulls is how rowscan scans nullable columns through database/sql.
type nulls struct{}

func (nulls) Time(t *time.Time) any { return nt(t) }
func (nulls) String(s *string) any  { return optionalText{s} }
