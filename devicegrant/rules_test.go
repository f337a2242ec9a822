package devicegrant

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestDeviceGrantRulesWithoutHTTP drives the device grant's rules the way
// the token endpoint does, but without a request: a grant made by
// newDeviceGrant and approved by approveGrant is exchanged exactly once by
// concurrent redeemDeviceCode calls (P-DEV-6), and a second exchange is
// invalid_grant (P-DEV-5).
func TestDeviceGrantRulesWithoutHTTP(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "rules.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{Issuer: "http://127.0.0.1:1/", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	user, err := s.CreateUser(ctx, "alice", "correct horse battery", "")
	if err != nil {
		t.Fatal(err)
	}
	meta := []byte(`{"client_uri":"https://kitchen.example.org/","application_type":"native","token_endpoint_auth_method":"none",` +
		`"grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"],"response_types":[]}`)
	cl := store.Client{ID: newID(), Metadata: meta, CreatedAt: s.now()}
	deviceCode := newToken(prefixDeviceCode)
	g := newDeviceGrant(store.DeviceGrant{DeviceCodeHash: hashSecret(deviceCode), UserCode: newUserCode(), ClientID: cl.ID,
		Scope: scopeAPI + " " + scopeDevicePrefix + "RULESDEVICE", Interval: time.Second}, s.now(), time.Minute)
	approveGrant(&g, user.ID, s.now(), false)
	if g.State != store.GrantReady {
		t.Fatalf("approved without a homeserver: state %s, want ready", g.State)
	}
	if err := st.Update(ctx, func(tx store.Tx) error {
		return errors.Join(tx.CreateClient(ctx, cl), tx.CreateDeviceGrant(ctx, g))
	}); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.loadClient(ctx, cl.ID)
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := s.redeemDeviceCode(ctx, tokenRequest{client: loaded, deviceCode: deviceCode, ip: "192.0.2.1"})
			mu.Lock()
			defer mu.Unlock()
			var oe *oauthError
			switch {
			case err == nil && resp.AccessToken != "":
				won++
			case errors.As(err, &oe) && (oe.code == "invalid_grant" || oe.code == "slow_down"):
				lost++
			default:
				t.Errorf("redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if won != 1 || lost != 7 {
		t.Fatalf("P-DEV-6: %d exchanges succeeded and %d were refused, want 1 and 7", won, lost)
	}
	got, err := st.DeviceGrant(ctx, g.ID)
	if err != nil || got.State != store.GrantExchanged || got.SessionID == "" {
		t.Fatalf("grant after the exchange: %+v %v", got, err)
	}
}
