package devicegrant

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-jose/go-jose/v4"

	"github.com/devicegrant/devicegrant/store"
)

// slowDownStep is how much a device's interval grows each time it polls
// too fast (RFC 8628 §3.5), and maxPollInterval where it stops growing: a
// client stuck in a tight retry loop would otherwise be told to wait
// hours, longer than its code lives, and never pair.
const (
	slowDownStep    = 5 * time.Second
	maxPollInterval = 60 * time.Second
)

// token is the token endpoint (RFC 6749 §3.2).
func (s *Server) token(c *gin.Context) {
	cl, oe := s.authenticateClient(c)
	if oe != nil {
		writeError(c, oe)
		return
	}
	grant := c.PostForm("grant_type")
	switch grant {
	case grantDeviceCode, grantRefreshToken, grantAuthorizationCode:
	case "":
		writeError(c, errInvalidRequest("grant_type is missing"))
		return
	default:
		writeError(c, &oauthError{http.StatusBadRequest, "unsupported_grant_type", "grant_type " + grant + " is not supported here"})
		return
	}
	if !cl.meta.HasGrant(grant) {
		writeError(c, errUnauthorizedClient("this client did not register the grant type "+grant))
		return
	}
	r := tokenRequest{client: cl, ip: c.ClientIP(),
		code: c.PostForm("code"), redirectURI: c.PostForm("redirect_uri"), verifier: c.PostForm("code_verifier"),
		deviceCode:   c.PostForm("device_code"),
		refreshToken: c.PostForm("refresh_token"), scope: c.PostForm("scope")}
	var (
		resp *tokenResponse
		err  error
	)
	switch grant {
	case grantDeviceCode:
		resp, err = s.redeemDeviceCode(c.Request.Context(), r)
	case grantAuthorizationCode:
		resp, err = s.exchangeCode(c.Request.Context(), r)
	default:
		resp, err = s.rotate(c.Request.Context(), cl.ID, r.refreshToken, r.scope, r.ip)
	}
	var e *oauthError
	switch {
	case errors.As(err, &e):
		writeError(c, e)
	case err != nil:
		s.fail(c, "token endpoint", err)
	default:
		c.Header("Cache-Control", "no-store")
		c.Header("Pragma", "no-cache")
		c.JSON(http.StatusOK, resp)
	}
}

// tokenRequest is a token endpoint request after client authentication,
// as the grants' rules take it: the form's values and the client's
// address, nothing of HTTP, so the rules can be called and tested without
// a request.
type tokenRequest struct {
	client                      *client
	ip                          string
	code, redirectURI, verifier string // authorization_code
	deviceCode                  string // device_code
	refreshToken, scope         string // refresh_token
}

// tokenResponse is RFC 6749 §5.1 (P-AC-4).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	IDToken      string `json:"id_token,omitempty"`
}

// redeemDeviceCode answers a device's poll (P-DEV-5, P-DEV-6). Polls
// that find nothing to exchange (pending, approved and waiting for the
// device, too early) are answered from memory (pollState, pacer) and write
// nothing. A ready grant is exchanged in one write transaction that looks
// at it again, so concurrent polls see it in turn and exactly one
// exchanges it.
func (s *Server) redeemDeviceCode(ctx context.Context, r tokenRequest) (*tokenResponse, error) {
	cl, code := r.client, r.deviceCode
	if code == "" {
		return nil, errInvalidRequest("device_code is missing")
	}
	if !wellFormed(code, prefixDeviceCode) {
		return nil, errInvalidGrant("unknown device_code")
	}
	hash := hashSecret(code)
	g, found, err := s.pollState(ctx, hash)
	if err != nil {
		return nil, err
	}
	now := s.now()
	if !found || g.ClientID != cl.ID {
		return nil, errInvalidGrant("unknown device_code")
	}
	oe := grantPollOutcome(g.State, g.ExpiresAt, now)
	if oe != nil && oe.code == "authorization_pending" {
		// Only the polls of a grant still waiting are paced (RFC 8628
		// §3.5); a ready grant is exchanged at once, and of concurrent
		// polls the exchange decides which one wins.
		if wait := s.pacing.poll(g.ID, now, g.Interval, max(maxPollInterval, s.cfg.PollInterval)); wait > 0 {
			return nil, &oauthError{http.StatusBadRequest, "slow_down", "polling too fast; wait at least " + wait.String() + " between polls"}
		}
	}
	if oe != nil {
		return nil, oe
	}
	// An exchange that asked for openid gets an id_token, as the
	// authorization-code grant does (P-OIDC-1). The signing keys are read
	// outside the transaction, and only once a grant is ready to be
	// exchanged. The exchange then runs again, with the keys, so a device
	// code is never spent unless the whole answer can be given.
	var keys []jose.JSONWebKey
	for {
		resp, err := s.exchangeDeviceCode(ctx, cl, hash, keys)
		if !errors.Is(err, errNeedKeys) {
			if err == nil {
				s.log.InfoContext(ctx, "device grant exchanged", "client_id", cl.ID)
			}
			return resp, err
		}
		if keys, err = s.signingKeys(ctx); err != nil {
			return nil, err
		}
	}
}

// grantPollOutcome is what a poll of a grant in state answers, or nil when
// the grant is ready to be exchanged.
func grantPollOutcome(state store.GrantState, expiresAt, now time.Time) *oauthError {
	switch {
	case state == store.GrantExchanged:
		return errInvalidGrant("this device_code was already exchanged for tokens")
	case !now.Before(expiresAt):
		return &oauthError{http.StatusBadRequest, "expired_token", "the device_code expired; start again"}
	}
	switch state {
	case store.GrantPending:
		return &oauthError{http.StatusBadRequest, "authorization_pending", "waiting for the user to approve"}
	case store.GrantApproved:
		return &oauthError{http.StatusBadRequest, "authorization_pending", "approved; waiting for the homeserver to create the device"}
	case store.GrantDenied:
		return &oauthError{http.StatusBadRequest, "access_denied", "the user denied the request"}
	case store.GrantReady:
		return nil
	}
	return &oauthError{http.StatusInternalServerError, "server_error", "device grant in unknown state " + string(state)}
}

// errNeedKeys asks exchangeDeviceCode's caller for the signing keys.
var errNeedKeys = errors.New("signing keys needed")

// exchangeDeviceCode exchanges a ready grant in one transaction, which
// reads the grant again: a concurrent poll may have exchanged it first.
// With keys nil it answers errNeedKeys instead of exchanging a grant that
// asked for openid.
func (s *Server) exchangeDeviceCode(ctx context.Context, cl *client, hash []byte, keys []jose.JSONWebKey) (*tokenResponse, error) {
	var resp *tokenResponse
	var outcome *oauthError
	err := s.store.Update(ctx, func(tx store.Tx) error {
		resp, outcome = nil, nil
		now := s.now()
		g, err := tx.DeviceGrantByDeviceCode(ctx, hash)
		if errors.Is(err, store.ErrNotFound) || (err == nil && g.ClientID != cl.ID) {
			outcome = errInvalidGrant("unknown device_code")
			return nil
		}
		if err != nil {
			return err
		}
		if outcome = grantPollOutcome(g.State, g.ExpiresAt, now); outcome != nil {
			return nil
		}
		user, err := accountOf(ctx, tx, g.UserID)
		if errors.Is(err, errDeactivated) {
			outcome = &oauthError{http.StatusBadRequest, "access_denied", err.Error()}
			return nil
		}
		if err != nil {
			return err
		}
		openid := hasScope(g.Scope, "openid")
		if openid && keys == nil {
			return errNeedKeys
		}
		sess, r, err := s.startSession(ctx, tx, user, cl.ID, g.Scope, g.RequesterIP, now)
		if err != nil {
			return err
		}
		if openid {
			// No nonce: the device grant has none. No auth_time: the
			// person approved at DecidedAt, but signed in on their phone
			// at some earlier time the grant does not record.
			if r.IDToken, err = s.idToken(keys[0], user, cl.ID, g.Scope, "", r.AccessToken, time.Time{}); err != nil {
				return err
			}
		}
		exchangeGrant(&g, sess.ID)
		resp = r
		return tx.UpdateDeviceGrant(ctx, g)
	})
	if err != nil {
		return nil, err
	}
	if outcome != nil {
		return nil, outcome
	}
	return resp, nil
}
