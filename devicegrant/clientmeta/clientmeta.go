// Package clientmeta parses and validates OAuth 2.0 dynamic client
// registration metadata (RFC 7591) under the Matrix rules of PROTOCOL.md
// section P-DCR, and matches redirect URIs presented at the authorization
// endpoint against the registered ones (RFC 8252 §7.3).
//
// Decisions taken where the RFCs or the protocol digest leave room:
//
//   - token_endpoint_auth_method defaults to client_secret_basic, the RFC 7591
//     default, even though most Matrix clients are public: a client that wants
//     to be public says "none", as every Matrix client does today. Silently
//     making an under-specified client public would be the less safe choice.
//   - client_uri must not be a public suffix, whether the suffix is in the
//     ICANN or the PRIVATE section of the Public Suffix List (github.io,
//     pages.dev …): a private suffix is shared by unrelated owners exactly like
//     an ICANN one, so "github.io" identifies no client, while
//     "alice.github.io" does. Single-label hosts are public suffixes under
//     the list's default rule and are refused too.
//   - https URIs (client_uri, logo_uri, tos_uri, policy_uri, https redirect
//     URIs) must use an ASCII DNS host name (the xn-- form for
//     internationalised names); IP literals, numeric top-level labels and
//     localhost (including *.localhost) are refused. client_uri, logo_uri,
//     tos_uri and policy_uri use the default port; an https redirect URI
//     may name a port, as the Matrix spec's example
//     https://example.com:5173/?query=value does.
//   - A localised URI (client_uri#fr, logo_uri#en-GB …) is validated like its
//     plain field and must also be on the plain client_uri host or a
//     subdomain of it, so a translation cannot point users somewhere else.
//   - refresh_token alone is refused: a refresh token has to be issued by
//     another grant, so it must come with authorization_code or device_code.
//   - A private-use redirect scheme (RFC 8252 §7.1) starts with the
//     client_uri host in reverse-DNS notation, optionally followed by more
//     labels, as the Matrix spec words it. For client_uri
//     https://app.example.com/, com.example.app:/cb, com.example.app.beta:cb
//     are valid; com.example:/cb (a parent domain), com:/cb and
//     com.example.other:/cb are not.
//   - Redirect URIs registered without authorization_code (a device-only
//     client that still sends some) are validated and kept; they are useless
//     until the grant is registered, which callers check with HasGrant.
//   - JSON null and "" for an optional member mean "absent"; duplicate members
//     (and localised members differing only in the case of their language
//     tag) are refused because different parsers would disagree on them.
//   - MarshalJSON always renders response_types, as [] when empty, because
//     RFC 7591 §2 reads an absent response_types as ["code"].
package clientmeta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// Grant types supported for registration (P-DISC-2, P-DCR-4).
const (
	// GrantAuthorizationCode is the RFC 6749 §4.1 authorization code grant.
	GrantAuthorizationCode = "authorization_code"
	// GrantRefreshToken is the RFC 6749 §6 refresh token grant.
	GrantRefreshToken = "refresh_token"
	// GrantDeviceCode is the RFC 8628 device authorization grant.
	GrantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"
)

// ResponseTypeCode is the only supported response type (RFC 6749 §4.1).
const ResponseTypeCode = "code"

// Token endpoint authentication methods (RFC 7591 §2, P-DCR-4).
const (
	// AuthNone marks a public client (no client authentication).
	AuthNone = "none"
	// AuthClientSecretBasic is HTTP Basic authentication with the client
	// secret; the RFC 7591 default.
	AuthClientSecretBasic = "client_secret_basic"
	// AuthClientSecretPost sends the client secret in the form body.
	AuthClientSecretPost = "client_secret_post"
)

// Application types (OpenID Connect Dynamic Client Registration §2, P-DCR-4).
const (
	// ApplicationTypeWeb is the default application type.
	ApplicationTypeWeb = "web"
	// ApplicationTypeNative is for native apps (RFC 8252).
	ApplicationTypeNative = "native"
)

// RFC 7591 §3.2.2 error codes used by this package.
const (
	// CodeInvalidClientMetadata reports invalid metadata other than redirect URIs.
	CodeInvalidClientMetadata = "invalid_client_metadata"
	// CodeInvalidRedirectURI reports an invalid, missing or superfluous redirect URI.
	CodeInvalidRedirectURI = "invalid_redirect_uri"
)

// Size limits. The caller limits the size of the request body itself.
const (
	// MaxRedirectURIs is the largest number of redirect URIs a client may register.
	MaxRedirectURIs = 20
	// MaxURILength is the longest URI accepted, in bytes.
	MaxURILength = 2048
	// MaxContacts is the largest number of contacts accepted.
	MaxContacts = 20
	// MaxContactLength is the longest contact accepted, in bytes.
	MaxContactLength = 320
	// MaxClientNameLength is the longest client name accepted, in characters.
	MaxClientNameLength = 256
	// MaxLocalized is the largest number of localised members accepted.
	MaxLocalized = 64
	// MaxMetadataBytes bounds the registered metadata as stored (its JSON
	// rendering): anyone may register, and each field's own limit would
	// still allow about 200 KiB. Real clients need a few hundred bytes.
	MaxMetadataBytes = 16 << 10
)

// Metadata is the validated client metadata that gets registered.
type Metadata struct {
	// RedirectURIs are the registered redirect URIs (P-DCR-5).
	RedirectURIs []string
	// TokenEndpointAuthMethod is "none", "client_secret_basic" or
	// "client_secret_post".
	TokenEndpointAuthMethod string
	// GrantTypes defaults to ["authorization_code"] when absent (P-DCR-4).
	GrantTypes []string
	// ResponseTypes defaults to ["code"] when authorization_code is a grant
	// type, and is empty otherwise.
	ResponseTypes []string
	// ApplicationType is "web" (default) or "native".
	ApplicationType string
	// ClientName is the human-readable name shown to users.
	ClientName string
	// ClientURI is the client's home page; required by Matrix (P-DCR-2).
	ClientURI string
	// LogoURI is the client's logo, on the ClientURI host or a subdomain.
	LogoURI string
	// TOSURI is the client's terms of service, on the ClientURI host or a subdomain.
	TOSURI string
	// PolicyURI is the client's privacy policy, on the ClientURI host or a subdomain.
	PolicyURI string
	// Contacts are ways to reach the people responsible for the client.
	Contacts []string
	// Localized holds localised members keyed as in the request, e.g.
	// "client_name#fr" -> "…", "tos_uri#en-GB" -> "…" (P-DCR-3).
	Localized map[string]string
}

// Error is an RFC 7591 §3.2.2 error.
type Error struct {
	// Code is "invalid_client_metadata" or "invalid_redirect_uri".
	Code string
	// Description says, for a human, what is wrong.
	Description string

	cause error
}

// Error returns the code and the description.
func (e *Error) Error() string { return e.Code + ": " + e.Description }

// Unwrap returns the underlying error (e.g. a JSON syntax error), if any.
func (e *Error) Unwrap() error { return e.cause }

func newErr(code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Description: err.Error(), cause: errors.Unwrap(err)}
}

func metaErr(format string, args ...any) *Error {
	return newErr(CodeInvalidClientMetadata, format, args...)
}

func redirErr(format string, args ...any) *Error {
	return newErr(CodeInvalidRedirectURI, format, args...)
}

// Public reports whether the client authenticates with "none".
func (m *Metadata) Public() bool { return m.TokenEndpointAuthMethod == AuthNone }

// HasGrant reports whether the client registered grant type g (P-DCR-7).
func (m *Metadata) HasGrant(g string) bool {
	for _, x := range m.GrantTypes {
		if x == g {
			return true
		}
	}
	return false
}

// localizable lists the RFC 7591 §2.2 human-readable members that may carry
// a "#language-tag" suffix.
var localizable = map[string]bool{
	"client_name": true,
	"client_uri":  true,
	"logo_uri":    true,
	"tos_uri":     true,
	"policy_uri":  true,
}

// Parse decodes a registration request body (JSON object) and validates it.
// Unknown members are dropped; defaults are filled in (P-DCR-4).
// It returns *Error for every invalid input.
func Parse(body []byte) (*Metadata, error) {
	fields, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	m := new(Metadata)
	var present bool

	if m.RedirectURIs, _, err = stringArray(fields, "redirect_uris", CodeInvalidRedirectURI); err != nil {
		return nil, err
	}
	if m.GrantTypes, present, err = stringArray(fields, "grant_types", CodeInvalidClientMetadata); err != nil {
		return nil, err
	}
	asked := m.GrantTypes
	m.GrantTypes = known(m.GrantTypes, GrantAuthorizationCode, GrantRefreshToken, GrantDeviceCode)
	switch {
	case !present:
		m.GrantTypes = []string{GrantAuthorizationCode}
	case len(asked) == 0:
		return nil, metaErr("grant_types is empty; list at least one grant type or omit it for the default [%q]", GrantAuthorizationCode)
	case len(m.GrantTypes) == 0:
		return nil, metaErr("none of the grant types %q is supported; supported grant types are %q, %q and %q", asked, GrantAuthorizationCode, GrantRefreshToken, GrantDeviceCode)
	}
	if m.ResponseTypes, present, err = stringArray(fields, "response_types", CodeInvalidClientMetadata); err != nil {
		return nil, err
	}
	m.ResponseTypes = known(m.ResponseTypes, ResponseTypeCode)
	if (!present || len(m.ResponseTypes) == 0) && m.HasGrant(GrantAuthorizationCode) {
		m.ResponseTypes = []string{ResponseTypeCode}
	}
	if m.Contacts, _, err = stringArray(fields, "contacts", CodeInvalidClientMetadata); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"token_endpoint_auth_method", &m.TokenEndpointAuthMethod},
		{"application_type", &m.ApplicationType},
		{"client_name", &m.ClientName},
		{"client_uri", &m.ClientURI},
		{"logo_uri", &m.LogoURI},
		{"tos_uri", &m.TOSURI},
		{"policy_uri", &m.PolicyURI},
	} {
		if *f.dst, err = stringField(fields, f.name); err != nil {
			return nil, err
		}
	}
	if m.TokenEndpointAuthMethod == "" {
		m.TokenEndpointAuthMethod = AuthClientSecretBasic
	}
	if m.ApplicationType == "" {
		m.ApplicationType = ApplicationTypeWeb
	}
	for key := range fields {
		base, _, ok := strings.Cut(key, "#")
		if !ok || !localizable[base] {
			continue // unknown members are dropped (P-DCR-1)
		}
		v, err := stringField(fields, key)
		if err != nil {
			return nil, err
		}
		if v == "" {
			continue
		}
		if m.Localized == nil {
			m.Localized = make(map[string]string)
		}
		m.Localized[key] = v
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if b, err := m.MarshalJSON(); err != nil || len(b) > MaxMetadataBytes {
		return nil, metaErr("the metadata is %d bytes once registered; at most %d are accepted", len(b), MaxMetadataBytes)
	}
	return m, nil
}

// known keeps the values of list that are among supported. The Matrix spec
// says a server MUST ignore grant_types and response_types values it does
// not understand (its own registration example asks for the token-exchange
// grant), so they are dropped rather than refused; what is registered and
// returned is only what this server does. Duplicates are kept for Validate
// to refuse.
func known(list []string, supported ...string) []string {
	var out []string // nil when nothing is kept, as for an empty list
	for _, v := range list {
		if slices.Contains(supported, v) {
			out = append(out, v)
		}
	}
	return out
}

// decodeObject splits a JSON object into its members, refusing anything that
// is not exactly one JSON object, and duplicate members.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(body) {
		return nil, metaErr("the request body is not valid UTF-8")
	}
	trimmed := bytes.Trim(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, metaErr("the request body is empty; expected a JSON object")
	}
	if trimmed[0] != '{' {
		return nil, metaErr("the request body must be a JSON object, not %s", jsonKind(trimmed))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	syntax := func(err error) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return metaErr("the request body is not valid JSON: unexpected end of input")
		}
		return metaErr("the request body is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntax(err)
	}
	fields := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntax(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, metaErr("the request body is not valid JSON: expected a member name")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntax(err)
		}
		if _, dup := fields[key]; dup {
			return nil, metaErr("member %q appears more than once", key)
		}
		fields[key] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntax(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, metaErr("the request body has data after the JSON object")
	}
	return fields, nil
}

// jsonKind names the type of a JSON value for error messages.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// stringField returns the string member name; absent and null give "".
func stringField(fields map[string]json.RawMessage, name string) (string, error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return "", nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", metaErr("%s must be a string, not %s", name, jsonKind(raw))
	}
	return s, nil
}

// stringArray returns the array-of-strings member name; present is false for
// an absent or null member. An empty array gives nil with present true.
func stringArray(fields map[string]json.RawMessage, name, code string) (vals []string, present bool, err error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return nil, false, nil
	}
	var elems []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
		return nil, true, newErr(code, "%s must be an array of strings, not %s", name, jsonKind(raw))
	}
	for i, e := range elems {
		var s string
		if e[0] != '"' || json.Unmarshal(e, &s) != nil {
			return nil, true, newErr(code, "%s[%d] must be a string, not %s", name, i, jsonKind(e))
		}
		vals = append(vals, s)
	}
	return vals, true, nil
}

// MarshalJSON renders the registered metadata in RFC 7591 form (snake_case,
// localised members flattened back, empty members omitted). response_types
// is always rendered, as [] when empty, because RFC 7591 reads an absent
// response_types as ["code"].
func (m Metadata) MarshalJSON() ([]byte, error) {
	out := make(map[string]any)
	str := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	arr := func(k string, v []string) {
		if len(v) > 0 {
			out[k] = v
		}
	}
	arr("redirect_uris", m.RedirectURIs)
	str("token_endpoint_auth_method", m.TokenEndpointAuthMethod)
	arr("grant_types", m.GrantTypes)
	if len(m.ResponseTypes) > 0 {
		out["response_types"] = m.ResponseTypes
	} else {
		out["response_types"] = []string{}
	}
	str("application_type", m.ApplicationType)
	str("client_name", m.ClientName)
	str("client_uri", m.ClientURI)
	str("logo_uri", m.LogoURI)
	str("tos_uri", m.TOSURI)
	str("policy_uri", m.PolicyURI)
	arr("contacts", m.Contacts)
	keys := make([]string, 0, len(m.Localized))
	for k := range m.Localized {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if base, _, ok := strings.Cut(k, "#"); !ok || !localizable[base] {
			return nil, fmt.Errorf("clientmeta: %q is not a localised member", k)
		}
		str(k, m.Localized[k])
	}
	return json.Marshal(out)
}
