package devicegrant

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// revoke is RFC 7009 (P-REV-1). Revoking either token of a pair ends the
// whole session: a device that signs out wants all of its tokens gone.
//
// Whoever presents a valid token may revoke it, with or without a
// client_id, and whether or not that client_id is the token's client: the
// Matrix spec says the server SHOULD still revoke then, so that secret
// scanners can revoke leaked tokens (ours carry a prefix and a checksum so
// that scanners find them). Holding the token is the proof: whoever has it
// could use it anyway. Such a session ends as "reported as leaked", which
// the account page tells the person. Only a client that sends credentials
// must get them right (401 otherwise).
//
// Unknown and malformed tokens get 200 like revoked ones: the answer must
// not tell anyone whether a guessed token exists.
func (s *Server) revoke(c *gin.Context) {
	ctx := c.Request.Context()
	authenticated, claimed, oe := s.revocationCaller(c)
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
		var ended store.Session
		err := s.store.Update(ctx, func(tx store.Tx) error {
			ended = store.Session{}
			sess, err := tx.Session(ctx, sessionID)
			if err != nil || !sess.EndedAt.IsZero() {
				return err
			}
			reason := endRevoked
			if claimed != sess.ClientID {
				reason = endReported
			}
			ended = sess
			return s.endSession(ctx, tx, sess, reason, s.now())
		})
		if err != nil {
			s.fail(c, "revoke", err)
			return
		}
		switch {
		case ended.ID == "":
		case claimed == ended.ClientID:
			s.log.InfoContext(ctx, "session revoked", "client_id", claimed, "session", ended.ID)
		default:
			// Never the token: only who reported it and whose it was.
			s.log.WarnContext(ctx, "session revoked by someone other than its client (a leaked token reported?)",
				"session", ended.ID, "token_client_id", ended.ClientID, "caller_client_id", claimed,
				"authenticated", authenticated, "ip", c.ClientIP())
		}
	}
	c.Header("Cache-Control", "no-store")
	c.Status(http.StatusOK)
}

// revocationCaller says who asks to revoke: claimed is the client_id the
// request names ("" when none), and authenticated reports whether the
// request proved it with the client's secret. A request that sends a
// secret is held to it; one without may name any client_id or none.
func (s *Server) revocationCaller(c *gin.Context) (authenticated bool, claimed string, oe *oauthError) {
	basicID, basicSecret, hasBasic := c.Request.BasicAuth()
	if c.PostForm("client_secret") != "" || (hasBasic && basicSecret != "") {
		cl, oe := s.authenticateClient(c)
		if oe != nil {
			return false, "", oe
		}
		return true, cl.ID, nil
	}
	if hasBasic {
		// A public client may send Basic with an empty password
		// (golang.org/x/oauth2 does); its user name is form-encoded
		// like any Basic credential (RFC 6749 §2.3.1).
		id, err := url.QueryUnescape(basicID)
		if err != nil {
			return false, "", errInvalidClient("malformed HTTP Basic credentials")
		}
		return false, id, nil
	}
	return false, c.PostForm("client_id"), nil
}
