package devicegrant

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"hash/crc32"
	"strings"
)

// Token kinds, recognisable by their prefix in logs and by secret scanners.
const (
	prefixAccess     = "dga_" // access token
	prefixRefresh    = "dgr_" // refresh token
	prefixDeviceCode = "dgd_" // RFC 8628 device code
	prefixSecret     = "dgs_" // confidential client secret
	prefixAuthCode   = "dgc_" // authorization code
)

const (
	base62    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	bodyLen   = 30 // 30 base62 characters carry 178 random bits
	checkLen  = 6  // base62 CRC-32 of prefix and body
	tokenSize = 4 + bodyLen + 1 + checkLen
)

// newToken returns prefix + 30 random base62 characters + "_" + a 6
// character checksum. The checksum lets us (and scanners) reject a mistyped
// or made-up token without a database lookup; it adds no secrecy.
func newToken(prefix string) string {
	b := make([]byte, 0, tokenSize)
	b = append(b, prefix...)
	var buf [64]byte
	for len(b) < len(prefix)+bodyLen {
		rand.Read(buf[:]) // never returns an error (crypto/rand, Go ≥ 1.24)
		for _, c := range buf {
			// 248 = 4×62: rejecting larger bytes keeps every letter
			// equally likely.
			if c < 248 && len(b) < len(prefix)+bodyLen {
				b = append(b, base62[c%62])
			}
		}
	}
	b = append(b, '_')
	return string(appendChecksum(b, b[:len(b)-1]))
}

func appendChecksum(dst, data []byte) []byte {
	sum := crc32.ChecksumIEEE(data)
	var out [checkLen]byte
	for i := checkLen - 1; i >= 0; i-- {
		out[i] = base62[sum%62]
		sum /= 62
	}
	return append(dst, out[:]...)
}

// wellFormed reports whether tok has the given prefix, shape and a valid
// checksum.
func wellFormed(tok, prefix string) bool {
	if len(tok) != tokenSize || !strings.HasPrefix(tok, prefix) || tok[tokenSize-checkLen-1] != '_' {
		return false
	}
	body := tok[:tokenSize-checkLen-1]
	for i := len(prefix); i < len(body); i++ {
		if strings.IndexByte(base62, body[i]) < 0 {
			return false
		}
	}
	want := appendChecksum(nil, []byte(body))
	return subtle.ConstantTimeCompare(want, []byte(tok[tokenSize-checkLen:])) == 1
}

// hashSecret is how every token, code and secret is kept in the store. The
// values carry at least 128 random bits, so a fast unsalted hash is enough:
// there is nothing to brute-force.
func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// randomString returns n random bytes, base64url-encoded, for cookies and
// CSRF tokens.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newID returns a random 128-bit identifier for rows and client ids.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return idEncoding.EncodeToString(b)
}
