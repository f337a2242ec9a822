package matrixpair

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"time"

	"golang.org/x/oauth2"
)

// DefaultClientURI is the client_uri registered when LoginOptions gives
// none. Matrix authorization servers require an https URI on a real domain
// (not a loopback address, an IP address or a public suffix).
const DefaultClientURI = "https://github.com/devicegrant/devicegrant"

// Matrix scopes (Matrix spec v1.15, PROTOCOL.md P-SCOPE-1).
const (
	ScopeAPI          = "urn:matrix:client:api:*"
	ScopeDevicePrefix = "urn:matrix:client:device:"
)

// Errors of a login.
var (
	// ErrDenied means the person declined the request on their phone.
	ErrDenied = errors.New("the sign-in was denied")
	// ErrExpired means nobody approved the request before its codes expired.
	ErrExpired = errors.New("the sign-in request expired before it was approved")
)

// Authorization is what a device shows so that a person can approve it
// (RFC 8628 §3.3): a QR symbol of VerificationURIComplete and the user code.
type Authorization struct {
	// VerificationURI is where the person can type the code.
	VerificationURI string
	// VerificationURIComplete has the code in it; encode it in a QR symbol.
	// It equals VerificationURI if the server sent none.
	VerificationURIComplete string
	// UserCode is the code to show, e.g. "BCDF-GHJK".
	UserCode string
	// Expires is when the codes stop working (zero if the server said not).
	Expires time.Time
	// Interval is the polling interval the server asked for.
	Interval time.Duration
}

// LoginOptions configure [Login]. Only Homeserver and Show are needed.
type LoginOptions struct {
	// Homeserver is the result of [Discover].
	Homeserver *Homeserver
	// Show is called with the codes to display, once before polling
	// starts, and again if the login has to start over with a new client
	// registration. It must not block; draw from another goroutine if
	// needed (the context passed to Login bounds the login).
	Show func(Authorization)

	// Profile names the state file; "" means "default".
	Profile string
	// Dir is the state directory; "" means [DefaultDir].
	Dir string
	// DeviceID is the Matrix device id to ask for; "" generates a random
	// one of 10 characters from A-Z and 0-9.
	DeviceID string
	// ClientID reuses an earlier registration with the same authorization
	// server. If the server has forgotten it (invalid_client), Login
	// registers a new client and carries on.
	ClientID string
	// ClientName is the registered client_name; "" means
	// "matrix-pair on HOSTNAME".
	ClientName string
	// ClientURI is the registered client_uri; "" means [DefaultClientURI].
	ClientURI string
	// Logger receives progress logs; nil discards them.
	Logger *slog.Logger
}

var deviceIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~!$&'()*+,;=:@/-]{10,}$`)

// NewDeviceID returns a random device id of 10 characters from A-Z0-9.
func NewDeviceID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 10)
	// 36 does not divide 256: draw until a byte falls below 252 = 7×36.
	for i := 0; i < len(b); {
		var r [1]byte
		rand.Read(r[:])
		if r[0] < 252 {
			b[i] = alphabet[r[0]%36]
			i++
		}
	}
	return string(b)
}

// Login signs a device in: it registers a client if needed, asks for a
// device authorization, calls opts.Show with the codes, polls the token
// endpoint until the person approves (honouring interval and slow_down),
// asks the homeserver who the tokens belong to (whoami), and saves the
// session under opts.Dir/opts.Profile. It fails with [ErrDenied],
// [ErrExpired] or the context's error.
func Login(ctx context.Context, opts LoginOptions) (*Session, error) {
	hs := opts.Homeserver
	if hs == nil {
		return nil, errors.New("matrixpair: LoginOptions.Homeserver is nil; call Discover first")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	profile := opts.Profile
	if profile == "" {
		profile = DefaultProfile
	}
	if err := checkProfile(profile); err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = DefaultDir(); err != nil {
			return nil, err
		}
	}
	deviceID := opts.DeviceID
	if deviceID == "" {
		deviceID = NewDeviceID()
	} else if !deviceIDPattern.MatchString(deviceID) {
		return nil, fmt.Errorf("matrixpair: device id %q: at least 10 characters from A-Z a-z 0-9 ._~!$&'()*+,;=:@/-", deviceID)
	}
	md := hs.Metadata
	clientID := opts.ClientID
	fresh := false
	registerClient := func() error {
		id, err := register(ctx, md, opts.ClientName, opts.ClientURI)
		if err != nil {
			return err
		}
		log.InfoContext(ctx, "registered client", "issuer", md.Issuer, "client_id", id)
		clientID, fresh = id, true
		return nil
	}
	if clientID == "" {
		if err := registerClient(); err != nil {
			return nil, err
		}
	}
	scopes := []string{ScopeAPI, ScopeDevicePrefix + deviceID}
	var tok *oauth2.Token
	for {
		cfg := &oauth2.Config{
			ClientID: clientID,
			Endpoint: oauth2.Endpoint{
				DeviceAuthURL: md.DeviceAuthorizationEndpoint,
				TokenURL:      md.TokenEndpoint,
				AuthStyle:     oauth2.AuthStyleInParams,
			},
			Scopes: scopes,
		}
		da, err := cfg.DeviceAuth(ctx)
		if isOAuthError(err, "invalid_client") && !fresh {
			log.InfoContext(ctx, "the authorization server forgot the client; registering again", "client_id", clientID)
			if err := registerClient(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("matrixpair: device authorization at %s: %w", md.DeviceAuthorizationEndpoint, err)
		}
		auth := Authorization{
			VerificationURI:         da.VerificationURI,
			VerificationURIComplete: da.VerificationURIComplete,
			UserCode:                da.UserCode,
			Expires:                 da.Expiry,
			Interval:                time.Duration(da.Interval) * time.Second,
		}
		if auth.VerificationURIComplete == "" {
			auth.VerificationURIComplete = auth.VerificationURI
		}
		if auth.Interval == 0 {
			auth.Interval = 5 * time.Second
		}
		log.InfoContext(ctx, "waiting for approval", "verification_uri", da.VerificationURI,
			"expires", da.Expiry, "interval", auth.Interval)
		if opts.Show != nil {
			opts.Show(auth)
		}
		// x/oauth2 polls every interval and adds 5 s on slow_down. A MAS
		// quirk: MAS answers authorization_pending with 403, not 400; x/oauth2
		// (v0.37) reads the JSON error of any non-2xx answer, so that works.
		tok, err = cfg.DeviceAccessToken(ctx, da)
		switch {
		case err == nil:
		case isOAuthError(err, "access_denied"):
			return nil, fmt.Errorf("matrixpair: %w", ErrDenied)
		case isOAuthError(err, "expired_token"),
			errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return nil, fmt.Errorf("matrixpair: %w", ErrExpired)
		case isOAuthError(err, "invalid_client") && !fresh:
			log.InfoContext(ctx, "the authorization server forgot the client while polling; registering again")
			if err := registerClient(); err != nil {
				return nil, err
			}
			continue
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			return nil, fmt.Errorf("matrixpair: polling %s: %w", md.TokenEndpoint, err)
		}
		break
	}
	if tok.RefreshToken == "" {
		return nil, errors.New("matrixpair: the authorization server issued no refresh token")
	}
	s := &Session{
		Profile:            profile,
		Dir:                dir,
		Homeserver:         hs.BaseURL,
		DeviceID:           deviceID,
		Issuer:             md.Issuer,
		TokenEndpoint:      md.TokenEndpoint,
		RevocationEndpoint: md.RevocationEndpoint,
		ClientID:           clientID,
		Logger:             opts.Logger,
	}
	s.tok = tokenFrom(tok)
	if scope, _ := tok.Extra("scope").(string); scope != "" {
		s.Scope = scope
	}
	who, err := whoami(ctx, hs.BaseURL, tok.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("matrixpair: the homeserver did not accept the new token: %w", err)
	}
	if who.DeviceID != "" && who.DeviceID != deviceID {
		return nil, fmt.Errorf("matrixpair: the homeserver says the token is for device %q, not %q", who.DeviceID, deviceID)
	}
	s.UserID = who.UserID
	unlock, err := lockFile(ctx, dir, profile)
	if err != nil {
		return nil, err
	}
	err = s.save()
	unlock()
	if err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "signed in", "user_id", s.UserID, "device_id", s.DeviceID, "profile", profile)
	return s, nil
}

// isOAuthError reports whether err is an OAuth error response with code.
func isOAuthError(err error, code string) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == code
}

// register performs dynamic client registration (RFC 7591) as a
// device-only native public client (PROTOCOL.md P-DCR-4).
func register(ctx context.Context, md Metadata, name, uri string) (string, error) {
	if name == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "an unnamed host"
		}
		name = "matrix-pair on " + host
	}
	if uri == "" {
		uri = DefaultClientURI
	}
	body, _ := json.Marshal(map[string]any{
		"client_name":                name,
		"client_uri":                 uri,
		"application_type":           "native",
		"token_endpoint_auth_method": "none",
		"grant_types":                []string{GrantDeviceCode, GrantRefreshToken},
		"response_types":             []string{},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.RegistrationEndpoint, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("matrixpair: registration: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	var out struct {
		ClientID string `json:"client_id"`
	}
	if _, err := doJSON(req, &out); err != nil {
		return "", fmt.Errorf("matrixpair: registering a client at %s: %w", md.RegistrationEndpoint, err)
	}
	if out.ClientID == "" {
		return "", fmt.Errorf("matrixpair: registering a client at %s: no client_id in the answer", md.RegistrationEndpoint)
	}
	return out.ClientID, nil
}

// WhoAmI is the answer of GET /_matrix/client/v3/account/whoami.
type WhoAmI struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
}

func whoami(ctx context.Context, base, accessToken string) (WhoAmI, error) {
	var w WhoAmI
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		return w, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	if _, err := doJSON(req, &w); err != nil {
		return w, fmt.Errorf("whoami at %s: %w", base, err)
	}
	if w.UserID == "" {
		return w, fmt.Errorf("whoami at %s: no user_id", base)
	}
	return w, nil
}
