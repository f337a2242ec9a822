package clientmeta

import (
	"strings"
	"testing"
)

// TestMetadataSizeIsBounded: each field's own limits would allow about
// 200 KiB of stored metadata per client; the rendering is capped at
// MaxMetadataBytes (issue 10.9).
func TestMetadataSizeIsBounded(t *testing.T) {
	long := func(n int) []string {
		return many(n, func(i int) string { return "https://example.com/" + strings.Repeat("p", 1000) + string(rune('a'+i)) })
	}
	if _, err := Parse([]byte(web(kv{"redirect_uris": long(10)}))); err != nil {
		t.Errorf("10 KB of redirect URIs: %v", err)
	}
	_, err := Parse([]byte(web(kv{"redirect_uris": long(20)})))
	if e, ok := err.(*Error); !ok || e.Code != CodeInvalidClientMetadata || !strings.Contains(e.Description, "at most 16384") {
		t.Errorf("20 KB of redirect URIs: %v, want invalid_client_metadata naming the limit", err)
	}
}
