package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

const (
	opsSecret   = "ops-test-homeserver-secret"
	scopeAPI    = "urn:matrix:client:api:*"
	scopeDevice = "urn:matrix:client:device:"
)

// daemon is a "devicegrantd serve" the test can stop and start again.
type daemon struct {
	t      *testing.T
	vars   map[string]string
	base   string
	cancel context.CancelFunc
	done   chan error
	log    *devtest.SyncBuffer
}

// startDaemonCtl runs serve with vars until stop (or the end of the test)
// and returns once /healthz answers.
func startDaemonCtl(t *testing.T, vars map[string]string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{t: t, vars: vars, base: "http://" + vars["DEVICEGRANTD_LISTEN"] + "/", cancel: cancel,
		done: make(chan error, 1), log: &devtest.SyncBuffer{}}
	go func() { d.done <- run(ctx, nil, strings.NewReader(""), d.log, d.log, env(vars)) }()
	t.Cleanup(func() { d.stop() })
	waitFor(t, "the daemon to answer /healthz", func() bool {
		resp, err := http.Get(d.base + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return d
}

// stop is SIGTERM: it returns what serve returned.
func (d *daemon) stop() error {
	if d.cancel == nil {
		return nil
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("serve: %v\n%s", err, d.log.String())
		}
		return err
	case <-time.After(20 * time.Second):
		d.t.Fatal("serve did not stop within 20s of SIGTERM")
		return nil
	}
}

// cli runs one admin command with the daemon's configuration (and extra
// settings) and returns its output.
func cli(t *testing.T, vars map[string]string, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &out, env(vars))
	return out.String(), err
}

func addAlice(t *testing.T, vars map[string]string) {
	t.Helper()
	if out, err := cli(t, vars, devtest.Password+"\n", "user", "add", devtest.Username, "--password-stdin"); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
}

// signInDevice runs a device flow with golang.org/x/oauth2 for a Matrix
// device id, approved on the phone as alice, and returns the access token.
func signInDevice(t *testing.T, base, deviceID string, phone *devtest.Phone) string {
	t.Helper()
	_, tok := signInDeviceTokens(t, base, deviceID, phone)
	return tok.AccessToken
}

// signInDeviceTokens is signInDevice that returns the client's id and the
// whole token, refresh token included.
func signInDeviceTokens(t *testing.T, base, deviceID string, phone *devtest.Phone) (clientID string, tok *oauth2.Token) {
	t.Helper()
	clientID = registerKiosk(t, base)
	conf := &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{DeviceAuthURL: base + "oauth2/device", TokenURL: base + "oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
		Scopes:   []string{scopeAPI, scopeDevice + deviceID},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	phone.Decide(strings.Replace(da.VerificationURIComplete, strings.ToUpper(base), base, 1), "approve")
	tok, err = conf.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("DeviceAccessToken: %v", err)
	}
	return clientID, tok
}

// registerKiosk registers a public device-flow client at base and returns
// its id.
func registerKiosk(t *testing.T, base string) string {
	t.Helper()
	reg := postJSON(t, base+"oauth2/registration", nil, `{"client_name":"Kiosk","client_uri":"https://kiosk.example.org/","token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	clientID, _ := reg["client_id"].(string)
	if clientID == "" {
		t.Fatalf("registration: %v", reg)
	}
	return clientID
}

// introspect asks about a token as the homeserver does.
func introspect(t *testing.T, base, token string) bool {
	t.Helper()
	status, active, err := introspectWith(http.DefaultClient, base, token)
	if err != nil || status != http.StatusOK {
		t.Fatalf("introspect: %d %v", status, err)
	}
	return active
}

// introspectWith asks about a token as the homeserver does, with client.
// A transport error comes with status 0; a 200 without JSON is an error
// too.
func introspectWith(client *http.Client, base, token string) (status int, active bool, err error) {
	req, err := http.NewRequest(http.MethodPost, base+"oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+opsSecret)
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var m struct {
		Active bool `json:"active"`
	}
	if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&m) != nil {
		return resp.StatusCode, false, errors.New("introspection answered 200 without JSON")
	}
	return resp.StatusCode, m.Active, nil
}

// opsVars is a daemon's configuration in dir, provisioning hs when given.
func opsVars(t *testing.T, dir string, hs *fakesynapse.Homeserver) map[string]string {
	vars := map[string]string{
		"DEVICEGRANTD_LISTEN":            freeAddr(t),
		"DEVICEGRANTD_DATABASE":          filepath.Join(dir, "devicegrantd.db"),
		"DEVICEGRANTD_LOG_LEVEL":         "warn",
		"DEVICEGRANTD_HOMESERVER_SECRET": opsSecret,
		"DEVICEGRANTD_POLL_INTERVAL":     "1s",
	}
	if hs != nil {
		vars["DEVICEGRANTD_HOMESERVER_ENDPOINT"] = hs.URL()
		vars["DEVICEGRANTD_SERVER_NAME"] = hs.ServerName()
	}
	return vars
}

func with(vars map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range vars {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestSessionEndFromCommandLine: "session end" against a running daemon
// with a homeserver does what the account page does (P-ACCT-1): the
// tokens are inactive at the very next introspection, and delete_device
// reaches the homeserver through the outbox (P-HS-4). "user show" lists
// the sessions it ends.
func TestSessionEndFromCommandLine(t *testing.T) {
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: opsSecret})
	vars := opsVars(t, t.TempDir(), hs)
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	hs.SetAuthEndpoint(d.base)
	phone := devtest.NewPhone(t)
	kiosk := signInDevice(t, d.base, "KIOSK00001", phone)
	other := signInDevice(t, d.base, "OTHER00002", phone)
	if !introspect(t, d.base, kiosk) || !introspect(t, d.base, other) {
		t.Fatal("fresh tokens are inactive")
	}

	out, err := cli(t, vars, "", "user", "show", devtest.Username, "--json")
	if err != nil {
		t.Fatalf("user show: %v %s", err, out)
	}
	var shown userJSON
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("user show --json: %v\n%s", err, out)
	}
	if shown.MatrixID != "@alice:"+hs.ServerName() || len(shown.Sessions) != 2 {
		t.Fatalf("user show: %+v", shown)
	}
	ids := map[string]string{}
	for _, s := range shown.Sessions {
		ids[s.DeviceID] = s.ID
		if s.Client != "Kiosk" || s.SignIn != "device code" || s.LastActive.IsZero() || s.Created.IsZero() {
			t.Errorf("session %+v", s)
		}
	}
	text, _ := cli(t, vars, "", "user", "show", devtest.Username)
	for _, want := range []string{"KIOSK00001", "OTHER00002", ids["KIOSK00001"], "device code", "Kiosk"} {
		if !strings.Contains(text, want) {
			t.Errorf("user show lacks %q:\n%s", want, text)
		}
	}

	// By device and user: the stolen kiosk.
	out, err = cli(t, vars, "", "session", "end", "--device", "KIOSK00001", "--user", devtest.Username)
	if err != nil || !strings.Contains(out, "ended") {
		t.Fatalf("session end --device: %v %s", err, out)
	}
	if introspect(t, d.base, kiosk) {
		t.Error("the kiosk's token is still active after session end")
	}
	if !introspect(t, d.base, other) {
		t.Error("ending the kiosk's session ended the other one too")
	}
	waitFor(t, "delete_device of KIOSK1 at the homeserver", func() bool {
		for _, dev := range hs.Devices(devtest.Username) {
			if dev == "KIOSK00001" {
				return false
			}
		}
		return true
	})

	// By session id.
	if out, err := cli(t, vars, "", "session", "end", ids["OTHER00002"]); err != nil {
		t.Fatalf("session end ID: %v %s", err, out)
	}
	if introspect(t, d.base, other) {
		t.Error("the other token is still active after session end by id")
	}
	waitFor(t, "delete_device of OTHER2", func() bool { return len(hs.Devices(devtest.Username)) == 0 })
	if out, err := cli(t, vars, "", "session", "end", ids["OTHER00002"]); err == nil || !strings.Contains(err.Error(), "already ended") {
		t.Errorf("ending an ended session: %v %s", err, out)
	}
	if _, err := cli(t, vars, "", "session", "end", "no-such-session"); err == nil || !strings.Contains(err.Error(), "no session has the id") {
		t.Errorf("ending an unknown session: %v", err)
	}
	if _, err := cli(t, vars, "", "session", "end", "--device", "KIOSK00001"); err == nil {
		t.Error("--device without --user was accepted")
	}
	out, _ = cli(t, vars, "", "user", "show", devtest.Username, "--all")
	if !strings.Contains(out, "ended by an operator") {
		t.Errorf("user show --all does not say who ended the sessions:\n%s", out)
	}
}

// signInPhone signs the phone in on the account page with password and
// reports whether it worked.
func signInPhone(t *testing.T, base string, phone *devtest.Phone, password string) bool {
	t.Helper()
	pg := phone.Get(base + "account")
	if pg.Form("/login") == nil {
		return strings.Contains(pg.Text(), devtest.Username)
	}
	pg = phone.Submit(pg, "/login", url.Values{"username": {devtest.Username}, "password": {password}})
	return pg.Status == http.StatusOK && pg.Form("/login") == nil
}

// TestSetPasswordFromCommandLine: the forgotten password. After "user
// set-password" the old password fails, the new one works, browsers
// signed in before are signed out; devices stay signed in unless
// --end-sessions, which makes their tokens inactive at once.
func TestSetPasswordFromCommandLine(t *testing.T) {
	vars := opsVars(t, t.TempDir(), nil)
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	phone := devtest.NewPhone(t)
	token := signInDevice(t, d.base, "BOT0000001", phone)
	if !signInPhone(t, d.base, phone, devtest.Password) {
		t.Fatal("the phone is not signed in before the change")
	}

	const newPassword = "a much better passphrase"
	out, err := cli(t, vars, newPassword+"\n", "user", "set-password", devtest.Username, "--password-stdin")
	if err != nil || !strings.Contains(out, "signed out of every browser") {
		t.Fatalf("set-password: %v %s", err, out)
	}
	if pg := phone.Get(d.base + "account"); pg.Form("/login") == nil {
		t.Error("the phone's browser session survived the password change")
	}
	if signInPhone(t, d.base, devtest.NewPhone(t), devtest.Password) {
		t.Error("the old password still signs in")
	}
	if !signInPhone(t, d.base, devtest.NewPhone(t), newPassword) {
		t.Error("the new password does not sign in")
	}
	if !introspect(t, d.base, token) {
		t.Error("a password change without --end-sessions ended a device session")
	}

	if _, err := cli(t, vars, "short\n", "user", "set-password", devtest.Username, "--password-stdin"); err == nil || !strings.Contains(err.Error(), "at least 8") {
		t.Errorf("a short password: %v", err)
	}
	if _, err := cli(t, vars, "whatever long\n", "user", "set-password", "nobody", "--password-stdin"); err == nil {
		t.Error("set-password for an unknown user succeeded")
	}
	if out, err := cli(t, vars, "third password here\n", "user", "set-password", devtest.Username, "--password-stdin", "--end-sessions"); err != nil || !strings.Contains(out, "every device session ended") {
		t.Fatalf("set-password --end-sessions: %v %s", err, out)
	}
	if introspect(t, d.base, token) {
		t.Error("the device token is active after set-password --end-sessions")
	}
}

// TestBackupUnderLoadAndRestore: a backup taken while the daemon serves and
// clients keep registering holds everything committed before it began;
// restoring it (stop, replace the file, start) brings back the accounts
// and the sessions, whose tokens introspect as active again.
func TestBackupUnderLoadAndRestore(t *testing.T) {
	dir := t.TempDir()
	vars := with(opsVars(t, dir, nil), "DEVICEGRANTD_CLIENT_REGISTRATIONS", "100000/1s")
	db := vars["DEVICEGRANTD_DATABASE"]
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	token := signInDevice(t, d.base, "PI00000001", devtest.NewPhone(t))

	var mu sync.Mutex
	var registered []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post(d.base+"oauth2/registration", "application/json",
					strings.NewReader(fmt.Sprintf(`{"client_name":"load %d-%d","client_uri":"https://load.example.org/","token_endpoint_auth_method":"client_secret_basic","redirect_uris":["https://load.example.org/cb"]}`, w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				var m map[string]any
				json.NewDecoder(resp.Body).Decode(&m)
				resp.Body.Close()
				if id, _ := m["client_id"].(string); resp.StatusCode == http.StatusCreated && id != "" {
					mu.Lock()
					registered = append(registered, id)
					mu.Unlock()
				} else {
					t.Errorf("registration under load: %s %v", resp.Status, m)
					return
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(registered) }
	waitFor(t, "registrations under way", func() bool { return count() >= 20 })
	mu.Lock()
	before := append([]string(nil), registered...)
	mu.Unlock()
	backup := filepath.Join(dir, "backup.db")
	out, err := cli(t, vars, "", "backup", backup)
	atBackup := count()
	waitFor(t, "registrations after the backup", func() bool { return count() >= atBackup+5 })
	close(stop)
	wg.Wait()
	if err != nil || !strings.Contains(out, "integrity ok") {
		t.Fatalf("backup: %v %s", err, out)
	}
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi.Mode(), err)
	}
	if out, err := cli(t, vars, "", "backup", backup); err == nil {
		t.Errorf("a backup over an existing file succeeded: %s", out)
	}

	// Damage after the backup: a new account, then the restore undoes it.
	if out, err := cli(t, vars, "another password\n", "user", "add", "mallory", "--password-stdin"); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}

	// Restore: stop, replace the file, start.
	d.stop()
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDaemonCtl(t, vars)
	if !introspect(t, d.base, token) {
		t.Error("a session from before the backup is not active after the restore")
	}
	st, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range before {
		if _, err := st.Client(context.Background(), id); err != nil {
			t.Fatalf("client %s, registered before the backup began, is missing after the restore: %v", id, err)
		}
	}
	out, _ = cli(t, vars, "", "user", "list")
	if !strings.Contains(out, "alice") || strings.Contains(out, "mallory") {
		t.Errorf("user list after the restore:\n%s", out)
	}
	if !signInPhone(t, d.base, devtest.NewPhone(t), devtest.Password) {
		t.Error("alice cannot sign in after the restore")
	}
	t.Logf("%d clients registered before the backup, %d by its end, %d in all", len(before), atBackup, count())
}

// TestBackupNeedsADatabase: backing up a database that does not exist
// fails rather than creating and copying an empty one.
func TestBackupNeedsADatabase(t *testing.T) {
	dir := t.TempDir()
	vars := map[string]string{"DEVICEGRANTD_DATABASE": filepath.Join(dir, "missing.db")}
	if _, err := cli(t, vars, "", "backup", filepath.Join(dir, "b.db")); err == nil {
		t.Fatal("backup of a missing database succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !os.IsNotExist(err) {
		t.Error("backup created the missing database")
	}
}
