package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// localpartRE is the Matrix user id grammar for new localparts.
var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]{1,255}$`)

// ErrUsernameTaken is returned by CreateUser for a username that exists or
// existed (P-ACCT-2: Matrix user ids are never reused).
var ErrUsernameTaken = errors.New("username is taken")

// CreateUser adds a local account with an argon2id hash of password.
func CreateUser(ctx context.Context, st store.Store, username, password, displayName string, now func() time.Time) (store.User, error) {
	if !localpartRE.MatchString(username) {
		return store.User{}, fmt.Errorf("username %q: use 1-255 of a-z 0-9 . _ = - / + (a Matrix localpart)", username)
	}
	if len(password) < 8 {
		return store.User{}, errors.New("password must be at least 8 characters")
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.User{}, err
	}
	if now == nil {
		now = time.Now
	}
	u := store.User{ID: newID(), Username: username, PasswordHash: hash, DisplayName: displayName, CreatedAt: now()}
	err = st.Update(ctx, func(tx store.Tx) error { return tx.CreateUser(ctx, u) })
	if errors.Is(err, store.ErrAlreadyExists) {
		return store.User{}, fmt.Errorf("%q: %w", username, ErrUsernameTaken)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// dummyHash is a valid hash of nothing anyone knows, checked against when a
// username does not exist so that a wrong username costs as much as a wrong
// password.
func (s *Server) dummyHash() string {
	s.dummyOnce.Do(func() { s.dummy, _ = HashPassword(randomString(16)) })
	return s.dummy
}
