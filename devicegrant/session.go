package devicegrant

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// Reasons a session ended, kept for the account page and the logs.
const (
	endRevoked     = "signed out"
	endReplaced    = "replaced by a new sign-in on the same device"
	endReuse       = "refresh token reused (possible theft)"
	endByUser      = "ended on the account page"
	endDeactivated = "account deactivated"
	endCodeReplay  = "authorization code replayed (possible theft)"
	// endReported: revoked by someone other than the session's client,
	// such as a secret scanner that found the token (P-REV-1).
	endReported = "token reported as leaked"
)

// startSession creates a session and its first token pair inside tx.
// Signing in again with a device id replaces the earlier sessions of that
// device (P-SCOPE-4).
func (s *Server) startSession(ctx context.Context, tx store.Tx, user store.User, clientID, scope, ip string, now time.Time) (store.Session, *tokenResponse, error) {
	sc, err := parseScopes(scope)
	if err != nil {
		return store.Session{}, nil, err
	}
	if sc.deviceID != "" {
		old, err := tx.SessionsByDevice(ctx, user.ID, sc.deviceID)
		if err != nil {
			return store.Session{}, nil, err
		}
		for _, o := range old {
			if err := s.endSession(ctx, tx, o, endReplaced, now); err != nil {
				return store.Session{}, nil, err
			}
		}
	}
	sess := store.Session{
		ID: newID(), UserID: user.ID, ClientID: clientID, DeviceID: sc.deviceID, Scope: scope,
		CreatedAt: now, LastActiveAt: now, LastIP: ip,
	}
	if err := tx.CreateSession(ctx, sess); err != nil {
		return store.Session{}, nil, err
	}
	_, resp, err := s.issuePair(ctx, tx, sess, now)
	return sess, resp, err
}

// issuePair mints a new access and refresh token for sess (P-RT-1). Only
// their hashes are stored.
func (s *Server) issuePair(ctx context.Context, tx store.Tx, sess store.Session, now time.Time) (store.TokenPair, *tokenResponse, error) {
	access, refresh := newToken(prefixAccess), newToken(prefixRefresh)
	p := store.TokenPair{
		ID: newID(), SessionID: sess.ID,
		AccessHash: hashSecret(access), RefreshHash: hashSecret(refresh),
		CreatedAt: now, AccessExpiresAt: now.Add(s.cfg.AccessTokenTTL),
	}
	if err := tx.CreateTokenPair(ctx, p); err != nil {
		return p, nil, err
	}
	return p, &tokenResponse{
		AccessToken: access, TokenType: "Bearer", ExpiresIn: int(s.cfg.AccessTokenTTL.Seconds()),
		RefreshToken: refresh, Scope: sess.Scope,
	}, nil
}

// endSession ends a session: every token of it stops working at once,
// since validity is read through the session. Its Matrix device is deleted
// from the homeserver unless another live session or a grant on its way
// still uses that device id.
func (s *Server) endSession(ctx context.Context, tx store.Tx, sess store.Session, reason string, now time.Time) error {
	if !sess.EndedAt.IsZero() {
		return nil
	}
	sess.EndedAt, sess.EndReason = now, reason
	if err := tx.UpdateSession(ctx, sess); err != nil {
		return err
	}
	if sess.DeviceID == "" || reason == endReplaced || reason == endDeactivated || !s.provisioning() {
		return nil
	}
	inUse, err := s.deviceInUse(ctx, tx, sess.UserID, sess.DeviceID, now)
	if err != nil || inUse {
		return err
	}
	user, err := tx.User(ctx, sess.UserID)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, tx, user.Username, callDeleteDevice, deviceBody{Localpart: user.Username, DeviceID: sess.DeviceID}, "")
}

func (s *Server) deviceInUse(ctx context.Context, tx store.Tx, userID, deviceID string, now time.Time) (bool, error) {
	live, err := tx.SessionsByDevice(ctx, userID, deviceID)
	if err != nil || len(live) > 0 {
		return len(live) > 0, err
	}
	devices, err := s.devicesOf(ctx, tx, userID, now)
	if err != nil {
		return false, err
	}
	for _, d := range devices {
		if d == deviceID {
			return true, nil
		}
	}
	return false, nil
}

// devicesOf lists the Matrix devices a user must have on the homeserver:
// those of live sessions, of device grants approved but not yet exchanged,
// and of authorization requests approved but not yet exchanged.
func (s *Server) devicesOf(ctx context.Context, r store.Reader, userID string, now time.Time) ([]string, error) {
	sessions, err := r.SessionsByUser(ctx, userID, false)
	if err != nil {
		return nil, err
	}
	grants, err := r.GrantsOfUser(ctx, userID, grantStatesHoldingDevice(), now)
	if err != nil {
		return nil, err
	}
	codes, err := r.AuthCodesOfUser(ctx, userID, authCodeStatusesHoldingDevice(), now)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, x := range sessions {
		if x.DeviceID != "" {
			set[x.DeviceID] = true
		}
	}
	scopes := make([]string, 0, len(grants)+len(codes))
	for _, g := range grants {
		scopes = append(scopes, g.Scope)
	}
	for _, a := range codes {
		scopes = append(scopes, a.Scope)
	}
	for _, scope := range scopes {
		if sc, err := parseScopes(scope); err == nil && sc.deviceID != "" {
			set[sc.deviceID] = true
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}

// errDeactivated is accountOf's answer for a deactivated account.
var errDeactivated = errors.New("the account was deactivated")

// accountOf reads, inside tx, the account a grant, an authorization code or
// a session belongs to, before tokens are issued to it. A deactivated
// account is errDeactivated: nothing is issued to it any more (P-ACCT-2),
// whichever grant asks; each grant answers that in its own words.
func accountOf(ctx context.Context, tx store.Reader, userID string) (store.User, error) {
	u, err := tx.User(ctx, userID)
	if err != nil {
		return u, err
	}
	if !u.DeactivatedAt.IsZero() {
		return u, errDeactivated
	}
	return u, nil
}

// The refresh chain (P-RT-2): a session's token pairs, each the successor
// of the one whose refresh token gave it. The functions below are the only
// code that changes a pair; rotate (refresh.go) decides which to call.
//
//	issued ─first use (introspection or refresh)─▶ used
//	used ─refresh─▶ rotated: the successor is recorded
//	unused successor of a rotated pair ─retry with the rotated token─▶ replaced (revoked)
//
// Ending the session ends every pair at once (endSession).

// pairUsed records the first use of p. Once a pair is used, presenting its
// predecessor's refresh token again is reuse, not a retry. It reports
// whether p changed.
func pairUsed(p *store.TokenPair, now time.Time) bool {
	if !p.UsedAt.IsZero() {
		return false
	}
	p.UsedAt = now
	return true
}

// pairRotated records that p's refresh token gave the pair successorID.
// Presenting a refresh token uses its pair; the first rotation's time is
// kept.
func pairRotated(p *store.TokenPair, successorID string, now time.Time) {
	pairUsed(p, now)
	if p.RotatedAt.IsZero() {
		p.RotatedAt = now
	}
	p.SuccessorID = successorID
}

// retryable reports whether next, the successor of a rotated pair, may be
// replaced by a retry with the rotated refresh token: its answer was lost,
// so it was never used and not replaced already.
func retryable(next store.TokenPair) bool {
	return next.UsedAt.IsZero() && next.RevokedAt.IsZero()
}

// pairReplaced revokes a successor that a retry replaces. Presenting its
// refresh token later ends the session: its holder got the answer that was
// said to be lost.
func pairReplaced(p *store.TokenPair, now time.Time) { p.RevokedAt = now }

// sessionActive records that the session was used from ip.
func sessionActive(sess *store.Session, ip string, now time.Time) {
	sess.LastActiveAt, sess.LastIP = now, ip
}
