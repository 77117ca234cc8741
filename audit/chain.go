package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
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
	key, ok := k.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("unknown chain key %q", keyID)
	}
	canon, err := CanonicalRow(row)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write(prev)
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(seq)))
	m.Write(canon)
	return m.Sum(nil), nil
}

// Link chains rows after head with the primary key.
func (k *Keys) Link(tenant string, head Head, rows []Row) ([]Link, error) {
	links := make([]Link, len(rows))
	prev := head.Hash
	if head.Seq == 0 {
		prev = genesis
	}
	for i, r := range rows {
		seq := head.Seq + 1 + int64(i)
		h, err := k.Hash(k.Primary, prev, seq, r)
		if err != nil {
			return nil, err
		}
		links[i] = Link{TenantID: tenant, Seq: seq, AuditID: r.ID, KeyID: k.Primary, Hash: h}
		prev = h
	}
	return links, nil
}

// CanonicalRow is the bytes of a row that its link hash covers.
func CanonicalRow(r Row) ([]byte, error) {
	detail, err := CanonicalJSON(r.Detail)
	if err != nil {
		return nil, fmt.Errorf("audit row %d: detail: %w", r.ID, err)
	}
	var b []byte
	for _, f := range [][]byte{
		[]byte(strconv.FormatInt(r.ID, 10)), []byte(r.TenantID), []byte(r.At.UTC().Format(time.RFC3339Nano)),
		[]byte(r.Actor), []byte(r.Action), []byte(r.SubjectType), []byte(r.SubjectID), detail,
		[]byte(strconv.FormatUint(r.XID, 10)),
	} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// CanonicalJSON re-encodes JSON with object keys sorted and numbers as
// written: what a detail reads as however jsonb has reordered and spaced it.
func CanonicalJSON(raw []byte) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v) // map keys marshal sorted
}
