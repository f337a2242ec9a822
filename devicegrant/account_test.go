package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/internal/devtest"
)

// signedInPhone is a phone signed in to the account page.
func signedInPhone(t *testing.T, e *env, path string) (*devtest.Phone, *devtest.Page) {
	t.Helper()
	p := newPhone(t)
	pg := p.Get(e.URL + path)
	if pg.Form("/login") == nil {
		t.Fatalf("%s did not ask to sign in: %s", path, pg.Text())
	}
	pg = p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	if pg.Status != http.StatusOK {
		t.Fatalf("after signing in to %s: %d %s", path, pg.Status, pg.Text())
	}
	return p, pg
}

// TestAccountPages: P-ACCT-1's actions, each reached by its deep link.
func TestAccountPages(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	tok := e.signIn(clientID, "ACCOUNTDEV1")

	laptop, _ := signedInPhone(t, e, "account")
	p, pg := signedInPhone(t, e, "account?action=org.matrix.devices_list")
	if !strings.Contains(pg.Text(), "ACCOUNTDEV1") || !strings.Contains(pg.Text(), "Kitchen display") {
		t.Fatalf("device list: %s", pg.Text())
	}
	for _, action := range []string{"org.matrix.session_view", "org.matrix.device_view"} {
		pg = p.Get(e.URL + "account?action=" + action + "&device_id=ACCOUNTDEV1")
		if pg.Status != 200 || !strings.Contains(pg.Text(), "Last address 127.0.0.1") || !strings.Contains(pg.Text(), "kitchen.example.org") {
			t.Errorf("%s: %d %s", action, pg.Status, pg.Text())
		}
	}
	if pg = p.Get(e.URL + "account?action=org.matrix.session_view&device_id=NOSUCHDEVICE"); pg.Status != http.StatusNotFound {
		t.Errorf("unknown device: %d", pg.Status)
	}

	// Profile: the display name.
	pg = p.Get(e.URL + "account?action=org.matrix.profile")
	pg = p.Submit(pg, "/account/profile", url.Values{"display_name": {"Alice A."}})
	if !strings.Contains(pg.Text(), "Name saved") || !strings.Contains(pg.Text(), "Alice A.") {
		t.Errorf("profile: %s", pg.Text())
	}
	if pg.URL.Query().Get("done") != "name" {
		t.Errorf("after saving the name the browser is at %s; want a redirect (post/redirect/get)", pg.URL)
	}

	// Password: the current one is checked, the new one twice.
	pg = p.Submit(pg, "/account/password", url.Values{"current": {"wrong"}, "new": {"new password 1"}, "repeat": {"new password 1"}})
	if pg.Status != http.StatusUnauthorized {
		t.Errorf("password change with a wrong current password: %d", pg.Status)
	}
	pg = p.Submit(pg, "/account/password", url.Values{"current": {testPassword}, "new": {"new password 1"}, "repeat": {"new password 2"}})
	if pg.Status != http.StatusBadRequest {
		t.Errorf("password change with different repeats: %d", pg.Status)
	}
	pg = p.Submit(pg, "/account/password", url.Values{"current": {testPassword}, "new": {"new password 1"}, "repeat": {"new password 1"}})
	if !strings.Contains(pg.Text(), "Password changed") {
		t.Fatalf("password change: %s", pg.Text())
	}
	if got := laptop.Get(e.URL + "account"); got.Form("/login") == nil {
		t.Error("another browser is still signed in after the password changed")
	}
	if got := p.Get(e.URL + "account"); got.Form("/login") != nil {
		t.Error("the browser that changed the password was signed out")
	}

	// Ending a session asks for the password again; a wrong one changes
	// nothing.
	pg = p.Get(e.URL + "account?action=org.matrix.session_end&device_id=ACCOUNTDEV1")
	if !strings.Contains(pg.Text(), "Links to this page are easy to forge") {
		t.Errorf("confirmation page does not warn: %s", pg.Text())
	}
	if got := p.Submit(pg, "/account/sessions/end", url.Values{"password": {testPassword}}); got.Status != http.StatusUnauthorized {
		t.Errorf("ending a session with the old password: %d", got.Status)
	}
	if !active(e.Introspect(tok["access_token"].(string))) {
		t.Fatal("a failed confirmation ended the session")
	}
	p.Submit(pg, "/account/sessions/end", url.Values{"password": {"new password 1"}})
	if active(e.Introspect(tok["access_token"].(string))) {
		t.Error("the session's token is still active after ending it on the account page")
	}

	// Deactivation needs the username typed as well.
	pg = p.Get(e.URL + "account?action=org.matrix.account_deactivate")
	if got := p.Submit(pg, "/account/deactivate", url.Values{"password": {"new password 1"}, "confirm_text": {"bob"}}); got.Status != http.StatusBadRequest {
		t.Errorf("deactivation with the wrong username typed: %d", got.Status)
	}
	if u, _ := e.Store.UserByUsername(t.Context(), testUser); !u.DeactivatedAt.IsZero() {
		t.Fatal("deactivated without confirmation")
	}
}

// TestLoginNextIsLocal: the page to return to after signing in is never
// another site (no open redirect).
func TestLoginNextIsLocal(t *testing.T) {
	e := newEnv(t)
	p := newPhone(t)
	pg := p.Get(e.URL + "account")
	p.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, next := range []string{"https://evil.example/", "//evil.example/", "/\\evil.example", "http:/evil"} {
		got := p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}, "next": {next}})
		if loc := got.Header.Get("Location"); strings.Contains(loc, "evil") {
			t.Errorf("next=%q redirected to %q", next, loc)
		}
	}
}
