package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
)

// version is the first byte of every sealed value; it lets the format change later.
const version byte = 1

var (
	// ErrUnknownKey means the ciphertext names a key the keyring does not hold.
	ErrUnknownKey = errors.New("seal: unknown key id")
	// ErrCorrupt means the value is not a sealed value or failed authentication.
	ErrCorrupt = errors.New("seal: value is corrupt or was sealed for another context")
	// ErrConfig reports an unusable key specification.
	ErrConfig = errors.New("seal: bad key configuration")
)

// Keyring holds the AES-256 keys by id; Seal uses the primary one.
type Keyring struct {
	primary string
	aeads   map[string]cipher.AEAD
	ids     []string // sorted
	index   []byte   // HMAC key for blind indexes
}

// LogValue keeps keys out of logs.
func (k *Keyring) LogValue() slog.Value {
	return slog.GroupValue(slog.String("primary", k.primary), slog.Int("keys", len(k.aeads)))
}

// ParseKeys reads "id:base64key,id2:base64key" (standard or URL base64 of 32
// bytes). Key ids are 1..32 characters of [A-Za-z0-9_-].
func ParseKeys(spec string) (map[string][]byte, error) {
	keys := map[string][]byte{}
	var problems []string
	for i, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, b64, ok := strings.Cut(part, ":")
		if !ok {
			problems = append(problems, fmt.Sprintf("key %d: want id:base64", i+1))
			continue
		}
		if !validID(id) {
			problems = append(problems, fmt.Sprintf("key %d: id must be 1-32 of A-Z a-z 0-9 _ -", i+1))
			continue
		}
		raw, err := decodeB64(b64)
		if err != nil || len(raw) != 32 {
			problems = append(problems, fmt.Sprintf("key %q: want 32 bytes of base64", id))
			continue
		}
		if _, dup := keys[id]; dup {
			problems = append(problems, fmt.Sprintf("key %q: listed twice", id))
			continue
		}
		keys[id] = raw
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrConfig)
	}
	return keys, nil
}

func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > 32 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// NewKeyring builds a keyring. primary names the key new values are sealed
// with; it may be "" only when there is one key. It is never guessed from
// the ids' order: "k10" sorts before "k9". indexKey keys blind indexes and
// must stay stable for the life of the data (it is not rotated with sealing
// keys).
func NewKeyring(keys map[string][]byte, primary string, indexKey []byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrConfig)
	}
	if len(indexKey) < 32 {
		return nil, fmt.Errorf("%w: blind index key must be at least 32 bytes", ErrConfig)
	}
	k := &Keyring{aeads: map[string]cipher.AEAD{}, index: append([]byte(nil), indexKey...)}
	ids := make([]string, 0, len(keys))
	for id, raw := range keys {
		if !validID(id) || len(raw) != 32 {
			return nil, fmt.Errorf("%w: key %q", ErrConfig, id)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrConfig, id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrConfig, id, err)
		}
		k.aeads[id] = aead
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if primary == "" {
		if len(ids) > 1 {
			return nil, fmt.Errorf("%w: %d keys (%s) and no primary key id named", ErrConfig, len(ids), strings.Join(ids, ", "))
		}
		primary = ids[0]
	}
	if _, ok := k.aeads[primary]; !ok {
		return nil, fmt.Errorf("%w: primary key %q is not among the keys (%s)", ErrConfig, primary, strings.Join(ids, ", "))
	}
	k.primary = primary
	k.ids = ids
	return k, nil
}

// Primary is the id of the key new values are sealed with.
func (k *Keyring) Primary() string { return k.primary }

// IDs are the ids of every key in the ring, sorted.
func (k *Keyring) IDs() []string { return append([]string(nil), k.ids...) }

// Seal encrypts plaintext for a context (for example "task:event" or
// "events.resource"); the same context must be given to Open, so a value
// cannot be moved from one place to another. Layout:
// version | len(kid) | kid | nonce | ciphertext+tag.
func (k *Keyring) Seal(plaintext []byte, context string) []byte {
	aead := k.aeads[k.primary]
	kid := k.primary
	out := make([]byte, 0, 2+len(kid)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, version, byte(len(kid)))
	out = append(out, kid...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("seal: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	out = append(out, nonce...)
	header := out[:len(out)]
	return aead.Seal(out, nonce, plaintext, aad(header, context))
}

// Open decrypts a value sealed by any key in the ring.
func (k *Keyring) Open(sealed []byte, context string) ([]byte, error) {
	kid, err := KeyID(sealed)
	if err != nil {
		return nil, err
	}
	aead, ok := k.aeads[kid]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	hdr := 2 + len(kid)
	if len(sealed) < hdr+aead.NonceSize()+aead.Overhead() {
		return nil, ErrCorrupt
	}
	nonce := sealed[hdr : hdr+aead.NonceSize()]
	plain, err := aead.Open(nil, nonce, sealed[hdr+aead.NonceSize():], aad(sealed[:hdr+aead.NonceSize()], context))
	if err != nil {
		return nil, ErrCorrupt
	}
	return plain, nil
}

// KeyID reports which key sealed a value, without opening it (for rotation reports).
func KeyID(sealed []byte) (string, error) {
	if len(sealed) < 2 || sealed[0] != version {
		return "", ErrCorrupt
	}
	n := int(sealed[1])
	if n == 0 || len(sealed) < 2+n {
		return "", ErrCorrupt
	}
	kid := string(sealed[2 : 2+n])
	if !validID(kid) {
		return "", ErrCorrupt
	}
	return kid, nil
}

func aad(header []byte, context string) []byte {
	a := make([]byte, 0, len(header)+len(context))
	a = append(a, header...)
	return append(a, context...)
}

// BlindIndex is a keyed hash of a lookup value (a patient reference, an email)
// so rows can be found by it without storing it in clear.
func (k *Keyring) BlindIndex(purpose, value string) string {
	m := hmac.New(sha256.New, k.index)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// NewRandomKey returns a fresh 32-byte key in base64, for `tidings keys new` and dev.
func NewRandomKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	return base64.StdEncoding.EncodeToString(b)
}

// NewToken returns 24 random bytes in URL-safe base64: an opaque secret or
// link token (subscription secrets, portal tokens).
func NewToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
