package devicegrant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

// Self-registration (prompt=create, P-ACCT-2, P-ACCT-3), when the operator
// enables it.

func (s *Server) registerPage(c *gin.Context) {
	if !s.cfg.Registration.Enabled {
		s.errorPage(c, http.StatusNotFound, "Not available", "This server does not let people create their own accounts.")
		return
	}
	next, _ := s.safeNext(c.Query("next"))
	s.render(c, http.StatusOK, &registerPage{frame: frame{Title: "Create an account"}, Next: next, TermsURL: s.cfg.Registration.TermsURL})
}

func (s *Server) registerSubmit(c *gin.Context) {
	ctx := c.Request.Context()
	if !s.cfg.Registration.Enabled {
		s.errorPage(c, http.StatusNotFound, "Not available", "This server does not let people create their own accounts.")
		return
	}
	if !s.checkCSRF(c) {
		return
	}
	next, _ := s.safeNext(c.PostForm("next"))
	username := localpart(c.PostForm("username"), s.cfg.ServerName)
	p := &registerPage{
		frame:    frame{Title: "Create an account"},
		Next:     next,
		Username: username,
		TermsURL: s.cfg.Registration.TermsURL,
	}
	fail := func(status int, msg string) {
		p.Error = msg
		s.render(c, status, p)
	}
	now := s.now()
	// The budget counts accounts created and attempts that cost something:
	// a call to the homeserver or an argon2 hash. Only a form refused by
	// the checks below, which cost nothing, gives the token back; otherwise
	// one address could make unlimited 19 MiB hashes and homeserver calls
	// by choosing taken names.
	t, wait := s.regLimit.take("ip:"+addressKey(c.ClientIP()), now, true)
	if wait > 0 {
		c.Header("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		fail(http.StatusTooManyRequests, "Too many accounts were created or tried from your network. Please wait "+humanDuration(wait)+".")
		return
	}
	refund := true
	defer func() {
		if refund {
			t.succeeded(now)
		}
	}()
	password := c.PostForm("password")
	switch {
	case checkNewUsername(username) != nil:
		fail(http.StatusBadRequest, "Usernames use lower-case letters, digits and . _ = - / + only.")
		return
	case password != c.PostForm("repeat"):
		fail(http.StatusBadRequest, "The passwords differ.")
		return
	case checkNewPassword(password) != nil:
		fail(http.StatusBadRequest, "The password must be at least 8 characters.")
		return
	case s.cfg.Registration.TermsURL != "" && c.PostForm("terms") != "yes":
		fail(http.StatusBadRequest, "Accept the terms of service to create an account.")
		return
	}
	// Availability is checked before any expensive work: here first (a
	// name ever used here is never given out again, P-ACCT-2), then at
	// the homeserver.
	switch _, err := s.store.UserByUsername(ctx, username); {
	case err == nil:
		fail(http.StatusConflict, "That username is taken. Usernames are never reused; choose another.")
		return
	case !errors.Is(err, store.ErrNotFound):
		s.log.ErrorContext(ctx, "register: look up username", "err", err)
		fail(http.StatusInternalServerError, "Something went wrong; no account was created.")
		return
	}
	// P-ACCT-3: ask the homeserver first; it may know the name from before
	// delegation, or reserve it. From here on a failure counts.
	if s.provisioning() {
		if err := s.localpartAvailable(ctx, username); err != nil {
			var taken *localpartTaken
			if errors.As(err, &taken) {
				refund = false
				fail(http.StatusConflict, taken.msg)
				return
			}
			// The homeserver being down is not the person's doing.
			s.log.ErrorContext(ctx, "register: is_localpart_available", "err", err)
			fail(http.StatusServiceUnavailable, "The homeserver cannot be reached to check the username. Please try again in a moment.")
			return
		}
	}
	refund = false
	u, err := s.createUser(ctx, username, password, "", s.cfg.Registration.TermsURL)
	if errors.Is(err, ErrUsernameTaken) {
		fail(http.StatusConflict, "That username is taken. Usernames are never reused; choose another.")
		return
	}
	if err != nil {
		s.log.ErrorContext(ctx, "register", "err", err)
		fail(http.StatusInternalServerError, "Something went wrong; no account was created.")
		return
	}
	s.log.InfoContext(ctx, "account registered", "user", u.Username)
	if err := s.signIn(c, u); err != nil {
		s.log.ErrorContext(ctx, "register: sign in", "err", err)
	}
	if next == "" {
		next = s.prefix + pathAccount
	}
	c.Redirect(http.StatusSeeOther, next)
}

type localpartTaken struct{ msg string }

func (e *localpartTaken) Error() string { return e.msg }

// localpartAvailable asks the homeserver (GET is_localpart_available).
func (s *Server) localpartAvailable(ctx context.Context, localpart string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimSuffix(s.cfg.HomeserverEndpoint, "/") + "/_synapse/mas/is_localpart_available?localpart=" + url.QueryEscape(localpart)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.HomeserverSecret)
	resp, err := s.httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var m struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	json.Unmarshal(b, &m)
	switch m.Errcode {
	case "M_USER_IN_USE":
		return &localpartTaken{"That username is taken on the homeserver; choose another."}
	case "M_INVALID_USERNAME":
		return &localpartTaken{"The homeserver does not accept that username: " + m.Error}
	}
	return fmt.Errorf("is_localpart_available: %s: %s", resp.Status, b)
}

// createUser is CreateUser with the terms the person accepted.
func (s *Server) createUser(ctx context.Context, username, password, displayName, termsURL string) (store.User, error) {
	if err := checkNewUsername(username); err != nil {
		return store.User{}, err
	}
	if err := checkNewPassword(password); err != nil {
		return store.User{}, err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return store.User{}, err
	}
	now := s.now()
	u := store.User{ID: newID(), Username: username, PasswordHash: hash, DisplayName: displayName, CreatedAt: now}
	if termsURL != "" {
		u.TermsURL, u.TermsAcceptedAt = termsURL, now
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, username, callProvisionUser, provisionUserBody{Localpart: username, SetDisplayname: displayName}, "")
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		return store.User{}, fmt.Errorf("%q: %w", username, ErrUsernameTaken)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}
