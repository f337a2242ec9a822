package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/devicegrant"
)

// TestLegacyLoginSettings: the legacy Matrix login is on by default, and
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
