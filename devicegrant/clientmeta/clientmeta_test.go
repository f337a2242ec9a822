package clientmeta

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

type kv = map[string]any

type deleteT struct{}

// del removes a member from the base request in web and native.
var del deleteT

func build(base, extra kv) string {
	m := make(kv, len(base)+len(extra))
	for k, v := range base {
		m[k] = v
	}
	for k, v := range extra {
		if v == del {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// web is a valid public web client request with extra applied.
func web(extra kv) string {
	return build(kv{
		"client_uri":                 "https://example.com/",
		"redirect_uris":              []string{"https://example.com/cb"},
		"token_endpoint_auth_method": "none",
	}, extra)
}

// native is a valid public native client request with extra applied.
func native(extra kv) string {
	return build(kv{
		"application_type":           "native",
		"client_uri":                 "https://app.example.com/",
		"redirect_uris":              []string{"com.example.app:/cb"},
		"token_endpoint_auth_method": "none",
	}, extra)
}

func uris(u ...string) []string { return u }

func many(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

const (
	meta  = CodeInvalidClientMetadata
	redir = CodeInvalidRedirectURI
)

var deviceGrants = []string{GrantDeviceCode, GrantRefreshToken}

type parseCase struct {
	name string
	body string
	code string // "" when the body is valid
	want string // substring of the description
}

var parseCases = []parseCase{
	// P-DCR-1: request shape, types, unknown members.
	{"P-DCR-1 minimal public web client", web(nil), "", ""},
	{"P-DCR-1 confidential web client", web(kv{"token_endpoint_auth_method": del}), "", ""},
	{"P-DCR-1 unknown members dropped", web(kv{"jwks_uri": "https://evil.test/", "software_id": 3, "scope": "openid", "redirect_uris#fr": "x", "foo#bar": 1}), "", ""},
	{"P-DCR-1 null members are absent", web(kv{"logo_uri": nil, "client_name": nil, "grant_types": nil, "response_types": nil, "contacts": nil}), "", ""},
	{"P-DCR-1 empty optional strings are absent", web(kv{"logo_uri": "", "client_name": "", "application_type": ""}), "", ""},
	{"P-DCR-1 bad JSON", `{"client_uri":`, meta, "not valid JSON"},
	{"P-DCR-1 bad JSON syntax", `{"client_uri" "x"}`, meta, "not valid JSON"},
	{"P-DCR-1 body is an array", `[{"client_uri":"https://example.com/"}]`, meta, "must be a JSON object, not an array"},
	{"P-DCR-1 body is a string", `"hello"`, meta, "must be a JSON object, not a string"},
	{"P-DCR-1 body is null", `null`, meta, "must be a JSON object, not null"},
	{"P-DCR-1 empty body", ``, meta, "empty"},
	{"P-DCR-1 whitespace body", " \n\t", meta, "empty"},
	{"P-DCR-1 trailing data", web(nil) + `{}`, meta, "after the JSON object"},
	{"P-DCR-1 trailing garbage", web(nil) + ` x`, meta, "after the JSON object"},
	{"P-DCR-1 invalid UTF-8", "{\"client_name\":\"\xff\"}", meta, "UTF-8"},
	{"P-DCR-1 duplicate member", `{"client_uri":"https://evil.test/","client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"]}`, meta, `"client_uri" appears more than once`},
	{"P-DCR-1 client_uri is a number", web(kv{"client_uri": 42}), meta, "client_uri must be a string, not a number"},
	{"P-DCR-1 application_type is a boolean", web(kv{"application_type": true}), meta, "application_type must be a string, not a boolean"},
	{"P-DCR-1 client_name is an object", web(kv{"client_name": kv{"en": "x"}}), meta, "client_name must be a string, not an object"},
	{"P-DCR-1 redirect_uris is a string", web(kv{"redirect_uris": "https://example.com/cb"}), redir, "redirect_uris must be an array of strings, not a string"},
	{"P-DCR-1 redirect_uris element is a number", web(kv{"redirect_uris": []any{"https://example.com/cb", 7}}), redir, "redirect_uris[1] must be a string, not a number"},
	{"P-DCR-1 grant_types is an object", web(kv{"grant_types": kv{}}), meta, "grant_types must be an array of strings, not an object"},
	{"P-DCR-1 response_types element is null", web(kv{"response_types": []any{nil}}), meta, "response_types[0] must be a string, not null"},
	{"P-DCR-1 contacts element is a number", web(kv{"contacts": []any{1}}), meta, "contacts[0] must be a string, not a number"},
	{"P-DCR-1 localised member is a number", web(kv{"client_name": "X", "client_name#fr": 1}), meta, "client_name#fr must be a string, not a number"},

	// P-DCR-2: client_uri, logo_uri, tos_uri, policy_uri.
	{"P-DCR-2 client_uri missing", web(kv{"client_uri": del}), meta, "client_uri is required"},
	{"P-DCR-2 client_uri empty", web(kv{"client_uri": ""}), meta, "client_uri is required"},
	{"P-DCR-2 client_uri with path and query", web(kv{"client_uri": "https://example.com/app?x=1"}), "", ""},
	{"P-DCR-2 client_uri without path", web(kv{"client_uri": "https://example.com"}), "", ""},
	{"P-DCR-2 client_uri under a two-label ICANN suffix", web(kv{"client_uri": "https://example.co.uk/", "redirect_uris": uris("https://example.co.uk/cb")}), "", ""},
	{"P-DCR-2 client_uri under a private suffix", web(kv{"client_uri": "https://alice.github.io/", "redirect_uris": uris("https://alice.github.io/cb")}), "", ""},
	{"P-DCR-2 client_uri upper-case host", web(kv{"client_uri": "https://EXAMPLE.com/"}), "", ""},
	{"P-DCR-2 client_uri http", web(kv{"client_uri": "http://example.com/"}), meta, "client_uri must use the https scheme"},
	{"P-DCR-2 client_uri relative", web(kv{"client_uri": "/app"}), meta, "client_uri must use the https scheme"},
	{"P-DCR-2 client_uri opaque", web(kv{"client_uri": "https:example.com"}), meta, "absolute https URI with a host"},
	{"P-DCR-2 client_uri without host", web(kv{"client_uri": "https:///path"}), meta, "absolute https URI with a host"},
	{"P-DCR-2 client_uri userinfo", web(kv{"client_uri": "https://user@example.com/"}), meta, "user information"},
	{"P-DCR-2 client_uri fragment", web(kv{"client_uri": "https://example.com/#x"}), meta, "fragment"},
	{"P-DCR-2 client_uri empty fragment", web(kv{"client_uri": "https://example.com/#"}), meta, "fragment"},
	{"P-DCR-2 client_uri IPv4 literal", web(kv{"client_uri": "https://93.184.216.34/"}), meta, "IP address"},
	{"P-DCR-2 client_uri IPv6 literal", web(kv{"client_uri": "https://[2001:db8::1]/"}), meta, "IP address"},
	{"P-DCR-2 client_uri short IPv4 form", web(kv{"client_uri": "https://127.1/"}), meta, "looks like an IP address"},
	{"P-DCR-2 client_uri localhost", web(kv{"client_uri": "https://localhost/"}), meta, "loopback"},
	{"P-DCR-2 client_uri *.localhost", web(kv{"client_uri": "https://app.localhost/"}), meta, "loopback"},
	{"P-DCR-2 client_uri loopback IP", web(kv{"client_uri": "https://127.0.0.1/"}), meta, "IP address"},
	{"P-DCR-2 client_uri ICANN public suffix", web(kv{"client_uri": "https://co.uk/"}), meta, "public suffix"},
	{"P-DCR-2 client_uri TLD", web(kv{"client_uri": "https://com/"}), meta, "public suffix"},
	{"P-DCR-2 client_uri private public suffix", web(kv{"client_uri": "https://github.io/"}), meta, "public suffix"},
	{"P-DCR-2 client_uri single label", web(kv{"client_uri": "https://intranet/"}), meta, "public suffix"},
	{"P-DCR-2 client_uri port", web(kv{"client_uri": "https://example.com:8443/"}), meta, "port"},
	{"P-DCR-2 client_uri default port spelt out", web(kv{"client_uri": "https://example.com:443/"}), meta, "port"},
	{"P-DCR-2 client_uri empty port", web(kv{"client_uri": "https://example.com:/"}), meta, "port"},
	{"P-DCR-2 client_uri trailing dot", web(kv{"client_uri": "https://example.com./"}), meta, "not a valid DNS name"},
	{"P-DCR-2 client_uri underscore host", web(kv{"client_uri": "https://ex_ample.com/"}), meta, "not a valid DNS name"},
	{"P-DCR-2 client_uri percent-encoded host", web(kv{"client_uri": "https://ex%61mple.com/"}), meta, "not a valid URI"},
	{"P-DCR-2 client_uri non-ASCII host", web(kv{"client_uri": "https://bücher.example/"}), meta, "non-ASCII"},
	{"P-DCR-2 client_uri space", web(kv{"client_uri": "https://example.com/a b"}), meta, "space"},
	{"P-DCR-2 client_uri backslash", web(kv{"client_uri": `https://evil.test\@example.com/`}), meta, "backslash"},
	{"P-DCR-2 client_uri too long", web(kv{"client_uri": "https://example.com/" + strings.Repeat("a", MaxURILength)}), meta, "bytes long"},
	{"P-DCR-2 logo_uri on client host", web(kv{"logo_uri": "https://example.com/logo.png"}), "", ""},
	{"P-DCR-2 logo_uri on subdomain", web(kv{"logo_uri": "https://cdn.example.com/logo.png"}), "", ""},
	{"P-DCR-2 tos_uri and policy_uri on client host", web(kv{"tos_uri": "https://example.com/tos", "policy_uri": "https://legal.example.com/privacy"}), "", ""},
	{"P-DCR-2 logo_uri on another host", web(kv{"logo_uri": "https://evil.test/logo.png"}), meta, `logo_uri host "evil.test" is neither the client_uri host`},
	{"P-DCR-2 logo_uri on a look-alike host", web(kv{"logo_uri": "https://evilexample.com/logo.png"}), meta, "neither the client_uri host"},
	{"P-DCR-2 tos_uri on parent domain", web(kv{"client_uri": "https://app.example.com/", "redirect_uris": uris("https://app.example.com/cb"), "tos_uri": "https://example.com/tos"}), meta, "tos_uri host"},
	{"P-DCR-2 tos_uri http", web(kv{"tos_uri": "http://example.com/tos"}), meta, "tos_uri must use the https scheme"},
	{"P-DCR-2 policy_uri userinfo trick", web(kv{"policy_uri": "https://example.com@evil.test/"}), meta, "user information"},
	{"P-DCR-2 policy_uri fragment", web(kv{"policy_uri": "https://example.com/p#top"}), meta, "fragment"},
	{"P-DCR-2 logo_uri port", web(kv{"logo_uri": "https://example.com:8080/l.png"}), meta, "port"},

	// P-DCR-3: localised members.
	{"P-DCR-3 localised client_name and tos_uri", web(kv{"client_name": "App", "client_name#fr": "Appli", "tos_uri": "https://example.com/tos", "tos_uri#en-GB": "https://example.com/tos/en-gb"}), "", ""},
	{"P-DCR-3 localised client_uri on subdomain", web(kv{"client_uri#de": "https://de.example.com/"}), "", ""},
	{"P-DCR-3 localised logo and policy", web(kv{"logo_uri": "https://example.com/l.png", "logo_uri#zh-Hant-TW": "https://example.com/l-tw.png", "policy_uri": "https://example.com/p", "policy_uri#sr-Latn": "https://example.com/p-sr"}), "", ""},
	{"P-DCR-3 empty localised value is absent", web(kv{"client_name#fr": ""}), "", ""},
	{"P-DCR-3 localised client_name without plain", web(kv{"client_name#fr": "Appli"}), meta, `needs its plain variant`},
	{"P-DCR-3 localised tos_uri without plain", web(kv{"tos_uri#en": "https://example.com/tos"}), meta, `"tos_uri#en" is given without "tos_uri"`},
	{"P-DCR-3 language tag too short", web(kv{"client_name": "App", "client_name#f": "x"}), meta, "invalid language tag"},
	{"P-DCR-3 language tag with underscore", web(kv{"client_name": "App", "client_name#en_GB": "x"}), meta, "invalid language tag"},
	{"P-DCR-3 empty language tag", web(kv{"client_name": "App", "client_name#": "x"}), meta, "invalid language tag"},
	{"P-DCR-3 language tag with second hash", web(kv{"client_name": "App", "client_name#fr#x": "x"}), meta, "invalid language tag"},
	{"P-DCR-3 language tag subtag too long", web(kv{"client_name": "App", "client_name#en-abcdefghi": "x"}), meta, "invalid language tag"},
	{"P-DCR-3 language tags differing only in case", web(kv{"client_name": "App", "client_name#fr": "a", "client_name#FR": "b"}), meta, "same localised member"},
	{"P-DCR-3 localised tos_uri on another host", web(kv{"tos_uri": "https://example.com/tos", "tos_uri#fr": "https://evil.test/tos"}), meta, `tos_uri#fr host "evil.test" is neither`},
	{"P-DCR-3 localised logo_uri over http", web(kv{"logo_uri": "https://example.com/l.png", "logo_uri#de": "http://example.com/l.png"}), meta, "logo_uri#de must use the https scheme"},
	{"P-DCR-3 localised client_uri on another domain", web(kv{"client_uri#fr": "https://evil.test/"}), meta, `client_uri#fr host "evil.test" is neither`},
	{"P-DCR-3 localised client_uri public suffix", web(kv{"client_uri#fr": "https://github.io/"}), meta, "public suffix"},
	{"P-DCR-3 too many localised members", web(tooManyLocalized()), meta, "at most 64"},
	{"P-DCR-3 client_name with control character", web(kv{"client_name": "App\nEvil"}), meta, "control character"},
	{"P-DCR-3 client_name with bidi override", web(kv{"client_name": "App\u202eliveE"}), meta, "bidirectional"},
	{"P-DCR-3 localised client_name with bidi isolate", web(kv{"client_name": "App", "client_name#ar": "\u2067x"}), meta, "client_name#ar contains the bidirectional"},
	{"P-DCR-3 client_name blank", web(kv{"client_name": "   "}), meta, "client_name is blank"},
	{"P-DCR-3 client_name too long", web(kv{"client_name": strings.Repeat("é", MaxClientNameLength+1)}), meta, "characters long"},
	{"P-DCR-3 client_name at the limit", web(kv{"client_name": strings.Repeat("é", MaxClientNameLength)}), "", ""},

	// P-DCR-4: application_type, token_endpoint_auth_method, grant and response types.
	{"P-DCR-4 application_type native", native(nil), "", ""},
	{"P-DCR-4 application_type unknown", web(kv{"application_type": "browser"}), meta, `application_type "browser" is not supported`},
	{"P-DCR-4 client_secret_post", web(kv{"token_endpoint_auth_method": "client_secret_post"}), "", ""},
	{"P-DCR-4 private_key_jwt unsupported", web(kv{"token_endpoint_auth_method": "private_key_jwt"}), meta, `token_endpoint_auth_method "private_key_jwt" is not supported`},
	{"P-DCR-4 auth method is case-sensitive", web(kv{"token_endpoint_auth_method": "None"}), meta, "not supported"},
	{"P-DCR-4 device-only client without redirect_uris", web(kv{"grant_types": deviceGrants, "redirect_uris": del}), "", ""},
	{"P-DCR-4 device-only native client", native(kv{"grant_types": deviceGrants, "redirect_uris": del}), "", ""},
	{"P-DCR-4 device_code alone", web(kv{"grant_types": uris(GrantDeviceCode), "redirect_uris": del}), "", ""},
	{"P-DCR-4 device-only client with empty response_types", web(kv{"grant_types": deviceGrants, "redirect_uris": del, "response_types": []string{}}), "", ""},
	{"P-DCR-4 device-only client keeps valid redirect_uris", web(kv{"grant_types": deviceGrants}), "", ""},
	{"P-DCR-4 device-only client with invalid redirect_uris", web(kv{"grant_types": deviceGrants, "redirect_uris": uris("https://evil.test/cb")}), redir, "neither"},
	{"P-DCR-4 all three grant types", web(kv{"grant_types": uris(GrantAuthorizationCode, GrantRefreshToken, GrantDeviceCode)}), "", ""},
	{"P-DCR-4 authorization_code and refresh_token", web(kv{"grant_types": uris(GrantAuthorizationCode, GrantRefreshToken), "response_types": uris("code")}), "", ""},
	{"P-DCR-4 only unsupported grants", web(kv{"grant_types": uris("implicit")}), meta, `none of the grant types ["implicit"] is supported`},
	{"P-DCR-4 unknown grant beside a known one is ignored", web(kv{"grant_types": uris(GrantAuthorizationCode, "client_credentials")}), "", ""},
	{"P-DCR-4 password grant alone", web(kv{"grant_types": uris("password")}), meta, "none of the grant types"},
	{"P-DCR-4 empty grant_types", web(kv{"grant_types": []string{}}), meta, "grant_types is empty"},
	{"P-DCR-4 duplicate grant type", web(kv{"grant_types": uris(GrantAuthorizationCode, GrantAuthorizationCode)}), meta, "listed more than once"},
	{"P-DCR-4 refresh_token alone", web(kv{"grant_types": uris(GrantRefreshToken), "redirect_uris": del}), meta, "needs a grant that issues refresh tokens"},
	{"P-DCR-4 response_types token is ignored", web(kv{"response_types": uris("token")}), "", ""},
	{"P-DCR-4 response_types hybrid is ignored", web(kv{"response_types": uris("code id_token")}), "", ""},
	{"P-DCR-4 response_types code without its grant", web(kv{"grant_types": deviceGrants, "redirect_uris": del, "response_types": uris("code", "token")}), meta, `needs grant type "authorization_code"`},
	{"P-DCR-4 response_types code twice", web(kv{"response_types": uris("code", "code")}), meta, "listed more than once"},
	{"P-DCR-4 response_types empty with authorization_code gets the default", web(kv{"response_types": []string{}}), "", ""},
	{"P-DCR-4 response_types code without authorization_code", web(kv{"grant_types": deviceGrants, "response_types": uris("code")}), meta, `needs grant type "authorization_code"`},

	// P-DCR-5: redirect URIs, web clients.
	{"P-DCR-5 authorization_code without redirect_uris", web(kv{"redirect_uris": del}), redir, "redirect_uris is required"},
	{"P-DCR-5 authorization_code with empty redirect_uris", web(kv{"redirect_uris": []string{}}), redir, "redirect_uris is required"},
	{"P-DCR-5 web redirect on subdomain with query", web(kv{"redirect_uris": uris("https://app.example.com/cb?x=1")}), "", ""},
	{"P-DCR-5 web several redirect URIs", web(kv{"redirect_uris": uris("https://example.com/a", "https://example.com/b")}), "", ""},
	{"P-DCR-5 web redirect at the count limit", web(kv{"redirect_uris": many(MaxRedirectURIs, func(i int) string { return fmt.Sprintf("https://example.com/%d", i) })}), "", ""},
	{"P-DCR-5 web redirect on another host", web(kv{"redirect_uris": uris("https://evil.test/cb")}), redir, `redirect_uris[0] host "evil.test" is neither`},
	{"P-DCR-5 web redirect on look-alike host", web(kv{"redirect_uris": uris("https://example.com/cb", "https://notexample.com/cb")}), redir, "redirect_uris[1]"},
	{"P-DCR-5 web redirect on parent domain", web(kv{"client_uri": "https://app.example.com/", "redirect_uris": uris("https://example.com/cb")}), redir, "neither"},
	{"P-DCR-5 web redirect fragment", web(kv{"redirect_uris": uris("https://example.com/cb#x")}), redir, "fragment"},
	{"P-DCR-5 web redirect empty fragment", web(kv{"redirect_uris": uris("https://example.com/cb#")}), redir, "fragment"},
	{"P-DCR-5 web redirect userinfo", web(kv{"redirect_uris": uris("https://user:pw@example.com/cb")}), redir, "user information"},
	{"P-DCR-5 web redirect port", web(kv{"redirect_uris": uris("https://example.com:8443/cb")}), "", ""},
	{"P-DCR-5 web redirect port zero", web(kv{"redirect_uris": uris("https://example.com:0/cb")}), redir, "not a port number"},
	{"P-DCR-5 web redirect port too large", web(kv{"redirect_uris": uris("https://example.com:65536/cb")}), redir, "not a port number"},
	{"P-DCR-5 web redirect empty port", web(kv{"redirect_uris": uris("https://example.com:/cb")}), redir, "empty port"},
	{"P-DCR-5 web redirect IP", web(kv{"redirect_uris": uris("https://93.184.216.34/cb")}), redir, "IP address"},
	{"P-DCR-5 web redirect http", web(kv{"redirect_uris": uris("http://example.com/cb")}), redir, "web clients must use https"},
	{"P-DCR-5 web redirect loopback", web(kv{"redirect_uris": uris("http://127.0.0.1/cb")}), redir, "web clients must use https"},
	{"P-DCR-5 web redirect private-use scheme", web(kv{"redirect_uris": uris("com.example.app:/cb")}), redir, "needs application_type native"},
	{"P-DCR-5 web redirect relative", web(kv{"redirect_uris": uris("/cb")}), redir, "absolute URI"},
	{"P-DCR-5 web redirect empty", web(kv{"redirect_uris": uris("")}), redir, "redirect_uris[0] is empty"},
	{"P-DCR-5 web redirect not a URI", web(kv{"redirect_uris": uris("https://exa%zzmple.com/")}), redir, "not a valid URI"},
	{"P-DCR-5 web redirect duplicate", web(kv{"redirect_uris": uris("https://example.com/cb", "https://example.com/cb")}), redir, "listed more than once"},
	{"P-DCR-5 too many redirect URIs", web(kv{"redirect_uris": many(MaxRedirectURIs+1, func(i int) string { return fmt.Sprintf("https://example.com/%d", i) })}), redir, "at most 20"},
	{"P-DCR-5 redirect URI too long", web(kv{"redirect_uris": uris("https://example.com/" + strings.Repeat("a", MaxURILength))}), redir, "bytes long"},
	{"P-DCR-5 redirect URI with space", web(kv{"redirect_uris": uris("https://example.com/c b")}), redir, "space"},

	// P-DCR-5: redirect URIs, native clients.
	{"P-DCR-5 native private-use scheme of client host", native(nil), "", ""},
	{"P-DCR-5 native private-use scheme of subdomain of client host", native(kv{"client_uri": "https://example.com/"}), "", ""},
	{"P-DCR-5 native private-use scheme of parent domain", native(kv{"redirect_uris": uris("com.example:/cb")}), redir, "does not start with com.example.app"},
	{"P-DCR-5 native private-use scheme with more labels", native(kv{"redirect_uris": uris("com.example.app.beta:/cb")}), "", ""},
	{"P-DCR-5 native private-use scheme with nothing after it", native(kv{"redirect_uris": uris("com.example.app:")}), redir, "nothing after the scheme"},
	{"P-DCR-5 native private-use scheme in upper case", native(kv{"redirect_uris": uris("Com.Example.App:/cb")}), "", ""},
	{"P-DCR-5 native private-use scheme under private suffix", native(kv{"client_uri": "https://alice.github.io/", "redirect_uris": uris("io.github.alice:/cb")}), "", ""},
	{"P-DCR-5 native private-use scheme with authority", native(kv{"redirect_uris": uris("com.example.app://cb")}), redir, "must not have an authority"},
	{"P-DCR-5 native private-use scheme with empty authority", native(kv{"redirect_uris": uris("com.example.app:///cb")}), redir, "must not have an authority"},
	{"P-DCR-5 native private-use scheme without slash", native(kv{"redirect_uris": uris("com.example.app:cb")}), "", ""},
	{"P-DCR-5 native private-use scheme single label", native(kv{"redirect_uris": uris("example:/cb")}), redir, `scheme "example" does not start with com.example.app`},
	{"P-DCR-5 native private-use scheme of TLD", native(kv{"redirect_uris": uris("com:/cb")}), redir, "does not start with"},
	{"P-DCR-5 native private-use scheme of ICANN suffix", native(kv{"client_uri": "https://example.co.uk/", "redirect_uris": uris("uk.co:/cb")}), redir, "does not start with"},
	{"P-DCR-5 native private-use scheme of private suffix", native(kv{"client_uri": "https://alice.github.io/", "redirect_uris": uris("io.github:/cb")}), redir, "does not start with"},
	{"P-DCR-5 native private-use scheme of sibling", native(kv{"redirect_uris": uris("com.example.other:/cb")}), redir, "does not start with"},
	{"P-DCR-5 native private-use scheme of other domain", native(kv{"redirect_uris": uris("com.evil.app:/cb")}), redir, "does not start with"},
	{"P-DCR-5 native private-use scheme not reversed", native(kv{"redirect_uris": uris("app.example.com:/cb")}), redir, "does not start with"},
	{"P-DCR-5 native private-use scheme with plus", native(kv{"redirect_uris": uris("com.example+app:/cb")}), redir, "not a reverse domain name"},
	{"P-DCR-5 native private-use scheme with empty label", native(kv{"redirect_uris": uris("com..example:/cb")}), redir, "not a reverse domain name"},
	{"P-DCR-5 native private-use scheme fragment", native(kv{"redirect_uris": uris("com.example.app:/cb#x")}), redir, "fragment"},
	{"P-DCR-5 native javascript scheme", native(kv{"redirect_uris": uris("javascript:/alert(1)")}), redir, "does not start with"},
	{"P-DCR-5 native loopback IPv4", native(kv{"redirect_uris": uris("http://127.0.0.1/cb")}), "", ""},
	{"P-DCR-5 native loopback IPv6", native(kv{"redirect_uris": uris("http://[::1]/cb")}), "", ""},
	{"P-DCR-5 native loopback localhost", native(kv{"redirect_uris": uris("http://localhost/cb")}), "", ""},
	{"P-DCR-5 native loopback without path", native(kv{"redirect_uris": uris("http://127.0.0.1")}), "", ""},
	{"P-DCR-5 native loopback with query", native(kv{"redirect_uris": uris("http://127.0.0.1?x=1")}), "", ""},
	{"P-DCR-5 native loopback with port", native(kv{"redirect_uris": uris("http://127.0.0.1:8080/cb")}), redir, "without a port"},
	{"P-DCR-5 native loopback IPv6 with port", native(kv{"redirect_uris": uris("http://[::1]:8080/cb")}), redir, "without a port"},
	{"P-DCR-5 native localhost with empty port", native(kv{"redirect_uris": uris("http://localhost:/cb")}), redir, "without a port"},
	{"P-DCR-5 native https localhost", native(kv{"redirect_uris": uris("https://localhost/cb")}), redir, "https loopback redirect URIs are not allowed"},
	{"P-DCR-5 native https 127.0.0.1", native(kv{"redirect_uris": uris("https://127.0.0.1/cb")}), redir, "https loopback"},
	{"P-DCR-5 native http non-loopback", native(kv{"redirect_uris": uris("http://example.com/cb")}), redir, "loopback host"},
	{"P-DCR-5 native http other loopback address", native(kv{"redirect_uris": uris("http://127.0.0.2/cb")}), redir, "loopback host"},
	{"P-DCR-5 native http upper-case localhost", native(kv{"redirect_uris": uris("http://LOCALHOST/cb")}), redir, "lower case"},
	{"P-DCR-5 native http localhost prefix trick", native(kv{"redirect_uris": uris("http://localhost.evil.test/cb")}), redir, "loopback host"},
	{"P-DCR-5 native http loopback userinfo trick", native(kv{"redirect_uris": uris("http://127.0.0.1@evil.test/cb")}), redir, "user information"},
	{"P-DCR-5 native loopback fragment", native(kv{"redirect_uris": uris("http://127.0.0.1/cb#x")}), redir, "fragment"},
	{"P-DCR-5 native claimed https on client host", native(kv{"redirect_uris": uris("https://app.example.com/cb")}), "", ""},
	{"P-DCR-5 native claimed https on another host", native(kv{"redirect_uris": uris("https://evil.test/cb")}), redir, "neither"},
	{"P-DCR-5 native mixed redirect kinds", native(kv{"redirect_uris": uris("com.example.app:/cb", "http://[::1]/cb", "https://app.example.com/cb")}), "", ""},

	// Contacts.
	{"P-DCR-1 contacts", web(kv{"contacts": uris("admin@example.com", "security@example.com")}), "", ""},
	{"P-DCR-1 contacts empty entry", web(kv{"contacts": uris("")}), meta, "contacts[0] is empty"},
	{"P-DCR-1 contacts too long", web(kv{"contacts": uris(strings.Repeat("a", MaxContactLength+1))}), meta, "bytes long"},
	{"P-DCR-1 contacts control character", web(kv{"contacts": uris("a@example.com\r\nBcc: x")}), meta, "control character"},
	{"P-DCR-1 too many contacts", web(kv{"contacts": many(MaxContacts+1, func(i int) string { return fmt.Sprintf("a%d@example.com", i) })}), meta, "at most 20"},
}

// tooManyLocalized returns one localised member more than MaxLocalized.
func tooManyLocalized() kv {
	extra := kv{"client_name": "App"}
	for i := 0; i <= MaxLocalized; i++ {
		extra[fmt.Sprintf("client_name#x-%d", i)] = "x" // bad tag, but the count is checked first
	}
	return extra
}

func TestParse(t *testing.T) {
	seen := make(map[string]bool)
	for _, tc := range parseCases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			if !strings.HasPrefix(tc.name, "P-DCR-") {
				t.Fatalf("case name %q does not cite a rule", tc.name)
			}
			m, err := Parse([]byte(tc.body))
			if tc.code == "" {
				if err != nil {
					t.Fatalf("Parse(%s) = %v, want success", tc.body, err)
				}
				if err := m.Validate(); err != nil {
					t.Fatalf("parsed metadata does not re-validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%s) succeeded, want %s containing %q", tc.body, tc.code, tc.want)
			}
			if m != nil {
				t.Errorf("Parse returned metadata along with an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Code != tc.code {
				t.Errorf("code = %q, want %q (%s)", e.Code, tc.code, e.Description)
			}
			if strings.TrimSpace(e.Description) == "" {
				t.Fatalf("empty description")
			}
			if !strings.Contains(e.Description, tc.want) {
				t.Errorf("description %q does not contain %q", e.Description, tc.want)
			}
			if !strings.Contains(e.Error(), e.Code) || !strings.Contains(e.Error(), e.Description) {
				t.Errorf("Error() = %q lacks code or description", e.Error())
			}
		})
	}
}

func TestParseWrapsJSONError(t *testing.T) {
	_, err := Parse([]byte(`{"client_uri" 1}`))
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error %v does not wrap *json.SyntaxError", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != meta {
		t.Fatalf("error %v is not an invalid_client_metadata *Error", err)
	}
}

func TestParseDefaults(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Metadata
	}{
		{"P-DCR-4 defaults for a bare web client", `{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"]}`, Metadata{
			RedirectURIs:            uris("https://example.com/cb"),
			TokenEndpointAuthMethod: AuthClientSecretBasic,
			GrantTypes:              uris(GrantAuthorizationCode),
			ResponseTypes:           uris(ResponseTypeCode),
			ApplicationType:         ApplicationTypeWeb,
			ClientURI:               "https://example.com/",
		}},
		{"P-DCR-4 device-only client has no response types", `{"client_uri":"https://example.com/","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"],"token_endpoint_auth_method":"none","application_type":"native"}`, Metadata{
			TokenEndpointAuthMethod: AuthNone,
			GrantTypes:              deviceGrants,
			ApplicationType:         ApplicationTypeNative,
			ClientURI:               "https://example.com/",
		}},
		{"P-DCR-1 empty arrays become nil", `{"client_uri":"https://example.com/","grant_types":["urn:ietf:params:oauth:grant-type:device_code"],"response_types":[],"redirect_uris":[],"contacts":[]}`, Metadata{
			TokenEndpointAuthMethod: AuthClientSecretBasic,
			GrantTypes:              uris(GrantDeviceCode),
			ApplicationType:         ApplicationTypeWeb,
			ClientURI:               "https://example.com/",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*m, tc.want) {
				t.Errorf("got  %#v\nwant %#v", *m, tc.want)
			}
		})
	}
}

func TestPublicAndHasGrant(t *testing.T) {
	m, err := Parse([]byte(web(kv{"grant_types": uris(GrantAuthorizationCode, GrantRefreshToken)})))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Public() {
		t.Error("P-DCR-4 client with auth method none is not Public")
	}
	if !m.HasGrant(GrantAuthorizationCode) || !m.HasGrant(GrantRefreshToken) || m.HasGrant(GrantDeviceCode) {
		t.Errorf("P-DCR-7 HasGrant wrong for %v", m.GrantTypes)
	}
	m, err = Parse([]byte(web(kv{"token_endpoint_auth_method": del})))
	if err != nil {
		t.Fatal(err)
	}
	if m.Public() {
		t.Error("P-DCR-4 client with default auth method is Public")
	}
	if m.HasGrant("") {
		t.Error("HasGrant(\"\") is true")
	}
}

func TestValidateDirect(t *testing.T) {
	good := func() *Metadata {
		return &Metadata{
			RedirectURIs:            uris("https://example.com/cb"),
			TokenEndpointAuthMethod: AuthNone,
			GrantTypes:              uris(GrantAuthorizationCode),
			ResponseTypes:           uris(ResponseTypeCode),
			ApplicationType:         ApplicationTypeWeb,
			ClientURI:               "https://example.com/",
		}
	}
	tests := []struct {
		name   string
		mutate func(*Metadata)
		code   string
		want   string
	}{
		{"P-DCR-4 complete metadata", func(*Metadata) {}, "", ""},
		{"P-DCR-4 application_type not defaulted", func(m *Metadata) { m.ApplicationType = "" }, meta, "application_type is missing"},
		{"P-DCR-4 token_endpoint_auth_method not defaulted", func(m *Metadata) { m.TokenEndpointAuthMethod = "" }, meta, "token_endpoint_auth_method is missing"},
		{"P-DCR-4 grant_types not defaulted", func(m *Metadata) { m.GrantTypes = nil }, meta, "grant_types is empty"},
		{"P-DCR-4 response_types not defaulted", func(m *Metadata) { m.ResponseTypes = nil }, meta, "response_types must be"},
		{"P-DCR-3 localised key without tag", func(m *Metadata) { m.Localized = map[string]string{"client_name": "x"} }, meta, "no #language-tag"},
		{"P-DCR-3 localised key of non-localisable member", func(m *Metadata) { m.Localized = map[string]string{"contacts#fr": "x"} }, meta, "cannot be localised"},
		{"P-DCR-3 localised empty value", func(m *Metadata) { m.ClientName = "A"; m.Localized = map[string]string{"client_name#fr": ""} }, meta, "is empty"},
		{"P-DCR-2 client_uri missing", func(m *Metadata) { m.ClientURI = "" }, meta, "client_uri is required"},
		{"P-DCR-5 redirect missing", func(m *Metadata) { m.RedirectURIs = nil }, redir, "redirect_uris is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.mutate(m)
			err := m.Validate()
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Validate() = %v, want *Error", err)
			}
			if e.Code != tc.code || !strings.Contains(e.Description, tc.want) {
				t.Errorf("Validate() = %q %q, want %q containing %q", e.Code, e.Description, tc.code, tc.want)
			}
		})
	}
	var nilMeta *Metadata
	if err := nilMeta.Validate(); err == nil {
		t.Error("nil metadata validated")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			"P-DCR-1 unknown members dropped, defaults filled",
			`{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"],"jwks_uri":"https://example.com/jwks","software_id":"x","scope":"openid","logo_uri":null}`,
			`{"application_type":"web","client_uri":"https://example.com/","grant_types":["authorization_code"],"redirect_uris":["https://example.com/cb"],"response_types":["code"],"token_endpoint_auth_method":"client_secret_basic"}`,
		},
		{
			"P-DCR-3 localised members kept",
			`{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"],"token_endpoint_auth_method":"none","client_name":"App","client_name#fr":"Appli","tos_uri":"https://example.com/tos","tos_uri#en-GB":"https://example.com/tos/gb","policy_uri":"https://example.com/p","logo_uri":"https://cdn.example.com/l.png","contacts":["a@example.com"],"foo#fr":"dropped"}`,
			`{"application_type":"web","client_name":"App","client_name#fr":"Appli","client_uri":"https://example.com/","contacts":["a@example.com"],"grant_types":["authorization_code"],"logo_uri":"https://cdn.example.com/l.png","policy_uri":"https://example.com/p","redirect_uris":["https://example.com/cb"],"response_types":["code"],"token_endpoint_auth_method":"none","tos_uri":"https://example.com/tos","tos_uri#en-GB":"https://example.com/tos/gb"}`,
		},
		{
			"P-DCR-4 device-only client renders empty response_types",
			`{"client_uri":"https://example.com/","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"],"token_endpoint_auth_method":"none","application_type":"native"}`,
			`{"application_type":"native","client_uri":"https://example.com/","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"],"response_types":[],"token_endpoint_auth_method":"none"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("MarshalJSON\n got  %s\n want %s", out, tc.want)
			}
			again, err := Parse(out)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if !reflect.DeepEqual(m, again) {
				t.Errorf("round trip changed metadata\n got  %#v\n want %#v", again, m)
			}
			// The value (not only the pointer) marshals the same way.
			out2, err := json.Marshal(*m)
			if err != nil || string(out2) != string(out) {
				t.Errorf("value MarshalJSON = %s, %v", out2, err)
			}
		})
	}
}

func TestMarshalRejectsBadLocalizedKey(t *testing.T) {
	for _, key := range []string{"client_name", "redirect_uris#fr", "contacts"} {
		m := Metadata{ClientName: "A", Localized: map[string]string{key: "x"}}
		if _, err := json.Marshal(m); err == nil {
			t.Errorf("P-DCR-3 MarshalJSON accepted localised key %q that would overwrite or invent a member", key)
		}
	}
}

func TestRedirectURIMatches(t *testing.T) {
	tests := []struct {
		name       string
		registered []string
		presented  string
		want       bool
	}{
		{"exact https", uris("https://example.com/cb"), "https://example.com/cb", true},
		{"https trailing slash", uris("https://example.com/cb"), "https://example.com/cb/", false},
		{"https path prefix", uris("https://example.com/cb"), "https://example.com/cbx", false},
		{"https path extension", uris("https://example.com/cb"), "https://example.com/cb/../evil", false},
		{"https shorter path", uris("https://example.com/cb"), "https://example.com/c", false},
		{"https added query", uris("https://example.com/cb"), "https://example.com/cb?x=1", false},
		{"https query exact", uris("https://example.com/cb?a=1&b=2"), "https://example.com/cb?a=1&b=2", true},
		{"https query reordered", uris("https://example.com/cb?a=1&b=2"), "https://example.com/cb?b=2&a=1", false},
		{"https added fragment", uris("https://example.com/cb"), "https://example.com/cb#x", false},
		{"https port not wildcarded", uris("https://example.com/cb"), "https://example.com:8443/cb", false},
		{"https case differs", uris("https://example.com/cb"), "https://EXAMPLE.com/cb", false},
		{"https userinfo trick", uris("https://example.com/cb"), "https://example.com@evil.test/cb", false},
		{"second registered URI", uris("https://example.com/a", "https://example.com/b"), "https://example.com/b", true},
		{"empty presented", uris("https://example.com/cb"), "", false},
		{"no registered URIs", nil, "https://example.com/cb", false},
		{"private-use exact", uris("com.example.app:/cb"), "com.example.app:/cb", true},
		{"private-use authority added", uris("com.example.app:/cb"), "com.example.app://cb", false},
		{"loopback IPv4 without port", uris("http://127.0.0.1/cb"), "http://127.0.0.1/cb", true},
		{"loopback IPv4 any port", uris("http://127.0.0.1/cb"), "http://127.0.0.1:51004/cb", true},
		{"loopback IPv4 port 1", uris("http://127.0.0.1/cb"), "http://127.0.0.1:1/cb", true},
		{"loopback IPv4 port 65535", uris("http://127.0.0.1/cb"), "http://127.0.0.1:65535/cb", true},
		{"loopback IPv4 port 65536", uris("http://127.0.0.1/cb"), "http://127.0.0.1:65536/cb", false},
		{"loopback IPv4 port 0", uris("http://127.0.0.1/cb"), "http://127.0.0.1:0/cb", false},
		{"loopback IPv4 port leading zero", uris("http://127.0.0.1/cb"), "http://127.0.0.1:080/cb", false},
		{"loopback IPv4 port too many digits", uris("http://127.0.0.1/cb"), "http://127.0.0.1:0000080/cb", false},
		{"loopback IPv4 empty port", uris("http://127.0.0.1/cb"), "http://127.0.0.1:/cb", false},
		{"loopback IPv4 non-numeric port", uris("http://127.0.0.1/cb"), "http://127.0.0.1:12a/cb", false},
		{"loopback IPv4 port then other path", uris("http://127.0.0.1/cb"), "http://127.0.0.1:1234/cbx", false},
		{"loopback IPv4 port then longer path", uris("http://127.0.0.1/cb"), "http://127.0.0.1:1234/cb/x", false},
		{"loopback IPv4 port then query", uris("http://127.0.0.1/cb"), "http://127.0.0.1:1234/cb?x=1", false},
		{"loopback IPv4 port then fragment", uris("http://127.0.0.1/cb"), "http://127.0.0.1:1234/cb#x", false},
		{"loopback IPv4 port then userinfo trick", uris("http://127.0.0.1/cb"), "http://127.0.0.1:1234@evil.test/cb", false},
		{"loopback IPv4 https presented", uris("http://127.0.0.1/cb"), "https://127.0.0.1:1234/cb", false},
		{"loopback IPv4 vs localhost", uris("http://127.0.0.1/cb"), "http://localhost:1234/cb", false},
		{"loopback localhost vs IPv4", uris("http://localhost/cb"), "http://127.0.0.1:1234/cb", false},
		{"loopback localhost vs IPv6", uris("http://localhost/cb"), "http://[::1]:1234/cb", false},
		{"loopback IPv6 any port", uris("http://[::1]/cb"), "http://[::1]:8080/cb", true},
		{"loopback IPv6 unbracketed", uris("http://[::1]/cb"), "http://::1:8080/cb", false},
		{"loopback localhost any port", uris("http://localhost/cb"), "http://localhost:8080/cb", true},
		{"loopback localhost upper case", uris("http://localhost/cb"), "http://LOCALHOST:8080/cb", false},
		{"loopback query must match", uris("http://localhost/cb?x=1"), "http://localhost:8080/cb?x=1", true},
		{"loopback query differs", uris("http://localhost/cb?x=1"), "http://localhost:8080/cb?x=2", false},
		{"loopback query missing", uris("http://localhost/cb?x=1"), "http://localhost:8080/cb", false},
		{"loopback without path", uris("http://127.0.0.1"), "http://127.0.0.1:80", true},
		{"loopback without path, slash added", uris("http://127.0.0.1"), "http://127.0.0.1:80/", false},
		{"loopback registered with port is exact", uris("http://127.0.0.1:8080/cb"), "http://127.0.0.1:9090/cb", false},
		{"loopback registered with port exact match", uris("http://127.0.0.1:8080/cb"), "http://127.0.0.1:8080/cb", true},
		{"loopback host prefix not loopback", uris("http://localhost.evil.test/cb"), "http://localhost.evil.test:80/cb", false},
		{"loopback 127.0.0.1 prefix of 127.0.0.10", uris("http://127.0.0.1/cb"), "http://127.0.0.10:80/cb", false},
	}
	for _, tc := range tests {
		t.Run("P-DCR-5 "+tc.name, func(t *testing.T) {
			m := &Metadata{RedirectURIs: tc.registered}
			if got := m.RedirectURIMatches(tc.presented); got != tc.want {
				t.Errorf("RedirectURIMatches(%q) with %q = %v, want %v", tc.presented, tc.registered, got, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.body))
	}
	f.Add([]byte(`{"client_uri":"https://a.b.example.com/","application_type":"native","redirect_uris":["http://[::1]","com.example:/x?y","https://b.example.com/z"],"client_name#fr-CA":"x","client_name":"y"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Parse(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Code != meta && e.Code != redir {
				t.Fatalf("unexpected code %q", e.Code)
			}
			if e.Description == "" {
				t.Fatal("empty description")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted metadata does not validate: %v", err)
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed metadata\n got  %#v\n want %#v", again, m)
		}
		for _, r := range m.RedirectURIs {
			if !m.RedirectURIMatches(r) {
				t.Fatalf("registered redirect URI %q does not match itself", r)
			}
		}
	})
}
