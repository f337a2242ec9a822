package devicegrant

import (
	"strings"
	"unicode/utf8"
)

// storableText makes s text that every store keeps as it is: valid UTF-8
// without NUL, at most n bytes, cut between characters. Text from outside
// reaches the store unchecked by any form rule: a header can carry any
// byte from 0x80 up, a homeserver's answer (or a proxy's in front of it)
// any encoding, and PostgreSQL refuses what is not UTF-8 or holds NUL,
// failing the whole transaction (TestDeviceAuthorizationUserAgentNotUTF8,
// TestOutboxFailureWithBinaryAnswer).
func storableText(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
