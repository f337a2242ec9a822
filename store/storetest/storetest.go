// Package storetest is the conformance suite every store backend must pass.
// A backend's test calls Run with a function that opens a fresh, empty
// store.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// Run runs the whole suite. open must return a new, empty store; Run closes
// it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Users", testUsers},
		{"Clients", testClients},
		{"DeviceGrants", testDeviceGrants},
		{"UserCodeUniqueWhileLive", testUserCodeUnique},
		{"PendingDeviceGrants", testPendingGrants},
		{"SessionsAndTokens", testSessionsAndTokens},
		{"BrowserSessions", testBrowserSessions},
		{"SessionsByUserAndAwaitingGrants", testSessionsByUser},
		{"OutboxOrderPerUser", testOutbox},
		{"AuthCodes", testAuthCodes},
		{"SigningKeys", testSigningKeys},
		{"ClientTrustAndUserTerms", testTrustAndTerms},
		{"DeleteSpentTokens", testDeleteSpent},
		{"DeleteExpired", testDeleteExpired},
		{"DeleteUnusedClients", testDeleteUnusedClients},
		{"UpdateRollsBack", testRollback},
		{"UpdateSerializes", testSerializes},
		{"ConcurrentUpdatesAreIsolated", testConcurrentIsolation},
		{"TokenEpoch", testTokenEpoch},
		{"Leases", testLeases},
		{"LeaseTakenOnceUnderContention", testLeaseContention},
		{"UpdatePanicStaysWithItsCaller", testUpdatePanic},
		{"ForeignKeys", testForeignKeys},
		{"Instances", testInstances},
		{"KnownPlaces", testKnownPlaces},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// now is a time at the millisecond precision backends are required to keep.
func now() time.Time { return time.Now().Truncate(time.Millisecond) }

func id(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func mustEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func mustTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func mustNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: err = %v, want ErrNotFound", what, err)
	}
}

func newUser(t *testing.T, s store.Store, name string) store.User {
	t.Helper()
	u := store.User{ID: id(t), Username: name, PasswordHash: "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA", DisplayName: "D " + name, CreatedAt: now()}
	update(t, s, func(tx store.Tx) error { return tx.CreateUser(context.Background(), u) })
	return u
}

func newClient(t *testing.T, s store.Store) store.Client {
	t.Helper()
	c := store.Client{ID: id(t), Metadata: []byte(`{"client_name":"x"}`), CreatedAt: now()}
	update(t, s, func(tx store.Tx) error { return tx.CreateClient(context.Background(), c) })
	return c
}

func newGrant(t *testing.T, clientID, userCode string, created time.Time) store.DeviceGrant {
	return store.DeviceGrant{
		ID: id(t), DeviceCodeHash: hash(id(t)), UserCode: userCode, ClientID: clientID,
		Scope: "urn:matrix:client:api:*", RequesterIP: "192.0.2.1", RequesterAgent: "test",
		CreatedAt: created, ExpiresAt: created.Add(10 * time.Minute), Interval: 5 * time.Second,
		State: store.GrantPending,
	}
}

func newSession(t *testing.T, s store.Store, u store.User, c store.Client, device string) store.Session {
	t.Helper()
	x := store.Session{ID: id(t), UserID: u.ID, ClientID: c.ID, DeviceID: device, Scope: "urn:matrix:client:api:*", CreatedAt: now(),
		DeviceName: "Device " + device}
	update(t, s, func(tx store.Tx) error { return tx.CreateSession(context.Background(), x) })
	return x
}

func testUsers(t *testing.T, s store.Store) {
	ctx := context.Background()
	bob := newUser(t, s, "bob")
	alice := newUser(t, s, "alice")

	got, err := s.User(ctx, alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "Username", got.Username, "alice")
	mustEqual(t, "PasswordHash", got.PasswordHash, alice.PasswordHash)
	mustEqual(t, "DisplayName", got.DisplayName, alice.DisplayName)
	mustTime(t, "CreatedAt", got.CreatedAt, alice.CreatedAt)
	if !got.DeactivatedAt.IsZero() {
		t.Errorf("DeactivatedAt = %v, want zero", got.DeactivatedAt)
	}
	got, err = s.UserByUsername(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "ID", got.ID, bob.ID)

	users, err := s.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users[0].Username != "alice" || users[1].Username != "bob" {
		t.Errorf("Users = %+v, want alice then bob", users)
	}

	_, err = s.User(ctx, "nope")
	mustNotFound(t, "User", err)
	_, err = s.UserByUsername(ctx, "nope")
	mustNotFound(t, "UserByUsername", err)

	// P-ACCT-2: a username is never given out twice, deactivated or not.
	alice.DeactivatedAt = now()
	update(t, s, func(tx store.Tx) error { return tx.UpdateUser(ctx, alice) })
	err = s.Update(ctx, func(tx store.Tx) error {
		return tx.CreateUser(ctx, store.User{ID: id(t), Username: "alice", PasswordHash: "x", CreatedAt: now()})
	})
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("second alice: err = %v, want ErrAlreadyExists", err)
	}
	got, _ = s.User(ctx, alice.ID)
	mustTime(t, "DeactivatedAt", got.DeactivatedAt, alice.DeactivatedAt)

	err = s.Update(ctx, func(tx store.Tx) error { return tx.UpdateUser(ctx, store.User{ID: "nope", Username: "zed"}) })
	mustNotFound(t, "UpdateUser of a missing user", err)
}

func testClients(t *testing.T, s store.Store) {
	ctx := context.Background()
	pub := newClient(t, s)
	conf := store.Client{ID: id(t), SecretHash: hash("secret"), Metadata: []byte(`{"a":1}`), CreatedAt: now()}
	update(t, s, func(tx store.Tx) error { return tx.CreateClient(ctx, conf) })

	got, err := s.Client(ctx, pub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SecretHash != nil {
		t.Errorf("public client SecretHash = %x, want nil", got.SecretHash)
	}
	mustEqual(t, "Metadata", string(got.Metadata), string(pub.Metadata))
	got, err = s.Client(ctx, conf.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.SecretHash, conf.SecretHash) {
		t.Errorf("SecretHash = %x, want %x", got.SecretHash, conf.SecretHash)
	}
	err = s.Update(ctx, func(tx store.Tx) error { return tx.CreateClient(ctx, conf) })
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("duplicate client id: err = %v, want ErrAlreadyExists", err)
	}
	_, err = s.Client(ctx, "nope")
	mustNotFound(t, "Client", err)

	shared := store.Client{ID: id(t), Metadata: []byte(`{"b":2}`), MetadataHash: hash("meta"), CreatedAt: now()}
	later := shared
	later.ID, later.CreatedAt = id(t), now().Add(time.Second)
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.CreateClient(ctx, later), tx.CreateClient(ctx, shared)) })
	got, err = s.ClientByMetadataHash(ctx, hash("meta"))
	if err != nil || got.ID != shared.ID || !bytes.Equal(got.MetadataHash, hash("meta")) {
		t.Errorf("ClientByMetadataHash = %+v, %v; want the oldest", got, err)
	}
	_, err = s.ClientByMetadataHash(ctx, hash("other"))
	mustNotFound(t, "ClientByMetadataHash", err)
}

func testDeviceGrants(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	u := newUser(t, s, "alice")
	g := newGrant(t, c.ID, "BCDFGHJK", now())
	update(t, s, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, g) })

	for name, get := range map[string]func() (store.DeviceGrant, error){
		"DeviceGrant":             func() (store.DeviceGrant, error) { return s.DeviceGrant(ctx, g.ID) },
		"DeviceGrantByDeviceCode": func() (store.DeviceGrant, error) { return s.DeviceGrantByDeviceCode(ctx, g.DeviceCodeHash) },
		"DeviceGrantByUserCode":   func() (store.DeviceGrant, error) { return s.DeviceGrantByUserCode(ctx, "BCDFGHJK") },
	} {
		got, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mustEqual(t, name+" ID", got.ID, g.ID)
		mustEqual(t, name+" State", got.State, store.GrantPending)
		mustEqual(t, name+" Interval", got.Interval, 5*time.Second)
		mustEqual(t, name+" RequesterIP", got.RequesterIP, "192.0.2.1")
		mustTime(t, name+" ExpiresAt", got.ExpiresAt, g.ExpiresAt)
		if !got.LastPolledAt.IsZero() || got.UserID != "" || got.SessionID != "" {
			t.Errorf("%s: fresh grant has poll/user/session set: %+v", name, got)
		}
	}
	_, err := s.DeviceGrantByDeviceCode(ctx, hash("other"))
	mustNotFound(t, "DeviceGrantByDeviceCode", err)
	_, err = s.DeviceGrantByUserCode(ctx, "ZZZZZZZZ")
	mustNotFound(t, "DeviceGrantByUserCode", err)

	sess := newSession(t, s, u, c, "DEVICEID01")
	g.State, g.UserID, g.DecidedAt, g.LastPolledAt = store.GrantExchanged, u.ID, now(), now()
	g.Interval, g.SessionID = 10*time.Second, sess.ID
	update(t, s, func(tx store.Tx) error { return tx.UpdateDeviceGrant(ctx, g) })
	got, err := s.DeviceGrant(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "State", got.State, store.GrantExchanged)
	mustEqual(t, "UserID", got.UserID, u.ID)
	mustEqual(t, "SessionID", got.SessionID, sess.ID)
	mustEqual(t, "Interval", got.Interval, 10*time.Second)
	mustTime(t, "LastPolledAt", got.LastPolledAt, g.LastPolledAt)
	mustTime(t, "DecidedAt", got.DecidedAt, g.DecidedAt)

	err = s.Update(ctx, func(tx store.Tx) error { return tx.UpdateDeviceGrant(ctx, store.DeviceGrant{ID: "nope"}) })
	mustNotFound(t, "UpdateDeviceGrant of a missing grant", err)
}

func testUserCodeUnique(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	t0 := now()
	first := newGrant(t, c.ID, "BCDFGHJK", t0)
	update(t, s, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, first) })

	// P-DEV-3: unique among live codes.
	clash := newGrant(t, c.ID, "BCDFGHJK", t0.Add(time.Minute))
	err := s.Update(ctx, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, clash) })
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("live user code reused: err = %v, want ErrAlreadyExists", err)
	}
	// Once the first has expired, the code is free again.
	later := newGrant(t, c.ID, "BCDFGHJK", first.ExpiresAt.Add(time.Second))
	update(t, s, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, later) })
	got, err := s.DeviceGrantByUserCode(ctx, "BCDFGHJK")
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "grant holding the code", got.ID, later.ID)
	_, err = s.DeviceGrant(ctx, first.ID)
	mustNotFound(t, "expired grant that gave its code up", err)
}

func testPendingGrants(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	t0 := now()
	old := newGrant(t, c.ID, "BBBBBBBB", t0.Add(-20*time.Minute)) // expired
	a := newGrant(t, c.ID, "CCCCCCCC", t0.Add(-2*time.Minute))
	b := newGrant(t, c.ID, "DDDDDDDD", t0.Add(-time.Minute))
	decided := newGrant(t, c.ID, "FFFFFFFF", t0)
	decided.State = store.GrantDenied
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateDeviceGrant(ctx, old), tx.CreateDeviceGrant(ctx, a),
			tx.CreateDeviceGrant(ctx, b), tx.CreateDeviceGrant(ctx, decided))
	})
	got, err := s.PendingDeviceGrants(ctx, t0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != b.ID || got[1].ID != a.ID {
		t.Errorf("PendingDeviceGrants = %d grants %+v, want b then a", len(got), got)
	}
	got, _ = s.PendingDeviceGrants(ctx, t0, 1)
	if len(got) != 1 || got[0].ID != b.ID {
		t.Errorf("limit 1: %+v", got)
	}
}

func testSessionsAndTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	u := newUser(t, s, "alice")
	s1 := newSession(t, s, u, c, "DEVICE0001")
	s2 := newSession(t, s, u, c, "DEVICE0001")
	newSession(t, s, u, c, "DEVICE0002")

	live, err := s.SessionsByDevice(ctx, u.ID, "DEVICE0001")
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 2 {
		t.Fatalf("SessionsByDevice = %d sessions, want 2", len(live))
	}
	s1.EndedAt, s1.EndReason, s1.LastIP, s1.LastActiveAt = now(), "revoked", "198.51.100.7", now()
	s1.DeviceName = "Weather bot"
	update(t, s, func(tx store.Tx) error { return tx.UpdateSession(ctx, s1) })
	live, _ = s.SessionsByDevice(ctx, u.ID, "DEVICE0001")
	if len(live) != 1 || live[0].ID != s2.ID {
		t.Errorf("after ending s1, SessionsByDevice = %+v, want only s2", live)
	}
	got, err := s.Session(ctx, s1.ID)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "EndReason", got.EndReason, "revoked")
	mustEqual(t, "LastIP", got.LastIP, "198.51.100.7")
	mustEqual(t, "DeviceName", got.DeviceName, "Weather bot")
	mustTime(t, "EndedAt", got.EndedAt, s1.EndedAt)

	p1 := store.TokenPair{ID: id(t), SessionID: s2.ID, AccessHash: hash("a1"), RefreshHash: hash("r1"),
		CreatedAt: now(), AccessExpiresAt: now().Add(5 * time.Minute)}
	p2 := store.TokenPair{ID: id(t), SessionID: s2.ID, AccessHash: hash("a2"), RefreshHash: hash("r2"),
		CreatedAt: now(), AccessExpiresAt: now().Add(5 * time.Minute)}
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateTokenPair(ctx, p1); err != nil {
			return err
		}
		return tx.CreateTokenPair(ctx, p2)
	})
	p1.RotatedAt, p1.SuccessorID, p1.UsedAt = now(), p2.ID, now()
	update(t, s, func(tx store.Tx) error { return tx.UpdateTokenPair(ctx, p1) })

	gotPair, err := s.TokenPairByRefresh(ctx, hash("r1"))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "SuccessorID", gotPair.SuccessorID, p2.ID)
	mustTime(t, "RotatedAt", gotPair.RotatedAt, p1.RotatedAt)
	mustTime(t, "UsedAt", gotPair.UsedAt, p1.UsedAt)
	gotPair, err = s.TokenPair(ctx, p2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !gotPair.UsedAt.IsZero() || !gotPair.RevokedAt.IsZero() || gotPair.SuccessorID != "" {
		t.Errorf("fresh pair has state: %+v", gotPair)
	}

	at, err := s.AccessToken(ctx, hash("a2"))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "AccessToken pair", at.Pair.ID, p2.ID)
	mustEqual(t, "AccessToken session", at.Session.ID, s2.ID)
	mustEqual(t, "AccessToken device", at.Session.DeviceID, "DEVICE0001")
	mustEqual(t, "AccessToken device name", at.Session.DeviceName, "Device DEVICE0001")
	mustEqual(t, "AccessToken user", at.User.Username, "alice")
	mustTime(t, "AccessToken expiry", at.Pair.AccessExpiresAt, p2.AccessExpiresAt)
	_, err = s.AccessToken(ctx, hash("r2"))
	mustNotFound(t, "AccessToken by a refresh hash", err)
	_, err = s.TokenPairByRefresh(ctx, hash("a2"))
	mustNotFound(t, "TokenPairByRefresh by an access hash", err)

	dup := p2
	dup.ID = id(t)
	err = s.Update(ctx, func(tx store.Tx) error { return tx.CreateTokenPair(ctx, dup) })
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("duplicate token hash: err = %v, want ErrAlreadyExists", err)
	}
}

func testBrowserSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := newUser(t, s, "alice")
	b := store.BrowserSession{ID: id(t), TokenHash: hash("cookie"), UserID: u.ID, CreatedAt: now(), ExpiresAt: now().Add(time.Hour)}
	update(t, s, func(tx store.Tx) error { return tx.CreateBrowserSession(ctx, b) })
	got, err := s.BrowserSession(ctx, hash("cookie"))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "UserID", got.UserID, u.ID)
	mustTime(t, "ExpiresAt", got.ExpiresAt, b.ExpiresAt)
	update(t, s, func(tx store.Tx) error { return tx.DeleteBrowserSession(ctx, b.ID) })
	_, err = s.BrowserSession(ctx, hash("cookie"))
	mustNotFound(t, "deleted browser session", err)

	keep := store.BrowserSession{ID: id(t), TokenHash: hash("phone"), UserID: u.ID, CreatedAt: now(), ExpiresAt: now().Add(time.Hour)}
	other := store.BrowserSession{ID: id(t), TokenHash: hash("laptop"), UserID: u.ID, CreatedAt: now(), ExpiresAt: now().Add(time.Hour)}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateBrowserSession(ctx, keep), tx.CreateBrowserSession(ctx, other))
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteBrowserSessionsOfUser(ctx, u.ID, keep.ID) })
	if _, err := s.BrowserSession(ctx, hash("phone")); err != nil {
		t.Errorf("the kept browser session: %v", err)
	}
	_, err = s.BrowserSession(ctx, hash("laptop"))
	mustNotFound(t, "another browser session of the user", err)
}

func testDeleteExpired(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	u := newUser(t, s, "alice")
	t0 := now()
	old := newGrant(t, c.ID, "BBBBBBBB", t0.Add(-time.Hour))
	fresh := newGrant(t, c.ID, "CCCCCCCC", t0)
	oldB := store.BrowserSession{ID: id(t), TokenHash: hash("old"), UserID: u.ID, CreatedAt: t0.Add(-2 * time.Hour), ExpiresAt: t0.Add(-time.Hour)}
	freshB := store.BrowserSession{ID: id(t), TokenHash: hash("fresh"), UserID: u.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateDeviceGrant(ctx, old), tx.CreateDeviceGrant(ctx, fresh),
			tx.CreateBrowserSession(ctx, oldB), tx.CreateBrowserSession(ctx, freshB))
	})
	var n int64
	update(t, s, func(tx store.Tx) (err error) { n, err = tx.DeleteExpired(ctx, t0); return err })
	mustEqual(t, "rows deleted", n, int64(2))
	_, err := s.DeviceGrant(ctx, old.ID)
	mustNotFound(t, "expired grant", err)
	if _, err := s.DeviceGrant(ctx, fresh.ID); err != nil {
		t.Errorf("fresh grant: %v", err)
	}
	if _, err := s.BrowserSession(ctx, hash("fresh")); err != nil {
		t.Errorf("fresh browser session: %v", err)
	}
}

func testRollback(t *testing.T, s store.Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateUser(ctx, store.User{ID: id(t), Username: "ghost", PasswordHash: "x", CreatedAt: now()}); err != nil {
			return err
		}
		// Inside the transaction, the write is visible.
		if _, err := tx.UserByUsername(ctx, "ghost"); err != nil {
			return fmt.Errorf("read own write: %w", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want the function's error", err)
	}
	_, err = s.UserByUsername(ctx, "ghost")
	mustNotFound(t, "user written by a failed transaction", err)
}

// testTokenEpoch: the epoch grows with each committed bump, and a bump
// that rolls back leaves it as it was.
func testTokenEpoch(t *testing.T, s store.Store) {
	ctx := context.Background()
	e0, err := s.TokenEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx store.Tx) error { return tx.BumpTokenEpoch(ctx) })
	e1, err := s.TokenEpoch(ctx)
	if err != nil || e1 <= e0 {
		t.Fatalf("TokenEpoch after a bump = %d, %v; want more than %d", e1, err, e0)
	}
	boom := errors.New("boom")
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.BumpTokenEpoch(ctx); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if e2, err := s.TokenEpoch(ctx); err != nil || e2 != e1 {
		t.Errorf("TokenEpoch after a rolled back bump = %d, %v; want %d", e2, err, e1)
	}
}

// testConcurrentIsolation: of many concurrent Updates, the ones whose
// function fails leave nothing behind and the others all commit, whatever
// the backend does to share work between them (SQLite commits them in
// groups).
func testConcurrentIsolation(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 64
	boom := errors.New("boom")
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Update(ctx, func(tx store.Tx) error {
				if err := tx.CreateUser(ctx, store.User{ID: id(t), Username: fmt.Sprintf("user%02d", i), PasswordHash: "x", CreatedAt: now()}); err != nil {
					return err
				}
				if i%3 == 0 {
					return boom
				}
				return nil
			})
			if (i%3 == 0) != errors.Is(err, boom) || (i%3 != 0 && err != nil) {
				t.Errorf("Update %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := range n {
		_, err := s.UserByUsername(ctx, fmt.Sprintf("user%02d", i))
		if i%3 == 0 {
			mustNotFound(t, "user of a failed Update", err)
		} else if err != nil {
			t.Errorf("user%02d of a committed Update: %v", i, err)
		}
	}
}

// testUpdatePanic: a panic in an Update function reaches its caller, and
// leaves the store working and the others' writes committed.
func testUpdatePanic(t *testing.T, s store.Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				p := recover()
				if (i == 3) != (p != nil) {
					t.Errorf("Update %d: recovered %v", i, p)
				}
			}()
			err := s.Update(ctx, func(tx store.Tx) error {
				if err := tx.CreateUser(ctx, store.User{ID: id(t), Username: fmt.Sprintf("panic%d", i), PasswordHash: "x", CreatedAt: now()}); err != nil {
					return err
				}
				if i == 3 {
					panic("boom")
				}
				return nil
			})
			if err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := range 8 {
		_, err := s.UserByUsername(ctx, fmt.Sprintf("panic%d", i))
		if i == 3 {
			mustNotFound(t, "user of the panicking Update", err)
		} else if err != nil {
			t.Errorf("panic%d: %v", i, err)
		}
	}
	newUser(t, s, "afterpanic") // the store still writes
}

// testSerializes checks the property P-DEV-6 and P-RT-3 rest on: of many
// concurrent read-check-write transactions on one row, exactly one sees the
// old state.
func testSerializes(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	g := newGrant(t, c.ID, "DDDDDDDD", now())
	g.State = store.GrantApproved
	update(t, s, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, g) })

	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := 0
	errLost := errors.New("lost")
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Update(ctx, func(tx store.Tx) error {
				cur, err := tx.DeviceGrant(ctx, g.ID)
				if err != nil {
					return err
				}
				if cur.State != store.GrantApproved {
					return errLost
				}
				cur.State = store.GrantExchanged
				return tx.UpdateDeviceGrant(ctx, cur)
			})
			switch {
			case err == nil:
				mu.Lock()
				winners++
				mu.Unlock()
			case errors.Is(err, errLost):
			default:
				t.Errorf("Update: %v", err)
			}
		}()
	}
	wg.Wait()
	mustEqual(t, "transactions that saw the grant approved", winners, 1)
}

func testForeignKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := newUser(t, s, "alice")
	err := s.Update(ctx, func(tx store.Tx) error {
		return tx.CreateSession(ctx, store.Session{ID: id(t), UserID: u.ID, ClientID: "no-such-client", DeviceID: "D", CreatedAt: now()})
	})
	if err == nil {
		t.Error("session for a missing client was accepted")
	}
}

func testSessionsByUser(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	alice, bob := newUser(t, s, "alice"), newUser(t, s, "bob")
	a1 := newSession(t, s, alice, c, "ALICEDEV01")
	time.Sleep(2 * time.Millisecond)
	a2 := newSession(t, s, alice, c, "ALICEDEV02")
	newSession(t, s, bob, c, "BOBDEVICE1")
	a1.EndedAt = now()
	update(t, s, func(tx store.Tx) error { return tx.UpdateSession(ctx, a1) })

	live, err := s.SessionsByUser(ctx, alice.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].ID != a2.ID {
		t.Errorf("live sessions = %+v, want a2", live)
	}
	all, _ := s.SessionsByUser(ctx, alice.ID, true)
	if len(all) != 2 || all[0].ID != a2.ID {
		t.Errorf("all sessions = %+v, want a2 then a1", all)
	}

	t0 := now()
	states := map[store.GrantState]string{store.GrantPending: "BBBBBBBB", store.GrantApproved: "CCCCCCCC",
		store.GrantReady: "DDDDDDDD", store.GrantExchanged: "FFFFFFFF"}
	for state, code := range states {
		g := newGrant(t, c.ID, code, t0)
		g.State, g.UserID = state, alice.ID
		update(t, s, func(tx store.Tx) error { return tx.CreateDeviceGrant(ctx, g) })
	}
	holding := []store.GrantState{store.GrantApproved, store.GrantReady}
	waiting, err := s.GrantsOfUser(ctx, alice.ID, holding, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(waiting) != 2 {
		t.Errorf("GrantsOfUser = %d grants, want the approved and the ready one", len(waiting))
	}
	if w, _ := s.GrantsOfUser(ctx, alice.ID, holding, t0.Add(time.Hour)); len(w) != 0 {
		t.Errorf("expired grants still awaiting a device: %+v", w)
	}
	// The approved and the ready grant lapse when they expire; pending and
	// exchanged ones do not count.
	expiry := t0.Add(10 * time.Minute)
	if l, err := s.GrantsLapsed(ctx, holding, t0, expiry); err != nil || len(l) != 2 || l[0].State == store.GrantPending || l[0].State == store.GrantExchanged {
		t.Errorf("GrantsLapsed up to their expiry = %+v, %v; want the approved and the ready one", l, err)
	}
	if l, _ := s.GrantsLapsed(ctx, holding, expiry, expiry.Add(time.Hour)); len(l) != 0 {
		t.Errorf("GrantsLapsed after their expiry = %+v, want none (the window is (after, before])", l)
	}
	if l, _ := s.GrantsLapsed(ctx, holding, t0, expiry.Add(-time.Millisecond)); len(l) != 0 {
		t.Errorf("GrantsLapsed before their expiry = %+v, want none", l)
	}
}

func testOutbox(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	enqueue := func(user, call string) int64 {
		var id int64
		update(t, s, func(tx store.Tx) (err error) {
			id, err = tx.Enqueue(ctx, store.OutboxEntry{UserKey: user, Call: call, Body: []byte(`{"localpart":"` + user + `"}`),
				CreatedAt: t0, NextAttemptAt: t0})
			return err
		})
		return id
	}
	a1 := enqueue("alice", "provision_user")
	a2 := enqueue("alice", "upsert_device")
	b1 := enqueue("bob", "provision_user")
	if !(a1 < a2 && a2 < b1) {
		t.Fatalf("ids not increasing: %d %d %d", a1, a2, b1)
	}
	due, err := s.OutboxDue(ctx, t0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 2 || due[0].ID != a1 || due[1].ID != b1 {
		t.Fatalf("OutboxDue = %+v, want alice's first and bob's first", due)
	}
	mustEqual(t, "Call", due[0].Call, "provision_user")
	mustEqual(t, "Body", string(due[0].Body), `{"localpart":"alice"}`)

	// A failed head keeps the user's later calls waiting: order per user.
	e := due[0]
	e.Attempts, e.LastError, e.NextAttemptAt = 1, "connection refused", t0.Add(time.Minute)
	update(t, s, func(tx store.Tx) error { return tx.UpdateOutbox(ctx, e) })
	due, _ = s.OutboxDue(ctx, t0, 10)
	if len(due) != 1 || due[0].ID != b1 {
		t.Errorf("with alice's head backing off, OutboxDue = %+v, want only bob's", due)
	}
	got, err := s.OutboxEntry(ctx, a1)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "Attempts", got.Attempts, 1)
	mustEqual(t, "LastError", got.LastError, "connection refused")

	// A leased head is not handed out twice.
	b := due[0]
	b.LeaseUntil = t0.Add(30 * time.Second)
	update(t, s, func(tx store.Tx) error { return tx.UpdateOutbox(ctx, b) })
	if due, _ = s.OutboxDue(ctx, t0, 10); len(due) != 0 {
		t.Errorf("leased entry handed out again: %+v", due)
	}
	if due, _ = s.OutboxDue(ctx, t0.Add(31*time.Second), 10); len(due) != 1 {
		t.Errorf("expired lease: OutboxDue = %+v", due)
	}

	// Delivered: the next one for that user comes up. Parked: skipped.
	update(t, s, func(tx store.Tx) error { return tx.DeleteOutbox(ctx, b1) })
	e.ParkedAt = t0
	update(t, s, func(tx store.Tx) error { return tx.UpdateOutbox(ctx, e) })
	due, _ = s.OutboxDue(ctx, t0.Add(time.Hour), 10)
	if len(due) != 1 || due[0].ID != a2 {
		t.Errorf("after parking alice's head, OutboxDue = %+v, want alice's second", due)
	}
	all, _ := s.Outbox(ctx, 10)
	if len(all) != 2 || all[0].ID != a1 || all[0].ParkedAt.IsZero() {
		t.Errorf("Outbox = %+v", all)
	}

	// The head of a user is the oldest entry not parked, due or not,
	// leased or not; once the parked one is back in line, it is the head
	// again.
	if head, err := s.OutboxHead(ctx, "alice"); err != nil || head.ID != a2 {
		t.Errorf("OutboxHead with alice's first parked = %+v, %v; want her second", head, err)
	}
	_, err = s.OutboxHead(ctx, "bob")
	mustNotFound(t, "OutboxHead of a user with nothing waiting", err)
	_, err = s.OutboxHead(ctx, "nobody")
	mustNotFound(t, "OutboxHead of an unknown user key", err)
	e.ParkedAt, e.NextAttemptAt, e.LeaseUntil = time.Time{}, t0.Add(time.Hour), t0.Add(time.Minute)
	update(t, s, func(tx store.Tx) error {
		if err := tx.UpdateOutbox(ctx, e); err != nil {
			return err
		}
		head, err := tx.OutboxHead(ctx, "alice")
		if err != nil || head.ID != a1 {
			return fmt.Errorf("OutboxHead in the transaction that put alice's first back = %+v, %v; want it", head, err)
		}
		return nil
	})
	if head, err := s.OutboxHead(ctx, "alice"); err != nil || head.ID != a1 || head.Call != "provision_user" {
		t.Errorf("OutboxHead with alice's first back in line = %+v, %v; want it", head, err)
	}
}

func testAuthCodes(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	u := newUser(t, s, "alice")
	t0 := now()
	a := store.AuthCode{ID: id(t), ClientID: c.ID, RedirectURI: "http://127.0.0.1:5555/cb", CodeChallenge: "abc",
		Scope: "openid", Nonce: "n", State: "st", ResponseMode: "fragment", UserID: u.ID, AuthTime: t0.Add(-time.Hour),
		CreatedAt: t0, ExpiresAt: t0.Add(10 * time.Minute), Status: store.AuthCodeWaiting}
	update(t, s, func(tx store.Tx) error { return tx.CreateAuthCode(ctx, a) })
	got, err := s.AuthCode(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CodeHash != nil || got.Status != store.AuthCodeWaiting || got.State != "st" || got.ResponseMode != "fragment" ||
		got.Nonce != "n" || !got.AuthTime.Equal(a.AuthTime) || got.RedirectURI != a.RedirectURI {
		t.Errorf("AuthCode = %+v", got)
	}
	sess := newSession(t, s, u, c, "DEVICE0001")
	a.CodeHash, a.Status, a.ExpiresAt, a.SessionID = hash("code"), store.AuthCodeUsed, t0.Add(time.Minute), sess.ID
	update(t, s, func(tx store.Tx) error { return tx.UpdateAuthCode(ctx, a) })
	got, err = s.AuthCodeByCode(ctx, hash("code"))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "Status", got.Status, store.AuthCodeUsed)
	mustEqual(t, "SessionID", got.SessionID, sess.ID)
	_, err = s.AuthCodeByCode(ctx, hash("other"))
	mustNotFound(t, "AuthCodeByCode", err)

	pending := a
	pending.ID, pending.CodeHash, pending.Status, pending.SessionID = id(t), nil, store.AuthCodeIssued, ""
	update(t, s, func(tx store.Tx) error { return tx.CreateAuthCode(ctx, pending) })
	approved := []store.AuthCodeStatus{store.AuthCodeWaiting, store.AuthCodeReady, store.AuthCodeIssued}
	waiting, err := s.AuthCodesOfUser(ctx, u.ID, approved, t0)
	if none, err := s.AuthCodesOfUser(ctx, u.ID, nil, t0); err != nil || len(none) != 0 {
		t.Errorf("AuthCodesOfUser with no statuses = %+v, %v; want none", none, err)
	}
	if err != nil || len(waiting) != 1 || waiting[0].ID != pending.ID {
		t.Errorf("AuthCodesOfUser = %+v, %v; want only the issued one (not the used one)", waiting, err)
	}
	lapsed, err := s.AuthCodesLapsed(ctx, approved, t0, t0.Add(time.Minute))
	if err != nil || len(lapsed) != 1 || lapsed[0].ID != pending.ID {
		t.Errorf("AuthCodesLapsed = %+v, %v; want only the issued one", lapsed, err)
	}
	if l, _ := s.AuthCodesLapsed(ctx, approved, t0.Add(time.Minute), t0.Add(time.Hour)); len(l) != 0 {
		t.Errorf("AuthCodesLapsed after the window = %+v", l)
	}

	var n int64
	update(t, s, func(tx store.Tx) (err error) { n, err = tx.DeleteExpired(ctx, t0.Add(20*time.Minute)); return err })
	mustEqual(t, "rows deleted", n, int64(2))
	_, err = s.AuthCode(ctx, a.ID)
	mustNotFound(t, "expired auth code", err)
}

func testSigningKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	old := store.SigningKey{ID: "k1", Alg: "RS256", PrivatePEM: []byte("pem1"), CreatedAt: t0.Add(-time.Hour)}
	cur := store.SigningKey{ID: "k2", Alg: "RS256", PrivatePEM: []byte("pem2"), CreatedAt: t0}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateSigningKey(ctx, old), tx.CreateSigningKey(ctx, cur))
	})
	old.RetiredAt = t0
	update(t, s, func(tx store.Tx) error { return tx.UpdateSigningKey(ctx, old) })
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != "k2" || keys[1].ID != "k1" || !keys[1].RetiredAt.Equal(t0) ||
		string(keys[0].PrivatePEM) != "pem2" || !keys[0].RetiredAt.IsZero() {
		t.Errorf("SigningKeys = %+v, want k2 then retired k1", keys)
	}
	err = s.Update(ctx, func(tx store.Tx) error { return tx.CreateSigningKey(ctx, cur) })
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("duplicate kid: %v", err)
	}
}

func testTrustAndTerms(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	c.Trusted = true
	update(t, s, func(tx store.Tx) error { return tx.UpdateClient(ctx, c) })
	got, err := s.Client(ctx, c.ID)
	if err != nil || !got.Trusted {
		t.Errorf("trusted client: %+v %v", got, err)
	}
	u := store.User{ID: id(t), Username: "carol", PasswordHash: "x", CreatedAt: now(),
		TermsURL: "https://example.org/terms-v2", TermsAcceptedAt: now()}
	update(t, s, func(tx store.Tx) error { return tx.CreateUser(ctx, u) })
	gu, err := s.User(ctx, u.ID)
	if err != nil || gu.TermsURL != u.TermsURL || !gu.TermsAcceptedAt.Equal(u.TermsAcceptedAt) {
		t.Errorf("user terms: %+v %v", gu, err)
	}
}

func testDeleteSpent(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := newClient(t, s)
	u := newUser(t, s, "alice")
	t0 := now()
	live := newSession(t, s, u, c, "LIVEDEVICE")
	ended := newSession(t, s, u, c, "ENDEDDEVICE")
	ended.EndedAt = t0.Add(-48 * time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UpdateSession(ctx, ended) })
	pair := func(sess store.Session, name string) store.TokenPair {
		return store.TokenPair{ID: id(t), SessionID: sess.ID, AccessHash: hash("a" + name), RefreshHash: hash("r" + name),
			CreatedAt: t0.Add(-72 * time.Hour), AccessExpiresAt: t0}
	}
	p1, p2, p3, p4 := pair(live, "1"), pair(live, "2"), pair(live, "3"), pair(ended, "4")
	p3.CreatedAt = t0
	p1.UsedAt, p1.RotatedAt, p1.SuccessorID = t0.Add(-60*time.Hour), t0.Add(-48*time.Hour), p2.ID
	p2.UsedAt = t0.Add(-47 * time.Hour)                      // so p1 is spent
	p2.RotatedAt, p2.SuccessorID = t0.Add(-time.Hour), p3.ID // rotated recently: kept
	// A pair rotated long ago whose successor was never used may still be
	// presented to retry a lost answer (P-RT-2): both stay.
	other := newSession(t, s, u, c, "LOSTANSWER")
	p5, p6 := pair(other, "5"), pair(other, "6")
	p5.RotatedAt, p5.SuccessorID = t0.Add(-48*time.Hour), p6.ID
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateTokenPair(ctx, p3), tx.CreateTokenPair(ctx, p2), tx.CreateTokenPair(ctx, p1), tx.CreateTokenPair(ctx, p4),
			tx.CreateTokenPair(ctx, p6), tx.CreateTokenPair(ctx, p5))
	})
	var n int64
	update(t, s, func(tx store.Tx) (err error) { n, err = tx.DeleteSpentTokens(ctx, t0.Add(-24*time.Hour)); return err })
	mustEqual(t, "pairs deleted", n, int64(2))
	for _, p := range []store.TokenPair{p2, p3, p5, p6} {
		if _, err := s.TokenPair(ctx, p.ID); err != nil {
			t.Errorf("pair that must stay: %v", err)
		}
	}
	for _, p := range []store.TokenPair{p1, p4} {
		_, err := s.TokenPair(ctx, p.ID)
		mustNotFound(t, "spent pair", err)
	}
	if _, err := s.Session(ctx, ended.ID); err != nil {
		t.Errorf("ended session was deleted: %v", err)
	}
}

// testDeleteUnusedClients: only old, untrusted clients that nothing names
// go; a client with a session (live or ended), a grant or an
// authorization code stays (P-DCR-6).
func testDeleteUnusedClients(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := newUser(t, s, "alice")
	t0 := now()
	old := t0.Add(-48 * time.Hour)
	mk := func(trusted bool, created time.Time) store.Client {
		c := store.Client{ID: id(t), Metadata: []byte(`{}`), CreatedAt: created, Trusted: trusted}
		update(t, s, func(tx store.Tx) error { return tx.CreateClient(ctx, c) })
		return c
	}
	unused, fresh, trusted := mk(false, old), mk(false, t0), mk(true, old)
	live, ended, granted, coded := mk(false, old), mk(false, old), mk(false, old), mk(false, old)
	newSession(t, s, u, live, "LIVE")
	x := newSession(t, s, u, ended, "ENDED")
	x.EndedAt, x.EndReason = t0, "test"
	g := newGrant(t, granted.ID, "DDDDDDDD", t0)
	a := store.AuthCode{ID: id(t), ClientID: coded.ID, RedirectURI: "https://a.example/cb", CodeChallenge: "c",
		Scope: "s", UserID: u.ID, AuthTime: t0, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute), Status: store.AuthCodeWaiting}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.UpdateSession(ctx, x), tx.CreateDeviceGrant(ctx, g), tx.CreateAuthCode(ctx, a))
	})
	var n int64
	update(t, s, func(tx store.Tx) (err error) { n, err = tx.DeleteUnusedClients(ctx, t0.Add(-24*time.Hour)); return err })
	mustEqual(t, "clients deleted", n, int64(1))
	_, err := s.Client(ctx, unused.ID)
	mustNotFound(t, "unused client", err)
	for name, c := range map[string]store.Client{"fresh": fresh, "trusted": trusted, "with a live session": live,
		"with an ended session": ended, "with a grant": granted, "with an authorization code": coded} {
		if _, err := s.Client(ctx, c.ID); err != nil {
			t.Errorf("client %s: %v", name, err)
		}
	}

	// Registering again moves CreatedAt, and with it the deletion.
	unused = mk(false, old)
	unused.CreatedAt = t0
	update(t, s, func(tx store.Tx) error { return tx.UpdateClient(ctx, unused) })
	update(t, s, func(tx store.Tx) (err error) { n, err = tx.DeleteUnusedClients(ctx, t0.Add(-24*time.Hour)); return err })
	mustEqual(t, "clients deleted after re-registration", n, int64(0))
	got, _ := s.Client(ctx, unused.ID)
	mustTime(t, "CreatedAt after UpdateClient", got.CreatedAt, t0)
}

// takeLease runs TakeLease in a transaction of its own.
func takeLease(t *testing.T, s store.Store, name, holder string, at, until time.Time) bool {
	t.Helper()
	var got bool
	update(t, s, func(tx store.Tx) error {
		var err error
		got, err = tx.TakeLease(context.Background(), name, holder, at, until)
		return err
	})
	return got
}

// testLeases: a lease goes to whoever asks when it is free or expired
// (held until now or earlier counts as expired, as for the outbox's
// leases), to its holder again whenever it asks (renewing it, possibly to
// an earlier time), and to nobody else while it lasts; names are
// independent, and a take whose transaction rolls back leaves the lease
// as it was.
func testLeases(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := now()
	if !takeLease(t, s, "cleanup", "a", t0, t0.Add(time.Minute)) {
		t.Fatal("a free lease was refused")
	}
	if takeLease(t, s, "cleanup", "b", t0.Add(59*time.Second), t0.Add(2*time.Minute)) {
		t.Error("a lease held by another was taken before it expired")
	}
	if !takeLease(t, s, "sync", "b", t0, t0.Add(time.Minute)) {
		t.Error("a lease of another name was refused")
	}
	// The holder renews before expiry: it holds it until the new time.
	if !takeLease(t, s, "cleanup", "a", t0.Add(30*time.Second), t0.Add(90*time.Second)) {
		t.Fatal("the holder could not renew its lease")
	}
	if takeLease(t, s, "cleanup", "b", t0.Add(89*time.Second), t0.Add(3*time.Minute)) {
		t.Error("a renewed lease was taken before its new expiry")
	}
	// Expired at now (until == now): free for anyone.
	if !takeLease(t, s, "cleanup", "b", t0.Add(90*time.Second), t0.Add(3*time.Minute)) {
		t.Fatal("an expired lease was refused")
	}
	if takeLease(t, s, "cleanup", "a", t0.Add(100*time.Second), t0.Add(4*time.Minute)) {
		t.Error("the former holder took back a lease another holds")
	}
	// A holder may shorten its own lease (say, to give it up early).
	if !takeLease(t, s, "cleanup", "b", t0.Add(100*time.Second), t0.Add(100*time.Second)) {
		t.Fatal("the holder could not shorten its lease")
	}
	// A take that rolls back changes nothing.
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx store.Tx) error {
		got, err := tx.TakeLease(ctx, "cleanup", "c", t0.Add(100*time.Second), t0.Add(time.Hour))
		if err != nil {
			return err
		}
		if !got {
			return errors.New("an expired lease was refused inside the transaction")
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if !takeLease(t, s, "cleanup", "a", t0.Add(101*time.Second), t0.Add(5*time.Minute)) {
		t.Error("a lease taken by a rolled back transaction stayed taken")
	}
	if takeLease(t, s, "sync", "a", t0.Add(30*time.Second), t0.Add(5*time.Minute)) {
		t.Error("the other name's lease was taken while held")
	}
}

// testLeaseContention: of many holders asking for one free lease at
// once, each in its own Update, exactly one gets it, whatever the backend
// does to serialize them (SQLite: one writer; PostgreSQL: serialization
// failures and retries).
func testLeaseContention(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 16
	t0 := now()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		takers []int
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var got bool
			err := s.Update(ctx, func(tx store.Tx) error {
				var err error
				got, err = tx.TakeLease(ctx, "sync_devices", fmt.Sprintf("instance-%d", i), t0, t0.Add(time.Hour))
				return err
			})
			if err != nil {
				t.Errorf("Update %d: %v", i, err)
				return
			}
			if got {
				mu.Lock()
				takers = append(takers, i)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(takers) != 1 {
		t.Errorf("%d holders took the lease at once (%v), want exactly 1", len(takers), takers)
	}
}
