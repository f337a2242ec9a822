package devicegrant

import (
	"strings"
	"testing"
)

// FuzzWellFormed: the token check never panics, accepts every token we
// mint, and accepts nothing whose checksum or body was changed.
func FuzzWellFormed(f *testing.F) {
	for _, p := range []string{prefixAccess, prefixRefresh, prefixDeviceCode, prefixSecret, prefixAuthCode} {
		f.Add(newToken(p))
	}
	f.Add("dga_")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		ok := wellFormed(tok, prefixAccess)
		if ok && (len(tok) != tokenSize || !strings.HasPrefix(tok, prefixAccess)) {
			t.Fatalf("accepted %q", tok)
		}
		if ok {
			// Changing any body character must break the checksum
			// (CRC-32 catches every single-character change).
			b := []byte(tok)
			i := len(prefixAccess) + int(tok[len(tok)-1])%bodyLen
			b[i] = base62[(strings.IndexByte(base62, b[i])+1)%62]
			if wellFormed(string(b), prefixAccess) {
				t.Fatalf("accepted %q after changing position %d", b, i)
			}
		}
	})
}

// FuzzNormalizeUserCode: whatever a person types, the result is empty or
// a valid 8-letter code, and normalising is idempotent (P-DEV-3).
func FuzzNormalizeUserCode(f *testing.F) {
	f.Add("bcdf-ghjk")
	f.Add(" BCDF GHJK ")
	f.Add("ÄÖÜ")
	f.Fuzz(func(t *testing.T, in string) {
		out := normalizeUserCode(in)
		if out == "" {
			return
		}
		if len(out) != userCodeLen || strings.Trim(out, userCodeAlphabet) != "" {
			t.Fatalf("normalizeUserCode(%q) = %q", in, out)
		}
		if again := normalizeUserCode(displayUserCode(out)); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
	})
}

// FuzzParseScopes: scope parsing never panics, and what it accepts obeys
// P-SCOPE-1 and P-SCOPE-2 and survives a round trip.
func FuzzParseScopes(f *testing.F) {
	f.Add("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ")
	f.Add("openid urn:matrix:org.matrix.msc2967.client:api:*")
	f.Add("urn:matrix:client:device:x urn:matrix:client:device:y")
	f.Fuzz(func(t *testing.T, raw string) {
		sc, err := parseScopes(raw)
		if err != nil {
			return
		}
		s := sc.String()
		hasAPI := strings.Contains(s, scopeAPI) || strings.Contains(s, scopeAPIUnstable)
		if !hasAPI && !strings.Contains(" "+s+" ", " openid ") {
			t.Fatalf("accepted %q without the API scope or openid", raw)
		}
		if sc.deviceID != "" && (len(sc.deviceID) < 10 || !hasAPI) {
			t.Fatalf("accepted device %q in %q", sc.deviceID, raw)
		}
		if hasAPI && sc.deviceID == "" {
			t.Fatalf("P-SCOPE-2: accepted the API scope without a device scope in %q", raw)
		}
		again, err := parseScopes(s)
		if err != nil || again.String() != s || again.deviceID != sc.deviceID {
			t.Fatalf("round trip of %q: %q %v", raw, again.String(), err)
		}
	})
}
