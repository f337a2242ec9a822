package devicegrant

import (
	"crypto/rand"
	"strings"
)

// userCodeAlphabet is RFC 8628 §6.1's base-20 set: no vowels (no words), no
// look-alikes, and every letter in QR's alphanumeric mode (P-DEV-3, P-DEV-8).
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

const userCodeLen = 8 // 20^8 ≈ 2^34.6

// newUserCode returns 8 uniformly random letters from the alphabet.
func newUserCode() string {
	b := make([]byte, 0, userCodeLen)
	var buf [16]byte
	for len(b) < userCodeLen {
		rand.Read(buf[:])
		for _, c := range buf {
			if c < 240 && len(b) < userCodeLen { // 240 = 12×20
				b = append(b, userCodeAlphabet[c%20])
			}
		}
	}
	return string(b)
}

// normalizeUserCode folds case and drops the dashes and spaces people type
// (P-DEV-3). It returns "" when what is left is not a possible code.
func normalizeUserCode(in string) string {
	var b strings.Builder
	for _, r := range in {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		}
		if r > 'Z' || !strings.ContainsRune(userCodeAlphabet, r) {
			return ""
		}
		b.WriteRune(r)
		if b.Len() > userCodeLen {
			return ""
		}
	}
	if b.Len() != userCodeLen {
		return ""
	}
	return b.String()
}

// displayUserCode formats a normalised code as XXXX-XXXX.
func displayUserCode(code string) string {
	if len(code) != userCodeLen {
		return code
	}
	return code[:4] + "-" + code[4:]
}
