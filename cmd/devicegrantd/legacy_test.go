package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/fakesynapse"
)

// TestLegacyLoginSettings (P-LEG-5): the legacy Matrix login is on by default, and
// legacy_login.enabled / .password (or DEVICEGRANTD_LEGACY_LOGIN and
// DEVICEGRANTD_LEGACY_LOGIN_PASSWORD) turn it, or its password login, off.
func TestLegacyLoginSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	load := func(yaml string, vars map[string]string) devicegrant.LegacyLogin {
		t.Helper()
		os.WriteFile(file, []byte(yaml), 0o600)
		c, err := loadConfig(file, env(vars))
		if err != nil {
			t.Fatal(err)
		}
		return c.server().LegacyLogin
	}
	cases := []struct {
		name string
		yaml string
		vars map[string]string
		want devicegrant.LegacyLogin
	}{
		{"default", "", nil, devicegrant.LegacyLogin{}},
		{"file: no password", "legacy_login:\n  password: false\n", nil, devicegrant.LegacyLogin{PasswordDisabled: true}},
		{"file: off", "legacy_login:\n  enabled: false\n", nil, devicegrant.LegacyLogin{Disabled: true}},
		{"env: off", "", map[string]string{"DEVICEGRANTD_LEGACY_LOGIN": "false"}, devicegrant.LegacyLogin{Disabled: true}},
		{"env wins over the file", "legacy_login:\n  enabled: false\n", map[string]string{"DEVICEGRANTD_LEGACY_LOGIN": "true", "DEVICEGRANTD_LEGACY_LOGIN_PASSWORD": "false"},
			devicegrant.LegacyLogin{PasswordDisabled: true}},
	}
	for _, tc := range cases {
		if got := load(tc.yaml, tc.vars); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	os.WriteFile(file, []byte("legacy_login:\n  enabled: perhaps\n"), 0o600)
	if _, err := loadConfig(file, env(nil)); err == nil {
		t.Error("legacy_login.enabled: perhaps was accepted")
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, nil, &out, &out, env(nil)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DEVICEGRANTD_LEGACY_LOGIN", "legacy_login.password"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %s", want)
		}
	}
}

// TestLegacyLoginAdmin (P-LEG-5): with the daemon's defaults a bot logs in with a
// password (the device is on the homeserver when it gets its answer);
// "user show" lists the session as a legacy login with its device name,
// and "session end" signs it out and deletes the device (P-HS-4).
func TestLegacyLoginAdmin(t *testing.T) {
	hs := fakesynapse.Start(t, fakesynapse.Options{Secret: opsSecret})
	vars := opsVars(t, t.TempDir(), hs)
	addAlice(t, vars)
	d := startDaemonCtl(t, vars)
	hs.SetAuthEndpoint(d.base)
	login := postJSON(t, d.base+"_matrix/client/v3/login", nil, `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"`+
		devtest.Password+`","device_id":"LEGACYBOT01","initial_device_display_name":"Weather bot"}`)
	tok, _ := login["access_token"].(string)
	if tok == "" || !slices.Contains(hs.Devices(devtest.Username), "LEGACYBOT01") || !introspect(t, d.base, tok) {
		t.Fatalf("legacy login: %v; devices %v", login, hs.Devices(devtest.Username))
	}

	out, err := cli(t, vars, "", "user", "show", devtest.Username, "--json")
	var shown userJSON
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil || len(shown.Sessions) != 1 {
		t.Fatalf("user show: %v %s", err, out)
	}
	if s := shown.Sessions[0]; s.DeviceID != "LEGACYBOT01" || s.DeviceName != "Weather bot" || s.SignIn != "legacy login" ||
		s.Client != "Legacy Matrix login" || s.ClientID != "matrix-legacy-login" {
		t.Errorf("user show: %+v", s)
	}
	if text, _ := cli(t, vars, "", "user", "show", devtest.Username); !strings.Contains(text, "legacy login") {
		t.Errorf("user show does not mark the legacy login:\n%s", text)
	}

	if out, err := cli(t, vars, "", "session", "end", "--device", "LEGACYBOT01", "--user", devtest.Username); err != nil {
		t.Fatalf("session end: %v %s", err, out)
	}
	if introspect(t, d.base, tok) {
		t.Error("the legacy token is active after session end")
	}
	waitFor(t, "the device to be deleted", func() bool { return !slices.Contains(hs.Devices(devtest.Username), "LEGACYBOT01") })
}
