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

// redeemDeviceCode answers a device's poll (P-DEV-5, P-DEV-6). Every poll
// runs in one write transaction, so concurrent polls of an approved grant
// see it in turn and exactly one exchanges it.
func (s *Server) redeemDeviceCode(ctx context.Context, r tokenRequest) (*tokenResponse, error) {
	cl, code := r.client, r.deviceCode
	if code == "" {
		return nil, errInvalidRequest("device_code is missing")
	}
	if !wellFormed(code, prefixDeviceCode) {
		return nil, errInvalidGrant("unknown device_code")
	}
	// An exchange that asked for openid gets an id_token, as the
	// authorization-code grant does (P-OIDC-1). The signing keys are read
	// outside the transaction, and only once a grant is ready to be
	// exchanged: polls that find nothing to exchange never pay for them.
	// The exchange then runs again, with the keys, so a device code is
	// never spent unless the whole answer can be given.
	var keys []jose.JSONWebKey
	for {
		resp, err := s.exchangeDeviceCode(ctx, cl, code, keys)
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

// errNeedKeys asks exchangeDeviceCode's caller for the signing keys.
var errNeedKeys = errors.New("signing keys needed")

// exchangeDeviceCode is one poll's transaction. With keys nil it answers
// errNeedKeys instead of exchanging a ready grant that asked for openid.
func (s *Server) exchangeDeviceCode(ctx context.Context, cl *client, code string, keys []jose.JSONWebKey) (*tokenResponse, error) {
	var resp *tokenResponse
	var outcome *oauthError
	err := s.store.Update(ctx, func(tx store.Tx) error {
		resp, outcome = nil, nil
		now := s.now()
		g, err := tx.DeviceGrantByDeviceCode(ctx, hashSecret(code))
		if errors.Is(err, store.ErrNotFound) || (err == nil && g.ClientID != cl.ID) {
			outcome = errInvalidGrant("unknown device_code")
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case g.State == store.GrantExchanged:
			outcome = errInvalidGrant("this device_code was already exchanged for tokens")
			return nil
		case !now.Before(g.ExpiresAt):
			outcome = &oauthError{http.StatusBadRequest, "expired_token", "the device_code expired; start again"}
			return nil
		}
		// A fifth of the interval is forgiven: clients such as
		// golang.org/x/oauth2 poll on a ticker, so network and scheduling
		// jitter can bring a poll a little early, and answering slow_down
		// to a well-behaved client costs it five seconds.
		//
		// The interval is measured from the last poll answered without
		// slow_down, and grows only up to its cap (never below the
		// configured interval): so a too-fast poll at the cap writes
		// nothing, and a client that keeps hammering still gets an
		// answer once per interval.
		if !g.LastPolledAt.IsZero() && now.Sub(g.LastPolledAt) < g.Interval-g.Interval/5 {
			grown := min(g.Interval+slowDownStep, max(maxPollInterval, s.cfg.PollInterval))
			grew := grown > g.Interval
			g.Interval = max(g.Interval, grown)
			outcome = &oauthError{http.StatusBadRequest, "slow_down", "polling too fast; wait at least " + g.Interval.String() + " between polls"}
			if !grew {
				return nil
			}
			return tx.UpdateDeviceGrant(ctx, g)
		}
		g.LastPolledAt = now
		switch g.State {
		case store.GrantPending:
			outcome = &oauthError{http.StatusBadRequest, "authorization_pending", "waiting for the user to approve"}
			return tx.UpdateDeviceGrant(ctx, g)
		case store.GrantApproved:
			outcome = &oauthError{http.StatusBadRequest, "authorization_pending", "approved; waiting for the homeserver to create the device"}
			return tx.UpdateDeviceGrant(ctx, g)
		case store.GrantDenied:
			outcome = &oauthError{http.StatusBadRequest, "access_denied", "the user denied the request"}
			return nil
		case store.GrantReady:
		default:
			return errors.New("device grant in unknown state " + string(g.State))
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
