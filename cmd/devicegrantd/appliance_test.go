package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/devtest"
	"github.com/devicegrant/devicegrant/internal/qrtest"
)

// startDaemon runs "devicegrantd serve" with vars until the test ends and
// returns its base URL once /healthz answers.
func startDaemon(t *testing.T, vars map[string]string) string {
	t.Helper()
	base := "http://" + vars["DEVICEGRANTD_LISTEN"] + "/"
	startDaemonWith(t, vars, func() bool {
		resp, err := http.Get(base + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return base
}

// startDaemonWith runs "devicegrantd serve" with vars until the test ends,
// and returns once ready reports true.
func startDaemonWith(t *testing.T, vars map[string]string, ready func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr devtest.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, strings.NewReader(""), &stderr, &stderr, env(vars)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitFor(t, "the daemon to be ready", ready)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func postJSON(t *testing.T, u string, form url.Values, body string) map[string]any {
	t.Helper()
	var resp *http.Response
	var err error
	if form != nil {
		resp, err = http.PostForm(u, form)
	} else {
		resp, err = http.Post(u, "application/json", strings.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return m
}

// TestApplianceAndPending: with a display configured, the daemon shows
// the newest pending pairing on it and blanks it once approved; "pending"
// prints the same QR code in the terminal.
func TestApplianceAndPending(t *testing.T) {
	dir := t.TempDir()
	cardFile := filepath.Join(dir, "card.png")
	vars := map[string]string{
		"DEVICEGRANTD_LISTEN":    freeAddr(t),
		"DEVICEGRANTD_DATABASE":  filepath.Join(dir, "d.db"),
		"DEVICEGRANTD_DISPLAY":   "png:" + cardFile + ":128x64",
		"DEVICEGRANTD_LOG_LEVEL": "warn",
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"user", "add", devtest.Username, "--password-stdin"},
		strings.NewReader(devtest.Password+"\n"), &out, &out, env(vars)); err != nil {
		t.Fatalf("user add: %v %s", err, out.String())
	}
	base := startDaemon(t, vars)

	reg := postJSON(t, base+"oauth2/registration", nil, `{"client_name":"Bot","client_uri":"https://bot.example.org/","token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	da := postJSON(t, base+"oauth2/device", url.Values{"client_id": {reg["client_id"].(string)},
		"scope": {"urn:matrix:client:api:* urn:matrix:client:device:APPLIANCE1"}}, "")
	want, _ := da["verification_uri_complete"].(string)
	if want == "" {
		t.Fatalf("device authorization: %v", da)
	}

	shown := func() (string, error) {
		f, err := os.Open(cardFile)
		if err != nil {
			return "", err
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			return "", err
		}
		if b := img.Bounds(); b.Dx() != 128 || b.Dy() != 64 {
			t.Fatalf("panel image is %v, want 128x64", b)
		}
		return qrtest.Decode(img)
	}
	waitFor(t, "the pairing on the panel", func() bool { got, _ := shown(); return got == want })

	out.Reset()
	if err := run(context.Background(), []string{"pending"}, nil, &out, &out, env(vars)); err != nil {
		t.Fatalf("pending: %v", err)
	}
	if !strings.Contains(out.String(), da["user_code"].(string)) || !strings.Contains(out.String(), "Bot asked") {
		t.Errorf("pending output lacks the code or the client:\n%s", out.String())
	}
	if got, err := qrtest.DecodeTerminal(out.String(), qrtest.DarkTheme); err != nil || got != want {
		t.Errorf("pending's QR decodes to %q (%v), want %q", got, err, want)
	}

	devtest.NewPhone(t).Decide(strings.Replace(want, strings.ToUpper(base), base, 1), "approve")
	waitFor(t, "the panel to be blanked", func() bool {
		f, err := os.Open(cardFile)
		if err != nil {
			return false
		}
		defer f.Close()
		img, err := png.Decode(f)
		return err == nil && blank(img)
	})
	out.Reset()
	run(context.Background(), []string{"pending"}, nil, &out, &out, env(vars))
	if !strings.Contains(out.String(), "No device is waiting") {
		t.Errorf("pending after approval: %s", out.String())
	}
}

func blank(img image.Image) bool {
	b := img.Bounds()
	first := img.At(b.Min.X, b.Min.Y)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if img.At(x, y) != first {
				return false
			}
		}
	}
	return true
}
