package portal

import (
	"strings"
	"testing"
	"time"
)

// Whatever a client sends as a token, a code or a date of birth, the
// parsers never panic, and what they accept has the one shape the rest of
// the portal relies on.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"", "abc", strings.Repeat("A", 32), strings.Repeat("A", 31) + "/", strings.Repeat("é", 16), "../../etc/passwd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, ok := ParseToken(s)
		if !ok {
			return
		}
		if tok != s || len(tok) != 32 || strings.ContainsAny(tok, "/.%?#+= ") {
			t.Fatalf("accepted %q as %q", s, tok)
		}
	})
}

func FuzzParseCode(f *testing.F) {
	for _, s := range []string{"123456", "123 456", "123-456", "12345", "1234567", "١٢٣٤٥٦", "12345x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, ok := ParseCode(s)
		if !ok {
			return
		}
		if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
			t.Fatalf("accepted %q as %q", s, code)
		}
	})
}

func FuzzParseBirthDate(f *testing.F) {
	for _, s := range []string{"1974-12-25", " 1974-12-25 ", "1974-13-01", "2999-01-01", "1974-2-5", "25/12/1974"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseBirthDate(s, now)
		if !ok {
			return
		}
		parsed, err := time.Parse(time.DateOnly, d)
		if err != nil || parsed.After(now) {
			t.Fatalf("accepted %q as %q", s, d)
		}
	})
}

func TestParsers(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{"123456": "123456", " 123 456 ": "123456", "123-456": "123456", "12345": "", "1234567": "", "12345a": "", "١٢٣٤٥٦": ""} {
		if got, ok := ParseCode(in); got != want || ok != (want != "") {
			t.Errorf("ParseCode(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for in, want := range map[string]string{"1974-12-25": "1974-12-25", "1974-02-30": "", "2027-01-01": "", "1974-12-5": ""} {
		if got, ok := ParseBirthDate(in, now); got != want || ok != (want != "") {
			t.Errorf("ParseBirthDate(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := ParseToken(strings.Repeat("a", 31) + "_"); !ok {
		t.Error("a well-formed token was refused")
	}
	for _, bad := range []string{strings.Repeat("a", 31), strings.Repeat("a", 33), strings.Repeat("a", 31) + "="} {
		if _, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	seen := map[string]bool{}
	for range 50 {
		c := newCode()
		if _, ok := ParseCode(c); !ok {
			t.Fatalf("newCode made %q", c)
		}
		seen[c] = true
	}
	if len(seen) < 45 {
		t.Errorf("50 codes, %d distinct", len(seen))
	}
}
