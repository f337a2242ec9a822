package devicegrant

import (
	"context"
	"errors"
	"strings"

	"github.com/devicegrant/devicegrant/store"
)

// rotate rotates a refresh token (P-RT-2, P-RT-3). Presenting R(n):
//   - not yet rotated: issue pair n+1 and remember it as R(n)'s successor;
//   - rotated, and pair n+1 never used (no introspection of its access
//     token, no refresh with its refresh token): the answer was lost, so
//     revoke pair n+1 and issue a fresh one in its place;
//   - rotated, and pair n+1 used: someone else holds R(n), so end the
//     session. Presenting the refresh token of a pair revoked by such a
//     retry also ends it: its holder got the answer that was "lost".
//
// A retry is allowed for as long as pair n+1 stays unused, however late:
// the Matrix spec says a client MUST be able to retry after a lost
// answer, and our devices are the ones that lose power mid-refresh and
// come back hours later. This gives a thief nothing: whoever holds R(n)
// while the device holds an unused pair n+1 would get the same from a
// fresh rotation, and the device's next use of pair n+1 (revoked by the
// thief's retry) ends the session for both.
//
// The whole decision runs in one transaction, so two concurrent refreshes
// with R(n) are seen in turn and never leave two live successors. The
// token arrives from the client clientID at the address ip, by the token
// endpoint or the legacy Matrix /refresh.
func (s *Server) rotate(ctx context.Context, clientID, tok, requested, ip string) (*tokenResponse, error) {
	if tok == "" {
		return nil, errInvalidRequest("refresh_token is missing")
	}
	if !wellFormed(tok, prefixRefresh) {
		return nil, errInvalidGrant("unknown refresh_token")
	}
	var resp *tokenResponse
	var outcome *oauthError
	var theft bool
	err := s.store.Update(ctx, func(tx store.Tx) error {
		resp, outcome, theft = nil, nil, false
		now := s.now()
		p, err := tx.TokenPairByRefresh(ctx, hashSecret(tok))
		if errors.Is(err, store.ErrNotFound) {
			outcome = errInvalidGrant("unknown refresh_token")
			return nil
		}
		if err != nil {
			return err
		}
		sess, err := tx.Session(ctx, p.SessionID)
		if err != nil {
			return err
		}
		if sess.ClientID != clientID {
			outcome = errInvalidGrant("unknown refresh_token")
			return nil
		}
		if !sess.EndedAt.IsZero() {
			outcome = errInvalidGrant("this session has ended; sign in again")
			return nil
		}
		if !p.RevokedAt.IsZero() {
			// Only a retry with the previous refresh token revokes a
			// single pair. Whoever holds this pair received the answer
			// that was supposedly lost, so someone else holds the
			// previous token too: that is theft.
			theft = true
			outcome = errInvalidGrant("this refresh_token was replaced by a retry with the previous one; the session has been ended")
			return s.endSession(ctx, tx, sess, endReuse, now)
		}
		_, err = accountOf(ctx, tx, sess.UserID)
		if errors.Is(err, errDeactivated) {
			outcome = errInvalidGrant(err.Error())
			return nil
		}
		if err != nil {
			return err
		}
		if requested != "" && !sameScopes(requested, sess.Scope) {
			// RFC 6749 §6 allows narrowing; tokens here carry their
			// session's scope, so say so rather than ignore the request.
			outcome = &oauthError{400, "invalid_scope", "a refresh keeps the session's scope; omit scope"}
			return nil
		}
		if !p.RotatedAt.IsZero() {
			next, err := tx.TokenPair(ctx, p.SuccessorID)
			if err != nil {
				return err
			}
			if !retryable(next) {
				theft = true
				outcome = errInvalidGrant("this refresh_token was already used; the session has been ended")
				return s.endSession(ctx, tx, sess, endReuse, now)
			}
			pairReplaced(&next, now)
			if err := tx.UpdateTokenPair(ctx, next); err != nil {
				return err
			}
		}
		newPair, r, err := s.issuePair(ctx, tx, sess, now)
		if err != nil {
			return err
		}
		pairRotated(&p, newPair.ID, now)
		if err := tx.UpdateTokenPair(ctx, p); err != nil {
			return err
		}
		sessionActive(&sess, ip, now)
		resp = r
		return tx.UpdateSession(ctx, sess)
	})
	if err != nil {
		return nil, err
	}
	if theft {
		s.log.WarnContext(ctx, "refresh token reuse: session ended", "client_id", clientID)
	}
	if outcome != nil {
		return nil, outcome
	}
	return resp, nil
}

// sameScopes reports whether two scope strings name the same set.
func sameScopes(a, b string) bool {
	set := map[string]bool{}
	for _, s := range strings.Fields(b) {
		set[s] = true
	}
	n := 0
	for _, s := range strings.Fields(a) {
		if !set[s] {
			return false
		}
		n++
	}
	return n >= len(set)
}
