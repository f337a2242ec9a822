package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
	"github.com/devicegrant/devicegrant/store/storetest"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "test.db"))
	})
}

func TestFileIsPrivateAndDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dg.db")
	s := open(t, path)
	err := s.Update(ctx, func(tx store.Tx) error {
		return tx.CreateUser(ctx, store.User{ID: "u1", Username: "alice", PasswordHash: "h", CreatedAt: time.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v; want no group or other access", filepath.Base(name), perm)
		}
	}

	// Reopening runs no migration twice and keeps the data.
	s = open(t, path)
	defer s.Close()
	u, err := s.UserByUsername(ctx, "alice")
	if err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	if u.ID != "u1" {
		t.Errorf("after reopen: ID = %q", u.ID)
	}
}

func TestOpenRejectsEmptyPath(t *testing.T) {
	if _, err := sqlite.Open(context.Background(), ""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}

// TestGroupCommit: concurrent Updates share commits (one fsync for many
// writes), and each caller returns only once its writes are committed: a
// second connection sees them the moment Update returns.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dg.db")
	s := open(t, path)
	defer s.Close()
	other := open(t, path) // another connection, as another process would have
	defer other.Close()
	const n = 200
	before := s.Commits()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("user%03d", i)
			err := s.Update(ctx, func(tx store.Tx) error {
				return tx.CreateUser(ctx, store.User{ID: name, Username: name, PasswordHash: "h", CreatedAt: time.Now()})
			})
			if err != nil {
				t.Errorf("Update: %v", err)
				return
			}
			if _, err := other.UserByUsername(ctx, name); err != nil {
				t.Errorf("%s is not visible to another connection when Update returned: %v", name, err)
			}
		}()
	}
	wg.Wait()
	commits := s.Commits() - before
	t.Logf("%d Updates, %d commits", n, commits)
	if commits == 0 || commits >= n {
		t.Errorf("%d concurrent Updates took %d commits; want them grouped", n, commits)
	}
}

// TestRerun: storetest.Rerun runs each Update function twice, rolls the
// first run back (else the second CreateUser would find the user), lets
// another writer act between the runs, and returns the second run's
// result.
func TestRerun(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "rerun.db"))
	defer s.Close()
	var betweenSaw []error
	rs := storetest.Rerun(s, func(ctx context.Context, st store.Store) error {
		_, err := st.UserByUsername(ctx, "alice")
		betweenSaw = append(betweenSaw, err)
		other := fmt.Sprintf("other%d", len(betweenSaw))
		return st.Update(ctx, func(tx store.Tx) error {
			return tx.CreateUser(ctx, store.User{ID: other, Username: other, PasswordHash: "h", CreatedAt: time.Now()})
		})
	})
	runs := 0
	err := rs.Update(ctx, func(tx store.Tx) error {
		runs++
		return tx.CreateUser(ctx, store.User{ID: "u1", Username: "alice", PasswordHash: "h", CreatedAt: time.Now()})
	})
	if err != nil || runs != 2 {
		t.Fatalf("Update: %v after %d runs, want nil after 2", err, runs)
	}
	if len(betweenSaw) != 1 || !errors.Is(betweenSaw[0], store.ErrNotFound) {
		t.Errorf("between the runs the first run's user was visible: %v", betweenSaw)
	}
	users, err := s.Users(ctx)
	if err != nil || len(users) != 2 {
		t.Errorf("users after one rerun update: %v %v, want alice and the other writer's", users, err)
	}
	// The second run's error is the answer.
	runs = 0
	err = rs.Update(ctx, func(tx store.Tx) error {
		runs++
		if runs == 2 {
			return store.ErrAlreadyExists
		}
		return nil
	})
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("Update = %v, want the second run's error", err)
	}
}

// TestOpenedTogether: processes that start at once on a new database file
// (two daemons by mistake, or "devicegrantd migrate" beside serve) all
// open it: whoever waited for the write lock finds the migrations it
// meant to apply already applied, and does not apply them twice.
func TestOpenedTogether(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dg.db")
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := sqlite.Open(ctx, path)
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	current, latest, err := sqlite.SchemaVersion(ctx, path)
	if err != nil || current != latest || latest == 0 {
		t.Errorf("SchemaVersion = %d, %d, %v; want the latest", current, latest, err)
	}
}
