package devicegrant

import (
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// The authorization request and its code (P-AC-1…4) as a state machine.
// The functions below are the only code that changes an AuthCode's
// Status; docs/architecture.md draws the same diagram:
//
//	waiting ─upsert_device delivered─▶ ready ─browser continues─▶ issued ─exchange─▶ used
//	(no homeserver, or no device: approval goes straight to ready)
//
// A request past its ExpiresAt is dead in any state. The legacy login's
// login tokens are auth_codes rows born issued (mintLoginToken).

// approvedAuthCode is the request a person approved. It waits for its
// Matrix device when waitForDevice (provisionDevice queued the call).
func approvedAuthCode(a store.AuthCode, waitForDevice bool) store.AuthCode {
	a.Status = store.AuthCodeReady
	if waitForDevice {
		a.Status = store.AuthCodeWaiting
	}
	return a
}

// authCodeStatusesHoldingDevice are the statuses in which an approved
// request keeps a Matrix device on the homeserver, until its code is used
// and the device belongs to the session.
func authCodeStatusesHoldingDevice() []store.AuthCodeStatus {
	return []store.AuthCodeStatus{store.AuthCodeWaiting, store.AuthCodeReady, store.AuthCodeIssued}
}

// authCodeDeviceCreated moves a request whose Matrix device now exists
// from waiting to ready. It reports whether a changed.
func authCodeDeviceCreated(a *store.AuthCode) bool {
	if a.Status != store.AuthCodeWaiting {
		return false
	}
	a.Status = store.AuthCodeReady
	return true
}

// issueAuthCode mints the code of a ready request, for the browser to take
// back to the client, and returns it; only its hash is kept. A code lives
// authCodeTTL from now.
func issueAuthCode(a *store.AuthCode, now time.Time) string {
	code := newToken(prefixAuthCode)
	a.CodeHash, a.Status, a.ExpiresAt = hashSecret(code), store.AuthCodeIssued, now.Add(authCodeTTL)
	return code
}

// authCodeUsable reports whether an issued code may still be exchanged.
func authCodeUsable(a store.AuthCode, now time.Time) bool {
	return a.Status == store.AuthCodeIssued && now.Before(a.ExpiresAt)
}

// useAuthCode records the exchange of an issued code for the session it
// started; presenting it again ends that session (P-AC-3).
func useAuthCode(a *store.AuthCode, sessionID string) {
	a.Status, a.SessionID = store.AuthCodeUsed, sessionID
}
