package devicegrant

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// introspect is RFC 7662 for the homeserver (P-INT-1, P-HS-2). It is the
// homeserver's hot path: one indexed lookup, and a write only the first
// time a token pair is seen in use.
//
// Only access tokens are ever active here. A homeserver asks about the
// tokens clients present to it, and a refresh token presented as an access
// token must not be accepted.
//
// Callers: the homeserver (its shared secret), a confidential client the
// operator trusts (any token), or another confidential client (only tokens
// issued to itself: anyone can register one, and RFC 7662 §4 warns against
// telling strangers about other clients' tokens).
func (s *Server) introspect(c *gin.Context) {
	ctx := c.Request.Context()
	var onlyClient string // non-empty: answer only for tokens of this client
	if isBearer(c.GetHeader("Authorization")) {
		if !s.homeserverAuthenticated(c) {
			writeError(c, errInvalidClient("the Bearer token is not the configured homeserver secret"))
			return
		}
	} else {
		cl, oe := s.authenticateClient(c)
		if oe != nil {
			writeError(c, oe)
			return
		}
		if cl.meta.Public() {
			writeError(c, errInvalidClient("introspection needs a confidential client or the homeserver secret"))
			return
		}
		if !cl.Trusted {
			onlyClient = cl.ID
		}
	}
	c.Header("Cache-Control", "no-store")
	inactive := gin.H{"active": false}
	tok := c.PostForm("token")
	if tok == "" {
		writeError(c, errInvalidRequest("token is missing"))
		return
	}
	if !wellFormed(tok, prefixAccess) {
		c.JSON(http.StatusOK, inactive)
		return
	}
	hash := hashSecret(tok)
	at, epoch, err := s.accessToken(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		c.JSON(http.StatusOK, inactive)
		return
	}
	if err != nil {
		s.fail(c, "introspect", err)
		return
	}
	now := s.now()
	if !s.accessActive(at) || (onlyClient != "" && at.Session.ClientID != onlyClient) {
		c.JSON(http.StatusOK, inactive)
		return
	}
	if at.Session.DeviceID == "" && grantsMatrixAPI(at.Session.Scope) {
		// Sessions started before the device scope was required: a
		// homeserver cannot serve a Matrix API token without a device
		// (P-SCOPE-2), so it is not active here either.
		s.log.WarnContext(ctx, "introspect: Matrix API session without a device id answered inactive", "session", at.Session.ID)
		c.JSON(http.StatusOK, inactive)
		return
	}
	if at.Pair.UsedAt.IsZero() {
		// First use of this pair: record it (P-RT-2 reads it to tell a
		// lost refresh response from theft) and the session's activity.
		if err := s.markUsed(c, at); err != nil {
			s.fail(c, "introspect: mark token used", err)
			return
		}
		// Later introspections of this pair need no write.
		at.Pair.UsedAt = now
		s.tokens.put(string(hash), cachedToken{slimAccessToken(at), epoch}, s.tokens.begin())
	}
	c.JSON(http.StatusOK, activeToken{
		Active: true, Scope: at.Session.Scope, ClientID: at.Session.ClientID,
		Sub: at.User.ID, Username: at.User.Username, DeviceID: at.Session.DeviceID, TokenType: "Bearer",
		IssuedAt: at.Pair.CreatedAt.Unix(), Expires: at.Pair.AccessExpiresAt.Unix(),
		ExpiresIn: int64(at.Pair.AccessExpiresAt.Sub(now).Seconds()),
	})
}

// activeToken is RFC 7662's answer for an active token, with the fields
// Synapse reads (P-HS-2). A struct encodes faster than a map, and this is
// the homeserver's hot path.
type activeToken struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope"`
	ClientID  string `json:"client_id"`
	Sub       string `json:"sub"`
	Username  string `json:"username"`
	DeviceID  string `json:"device_id"`
	TokenType string `json:"token_type"`
	IssuedAt  int64  `json:"iat"`
	Expires   int64  `json:"exp"`
	ExpiresIn int64  `json:"expires_in"`
}

// homeserverAuthenticated reports whether the request carries the
// homeserver's shared secret as a Bearer token.
func (s *Server) homeserverAuthenticated(c *gin.Context) bool {
	if s.cfg.HomeserverSecret == "" {
		return false
	}
	h := c.GetHeader("Authorization")
	if !isBearer(h) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(h[len(bearerPrefix):]), []byte(s.cfg.HomeserverSecret)) == 1
}

const bearerPrefix = "Bearer "

func isBearer(h string) bool {
	return len(h) > len(bearerPrefix) && strings.EqualFold(h[:len(bearerPrefix)], bearerPrefix)
}

func (s *Server) markUsed(c *gin.Context, at store.AccessToken) error {
	ctx := c.Request.Context()
	return s.store.Update(ctx, func(tx store.Tx) error {
		p, err := tx.TokenPair(ctx, at.Pair.ID)
		now := s.now()
		if err != nil || !pairUsed(&p, now) {
			return err
		}
		if err := tx.UpdateTokenPair(ctx, p); err != nil {
			return err
		}
		sess, err := tx.Session(ctx, p.SessionID)
		if err != nil {
			return err
		}
		sessionActive(&sess, sess.LastIP, now)
		return tx.UpdateSession(ctx, sess)
	})
}

// accessActive reports whether an access token may be used now.
func (s *Server) accessActive(at store.AccessToken) bool {
	return s.now().Before(at.Pair.AccessExpiresAt) && at.Pair.RevokedAt.IsZero() &&
		at.Session.EndedAt.IsZero() && at.User.DeactivatedAt.IsZero()
}
