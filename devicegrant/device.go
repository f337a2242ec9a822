package devicegrant

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// deviceAuthorization is RFC 8628 §3.1–3.2 (P-DEV-1…3, P-DEV-8, P-DEV-9).
func (s *Server) deviceAuthorization(c *gin.Context) {
	ctx := c.Request.Context()
	if s.overLimit(c, s.deviceLimit) {
		return
	}
	cl, oe := s.authenticateClient(c)
	if oe != nil {
		writeError(c, oe)
		return
	}
	if !cl.meta.HasGrant(grantDeviceCode) {
		writeError(c, errUnauthorizedClient("this client did not register the grant type "+grantDeviceCode))
		return
	}
	sc, err := parseScopes(c.PostForm("scope"))
	if err != nil {
		writeError(c, &oauthError{http.StatusBadRequest, "invalid_scope", err.Error()})
		return
	}

	deviceCode := newToken(prefixDeviceCode)
	g := newDeviceGrant(store.DeviceGrant{
		DeviceCodeHash: hashSecret(deviceCode),
		ClientID:       cl.ID,
		Scope:          sc.String(),
		RequesterIP:    c.ClientIP(),
		RequesterAgent: storableText(c.Request.UserAgent(), 256),
		Interval:       s.cfg.PollInterval,
	}, s.now(), s.cfg.DeviceCodeTTL)
	// A fresh code collides with a live one with probability (live
	// codes)/20^8; a few tries make a failure practically impossible.
	for attempt := 0; ; attempt++ {
		g.UserCode = newUserCode()
		err = s.store.Update(ctx, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, g) })
		if !errors.Is(err, store.ErrAlreadyExists) || attempt == 4 {
			break
		}
	}
	if s.clientGone(ctx, cl.ID, err) {
		writeError(c, errInvalidClient("unknown client_id; register the client again"))
		return
	}
	if err != nil {
		s.fail(c, "store device grant", err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Header("Pragma", "no-cache")
	c.JSON(http.StatusOK, gin.H{
		"device_code":               deviceCode,
		"user_code":                 displayUserCode(g.UserCode),
		"verification_uri":          s.url(pathVerify),
		"verification_uri_complete": s.completeURI(g.UserCode),
		"expires_in":                int(s.cfg.DeviceCodeTTL.Seconds()),
		"interval":                  int(g.Interval.Seconds()),
	})
}

// completeURI is the QR-friendly verification_uri_complete (P-DEV-8):
// upper case, so that a QR encoder can use its dense alphanumeric mode. The
// scheme and host are case-insensitive; the issuer's path and /D/ are
// served in upper case too (see routes).
func (s *Server) completeURI(userCode string) string {
	return strings.ToUpper(s.issuer) + "D/" + userCode
}
