package clientmeta

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// loopbackHosts are the loopback hosts a native client may use in an http
// redirect URI, spelt exactly as they must be registered (RFC 8252 §7.3).
var loopbackHosts = [...]string{"127.0.0.1", "[::1]", "localhost"}

// checkURIText applies the checks that need no parsing: size, character set
// and the absence of a fragment.
func checkURIText(name, raw, code string) error {
	if raw == "" {
		return newErr(code, "%s is empty", name)
	}
	if len(raw) > MaxURILength {
		return newErr(code, "%s is %d bytes long; at most %d are accepted", name, len(raw), MaxURILength)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f {
			return newErr(code, "%s contains a space, a control or a non-ASCII character at byte %d; percent-encode it", name, i)
		}
	}
	if strings.ContainsRune(raw, '\\') {
		return newErr(code, "%s contains a backslash", name)
	}
	if strings.ContainsRune(raw, '#') {
		return newErr(code, "%s must not contain a fragment (#)", name)
	}
	return nil
}

// rawAuthority returns the authority part of raw as written, or "" when raw
// has none.
func rawAuthority(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return ""
	}
	rest := raw[i+3:]
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// checkHTTPSURI checks an absolute https URI with a DNS host, no userinfo,
// no fragment and, unless allowPort, no port, and returns its lower-cased
// host.
func checkHTTPSURI(name, raw, code string, allowPort bool) (string, error) {
	if err := checkURIText(name, raw, code); err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", newErr(code, "%s is not a valid URI: %w", name, err)
	}
	if u.Scheme != "https" {
		return "", newErr(code, "%s must use the https scheme", name)
	}
	auth := rawAuthority(raw)
	if u.Opaque != "" || u.Host == "" || !strings.HasPrefix(raw[len("https:"):], "//") {
		return "", newErr(code, "%s must be an absolute https URI with a host, such as https://example.com/", name)
	}
	if u.User != nil || strings.ContainsRune(auth, '@') {
		return "", newErr(code, "%s must not contain user information (user@)", name)
	}
	if strings.ContainsRune(auth, '%') {
		return "", newErr(code, "%s must not percent-encode its host", name)
	}
	if strings.HasSuffix(u.Host, ":") {
		return "", newErr(code, "%s has an empty port after the colon", name)
	}
	if p := u.Port(); p != "" && !allowPort {
		return "", newErr(code, "%s must not specify a port; https URIs use the default port", name)
	} else if p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || p[0] == '0' {
			return "", newErr(code, "%s port %q is not a port number from 1 to 65535", name, p)
		}
	}
	host := strings.ToLower(u.Hostname())
	if err := checkHost(name, host, code); err != nil {
		return "", err
	}
	return host, nil
}

// checkHost accepts a lower-case ASCII DNS name that is neither an IP
// literal nor a loopback name.
func checkHost(name, host, code string) error {
	if net.ParseIP(host) != nil {
		return newErr(code, "%s host %q is an IP address; a domain name is required", name, host)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return newErr(code, "%s host %q is a loopback name; a public domain name is required", name, host)
	}
	if !isDNSName(host) {
		return newErr(code, "%s host %q is not a valid DNS name (letters, digits and hyphens; internationalised names in their xn-- form; no trailing dot)", name, host)
	}
	if tld := host[strings.LastIndexByte(host, '.')+1:]; strings.Trim(tld, "0123456789") == "" {
		return newErr(code, "%s host %q looks like an IP address; a domain name is required", name, host)
	}
	return nil
}

// isDNSName reports whether s is a lower-case LDH domain name without a
// trailing dot.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// onSite reports whether host is base or a subdomain of base.
func onSite(host, base string) bool {
	return host == base || strings.HasSuffix(host, "."+base)
}

// isPublicSuffix reports whether domain is listed as a public suffix, in
// the ICANN or the PRIVATE section of the list, or is one under the list's
// default rule (a single label).
func isPublicSuffix(domain string) bool {
	ps, _ := publicsuffix.PublicSuffix(domain)
	return ps == domain
}

// checkClientURI checks client_uri (or a localised variant) and returns its
// host (P-DCR-2).
func checkClientURI(name, raw string) (string, error) {
	host, err := checkHTTPSURI(name, raw, CodeInvalidClientMetadata, false)
	if err != nil {
		return "", err
	}
	if isPublicSuffix(host) {
		return "", metaErr("%s host %q is a public suffix, shared by unrelated owners; use a domain of your own", name, host)
	}
	return host, nil
}

// checkSiteURI checks an https URI that must be on the client_uri host or a
// subdomain of it (P-DCR-2).
func checkSiteURI(name, raw, clientHost string) error {
	host, err := checkHTTPSURI(name, raw, CodeInvalidClientMetadata, false)
	if err != nil {
		return err
	}
	if !onSite(host, clientHost) {
		return metaErr("%s host %q is neither the client_uri host %q nor a subdomain of it", name, host, clientHost)
	}
	return nil
}

// checkRedirectURI applies P-DCR-5 to one redirect URI.
func checkRedirectURI(name, raw, appType, clientHost string) error {
	if err := checkURIText(name, raw, CodeInvalidRedirectURI); err != nil {
		return err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redirErr("%s is not a valid URI: %w", name, err)
	}
	if u.Scheme == "" {
		return redirErr("%s must be an absolute URI with a scheme", name)
	}
	native := appType == ApplicationTypeNative
	switch u.Scheme {
	case "https":
		if h := strings.ToLower(u.Hostname()); h == "localhost" || strings.HasSuffix(h, ".localhost") || net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback() {
			return redirErr("%s: https loopback redirect URIs are not allowed; native clients use http://127.0.0.1/…, http://[::1]/… or http://localhost/… without a port (RFC 8252 §7.3)", name)
		}
		// The Matrix spec's own example https://example.com:5173/?query=value
		// is valid for client_uri https://example.com/: a redirect URI may
		// name a port (a development server, a claimed https URI).
		host, err := checkHTTPSURI(name, raw, CodeInvalidRedirectURI, true)
		if err != nil {
			return err
		}
		if !onSite(host, clientHost) {
			return redirErr("%s host %q is neither the client_uri host %q nor a subdomain of it", name, host, clientHost)
		}
		return nil
	case "http":
		if !native {
			return redirErr("%s: web clients must use https redirect URIs; http is only for loopback redirect URIs of native clients (application_type native)", name)
		}
		return checkLoopback(name, raw, u)
	default:
		if !native {
			return redirErr("%s: web clients must use https redirect URIs; the private-use scheme %q needs application_type native", name, u.Scheme)
		}
		return checkPrivateUse(name, raw, clientHost)
	}
}

// checkLoopback accepts http://127.0.0.1/…, http://[::1]/… and
// http://localhost/…, without a port (RFC 8252 §7.3).
func checkLoopback(name, raw string, u *url.URL) error {
	if u.User != nil || strings.ContainsRune(rawAuthority(raw), '@') {
		return redirErr("%s must not contain user information (user@)", name)
	}
	for _, lh := range loopbackHosts {
		rest, ok := strings.CutPrefix(raw, "http://"+lh)
		if !ok {
			continue
		}
		switch {
		case rest == "" || rest[0] == '/' || rest[0] == '?':
			return nil
		case rest[0] == ':':
			return redirErr("%s: loopback redirect URIs are registered without a port; any port is accepted at authorization time (RFC 8252 §7.3)", name)
		}
	}
	return redirErr("%s: http redirect URIs must use a loopback host written exactly as http://127.0.0.1, http://[::1] or http://localhost (lower case); other hosts need https", name)
}

// checkPrivateUse accepts a private-use scheme redirect URI (RFC 8252 §7.1)
// as the Matrix spec words it: the scheme starts with the client_uri host
// in reverse-DNS notation and may add labels after it, so for client_uri
// https://example.com/ com.example:/cb, com.example.app:/cb and
// com.example:cb are valid. A scheme made from a parent domain of the host
// is not: the client proves only that it controls the host. There is no
// authority: one slash or none follows the colon.
func checkPrivateUse(name, raw, clientHost string) error {
	colon := strings.IndexByte(raw, ':')
	scheme := strings.ToLower(raw[:colon])
	rest := raw[colon+1:]
	if strings.HasPrefix(rest, "//") {
		return redirErr("%s must not have an authority (//); write %s:/path with a single slash or %s:path (RFC 8252 §7.1)", name, scheme, scheme)
	}
	if rest == "" {
		return redirErr("%s has nothing after the scheme; add a path, such as %s:/callback", name, scheme)
	}
	domain := reverseDNS(scheme)
	if !isDNSName(domain) {
		return redirErr("%s scheme %q is not a reverse domain name such as com.example.app", name, scheme)
	}
	if !onSite(domain, clientHost) {
		return redirErr("%s scheme %q does not start with %s, the client_uri host %q in reverse-DNS notation (more labels may follow, as in %s.ios)", name, scheme, reverseDNS(clientHost), clientHost, reverseDNS(clientHost))
	}
	if isPublicSuffix(domain) {
		return redirErr("%s scheme %q is the reverse of the public suffix %q, which no single client owns", name, scheme, domain)
	}
	return nil
}

// reverseDNS writes a host name in reverse-DNS notation: example.com is
// com.example.
func reverseDNS(host string) string {
	labels := strings.Split(host, ".")
	for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
		labels[i], labels[j] = labels[j], labels[i]
	}
	return strings.Join(labels, ".")
}

// RedirectURIMatches reports whether the redirect URI presented at the
// authorization endpoint matches a registered one: exact string match,
// except that a registered loopback http URI (http://127.0.0.1/…,
// http://[::1]/…, http://localhost/…) registered without a port matches the
// same URI with any port (RFC 8252 §7.3).
func (m *Metadata) RedirectURIMatches(presented string) bool {
	for _, r := range m.RedirectURIs {
		if r == presented || loopbackMatch(r, presented) {
			return true
		}
	}
	return false
}

// loopbackMatch reports whether presented is the port-less loopback URI
// registered with a port added.
func loopbackMatch(registered, presented string) bool {
	for _, lh := range loopbackHosts {
		prefix := "http://" + lh
		rest, ok := strings.CutPrefix(registered, prefix)
		if !ok || (rest != "" && rest[0] != '/' && rest[0] != '?') {
			continue
		}
		p, ok := strings.CutPrefix(presented, prefix+":")
		if !ok {
			return false
		}
		n := 0
		for n < len(p) && n < 6 && p[n] >= '0' && p[n] <= '9' {
			n++
		}
		if n == 0 || n > 5 || p[0] == '0' {
			return false
		}
		if port, err := strconv.Atoi(p[:n]); err != nil || port > 65535 {
			return false
		}
		return p[n:] == rest
	}
	return false
}
