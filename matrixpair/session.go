package matrixpair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// DefaultProfile is the profile used when none is named.
const DefaultProfile = "default"

// StateVersion is the version number written in state files.
const StateVersion = 1

// Errors of a saved session.
var (
	// ErrNotLoggedIn means the profile has no saved session.
	ErrNotLoggedIn = errors.New("not logged in")
	// ErrSessionEnded means the authorization server no longer accepts the
	// refresh token (the session was ended on the account page, revoked,
	// or the server forgot the client): log in again.
	ErrSessionEnded = errors.New("the session has ended; log in again")
)

// Session is a signed-in device: who it is and where its tokens live. Its
// exported fields describe the session and are not changed by its methods;
// the tokens are kept inside and in the state file. A Session is safe for
// concurrent use.
type Session struct {
	// Profile names the state file.
	Profile string
	// Dir is the state directory.
	Dir string
	// Homeserver is the client-server API base URL.
	Homeserver string
	// UserID and DeviceID say who the device is on Matrix.
	UserID, DeviceID string
	// Issuer is the authorization server.
	Issuer string
	// TokenEndpoint and RevocationEndpoint are the authorization server's
	// endpoints; RevocationEndpoint may be "".
	TokenEndpoint, RevocationEndpoint string
	// ClientID is the dynamically registered client.
	ClientID string
	// Scope is the granted scope.
	Scope string
	// Logger receives refresh logs (never tokens); nil discards them.
	Logger *slog.Logger

	mu  sync.Mutex
	tok token
}

// token is the part of the state that changes.
type token struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	Expiry       time.Time `json:"expiry"`
}

func tokenFrom(t *oauth2.Token) token {
	return token{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry}
}

// state is the JSON of a state file.
type state struct {
	Version            int    `json:"version"`
	Homeserver         string `json:"homeserver"`
	UserID             string `json:"user_id"`
	DeviceID           string `json:"device_id"`
	Issuer             string `json:"issuer"`
	TokenEndpoint      string `json:"token_endpoint"`
	RevocationEndpoint string `json:"revocation_endpoint,omitempty"`
	ClientID           string `json:"client_id"`
	Scope              string `json:"scope,omitempty"`
	token
}

// DefaultDir returns $XDG_STATE_HOME/matrix-pair, or
// ~/.local/state/matrix-pair when XDG_STATE_HOME is unset or relative.
func DefaultDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "matrix-pair"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("matrixpair: no state directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "matrix-pair"), nil
}

var profilePattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

func checkProfile(p string) error {
	if !profilePattern.MatchString(p) {
		return fmt.Errorf("matrixpair: profile %q: use up to 64 characters from A-Z a-z 0-9 . _ -, not starting with a dot", p)
	}
	return nil
}

// StatePath returns the state file of a profile in dir.
func StatePath(dir, profile string) string { return filepath.Join(dir, profile+".json") }

func lockPath(dir, profile string) string { return filepath.Join(dir, profile+".lock") }

// Load reads a profile's session from [DefaultDir]. It fails with
// [ErrNotLoggedIn] if there is none.
func Load(profile string) (*Session, error) {
	dir, err := DefaultDir()
	if err != nil {
		return nil, err
	}
	return LoadDir(dir, profile)
}

// LoadDir reads a profile's session from dir ("" profile means "default").
func LoadDir(dir, profile string) (*Session, error) {
	if profile == "" {
		profile = DefaultProfile
	}
	if err := checkProfile(profile); err != nil {
		return nil, err
	}
	st, err := readState(dir, profile)
	if err != nil {
		return nil, err
	}
	s := &Session{Profile: profile, Dir: dir}
	s.apply(st)
	return s, nil
}

func (s *Session) apply(st *state) {
	s.Homeserver, s.UserID, s.DeviceID = st.Homeserver, st.UserID, st.DeviceID
	s.Issuer, s.TokenEndpoint, s.RevocationEndpoint = st.Issuer, st.TokenEndpoint, st.RevocationEndpoint
	s.ClientID, s.Scope = st.ClientID, st.Scope
	s.tok = st.token
}

func readState(dir, profile string) (*state, error) {
	b, err := os.ReadFile(StatePath(dir, profile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("matrixpair: profile %q: %w", profile, ErrNotLoggedIn)
	}
	if err != nil {
		return nil, fmt.Errorf("matrixpair: reading state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("matrixpair: state file %s: %w", StatePath(dir, profile), err)
	}
	if st.Version != StateVersion {
		return nil, fmt.Errorf("matrixpair: state file %s has version %d; this program reads version %d", StatePath(dir, profile), st.Version, StateVersion)
	}
	if st.RefreshToken == "" || st.TokenEndpoint == "" || st.ClientID == "" {
		return nil, fmt.Errorf("matrixpair: state file %s is incomplete", StatePath(dir, profile))
	}
	return &st, nil
}

// save writes the state atomically: a temporary file with mode 0600 in the
// same 0700 directory, synced, then renamed over the old one.
func (s *Session) save() error {
	st := state{
		Version: StateVersion, Homeserver: s.Homeserver, UserID: s.UserID, DeviceID: s.DeviceID,
		Issuer: s.Issuer, TokenEndpoint: s.TokenEndpoint, RevocationEndpoint: s.RevocationEndpoint,
		ClientID: s.ClientID, Scope: s.Scope, token: s.tok,
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := ensureDir(s.Dir); err != nil {
		return err
	}
	if err := writeAtomic(s.Dir, s.Profile, append(b, '\n')); err != nil {
		return fmt.Errorf("matrixpair: saving state: %w", err)
	}
	return nil
}

// writeAtomic writes data to the profile's state file through a temporary
// file: mode 0600, fsync, rename, fsync of the directory.
func writeAtomic(dir, profile string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+profile+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, StatePath(dir, profile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

// ensureDir creates the state directory with mode 0700 and makes an
// existing one private.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("matrixpair: state directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("matrixpair: state directory: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Expiry returns when the access token in hand expires.
func (s *Session) Expiry() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok.Expiry
}

// Remove deletes the profile's state file (not the session at the server:
// see [Session.Revoke]) and forgets the tokens in hand.
func (s *Session) Remove() error {
	unlock, err := lockFile(context.Background(), s.Dir, s.Profile)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	s.tok = token{}
	s.mu.Unlock()
	if err := os.Remove(StatePath(s.Dir, s.Profile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("matrixpair: removing state: %w", err)
	}
	return nil
}

// ErrNoRevocation means the authorization server has no revocation endpoint.
var ErrNoRevocation = errors.New("the authorization server has no revocation endpoint")

// Revoke ends the session at the authorization server (RFC 7009): it
// revokes the refresh token, which ends the session and its Matrix device.
// The state file is kept; call [Session.Remove] afterwards. An error that
// is not an *HTTPError means the server could not be reached.
func (s *Session) Revoke(ctx context.Context) error {
	if s.RevocationEndpoint == "" {
		return fmt.Errorf("matrixpair: %w", ErrNoRevocation)
	}
	unlock, err := lockFile(ctx, s.Dir, s.Profile)
	if err != nil {
		return err
	}
	defer unlock()
	// Another process may have rotated the tokens since we loaded them.
	if st, err := readState(s.Dir, s.Profile); err == nil {
		s.mu.Lock()
		s.tok = st.token
		s.mu.Unlock()
	}
	s.mu.Lock()
	rt := s.tok.RefreshToken
	s.mu.Unlock()
	form := url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}, "client_id": {s.ClientID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.RevocationEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("matrixpair: revoking: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, err := doJSON(req, nil); err != nil {
		return fmt.Errorf("matrixpair: revoking at %s: %w", s.RevocationEndpoint, err)
	}
	s.logger().InfoContext(ctx, "revoked the session", "profile", s.Profile, "device_id", s.DeviceID)
	return nil
}

// Logout revokes the session at the server, then removes the state file.
// If revocation fails the state file is kept.
func (s *Session) Logout(ctx context.Context) error {
	if err := s.Revoke(ctx); err != nil {
		return err
	}
	return s.Remove()
}

// WhoAmI asks the homeserver who the session is, with a fresh token.
func (s *Session) WhoAmI(ctx context.Context) (WhoAmI, error) {
	t, err := s.Token(ctx)
	if err != nil {
		return WhoAmI{}, err
	}
	w, err := whoami(ctx, s.Homeserver, t.AccessToken)
	if err != nil {
		return w, fmt.Errorf("matrixpair: %w", err)
	}
	return w, nil
}

func (s *Session) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}
