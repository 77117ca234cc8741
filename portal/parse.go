package portal

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// tokenLen is the length of a link token: 24 random bytes in URL-safe
// base64 without padding (seal.NewToken).
const tokenLen = 32

// codeDigits is the length of a one-time code.
const codeDigits = 6

// ParseToken checks a link token's shape before anything looks it up.
func ParseToken(s string) (string, bool) {
	if len(s) != tokenLen {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return s, true
}

// ParseCode reads a one-time code as typed: six digits, with spaces and
// hyphens (as a mail reader may show it) ignored.
func ParseCode(s string) (string, bool) {
	if len(s) > 32 {
		return "", false
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '\t':
		default:
			return "", false
		}
	}
	if b.Len() != codeDigits {
		return "", false
	}
	return b.String(), true
}

// ParseBirthDate reads a date of birth as typed: YYYY-MM-DD, a real date,
// not in the future.
func ParseBirthDate(s string, now time.Time) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) != len(time.DateOnly) {
		return "", false
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil || d.After(now) || d.Year() < 1850 {
		return "", false
	}
	return d.Format(time.DateOnly), true
}

// newCode is a uniformly random six-digit code.
func newCode() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic("portal: no randomness: " + err.Error())
	}
	return fmt.Sprintf("%06d", n.Int64())
}
