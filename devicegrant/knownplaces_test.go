package devicegrant_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// placeReads counts the store's known-place reads.
type placeReads struct {
	store.Store
	n *atomic.Int64
}

func (p placeReads) KnownPlace(ctx context.Context, userID, place string) (time.Time, error) {
	p.n.Add(1)
	return p.Store.KnownPlace(ctx, userID, place)
}

// TestKnownPlaceNoTimingOracle: a wrong password for an account that
// exists and one for a name nobody holds do the same work, including the
// database read of where the account signed in from (issue 15 moved it
// from memory to the database, a round trip that only existing accounts
// would otherwise pay, telling a stranger which names are accounts, which
// the dummy hash exists to hide).
func TestKnownPlaceNoTimingOracle(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "places.db"))
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int64
	// Not newEnv: DEVICEGRANT_CORE_STORE=postgres would replace the store.
	e := &env{Server: devtest.Start(t, devtest.WithRerunUpdates(nil), devtest.WithStore(placeReads{Store: st, n: &reads})), t: t}
	for _, user := range []string{testUser, "nobody-here"} {
		before := reads.Load()
		status, m := e.legacyLogin(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + user + `"},"password":"wrong password"}`)
		if status != http.StatusForbidden {
			t.Fatalf("wrong password for %q: %d %v", user, status, m)
		}
		if got := reads.Load() - before; got != 1 {
			t.Errorf("a wrong password for %q read the known places %d times; every try must read them once, account or not", user, got)
		}
	}
}

// TestStrangerAtOneKnownPlace: the owner once signed in from a shared
// address (a café, a carrier's NAT) as well as from home. A stranger behind
// that shared address spends its budget, and the per-account budget of
// strangers, but not the owner's budget at home: each known place has a
// budget of its own, so the table of known places cannot be turned against
// the owner everywhere by a guesser at one of them (issue 15 review; the
// README's promise that "the owner at home ... still signs in").
func TestStrangerAtOneKnownPlace(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.AccountLoginFailures = devicegrant.RateLimit{Burst: 3, Every: time.Hour}
		c.TrustedProxies = []string{"127.0.0.1"}
	}))
	const home, cafe = "198.51.100.7", "192.0.2.50"
	for _, addr := range []string{home, cafe} {
		if got := signIn(fromAddress(newPhone(t), addr), e, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
			t.Fatalf("the owner's sign-in from %s: %d %s", addr, got.Status, got.Text())
		}
	}
	// A stranger at the café guesses until refused.
	for i := 1; i <= 4; i++ {
		got := signIn(fromAddress(newPhone(t), cafe), e, "guess")
		if want := map[bool]int{true: http.StatusUnauthorized, false: http.StatusTooManyRequests}[i <= 3]; got.Status != want {
			t.Errorf("stranger at the café, guess %d: %d, want %d", i, got.Status, want)
		}
	}
	if got := signIn(fromAddress(newPhone(t), home), e, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Errorf("the owner at home after a stranger's guesses at the café: %d %s", got.Status, got.Text())
	}
}

// sessionReads counts the store's browser-session reads, and the known
// places' as placeReads does.
type sessionReads struct {
	placeReads
	sessions *atomic.Int64
}

func (s sessionReads) BrowserSession(ctx context.Context, hash []byte) (store.BrowserSession, error) {
	s.sessions.Add(1)
	return s.placeReads.Store.BrowserSession(ctx, hash)
}

// TestSignedInTryNoTimingOracle: from a browser signed in to some account,
// a wrong password for another account and one for a name that is no
// account read the same rows: the check whether the browser is signed in
// to the account tried reads the browser's session in both cases, so
// whoever holds an account cannot time it to learn which names are
// accounts.
func TestSignedInTryNoTimingOracle(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sessions.db"))
	if err != nil {
		t.Fatal(err)
	}
	var places, sessions atomic.Int64
	e := &env{Server: devtest.Start(t, devtest.WithRerunUpdates(nil),
		devtest.WithStore(sessionReads{placeReads{Store: st, n: &places}, &sessions})), t: t}
	if _, err := e.Server.Server.CreateUser(t.Context(), "bob", testPassword, ""); err != nil {
		t.Fatal(err)
	}
	p := newPhone(t)
	form := p.Get(e.URL + "account")
	if got := signIn(p, e, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Fatalf("sign-in: %d %s", got.Status, got.Text())
	}
	reads := map[string]int64{}
	for _, user := range []string{"bob", "nobody-here"} {
		before := sessions.Load()
		got := p.Submit(form, "/login", url.Values{"username": {user}, "password": {"wrong password"}})
		if got.Status != http.StatusUnauthorized {
			t.Fatalf("a wrong password for %q from a signed-in browser: %d %s", user, got.Status, got.Text())
		}
		reads[user] = sessions.Load() - before
	}
	if reads["bob"] != reads["nobody-here"] {
		t.Errorf("browser-session reads for a wrong password: %d for an account, %d for a name that is none", reads["bob"], reads["nobody-here"])
	}
}
