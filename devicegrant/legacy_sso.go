package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// The legacy SSO login (client-server spec, "Client login via SSO"): an
// app sends the browser to /login/sso/redirect?redirectUrl=…; the person
// signs in on our pages, is told which app is asking, confirms, and the
// browser goes back to redirectUrl with a loginToken, which the app
// exchanges once at POST /login (m.login.token).
//
// The redirect endpoint is reached on the homeserver's host, through the
// reverse proxy; it sends the browser on to the issuer's own page, where
// the sign-in cookies live. Login tokens are kept as authorization codes
// of the legacy client: single use, short-lived, stored as hashes.

// prefixLoginToken marks login tokens, like the other token kinds.
const prefixLoginToken = "dgl_"

// loginTokenTTL is how long a login token may wait for its exchange.
const loginTokenTTL = 2 * time.Minute

// pathLegacySSO is the issuer's page that asks the person to confirm.
const pathLegacySSO = "legacy/sso"

// checkSSORedirect checks an app's redirectUrl and returns it parsed, with
// what the person is shown as the app: its host, or for a private-use
// scheme without one (com.example.app:/cb), the scheme.
func checkSSORedirect(raw string) (*url.URL, string, *matrixError) {
	if raw == "" {
		return nil, "", mxErr(http.StatusBadRequest, "M_MISSING_PARAM", "redirectUrl is missing")
	}
	u, err := url.Parse(raw)
	bad := func(why string) (*url.URL, string, *matrixError) {
		return nil, "", mxErr(http.StatusBadRequest, "M_INVALID_PARAM", "redirectUrl %s", why)
	}
	switch {
	case len(raw) > 2048:
		return bad("is longer than 2048 bytes")
	case err != nil || u.Scheme == "" || u.Opaque != "":
		return bad("must be an absolute URL, such as https://app.example/ or com.example.app:/callback")
	case u.User != nil:
		return bad("must not carry a user name or password")
	case strings.ContainsAny(raw, "\r\n\t\\ "):
		return bad("has characters a URL cannot contain")
	}
	switch strings.ToLower(u.Scheme) {
	case "javascript", "data", "vbscript", "file", "blob", "about":
		return bad("has a scheme that cannot take a sign-in back to an app")
	case "http", "https":
		if u.Host == "" {
			return bad("has no host")
		}
	}
	if u.Host != "" {
		return u, u.Host, nil
	}
	return u, u.Scheme, nil
}

// withLoginToken appends loginToken to the app's URL, leaving its own
// query and fragment as they were.
func withLoginToken(u *url.URL, tok string) string {
	v := *u
	if v.RawQuery != "" {
		v.RawQuery += "&"
	}
	v.RawQuery += "loginToken=" + url.QueryEscape(tok)
	return v.String()
}

// legacySSORedirect is GET /login/sso/redirect: it sends the browser to
// the issuer's confirmation page.
func (s *Server) legacySSORedirect(c *gin.Context) {
	raw := c.Query("redirectUrl")
	if _, _, e := checkSSORedirect(raw); e != nil {
		writeMatrixError(c, e)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Redirect(http.StatusFound, s.url(pathLegacySSO)+"?redirectUrl="+url.QueryEscape(raw))
}

// legacySSOPage asks the signed-in person to confirm (signing them in
// first).
func (s *Server) legacySSOPage(c *gin.Context) {
	u, host, e := checkSSORedirect(c.Query("redirectUrl"))
	if e != nil {
		s.errorPage(c, http.StatusBadRequest, "This sign-in link is broken", "The app sent a return address that is not valid: "+e.msg+".")
		return
	}
	user := s.requireUser(c)
	if user == nil {
		return
	}
	s.showLegacySSO(c, user, u, host)
}

func (s *Server) showLegacySSO(c *gin.Context, user *store.User, u *url.URL, host string) {
	s.render(c, http.StatusOK, &legacySSOPage{
		frame:        frame{Title: "Sign in to " + host + "?", User: user},
		RedirectHost: host,
		Message:      u.String(),
		Hidden:       map[string]string{"redirectUrl": u.String()},
	})
}

// legacySSOSubmit mints the login token and sends the browser back to the
// app, or, on Cancel, shares nothing.
func (s *Server) legacySSOSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	if !s.checkCSRF(c) {
		return
	}
	u, host, e := checkSSORedirect(c.PostForm("redirectUrl"))
	if e != nil {
		s.errorPage(c, http.StatusBadRequest, "This sign-in link is broken", "The app sent a return address that is not valid: "+e.msg+".")
		return
	}
	user, ok := s.currentUser(c)
	if !ok {
		return
	}
	if user == nil { // signed out meanwhile: sign in, then confirm again
		s.render(c, http.StatusOK, &loginPage{
			frame: frame{Title: "Sign in"},
			Next:  s.prefix + pathLegacySSO + "?redirectUrl=" + url.QueryEscape(u.String()),
		})
		return
	}
	switch c.PostForm("action") {
	case "approve":
	case "deny":
		s.render(c, http.StatusOK, &messagePage{
			frame:   frame{Title: "Nothing was shared", User: user},
			Kind:    "bad",
			Message: host + " was not signed in to your account. You can close this page.",
		})
		return
	default:
		s.showLegacySSO(c, user, u, host)
		return
	}
	tok, err := s.mintLoginToken(ctx, user, u.String())
	if err != nil {
		s.log.ErrorContext(ctx, "legacy SSO: mint login token", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Nothing was shared. Please try again.")
		return
	}
	s.log.InfoContext(ctx, "legacy SSO confirmed", "user", user.Username, "app", host)
	c.Redirect(http.StatusSeeOther, withLoginToken(u, tok))
}

// mintLoginToken stores a new login token for user and returns it.
func (s *Server) mintLoginToken(ctx context.Context, user *store.User, redirect string) (string, error) {
	tok := newToken(prefixLoginToken)
	err := s.store.Update(ctx, func(tx store.Tx) error {
		now := s.now()
		if err := s.ensureLegacyClient(ctx, tx, now); err != nil {
			return err
		}
		return tx.CreateAuthCode(ctx, store.AuthCode{
			ID: newID(), CodeHash: hashSecret(tok), ClientID: legacyClientID, RedirectURI: redirect,
			Scope: scopeAPI, UserID: user.ID, AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(loginTokenTTL),
			Status: store.AuthCodeIssued,
		})
	})
	if err != nil {
		return "", fmt.Errorf("devicegrant: mint login token: %w", err)
	}
	return tok, nil
}

// spendLoginToken checks a login token inside tx. A token presented a
// second time was leaked or replayed: the session its first use started is
// ended (RFC 6749 §4.1.2 asks as much of authorization codes) and the
// returned code has status used.
func (s *Server) spendLoginToken(ctx context.Context, tx store.Tx, tok string, now time.Time) (store.AuthCode, *matrixError, error) {
	invalid := mxErr(http.StatusForbidden, "M_FORBIDDEN", "invalid login token; sign in again")
	if !wellFormed(tok, prefixLoginToken) {
		return store.AuthCode{}, invalid, nil
	}
	a, err := tx.AuthCodeByCode(ctx, hashSecret(tok))
	if errors.Is(err, store.ErrNotFound) || (err == nil && a.ClientID != legacyClientID) {
		return store.AuthCode{}, invalid, nil
	}
	if err != nil {
		return a, nil, err
	}
	switch {
	case a.Status == store.AuthCodeUsed:
		e := mxErr(http.StatusForbidden, "M_FORBIDDEN", "this login token was already used; the session it started has been ended; sign in again")
		if a.SessionID == "" {
			return a, e, nil
		}
		sess, err := tx.Session(ctx, a.SessionID)
		if err != nil {
			return a, nil, err
		}
		return a, e, s.endSession(ctx, tx, sess, endCodeReplay, now)
	case a.Status != store.AuthCodeIssued || !now.Before(a.ExpiresAt):
		return a, mxErr(http.StatusForbidden, "M_FORBIDDEN", "the login token expired; sign in again"), nil
	}
	return a, nil, nil
}
