package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// Tests of issue 10's limits that an attacker would try to walk around.

// localpartChecks counts the is_localpart_available calls the homeserver
// received, whatever it answered.
func localpartChecks(hs *fakesynapse.Homeserver) int {
	n := 0
	for _, c := range hs.Calls() {
		if strings.HasSuffix(c.Path, "/is_localpart_available") {
			n++
		}
	}
	return n
}

// TestRegistrationCountsFailedAttempts: prompt=create checks a name here
// before asking the homeserver or hashing a password, and an attempt that
// cost a homeserver call or an argon2 hash is not given back to the
// per-address budget (P-ACCT-2, P-ACCT-3, P-HS-3).
func TestRegistrationCountsFailedAttempts(t *testing.T) {
	e := newSynapseEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.Registration = devicegrant.Registration{Enabled: true, PerAddress: devicegrant.RateLimit{Burst: 2, Every: time.Hour}}
	}))
	p := newPhone(t)
	pg := p.Get(e.URL + "register")
	submit := func(name string) *devtest.Page {
		return p.Submit(pg, "/register", url.Values{"username": {name}, "password": {"a long password"}, "repeat": {"a long password"}})
	}
	// A name taken here is refused without a homeserver call (and so
	// without an argon2 hash, which comes after it).
	before := localpartChecks(e.hs)
	for i := 0; i < 5; i++ {
		if got := submit(testUser); got.Status != http.StatusConflict {
			t.Fatalf("a local username: %d %s", got.Status, got.Text())
		}
	}
	if n := localpartChecks(e.hs) - before; n != 0 {
		t.Errorf("a name taken here cost %d is_localpart_available calls, want 0", n)
	}
	// Names the homeserver refuses cost a call each: they count.
	e.hs.AddUser(fakeUser("carol"))
	e.hs.AddUser(fakeUser("dave"))
	for _, name := range []string{"carol", "dave"} {
		if got := submit(name); got.Status != http.StatusConflict {
			t.Fatalf("%s, taken on the homeserver: %d %s", name, got.Status, got.Text())
		}
	}
	if got := submit("erin"); got.Status != http.StatusTooManyRequests {
		t.Errorf("a free name after two refused ones with a budget of 2: %d %s", got.Status, got.Text())
	}
	// Form mistakes cost nothing and are not counted.
	e2 := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.Registration = devicegrant.Registration{Enabled: true, PerAddress: devicegrant.RateLimit{Burst: 1, Every: time.Hour}}
	}))
	p2 := newPhone(t)
	pg2 := p2.Get(e2.URL + "register")
	for i := 0; i < 3; i++ {
		if got := p2.Submit(pg2, "/register", url.Values{"username": {"frank"}, "password": {"short"}, "repeat": {"short"}}); got.Status != http.StatusBadRequest {
			t.Fatalf("a short password: %d", got.Status)
		}
	}
	if got := p2.Submit(pg2, "/register", url.Values{"username": {"frank"}, "password": {"a long password"}, "repeat": {"a long password"}}); got.Status != http.StatusSeeOther && got.Status != http.StatusOK {
		t.Errorf("registering after form mistakes: %d %s", got.Status, got.Text())
	}
}
