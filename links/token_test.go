package links

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func testSigner(t testing.TB, fill byte) *Signer {
	t.Helper()
	s, err := NewSigner(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC)

func TestTokenRoundTrip(t *testing.T) {
	s := testSigner(t, 1)
	for _, tok := range []Token{
		{Kind: KindUnsubscribe, TenantID: "dev", NoticeID: 42, Expires: t0.Add(time.Hour), Purpose: "marketing"},
		{Kind: KindOpen, TenantID: "plan-a", NoticeID: 1 << 40, Expires: t0.Add(time.Hour)},
		{Kind: KindClick, TenantID: "dev", NoticeID: 7, Expires: t0.Add(time.Hour), Index: 3, Target: "https://portal.example.org/portal/dev/notices/abc"},
	} {
		raw := s.Sign(tok)
		got, err := s.Verify(raw, tok.Kind, t0)
		if err != nil {
			t.Fatalf("%c: %v", tok.Kind, err)
		}
		if got != tok {
			t.Fatalf("verified %+v, want %+v", got, tok)
		}
		if strings.ContainsAny(raw, "+/=") {
			t.Fatalf("token %q is not URL-safe", raw)
		}
	}
}

func TestTokenRefusals(t *testing.T) {
	s := testSigner(t, 1)
	unsub := Token{Kind: KindUnsubscribe, TenantID: "dev", NoticeID: 42, Expires: t0.Add(time.Hour), Purpose: "marketing"}
	raw := s.Sign(unsub)
	b, _ := base64.RawURLEncoding.DecodeString(raw)
	flipped := func(i int) string {
		c := bytes.Clone(b)
		c[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(c)
	}
	for _, c := range []struct {
		name string
		raw  string
		kind byte
		now  time.Time
		want error
	}{
		{"expired", raw, KindUnsubscribe, t0.Add(time.Hour), ErrExpired},
		{"notice id changed", flipped(10), KindUnsubscribe, t0, ErrForged},
		{"mac changed", flipped(len(b) - 1), KindUnsubscribe, t0, ErrForged},
		{"expiry moved", flipped(9), KindUnsubscribe, t0, ErrForged},
		{"other key", testSigner(t, 2).Sign(unsub), KindUnsubscribe, t0, ErrForged},
		{"other kind", raw, KindClick, t0, ErrMalformed},
		{"not base64", "!!!", KindUnsubscribe, t0, ErrMalformed},
		{"truncated", raw[:10], KindUnsubscribe, t0, ErrMalformed},
		{"too long", strings.Repeat("A", MaxTokenLen+1), KindUnsubscribe, t0, ErrMalformed},
		{"click to elsewhere", s.Sign(Token{Kind: KindClick, TenantID: "dev", NoticeID: 1, Expires: t0.Add(time.Hour), Target: "javascript:alert(1)"}), KindClick, t0, ErrMalformed},
		{"click to a target that does not parse", s.Sign(Token{Kind: KindClick, TenantID: "dev", NoticeID: 1, Expires: t0.Add(time.Hour), Target: "https://x.example/%zz"}), KindClick, t0, ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.Verify(c.raw, c.kind, c.now); !errors.Is(err, c.want) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
		})
	}
	if _, err := NewSigner(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte key was taken")
	}
}

// FuzzVerify: no input makes Verify panic, and whatever it accepts signs
// back to the same token.
func FuzzVerify(f *testing.F) {
	s := testSigner(f, 1)
	f.Add(s.Sign(Token{Kind: KindClick, TenantID: "dev", NoticeID: 7, Expires: t0.Add(time.Hour), Index: 1, Target: "https://x.example/a"}))
	f.Add(s.Sign(Token{Kind: KindUnsubscribe, TenantID: "dev", NoticeID: 1, Expires: t0.Add(time.Hour), Purpose: "marketing"}))
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		for _, kind := range []byte{KindUnsubscribe, KindOpen, KindClick} {
			if tok, err := s.Verify(raw, kind, t0); err == nil && s.Sign(tok) != raw {
				t.Fatalf("accepted %q, which signs as %q", raw, s.Sign(tok))
			}
		}
	})
}
