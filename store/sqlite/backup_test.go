package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestBackupWhileWriting copies a database that another connection keeps
// writing to: the copy is private, passes integrity_check, holds every row
// committed before the backup started, and can be opened as a store.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := open(t, filepath.Join(dir, "live.db"))
	defer src.Close()
	addUser := func(s *sqlite.Store, i int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			return tx.CreateUser(ctx, store.User{ID: fmt.Sprint("u", i), Username: fmt.Sprint("user", i), PasswordHash: "h", CreatedAt: time.Now()})
		})
	}
	for i := range 50 {
		if err := addUser(src, i); err != nil {
			t.Fatal(err)
		}
	}

	// A second store on the same file, as the admin command opens one
	// beside the running daemon, takes the backup while the first writes.
	admin := open(t, filepath.Join(dir, "live.db"))
	defer admin.Close()
	var wg sync.WaitGroup
	var written atomic.Int64
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 50; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := addUser(src, i); err != nil {
				t.Error(err)
				return
			}
			written.Add(1)
		}
	}()
	for written.Load() < 20 {
		time.Sleep(time.Millisecond)
	}
	dst := filepath.Join(dir, "backup.db")
	old := syscallUmask(0)
	err := admin.Backup(ctx, dst)
	syscallUmask(old)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if written.Load() < 20 {
		t.Fatal("the writer made no progress during the backup")
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v (umask 0), want 0600", fi.Mode().Perm())
	}
	if err := sqlite.Check(ctx, dst); err != nil {
		t.Errorf("Check on the copy: %v", err)
	}
	cp := open(t, dst)
	defer cp.Close()
	users, err := cp.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) < 70 {
		t.Errorf("the copy holds %d users; at least 70 were committed before it started", len(users))
	}

	// Never overwrites.
	if err := admin.Backup(ctx, dst); err == nil {
		t.Error("a second backup to the same file succeeded")
	}
	if err := sqlite.Check(ctx, dst); err != nil {
		t.Errorf("the refused second backup damaged the first: %v", err)
	}
}

// TestCheckFindsDamage: integrity checking a file that is not a healthy
// database fails.
func TestCheckFindsDamage(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d.db")
	s := open(t, path)
	for i := range 200 {
		err := s.Update(ctx, func(tx store.Tx) error {
			return tx.CreateUser(ctx, store.User{ID: fmt.Sprint("u", i), Username: fmt.Sprint("user", i), PasswordHash: "h", CreatedAt: time.Now()})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if err := sqlite.Check(ctx, path); err != nil {
		t.Fatalf("healthy database: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Scribble over the middle pages, leaving the header intact.
	for i := 4096 * 2; i < len(b)-4096 && i < 4096*6; i++ {
		b[i] = 0x5a
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sqlite.Check(ctx, path); err == nil {
		t.Error("Check passed a damaged database")
	}
}

// TestBackupLeavesLeasesBehind: a backup holds no lease, so a daemon
// started on the restored copy does its start-up work (the sync with the
// homeserver) instead of believing another instance did it lately.
func TestBackupLeavesLeasesBehind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := open(t, filepath.Join(dir, "live.db"))
	defer src.Close()
	take := func(s *sqlite.Store, holder string) bool {
		t.Helper()
		var got bool
		if err := s.Update(ctx, func(tx store.Tx) error {
			var err error
			got, err = tx.TakeLease(ctx, "sync_devices", holder, time.Now(), time.Now().Add(time.Hour))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if !take(src, "running") {
		t.Fatal("a free lease was refused")
	}
	copyPath := filepath.Join(dir, "copy.db")
	if err := src.Backup(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	if entries, err := filepath.Glob(filepath.Join(dir, "copy.db-*")); err != nil || len(entries) != 0 {
		t.Errorf("files left beside the copy: %v %v", entries, err)
	}
	if take(src, "restarted") {
		t.Error("the live database lost its lease in the backup")
	}
	restored := open(t, copyPath)
	defer restored.Close()
	if !take(restored, "restarted") {
		t.Error("the restored copy still holds the lease of the process that ran when it was taken")
	}
}
