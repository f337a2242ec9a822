package devicegrant_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestIdleApplianceWritesNothing: a server alone on its SQLite file (an
// appliance's SD card) writes nothing while nobody uses it. Heartbeats and
// job leases exist for instances sharing a PostgreSQL database (issue 15);
// a store that no other process serves from gets neither, however short
// the heartbeat interval.
func TestIdleApplianceWritesNothing(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "devicegrantd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	srv, err := devicegrant.New(devicegrant.Config{Issuer: "http://127.0.0.1:1/", ServerName: "example.org",
		HeartbeatInterval: 5 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil))}, cs)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(runCtx) }()
	// Run's start-up work (the first cleanup) may write; after it, nothing.
	time.Sleep(100 * time.Millisecond)
	before := cs.updates.Load()
	time.Sleep(300 * time.Millisecond)
	stop()
	<-done
	if n := cs.updates.Load() - before; n != 0 {
		t.Errorf("an idle server alone on SQLite wrote %d times in 300 ms (heartbeat every 5 ms), want 0", n)
	}
}
