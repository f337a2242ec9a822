package clientmeta

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// langTag is a loose BCP 47 shape: a 2–8 letter primary subtag and
// alphanumeric subtags of 1–8 characters (P-DCR-3).
var langTag = regexp.MustCompile(`^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$`)

// Validate applies the rules to already-decoded metadata (defaults
// included): every member must be valid, and the defaults must have been
// filled in (Parse does that). It returns *Error when the metadata is invalid.
func (m *Metadata) Validate() error {
	if m == nil {
		return metaErr("no client metadata")
	}
	switch m.ApplicationType {
	case ApplicationTypeWeb, ApplicationTypeNative:
	case "":
		return metaErr("application_type is missing; expected %q or %q", ApplicationTypeWeb, ApplicationTypeNative)
	default:
		return metaErr("application_type %q is not supported; expected %q or %q", m.ApplicationType, ApplicationTypeWeb, ApplicationTypeNative)
	}
	switch m.TokenEndpointAuthMethod {
	case AuthNone, AuthClientSecretBasic, AuthClientSecretPost:
	case "":
		return metaErr("token_endpoint_auth_method is missing; expected %q, %q or %q", AuthNone, AuthClientSecretBasic, AuthClientSecretPost)
	default:
		return metaErr("token_endpoint_auth_method %q is not supported; expected %q, %q or %q", m.TokenEndpointAuthMethod, AuthNone, AuthClientSecretBasic, AuthClientSecretPost)
	}
	if err := m.validateGrants(); err != nil {
		return err
	}
	if err := m.validateResponseTypes(); err != nil {
		return err
	}
	if m.ClientURI == "" {
		return metaErr("client_uri is required: Matrix clients must say where they come from")
	}
	clientHost, err := checkClientURI("client_uri", m.ClientURI)
	if err != nil {
		return err
	}
	for _, f := range []struct{ name, val string }{
		{"logo_uri", m.LogoURI},
		{"tos_uri", m.TOSURI},
		{"policy_uri", m.PolicyURI},
	} {
		if f.val == "" {
			continue
		}
		if err := checkSiteURI(f.name, f.val, clientHost); err != nil {
			return err
		}
	}
	if m.ClientName != "" {
		if err := checkText("client_name", m.ClientName, MaxClientNameLength); err != nil {
			return err
		}
	}
	if err := m.validateContacts(); err != nil {
		return err
	}
	if err := m.validateLocalized(clientHost); err != nil {
		return err
	}
	return m.validateRedirectURIs(clientHost)
}

func (m *Metadata) validateGrants() error {
	if len(m.GrantTypes) == 0 {
		return metaErr("grant_types is empty; at least one grant type is needed")
	}
	seen := make(map[string]bool, len(m.GrantTypes))
	for _, g := range m.GrantTypes {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken, GrantDeviceCode:
		default:
			return metaErr("grant type %q is not supported; supported grant types are %q, %q and %q", g, GrantAuthorizationCode, GrantRefreshToken, GrantDeviceCode)
		}
		if seen[g] {
			return metaErr("grant type %q is listed more than once", g)
		}
		seen[g] = true
	}
	if seen[GrantRefreshToken] && !seen[GrantAuthorizationCode] && !seen[GrantDeviceCode] {
		return metaErr("grant type %q needs a grant that issues refresh tokens: add %q or %q", GrantRefreshToken, GrantAuthorizationCode, GrantDeviceCode)
	}
	return nil
}

func (m *Metadata) validateResponseTypes() error {
	for i, r := range m.ResponseTypes {
		if r != ResponseTypeCode {
			return metaErr("response type %q is not supported; the only response type is %q", r, ResponseTypeCode)
		}
		if i > 0 {
			return metaErr("response type %q is listed more than once", r)
		}
	}
	hasCode := len(m.ResponseTypes) == 1
	if m.HasGrant(GrantAuthorizationCode) && !hasCode {
		return metaErr("response_types must be [%q] because grant_types includes %q", ResponseTypeCode, GrantAuthorizationCode)
	}
	if !m.HasGrant(GrantAuthorizationCode) && hasCode {
		return metaErr("response type %q needs grant type %q; omit response_types or add the grant", ResponseTypeCode, GrantAuthorizationCode)
	}
	return nil
}

func (m *Metadata) validateContacts() error {
	if len(m.Contacts) > MaxContacts {
		return metaErr("contacts has %d entries; at most %d are accepted", len(m.Contacts), MaxContacts)
	}
	for i, c := range m.Contacts {
		name := "contacts[" + strconv.Itoa(i) + "]"
		if strings.TrimSpace(c) == "" {
			return metaErr("%s is empty", name)
		}
		if len(c) > MaxContactLength {
			return metaErr("%s is %d bytes long; at most %d are accepted", name, len(c), MaxContactLength)
		}
		if err := checkText(name, c, MaxContactLength); err != nil {
			return err
		}
	}
	return nil
}

func (m *Metadata) validateLocalized(clientHost string) error {
	if len(m.Localized) > MaxLocalized {
		return metaErr("%d localised members given; at most %d are accepted", len(m.Localized), MaxLocalized)
	}
	keys := make([]string, 0, len(m.Localized))
	for k := range m.Localized {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seen := make(map[string]string, len(keys))
	for _, key := range keys {
		val := m.Localized[key]
		base, tag, ok := strings.Cut(key, "#")
		if !ok {
			return metaErr("localised member %q has no #language-tag suffix", key)
		}
		if !localizable[base] {
			return metaErr("%q cannot be localised; only client_name, client_uri, logo_uri, tos_uri and policy_uri can", base)
		}
		if !langTag.MatchString(tag) {
			return metaErr("%q has an invalid language tag %q; expected a BCP 47 tag such as \"fr\" or \"en-GB\"", key, tag)
		}
		folded := strings.ToLower(key)
		if other, dup := seen[folded]; dup {
			return metaErr("%q and %q are the same localised member (language tags ignore case)", other, key)
		}
		seen[folded] = key
		if val == "" {
			return metaErr("%q is empty", key)
		}
		var plain string
		switch base {
		case "client_name":
			plain = m.ClientName
		case "client_uri":
			plain = m.ClientURI
		case "logo_uri":
			plain = m.LogoURI
		case "tos_uri":
			plain = m.TOSURI
		case "policy_uri":
			plain = m.PolicyURI
		}
		if plain == "" {
			return metaErr("%q is given without %q; a localised member needs its plain variant", key, base)
		}
		var err error
		switch base {
		case "client_name":
			err = checkText(key, val, MaxClientNameLength)
		case "client_uri":
			if _, err = checkClientURI(key, val); err == nil {
				err = checkSiteURI(key, val, clientHost)
			}
		default:
			err = checkSiteURI(key, val, clientHost)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Metadata) validateRedirectURIs(clientHost string) error {
	if len(m.RedirectURIs) == 0 {
		if m.HasGrant(GrantAuthorizationCode) {
			return redirErr("redirect_uris is required with grant type %q; give at least one redirect URI", GrantAuthorizationCode)
		}
		return nil
	}
	if len(m.RedirectURIs) > MaxRedirectURIs {
		return redirErr("redirect_uris has %d entries; at most %d are accepted", len(m.RedirectURIs), MaxRedirectURIs)
	}
	seen := make(map[string]bool, len(m.RedirectURIs))
	for i, u := range m.RedirectURIs {
		name := "redirect_uris[" + strconv.Itoa(i) + "]"
		if seen[u] {
			return redirErr("%s %q is listed more than once", name, u)
		}
		seen[u] = true
		if err := checkRedirectURI(name, u, m.ApplicationType, clientHost); err != nil {
			return err
		}
	}
	return nil
}

// checkText accepts human-readable text of at most max characters, without
// control characters or bidirectional formatting controls (which could make
// a name display as something else on the consent page).
func checkText(name, s string, max int) error {
	if strings.TrimSpace(s) == "" {
		return metaErr("%s is blank", name)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return metaErr("%s is %d characters long; at most %d are accepted", name, n, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return metaErr("%s contains the control character %U", name, r)
		}
		if isBidiControl(r) {
			return metaErr("%s contains the bidirectional formatting character %U", name, r)
		}
	}
	return nil
}

func isBidiControl(r rune) bool {
	return r == '\u061c' || r == '\u200e' || r == '\u200f' ||
		(r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}
