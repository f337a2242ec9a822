package devicegrant_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

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

// signedInAs is a phone signed in as another account, made here.
func signedInAs(t *testing.T, e *env, username string) *devtest.Phone {
	t.Helper()
	if _, err := e.Server.Server.CreateUser(t.Context(), username, testPassword, ""); err != nil {
		t.Fatal(err)
	}
	p := newPhone(t)
	pg := p.Get(e.URL + "account")
	if pg = p.Submit(pg, "/login", url.Values{"username": {username}, "password": {testPassword}}); pg.Status != http.StatusOK {
		t.Fatalf("signing in as %s: %d %s", username, pg.Status, pg.Text())
	}
	return p
}

// TestSignedInGuessingIsBoundedAcrossAccounts: wrong user codes typed by
// signed-in people count per account and against one global budget of
// all signed-in accounts, separate from the anonymous one; so accounts
// made in bulk cannot multiply the guesses (P-DEV-4, RFC 8628 §5.1).
func TestSignedInGuessingIsBoundedAcrossAccounts(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.UserCodeFailuresSignedIn = devicegrant.RateLimit{Burst: 3, Every: time.Hour}
	}))
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "GLOBALDEV1")

	guess := func(p *devtest.Phone) int {
		pg := p.Get(e.URL + "device")
		return p.Submit(pg, "/device", url.Values{"user_code": {"BBBB-BBBB"}}).Status
	}
	// Three accounts, each well within its own budget of 10.
	for _, name := range []string{"mallory1", "mallory2", "mallory3"} {
		if got := guess(signedInAs(t, e, name)); got != http.StatusBadRequest {
			t.Fatalf("%s's first wrong code: %d", name, got)
		}
	}
	fourth := signedInAs(t, e, "mallory4")
	if got := guess(fourth); got != http.StatusTooManyRequests {
		t.Errorf("a fourth account's first guess with the signed-in budget of 3 spent: %d, want 429", got)
	}
	if got := fourth.Get(da["verification_uri_complete"].(string)); got.Status != http.StatusTooManyRequests || strings.Contains(got.Text(), "Allow this device?") {
		t.Errorf("a right code with the signed-in budget spent is looked up: %d", got.Status)
	}
	// The anonymous budget is separate.
	if got := newPhone(t).Get(da["verification_uri_complete"].(string)); got.Status != http.StatusOK {
		t.Errorf("anonymous code entry with the signed-in budget spent: %d %s", got.Status, got.Text())
	}
}

// fromAddress makes a phone's requests come from addr, as a reverse proxy
// the server trusts would say (X-Forwarded-For).
func fromAddress(p *devtest.Phone, addr string) *devtest.Phone {
	p.Client.Transport = forwardedFor{addr}
	return p
}

type forwardedFor struct{ addr string }

func (f forwardedFor) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.addr)
	return http.DefaultTransport.RoundTrip(r)
}

// signIn submits the sign-in form of the account page.
func signIn(p *devtest.Phone, e *env, password string) *devtest.Page {
	pg := p.Get(e.URL + "account")
	if pg.Form("/login") == nil {
		e.t.Fatalf("no sign-in form: %s", pg.Text())
	}
	return p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {password}})
}

// TestStrangersCannotLockTheOwnerOut: wrong passwords from other addresses
// spend the account's budget for strangers, but the owner still signs in
// from an address they signed in from before, and still passes the
// password re-check of a destructive action in a browser signed in to the
// account; a stranger's address stays blocked, right password or not.
func TestStrangersCannotLockTheOwnerOut(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.AccountLoginFailures = devicegrant.RateLimit{Burst: 3, Every: time.Hour}
		c.TrustedProxies = []string{"127.0.0.1"}
	}))
	const home = "198.51.100.7"
	if got := signIn(fromAddress(newPhone(t), home), e, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Fatalf("the owner's first sign-in: %d %s", got.Status, got.Text())
	}
	// The owner's browser on the move: signed in, now at an address the
	// account never signed in from.
	browser := fromAddress(newPhone(t), home)
	signIn(browser, e, testPassword)
	fromAddress(browser, "192.0.2.99")

	// Strangers spend the account's budget from five addresses.
	for i := 1; i <= 5; i++ {
		got := signIn(fromAddress(newPhone(t), "203.0.113."+string(rune('0'+i))), e, "guess")
		if want := map[bool]int{true: http.StatusUnauthorized, false: http.StatusTooManyRequests}[i <= 3]; got.Status != want {
			t.Errorf("stranger %d: %d, want %d", i, got.Status, want)
		}
	}
	if got := signIn(fromAddress(newPhone(t), "203.0.113.9"), e, testPassword); got.Status != http.StatusTooManyRequests {
		t.Errorf("the right password from an unknown address with the budget spent: %d, want 429", got.Status)
	}
	// The owner, from home, in a new browser.
	if got := signIn(fromAddress(newPhone(t), home), e, testPassword); got.Status != http.StatusOK || !strings.Contains(got.Text(), "Your account") {
		t.Errorf("the owner from a known address: %d %s", got.Status, got.Text())
	}
	// The owner's signed-in browser confirms a destructive action.
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "LOCKOUTDEV")
	browser.Decide(da["verification_uri_complete"].(string), "approve")
	if status, m := e.poll(clientID, da["device_code"].(string)); status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, m)
	}
	pg := browser.Get(e.URL + "account?action=org.matrix.session_end&device_id=LOCKOUTDEV")
	if got := browser.Submit(pg, "/account/sessions/end", url.Values{"password": {testPassword}}); !strings.Contains(got.Text(), "is signed out") {
		t.Errorf("the password re-check in the owner's browser: %d %s", got.Status, got.Text())
	}
}

// errorLink returns the link onwards on an error page, or fails.
func errorLink(t *testing.T, pg *devtest.Page) *url.URL {
	t.Helper()
	if loc := pg.Header.Get("Location"); loc != "" {
		t.Fatalf("redirected to %s, want a page", loc)
	}
	for _, a := range pg.Find("a") {
		if strings.HasPrefix(devtest.Attr(a, "class"), "button") {
			u, err := url.Parse(devtest.Attr(a, "href"))
			if err != nil {
				t.Fatal(err)
			}
			return u
		}
	}
	t.Fatalf("no link onwards on %d: %s", pg.Status, pg.Text())
	return nil
}

const evilClientJSON = `{
	"client_name": "Totally Legit",
	"client_uri": "https://evil.example.net/",
	"application_type": "web",
	"token_endpoint_auth_method": "none",
	"redirect_uris": ["https://evil.example.net/cb"],
	"grant_types": ["authorization_code", "refresh_token"]
}`

// TestNoOpenRedirectThroughRegisteredClients: anyone can register a
// client with a redirect URI of their choosing; an error at the
// authorization endpoint must not send a browser there unasked unless the
// person signed in to that client before or the operator trusts it (RFC
// 9700 §4.11.2, P-AC-2). Otherwise the person sees the error, the app's
// name and a link.
func TestNoOpenRedirectThroughRegisteredClients(t *testing.T) {
	e := newEnv(t)
	evilID, _ := e.Register(evilClientJSON)
	p := newPhone(t)
	p.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	bad := url.Values{"client_id": {evilID}, "redirect_uri": {"https://evil.example.net/cb"}, "response_type": {"x"}, "state": {"s"}}
	pg := p.Get(e.URL + "oauth2/authorize?" + bad.Encode())
	link := errorLink(t, pg)
	if pg.Status != http.StatusBadRequest || link.Host != "evil.example.net" || link.Query().Get("error") != "unsupported_response_type" ||
		!strings.Contains(pg.Text(), "Totally Legit") || !strings.Contains(pg.Text(), "evil.example.net") {
		t.Errorf("signed out: %d, link %s: %s", pg.Status, link, pg.Text())
	}
	// Signed in, but never signed in to this client: still a page.
	signIn(p, e, testPassword)
	pg = p.Get(e.URL + "oauth2/authorize?" + bad.Encode())
	errorLink(t, pg)
	none := url.Values{"client_id": {evilID}, "redirect_uri": {"https://evil.example.net/cb"}, "response_type": {"code"},
		"code_challenge": {strings.Repeat("A", 43)}, "code_challenge_method": {"S256"}, "scope": {apiScope + " urn:matrix:client:device:EVILDEVICE1"}, "prompt": {"none"}}
	if link := errorLink(t, p.Get(e.URL+"oauth2/authorize?"+none.Encode())); link.Query().Get("error") != "consent_required" {
		t.Errorf("prompt=none, never approved: link %s", link)
	}

	// An app the person signed in to before gets its errors back at once.
	appID, _ := e.Register(appClientJSON)
	a := newApp(e, appID)
	if _, err := a.conf.Exchange(t.Context(), a.authorize().Query().Get("code"), oauth2.VerifierOption(a.verifier)); err != nil {
		t.Fatal(err)
	}
	again := url.Values{"client_id": {appID}, "redirect_uri": {a.callback}, "response_type": {"x"}, "state": {"s"}}
	if back := a.back(a.phone.Get(e.URL + "oauth2/authorize?" + again.Encode())); back.Query().Get("error") != "unsupported_response_type" {
		t.Errorf("an app signed in to before: back to %s", back)
	}
}

// fetchSite makes a phone's requests say where they come from
// (Sec-Fetch-Site), unless the request already says.
type fetchSite struct{ site string }

func (f fetchSite) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Sec-Fetch-Site") == "" && f.site != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Sec-Fetch-Site", f.site)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// upserts counts the upsert_device calls for deviceID the homeserver
// accepted, once nothing is left waiting in the outbox.
func upserts(t *testing.T, e *synapseEnv, deviceID string) int {
	t.Helper()
	eventually(t, "the outbox is empty", func() bool {
		entries, _ := e.Server.Server.Outbox(t.Context(), 10)
		return len(entries) == 0
	})
	n := 0
	for _, c := range calls(e.hs, "upsert_device") {
		if c["device_id"] == deviceID {
			n++
		}
	}
	return n
}

// TestTrustedClientNeedsOwnPageOrAClick: a trusted client skips the
// consent page, but a signed-in browser arriving from another site (or
// without saying where from) must not create or rename a Matrix device
// unasked: it gets the consent page, and only the click approves. A
// same-site one counts as another site (a sibling subdomain may serve
// anyone's content). A navigation from our own pages (the redirect after
// signing in: same-origin) still goes straight through (RFC 6749 §10.12: no authorization without the
// person's awareness; P-AC-1, P-HS-3).
func TestTrustedClientNeedsOwnPageOrAClick(t *testing.T) {
	e := newSynapseEnv(t)
	clientID, _ := e.Register(appClientJSON)
	if err := e.Server.Server.TrustClient(t.Context(), clientID, true); err != nil {
		t.Fatal(err)
	}
	a := newApp(e.env, clientID)
	pg := a.phone.Get(e.URL + "account")
	a.phone.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})

	for _, site := range []string{"cross-site", "same-site", "none", ""} {
		a.phone.Client.Transport = fetchSite{site}
		pg := a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier)))
		if pg.Status != http.StatusOK || pg.Form("/oauth2/authorize") == nil || pg.Header.Get("Location") != "" {
			t.Fatalf("Sec-Fetch-Site %q: %d %q, want the consent page: %s", site, pg.Status, pg.Header.Get("Location"), pg.Text())
		}
		if n := upserts(t, e, "APPDEVICE01"); n != 0 {
			t.Fatalf("Sec-Fetch-Site %q: a GET made %d upsert_device calls", site, n)
		}
		if site == "" { // the click approves
			back := a.back(a.waitForDevice(a.phone.Submit(pg, "/oauth2/authorize", url.Values{"action": {"approve"}})))
			if back.Query().Get("code") == "" || upserts(t, e, "APPDEVICE01") != 1 {
				t.Errorf("after the click: back to %s", back)
			}
		}
	}
	// prompt=none cannot show a page: the trusted app hears
	// interaction_required.
	a.phone.Client.Transport = fetchSite{"cross-site"}
	back := a.back(a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier), oauth2.SetAuthURLParam("prompt", "none"))))
	if back.Query().Get("error") != "interaction_required" {
		t.Errorf("prompt=none from another site: back to %s", back)
	}
	// From this site, no page.
	a.phone.Client.Transport = fetchSite{"same-origin"}
	back = a.back(a.waitForDevice(a.phone.Get(a.conf.AuthCodeURL("s", oauth2.S256ChallengeOption(a.verifier)))))
	if back.Query().Get("code") == "" {
		t.Errorf("same-origin navigation: back to %s", back)
	}
}

// drained waits until the outbox is empty.
func drained(t *testing.T, e *synapseEnv) {
	t.Helper()
	eventually(t, "the outbox is empty", func() bool {
		entries, _ := e.Server.Server.Outbox(t.Context(), 10)
		return len(entries) == 0
	})
}

// TestLapsedApprovalDeletesTheDevice: ending a session leaves its Matrix
// device alone while an approved but unredeemed device grant or
// authorization code names the same device id (the approval will need
// it); when that approval lapses instead, the device is deleted from the
// homeserver (P-HS-3: ending a session deletes its device; P-DEV-9,
// P-AC-3 lifetimes).
func TestLapsedApprovalDeletesTheDevice(t *testing.T) {
	e := newSynapseEnv(t, withClock())
	has := func(device string) bool { return slices.Contains(e.hs.Devices(testUser), device) }

	// A device grant.
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "LAPSEDEV01")
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	drained(t, e)
	e.Clock.Advance(2 * time.Second)
	status, tok := e.poll(clientID, da["device_code"].(string))
	if status != http.StatusOK {
		t.Fatalf("poll: %d %v", status, tok)
	}
	again := e.deviceAuth(clientID, "LAPSEDEV01")
	newPhone(t).Decide(again["verification_uri_complete"].(string), "approve") // and never redeemed
	drained(t, e)
	e.Post("oauth2/revoke", url.Values{"client_id": {clientID}, "token": {tok["refresh_token"].(string)}})
	drained(t, e)
	if !has("LAPSEDEV01") {
		t.Fatal("the device was deleted while an approval for it waited")
	}
	e.Clock.Advance(11 * time.Minute) // the second grant expires unredeemed
	eventually(t, "the lapsed grant's device is deleted", func() bool { return !has("LAPSEDEV01") })

	// An authorization code.
	appID, _ := e.Register(appClientJSON)
	a := newApp(e.env, appID)
	first, err := a.conf.Exchange(t.Context(), a.authorize().Query().Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	b := newApp(e.env, appID)
	b.authorize() // a code for the same device, never exchanged
	e.Post("oauth2/revoke", url.Values{"client_id": {appID}, "token": {first.RefreshToken}})
	drained(t, e)
	if !has("APPDEVICE01") {
		t.Fatal("the device was deleted while an authorization code for it waited")
	}
	e.Clock.Advance(2 * time.Minute) // the code (60 s) expires unexchanged
	eventually(t, "the lapsed code's device is deleted", func() bool { return !has("APPDEVICE01") })
	if got := calls(e.hs, "delete_device"); len(got) != 2 {
		t.Errorf("delete_device calls = %v, want one per lapsed approval", got)
	}
}

// TestParkedDeleteIsNeverSilent: a delete_device the homeserver keeps
// refusing is parked after 20 attempts, and then shows in the metrics by
// call (P-HS-3, P-HS-4).
func TestParkedDeleteIsNeverSilent(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/delete_device"):
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"refused for the test"}`)
		case strings.HasSuffix(r.URL.Path, "/provision_user"), strings.HasSuffix(r.URL.Path, "/upsert_device"):
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{}`)
		default:
			io.WriteString(w, `{}`)
		}
	}))
	t.Cleanup(hs.Close)
	reg := prometheus.NewRegistry()
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.HomeserverEndpoint = hs.URL
		c.Metrics = reg
	}))
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "PARKEDDEV1")
	newPhone(t).Decide(da["verification_uri_complete"].(string), "approve")
	var tok map[string]any
	eventually(t, "the device gets its tokens", func() bool {
		time.Sleep(1100 * time.Millisecond)
		status, m := e.poll(clientID, da["device_code"].(string))
		tok = m
		return status == http.StatusOK
	})
	e.Post("oauth2/revoke", url.Values{"client_id": {clientID}, "token": {tok["refresh_token"].(string)}})
	eventually(t, "delete_device is parked", func() bool {
		entries, _ := e.Server.Server.Outbox(t.Context(), 10)
		return len(entries) == 1 && entries[0].Call == "delete_device" && !entries[0].ParkedAt.IsZero()
	})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "call" && l.GetValue() == "delete_device" {
					got[f.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
	}
	if got["devicegrant_outbox_parked"] != 1 || got["devicegrant_outbox_parked_total"] != 1 {
		t.Errorf("metrics for delete_device: %v, want devicegrant_outbox_parked and devicegrant_outbox_parked_total at 1", got)
	}
}
