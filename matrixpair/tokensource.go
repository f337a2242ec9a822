package matrixpair

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// RefreshMargin is how long before its expiry an access token is
// refreshed, so that a token handed out stays valid for a while. Matrix
// access tokens typically live 5 minutes.
const RefreshMargin = time.Minute

// refreshRetries is how many times a refresh that failed in transit (no
// answer, or a 5xx) is retried with the same refresh token. The server
// accepts that retry while the new pair it may have issued is unused
// (PROTOCOL.md P-RT-2).
const refreshRetries = 3

// refreshBackoff is the wait before the first retry; it doubles after.
const refreshBackoff = 250 * time.Millisecond

func (t token) fresh(now time.Time) bool {
	return t.AccessToken != "" && (t.Expiry.IsZero() || now.Add(RefreshMargin).Before(t.Expiry))
}

func (t token) oauth2() *oauth2.Token {
	return &oauth2.Token{AccessToken: t.AccessToken, TokenType: "Bearer", RefreshToken: t.RefreshToken, Expiry: t.Expiry}
}

// Token returns an access token valid for at least [RefreshMargin],
// refreshing it if needed. A refresh runs under an exclusive lock on the
// profile's lock file and re-reads the state file first, so parallel
// callers, in this process or others, refresh once and share the result.
// The new tokens are saved before Token returns. It fails with
// [ErrSessionEnded] if the server no longer accepts the refresh token.
func (s *Session) Token(ctx context.Context) (*oauth2.Token, error) {
	return s.token(ctx, false)
}

// Refresh refreshes the access token now, even if it is still fresh, and
// saves the result. Use it to check that the session still works.
func (s *Session) Refresh(ctx context.Context) (*oauth2.Token, error) {
	return s.token(ctx, true)
}

func (s *Session) token(ctx context.Context, force bool) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && s.tok.fresh(time.Now()) {
		return s.tok.oauth2(), nil
	}
	unlock, err := lockFile(ctx, s.Dir, s.Profile)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := readState(s.Dir, s.Profile)
	if err != nil {
		return nil, err
	}
	if st.ClientID != s.ClientID || st.TokenEndpoint != s.TokenEndpoint {
		return nil, fmt.Errorf("matrixpair: profile %q was logged in again as another session; load it again", s.Profile)
	}
	if !force && st.fresh(time.Now()) {
		s.tok = st.token // refreshed by someone else meanwhile
		return s.tok.oauth2(), nil
	}
	t, err := s.refresh(ctx, st.RefreshToken)
	if err != nil {
		return nil, err
	}
	s.tok = t
	if err := s.save(); err != nil {
		// The old refresh token may still be retried (P-RT-2) until the
		// new pair is used, so do not hand out the new one unsaved.
		return nil, err
	}
	return s.tok.oauth2(), nil
}

// refresh runs the refresh_token grant, retrying with the same refresh
// token when the answer was lost.
func (s *Session) refresh(ctx context.Context, rt string) (token, error) {
	log := s.logger()
	cfg := &oauth2.Config{
		ClientID: s.ClientID,
		Endpoint: oauth2.Endpoint{TokenURL: s.TokenEndpoint, AuthStyle: oauth2.AuthStyleInParams},
	}
	wait := refreshBackoff
	for attempt := 0; ; attempt++ {
		t, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
		if err == nil {
			if t.RefreshToken == "" {
				t.RefreshToken = rt
			}
			log.InfoContext(ctx, "refreshed the access token", "profile", s.Profile, "expiry", t.Expiry)
			return tokenFrom(t), nil
		}
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			switch re.ErrorCode {
			case "invalid_grant", "invalid_client", "unauthorized_client":
				return token{}, fmt.Errorf("matrixpair: refresh at %s: %s: %w", s.TokenEndpoint, re.ErrorCode, ErrSessionEnded)
			}
			if re.Response == nil || re.Response.StatusCode < http.StatusInternalServerError {
				return token{}, fmt.Errorf("matrixpair: refresh at %s: %w", s.TokenEndpoint, err)
			}
		}
		if ctx.Err() != nil {
			return token{}, ctx.Err()
		}
		if attempt >= refreshRetries {
			return token{}, fmt.Errorf("matrixpair: refresh at %s failed %d times: %w", s.TokenEndpoint, attempt+1, err)
		}
		log.WarnContext(ctx, "refresh failed; retrying with the same refresh token", "attempt", attempt+1, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return token{}, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// TokenSource returns an [oauth2.TokenSource] that hands out the session's
// access token and refreshes it as [Session.Token] does. ctx carries the
// HTTP client for refreshes (see [oauth2.HTTPClient]) and bounds them.
func (s *Session) TokenSource(ctx context.Context) oauth2.TokenSource {
	return tokenSource{ctx: ctx, s: s}
}

type tokenSource struct {
	ctx context.Context
	s   *Session
}

func (ts tokenSource) Token() (*oauth2.Token, error) { return ts.s.Token(ts.ctx) }

// Client returns an HTTP client that sends a fresh access token with every
// request, for the homeserver's client-server API. It is built like
// [oauth2.NewClient] on the client in ctx.
func (s *Session) Client(ctx context.Context) *http.Client {
	return oauth2.NewClient(ctx, s.TokenSource(ctx))
}
