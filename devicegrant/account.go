package devicegrant

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// Account management (P-ACCT-1): the account_management_uri a Matrix
// client links to, with ?action=… deep links. Destructive actions explain
// themselves and ask for the password again, because such links are easy
// to forge.

// Account management actions, as Matrix names them. The devices_list,
// device_view and device_delete names are the spec's (v1.18); sessions_list,
// session_view and session_end the older unstable ones of MSC4191, still
// sent by clients.
const (
	actionProfile       = "org.matrix.profile"
	actionSessionsList  = "org.matrix.sessions_list"
	actionSessionView   = "org.matrix.session_view"
	actionSessionEnd    = "org.matrix.session_end"
	actionDevicesList   = "org.matrix.devices_list"
	actionDeviceView    = "org.matrix.device_view"
	actionDeviceDelete  = "org.matrix.device_delete"
	actionDeactivate    = "org.matrix.account_deactivate"
	actionCrossSigReset = "org.matrix.cross_signing_reset"
)

func (s *Server) accountActions() []string {
	a := []string{actionProfile, actionSessionsList, actionSessionView, actionSessionEnd,
		actionDevicesList, actionDeviceView, actionDeviceDelete, actionDeactivate}
	if s.provisioning() {
		a = append(a, actionCrossSigReset)
	}
	return a
}

// sessionView is one session as the account pages show it.
type sessionView struct {
	ID, DeviceID                string
	Client                      clientView
	Created, LastActive, LastIP string
	Ended                       string // when it ended, for ended sessions
	Scopes                      []string
	// Legacy marks a sign-in through the legacy Matrix login API, and
	// DeviceName is the name its client gave the device.
	Legacy     bool
	DeviceName string
}

func (s *Server) viewSession(c *gin.Context, x store.Session) sessionView {
	v := sessionView{ID: x.ID, DeviceID: x.DeviceID, Client: clientView{Name: "An unnamed application"}, LastIP: x.LastIP,
		Created: s.when(x.CreatedAt), LastActive: s.when(x.LastActiveAt), Scopes: describeScopes(x.Scope)}
	if cl, err := s.loadClient(c.Request.Context(), x.ClientID); err == nil {
		v.Client = cl.view()
	}
	v.Legacy, v.DeviceName = x.ClientID == legacyClientID, x.DeviceName
	return v
}

// when says a past time in words a person reads at a glance.
func (s *Server) when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return humanDuration(s.now().Sub(t)) + " ago (" + t.UTC().Format("2 Jan 2006 15:04 UTC") + ")"
}

// requireUser returns the signed-in person, or shows the sign-in form
// (coming back here afterwards) and returns nil.
func (s *Server) requireUser(c *gin.Context) *store.User {
	user, ok := s.currentUser(c)
	if !ok {
		return nil
	}
	if user == nil {
		next := c.Request.URL.RequestURI()
		if c.Request.Method != http.MethodGet {
			next = s.prefix + pathAccount
		}
		s.render(c, http.StatusOK, &loginPage{frame: frame{Title: "Sign in"}, Next: next})
	}
	return user
}

// liveSessionByDevice finds the person's live session on a Matrix device.
func (s *Server) liveSessionByDevice(c *gin.Context, user *store.User, deviceID string) (store.Session, bool) {
	if deviceID == "" {
		return store.Session{}, false
	}
	list, err := s.store.SessionsByDevice(c.Request.Context(), user.ID, deviceID)
	if err != nil || len(list) == 0 {
		return store.Session{}, false
	}
	return list[0], true
}

func (s *Server) accountPage(c *gin.Context) {
	user := s.requireUser(c)
	if user == nil {
		return
	}
	deviceID := c.Query("device_id")
	switch c.Query("action") {
	case actionSessionView, actionDeviceView:
		x, ok := s.liveSessionByDevice(c, user, deviceID)
		if !ok {
			s.showAccount(c, user, http.StatusNotFound, "No signed-in device has the id "+deviceID+".", "")
			return
		}
		s.render(c, http.StatusOK, &sessionPage{frame: frame{Title: "Device", User: user}, Session: s.viewSession(c, x)})
	case actionSessionEnd, actionDeviceDelete:
		x, ok := s.liveSessionByDevice(c, user, deviceID)
		if !ok {
			s.showAccount(c, user, http.StatusNotFound, "No signed-in device has the id "+deviceID+".", "")
			return
		}
		v := s.viewSession(c, x)
		s.render(c, http.StatusOK, &confirmPage{
			frame:   frame{Title: "Sign out " + v.Client.Name + "?", User: user},
			Message: "The device " + v.DeviceID + " (" + v.Client.Name + ") will be signed out at once and must be paired again to use your account. Its messages stay on the server; if it held the only copy of your encryption keys, encrypted history may become unreadable on it.",
			Action:  pathAccount + "/sessions/end",
			Hidden:  map[string]string{"session_id": x.ID},
			Button:  "Sign the device out",
		})
	case actionDeactivate:
		s.render(c, http.StatusOK, &confirmPage{
			frame:         frame{Title: "Deactivate your account?", User: user},
			Message:       "Deactivating @" + user.Username + ":" + s.cfg.ServerName + " signs out every device, removes you from the homeserver, and cannot be undone. Nobody, not even you, can register this username again.",
			Action:        pathAccount + "/deactivate",
			Button:        "Deactivate my account for good",
			TypeToConfirm: user.Username,
		})
	case actionCrossSigReset:
		if !s.provisioning() {
			s.showAccount(c, user, http.StatusNotFound, "Resetting the encryption identity is not available here.", "")
			return
		}
		s.render(c, http.StatusOK, &confirmPage{
			frame:   frame{Title: "Reset your encryption identity?", User: user},
			Message: "This lets one of your signed-in apps replace your cross-signing keys without further checks for the next 10 minutes. Do it only if you lost your recovery key and all your verified devices, and then start the reset in your app. Other people will see that your identity changed.",
			Action:  pathAccount + "/cross-signing-reset",
			Button:  "Allow the reset",
		})
	default: // profile, sessions list, or no action
		s.showAccount(c, user, http.StatusOK, "", doneMessage(c.Query("done")))
	}
}

func (s *Server) showAccount(c *gin.Context, user *store.User, status int, errMsg, info string) {
	list, err := s.store.SessionsByUser(c.Request.Context(), user.ID, true)
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "account: sessions", "err", err)
	}
	views := make([]sessionView, 0, len(list))
	var leaked []sessionView
	for _, x := range list {
		switch {
		case x.EndedAt.IsZero():
			views = append(views, s.viewSession(c, x))
		case x.EndReason == endReported && s.now().Sub(x.EndedAt) < leakNoticeFor:
			v := s.viewSession(c, x)
			v.Ended = s.when(x.EndedAt)
			leaked = append(leaked, v)
		}
	}
	s.render(c, status, &accountPage{
		frame:        frame{Title: "Your account", User: user, Error: errMsg},
		Sessions:     views,
		Leaked:       leaked,
		Info:         info,
		CrossSigning: s.provisioning(),
	})
}

// leakNoticeFor is how long the account page tells the person about a
// session that ended because its token was reported as leaked (P-REV-1).
const leakNoticeFor = 30 * 24 * time.Hour

// reauth checks the password of a destructive action, counting failures
// like sign-in does. It renders the confirmation again on failure.
func (s *Server) reauth(c *gin.Context, user *store.User, again *confirmPage) bool {
	ok, wait := s.passwordAttempt(c, user.Username, user.ID, user.PasswordHash, c.PostForm("password"))
	if wait > 0 {
		again.Error = "Too many wrong passwords. Please wait " + humanDuration(wait) + " and try again."
		s.render(c, http.StatusTooManyRequests, again)
		return false
	}
	if !ok {
		again.Error = "Wrong password; nothing was changed."
		s.render(c, http.StatusUnauthorized, again)
		return false
	}
	return true
}

// accountForm runs the checks every account POST shares.
func (s *Server) accountForm(c *gin.Context) *store.User {
	if !s.checkCSRF(c) {
		return nil
	}
	return s.requireUser(c)
}

func (s *Server) endSessionSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	user := s.accountForm(c)
	if user == nil {
		return
	}
	x, err := s.store.Session(ctx, c.PostForm("session_id"))
	if err != nil || x.UserID != user.ID || !x.EndedAt.IsZero() {
		s.showAccount(c, user, http.StatusNotFound, "That device is not signed in any more.", "")
		return
	}
	v := s.viewSession(c, x)
	again := &confirmPage{
		frame:   frame{Title: "Sign out " + v.Client.Name + "?", User: user},
		Message: "Enter your password to sign the device " + v.DeviceID + " out.",
		Action:  pathAccount + "/sessions/end",
		Hidden:  map[string]string{"session_id": x.ID},
		Button:  "Sign the device out",
	}
	if !s.reauth(c, user, again) {
		return
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Session(ctx, x.ID)
		if err != nil {
			return err
		}
		return s.endSession(ctx, tx, cur, endByUser, s.now())
	})
	if err != nil {
		s.log.ErrorContext(ctx, "account: end session", "err", err)
		s.showAccount(c, user, http.StatusInternalServerError, "Something went wrong; the device may still be signed in.", "")
		return
	}
	s.log.InfoContext(ctx, "session ended on the account page", "user", user.Username, "session", x.ID)
	s.accountDone(c, "signed-out")
}

func (s *Server) deactivateSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	user := s.accountForm(c)
	if user == nil {
		return
	}
	again := &confirmPage{
		frame:         frame{Title: "Deactivate your account?", User: user},
		Message:       "Enter your password and your username to deactivate @" + user.Username + ":" + s.cfg.ServerName + " for good.",
		Action:        pathAccount + "/deactivate",
		Button:        "Deactivate my account for good",
		TypeToConfirm: user.Username,
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(c.PostForm("confirm_text"))), []byte(user.Username)) != 1 {
		again.Error = "Type your username exactly to confirm; nothing was changed."
		s.render(c, http.StatusBadRequest, again)
		return
	}
	if !s.reauth(c, user, again) {
		return
	}
	if err := s.DeactivateUser(ctx, user.ID); err != nil {
		s.log.ErrorContext(ctx, "account: deactivate", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Your account was not deactivated. Please try again.")
		return
	}
	s.log.InfoContext(ctx, "account deactivated", "user", user.Username)
	s.signOut(c)
	s.render(c, http.StatusOK, &messagePage{
		frame:   frame{Title: "Account deactivated"},
		Kind:    "ok",
		Message: "@" + user.Username + ":" + s.cfg.ServerName + " is deactivated and all its devices are signed out.",
	})
}

func (s *Server) crossSigningResetSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	user := s.accountForm(c)
	if user == nil {
		return
	}
	if !s.provisioning() {
		s.showAccount(c, user, http.StatusNotFound, "Resetting the encryption identity is not available here.", "")
		return
	}
	again := &confirmPage{
		frame:   frame{Title: "Reset your encryption identity?", User: user},
		Message: "Enter your password to allow the reset.",
		Action:  pathAccount + "/cross-signing-reset",
		Button:  "Allow the reset",
	}
	if !s.reauth(c, user, again) {
		return
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		return s.enqueue(ctx, tx, user.Username, callAllowCrossSigningReset, struct {
			Localpart string `json:"localpart"`
		}{user.Username}, "")
	})
	if err != nil {
		s.log.ErrorContext(ctx, "account: cross-signing reset", "err", err)
		s.showAccount(c, user, http.StatusInternalServerError, "Something went wrong; nothing was changed.", "")
		return
	}
	s.accountDone(c, "cross-signing-reset")
}

func (s *Server) profileSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	user := s.accountForm(c)
	if user == nil {
		return
	}
	name := strings.TrimSpace(c.PostForm("display_name"))
	if len(name) > 256 {
		s.showAccount(c, user, http.StatusBadRequest, "The display name is longer than 256 bytes.", "")
		return
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, user.ID)
		if err != nil {
			return err
		}
		u.DisplayName = name
		if err := tx.UpdateUser(ctx, u); err != nil {
			return err
		}
		body := map[string]any{"localpart": u.Username}
		if name == "" {
			body["unset_displayname"] = true
		} else {
			body["set_displayname"] = name
		}
		return s.enqueue(ctx, tx, u.Username, callProvisionUser, body, "")
	})
	if err != nil {
		s.log.ErrorContext(ctx, "account: profile", "err", err)
		s.showAccount(c, user, http.StatusInternalServerError, "Something went wrong; the name was not saved.", "")
		return
	}
	s.accountDone(c, "name")
}

func (s *Server) passwordSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	user := s.accountForm(c)
	if user == nil {
		return
	}
	ok, wait := s.passwordAttempt(c, user.Username, user.ID, user.PasswordHash, c.PostForm("current"))
	if wait > 0 {
		s.showAccount(c, user, http.StatusTooManyRequests, "Too many wrong passwords. Please wait "+humanDuration(wait)+".", "")
		return
	}
	if !ok {
		s.showAccount(c, user, http.StatusUnauthorized, "The current password is wrong; nothing was changed.", "")
		return
	}
	newPassword := c.PostForm("new")
	if newPassword != c.PostForm("repeat") {
		s.showAccount(c, user, http.StatusBadRequest, "The new passwords differ; nothing was changed.", "")
		return
	}
	if err := checkNewPassword(newPassword); err != nil {
		s.showAccount(c, user, http.StatusBadRequest, "The new "+err.Error()+".", "")
		return
	}
	b, err := s.browserSession(c)
	if err != nil {
		s.log.ErrorContext(ctx, "account: password", "err", err)
	}
	hash, err := s.hashPassword(ctx, newPassword)
	if err == nil {
		err = s.store.Update(ctx, func(tx store.Tx) error {
			u, err := tx.User(ctx, user.ID)
			if err != nil {
				return err
			}
			u.PasswordHash = hash
			if err := tx.UpdateUser(ctx, u); err != nil {
				return err
			}
			// Whoever else knew the old password is signed out of
			// every other browser.
			keep := ""
			if b != nil {
				keep = b.ID
			}
			return tx.DeleteBrowserSessionsOfUser(ctx, u.ID, keep)
		})
	}
	if err != nil {
		s.log.ErrorContext(ctx, "account: password", "err", err)
		s.showAccount(c, user, http.StatusInternalServerError, "Something went wrong; the password was not changed.", "")
		return
	}
	s.log.InfoContext(ctx, "password changed", "user", user.Username)
	s.accountDone(c, "password")
}

var errNoNext = errors.New("no next")

// safeNext accepts only a path on this server to go back to after
// signing in: never another host (no open redirect).
func (s *Server) safeNext(next string) (string, error) {
	if next == "" || !strings.HasPrefix(next, s.prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "", errNoNext
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "", errNoNext
	}
	return next, nil
}

// accountDone answers a successful account form with a redirect to the
// account page (post/redirect/get), so reloading it posts nothing again.
func (s *Server) accountDone(c *gin.Context, done string) {
	c.Redirect(http.StatusSeeOther, s.prefix+pathAccount+"?done="+url.QueryEscape(done))
}

// doneMessage is what the account page says after a successful form. The
// messages are fixed: the query that selects one is easy to forge.
func doneMessage(done string) string {
	switch done {
	case "signed-out":
		return "The device is signed out."
	case "cross-signing-reset":
		return "Allowed: within the next 10 minutes, start the reset in your Matrix app."
	case "name":
		return "Name saved."
	case "password":
		return "Password changed. Every other browser signed in to your account was signed out."
	}
	return ""
}
