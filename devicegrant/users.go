package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

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

// passwordAttempt checks password against hash for an account (hash is
// the dummy hash for an account that does not exist). Failures count per
// client address and per account; while either budget is spent it checks
// nothing and returns the wait. At most a few argon2 checks run at once,
// so a flood of sign-ins cannot exhaust memory (19 MiB each).
func (s *Server) passwordAttempt(c *gin.Context, account, hash, password string) (ok bool, wait time.Duration) {
	now := s.now()
	ipTry, wait := s.loginLimit.take("ip:"+addressKey(c.ClientIP()), now, true)
	if wait > 0 {
		return false, wait
	}
	accountTry, wait := s.accountLimit.take("user:"+account, now, true)
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
	}
	return ok, 0
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
