package devicegrant

import (
	"context"
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
