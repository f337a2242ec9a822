package clientmeta

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

// FuzzStoredMetadata: what Parse accepts from an untrusted registration
// body is stored: it fits MaxMetadataBytes (issue 10.9), and its rendering
// parses back to the same bytes, since P-DCR-6 shares clients by the hash
// of that rendering. (FuzzParse checks errors and validity.) Seeds: the
// parse table and testdata/fuzz/FuzzStoredMetadata.
func FuzzStoredMetadata(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Parse(body)
		if err != nil {
			return
		}
		rendered, err := m.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON of accepted metadata: %v", err)
		}
		if len(rendered) > MaxMetadataBytes {
			t.Fatalf("accepted %d bytes of metadata", len(rendered))
		}
		again, err := Parse(rendered)
		if err != nil {
			t.Fatalf("the rendering %s does not parse: %v", rendered, err)
		}
		if r2, _ := again.MarshalJSON(); !bytes.Equal(r2, rendered) {
			t.Fatalf("rendering is not stable:\n%s\n%s", rendered, r2)
		}
	})
}

// FuzzRedirectURIMatches: the URI presented at the authorization endpoint
// is untrusted. It matches a registered one only when equal to it, or
// (RFC 8252 §7.3) when it is a port-less registered loopback URI with a
// port added; never another host, scheme, path or query. Seeds:
// testdata/fuzz/FuzzRedirectURIMatches.
func FuzzRedirectURIMatches(f *testing.F) {
	for _, s := range [][2]string{
		{"http://127.0.0.1/cb", "http://127.0.0.1:8080/cb"},
		{"http://[::1]/cb", "http://[::1]:65535/cb"},
		{"http://localhost/cb?x=1", "http://localhost:1/cb?x=1"},
		{"http://127.0.0.1/cb", "http://127.0.0.1:08080/cb"},
		{"http://127.0.0.1/cb", "http://127.0.0.1:80800/cb"},
		{"http://127.0.0.1/cb", "http://127.0.0.1.evil.test/cb"},
		{"http://127.0.0.1", "http://127.0.0.1:9@evil.test"},
		{"com.example.app:/cb", "com.example.app:/cb"},
		{"com.example.app:/cb", "com.example.app:/cb/../x"},
		{"https://app.example.com/cb", "https://app.example.com/cb#x"},
		{"https://app.example.com/cb", "https://APP.example.com/cb"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, registered, presented string) {
		m, err := Parse([]byte(native(kv{"redirect_uris": []string{registered}})))
		if err != nil {
			return // not registrable: nothing to match against
		}
		if !m.RedirectURIMatches(presented) || presented == registered {
			return
		}
		// A match that is not equality must be the loopback port rule.
		p, err := url.Parse(presented)
		if err != nil || p.Scheme != "http" || p.User != nil || p.Port() == "" {
			t.Fatalf("%q matched registered %q", presented, registered)
		}
		if strings.Replace(presented, ":"+p.Port(), "", 1) != registered {
			t.Fatalf("%q matched %q with more than a port added", presented, registered)
		}
		switch p.Hostname() {
		case "127.0.0.1", "::1", "localhost":
		default:
			t.Fatalf("%q matched %q on host %q", presented, registered, p.Hostname())
		}
	})
}
