package postgres_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestCopyFromSQLite: a SQLite database written by a real core (an
// account, clients, a completed device flow with its session, tokens and
// browser session, signing keys) moves to PostgreSQL with every row
// verified; a token issued before the move is active at introspection
// through a core on PostgreSQL (P-INT-1); a second move into the now
// non-empty database is refused and changes nothing (issue 15).
func TestCopyFromSQLite(t *testing.T) {
	pgURL := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	gin.SetMode(gin.ReleaseMode)

	// A core on a SQLite file, provisioning devices at a homeserver, with
	// its background work (the outbox deliverer) under the test's control.
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: devtest.HomeserverSecret, RequireProvisioning: true})
	dbPath := filepath.Join(t.TempDir(), "devicegrantd.db")
	lite, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	issuer := newIssuer(t)
	core, err := devicegrant.New(devicegrant.Config{Issuer: issuer.url, ServerName: hs.ServerName(),
		HomeserverSecret: devtest.HomeserverSecret, HomeserverEndpoint: hs.URL(), PollInterval: time.Second,
		OutboxBackoff: devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil))}, lite)
	if err != nil {
		t.Fatal(err)
	}
	issuer.serve(t, core)
	hs.SetAuthEndpoint(issuer.url)
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = core.Run(runCtx) }()
	if _, err := core.CreateUser(ctx, devtest.Username, devtest.Password, "Alice"); err != nil {
		t.Fatal(err)
	}
	clientID := register(t, issuer.url, `{"client_name": "Kitchen display", "client_uri": "https://kitchen.example.org/",
		"application_type": "native", "token_endpoint_auth_method": "none",
		"grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]}`)
	register(t, issuer.url, `{"client_name": "Web app", "client_uri": "https://app.example.org/",
		"redirect_uris": ["https://app.example.org/cb"], "grant_types": ["authorization_code", "refresh_token"],
		"token_endpoint_auth_method": "client_secret_basic"}`)
	conf := func(device string) *oauth2.Config {
		return &oauth2.Config{
			ClientID: clientID,
			Endpoint: oauth2.Endpoint{DeviceAuthURL: issuer.url + "oauth2/device", TokenURL: issuer.url + "oauth2/token",
				AuthStyle: oauth2.AuthStyleInParams},
			Scopes: []string{"urn:matrix:client:api:*", "urn:matrix:client:device:" + device},
		}
	}
	phone := devtest.NewPhone(t)
	da, err := conf("MOVEDDEV01").DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	phone.Decide(da.VerificationURIComplete, "approve")
	tok, err := conf("MOVEDDEV01").DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	if !introspect(t, issuer.url, tok.AccessToken) {
		t.Fatal("the token is inactive before the move")
	}
	for _, p := range []string{".well-known/openid-configuration", "oauth2/keys.json"} { // signing keys
		if resp, err := http.Get(issuer.url + p); err == nil {
			resp.Body.Close()
		}
	}
	// The deliverer stops (as when the old daemon is stopped for the
	// move); a second device is then approved, leaving its provisioning
	// call in the outbox for PostgreSQL's deliverer to make.
	stopRun()
	<-ran
	da, err = conf("MOVEDDEV02").DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	phone.Decide(da.VerificationURIComplete, "approve")
	issuer.close()
	if err := lite.Close(); err != nil {
		t.Fatal(err)
	}

	moved, err := postgres.CopyFromSQLite(ctx, dbPath, pgURL)
	if err != nil {
		t.Fatalf("CopyFromSQLite: %v", err)
	}
	rows := map[string]int{}
	for _, m := range moved {
		rows[m.Table] = m.Rows
	}
	t.Logf("moved %v", moved)
	for table, atLeast := range map[string]int{"users": 1, "clients": 2, "sessions": 1, "device_grants": 1,
		"token_pairs": 1, "browser_sessions": 1, "outbox": 1, "auth_codes": 0, "signing_keys": 1, "known_places": 1} {
		if n, ok := rows[table]; !ok || n < atLeast {
			t.Errorf("table %s: moved %d rows (listed %v), want at least %d", table, n, ok, atLeast)
		}
	}

	if _, err := postgres.CopyFromSQLite(ctx, dbPath, pgURL); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a second move into the same database = %v, want a refusal naming it not empty", err)
	}

	// The same records through both stores.
	st, err := postgres.Open(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lite, err = sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	alice, err := lite.UserByUsername(ctx, devtest.Username)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		read func(store.Store) (any, error)
	}{
		{"users", func(s store.Store) (any, error) { return s.Users(ctx) }},
		{"client", func(s store.Store) (any, error) { return s.Client(ctx, clientID) }},
		{"sessions", func(s store.Store) (any, error) { return s.SessionsByUser(ctx, alice.ID, true) }},
		{"grants", func(s store.Store) (any, error) {
			return s.GrantsOfUser(ctx, alice.ID, []store.GrantState{store.GrantPending, store.GrantApproved, store.GrantReady, store.GrantDenied, store.GrantExchanged}, time.Now())
		}},
		{"signing keys", func(s store.Store) (any, error) { return s.SigningKeys(ctx) }},
		{"outbox", func(s store.Store) (any, error) { return s.Outbox(ctx, 100) }},
	} {
		want, err := c.read(lite)
		if err != nil {
			t.Fatalf("%s from SQLite: %v", c.what, err)
		}
		got, err := c.read(st)
		if err != nil {
			t.Fatalf("%s from PostgreSQL: %v", c.what, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s after the move:\n got %+v\nwant %+v", c.what, got, want)
		}
	}

	// New outbox entries on PostgreSQL are numbered after the moved ones
	// (they are delivered in id order per user).
	movedOutbox, err := lite.Outbox(ctx, 100)
	if err != nil || len(movedOutbox) == 0 {
		t.Fatalf("the SQLite outbox: %v %v", movedOutbox, err)
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		id, err := tx.Enqueue(ctx, store.OutboxEntry{UserKey: "probe", Call: "probe", Body: []byte("{}"),
			CreatedAt: time.Now(), NextAttemptAt: time.Now().Add(time.Hour)})
		if err != nil {
			return err
		}
		if last := movedOutbox[len(movedOutbox)-1].ID; id <= last {
			t.Errorf("a new outbox entry got id %d, not after the moved ones (last %d)", id, last)
		}
		return tx.DeleteOutbox(ctx, id)
	})
	if err != nil {
		t.Fatal(err)
	}

	// A core on PostgreSQL: the old token is active, and the deliverer
	// makes the provisioning call left in the outbox, so the second
	// device's polls, now answered there, end with its tokens.
	pgCore, err := devicegrant.New(devicegrant.Config{Issuer: issuer.url, ServerName: hs.ServerName(),
		HomeserverSecret: devtest.HomeserverSecret, HomeserverEndpoint: hs.URL(), PollInterval: time.Second,
		OutboxBackoff: devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	after := httptest.NewServer(pgCore)
	defer after.Close()
	runCtx, stopRun = context.WithCancel(ctx)
	ran = make(chan struct{})
	go func() { defer close(ran); _ = pgCore.Run(runCtx) }()
	defer func() { stopRun(); <-ran }()
	if !introspect(t, after.URL+"/", tok.AccessToken) {
		t.Error("a token issued on SQLite is inactive at introspection on PostgreSQL after the move")
	}
	second := conf("MOVEDDEV02")
	second.Endpoint.TokenURL = after.URL + "/oauth2/token"
	tok2, err := second.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("the device approved before the move, polling after it: %v", err)
	}
	if !introspect(t, after.URL+"/", tok2.AccessToken) || !slices.Contains(hs.Devices(devtest.Username), "MOVEDDEV02") {
		t.Errorf("the second device: token active %v, homeserver devices %v", introspect(t, after.URL+"/", tok2.AccessToken),
			hs.Devices(devtest.Username))
	}
}

// testIssuer is a loopback listener whose URL is known before the core
// that will serve it is built (the core needs its issuer).
type testIssuer struct {
	url string
	srv *httptest.Server
}

func newIssuer(t *testing.T) *testIssuer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	return &testIssuer{url: "http://" + srv.Listener.Addr().String() + "/", srv: srv}
}

func (i *testIssuer) serve(t *testing.T, h http.Handler) {
	i.srv.Config.Handler = h
	i.srv.Start()
	t.Cleanup(i.srv.Close)
}

func (i *testIssuer) close() { i.srv.Close() }

// register registers a client (RFC 7591) and returns its id.
func register(t *testing.T, base, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"oauth2/registration", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, m := devtest.Do(t, req)
	id, _ := m["client_id"].(string)
	if status != http.StatusCreated || id == "" {
		t.Fatalf("register: %d %v", status, m)
	}
	return id
}

// introspect asks base about an access token as the homeserver does
// (P-INT-1) and says whether it is active.
func introspect(t *testing.T, base, token string) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+devtest.HomeserverSecret)
	status, m := devtest.Do(t, req)
	if status != http.StatusOK {
		t.Fatalf("introspect: %d %v", status, m)
	}
	return m["active"] == true
}

// TestCopyFromSQLiteTextNotUTF8: SQLite keeps whatever bytes it is given,
// and releases before these stored some that are not UTF-8 text: a
// homeserver's answer cut inside a character as an outbox call's last
// error, a User-Agent with bytes from 0x80 up; a display name given on
// the command line in Latin-1 still may. PostgreSQL refuses such text
// (and NUL), so the move failed as a whole and could not be made. Now
// each bad byte is stored as U+FFFD, the rows are verified against the
// values so mended, and the count of mended values is reported per table,
// for the operator to see.
func TestCopyFromSQLiteTextNotUTF8(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "src.db")
	lite, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	created := time.UnixMilli(1_700_000_000_000)
	err = lite.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateUser(ctx, store.User{ID: "u1", Username: "jose", PasswordHash: "h", DisplayName: "Jos\xe9",
			CreatedAt: created}); err != nil {
			return err
		}
		_, err := tx.Enqueue(ctx, store.OutboxEntry{UserKey: "jose", Call: "provision_user", Body: []byte(`{}`),
			CreatedAt: created, NextAttemptAt: created, Attempts: 3, LastError: "answered 400: bad\x00request \xc3"})
		return err
	})
	lite.Close()
	if err != nil {
		t.Fatal(err)
	}
	pgURL := pgtest.URL(t)
	moved, err := postgres.CopyFromSQLite(ctx, path, pgURL)
	if err != nil {
		t.Fatalf("CopyFromSQLite: %v", err)
	}
	replaced := map[string]int{}
	for _, m := range moved {
		replaced[m.Table] = m.Replaced
	}
	if replaced["users"] != 1 || replaced["outbox"] != 1 || replaced["clients"] != 0 {
		t.Errorf("values replaced per table: %v; want users 1, outbox 1, others 0", replaced)
	}
	st, err := postgres.Open(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if u, err := st.User(ctx, "u1"); err != nil || u.DisplayName != "Jos\uFFFD" {
		t.Errorf("display name after the move = %q, %v", u.DisplayName, err)
	}
	if o, err := st.Outbox(ctx, 10); err != nil || len(o) != 1 || o[0].LastError != "answered 400: bad\uFFFDrequest \uFFFD" || o[0].Attempts != 3 {
		t.Errorf("outbox after the move = %+v, %v", o, err)
	}
}

// TestCopyFromSQLiteWhileInUse: a daemon left running on the SQLite file
// (the operator forgot to stop it) keeps writing during the move, and
// whatever it writes after its table was read would be lost. The move
// notices that the file changed under it, commits nothing, and says to
// stop the daemon, rather than failing with a difference between rows,
// or committing a copy that misses the last writes.
func TestCopyFromSQLiteWhileInUse(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "src.db")
	lite, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	// The daemon: an account added every millisecond or so.
	stop := make(chan struct{})
	written := make(chan int)
	go func() {
		n := 0
		defer func() { written <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("user%d", n)
			if err := lite.Update(ctx, func(tx store.Tx) error {
				return tx.CreateUser(ctx, store.User{ID: name, Username: name, PasswordHash: "h", CreatedAt: time.Now()})
			}); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	pgURL := pgtest.URL(t)
	_, err = postgres.CopyFromSQLite(ctx, path, pgURL)
	close(stop)
	t.Logf("%d accounts written meanwhile", <-written)
	if err == nil || !strings.Contains(err.Error(), "changed during the move") {
		t.Errorf("CopyFromSQLite of a file in use = %v, want it refused as changed during the move", err)
	}
	st, err := postgres.Open(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if users, err := st.Users(ctx); err != nil || len(users) != 0 {
		t.Errorf("%d accounts in PostgreSQL after a refused move, %v; want none", len(users), err)
	}
}
