package devicegrant_test

import (
	"net/http"
	"testing"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestIssuerWithAPath: an issuer with a path serves its metadata under that
// path and, as RFC 8414 §3 asks, at the well-known path with the issuer's
// path appended (P-DISC-1).
func TestIssuerWithAPath(t *testing.T) {
	var issuer string
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.Issuer += "auth/"
		issuer = c.Issuer
	}))
	for _, path := range []string{
		"auth/.well-known/openid-configuration",
		"auth/.well-known/oauth-authorization-server",
		".well-known/oauth-authorization-server/auth",
	} {
		status, m := e.Get(path)
		if status != http.StatusOK || m["issuer"] != issuer || m["token_endpoint"] != issuer+"oauth2/token" {
			t.Errorf("GET /%s: %d, issuer %v, token_endpoint %v; want the metadata of %s",
				path, status, m["issuer"], m["token_endpoint"], issuer)
		}
	}
}

// TestLoginHint: login_hint=mxid:@user:server fills in the sign-in form
// with the localpart when the server name is ours, and is ignored when it
// is another server's (P-AC-1).
func TestLoginHint(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(appClientJSON)
	for hint, want := range map[string]string{
		"mxid:@Alice:example.org": "alice",
		"mxid:@alice:other.org":   "",
		"alice":                   "",
	} {
		a := newApp(e, clientID)
		pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier), oauth2.SetAuthURLParam("login_hint", hint)))
		if pg.Form("/login") == nil {
			t.Fatalf("login_hint %q: no sign-in form: %d %s", hint, pg.Status, pg.Text())
		}
		got, found := "", false
		for _, in := range pg.Find("input") {
			if devtest.Attr(in, "name") == "username" {
				got, found = devtest.Attr(in, "value"), true
			}
		}
		if !found || got != want {
			t.Errorf("login_hint %q: username field %q (found %v), want %q", hint, got, found, want)
		}
	}
}
