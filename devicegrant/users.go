package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/gin-gonic/gin"
)

// localpartRE is the Matrix user id grammar for new localparts.
var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]{1,255}$`)

func checkNewUsername(username string) error {
	if !localpartRE.MatchString(username) {
		return fmt.Errorf("username %q: use 1-255 of a-z 0-9 . _ = - / + (a Matrix localpart)", username)
	}
	return nil
}

func checkNewPassword(password string) error {
	if len(password) < 8 {
		return errors.New("password must be at least 8 characters")
	}
	return nil
}

// passwordAttempt checks password against hash for an account (userID is
// "" and hash the dummy hash for an account that does not exist). Failures
// count per client address and per account; while either budget is spent
// it checks nothing and returns the wait. At most a few argon2 checks run
// at once, so a flood of sign-ins cannot exhaust memory (19 MiB each).
//
// The per-account budget is split so that strangers cannot lock the owner
// out: a try from a browser signed in to this account (the password
// re-check of destructive actions), and one from each address (IPv6: /64)
// this account signed in from within knownPlaceTTL, count against budgets
// of their own, which failures from elsewhere do not touch. The places are in
// the database, so this holds whichever instance the owner's request
// reaches.
func (s *Server) passwordAttempt(c *gin.Context, username, userID, hash, password string) (ok bool, wait time.Duration) {
	now := s.now()
	addr := addressKey(c.ClientIP())
	ipTry, wait := s.loginLimit.take("ip:"+addr, now, true)
	if wait > 0 {
		return false, wait
	}
	placeSeen := s.placeSeen(c, userID, addr, now)
	accountKey := "user:" + username
	switch {
	case s.signedInAs(c, userID):
		accountKey = "session:" + username // nobody else holds the owner's session
	case !placeSeen.IsZero():
		// Each place its own: a guesser behind one of them (a café, a
		// carrier's NAT the owner once used) cannot spend the budget
		// that protects the owner at the others.
		accountKey = "known:" + username + " " + addr
	}
	accountTry, wait := s.accountLimit.take(accountKey, now, true)
	if wait > 0 {
		ipTry.succeeded(now)
		return false, wait
	}
	select {
	case s.hashSlots <- struct{}{}:
	case <-c.Request.Context().Done():
		ipTry.succeeded(now)
		accountTry.succeeded(now)
		return false, 0
	}
	ok, err := checkPassword(hash, password)
	<-s.hashSlots
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "password hash", "err", err)
	}
	if ok {
		ipTry.succeeded(now)
		accountTry.succeeded(now)
		if userID != "" && now.Sub(placeSeen) > placeRefresh {
			s.rememberPlace(c.Request.Context(), userID, addr, now)
		}
	}
	return ok, 0
}

// placeSeen returns when userID last signed in from addr, if within
// knownPlaceTTL; otherwise (and when the database cannot say) zero: the
// try then counts as a stranger's, which may refuse the owner but never
// lets a stranger through.
func (s *Server) placeSeen(c *gin.Context, userID, addr string, now time.Time) time.Time {
	// Read even for a name that is no account (userID ""), which finds
	// nothing: the round trip is work a stranger could time, and unknown
	// names must cost what accounts do (the dummy hash's reason).
	seen, err := s.store.KnownPlace(c.Request.Context(), userID, addr)
	if userID == "" {
		return time.Time{}
	}
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.ErrorContext(c.Request.Context(), "password try: known place", "err", err)
		}
		return time.Time{}
	}
	if now.Sub(seen) > knownPlaceTTL {
		return time.Time{}
	}
	return seen
}

// signedInAs reports whether the try comes from a browser signed in to
// userID. It reads the browser's session for a name that is no account
// (userID "") too, so that whoever holds an account cannot time the read
// to learn which names are accounts.
func (s *Server) signedInAs(c *gin.Context, userID string) bool {
	b, err := s.browserSession(c)
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "password try: browser session", "err", err)
	}
	return userID != "" && b != nil && b.UserID == userID
}

// rememberPlace records a successful sign-in of userID from addr. A
// failure costs the owner only the protection of a known place, so it is
// logged, and the sign-in goes on.
func (s *Server) rememberPlace(ctx context.Context, userID, addr string, now time.Time) {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		return tx.RememberPlace(ctx, userID, addr, now, placesPerAccount)
	})
	if err != nil {
		s.log.ErrorContext(ctx, "remember the place of a sign-in", "err", err)
	}
}

// hashPassword is HashPassword within the same bound on parallel argon2
// work.
func (s *Server) hashPassword(ctx context.Context, password string) (string, error) {
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.hashSlots }()
	return HashPassword(password)
}

// dummyHash is a valid hash of nothing anyone knows, checked against when a
// username does not exist so that a wrong username costs as much as a wrong
// password.
func (s *Server) dummyHash() string {
	s.dummyOnce.Do(func() { s.dummy, _ = HashPassword(randomString(16)) })
	return s.dummy
}

// ErrUsernameTaken is returned by CreateUser for a username that exists or
// existed (P-ACCT-2: Matrix user ids are never reused).
var ErrUsernameTaken = errors.New("username is taken")

// CreateUser adds a local account with an argon2id hash of password and,
// with a homeserver configured, queues its provisioning.
func (s *Server) CreateUser(ctx context.Context, username, password, displayName string) (store.User, error) {
	return s.createUser(ctx, username, password, displayName, "")
}

// DeactivateUser deactivates an account for good (P-ACCT-2: the username
// is never given out again): its sessions end, and the homeserver is told
// to deactivate the Matrix user, which deletes its devices.
func (s *Server) DeactivateUser(ctx context.Context, userID string) error {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, userID)
		if err != nil || !u.DeactivatedAt.IsZero() {
			return err
		}
		now := s.now()
		u.DeactivatedAt = now
		if err := tx.UpdateUser(ctx, u); err != nil {
			return err
		}
		sessions, err := tx.SessionsByUser(ctx, u.ID, false)
		if err != nil {
			return err
		}
		for _, x := range sessions {
			if err := s.endSession(ctx, tx, x, endDeactivated, now); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, u.Username, callDeleteUser, deleteUserBody{Localpart: u.Username}, "")
	})
	if err != nil {
		return fmt.Errorf("devicegrant: deactivate user: %w", err)
	}
	return nil
}
