package devicegrant

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// The phone pages of the device flow (P-DEV-7): enter a code (or arrive
// with it from the QR code), sign in, compare the code, approve or deny.

func (s *Server) enterCodePage(c *gin.Context) {
	s.render(c, http.StatusOK, &enterCodePage{frame: frame{Title: "Connect a device"}, Code: c.Query("user_code")})
}

func (s *Server) enterCodeSubmit(c *gin.Context) {
	if !s.checkCSRF(c) {
		return
	}
	user, ok := s.currentUser(c)
	if !ok {
		return
	}
	typed := c.PostForm("user_code")
	g, bad := s.lookupUserCode(c, user, typed)
	if bad != nil {
		s.render(c, bad.status, &enterCodePage{frame: frame{Title: "Connect a device", Error: bad.msg}, Code: typed})
		return
	}
	c.Redirect(http.StatusSeeOther, s.prefix+"D/"+g.UserCode)
}

// lookupUserCode finds the live, pending grant behind a code a person
// typed or followed. Wrong codes count against the address and the
// anonymous global budget, or, for a signed-in person, against the account
// and the global budget of all signed-in people (P-DEV-4). While a budget
// is spent, no code is looked up at all, so a guesser learns nothing. It
// says why, with the status to answer, when there is no such grant.
func (s *Server) lookupUserCode(c *gin.Context, user *store.User, typed string) (store.DeviceGrant, *codeProblem) {
	now := s.now()
	// Two global budgets: a guesser who spends the anonymous one does not
	// block the people approving their devices, and accounts made in bulk
	// share one budget, so they cannot multiply the guesses.
	limit, key := s.codeLimit, "ip:"+addressKey(c.ClientIP())
	if user != nil {
		limit, key = s.accountCodes, "user:"+user.ID
	}
	t, wait := limit.take(key, now, false)
	if wait > 0 {
		c.Header("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		return store.DeviceGrant{}, &codeProblem{http.StatusTooManyRequests,
			"Too many wrong codes were tried. Please wait " + humanDuration(wait) + " and try again."}
	}
	code := normalizeUserCode(typed)
	if code == "" {
		return store.DeviceGrant{}, &codeProblem{http.StatusBadRequest, "That is not a valid code. Codes have 8 letters, like BCDF-GHJK."}
	}
	g, err := s.store.DeviceGrantByUserCode(c.Request.Context(), code)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.succeeded(now) // our fault, not a guess
		s.log.ErrorContext(c.Request.Context(), "look up user code", "err", err)
		return store.DeviceGrant{}, &codeProblem{http.StatusInternalServerError, "Something went wrong on our side. Please try again."}
	}
	if err != nil || !now.Before(g.ExpiresAt) {
		return store.DeviceGrant{}, &codeProblem{http.StatusBadRequest,
			"That code is not valid or has expired. Check the device's screen; if its code changed, enter the new one."}
	}
	t.succeeded(now)
	return g, nil
}

// codeProblem is why a user code led nowhere: the status to answer and
// what to tell the person.
type codeProblem struct {
	status int
	msg    string
}

// grantPage is verification_uri_complete: /D/<code>.
func (s *Server) grantPage(c *gin.Context) {
	user, ok := s.currentUser(c)
	if !ok {
		return
	}
	g, bad := s.lookupUserCode(c, user, c.Param("code"))
	if bad != nil {
		s.render(c, bad.status, &enterCodePage{frame: frame{Title: "Connect a device", Error: bad.msg}})
		return
	}
	s.showGrant(c, g, user, "")
}

// showGrant renders what a grant needs next: its outcome when decided, a
// sign-in form, or the consent page.
func (s *Server) showGrant(c *gin.Context, g store.DeviceGrant, user *store.User, errMsg string) {
	if g.State != store.GrantPending {
		s.render(c, http.StatusOK, &messagePage{
			frame:   frame{Title: "Already answered"},
			Kind:    "bad",
			Again:   true,
			Message: "This request was already approved or denied. If the device still shows a code, enter that one.",
		})
		return
	}
	if user == nil {
		s.render(c, http.StatusOK, &loginPage{frame: frame{Title: "Sign in"}, Code: displayUserCode(g.UserCode), CodeRaw: g.UserCode})
		return
	}
	cl, err := s.loadClient(c.Request.Context(), g.ClientID)
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "load client for consent", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Please try again.")
		return
	}
	now := s.now()
	cv := cl.view()
	s.render(c, http.StatusOK, &consentPage{
		frame:   frame{Title: "Allow this device?", User: user, Error: errMsg},
		Code:    displayUserCode(g.UserCode),
		CodeRaw: g.UserCode,
		Client:  cv,
		Grant: grantView{
			Ago:       humanDuration(now.Sub(g.CreatedAt)) + " ago (" + g.CreatedAt.UTC().Format("15:04 UTC") + ")",
			IP:        g.RequesterIP,
			Agent:     g.RequesterAgent,
			ExpiresIn: humanDuration(g.ExpiresAt.Sub(now)),
		},
		Scopes:   describeScopes(g.Scope),
		Replaces: s.replacedSignIn(c.Request.Context(), user, deviceOf(g.Scope)),
	})
}

func (s *Server) grantSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	if !s.checkCSRF(c) {
		return
	}
	user, ok := s.currentUser(c)
	if !ok {
		return
	}
	g, bad := s.lookupUserCode(c, user, c.Param("code"))
	if bad != nil {
		s.render(c, bad.status, &enterCodePage{frame: frame{Title: "Connect a device", Error: bad.msg}})
		return
	}
	if user == nil {
		s.showGrant(c, g, nil, "")
		return
	}
	action := c.PostForm("action")
	if action != "approve" && action != "deny" {
		s.showGrant(c, g, user, "Choose Approve or Deny.")
		return
	}
	if action == "approve" && c.PostForm("confirm") != "yes" {
		s.showGrant(c, g, user, "Tick the box to confirm that you started this sign-in and the codes match.")
		return
	}
	approve := action == "approve"
	deviceName := ""
	if cl, err := s.loadClient(ctx, g.ClientID); err == nil {
		deviceName = cl.name()
	}
	var stale bool
	err := s.store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.DeviceGrant(ctx, g.ID)
		if err != nil {
			return err
		}
		now := s.now()
		if stale = !grantDecidable(cur, now); stale {
			return nil
		}
		if !approve {
			denyGrant(&cur, user.ID, now)
			return tx.UpdateDeviceGrant(ctx, cur)
		}
		sc, err := parseScopes(cur.Scope)
		if err != nil {
			return err
		}
		wait, err := s.provisionDevice(ctx, tx, user.Username, sc.deviceID, deviceName, cur.ID)
		if err != nil {
			return err
		}
		approveGrant(&cur, user.ID, now, wait != 0)
		return tx.UpdateDeviceGrant(ctx, cur)
	})
	switch {
	case err != nil:
		s.log.ErrorContext(ctx, "decide device grant", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Nothing was changed. Please try again.")
	case stale:
		s.render(c, http.StatusConflict, &messagePage{
			frame:   frame{Title: "Already answered", User: user},
			Kind:    "bad",
			Again:   true,
			Message: "This request was answered or expired in the meantime. Nothing was changed.",
		})
	case approve:
		s.log.InfoContext(ctx, "device grant approved", "client_id", g.ClientID, "user", user.Username)
		s.render(c, http.StatusOK, &messagePage{
			frame:   frame{Title: "Device connected", User: user},
			Kind:    "ok",
			Message: "The device is now signing in to your account. You can close this page.",
		})
	default:
		s.log.InfoContext(ctx, "device grant denied", "client_id", g.ClientID, "user", user.Username)
		s.render(c, http.StatusOK, &messagePage{
			frame:   frame{Title: "Request denied", User: user},
			Kind:    "bad",
			Message: "The device was not given access. If you did not start this, someone may have tried to trick you; nothing was shared.",
		})
	}
}

func (s *Server) loginSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	if !s.checkCSRF(c) {
		return
	}
	code := normalizeUserCode(c.PostForm("user_code"))
	next, _ := s.safeNext(c.PostForm("next"))
	username := localpart(c.PostForm("username"), s.cfg.ServerName)
	p := &loginPage{
		frame:    frame{Title: "Sign in"},
		Code:     displayUserCode(code),
		CodeRaw:  code,
		Username: username,
		Next:     next,
	}
	u, err := s.store.UserByUsername(ctx, username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.ErrorContext(ctx, "login: look up user", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Please try again.")
		return
	}
	hash := u.PasswordHash
	if err != nil {
		hash = s.dummyHash() // same work for unknown users: no timing oracle
	}
	ok, wait := s.passwordAttempt(c, username, u.ID, hash, c.PostForm("password"))
	if wait > 0 {
		c.Header("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		p.Error = "Too many failed sign-ins. Please wait " + humanDuration(wait) + " and try again."
		s.render(c, http.StatusTooManyRequests, p)
		return
	}
	if err != nil || !ok || !u.DeactivatedAt.IsZero() {
		p.Error = "Wrong username or password."
		s.render(c, http.StatusUnauthorized, p)
		return
	}
	if err := s.signIn(c, u); err != nil {
		s.log.ErrorContext(ctx, "login: start browser session", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Please try again.")
		return
	}
	s.log.InfoContext(ctx, "signed in", "user", u.Username, "client", c.ClientIP())
	if next != "" {
		c.Redirect(http.StatusSeeOther, next)
		return
	}
	if code != "" {
		c.Redirect(http.StatusSeeOther, s.prefix+"D/"+code)
		return
	}
	c.Redirect(http.StatusSeeOther, s.prefix+pathVerify)
}

func (s *Server) logoutSubmit(c *gin.Context) {
	if !s.checkCSRF(c) {
		return
	}
	s.signOut(c)
	c.Redirect(http.StatusSeeOther, s.prefix+pathVerify)
}

// localpart accepts "alice", "@alice" or "@alice:server" and returns the
// lower-cased localpart (Matrix user ids are case-insensitive to type).
func localpart(in, serverName string) string {
	in = strings.TrimSpace(in)
	in = strings.TrimPrefix(in, "@")
	in = strings.TrimSuffix(in, ":"+serverName)
	return strings.ToLower(in)
}

func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0 seconds"
	case d < 90*time.Second:
		n := int(d.Round(time.Second).Seconds())
		if n == 1 {
			return "1 second"
		}
		return fmt.Sprintf("%d seconds", n)
	case d < 90*time.Minute:
		return fmt.Sprintf("%d minutes", int(d.Round(time.Minute).Minutes()))
	default:
		return fmt.Sprintf("%d hours", int(d.Round(time.Hour).Hours()))
	}
}
