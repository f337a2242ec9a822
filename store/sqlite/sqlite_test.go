package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
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
