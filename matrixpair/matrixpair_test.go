package matrixpair_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/internal/pairtest"
	"github.com/devicegrant/devicegrant/matrixpair"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// login runs matrixpair.Login in the background and has the phone take
// action on the card it shows; it returns Login's result.
func login(t *testing.T, w *pairtest.World, opts matrixpair.LoginOptions, action string) (*matrixpair.Session, error) {
	t.Helper()
	ctx := ctxFor(t)
	auths := make(chan matrixpair.Authorization, 4)
	opts.Show = func(a matrixpair.Authorization) { auths <- a }
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	type result struct {
		s   *matrixpair.Session
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := matrixpair.Login(ctx, opts)
		done <- result{s, err}
	}()
	select {
	case a := <-auths:
		if !strings.HasPrefix(a.VerificationURIComplete, strings.ToUpper(w.Auth.URL)) || a.UserCode == "" || a.Expires.IsZero() {
			t.Fatalf("authorization %+v", a)
		}
		if action != "" {
			w.Phone.Decide(a.VerificationURIComplete, action)
		}
	case r := <-done:
		return r.s, r.err
	}
	r := <-done
	return r.s, r.err
}

func discover(t *testing.T, w *pairtest.World) *matrixpair.Homeserver {
	t.Helper()
	hs, err := matrixpair.Discover(ctxFor(t), w.UserID())
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// discoverVia discovers w's homeserver with its token endpoint behind a
// proxy that rec records (and may rewrite).
func discoverVia(t *testing.T, w *pairtest.World, rec *pairtest.Recorder) *matrixpair.Homeserver {
	t.Helper()
	proxy := pairtest.Proxy(t, strings.TrimSuffix(w.Auth.URL, "/"), rec.Wrap)
	hs := discover(t, w)
	hs.Metadata.TokenEndpoint = proxy + "/oauth2/token"
	return hs
}

// startLogin runs matrixpair.Login against hs in the background and returns
// the authorization its card shows, with Login's result to come, for tests
// that decide on the phone only later.
func startLogin(t *testing.T, hs *matrixpair.Homeserver) (matrixpair.Authorization, <-chan error) {
	t.Helper()
	ctx := ctxFor(t)
	auths := make(chan matrixpair.Authorization, 1)
	done := make(chan error, 1)
	go func() {
		_, err := matrixpair.Login(ctx, matrixpair.LoginOptions{Homeserver: hs, Dir: t.TempDir(),
			Show: func(a matrixpair.Authorization) { auths <- a }})
		done <- err
	}()
	return <-auths, done
}

func TestDiscovery(t *testing.T) {
	for _, tc := range []struct {
		mode   fakesynapse.AuthMetadataMode
		source string
	}{
		{fakesynapse.Stable, "auth_metadata"},
		{fakesynapse.UnstableOnly, "unstable_auth_metadata"},
		{fakesynapse.LegacyAuthIssuer, "auth_issuer"},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			w := pairtest.Start(t, tc.mode)
			for _, target := range []string{w.UserID(), w.HS.ServerName(), w.HS.URL(), w.HS.URL() + "/"} {
				hs, err := matrixpair.Discover(ctxFor(t), target)
				if err != nil {
					t.Fatalf("%s: %v", target, err)
				}
				if hs.Source != tc.source || hs.BaseURL != w.HS.URL() || hs.Metadata.Issuer != w.Auth.URL ||
					hs.Metadata.DeviceAuthorizationEndpoint != w.Auth.URL+"oauth2/device" {
					t.Fatalf("%s: %+v", target, hs)
				}
			}
			// And a whole login works through that discovery.
			s, err := login(t, w, matrixpair.LoginOptions{Homeserver: discover(t, w)}, "approve")
			if err != nil || s.UserID != w.UserID() {
				t.Fatalf("login: %v %+v", err, s)
			}
		})
	}
	t.Run("None", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.None)
		_, err := matrixpair.Discover(ctxFor(t), w.UserID())
		if !errors.Is(err, matrixpair.ErrNoOAuth) || !strings.Contains(err.Error(), "legacy") {
			t.Fatalf("got %v, want ErrNoOAuth with an explanation", err)
		}
	})
	t.Run("bad targets", func(t *testing.T) {
		for _, target := range []string{"", "@alice", "http://matrix.example.org", "ftp://x.example.org", "a/b"} {
			if _, err := matrixpair.Discover(ctxFor(t), target); err == nil {
				t.Errorf("%q: no error", target)
			}
		}
	})
}

func TestLoginTokenClientLogout(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	dir := filepath.Join(t.TempDir(), "state")
	s, err := login(t, w, matrixpair.LoginOptions{Homeserver: discover(t, w), Dir: dir, Profile: "kitchen",
		DeviceID: "KITCHENPI01", ClientName: "matrix-pair on kitchen-pi"}, "approve")
	if err != nil {
		t.Fatal(err)
	}
	if s.UserID != w.UserID() || s.DeviceID != "KITCHENPI01" || s.Homeserver != w.HS.URL() || s.Issuer != w.Auth.URL {
		t.Fatalf("session %+v", s)
	}
	if !strings.Contains(s.Scope, "urn:matrix:client:device:KITCHENPI01") {
		t.Fatalf("scope %q", s.Scope)
	}
	// State file and directory are private.
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, "kitchen.json"), 0o600)
	raw, _ := os.ReadFile(filepath.Join(dir, "kitchen.json"))
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"homeserver", "user_id", "device_id", "issuer", "token_endpoint", "revocation_endpoint", "client_id", "access_token", "refresh_token", "expiry"} {
		if v, _ := st[k].(string); v == "" {
			t.Errorf("state has no %s: %s", k, raw)
		}
	}

	// A bot loads the profile and calls the homeserver with the client.
	bot, err := matrixpair.LoadDir(dir, "kitchen")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := bot.Client(ctxFor(t)).Get(bot.Homeserver + "/_matrix/client/v3/account/whoami")
	if err != nil {
		t.Fatal(err)
	}
	var who matrixpair.WhoAmI
	json.NewDecoder(resp.Body).Decode(&who)
	resp.Body.Close()
	if resp.StatusCode != 200 || who.UserID != w.UserID() || who.DeviceID != "KITCHENPI01" {
		t.Fatalf("whoami: %d %+v", resp.StatusCode, who)
	}
	tok, err := bot.Token(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if in := w.Introspect(tok.AccessToken); !in.Active || in.DeviceID != "KITCHENPI01" {
		t.Fatalf("introspection %+v", in)
	}
	// A forced refresh rotates the pair and saves it.
	t2, err := bot.Refresh(ctxFor(t))
	if err != nil || t2.AccessToken == tok.AccessToken || t2.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v", err)
	}
	again, _ := matrixpair.LoadDir(dir, "kitchen")
	if t3, _ := again.Token(ctxFor(t)); t3.AccessToken != t2.AccessToken {
		t.Fatal("the refreshed token was not saved")
	}

	// Logout revokes at the server and removes the state.
	if err := bot.Logout(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if in := w.Introspect(t2.AccessToken); in.Active {
		t.Fatal("token still active after logout")
	}
	if _, err := matrixpair.LoadDir(dir, "kitchen"); !errors.Is(err, matrixpair.ErrNotLoggedIn) {
		t.Fatalf("after logout: %v", err)
	}
	if _, err := bot.Token(ctxFor(t)); !errors.Is(err, matrixpair.ErrNotLoggedIn) {
		t.Fatalf("token after logout: %v", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func TestReRegisterWhenClientForgotten(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	hs := discover(t, w)
	s, err := login(t, w, matrixpair.LoginOptions{Homeserver: hs, ClientID: "01FORGOTTENCLIENT0000000000"}, "approve")
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientID == "01FORGOTTENCLIENT0000000000" || s.ClientID == "" {
		t.Fatalf("client id %q", s.ClientID)
	}
	// A known client id is reused.
	s2, err := login(t, w, matrixpair.LoginOptions{Homeserver: hs, ClientID: s.ClientID}, "approve")
	if err != nil || s2.ClientID != s.ClientID {
		t.Fatalf("reuse: %v, %q vs %q", err, s2.ClientID, s.ClientID)
	}
}

func TestDeniedAndExpired(t *testing.T) {
	t.Run("denied", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.Stable)
		dir := t.TempDir()
		_, err := login(t, w, matrixpair.LoginOptions{Homeserver: discover(t, w), Dir: dir}, "deny")
		if !errors.Is(err, matrixpair.ErrDenied) {
			t.Fatalf("got %v", err)
		}
		if _, err := matrixpair.LoadDir(dir, ""); !errors.Is(err, matrixpair.ErrNotLoggedIn) {
			t.Fatalf("state after denial: %v", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		w := pairtest.Start(t, fakesynapse.Stable, devtest.WithConfig(func(c *devicegrant.Config) {
			c.DeviceCodeTTL = 3 * time.Second
		}))
		start := time.Now()
		_, err := login(t, w, matrixpair.LoginOptions{Homeserver: discover(t, w)}, "")
		if !errors.Is(err, matrixpair.ErrExpired) {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(start); d < 2*time.Second || d > 10*time.Second {
			t.Fatalf("gave up after %v", d)
		}
	})
}

// TestSlowDown: a duplicated poll (as a retrying network would send) makes
// the next one too soon; devicegrantd answers slow_down, and the client
// must wait interval+5 s before polling again and still finish.
func TestSlowDown(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	rec := &pairtest.Recorder{}
	var once sync.Once
	var times []time.Time
	var mu sync.Mutex
	rec.Before = func(r pairtest.Request) bool {
		if r.Form.Get("grant_type") != matrixpair.GrantDeviceCode {
			return true
		}
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		once.Do(func() { // the duplicate reaches the server first
			resp, err := http.PostForm(w.Auth.URL+"oauth2/token", r.Form)
			if err == nil {
				resp.Body.Close()
			}
		})
		return true
	}
	var slowDowns int
	rec.Rewrite = func(r pairtest.Request, status int, body []byte) (int, []byte) {
		if strings.Contains(string(body), `"slow_down"`) {
			mu.Lock()
			slowDowns++
			mu.Unlock()
		}
		return status, body
	}
	a, done := startLogin(t, discoverVia(t, w, rec))
	// Approve only after the slow_down was answered.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := slowDowns
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no slow_down seen")
		}
	}
	w.Phone.Decide(a.VerificationURIComplete, "approve")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if slowDowns != 1 || len(times) != 2 {
		t.Fatalf("%d slow_down answers, %d polls; want 1 and 2", slowDowns, len(times))
	}
	if gap := times[1].Sub(times[0]); gap < a.Interval+5*time.Second {
		t.Fatalf("polled again after %v, want at least %v", gap, a.Interval+5*time.Second)
	}
}

// TestMAS403: MAS answers authorization_pending with HTTP 403 instead of
// 400. A proxy does the same to devicegrantd's answers; the login must
// still wait for the approval.
func TestMAS403(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	rec := &pairtest.Recorder{Rewrite: func(r pairtest.Request, status int, body []byte) (int, []byte) {
		if status == http.StatusBadRequest && strings.Contains(string(body), `"authorization_pending"`) {
			return http.StatusForbidden, body
		}
		return status, body
	}}
	a, done := startLogin(t, discoverVia(t, w, rec))
	time.Sleep(2500 * time.Millisecond) // at least two 403 polls
	w.Phone.Decide(a.VerificationURIComplete, "approve")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Requests("grant_type", matrixpair.GrantDeviceCode)); n < 3 {
		t.Fatalf("%d polls; want the 403s to be retried", n)
	}
}

// loginVia logs in with the token endpoint behind a recording proxy and
// returns the state directory.
func loginVia(t *testing.T, w *pairtest.World, rec *pairtest.Recorder) (string, *matrixpair.Session) {
	t.Helper()
	dir := t.TempDir()
	s, err := login(t, w, matrixpair.LoginOptions{Homeserver: discoverVia(t, w, rec), Dir: dir}, "approve")
	if err != nil {
		t.Fatal(err)
	}
	return dir, s
}

// expire rewrites the state file so that its access token looks expired.
func expire(t *testing.T, dir string) {
	t.Helper()
	p := matrixpair.StatePath(dir, matrixpair.DefaultProfile)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	json.Unmarshal(raw, &st)
	st["expiry"] = time.Now().Add(-time.Minute).Format(time.RFC3339)
	raw, _ = json.Marshal(st)
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestParallelRefreshOnce: many sessions of one profile (separate Session
// values, as separate processes would have) ask for a token at once with
// an expired access token: one refresh reaches the server and all get the
// same new token.
func TestParallelRefreshOnce(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	rec := &pairtest.Recorder{}
	dir, s := loginVia(t, w, rec)
	old, _ := s.Token(ctxFor(t))
	expire(t, dir)
	const n = 16
	tokens := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := matrixpair.LoadDir(dir, "")
			if err != nil {
				errs[i] = err
				return
			}
			<-start
			t, err := s.Token(context.Background())
			if err == nil {
				tokens[i] = t.AccessToken
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("token %d differs: parallel callers refreshed separately", i)
		}
	}
	if tokens[0] == old.AccessToken {
		t.Fatal("no refresh happened")
	}
	if got := len(rec.Requests("grant_type", "refresh_token")); got != 1 {
		t.Fatalf("%d refresh requests reached the server, want 1", got)
	}
	if in := w.Introspect(tokens[0]); !in.Active {
		t.Fatal("the shared token is not active")
	}
}

// TestLostRefreshResponse: the server rotates the pair but the answer is
// lost; the client retries with the same refresh token (P-RT-2) and gets a
// working pair, and the session survives.
func TestLostRefreshResponse(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	rec := &pairtest.Recorder{}
	dir, s := loginVia(t, w, rec)
	var mu sync.Mutex
	lost := 0
	rec.After = func(r pairtest.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Form.Get("grant_type") == "refresh_token" && lost == 0 {
			lost++
			return false
		}
		return true
	}
	old, _ := s.Token(ctxFor(t))
	expire(t, dir)
	bot, _ := matrixpair.LoadDir(dir, "")
	tok, err := bot.Token(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	refreshes := rec.Requests("grant_type", "refresh_token")
	if len(refreshes) != 2 || refreshes[0].Form.Get("refresh_token") != old.RefreshToken ||
		refreshes[1].Form.Get("refresh_token") != old.RefreshToken {
		t.Fatalf("want two refreshes with the same old refresh token, got %d", len(refreshes))
	}
	if in := w.Introspect(tok.AccessToken); !in.Active {
		t.Fatal("the retried pair is not active")
	}
	// The session goes on: the next refresh works too.
	if _, err := bot.Refresh(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := bot.WhoAmI(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
}

func TestSessionEndedAtServer(t *testing.T) {
	w := pairtest.Start(t, fakesynapse.Stable)
	dir := t.TempDir()
	s, err := login(t, w, matrixpair.LoginOptions{Homeserver: discover(t, w), Dir: dir}, "approve")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	bot, _ := matrixpair.LoadDir(dir, "")
	if _, err := bot.Refresh(ctxFor(t)); !errors.Is(err, matrixpair.ErrSessionEnded) {
		t.Fatalf("got %v", err)
	}
}
