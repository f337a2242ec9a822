package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// openLost opens a store on a throwaway schema, and a separate connection
// to end the store's sessions with.
func openLost(t *testing.T) (*Store, *pgx.Conn) {
	t.Helper()
	dsn := pgtest.URL(t)
	ctx := context.Background()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return s, admin
}

// A transaction whose connection is ended before its COMMIT took no
// effect, so Update runs it again on a new connection, and the caller
// sees one success, with the change made once.
func TestUpdateRunsAgainOnALostConnection(t *testing.T) {
	s, _ := openLost(t)
	ctx := context.Background()
	before, err := s.queries.TokenEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	err = s.Update(ctx, func(t store.Tx) error {
		runs++
		if err := t.BumpTokenEpoch(ctx); err != nil {
			return err
		}
		if runs == 1 {
			// As a restart does, to this transaction's own session.
			_, err := t.(*tx).db.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
			return fmt.Errorf("the session was ended: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v after %d runs, want it to run again on a new connection", err, runs)
	}
	after, err := s.queries.TokenEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 || after>>epochSaltBits != before>>epochSaltBits+1 {
		t.Errorf("runs = %d, epoch %d → %d; want 2 runs and one bump", runs, before, after)
	}
}

// A read handed a connection that PostgreSQL has ended (the pool checks
// only connections idle for a second) reads again on a new one; so do
// list reads, and so does an Update right after.
func TestReadsSurviveEndedSessions(t *testing.T) {
	s, admin := openLost(t)
	ctx := context.Background()
	end := func() {
		t.Helper()
		var pids []uint32
		for _, c := range s.pool.AcquireAllIdle(ctx) {
			pids = append(pids, c.Conn().PgConn().PID())
			c.Release()
		}
		if len(pids) == 0 {
			t.Fatal("no idle pooled connection to end")
		}
		for _, pid := range pids {
			if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
		}
	}
	end()
	if _, err := s.User(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("User after the sessions ended: %v, want ErrNotFound", err)
	}
	end()
	if _, err := s.SigningKeys(ctx); err != nil {
		t.Errorf("SigningKeys (a list) after the sessions ended: %v", err)
	}
	end()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.BumpTokenEpoch(ctx) }); err != nil {
		t.Errorf("Update after the sessions ended: %v", err)
	}
}

// Which errors count as a lost connection, and that a failed COMMIT never
// does: it may have taken effect, and running the transaction again could
// rotate a refresh token twice.
func TestLostBeforeCommit(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("x: %w", &pgconn.PgError{Code: "57P01"}), true},
		{&pgconn.PgError{Code: "08006"}, true},
		{&commitError{io.ErrUnexpectedEOF}, false},
		{&commitError{&pgconn.PgError{Code: "57P01"}}, false},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "40001"}, false},
		{store.ErrNotFound, false},
		{errors.New("a rule of the caller's"), false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{context.DeadlineExceeded, false},
	} {
		if got := lostBeforeCommit(c.err); got != c.want {
			t.Errorf("lostBeforeCommit(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
