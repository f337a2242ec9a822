package devicegrant

import (
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// The device grant (RFC 8628, P-DEV-1…9) as a state machine. The
// functions below are the only code that changes a DeviceGrant's State;
// docs/architecture.md draws the same diagram:
//
//	pending ─approve─▶ approved ─upsert_device delivered─▶ ready ─poll─▶ exchanged
//	   └─deny─▶ denied          (no homeserver: approve goes straight to ready)
//
// A grant past its ExpiresAt is expired in any state. A poll of an
// approved grant answers authorization_pending: the device never holds a
// token for a Matrix device that does not exist yet (P-HS-3).

// newDeviceGrant starts the grant g describes: pending, alive for ttl.
func newDeviceGrant(g store.DeviceGrant, now time.Time, ttl time.Duration) store.DeviceGrant {
	g.ID, g.State, g.CreatedAt, g.ExpiresAt = newID(), store.GrantPending, now, now.Add(ttl)
	return g
}

// grantStatesHoldingDevice are the states in which a grant keeps a Matrix
// device on the homeserver: approved (the device is on its way) and ready
// (it exists; the tokens are not yet taken). Exchanged grants hand the
// device over to their session.
func grantStatesHoldingDevice() []store.GrantState {
	return []store.GrantState{store.GrantApproved, store.GrantReady}
}

// grantDecidable reports whether a person may still approve or deny g.
func grantDecidable(g store.DeviceGrant, now time.Time) bool {
	return g.State == store.GrantPending && now.Before(g.ExpiresAt)
}

// approveGrant records userID's approval. The grant waits for its Matrix
// device when waitForDevice (provisionDevice queued the call).
func approveGrant(g *store.DeviceGrant, userID string, now time.Time, waitForDevice bool) {
	g.UserID, g.DecidedAt, g.State = userID, now, store.GrantReady
	if waitForDevice {
		g.State = store.GrantApproved
	}
}

// denyGrant records userID's refusal.
func denyGrant(g *store.DeviceGrant, userID string, now time.Time) {
	g.UserID, g.DecidedAt, g.State = userID, now, store.GrantDenied
}

// grantDeviceCreated moves a grant whose Matrix device now exists from
// approved to ready. It reports whether g changed.
func grantDeviceCreated(g *store.DeviceGrant) bool {
	if g.State != store.GrantApproved {
		return false
	}
	g.State = store.GrantReady
	return true
}

// exchangeGrant records that a ready grant gave its tokens, once
// (P-DEV-6), to the session they belong to.
func exchangeGrant(g *store.DeviceGrant, sessionID string) {
	g.State, g.SessionID = store.GrantExchanged, sessionID
}
