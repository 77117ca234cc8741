package links

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/url"
	"strings"
	"time"
)

// What a token lets its holder do.
const (
	KindUnsubscribe = 'u' // opt out of Purpose
	KindOpen        = 'o' // the open pixel
	KindClick       = 'c' // follow link Index of the notice, to Target
)

// Token is what a link names. It holds no PHI: ids, a purpose, and for a
// click the URL the notice itself carried (the portal link, whose own
// token is as secret in the mail as here).
type Token struct {
	Kind     byte
	TenantID string
	NoticeID int64
	Expires  time.Time // to the second
	Purpose  string    // KindUnsubscribe: the purpose opted out of
	Index    int       // KindClick: the link's place among the notice's links
	Target   string    // KindClick: where it leads
}

// Errors Verify returns; the server answers each with a 4xx.
var (
	ErrMalformed = errors.New("link token is malformed")
	ErrForged    = errors.New("link token's signature does not verify")
	ErrExpired   = errors.New("link token has expired")
)

const (
	version = 1
	macLen  = 16 // truncated HMAC-SHA256: 128 bits, as for a MAC in a URL
	// MaxTokenLen bounds a token a request may carry (a click's target is
	// the longest part).
	MaxTokenLen = 2048
)

// Signer signs and verifies tokens with one key.
type Signer struct{ key []byte }

// NewSigner makes a Signer; key must be at least 32 bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < 32 {
		return nil, errors.New("link token key must be at least 32 bytes")
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

// Sign encodes t and its MAC in URL-safe base64.
func (s *Signer) Sign(t Token) string {
	b := []byte{version, t.Kind}
	b = binary.BigEndian.AppendUint64(b, uint64(t.Expires.Unix()))
	b = binary.AppendUvarint(b, uint64(t.NoticeID))
	b = appendString(b, t.TenantID)
	switch t.Kind {
	case KindUnsubscribe:
		b = appendString(b, t.Purpose)
	case KindClick:
		b = binary.AppendUvarint(b, uint64(t.Index))
		b = appendString(b, t.Target)
	}
	b = append(b, s.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Verify decodes a token of kind, checks its MAC in constant time, then
// its expiry against now.
func (s *Signer) Verify(raw string, kind byte, now time.Time) (Token, error) {
	// One spelling per token: the decoder would skip line breaks and
	// ignore stray low bits of the last character.
	if len(raw) > MaxTokenLen || strings.ContainsAny(raw, "\r\n") {
		return Token{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(raw)
	if err != nil || len(b) < 2+8+macLen {
		return Token{}, ErrMalformed
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	if !hmac.Equal(sum, s.mac(body)) {
		return Token{}, ErrForged
	}
	if body[0] != version || body[1] != kind {
		return Token{}, ErrMalformed
	}
	t := Token{Kind: kind, Expires: time.Unix(int64(binary.BigEndian.Uint64(body[2:10])), 0).UTC()}
	r := reader{b: body[10:]}
	t.NoticeID = int64(r.uvarint())
	t.TenantID = r.string()
	switch kind {
	case KindUnsubscribe:
		t.Purpose = r.string()
	case KindClick:
		t.Index = int(r.uvarint())
		t.Target = r.string()
		if u, err := url.Parse(t.Target); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			r.bad = true
		}
	}
	if r.bad || len(r.b) != 0 || t.TenantID == "" || t.NoticeID <= 0 {
		return Token{}, ErrMalformed
	}
	if !now.Before(t.Expires) {
		return Token{}, ErrExpired
	}
	return t, nil
}

func (s *Signer) mac(b []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return m.Sum(nil)[:macLen]
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader reads what Sign appended; a short or oversized field sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > 1<<62 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	if strings.ContainsAny(s, "\r\n\x00") {
		r.bad = true
	}
	return s
}
