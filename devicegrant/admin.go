package devicegrant

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/devicegrant/devicegrant/devicegrant/clientmeta"
	"github.com/devicegrant/devicegrant/store"
)

// Operator actions, for the admin commands of cmd/devicegrantd. They have
// the same effects as the account page's, without a password check: whoever
// runs them already holds the database.

// endByOperator is the end reason of sessions an operator ended.
const endByOperator = "ended by an operator"

// ErrSessionEnded is returned by EndSession for a session that had already
// ended.
var ErrSessionEnded = errors.New("the session has already ended")

// SetPassword gives an account a new password and signs it out of every
// browser, since whoever knew the old one may be signed in (as a password
// change on the account page does). With endSessions it also ends every
// device session, as if each were signed out on the account page.
func (s *Server) SetPassword(ctx context.Context, userID, password string, endSessions bool) error {
	if err := checkNewPassword(password); err != nil {
		return err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return fmt.Errorf("devicegrant: set password: %w", err)
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		u, err := tx.User(ctx, userID)
		if err != nil {
			return err
		}
		if !u.DeactivatedAt.IsZero() {
			return fmt.Errorf("@%s is deactivated", u.Username)
		}
		u.PasswordHash = hash
		if err := tx.UpdateUser(ctx, u); err != nil {
			return err
		}
		if err := tx.DeleteBrowserSessionsOfUser(ctx, u.ID, ""); err != nil {
			return err
		}
		if !endSessions {
			return nil
		}
		live, err := tx.SessionsByUser(ctx, u.ID, false)
		if err != nil {
			return err
		}
		now := s.now()
		for _, x := range live {
			if err := s.endSession(ctx, tx, x, endByOperator, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("devicegrant: set password: %w", err)
	}
	return nil
}

// EndSession ends a session as the account page does: its tokens stop
// working at once and, with a homeserver, its Matrix device is deleted
// through the outbox. It returns store.ErrNotFound for an unknown id and
// ErrSessionEnded for a session that had already ended.
func (s *Server) EndSession(ctx context.Context, sessionID string) error {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		x, err := tx.Session(ctx, sessionID)
		if err != nil {
			return err
		}
		if !x.EndedAt.IsZero() {
			return ErrSessionEnded
		}
		return s.endSession(ctx, tx, x, endByOperator, s.now())
	})
	if err != nil {
		return fmt.Errorf("devicegrant: end session %s: %w", sessionID, err)
	}
	return nil
}

// SessionInfo is a session as an operator sees it.
type SessionInfo struct {
	store.Session
	// ClientName is the name the client registered (its own claim).
	ClientName string
	// SignIn says how the client signs people in, from the grant types it
	// registered: "device code", "browser" (authorization code) or
	// "device code or browser"; "legacy login" for the legacy Matrix
	// login API (password or SSO).
	SignIn string
}

// UserSessions lists a user's sessions, newest first; ended ones only when
// includeEnded.
func (s *Server) UserSessions(ctx context.Context, userID string, includeEnded bool) ([]SessionInfo, error) {
	list, err := s.store.SessionsByUser(ctx, userID, includeEnded)
	if err != nil {
		return nil, fmt.Errorf("devicegrant: sessions: %w", err)
	}
	out := make([]SessionInfo, 0, len(list))
	for _, x := range list {
		info := SessionInfo{Session: x, ClientName: "(client deleted)", SignIn: "unknown"}
		cl, err := s.loadClient(ctx, x.ClientID)
		switch {
		case err == nil:
			info.ClientName = cl.name()
			info.SignIn = signInMethod(cl.meta.GrantTypes)
			if cl.ID == legacyClientID {
				info.SignIn = "legacy login"
			}
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("devicegrant: sessions: %w", err)
		}
		out = append(out, info)
	}
	return out, nil
}

// signInMethod names the ways a client with these grant types can have
// started a session. The session itself does not record which grant made
// it, and the grant rows are deleted a day after they expire.
func signInMethod(grantTypes []string) string {
	device := slices.Contains(grantTypes, clientmeta.GrantDeviceCode)
	code := slices.Contains(grantTypes, clientmeta.GrantAuthorizationCode)
	switch {
	case device && code:
		return "device code or browser"
	case device:
		return "device code"
	case code:
		return "browser"
	}
	return "unknown"
}

// TrustClient marks a registered client as trusted by the operator, so it
// skips the consent page (or, with trusted false, no longer does).
func (s *Server) TrustClient(ctx context.Context, clientID string, trusted bool) error {
	err := s.store.Update(ctx, func(tx store.Tx) error {
		c, err := tx.Client(ctx, clientID)
		if err != nil {
			return err
		}
		c.Trusted = trusted
		return tx.UpdateClient(ctx, c)
	})
	if err != nil {
		return fmt.Errorf("devicegrant: trust client %s: %w", clientID, err)
	}
	return nil
}
