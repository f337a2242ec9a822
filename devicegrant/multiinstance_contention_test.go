package devicegrant_test

import (
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// goT lets a helper that fails with t.Fatal (devtest.Do, Phone) run on a
// goroutine of the test's own: there Fatal records the failure and ends
// only that goroutine, since testing allows FailNow only on the test's.
type goT struct{ testing.TB }

func (g goT) Fatal(args ...any) {
	g.TB.Helper()
	g.TB.Error(args...)
	runtime.Goexit()
}

func (g goT) Fatalf(format string, args ...any) {
	g.TB.Helper()
	g.TB.Errorf(format, args...)
	runtime.Goexit()
}

func (g goT) FailNow() {
	g.TB.Fail()
	runtime.Goexit()
}

// postAs is cluster.post for a goroutine of the test's own.
func (c *cluster) postAs(t testing.TB, base, path string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return devtest.Do(t, req)
}

// deviceCode is one device authorization, asked through the proxy.
type deviceCode struct{ device, complete string }

func (c *cluster) deviceAuthorization(t testing.TB, clientID, deviceID string) deviceCode {
	t.Helper()
	status, m := c.postAs(t, c.issuer, "oauth2/device", url.Values{"client_id": {clientID},
		"scope": {apiScope + " urn:matrix:client:device:" + deviceID}})
	dc, _ := m["device_code"].(string)
	complete, _ := m["verification_uri_complete"].(string)
	if status != http.StatusOK || dc == "" || complete == "" {
		t.Fatalf("device authorization through the proxy: %d %v", status, m)
	}
	return deviceCode{dc, complete}
}

// redeem polls an approved code once through the proxy and returns the
// pair (P-DEV-6: the first poll after the approval reads it from the
// database, since nobody polled the code before).
func (c *cluster) redeem(t testing.TB, clientID string, dc deviceCode) (access, refresh string) {
	t.Helper()
	status, m := c.postAs(t, c.issuer, "oauth2/token", url.Values{"grant_type": {deviceGrant},
		"device_code": {dc.device}, "client_id": {clientID}})
	access, _ = m["access_token"].(string)
	refresh, _ = m["refresh_token"].(string)
	if status != http.StatusOK || access == "" || refresh == "" {
		t.Fatalf("redeeming an approved code: %d %v", status, m)
	}
	return access, refresh
}

// TestMultiInstanceContention: three cores on one PostgreSQL schema, and
// everything that makes their transactions collide at once, spread over
// the instances by the round-robin proxy: racing refreshes of the same
// refresh tokens, some raced by revocations of the same session; racing
// polls of approved device codes; approvals; new device authorizations;
// identical and distinct client registrations. Serialization failures
// and deadlocks are retried inside the server (issue 15): no answer
// through the proxy is a 5xx. And the outcomes are the protocol's: each
// round of racing refreshes leaves exactly one live pair (P-RT-3, P-RT-2),
// a revoked session has no live pair whatever raced with the revocation
// (P-REV-1), each approved code yields tokens once (P-DEV-6), every
// approval made in the storm redeems, identical registrations share one
// client and distinct ones do not (P-DCR-6).
func TestMultiInstanceContention(t *testing.T) {
	const (
		n          = 3
		chains     = 6 // refresh chains; the last two are revoked mid-race
		revoked    = 2
		rounds     = 3 // racing refreshes per chain, one round after another
		racers     = 6 // presentations of one refresh token at once
		polled     = 4 // approved codes polled by racers at once
		approvals  = 4 // codes approved during the storm, two phones
		newDevices = 6 // device authorizations during the storm
		regs       = 6 // identical registrations, and as many distinct ones
	)
	logs := &devtest.SyncBuffer{} // what made a 500, should one happen
	lots := devicegrant.RateLimit{Burst: 100_000, Every: time.Millisecond}
	c := newClusterWith(t, n, func(_ int, cfg *devicegrant.Config) {
		cfg.ClientRegistrations, cfg.NewClients, cfg.DeviceAuthorizations = lots, lots, lots
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError}))
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the instances' error logs:\n%s", logs.String())
		}
	})
	clientID := c.register(deviceClientJSON)

	// Setup, one request at a time: the chains' first pairs, the codes to
	// be raced for, the codes to be approved during the storm.
	phone := devtest.NewPhone(t)
	type pair struct{ access, refresh string }
	heads := make([]pair, chains)
	for i := range chains {
		dc := c.deviceAuthorization(t, clientID, "CHAINDEV0"+string(rune('A'+i)))
		phone.Decide(dc.complete, "approve")
		heads[i].access, heads[i].refresh = c.redeem(t, clientID, dc)
	}
	raced := make([]deviceCode, polled)
	for i := range raced {
		raced[i] = c.deviceAuthorization(t, clientID, "RACEDDEV0"+string(rune('A'+i)))
		phone.Decide(raced[i].complete, "approve")
	}
	toApprove := make([]deviceCode, approvals)
	for i := range toApprove {
		toApprove[i] = c.deviceAuthorization(t, clientID, "STORMDEV0"+string(rune('A'+i)))
	}
	c.no5xx()

	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
		mu    sync.Mutex // guards what the goroutines below record
	)
	spawn := func(f func(t testing.TB)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(goT{t})
		}()
	}

	// Racing refreshes, round after round, each chain on its own; the
	// revoked chains' first round races with two revocations.
	issued := make([][]pair, chains) // every pair a refresh answered, per chain
	for i := range chains {
		spawn(func(t testing.TB) {
			head := heads[i]
			for round := range rounds {
				var (
					rwg  sync.WaitGroup
					won  []pair
					errs = map[string]int{}
				)
				for k := range racers {
					rwg.Add(1)
					go func() {
						defer rwg.Done()
						status, m := c.postAs(t, c.issuer, "oauth2/token", url.Values{"grant_type": {"refresh_token"},
							"refresh_token": {head.refresh}, "client_id": {clientID}})
						mu.Lock()
						defer mu.Unlock()
						switch status {
						case http.StatusOK:
							won = append(won, pair{m["access_token"].(string), m["refresh_token"].(string)})
						case http.StatusBadRequest:
							e, _ := m["error"].(string)
							errs[e]++
						default:
							t.Errorf("chain %d round %d, racer %d: %d %v", i, round, k, status, m)
						}
					}()
				}
				if i >= chains-revoked && round == 0 {
					for range 2 {
						rwg.Add(1)
						go func() {
							defer rwg.Done()
							if status, m := c.postAs(t, c.issuer, "oauth2/revoke", url.Values{"token": {head.refresh},
								"client_id": {clientID}}); status != http.StatusOK {
								t.Errorf("chain %d: revocation racing the refreshes: %d %v", i, status, m)
							}
						}()
					}
				}
				rwg.Wait()
				mu.Lock()
				issued[i] = append(issued[i], won...)
				mu.Unlock()
				for e := range errs {
					if e != "invalid_grant" {
						t.Errorf("chain %d round %d: a losing refresh was refused with %q, want invalid_grant", i, round, e)
					}
				}
				if i >= chains-revoked {
					return // the session is over; checked after the storm
				}
				// Exactly one of the pairs this round handed out is live
				// (P-RT-3); introspecting it marks it used, and the chain
				// goes on from it.
				var live []pair
				for _, p := range won {
					if c.activeAtAs(t, (round+len(live))%n, p.access) {
						live = append(live, p)
					}
				}
				if len(live) != 1 {
					t.Errorf("chain %d round %d: %d racing refreshes answered %d pairs, %d of them live; want exactly 1 live (P-RT-3)",
						i, round, racers, len(won), len(live))
					return
				}
				head = live[0]
			}
		})
	}

	// Racing polls of approved codes: one token each (P-DEV-6).
	redeemed := make([]int, polled)
	for i := range polled {
		for k := range racers {
			spawn(func(t testing.TB) {
				status, m := c.postAs(t, c.issuer, "oauth2/token", url.Values{"grant_type": {deviceGrant},
					"device_code": {raced[i].device}, "client_id": {clientID}})
				mu.Lock()
				defer mu.Unlock()
				switch e, _ := m["error"].(string); {
				case status == http.StatusOK:
					redeemed[i]++
				case status == http.StatusBadRequest && (e == "invalid_grant" || e == "slow_down"):
				default:
					t.Errorf("racing poll %d of code %d: %d %v", k, i, status, m)
				}
			})
		}
	}

	// Approvals on two phones, each redeemed at once.
	for p := range 2 {
		spawn(func(t testing.TB) {
			phone := devtest.NewPhone(t)
			for i := p; i < approvals; i += 2 {
				phone.Decide(toApprove[i].complete, "approve")
				c.redeem(t, clientID, toApprove[i])
			}
		})
	}

	// New device authorizations and registrations.
	for i := range newDevices {
		spawn(func(t testing.TB) {
			c.deviceAuthorization(t, clientID, "NEWDEVICE"+string(rune('A'+i)))
		})
	}
	same := strings.Replace(deviceClientJSON, "Kitchen display", "Storm display", 1)
	ids := map[string][]string{} // client ids by metadata: "same" or "distinct"
	for i := range regs {
		for _, kind := range []string{"same", "distinct"} {
			spawn(func(t testing.TB) {
				meta := same
				if kind == "distinct" {
					meta = strings.Replace(deviceClientJSON, "Kitchen display", "Storm display "+string(rune('A'+i)), 1)
				}
				req, err := http.NewRequest(http.MethodPost, c.issuer+"oauth2/registration", strings.NewReader(meta))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				status, m := devtest.Do(t, req)
				id, _ := m["client_id"].(string)
				if status != http.StatusCreated || id == "" {
					t.Errorf("a %s registration in the storm: %d %v", kind, status, m)
					return
				}
				mu.Lock()
				ids[kind] = append(ids[kind], id)
				mu.Unlock()
			})
		}
	}

	began := time.Now()
	close(start)
	wg.Wait()
	var retries uint64
	for _, st := range c.stores {
		retries += st.Retries()
	}
	c.mu.Lock()
	t.Logf("the storm took %v: answers through the proxy by status %v; %d transactions re-run after serialization failures or deadlocks",
		time.Since(began).Round(time.Millisecond), c.statuses, retries)
	c.mu.Unlock()
	c.no5xx() // serialization failures are retried inside the server

	for i := range polled {
		if redeemed[i] != 1 {
			t.Errorf("approved code %d yielded tokens %d times under %d racing polls on %d instances, want once (P-DEV-6)", i, redeemed[i], racers, n)
		}
	}
	for i := chains - revoked; i < chains; i++ {
		for k, p := range append([]pair{heads[i]}, issued[i]...) {
			for j := range n {
				if c.activeAt(j, p.access) {
					t.Errorf("revoked chain %d: pair %d is live at instance %d after a revocation raced its refreshes (P-REV-1)", i, k, j)
				}
			}
		}
	}
	if got := ids["same"]; len(got) != regs {
		t.Errorf("identical registrations: %d of %d answered", len(got), regs)
	} else {
		for _, id := range got[1:] {
			if id != got[0] {
				t.Errorf("identical registrations racing on %d instances got clients %v, want one (P-DCR-6)", n, got)
				break
			}
		}
	}
	distinct := map[string]bool{}
	for _, id := range ids["distinct"] {
		distinct[id] = true
	}
	if len(distinct) != regs || (len(ids["same"]) > 0 && distinct[ids["same"][0]]) {
		t.Errorf("distinct registrations got clients %v (identical ones %v), want %d of their own", ids["distinct"], ids["same"], regs)
	}
}

// activeAtAs is cluster.activeAt for a goroutine of the test's own.
func (c *cluster) activeAtAs(t testing.TB, i int, token string) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.instances[i]+"oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+devtest.HomeserverSecret)
	status, m := devtest.Do(t, req)
	if status != http.StatusOK {
		t.Fatalf("introspect at instance %d: %d %v", i, status, m)
	}
	return m["active"] == true
}
