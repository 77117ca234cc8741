package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/seal"
)

// Row is one audit_log row, as the chain covers it.
type Row struct {
	ID          int64           `json:"id"`
	TenantID    string          `json:"tenant"`
	At          time.Time       `json:"at"`
	Actor       string          `json:"actor"`
	Action      string          `json:"action"`
	SubjectType string          `json:"subject_type"`
	SubjectID   string          `json:"subject_id"`
	Detail      json.RawMessage `json:"detail"`
	XID         uint64          `json:"xid"` // the inserting transaction's top-level id
}

// Link is one audit_chain row: the row at seq of a tenant's chain.
type Link struct {
	TenantID  string
	Seq       int64
	AuditID   int64
	KeyID     string
	Hash      []byte
	ChainedAt time.Time
}

// Head is the last link of a tenant's chain and its row's place in the
// chain order; the zero Head is an empty chain.
type Head struct {
	Seq     int64
	Hash    []byte
	XID     uint64
	AuditID int64
}

// genesis is hash(0), what the first link chains on.
var genesis = make([]byte, sha256.Size)

// Keys are the HMAC keys of the chain by id; Primary chains new rows, the
// others still verify the rows chained with them.
type Keys struct {
	keys    map[string][]byte
	Primary string
}

// ParseKeys reads TIDINGS_AUDIT_KEYS ("id:base64 of 32 bytes,…") and the
// primary key id, which must be named when there is more than one key.
func ParseKeys(spec, primary string) (*Keys, error) {
	keys, err := seal.ParseKeys(spec)
	if err != nil {
		return nil, err
	}
	if primary == "" {
		if len(keys) > 1 {
			return nil, errors.New("several keys: name the one that chains new rows")
		}
		for id := range keys {
			primary = id
		}
	}
	if _, ok := keys[primary]; !ok {
		return nil, fmt.Errorf("primary key %q is not among the keys", primary)
	}
	return &Keys{keys: keys, Primary: primary}, nil
}

// String names the keys without their bytes, should they be printed.
func (k *Keys) String() string {
	return fmt.Sprintf("audit chain keys %v (primary %s)", k.IDs(), k.Primary)
}

// IDs lists the key ids, sorted.
func (k *Keys) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Hash computes the link hash of row at seq after prev with key keyID.
func (k *Keys) Hash(keyID string, prev []byte, seq int64, row Row) ([]byte, error) {
	m, err := k.mac(keyID)
	if err != nil {
		return nil, err
	}
	return linkHash(m, prev, seq, row)
}

// mac is an HMAC-SHA-256 with key keyID.
func (k *Keys) mac(keyID string) (hash.Hash, error) {
	key, ok := k.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("unknown chain key %q", keyID)
	}
	return hmac.New(sha256.New, key), nil
}

// linkHash is Hash with m, an HMAC of the key, reset and reused.
func linkHash(m hash.Hash, prev []byte, seq int64, row Row) ([]byte, error) {
	canon, err := CanonicalRow(row)
	if err != nil {
		return nil, err
	}
	m.Reset()
	m.Write(prev)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(seq))
	m.Write(n[:])
	m.Write(canon)
	return m.Sum(nil), nil
}

// Link chains rows after head with the primary key.
func (k *Keys) Link(tenant string, head Head, rows []Row) ([]Link, error) {
	m, err := k.mac(k.Primary) // one for the batch: a row's hash resets it
	if err != nil {
		return nil, err
	}
	links := make([]Link, len(rows))
	prev := head.Hash
	if head.Seq == 0 {
		prev = genesis
	}
	for i, r := range rows {
		seq := head.Seq + 1 + int64(i)
		h, err := linkHash(m, prev, seq, r)
		if err != nil {
			return nil, err
		}
		links[i] = Link{TenantID: tenant, Seq: seq, AuditID: r.ID, KeyID: k.Primary, Hash: h}
		prev = h
	}
	return links, nil
}

// CanonicalRow is the bytes of a row that its link hash covers: each field
// as its length (4 bytes, big-endian) and its bytes.
func CanonicalRow(r Row) ([]byte, error) {
	detail, err := CanonicalJSON(r.Detail)
	if err != nil {
		return nil, fmt.Errorf("audit row %d: detail: %w", r.ID, err)
	}
	var id, xid, at [32]byte
	fields := [...][]byte{
		strconv.AppendInt(id[:0], r.ID, 10), []byte(r.TenantID), r.At.UTC().AppendFormat(at[:0], time.RFC3339Nano),
		[]byte(r.Actor), []byte(r.Action), []byte(r.SubjectType), []byte(r.SubjectID), detail,
		strconv.AppendUint(xid[:0], r.XID, 10),
	}
	size := 0
	for _, f := range fields {
		size += 4 + len(f)
	}
	b := make([]byte, 0, size)
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// CanonicalJSON re-encodes JSON with object keys sorted and numbers as
// written: what a detail reads as however jsonb has reordered and spaced it.
// The bytes are those of canonicalJSONReference, which decodes the first
// JSON value of raw and marshals it again with encoding/json; details made
// only of plain ASCII strings, numbers and literals (nearly all of them)
// take a single pass that writes the same bytes without decoding, and
// FuzzCanonicalJSON holds the two to the same output.
func CanonicalJSON(raw []byte) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte("{}"), nil
	}
	if out, ok := canonicalPlain(raw); ok {
		return out, nil
	}
	return canonicalJSONReference(raw)
}

// canonicalJSONReference is the definition of CanonicalJSON.
func canonicalJSONReference(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v) // map keys marshal sorted
}

// canonicalPlain is CanonicalJSON for a document that is one JSON value
// whose strings are printable ASCII without escapes, with no key repeated
// in an object and nesting no deeper than 32: every number of it encodes
// as written, and every string too but for the three characters
// encoding/json escapes for HTML. It answers false for anything else.
func canonicalPlain(raw []byte) ([]byte, bool) {
	c := plainCanon{in: raw, out: make([]byte, 0, len(raw))}
	c.space()
	if !c.value(0) {
		return nil, false
	}
	c.space()
	return c.out, c.pos == len(c.in)
}

type plainCanon struct {
	in  []byte
	pos int
	out []byte
}

// plainMember is one member of an object as written to out: its key
// (between the quotes, as in the input) and the span of its value.
type plainMember struct {
	key        []byte
	start, end int
}

func (c *plainCanon) space() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *plainCanon) value(depth int) bool {
	if c.pos >= len(c.in) || depth > 32 {
		return false
	}
	switch b := c.in[c.pos]; {
	case b == '{':
		return c.object(depth)
	case b == '[':
		return c.array(depth)
	case b == '"':
		s, ok := c.str()
		c.out = appendStr(c.out, s)
		return ok
	case b == '-' || (b >= '0' && b <= '9'):
		return c.number()
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
			c.pos += len(lit)
			c.out = append(c.out, lit...)
			return true
		}
	}
	return false
}

// str reads a plain string at pos and returns what is between its quotes.
func (c *plainCanon) str() ([]byte, bool) {
	start := c.pos + 1
	for i := start; i < len(c.in); i++ {
		switch b := c.in[i]; {
		case b == '"':
			c.pos = i + 1
			return c.in[start:i], true
		case b < 0x20 || b > 0x7e || b == '\\':
			return nil, false
		}
	}
	return nil, false
}

// appendStr writes a plain string quoted as encoding/json does: <, > and &
// as \u003c, \u003e and \u0026, every other byte as it is.
func appendStr(out, s []byte) []byte {
	out = append(out, '"')
	for _, b := range s {
		switch b {
		case '<':
			out = append(out, `\u003c`...)
		case '>':
			out = append(out, `\u003e`...)
		case '&':
			out = append(out, `\u0026`...)
		default:
			out = append(out, b)
		}
	}
	return append(out, '"')
}

// number copies a number at pos, checking it against JSON's grammar.
func (c *plainCanon) number() bool {
	start, i := c.pos, c.pos
	digits := func() int {
		n := 0
		for i < len(c.in) && c.in[i] >= '0' && c.in[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if c.in[i] == '-' {
		i++
	}
	if i < len(c.in) && c.in[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(c.in) && c.in[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(c.in) && (c.in[i] == 'e' || c.in[i] == 'E') {
		i++
		if i < len(c.in) && (c.in[i] == '+' || c.in[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	c.pos = i
	c.out = append(c.out, c.in[start:i]...)
	return true
}

func (c *plainCanon) array(depth int) bool {
	c.pos++
	c.out = append(c.out, '[')
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return true
	}
	for {
		c.space()
		if !c.value(depth + 1) {
			return false
		}
		c.space()
		if c.pos >= len(c.in) {
			return false
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return true
		default:
			return false
		}
	}
}

// object writes the members' values to out as they come, then rewrites the
// object with its members in key order.
func (c *plainCanon) object(depth int) bool {
	c.pos++
	begin := len(c.out)
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '{', '}')
		return true
	}
	var members []plainMember
	for {
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return false
		}
		key, ok := c.str()
		if !ok {
			return false
		}
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return false
		}
		c.pos++
		c.space()
		start := len(c.out)
		if !c.value(depth + 1) {
			return false
		}
		members = append(members, plainMember{key: key, start: start, end: len(c.out)})
		c.space()
		if c.pos >= len(c.in) {
			return false
		}
		if c.in[c.pos] == '}' {
			c.pos++
			break
		}
		if c.in[c.pos] != ',' {
			return false
		}
		c.pos++
	}
	slices.SortFunc(members, func(a, b plainMember) int { return bytes.Compare(a.key, b.key) })
	for i := 1; i < len(members); i++ {
		if bytes.Equal(members[i-1].key, members[i].key) {
			return false // the reference keeps the last; leave that to it
		}
	}
	values := slices.Clone(c.out[begin:])
	c.out = append(c.out[:begin], '{')
	for i, m := range members {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = appendStr(c.out, m.key)
		c.out = append(c.out, ':')
		c.out = append(c.out, values[m.start-begin:m.end-begin]...)
	}
	c.out = append(c.out, '}')
	return true
}
