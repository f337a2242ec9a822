package devicegrant

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// revoke is RFC 7009 (P-REV-1). Revoking either token of a pair ends the
// whole session: a device that signs out wants all of its tokens gone.
//
// Unknown tokens, and tokens of another client, get 200 like revoked ones:
// the answer must not tell a client whether a guessed token exists.
func (s *Server) revoke(c *gin.Context) {
	ctx := c.Request.Context()
	cl, oe := s.authenticateClient(c)
	if oe != nil {
		writeError(c, oe)
		return
	}
	tok := c.PostForm("token")
	if tok == "" {
		writeError(c, errInvalidRequest("token is missing"))
		return
	}
	var sessionID string
	switch {
	case wellFormed(tok, prefixAccess):
		at, err := s.store.AccessToken(ctx, hashSecret(tok))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.fail(c, "revoke: look up access token", err)
			return
		}
		sessionID = at.Session.ID
	case wellFormed(tok, prefixRefresh):
		p, err := s.store.TokenPairByRefresh(ctx, hashSecret(tok))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.fail(c, "revoke: look up refresh token", err)
			return
		}
		sessionID = p.SessionID
	}
	if sessionID != "" {
		var ended bool
		err := s.store.Update(ctx, func(tx store.Tx) error {
			sess, err := tx.Session(ctx, sessionID)
			if err != nil || sess.ClientID != cl.ID || !sess.EndedAt.IsZero() {
				return err
			}
			ended = true
			return s.endSession(ctx, tx, sess, endRevoked, s.now())
		})
		if err != nil {
			s.fail(c, "revoke", err)
			return
		}
		if ended {
			s.log.InfoContext(ctx, "session revoked", "client_id", cl.ID, "session", sessionID)
		}
	}
	c.Header("Cache-Control", "no-store")
	c.Status(http.StatusOK)
}
