package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestOutboxWarnsOfParkedDeletes: a delete_device the homeserver refused
// until it was parked is said first and plainly by devicegrantd outbox,
// not only as a row of the table (P-HS-3).
func TestOutboxWarnsOfParkedDeletes(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "d.db")
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err = st.Update(ctx, func(tx store.Tx) error {
		id, err := tx.Enqueue(ctx, store.OutboxEntry{UserKey: "dana", Call: "delete_device",
			Body: []byte(`{"localpart":"dana","device_id":"PARKEDDEV1"}`), CreatedAt: now, NextAttemptAt: now})
		if err != nil {
			return err
		}
		e, err := tx.OutboxEntry(ctx, id)
		if err != nil {
			return err
		}
		e.Attempts, e.LastError, e.ParkedAt = 20, "delete_device: homeserver answered 400 Bad Request", now
		return tx.UpdateOutbox(ctx, e)
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	vars := env(map[string]string{"DEVICEGRANTD_DATABASE": db,
		"DEVICEGRANTD_HOMESERVER_ENDPOINT": "http://" + freeAddr(t) + "/", "DEVICEGRANTD_HOMESERVER_SECRET": "s"})
	if err := run(ctx, []string{"outbox"}, nil, &out, &out, vars); err != nil {
		t.Fatalf("outbox: %v\n%s", err, out.String())
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	if !strings.Contains(first, "1 call(s) parked") || !strings.Contains(first, "deletes") || !strings.Contains(out.String(), "devicegrantd outbox retry") {
		t.Errorf("outbox with a parked delete_device:\n%s", out.String())
	}
}
