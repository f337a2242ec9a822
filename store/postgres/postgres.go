// Package postgres is the PostgreSQL backend of store, on pgx: a pool of
// connections to one database that several devicegrantd instances may
// share, with embedded, versioned migrations.
//
// Update runs its function in a SERIALIZABLE transaction, so that the
// read-check-write transactions package devicegrant relies on (a device
// code redeemed once, a refresh token rotated once) stay correct when
// they race on different connections or instances. PostgreSQL answers
// such a race with a serialization failure; Update then runs the function
// again, which the store.Store contract allows.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/devicegrant/devicegrant/store"
)

// Store is a store.Store on a PostgreSQL database. Open it with Open.
type Store struct {
	queries
	pool    *pgxpool.Pool
	retries atomic.Uint64 // transactions run again after a serialization failure or deadlock
	epochs  *epochReader  // TokenEpoch's shared reads
	notify  notifier      // where announcements go (notify.go)
}

var (
	_ store.Store     = (*Store)(nil)
	_ store.Watcher   = (*Store)(nil)
	_ store.Announcer = (*tx)(nil)
)

// IsURL tells whether a database setting names a PostgreSQL database
// (a postgres:// or postgresql:// URL) rather than a SQLite file.
func IsURL(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// Open connects to the database at url (postgres://user:pass@host/db?…,
// with pgx's parameters such as sslmode, search_path or pool_max_conns)
// and brings its schema up to date. Several processes may open the same
// database at once: migrations run under an advisory lock.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	if _, err := migrate(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	n, err := newNotifier(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{queries: queries{db: pooled{pool}}, pool: pool, notify: n}
	s.epochs = newEpochReader(s.queries.TokenEpoch)
	return s, nil
}

// connectTimeout bounds connecting (TCP, TLS, authentication) when the
// URL sets no connect_timeout. Without it a host that accepts connections
// and then says nothing (a server hung, half of a failover) holds serve,
// migrate and the admin commands until TCP gives up, many minutes later;
// a healthy server connects in milliseconds, a loaded one over a WAN in
// well under a second.
const connectTimeout = 10 * time.Second

// parseURL parses a database URL with the pool's parser, which knows
// pool_max_conns and the like (settings the server would refuse), and
// bounds connecting by connectTimeout unless the URL says otherwise.
func parseURL(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The error may quote the URL, password included.
		return nil, errors.New("postgres: the database URL does not parse")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	return cfg, nil
}

// TokenEpoch reads the token epoch (store.Reader): always a read that
// began after the call, so it reflects every transaction committed before
// the call, but one shared by the calls that arrived while the previous
// read was under way (epoch.go). Introspection reads it on every request,
// and here each read is a round trip.
func (s *Store) TokenEpoch(ctx context.Context) (int64, error) { return s.epochs.get(ctx) }

// retryFor bounds how long Update keeps running a function whose
// transaction keeps losing races. Each round of a race commits at least
// one transaction, so a loser's turn comes; what it costs is time, and how
// much depends on the load, not on a count. A bound of 12 runs failed
// requests with a 500 after 1.3 s when a few hundred transactions raced for
// six rows across three instances on a busy machine
// (TestMultiInstanceContention with 48 racers per refresh token), though
// each would have committed within seconds.
const retryFor = 10 * time.Second

// Update runs fn in a SERIALIZABLE transaction and commits it when fn
// returns nil. When PostgreSQL aborts the transaction to keep it
// serializable (SQLSTATE 40001) or to break a deadlock (40P01), fn runs
// again in a new transaction, after a short random pause, for up to
// retryFor after its first run. When the connection is lost before the
// commit, fn runs again once, at once, on a new connection (lost.go).
// fn runs on the caller's goroutine, so a panic in it reaches the caller
// (the transaction is rolled back).
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	pause := 2 * time.Millisecond
	first := time.Now()
	reconnected := false
	for {
		err := s.updateOnce(ctx, fn)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !reconnected && lostBeforeCommit(err) {
			// Once only: a database that is down fails the next run at
			// connect, and the caller should hear of it now, not after
			// retryFor.
			reconnected = true
			s.pool.Reset()
			s.retries.Add(1)
			continue
		}
		if !retryable(err) || time.Since(first) >= retryFor {
			return err
		}
		// Jitter keeps the transactions that collided from colliding again
		// in lockstep.
		t := time.NewTimer(pause/2 + rand.N(pause/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		pause = min(2*pause, 100*time.Millisecond)
		s.retries.Add(1)
	}
}

// Retries returns how many times Update ran a function again because
// PostgreSQL aborted its transaction or its connection was lost: a
// measure of contention (and of outages), for metrics and tests.
func (s *Store) Retries() uint64 { return s.retries.Load() }

// updateOnce runs fn in one transaction.
func (s *Store) updateOnce(ctx context.Context, fn func(store.Tx) error) error {
	pgTx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	// After a commit this does nothing; after an error or a panic in fn it
	// rolls back. It must not depend on ctx, which may be what ended fn.
	defer pgTx.Rollback(context.Background())
	t := &tx{queries: queries{db: pgTx}}
	if err := fn(t); err != nil {
		return err
	}
	// The announcements go out with the commit, and only with it: NOTIFY
	// in a transaction that rolls back is never sent.
	if err := s.notify.send(ctx, pgTx, t.announced); err != nil {
		return err
	}
	if err := pgTx.Commit(ctx); err != nil {
		return &commitError{err}
	}
	return nil
}

// lostBeforeCommit tells whether err is a lost connection that ended a
// transaction before its COMMIT was sent, so that it took no effect.
func lostBeforeCommit(err error) bool {
	var ce *commitError
	return !errors.As(err, &ce) && connectionLost(err)
}

// retryable tells whether err is PostgreSQL aborting a transaction that
// would succeed if run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Close closes every connection of the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// mapErr turns driver errors into the store's sentinel errors.
func mapErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %w", store.ErrAlreadyExists, err)
	}
	return err
}

// ms encodes a time as Unix milliseconds, and the zero time as NULL, as
// the SQLite backend does.
func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// nullTime decodes what ms encoded.
type nullTime struct{ t *time.Time }

// ScanInt64 implements pgtype.Int8Scanner.
func (n nullTime) ScanInt64(v pgtype.Int8) error {
	if !v.Valid {
		*n.t = time.Time{}
	} else {
		*n.t = time.UnixMilli(v.Int64)
	}
	return nil
}

func nt(t *time.Time) *nullTime { return &nullTime{t} }

// optionalText decodes an optional text column: NULL is "".
type optionalText struct{ s *string }

// ScanText implements pgtype.TextScanner.
func (o *optionalText) ScanText(v pgtype.Text) error {
	*o.s = v.String // "" when not Valid
	return nil
}

// nulls is how rowscan scans nullable columns through pgx.
type nulls struct{}

func (nulls) Time(t *time.Time) any { return nt(t) }
func (nulls) String(s *string) any  { return &optionalText{s} }

// nullString encodes the empty string as NULL, for the optional
// references.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
