package devicegrant_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// TestParallelWrongPasswordsAreLimited: many wrong passwords sent at once
// from one address are checked no more often than the budget allows (the
// try is taken before the argon2 work, not after).
func TestParallelWrongPasswordsAreLimited(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.LoginFailures = devicegrant.RateLimit{Burst: 5, Every: time.Hour}
	}))
	p := newPhone(t)
	pg := p.Get(e.URL + "account")
	const n = 30
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {"wrong password"}})
			mu.Lock()
			counts[got.Status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[http.StatusUnauthorized] > 5 || counts[http.StatusTooManyRequests] < n-5 {
		t.Errorf("answers %v: want at most 5 checked (401), the rest refused (429)", counts)
	}
	// The right password is refused too while the budget is spent.
	if got := p.Submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}}); got.Status != http.StatusTooManyRequests {
		t.Errorf("right password with the budget spent: %d", got.Status)
	}
}

// TestAccountBudget: wrong passwords for one account are limited however
// many addresses they come from.
func TestAccountBudget(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.AccountLoginFailures = devicegrant.RateLimit{Burst: 3, Every: time.Hour}
		c.TrustedProxies = []string{"127.0.0.1"}
	}))
	p := newPhone(t)
	pg := p.Get(e.URL + "account")
	statuses := []int{}
	for i := 0; i < 5; i++ {
		form := url.Values{"username": {testUser}, "password": {"wrong"}, "csrf": {csrfOf(t, pg)}, "next": {"/account"}}
		req, _ := http.NewRequest("POST", e.URL+"login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", "198.51.100."+string(rune('1'+i)))
		resp, err := p.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if want := []int{401, 401, 401, 429, 429}; !equalInts(statuses, want) {
		t.Errorf("wrong passwords from five addresses: %v, want %v", statuses, want)
	}
}

func csrfOf(t *testing.T, pg *devtest.Page) string {
	t.Helper()
	for _, in := range pg.Find("input") {
		if devtest.Attr(in, "name") == "csrf" {
			return devtest.Attr(in, "value")
		}
	}
	t.Fatal("no csrf field")
	return ""
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSignedInPeopleKeepTheirOwnCodeBudget: a guesser who spends the
// global user-code budget blocks anonymous code entry, not a signed-in
// person approving their device (P-DEV-4).
func TestSignedInPeopleKeepTheirOwnCodeBudget(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.UserCodeFailuresGlobal = devicegrant.RateLimit{Burst: 2, Every: time.Hour}
	}))
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "BUDGETDEV1")

	owner, _ := signedInPhone(t, e, "account")
	guesser := newPhone(t)
	pg := guesser.Get(e.URL + "device")
	for i := 0; i < 2; i++ {
		pg = guesser.Submit(pg, "/device", url.Values{"user_code": {"BBBB-BBBB"}})
	}
	if got := guesser.Get(da["verification_uri_complete"].(string)); got.Status != http.StatusTooManyRequests {
		t.Errorf("anonymous entry with the global budget spent: %d", got.Status)
	}
	if got := owner.Get(da["verification_uri_complete"].(string)); !strings.Contains(got.Text(), "Allow this device?") {
		t.Errorf("signed-in person with the global budget spent: %d %s", got.Status, got.Text())
	}
}

// TestUnauthenticatedWritesAreLimited: registration and device
// authorization answer 429 past their per-address budget.
func TestUnauthenticatedWritesAreLimited(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		c.ClientRegistrations = devicegrant.RateLimit{Burst: 2, Every: time.Hour}
		c.DeviceAuthorizations = devicegrant.RateLimit{Burst: 2, Every: time.Hour}
	}))
	clientID, _ := e.Register(deviceClientJSON)
	e.Register(deviceClientJSON)
	if status, m := e.PostJSON("oauth2/registration", deviceClientJSON); status != http.StatusTooManyRequests || m["error"] == nil {
		t.Errorf("third registration: %d %v", status, m)
	}
	form := url.Values{"client_id": {clientID}, "scope": {apiScope}}
	e.Post("oauth2/device", form)
	e.Post("oauth2/device", form)
	if status, m := e.Post("oauth2/device", form); status != http.StatusTooManyRequests {
		t.Errorf("third device authorization: %d %v", status, m)
	}
}
