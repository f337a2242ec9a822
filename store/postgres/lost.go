package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Lost connections.
//
// When PostgreSQL restarts, fails over or ends sessions, every pooled
// connection is dead at once, yet the pool finds out one request at a
// time: it pings a connection before handing it out only when it has been
// idle for a second, so on a busy server each dead connection fails the
// request it is handed to. Those requests need not fail. A read has no
// effect, and a transaction that never reached COMMIT had none either, so
// both can run again on a new connection. The first to find its
// connection lost resets the pool (pgxpool.Pool.Reset: the idle
// connections close at once, those in use as they come back), so that the
// requests after it connect afresh rather than each finding another dead
// one. Requests that find dead connections at the same moment each reset
// it, and a later reset may close a fresh connection too: that costs a
// reconnect, never a failed request. (Resetting at most once a second
// failed requests instead: a second outage within that second left its
// dead connections in the pool; TestPostgresConnectionsKilledMidWrites.)
//
// A COMMIT whose answer was lost is another matter: it may have taken
// effect, and running the transaction again could, say, rotate a refresh
// token twice. That error reaches the caller, as it would without a
// database in between (a client retries a lost refresh answer; P-RT-2).

// connectionLost tells whether err means that the session a statement ran
// on is gone: the server ended it (admin_shutdown, crash_shutdown: SQLSTATE
// class 57P; connection_exception: 08), or the socket broke or closed
// under it. Errors of the statement itself, of the caller (its context)
// and of the store's own rules are not.
func connectionLost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "57P") || strings.HasPrefix(pe.Code, "08")
	}
	var ne net.Error
	return pgconn.SafeToRetry(err) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// pooled is the querier of reads made on the pool outside a transaction
// (queries on the Store): each runs again once, on a new connection, when
// its connection turns out lost.
type pooled struct{ pool *pgxpool.Pool }

var _ querier = pooled{}

// Exec is not retried: no write is made outside Update's transactions, and
// one whose answer was lost may have taken effect.
func (p pooled) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return p.pool.Exec(ctx, sql, args...)
}

// QueryRow defers the retry to Scan, where pgx reports the row's error.
func (p pooled) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &retriedRow{p: p, ctx: ctx, sql: sql, args: args, row: p.pool.QueryRow(ctx, sql, args...)}
}

// Query runs again when the query fails before its first row.
func (p pooled) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := p.pool.Query(ctx, sql, args...)
	if err != nil {
		if !p.again(ctx, err) {
			return nil, err
		}
		return p.pool.Query(ctx, sql, args...)
	}
	return &retriedRows{Rows: rows, again: func() (pgx.Rows, error) { return p.pool.Query(ctx, sql, args...) }, p: p, ctx: ctx}, nil
}

// again tells whether a read that failed with err should run once more,
// and resets the pool if so.
func (p pooled) again(ctx context.Context, err error) bool {
	if ctx.Err() != nil || !connectionLost(err) {
		return false
	}
	p.pool.Reset()
	return true
}

// retriedRow is a pgx.Row read once more on a lost connection.
type retriedRow struct {
	p    pooled
	ctx  context.Context
	sql  string
	args []any
	row  pgx.Row
}

func (r *retriedRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if err != nil && r.p.again(r.ctx, err) {
		err = r.p.pool.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...)
	}
	return err
}

// retriedRows is pgx.Rows that runs its query once more when the
// connection is lost before the first row: after one, the caller has
// consumed rows that a second run would give again.
type retriedRows struct {
	pgx.Rows
	again func() (pgx.Rows, error)
	p     pooled
	ctx   context.Context
	seen  bool  // a row was read
	err   error // the second run's error, if it did not start
}

func (r *retriedRows) Next() bool {
	if r.err != nil {
		return false
	}
	if r.Rows.Next() {
		r.seen = true
		return true
	}
	if r.seen || r.again == nil || !r.p.again(r.ctx, r.Rows.Err()) {
		return false
	}
	again := r.again
	r.again = nil
	rows, err := again()
	if err != nil {
		r.err = err
		return false
	}
	r.Rows = rows
	return r.Next()
}

func (r *retriedRows) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.Rows.Err()
}

// commitError is a COMMIT that failed: whether it took effect is unknown,
// so Update does not run the transaction again on a lost connection.
type commitError struct{ err error }

func (e *commitError) Error() string { return "postgres: commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }
