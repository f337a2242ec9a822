package devicegrant

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/devicegrant/clientmeta"
	"github.com/devicegrant/devicegrant/store"
)

// The legacy Matrix login API (client-server spec: "Login", "Refresh",
// "Logout", "Single Sign-On"), for clients and bots that do not speak
// OAuth 2.0 yet. Once Synapse delegates authentication, it no longer serves
// these endpoints; the reverse proxy sends them here, as it would to
// matrix-authentication-service. The sessions they start are ordinary
// sessions of one built-in client, so introspection, the account page,
// ending a session and deactivation treat them like any other.
//
// Not offered: user-interactive authentication, registration, application
// service login.

// legacyClientID is the built-in client every legacy session belongs to.
// Registered client ids are random base32, so it cannot collide.
const legacyClientID = "matrix-legacy-login"

// legacyClientMetadata is the row stored for it, which sessions need as
// their client; loadClient never parses it (it is not a valid
// registration) but answers legacyClient.
const legacyClientMetadata = `{"client_name":"Legacy Matrix login"}`

// legacyClient is the built-in client as the rest of the server sees it: a
// public client with a name and no grant types, so the token, device and
// authorization endpoints refuse it and nobody can run an OAuth flow as it.
func legacyClient() *client {
	return &client{
		Client: store.Client{ID: legacyClientID, Metadata: []byte(legacyClientMetadata)},
		meta:   &clientmeta.Metadata{ClientName: "Legacy Matrix login", TokenEndpointAuthMethod: clientmeta.AuthNone},
	}
}

// Limits of the legacy API.
const (
	// legacyBodyLimit bounds a login, refresh or logout body.
	legacyBodyLimit = 64 << 10
	// legacyDeviceWait is the default LegacyLogin.DeviceWait (P-HS-3).
	legacyDeviceWait = 20 * time.Second
	// legacyNameLimit is the longest initial_device_display_name, in
	// characters, as Synapse has it.
	legacyNameLimit = 100
	// legacyTokenLifetime is how long an access token lives when the
	// client did not ask for a refresh token: the legacy API's tokens do
	// not expire, so this only has to outlive any real deployment.
	legacyTokenLifetime = 100 * 365 * 24 * time.Hour
)

// Legacy login types.
const (
	loginPassword = "m.login.password"
	loginToken    = "m.login.token"
	loginSSO      = "m.login.sso"
)

// endLogoutAll is the end reason of sessions ended by /logout/all.
const endLogoutAll = "signed out everywhere (logout/all)"

// LegacyLogin turns the legacy Matrix login API off, in whole or in part.
// The zero value serves all of it.
type LegacyLogin struct {
	// Disabled serves none of the legacy endpoints (they answer 404
	// M_UNRECOGNIZED), as a homeserver with only OAuth 2.0 clients wants.
	Disabled bool
	// PasswordDisabled refuses m.login.password; the SSO redirect and
	// m.login.token stay, so every password is typed on our pages only.
	PasswordDisabled bool
	// DeviceWait is how long a login waits for the homeserver to create
	// its Matrix device before it answers 503. Default 20 seconds.
	DeviceWait time.Duration
}

// legacyFlows lists the login types on offer, in the order clients are
// shown them; nil when the legacy API is off.
func legacyFlows(l LegacyLogin) []string {
	if l.Disabled {
		return nil
	}
	var f []string
	if !l.PasswordDisabled {
		f = append(f, loginPassword)
	}
	return append(f, loginSSO, loginToken)
}

// matrixError is a client-server API error: {"errcode": …, "error": …}.
type matrixError struct {
	status     int
	code       string
	msg        string
	retryAfter time.Duration // M_LIMIT_EXCEEDED: how long to wait
}

func (e *matrixError) Error() string { return e.code + ": " + e.msg }

func mxErr(status int, code, format string, args ...any) *matrixError {
	return &matrixError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// writeMatrixError sends e in the Matrix error format.
func writeMatrixError(c *gin.Context, e *matrixError) {
	c.Header("Cache-Control", "no-store")
	body := gin.H{"errcode": e.code, "error": e.msg}
	if e.code == "M_UNKNOWN_TOKEN" {
		body["soft_logout"] = false
	}
	if e.retryAfter > 0 {
		ms := e.retryAfter.Milliseconds()
		body["retry_after_ms"] = ms
		c.Header("Retry-After", fmt.Sprint((ms+999)/1000))
	}
	c.JSON(e.status, body)
}

// legacyLogin is a checked POST /login body.
type legacyLogin struct {
	typ      string
	username string // localpart, for m.login.password
	password string
	token    string // for m.login.token
	deviceID string // "" when the client asked for a new device
	name     string // initial_device_display_name
	refresh  bool
}

// decodeLegacyJSON reads a JSON object body into dst. The Content-Type is
// not checked for a body that is JSON: the spec does not require one, and
// scripts written for Synapse (which ignores it) often send JSON with
// curl's form type. It only makes the error for a body that is not JSON
// clearer.
func decodeLegacyJSON(contentType string, body io.Reader, dst any) *matrixError {
	b, err := io.ReadAll(io.LimitReader(body, legacyBodyLimit+1))
	if err != nil {
		return mxErr(http.StatusBadRequest, "M_NOT_JSON", "could not read the body")
	}
	if len(b) > legacyBodyLimit {
		return mxErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "the body is larger than %d bytes", legacyBodyLimit)
	}
	if !json.Valid(b) {
		if mt, _, _ := mime.ParseMediaType(contentType); contentType != "" && mt != "application/json" {
			return mxErr(http.StatusBadRequest, "M_NOT_JSON", "the body must be a JSON object (Content-Type: application/json), not %s", mt)
		}
		return mxErr(http.StatusBadRequest, "M_NOT_JSON", "the body is not valid JSON")
	}
	if err := json.Unmarshal(b, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return mxErr(http.StatusBadRequest, "M_BAD_JSON", "%s has the wrong type (%s)", te.Field, te.Value)
		}
		return mxErr(http.StatusBadRequest, "M_BAD_JSON", "the body must be a JSON object")
	}
	return nil
}

// parseLegacyLogin checks a POST /login body against the spec and what is
// on offer here (P-LEG-1). serverName strips the server from a full user id.
func parseLegacyLogin(contentType string, body io.Reader, serverName string, l LegacyLogin) (legacyLogin, *matrixError) {
	var in struct {
		Type       string `json:"type"`
		Identifier *struct {
			Type string `json:"type"`
			User string `json:"user"`
		} `json:"identifier"`
		User                     string `json:"user"` // deprecated since v1.0, still sent
		Password                 string `json:"password"`
		Token                    string `json:"token"`
		DeviceID                 string `json:"device_id"`
		InitialDeviceDisplayName string `json:"initial_device_display_name"`
		RefreshToken             bool   `json:"refresh_token"`
	}
	if e := decodeLegacyJSON(contentType, body, &in); e != nil {
		return legacyLogin{}, e
	}
	out := legacyLogin{typ: in.Type, deviceID: in.DeviceID, name: strings.TrimSpace(in.InitialDeviceDisplayName), refresh: in.RefreshToken}
	switch in.Type {
	case "":
		return out, mxErr(http.StatusBadRequest, "M_MISSING_PARAM", "type is missing; GET this endpoint for the login types on offer")
	case loginPassword:
		if l.PasswordDisabled {
			return out, mxErr(http.StatusBadRequest, "M_UNKNOWN", "password login is turned off on this server; use SSO (m.login.sso) or pair the device with matrix-pair")
		}
		user := in.User
		if in.Identifier != nil {
			if in.Identifier.Type != "m.id.user" {
				return out, mxErr(http.StatusBadRequest, "M_UNKNOWN", "identifier type %q is not supported here; use m.id.user", in.Identifier.Type)
			}
			user = in.Identifier.User
		}
		if user == "" {
			return out, mxErr(http.StatusBadRequest, "M_MISSING_PARAM", "identifier.user is missing")
		}
		if in.Password == "" {
			return out, mxErr(http.StatusBadRequest, "M_MISSING_PARAM", "password is missing")
		}
		out.username, out.password = localpart(user, serverName), in.Password
	case loginToken:
		if in.Token == "" {
			return out, mxErr(http.StatusBadRequest, "M_MISSING_PARAM", "token is missing")
		}
		out.token = in.Token
	default:
		return out, mxErr(http.StatusBadRequest, "M_UNKNOWN", "login type %q is not supported here; GET this endpoint for the types on offer", in.Type)
	}
	if out.deviceID != "" {
		if err := checkDeviceID(out.deviceID); err != nil {
			return out, mxErr(http.StatusBadRequest, "M_INVALID_PARAM", "device_id: %s", err)
		}
	}
	if utf8.RuneCountInString(out.name) > legacyNameLimit {
		return out, mxErr(http.StatusBadRequest, "M_INVALID_PARAM", "initial_device_display_name is longer than %d characters", legacyNameLimit)
	}
	// JSON can carry a NUL, text in the database cannot (PostgreSQL).
	if strings.ContainsRune(out.name, 0) {
		return out, mxErr(http.StatusBadRequest, "M_INVALID_PARAM", "initial_device_display_name holds a NUL character")
	}
	return out, nil
}

// newLegacyDeviceID makes a device id as Synapse does: ten capital
// letters, the shortest P-SCOPE-2 allows.
func newLegacyDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 10)
	for i := range b {
		var r [1]byte
		for {
			rand.Read(r[:])
			if r[0] < 234 { // 9×26: every letter equally likely
				break
			}
		}
		b[i] = letters[r[0]%26]
	}
	return string(b)
}

// legacyScope is the scope of a legacy session on deviceID: the full
// Matrix API, as the legacy API's tokens have it.
func legacyScope(deviceID string) string {
	return scopeAPI + " " + scopeDevicePrefix + deviceID
}

// legacyLoginResponse is the body of a successful POST /login.
type legacyLoginResponse struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token"`
	DeviceID     string `json:"device_id"`
	HomeServer   string `json:"home_server"` // deprecated, still read by old clients
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
}

// legacyOn answers 404 M_UNRECOGNIZED, as a homeserver does for an
// endpoint it does not serve, while the legacy API is off.
func (s *Server) legacyOn(c *gin.Context) {
	if s.cfg.LegacyLogin.Disabled {
		writeMatrixError(c, mxErr(http.StatusNotFound, "M_UNRECOGNIZED", "the legacy login API is turned off on this server; sign in with OAuth 2.0"))
		c.Abort()
		return
	}
	c.Next()
}

// legacyLoginFlows is GET /login.
func (s *Server) legacyLoginFlows(c *gin.Context) {
	flows := []gin.H{}
	for _, f := range legacyFlows(s.cfg.LegacyLogin) {
		flows = append(flows, gin.H{"type": f})
	}
	c.JSON(http.StatusOK, gin.H{"flows": flows})
}

// legacyLoginSubmit is POST /login.
func (s *Server) legacyLoginSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	in, e := parseLegacyLogin(c.ContentType(), c.Request.Body, s.cfg.ServerName, s.cfg.LegacyLogin)
	if e != nil {
		writeMatrixError(c, e)
		return
	}
	var user *store.User
	if in.typ == loginPassword {
		if user, e = s.legacyPassword(c, in.username, in.password); e != nil {
			writeMatrixError(c, e)
			return
		}
	}
	if in.deviceID == "" {
		in.deviceID = newLegacyDeviceID()
	}
	res, e, err := s.startLegacySession(ctx, in, user, c.ClientIP())
	if err != nil {
		s.legacyFail(c, "legacy login", err)
		return
	}
	if e != nil {
		writeMatrixError(c, e)
		return
	}
	if e, err := s.awaitDevice(ctx, res); err != nil || e != nil {
		if err != nil {
			s.legacyFail(c, "legacy login: wait for the device", err)
		} else {
			writeMatrixError(c, e)
		}
		return
	}
	s.log.InfoContext(ctx, "legacy login", "type", in.typ, "user", res.username, "client", c.ClientIP())
	c.Header("Cache-Control", "no-store")
	out := legacyLoginResponse{
		UserID: "@" + res.username + ":" + s.cfg.ServerName, AccessToken: res.tokens.AccessToken,
		DeviceID: in.deviceID, HomeServer: s.cfg.ServerName,
	}
	if in.refresh {
		out.RefreshToken, out.ExpiresInMS = res.tokens.RefreshToken, s.cfg.AccessTokenTTL.Milliseconds()
	}
	c.JSON(http.StatusOK, out)
}

// legacyPassword checks a password login with the web sign-in's limits
// (per address and per account) and its bound on argon2 work.
func (s *Server) legacyPassword(c *gin.Context, username, password string) (*store.User, *matrixError) {
	u, err := s.store.UserByUsername(c.Request.Context(), username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.ErrorContext(c.Request.Context(), "legacy login: look up user", "err", err)
		return nil, mxErr(http.StatusInternalServerError, "M_UNKNOWN", "the server could not complete the request; try again")
	}
	hash := u.PasswordHash
	if err != nil {
		hash = s.dummyHash() // same work for unknown users: no timing oracle
	}
	ok, wait := s.passwordAttempt(c, username, u.ID, hash, password)
	switch {
	case wait > 0:
		e := mxErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many failed logins; retry in %s", humanDuration(wait))
		e.retryAfter = wait
		return nil, e
	case err != nil || !ok:
		return nil, mxErr(http.StatusForbidden, "M_FORBIDDEN", "invalid username or password")
	case !u.DeactivatedAt.IsZero():
		return nil, mxErr(http.StatusForbidden, "M_USER_DEACTIVATED", "this account has been deactivated")
	}
	return &u, nil
}

// legacyStarted is a legacy session just written, with what its login
// still waits for.
type legacyStarted struct {
	username string
	session  store.Session
	tokens   *tokenResponse
	outboxID int64 // the upsert_device call to wait for; 0 for none
}

// startLegacySession (P-LEG-2) spends a login token (for m.login.token),
// starts the session with startSession (re-using a device ends its earlier
// session, P-SCOPE-4) and queues the device's creation, all in one
// transaction. user is the checked password login's account, or nil.
func (s *Server) startLegacySession(ctx context.Context, in legacyLogin, user *store.User, ip string) (legacyStarted, *matrixError, error) {
	var res legacyStarted
	var outcome *matrixError
	var replay bool
	err := s.store.Update(ctx, func(tx store.Tx) error {
		res, outcome, replay = legacyStarted{}, nil, false
		now := s.now()
		var u store.User
		var spent *store.AuthCode
		if in.typ == loginToken {
			a, bad, err := s.spendLoginToken(ctx, tx, in.token, now)
			if err != nil || bad != nil {
				outcome, replay = bad, bad != nil && a.Status == store.AuthCodeUsed
				return err
			}
			u, err = accountOf(ctx, tx, a.UserID)
			if errors.Is(err, errDeactivated) {
				outcome = mxErr(http.StatusForbidden, "M_USER_DEACTIVATED", "this account has been deactivated")
				return nil
			}
			if err != nil {
				return err
			}
			spent = &a
		} else {
			u = *user
		}
		// Created on first use, once nothing can go wrong any more: a
		// refused login leaves nothing behind.
		if err := s.ensureLegacyClient(ctx, tx, now); err != nil {
			return err
		}
		earlier, err := tx.SessionsByDevice(ctx, u.ID, in.deviceID)
		if err != nil {
			return err
		}
		sess, tokens, err := s.startSession(ctx, tx, u, legacyClientID, legacyScope(in.deviceID), ip, now)
		if err != nil {
			return err
		}
		// The spec ignores initial_device_display_name for a device that
		// exists; so does this.
		sess.DeviceName = in.name
		if len(earlier) > 0 {
			sess.DeviceName = earlier[0].DeviceName
		}
		if err := tx.UpdateSession(ctx, sess); err != nil {
			return err
		}
		if !in.refresh {
			p, err := tx.TokenPairByRefresh(ctx, hashSecret(tokens.RefreshToken))
			if err != nil {
				return err
			}
			p.AccessExpiresAt = now.Add(legacyTokenLifetime)
			if err := tx.UpdateTokenPair(ctx, p); err != nil {
				return err
			}
		}
		if spent != nil {
			useAuthCode(spent, sess.ID)
			if err := tx.UpdateAuthCode(ctx, *spent); err != nil {
				return err
			}
		}
		name := ""
		if len(earlier) == 0 {
			name = in.name
		}
		id, err := s.provisionDevice(ctx, tx, u.Username, in.deviceID, name, "")
		res = legacyStarted{username: u.Username, session: sess, tokens: tokens, outboxID: id}
		return err
	})
	if replay {
		s.log.WarnContext(ctx, "login token replayed: the session it started is ended")
	}
	if err != nil {
		return res, nil, fmt.Errorf("devicegrant: start legacy session: %w", err)
	}
	return res, outcome, nil
}

// ensureLegacyClient creates the built-in legacy client on first use.
func (s *Server) ensureLegacyClient(ctx context.Context, tx store.Tx, now time.Time) error {
	_, err := tx.Client(ctx, legacyClientID)
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return tx.CreateClient(ctx, store.Client{ID: legacyClientID, Metadata: []byte(legacyClientMetadata), CreatedAt: now})
}

// awaitDevice holds a login's answer until the homeserver has its Matrix
// device (P-HS-3), as a device grant waits in state approved: the outbox
// deletes the upsert_device entry once delivered. If the homeserver does
// not answer in time the session is ended, so tokens nobody received
// cannot linger, and the client is told to try again.
func (s *Server) awaitDevice(ctx context.Context, res legacyStarted) (*matrixError, error) {
	if res.outboxID == 0 {
		return nil, nil
	}
	deadline := time.Now().Add(orDuration(s.cfg.LegacyLogin.DeviceWait, legacyDeviceWait))
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		_, err := s.store.OutboxEntry(ctx, res.outboxID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break // the client went away, or the homeserver is too slow
		}
		if err != nil {
			return nil, fmt.Errorf("devicegrant: read outbox entry: %w", err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	// The client may have gone; end the session whatever happens to it.
	ctx = context.WithoutCancel(ctx)
	err := s.store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Session(ctx, res.session.ID)
		if err != nil {
			return err
		}
		return s.endSession(ctx, tx, cur, endDeviceTimeout, s.now())
	})
	if err != nil {
		return nil, fmt.Errorf("devicegrant: end a legacy session without its device: %w", err)
	}
	s.log.WarnContext(ctx, "legacy login: the homeserver did not create the device in time; session ended", "user", res.username)
	e := mxErr(http.StatusServiceUnavailable, "M_UNKNOWN", "the homeserver did not create the device in time; try again later")
	e.retryAfter = 30 * time.Second
	return e, nil
}

// endDeviceTimeout is the end reason of a legacy login whose device the
// homeserver did not create in time.
const endDeviceTimeout = "the homeserver did not create the device in time"

// legacyRefresh is POST /refresh (P-LEG-4). Rotation is the token endpoint's
// (P-RT-2): the old refresh token stays usable until the new pair is used.
func (s *Server) legacyRefresh(c *gin.Context) {
	var in struct {
		RefreshToken string `json:"refresh_token"`
	}
	if e := decodeLegacyJSON(c.ContentType(), c.Request.Body, &in); e != nil {
		writeMatrixError(c, e)
		return
	}
	if in.RefreshToken == "" {
		writeMatrixError(c, mxErr(http.StatusBadRequest, "M_MISSING_PARAM", "refresh_token is missing"))
		return
	}
	resp, err := s.rotate(c.Request.Context(), legacyClientID, in.RefreshToken, "", c.ClientIP())
	var oe *oauthError
	switch {
	case errors.As(err, &oe) && oe.status < 500:
		writeMatrixError(c, mxErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "%s", oe.desc))
	case err != nil:
		s.legacyFail(c, "legacy refresh", err)
	default:
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, gin.H{"access_token": resp.AccessToken, "refresh_token": resp.RefreshToken,
			"expires_in_ms": s.cfg.AccessTokenTTL.Milliseconds()})
	}
}

// legacyLogout is POST /logout (all false) and /logout/all (all true):
// the session of the presented access token, or every session of its
// user, ends, and with it its Matrix device.
func (s *Server) legacyLogout(all bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		h := c.GetHeader("Authorization")
		if !isBearer(h) {
			writeMatrixError(c, mxErr(http.StatusUnauthorized, "M_MISSING_TOKEN", "send the access token as Authorization: Bearer"))
			return
		}
		tok := h[len(bearerPrefix):]
		unknown := mxErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "unknown or expired access token")
		if !wellFormed(tok, prefixAccess) {
			writeMatrixError(c, unknown)
			return
		}
		var outcome *matrixError
		var username string
		err := s.store.Update(ctx, func(tx store.Tx) error {
			outcome = nil
			at, err := tx.AccessToken(ctx, hashSecret(tok))
			if errors.Is(err, store.ErrNotFound) || (err == nil && !s.accessActive(at)) {
				outcome = unknown
				return nil
			}
			if err != nil {
				return err
			}
			now := s.now()
			username = at.User.Username
			if !all {
				return s.endSession(ctx, tx, at.Session, endRevoked, now)
			}
			live, err := tx.SessionsByUser(ctx, at.User.ID, false)
			if err != nil {
				return err
			}
			for _, x := range live {
				if err := s.endSession(ctx, tx, x, endLogoutAll, now); err != nil {
					return err
				}
			}
			return nil
		})
		switch {
		case err != nil:
			s.legacyFail(c, "legacy logout", err)
		case outcome != nil:
			writeMatrixError(c, outcome)
		default:
			s.log.InfoContext(ctx, "legacy logout", "user", username, "all", all)
			c.JSON(http.StatusOK, gin.H{})
		}
	}
}

// legacyFail logs an internal error and answers 500 M_UNKNOWN.
func (s *Server) legacyFail(c *gin.Context, what string, err error) {
	s.log.ErrorContext(c.Request.Context(), what, "route", c.FullPath(), "err", err)
	writeMatrixError(c, mxErr(http.StatusInternalServerError, "M_UNKNOWN", "the server could not complete the request; try again"))
}

// legacyRoutes serves the legacy API under /_matrix/client/v3 and its r0
// alias (api), and the SSO confirmation page (pages).
func (s *Server) legacyRoutes(api, pages *gin.RouterGroup) {
	for _, v := range []string{"v3", "r0"} {
		m := api.Group("_matrix/client/"+v, cors, s.legacyOn)
		m.GET("login", s.legacyLoginFlows)
		m.POST("login", s.legacyLoginSubmit)
		m.GET("login/sso/redirect", s.legacySSORedirect)
		m.POST("refresh", s.legacyRefresh)
		m.POST("logout", s.legacyLogout(false))
		m.POST("logout/all", s.legacyLogout(true))
		for _, p := range []string{"login", "refresh", "logout", "logout/all"} {
			m.OPTIONS(p, preflight)
		}
	}
	lp := pages.Group("", s.legacyOn)
	lp.GET(pathLegacySSO, s.legacySSOPage)
	lp.POST(pathLegacySSO, s.legacySSOSubmit)
}
