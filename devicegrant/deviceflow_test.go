package devicegrant_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestDeviceFlowEndToEnd is the whole life of a device's sign-in through
// real clients: x/oauth2 as the device, a cookie-keeping browser as the
// phone, the homeserver's introspection call.
// Rules: P-DCR-1, P-DCR-4, P-DEV-1, P-DEV-3, P-DEV-5, P-DEV-7, P-DEV-8,
// P-RT-1, P-RT-2, P-INT-1, P-REV-1.
func TestDeviceFlowEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	clientID, secret := e.Register(deviceClientJSON)
	if clientID == "" || secret != "" {
		t.Fatalf("public client: id %q secret %q", clientID, secret)
	}
	conf := e.oauthConfig(clientID, "KITCHEN0001")

	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(da.UserCode) {
		t.Errorf("user_code %q is not XXXX-XXXX from the base-20 alphabet (P-DEV-3)", da.UserCode)
	}
	if da.VerificationURI != e.URL+"device" {
		t.Errorf("verification_uri = %q", da.VerificationURI)
	}
	// P-DEV-8: only characters of QR's alphanumeric set.
	if !regexp.MustCompile(`^[0-9A-Z $%*+\-./:]+$`).MatchString(da.VerificationURIComplete) {
		t.Errorf("verification_uri_complete %q is not QR-alphanumeric", da.VerificationURIComplete)
	}
	if want := strings.ToUpper(e.URL) + "D/" + strings.ReplaceAll(da.UserCode, "-", ""); da.VerificationURIComplete != want {
		t.Errorf("verification_uri_complete = %q, want %q", da.VerificationURIComplete, want)
	}
	if da.Interval != 1 || time.Until(da.Expiry) < 9*time.Minute {
		t.Errorf("interval %d, expiry in %v", da.Interval, time.Until(da.Expiry))
	}

	type result struct {
		tok *oauth2.Token
		err error
	}
	polled := make(chan result, 1)
	go func() {
		tok, err := conf.DeviceAccessToken(ctx, da)
		polled <- result{tok, err}
	}()

	// The person scans the QR code; the URL is upper case and must work.
	p := newPhone(t)
	done := p.Decide(da.VerificationURIComplete, "approve")
	if done.Status != http.StatusOK || !strings.Contains(done.Text(), "Device connected") {
		t.Fatalf("approval answered %d: %s", done.Status, done.Text())
	}

	r := <-polled
	if r.err != nil {
		t.Fatalf("DeviceAccessToken: %v", r.err)
	}
	tok := r.tok
	if !strings.HasPrefix(tok.AccessToken, "dga_") || !strings.HasPrefix(tok.RefreshToken, "dgr_") {
		t.Errorf("tokens lack their type prefixes: %q %q", tok.AccessToken[:4], tok.RefreshToken[:4])
	}
	if tok.TokenType != "Bearer" || time.Until(tok.Expiry) > 5*time.Minute || time.Until(tok.Expiry) < 4*time.Minute {
		t.Errorf("token type %q, expiry in %v", tok.TokenType, time.Until(tok.Expiry))
	}
	if got := tok.Extra("scope"); got != apiScope+" urn:matrix:client:device:KITCHEN0001" {
		t.Errorf("scope = %v", got)
	}

	info := e.Introspect(tok.AccessToken)
	if info["active"] != true || info["username"] != testUser || info["device_id"] != "KITCHEN0001" ||
		info["client_id"] != clientID || !strings.Contains(info["scope"].(string), apiScope) {
		t.Fatalf("introspection of a fresh token: %v", info)
	}
	if exp, _ := info["expires_in"].(float64); exp < 200 || exp > 300 {
		t.Errorf("expires_in = %v", info["expires_in"])
	}

	// Refresh through x/oauth2: make the token look expired.
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	fresh, err := conf.TokenSource(ctx, &stale).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken == tok.RefreshToken {
		t.Fatal("refresh did not rotate both tokens (P-RT-2)")
	}
	if info := e.Introspect(fresh.AccessToken); info["active"] != true || info["device_id"] != "KITCHEN0001" {
		t.Fatalf("introspection after refresh: %v", info)
	}

	// The device signs out: revoke its refresh token.
	status, body := e.Post("oauth2/revoke", url.Values{"token": {fresh.RefreshToken}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, body)
	}
	if info := e.Introspect(fresh.AccessToken); len(info) != 1 || info["active"] != false {
		t.Errorf("after revocation introspection = %v, want only active:false", info)
	}
	again := *fresh
	again.Expiry = time.Now().Add(-time.Minute)
	_, err = conf.TokenSource(ctx, &again).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("refresh after revocation: %v, want invalid_grant", err)
	}
}

// TestSignedInPhoneApprovesWithoutPassword: a person signed in on their
// phone approves the next device without typing the password again.
func TestSignedInPhoneApprovesWithoutPassword(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	clientID, _ := e.Register(deviceClientJSON)
	p := newPhone(t)
	for i, device := range []string{"FIRSTDEV01", "SECONDDEV2"} {
		da, err := e.oauthConfig(clientID, device).DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pg := p.Get(da.VerificationURIComplete)
		if hasLogin := pg.Form("/login") != nil; hasLogin != (i == 0) {
			t.Fatalf("device %d: login form shown = %v", i, hasLogin)
		}
		if i == 0 {
			pg = p.Submit(pg, "/login", url.Values{"username": {"@alice:example.org"}, "password": {testPassword}})
		}
		if !strings.Contains(pg.Text(), device) {
			t.Errorf("consent page does not name the device id %s: %s", device, pg.Text())
		}
	}
}
