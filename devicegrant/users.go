package devicegrant

import (
	"errors"
	"fmt"
	"regexp"
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

// dummyHash is a valid hash of nothing anyone knows, checked against when a
// username does not exist so that a wrong username costs as much as a wrong
// password.
func (s *Server) dummyHash() string {
	s.dummyOnce.Do(func() { s.dummy, _ = HashPassword(randomString(16)) })
	return s.dummy
}
