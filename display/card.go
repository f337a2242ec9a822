package display

import (
	"fmt"
	"strings"
	"time"
)

// Card is what a browserless device shows so that a person can approve it
// from a phone (RFC 8628 §3.3 and §3.3.1). The zero value is an empty card;
// every renderer needs at least URI.
type Card struct {
	// URI is encoded in the QR symbol: the verification_uri_complete. An
	// upper-case URI made only of QR alphanumeric characters gives the
	// smallest symbol (PROTOCOL.md P-DEV-8).
	URI string
	// UserCode is shown in large letters next to the symbol, e.g.
	// "BCDF-GHJK". RFC 8628 §3.3.1 requires it to be shown even when a QR
	// symbol is, so that the user can compare it with the approval page.
	UserCode string
	// ShortURI is the verification_uri, shown as text for people who type
	// it instead of scanning. Optional.
	ShortURI string
	// Expires is when the codes stop working. The zero time means no
	// countdown is shown.
	Expires time.Time
}

// Remaining returns how long the card stays valid after now, rounded up to
// the second, and 0 once it has expired or when Expires is zero.
func (c Card) Remaining(now time.Time) time.Duration {
	if c.Expires.IsZero() {
		return 0
	}
	d := c.Expires.Sub(now)
	if d <= 0 {
		return 0
	}
	return (d + time.Second - 1).Truncate(time.Second)
}

// Clock returns the time left as "9:41" (or "1:02:03" past an hour), "0:00"
// once expired, and "" when Expires is zero.
func (c Card) Clock(now time.Time) string {
	if c.Expires.IsZero() {
		return ""
	}
	s := int(c.Remaining(now) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// Countdown returns the countdown line, "expires in 9:41" or "expired",
// and "" when Expires is zero.
func (c Card) Countdown(now time.Time) string {
	switch {
	case c.Expires.IsZero():
		return ""
	case c.Remaining(now) == 0:
		return "expired"
	}
	return "expires in " + c.Clock(now)
}

// codeLines returns the user code as one line and, when it has a dash, the
// two halves on either side of the first dash as a two-line alternative.
func codeForms(code string) [][]string {
	if code == "" {
		return nil
	}
	forms := [][]string{{code}}
	if a, b, ok := strings.Cut(code, "-"); ok && a != "" && b != "" {
		forms = append(forms, []string{a, b})
	}
	return forms
}

// uriForms returns u and, if it has one, u without its scheme.
func uriForms(u string) []string {
	if u == "" {
		return nil
	}
	forms := []string{u}
	if i := strings.Index(u, "://"); i >= 0 && i+3 < len(u) {
		forms = append(forms, u[i+3:])
	}
	return forms
}
