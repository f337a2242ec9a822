package matrixpair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"
)

// Grant type names used in registration and discovery.
const (
	GrantDeviceCode   = "urn:ietf:params:oauth:grant-type:device_code"
	GrantRefreshToken = "refresh_token"
)

// Errors of discovery. They are wrapped with the homeserver's name.
var (
	// ErrNoOAuth means the homeserver does not advertise the Matrix OAuth
	// 2.0 API (no auth_metadata and no auth_issuer): it still uses the
	// legacy login API, which this package does not speak.
	ErrNoOAuth = errors.New("the homeserver does not offer the Matrix OAuth 2.0 API")
	// ErrNoDeviceGrant means the authorization server has no device
	// authorization endpoint or no dynamic client registration.
	ErrNoDeviceGrant = errors.New("the homeserver's authorization server does not offer the device authorization grant")
)

// Metadata is the part of the authorization server metadata (RFC 8414)
// this package uses.
type Metadata struct {
	Issuer                      string   `json:"issuer"`
	RegistrationEndpoint        string   `json:"registration_endpoint"`
	DeviceAuthorizationEndpoint string   `json:"device_authorization_endpoint"`
	TokenEndpoint               string   `json:"token_endpoint"`
	RevocationEndpoint          string   `json:"revocation_endpoint"`
	GrantTypesSupported         []string `json:"grant_types_supported"`
}

// Homeserver is what [Discover] learns about a homeserver.
type Homeserver struct {
	// ServerName is the Matrix server name (example.org), or "" when a
	// base URL was given.
	ServerName string
	// BaseURL is the client-server API base URL, without a trailing slash.
	BaseURL string
	// Metadata is the authorization server metadata.
	Metadata Metadata
	// Source says where Metadata came from: "auth_metadata" (stable),
	// "unstable_auth_metadata" (MSC2965), or "auth_issuer" (the older
	// MSC2965 endpoint followed by OpenID discovery).
	Source string
}

// Discover finds the homeserver named by target and its authorization
// server. target is a user id (@alice:example.org), a server name
// (example.org), or a base URL (https://matrix.example.org), which skips
// the /.well-known/matrix/client lookup. Plain http is accepted only for
// loopback addresses.
//
// The metadata is read from GET /_matrix/client/v1/auth_metadata, falling
// back to the unstable MSC2965 path and then to the older auth_issuer
// endpoint plus {issuer}/.well-known/openid-configuration. A homeserver
// without any of them gives an error wrapping [ErrNoOAuth].
func Discover(ctx context.Context, target string) (*Homeserver, error) {
	hs := &Homeserver{}
	target = strings.TrimSpace(target)
	switch {
	case target == "":
		return nil, errors.New("matrixpair: no homeserver given")
	case strings.Contains(target, "://"):
		u, err := checkURL(target)
		if err != nil {
			return nil, fmt.Errorf("matrixpair: homeserver URL: %w", err)
		}
		hs.BaseURL = strings.TrimRight(u.String(), "/")
	default:
		name := target
		if strings.HasPrefix(target, "@") {
			_, n, ok := strings.Cut(target, ":")
			if !ok || n == "" {
				return nil, fmt.Errorf("matrixpair: %q is not a Matrix user id (@user:server)", target)
			}
			name = n
		}
		if strings.ContainsAny(name, "/?#@ ") {
			return nil, fmt.Errorf("matrixpair: %q is not a Matrix server name", name)
		}
		hs.ServerName = name
		base, err := wellKnown(ctx, name)
		if err != nil {
			return nil, err
		}
		hs.BaseURL = base
	}
	if err := hs.fetchMetadata(ctx); err != nil {
		return nil, err
	}
	return hs, nil
}

// name is how errors refer to the homeserver.
func (hs *Homeserver) name() string {
	if hs.ServerName != "" {
		return hs.ServerName
	}
	return hs.BaseURL
}

// isLoopback reports whether host (without port) is a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkURL parses an absolute URL that must be https, or http on a
// loopback address.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%q: plain http is allowed only for loopback addresses; use https", raw)
		}
	default:
		return nil, fmt.Errorf("%q: the scheme must be https", raw)
	}
	return u, nil
}

// wellKnown resolves a server name to a base URL with
// /.well-known/matrix/client. A 404 means the server name is the base URL.
func wellKnown(ctx context.Context, name string) (string, error) {
	scheme := "https"
	host := name
	if h, _, err := net.SplitHostPort(name); err == nil {
		host = h
	}
	if isLoopback(strings.Trim(host, "[]")) {
		scheme = "http"
	}
	origin := scheme + "://" + name
	var wk struct {
		Homeserver struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	}
	status, err := getJSON(ctx, origin+"/.well-known/matrix/client", &wk)
	switch {
	case status == http.StatusNotFound:
		return origin, nil
	case err != nil:
		return "", fmt.Errorf("matrixpair: %s: reading /.well-known/matrix/client: %w", name, err)
	case wk.Homeserver.BaseURL == "":
		return "", fmt.Errorf("matrixpair: %s: /.well-known/matrix/client has no m.homeserver base_url", name)
	}
	u, err := checkURL(wk.Homeserver.BaseURL)
	if err != nil {
		return "", fmt.Errorf("matrixpair: %s: well-known base_url: %w", name, err)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// fetchMetadata tries the three discovery paths in turn.
func (hs *Homeserver) fetchMetadata(ctx context.Context) error {
	var md Metadata
	for _, try := range []struct{ path, source string }{
		{"/_matrix/client/v1/auth_metadata", "auth_metadata"},
		{"/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", "unstable_auth_metadata"},
	} {
		status, err := getJSON(ctx, hs.BaseURL+try.path, &md)
		if err == nil {
			hs.Source = try.source
			return hs.setMetadata(md)
		}
		if !unsupported(status) {
			return fmt.Errorf("matrixpair: %s: %s: %w", hs.name(), try.path, err)
		}
	}
	const issuerPath = "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer"
	var ai struct {
		Issuer string `json:"issuer"`
	}
	status, err := getJSON(ctx, hs.BaseURL+issuerPath, &ai)
	if err != nil {
		if unsupported(status) {
			return fmt.Errorf("matrixpair: %s (%s): %w: it answers neither auth_metadata nor auth_issuer, so it still uses the legacy password/SSO login, which matrix-pair does not speak", hs.name(), hs.BaseURL, ErrNoOAuth)
		}
		return fmt.Errorf("matrixpair: %s: %s: %w", hs.name(), issuerPath, err)
	}
	iss, err := checkURL(ai.Issuer)
	if err != nil {
		return fmt.Errorf("matrixpair: %s: auth_issuer: %w", hs.name(), err)
	}
	cfg := strings.TrimRight(iss.String(), "/") + "/.well-known/openid-configuration"
	if _, err := getJSON(ctx, cfg, &md); err != nil {
		return fmt.Errorf("matrixpair: %s: OpenID discovery at %s: %w", hs.name(), cfg, err)
	}
	hs.Source = "auth_issuer"
	return hs.setMetadata(md)
}

// unsupported reports whether an HTTP status means "this endpoint does not
// exist here" (Synapse answers 404 M_UNRECOGNIZED; some proxies 405 or 400).
func unsupported(status int) bool {
	return status == http.StatusNotFound || status == http.StatusMethodNotAllowed || status == http.StatusBadRequest
}

func (hs *Homeserver) setMetadata(md Metadata) error {
	if md.Issuer == "" || md.TokenEndpoint == "" {
		return fmt.Errorf("matrixpair: %s: the authorization server metadata has no issuer or token_endpoint", hs.name())
	}
	for _, e := range []string{md.Issuer, md.TokenEndpoint, md.DeviceAuthorizationEndpoint, md.RegistrationEndpoint, md.RevocationEndpoint} {
		if e == "" {
			continue
		}
		if _, err := checkURL(e); err != nil {
			return fmt.Errorf("matrixpair: %s: authorization server metadata: %w", hs.name(), err)
		}
	}
	if md.DeviceAuthorizationEndpoint == "" || md.RegistrationEndpoint == "" ||
		(md.GrantTypesSupported != nil && !slices.Contains(md.GrantTypesSupported, GrantDeviceCode)) {
		return fmt.Errorf("matrixpair: %s (issuer %s): %w", hs.name(), md.Issuer, ErrNoDeviceGrant)
	}
	hs.Metadata = md
	return nil
}

// httpClient returns the client stored in ctx under oauth2.HTTPClient, or
// http.DefaultClient.
func httpClient(ctx context.Context) *http.Client {
	if c, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && c != nil {
		return c
	}
	return http.DefaultClient
}

// HTTPError is a non-2xx answer from the homeserver or the authorization
// server outside the token endpoint.
type HTTPError struct {
	Status int
	// Code is the Matrix errcode or OAuth error, if the body had one.
	Code    string
	Message string
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// getJSON fetches u into v. It returns the HTTP status (0 on a transport
// error) and an error unless the status was 200 and the body JSON.
func getJSON(ctx context.Context, u string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	return doJSON(req, v)
}

// doJSON sends req and decodes a 2xx JSON answer into v (if v is not nil).
func doJSON(req *http.Request, v any) (int, error) {
	resp, err := httpClient(req.Context()).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := &HTTPError{Status: resp.StatusCode}
		var e struct {
			ErrCode  string `json:"errcode"`
			Error    string `json:"error"`
			Desc     string `json:"error_description"`
			ErrorMsg string `json:"error_message"`
		}
		if json.Unmarshal(body, &e) == nil {
			he.Code = firstNonEmpty(e.ErrCode, e.Error)
			he.Message = firstNonEmpty(e.Desc, e.ErrorMsg)
			if e.ErrCode != "" && e.Error != "" {
				he.Message = e.Error // Matrix: errcode + error (the message)
			}
		}
		return resp.StatusCode, he
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding %s: %w", req.URL.Redacted(), err)
		}
	}
	return resp.StatusCode, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
