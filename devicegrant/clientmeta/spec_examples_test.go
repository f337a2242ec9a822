package clientmeta

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// The examples of the Matrix client-server API, section "Redirect URI
// validation" (OAuth 2.0 API, client registration), copied verbatim, all
// with client URI https://example.com/ as the spec has them (P-DCR-5).
var specRedirectExamples = []struct {
	appType string
	uri     string
	valid   bool
}{
	// Web clients.
	{ApplicationTypeWeb, "https://example.com/callback", true},
	{ApplicationTypeWeb, "https://app.example.com/callback", true},
	{ApplicationTypeWeb, "https://example.com:5173/?query=value", true},
	{ApplicationTypeWeb, "https://example.com/callback#fragment", false},
	{ApplicationTypeWeb, "http://example.com/callback", false},
	{ApplicationTypeWeb, "http://localhost/", false},
	// Native clients.
	{ApplicationTypeNative, "com.example.app:/callback", true},
	{ApplicationTypeNative, "com.example:/", true},
	{ApplicationTypeNative, "com.example:callback", true},
	{ApplicationTypeNative, "http://localhost/callback", true},
	{ApplicationTypeNative, "http://127.0.0.1/callback", true},
	{ApplicationTypeNative, "http://[::1]/callback", true},
	{ApplicationTypeNative, "example:/callback", false},
	{ApplicationTypeNative, "com.example.app://callback", false},
	{ApplicationTypeNative, "https://localhost/callback", false},
	{ApplicationTypeNative, "http://localhost:1234/callback", false},
}

func TestSpecRedirectURIExamples(t *testing.T) {
	for _, ex := range specRedirectExamples {
		t.Run(ex.appType+" "+ex.uri, func(t *testing.T) {
			body := build(kv{
				"application_type":           ex.appType,
				"client_uri":                 "https://example.com/",
				"redirect_uris":              []string{ex.uri},
				"token_endpoint_auth_method": "none",
			}, nil)
			_, err := Parse([]byte(body))
			switch {
			case ex.valid && err != nil:
				t.Fatalf("P-DCR-5: the spec lists %s as a valid %s redirect URI; Parse: %v", ex.uri, ex.appType, err)
			case !ex.valid && err == nil:
				t.Fatalf("P-DCR-5: the spec lists %s as an invalid %s redirect URI; Parse accepted it", ex.uri, ex.appType)
			case !ex.valid:
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeInvalidRedirectURI {
					t.Fatalf("P-DCR-5: %s: error %v, want %s", ex.uri, err, CodeInvalidRedirectURI)
				}
			}
		})
	}
}

// specRegistration is the registration request of the Matrix spec's
// "Dynamic client registration flow", verbatim.
const specRegistration = `{
  "client_name": "My App",
  "client_name#fr": "Mon application",
  "client_uri": "https://example.com/",
  "logo_uri": "https://example.com/logo.png",
  "tos_uri": "https://example.com/tos.html",
  "tos_uri#fr": "https://example.com/fr/tos.html",
  "policy_uri": "https://example.com/policy.html",
  "policy_uri#fr": "https://example.com/fr/policy.html",
  "redirect_uris": ["https://app.example.com/callback"],
  "token_endpoint_auth_method": "none",
  "response_types": ["code"],
  "grant_types": [
    "authorization_code",
    "refresh_token",
    "urn:ietf:params:oauth:grant-type:token-exchange"
  ],
  "application_type": "web"
}`

// TestSpecRegistrationExample: the server MUST ignore grant types it does
// not understand; what it registers and returns is what it does (P-DCR-1).
func TestSpecRegistrationExample(t *testing.T) {
	m, err := Parse([]byte(specRegistration))
	if err != nil {
		t.Fatalf("P-DCR-1: the spec's registration example is refused: %v", err)
	}
	if want := []string{GrantAuthorizationCode, GrantRefreshToken}; !slices.Equal(m.GrantTypes, want) {
		t.Fatalf("grant_types = %q, want %q", m.GrantTypes, want)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		GrantTypes    []string `json:"grant_types"`
		ResponseTypes []string `json:"response_types"`
	}
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(back.GrantTypes, "urn:ietf:params:oauth:grant-type:token-exchange") || !slices.Equal(back.ResponseTypes, []string{"code"}) {
		t.Fatalf("rendered metadata %s keeps what the server does not understand", out)
	}
	// Stored metadata is parsed again when the client is loaded: it must
	// stay valid, with nothing unknown in it.
	if again, err := Parse(out); err != nil || !slices.Equal(again.GrantTypes, m.GrantTypes) {
		t.Fatalf("rendered metadata does not parse back the same: %v %q", err, again)
	}
}
