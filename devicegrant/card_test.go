package devicegrant_test

import (
	"bytes"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/display"
	"github.com/devicegrant/devicegrant/internal/qrtest"
)

func (e *env) card(clientID, deviceCode, format string) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := http.PostForm(e.URL+"oauth2/device/card", url.Values{"client_id": {clientID}, "device_code": {deviceCode}, "format": {format}})
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestPairingCardEndpoint: the server draws a device's own card in every
// format, and what it draws scans back to verification_uri_complete.
func TestPairingCardEndpoint(t *testing.T) {
	e := newEnv(t)
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "CARDDEVICE1")
	dc, want := da["device_code"].(string), da["verification_uri_complete"].(string)

	_, meta := do(t, mustRequest(t, "GET", e.URL+".well-known/openid-configuration"))
	if meta["io.github.devicegrant.pairing_card_endpoint"] != e.URL+"oauth2/device/card" {
		t.Errorf("metadata does not advertise the card endpoint: %v", meta["io.github.devicegrant.pairing_card_endpoint"])
	}

	decode := map[string]func(b []byte) (string, error){
		"png": func(b []byte) (string, error) {
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				return "", err
			}
			return qrtest.Decode(img)
		},
		"ssd1306-128x64": func(b []byte) (string, error) {
			f, err := display.FrameFromPages(b, 128, 64)
			if err != nil {
				return "", err
			}
			return qrtest.Decode(f)
		},
		"ssd1306-128x32": func(b []byte) (string, error) {
			f, err := display.FrameFromPages(b, 128, 32)
			if err != nil {
				return "", err
			}
			return qrtest.Decode(f)
		},
		"ansi": func(b []byte) (string, error) { return qrtest.DecodeTerminal(string(b), qrtest.DarkTheme) },
	}
	for format, dec := range decode {
		resp, body := e.card(clientID, dc, format)
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %s", format, resp.StatusCode, body)
			continue
		}
		got, err := dec(body)
		if err != nil || got != want {
			t.Errorf("%s decodes to %q (%v), want %q", format, got, err, want)
		}
	}
	for format, ctype := range map[string]string{"svg": "image/svg+xml", "pbm": "image/x-portable-bitmap", "text": "text/plain; charset=utf-8"} {
		resp, body := e.card(clientID, dc, format)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype || len(body) == 0 {
			t.Errorf("%s: %d %q, %d bytes", format, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	if resp, body := e.card(clientID, dc, "svg"); !strings.Contains(string(body), da["user_code"].(string)) {
		t.Errorf("svg card lacks the user code (%d)", resp.StatusCode)
	}

	// Errors: another client, an unknown code, an unknown format, and a
	// code that was already answered.
	otherID, _ := e.Register(otherClientJSON)
	for name, tc := range map[string]struct{ client, code, format, want string }{
		"another client": {otherID, dc, "png", "invalid_grant"},
		"unknown code":   {clientID, "dgd_nope", "png", "invalid_grant"},
		"unknown format": {clientID, dc, "gif", "invalid_request"},
	} {
		resp, body := e.card(tc.client, tc.code, tc.format)
		if resp.StatusCode != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	newPhone(t).Decide(want, "approve")
	if resp, body := e.card(clientID, dc, "png"); resp.StatusCode != 400 || !strings.Contains(string(body), "invalid_grant") {
		t.Errorf("after approval: %d %s", resp.StatusCode, body)
	}
}

func mustRequest(t *testing.T, method, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
