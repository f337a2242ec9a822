package devicegrant_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

const (
	testUser         = devtest.Username
	testPassword     = devtest.Password
	homeserverSecret = devtest.HomeserverSecret
	apiScope         = "urn:matrix:client:api:*"
	deviceGrant      = "urn:ietf:params:oauth:grant-type:device_code"
)

// env is a real devicegrantd core on loopback HTTP with a real SQLite file,
// and the requests these tests make of it. Its store runs every Update
// function twice (devtest.WithRerunUpdates), so every test here also
// checks that the code is safe to re-run, as store.Store requires.
type env struct {
	*devtest.Server
	t *testing.T
}

func newEnv(t *testing.T, opts ...devtest.Option) *env {
	t.Helper()
	opts = append([]devtest.Option{devtest.WithRerunUpdates(nil)}, opts...)
	if os.Getenv("DEVICEGRANT_CORE_STORE") == "postgres" {
		opts = append(opts, withPostgres(t))
	}
	return &env{Server: devtest.Start(t, opts...), t: t}
}

// withPostgres runs the core on PostgreSQL, in a schema of its own
// (issue 15). DEVICEGRANT_CORE_STORE=postgres runs every test of this
// package that uses newEnv so; the tests that read the SQLite file
// (e.DBPath) directly do not apply there.
func withPostgres(t *testing.T) devtest.Option {
	t.Helper()
	st, err := postgres.Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	return devtest.WithStore(st)
}

func withClock() devtest.Option { return devtest.WithClock() }

func newPhone(t *testing.T) *devtest.Phone { return devtest.NewPhone(t) }

const deviceClientJSON = `{
	"client_name": "Kitchen display",
	"client_uri": "https://kitchen.example.org/",
	"logo_uri": "https://kitchen.example.org/logo.png",
	"application_type": "native",
	"token_endpoint_auth_method": "none",
	"grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
}`

// otherClientJSON is another device client: registrations with the same
// metadata share one client (P-DCR-6).
var otherClientJSON = strings.Replace(deviceClientJSON, "Kitchen display", "Hall display", 1)

// oauthConfig is the device's x/oauth2 configuration.
func (e *env) oauthConfig(clientID, deviceID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: e.URL + "oauth2/device",
			TokenURL:      e.URL + "oauth2/token",
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{apiScope, "urn:matrix:client:device:" + deviceID},
	}
}

func basicAuth(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
}

// do sends a request and decodes its JSON answer.
func do(t *testing.T, req *http.Request) (int, map[string]any) { return devtest.Do(t, req) }

// sqliteFile is the path of the core's SQLite file, for the tests that
// read it directly; they skip when the core runs on another store.
func (e *env) sqliteFile() string {
	e.t.Helper()
	if e.DBPath == "" {
		e.t.Skip("reads the SQLite file; the core runs on another store here")
	}
	return e.DBPath
}
