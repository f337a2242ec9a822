package devicegrant

import (
	"net/url"
	"strings"
	"testing"
)

// TestCheckSSORedirect (P-LEG-3): which redirectUrl values an app may send, and what
// the confirmation page names as the app.
func TestCheckSSORedirect(t *testing.T) {
	good := map[string]string{
		"https://app.example.org/sso?x=1#/login": "app.example.org",
		"http://127.0.0.1:8765/cb":               "127.0.0.1:8765",
		"com.example.app:/callback":              "com.example.app",
		"element://vector/webapp/":               "vector",
	}
	for raw, host := range good {
		u, got, e := checkSSORedirect(raw)
		if e != nil || got != host || u.String() != raw {
			t.Errorf("%q: host %q, err %v; want host %q", raw, got, e, host)
		}
	}
	for _, raw := range []string{"", "/relative", "app.example.org/cb", "javascript:alert(1)", "JavaScript://x/%0aalert(1)",
		"data:text/html,hi", "file:///etc/passwd", "https://user:pw@app.example.org/", "https:///no-host", "mailto:a@example.org",
		"https://app.example.org/a b", "https://app.example.org/" + strings.Repeat("x", 2048)} {
		if _, _, e := checkSSORedirect(raw); e == nil {
			t.Errorf("%q accepted", raw)
		} else if e.status != 400 || (e.code != "M_INVALID_PARAM" && e.code != "M_MISSING_PARAM") {
			t.Errorf("%q: %d %s", raw, e.status, e.code)
		}
	}
}

// TestWithLoginToken (P-LEG-3): the token joins the app's own query; the fragment
// stays where the app put it.
func TestWithLoginToken(t *testing.T) {
	for raw, want := range map[string]string{
		"https://app.example.org/sso":             "https://app.example.org/sso?loginToken=dgl_x",
		"https://app.example.org/sso?a=1&b=2":     "https://app.example.org/sso?a=1&b=2&loginToken=dgl_x",
		"https://app.example.org/?no_ul=1#/login": "https://app.example.org/?no_ul=1&loginToken=dgl_x#/login",
		"com.example.app:/callback":               "com.example.app:/callback?loginToken=dgl_x",
	} {
		u, _ := url.Parse(raw)
		if got := withLoginToken(u, "dgl_x"); got != want {
			t.Errorf("%s: %s, want %s", raw, got, want)
		}
	}
}

// TestNewLegacyDeviceID (P-LEG-2): ten capital letters, valid under P-SCOPE-2, and
// not the same twice.
func TestNewLegacyDeviceID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := newLegacyDeviceID()
		if len(id) != 10 || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" || checkDeviceID(id) != nil || seen[id] {
			t.Fatalf("device id %q", id)
		}
		seen[id] = true
	}
}
