package devicegrant_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestRevocationAfterEpochRegression: a PostgreSQL failover to a standby
// that had not yet received the last commits (asynchronous replication),
// or a restore from a backup, takes the token epoch back to an earlier
// value while the instances keep running, and revocations made afterwards
// take it forward again through values it had before. An introspection
// cached under one of those values must not answer for the state after
// the regression: here token Y is cached as active at the epoch that
// X's revocation made; the database loses that revocation (its epoch rows
// go back to what they were before it); then Y is revoked, and the very
// next introspection of Y must say inactive (P-REV-1, P-INT-1). With an
// epoch that counted bumps one by one, Y's revocation brought back the
// very number Y was cached under, and Y stayed active.
func TestRevocationAfterEpochRegression(t *testing.T) {
	c := newCluster(t, 1)
	clientID := c.register(deviceClientJSON)
	tokenFor := func(deviceID string) string {
		dc := c.deviceAuthorization(t, clientID, deviceID)
		if pg := devtest.NewPhone(t).Decide(dc.complete, "approve"); pg.Status != http.StatusOK {
			t.Fatalf("approval answered %d: %s", pg.Status, pg.Text())
		}
		access, _ := c.redeem(t, clientID, dc)
		return access
	}
	x, y := tokenFor("EPOCHXXXXX"), tokenFor("EPOCHYYYYY")
	revoke := func(token string) {
		t.Helper()
		if status, m := c.post(c.issuer, "oauth2/revoke", url.Values{"token": {token}, "client_id": {clientID}}); status != http.StatusOK {
			t.Fatalf("revoke: %d %v", status, m)
		}
	}

	ctx := context.Background()
	db, err := pgx.Connect(ctx, c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	// What the standby has: the epoch before X's revocation.
	rows, err := db.Query(ctx, `SELECT stripe, n FROM token_epoch`)
	if err != nil {
		t.Fatal(err)
	}
	type stripe struct{ Stripe, N int64 }
	before, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stripe])
	if err != nil {
		t.Fatal(err)
	}

	revoke(x)
	if c.activeAt(0, x) {
		t.Fatal("X is active after its revocation")
	}
	if !c.activeAt(0, y) { // cached now, under the epoch X's revocation made
		t.Fatal("Y is not active before its revocation")
	}
	// The failover: X's revocation is lost, and with it the epoch's move.
	// (X itself plays no further part.)
	for _, s := range before {
		if _, err := db.Exec(ctx, `UPDATE token_epoch SET n = $1 WHERE stripe = $2`, s.N, s.Stripe); err != nil {
			t.Fatal(err)
		}
	}

	revoke(y)
	if c.activeAt(0, y) {
		t.Fatal("Y is still active at introspection after its revocation was answered: " +
			"the epoch after the regression repeated the one Y was cached under (P-REV-1, P-INT-1)")
	}
}
