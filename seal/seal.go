package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
)

// Version 1 (before places): the associated data was the header followed by
// a context string naming the column, so a value opened on any row of that
// column. Version 2 binds the value to its place (see Place.ad).
const (
	version1 byte = 1
	version2 byte = 2
	current       = version2
)

// Place is where a sealed value lives: its tenant, table, column and the
// key of its row. A value sealed for one place does not open in another, so
// copying a sealed column from one row, column or tenant to another yields
// ErrCorrupt. Values that are not in a table (queue payloads) name a
// pseudo-table such as "asynq" and may leave Tenant and Row empty.
type Place struct {
	Tenant string
	Table  string
	Column string
	// Row is the row's key, one element per key column.
	Row []string
	// Legacy is the context a version-1 value of this place was sealed
	// with, when it was not "table.column".
	Legacy string
}

// ad is the associated data of a version-2 value: the header, then the
// place's fields, each as a 4-byte big-endian length and its bytes, the row
// key preceded by its number of parts. Lengths make it unambiguous: no two
// different places encode alike ("a","bc" differs from "ab","c").
func (p Place) ad(header []byte) []byte {
	n := len(header) + len(p.Tenant) + len(p.Table) + len(p.Column) + 4*5
	for _, r := range p.Row {
		n += 4 + len(r)
	}
	a := make([]byte, 0, n)
	a = appendField(a, header)
	a = appendField(a, []byte(p.Tenant))
	a = appendField(a, []byte(p.Table))
	a = appendField(a, []byte(p.Column))
	a = binary.BigEndian.AppendUint32(a, uint32(len(p.Row)))
	for _, r := range p.Row {
		a = appendField(a, []byte(r))
	}
	return a
}

func appendField(a, f []byte) []byte {
	a = binary.BigEndian.AppendUint32(a, uint32(len(f)))
	return append(a, f...)
}

// legacyAD is the associated data version 1 used.
func (p Place) legacyAD(header []byte) []byte {
	ctx := p.Legacy
	if ctx == "" {
		ctx = p.Table + "." + p.Column
	}
	a := make([]byte, 0, len(header)+len(ctx))
	a = append(a, header...)
	return append(a, ctx...)
}

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
	index   *IndexKeys
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
// the ids' order: "k10" sorts before "k9". indexKey is blind index key
// version 1, the only one; WithIndexKeys configures several.
func NewKeyring(keys map[string][]byte, primary string, indexKey []byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrConfig)
	}
	if len(indexKey) < 32 {
		return nil, fmt.Errorf("%w: blind index key must be at least 32 bytes", ErrConfig)
	}
	index, err := NewIndexKeys(map[int][]byte{1: indexKey}, 1, nil)
	if err != nil {
		return nil, err
	}
	k := &Keyring{aeads: map[string]cipher.AEAD{}, index: index}
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

// Seal encrypts plaintext for a place; only Open with the same place opens
// it. Layout: version | len(kid) | kid | nonce | ciphertext+tag.
func (k *Keyring) Seal(plaintext []byte, p Place) []byte {
	aead := k.aeads[k.primary]
	kid := k.primary
	out := make([]byte, 0, 2+len(kid)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, current, byte(len(kid)))
	out = append(out, kid...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("seal: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, p.ad(out))
}

// Open decrypts a value sealed for this place by any key in the ring, in
// either format version. A value sealed for another place, or altered, is
// ErrCorrupt.
func (k *Keyring) Open(sealed []byte, p Place) ([]byte, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, err
	}
	aead, ok := k.aeads[h.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, h.KeyID)
	}
	end := h.Len + aead.NonceSize()
	if len(sealed) < end+aead.Overhead() {
		return nil, ErrCorrupt
	}
	ad := p.ad(sealed[:end])
	if h.Version == version1 {
		ad = p.legacyAD(sealed[:end])
	}
	plain, err := aead.Open(nil, sealed[h.Len:end], sealed[end:], ad)
	if err != nil {
		return nil, ErrCorrupt
	}
	return plain, nil
}

// Current reports whether a value is sealed in the current format with the
// primary key, so re-sealing it would change nothing but its nonce.
func (k *Keyring) Current(sealed []byte) bool {
	h, err := ParseHeader(sealed)
	return err == nil && h.Version == current && h.KeyID == k.primary
}

// Header is what a sealed value says about itself before it is opened.
type Header struct {
	Version byte
	KeyID   string
	// Len is the header's length in bytes; the nonce follows.
	Len int
}

// ParseHeader reads a sealed value's format version and key id without
// opening it (for rotation and its reports).
func ParseHeader(sealed []byte) (Header, error) {
	if len(sealed) < 2 || (sealed[0] != version1 && sealed[0] != version2) {
		return Header{}, ErrCorrupt
	}
	n := int(sealed[1])
	if n == 0 || len(sealed) < 2+n {
		return Header{}, ErrCorrupt
	}
	kid := string(sealed[2 : 2+n])
	if !validID(kid) {
		return Header{}, ErrCorrupt
	}
	return Header{Version: sealed[0], KeyID: kid, Len: 2 + n}, nil
}

// KeyID reports which key sealed a value, without opening it.
func KeyID(sealed []byte) (string, error) {
	h, err := ParseHeader(sealed)
	return h.KeyID, err
}

// WithIndexKeys is a copy of the keyring that makes blind indexes with ix.
func (k *Keyring) WithIndexKeys(ix *IndexKeys) *Keyring {
	c := *k
	c.index = ix
	return &c
}

// Index are the keyring's blind index keys.
func (k *Keyring) Index() *IndexKeys { return k.index }

// BlindIndex is a keyed hash of a lookup value (a patient reference, an
// email) in a tenant, so rows can be found by it without storing it in
// clear: made with the tenant's current index key version, which it names.
func (k *Keyring) BlindIndex(tenant, purpose, value string) string {
	return k.index.Index(tenant, purpose, value)
}

// BlindIndexes are the indexes a lookup probes: the value's index under
// every version the tenant's rows may still carry, the current first.
func (k *Keyring) BlindIndexes(tenant, purpose, value string) []string {
	return k.index.Probes(tenant, purpose, value)
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
