package seal

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// IndexKeys key blind indexes. Each configured key has a version (1, 2, …);
// a tenant's index key of a version is derived from that version's key with
// HKDF, the tenant id in the info, so one patient indexes differently in
// two tenants. An index value names its version ("v2:…"), so a lookup
// probes every configured version and a rotation (a new primary version, or
// a tenant moved to one) needs no downtime: rows of the old version are
// still found until `tidings keys reindex` rewrites them.
//
// Version 0 is the format before versions: one global HMAC key for all
// tenants, no prefix. Its key is the key of version 1 (the key a
// single-key configuration names), so rows written before are found as
// long as version 1 is configured.
type IndexKeys struct {
	keys     map[int][]byte
	primary  int
	tenants  map[string]int // a tenant's own primary version
	versions []int          // newest first
	derived  sync.Map       // tenantKey -> []byte
}

type tenantKey struct {
	tenant  string
	version int
}

// oldest is the key of the lowest configured version.
func (ix *IndexKeys) oldest() []byte {
	low := 0
	for v := range ix.keys {
		if low == 0 || v < low {
			low = v
		}
	}
	return ix.keys[low]
}

// ParseIndexKeys reads TIDINGS_BLIND_INDEX_KEY: either one base64 key of 32
// bytes (version 1) or "1:base64,2:base64" with positive versions.
func ParseIndexKeys(spec string) (map[int][]byte, error) {
	spec = strings.TrimSpace(spec)
	if !strings.Contains(spec, ":") {
		raw, err := decodeB64(spec)
		if err != nil || len(raw) < 32 {
			return nil, fmt.Errorf("%w: blind index key: want base64 of 32 bytes, or version:base64,…", ErrConfig)
		}
		return map[int][]byte{1: raw}, nil
	}
	byID, err := ParseKeys(spec)
	if err != nil {
		return nil, err
	}
	keys := map[int][]byte{}
	for id, raw := range byID {
		version, err := strconv.Atoi(strings.TrimPrefix(id, "v"))
		if err != nil || version < 1 || version > 1<<20 {
			return nil, fmt.Errorf("%w: blind index key %q: the id must be a positive version number", ErrConfig, id)
		}
		if _, dup := keys[version]; dup {
			return nil, fmt.Errorf("%w: blind index key version %d: listed twice", ErrConfig, version)
		}
		keys[version] = raw
	}
	return keys, nil
}

// NewIndexKeys builds the index keys. primary is the version new indexes
// use (0: the only one, which there must be); tenants moves single tenants
// to another configured version (a rotation of one tenant's key).
func NewIndexKeys(keys map[int][]byte, primary int, tenants map[string]int) (*IndexKeys, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no blind index keys", ErrConfig)
	}
	ix := &IndexKeys{keys: map[int][]byte{}, tenants: map[string]int{}}
	for v, raw := range keys {
		if v < 1 || len(raw) < 32 {
			return nil, fmt.Errorf("%w: blind index key version %d", ErrConfig, v)
		}
		ix.keys[v] = append([]byte(nil), raw...)
		ix.versions = append(ix.versions, v)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(ix.versions)))
	if primary == 0 {
		if len(keys) > 1 {
			return nil, fmt.Errorf("%w: %d blind index keys and no primary version named", ErrConfig, len(keys))
		}
		primary = ix.versions[0]
	}
	if _, ok := keys[primary]; !ok {
		return nil, fmt.Errorf("%w: primary blind index version %d is not configured", ErrConfig, primary)
	}
	ix.primary = primary
	for t, v := range tenants {
		if _, ok := keys[v]; !ok {
			return nil, fmt.Errorf("%w: tenant %q: blind index version %d is not configured", ErrConfig, t, v)
		}
		ix.tenants[t] = v
	}
	return ix, nil
}

// Version is the index version a tenant's new indexes use.
func (ix *IndexKeys) Version(tenant string) int {
	if v, ok := ix.tenants[tenant]; ok {
		return v
	}
	return ix.primary
}

// Versions are the configured versions, newest first.
func (ix *IndexKeys) Versions() []int { return append([]int(nil), ix.versions...) }

func (ix *IndexKeys) tenantKey(tenant string, version int) []byte {
	tk := tenantKey{tenant, version}
	if k, ok := ix.derived.Load(tk); ok {
		return k.([]byte)
	}
	k, err := hkdf.Key(sha256.New, ix.keys[version], []byte("tidings blind index"), "v"+strconv.Itoa(version)+"\x00"+tenant, 32)
	if err != nil {
		panic("seal: hkdf: " + err.Error()) // only for lengths beyond 255 blocks
	}
	ix.derived.Store(tk, k)
	return k
}

func mac(key []byte, purpose, value string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// At is the index of a value in a tenant under one configured version
// (0: the global format before versions).
func (ix *IndexKeys) At(tenant string, version int, purpose, value string) string {
	if version == 0 {
		return mac(ix.keys[1], purpose, value)
	}
	return "v" + strconv.Itoa(version) + ":" + mac(ix.tenantKey(tenant, version), purpose, value)
}

// Index is the index new rows of the tenant carry.
func (ix *IndexKeys) Index(tenant, purpose, value string) string {
	return ix.At(tenant, ix.Version(tenant), purpose, value)
}

// Probes are every index the value may carry in the tenant's rows: the
// current version's first, then the other configured versions, then
// version 0 while version 1 is configured.
func (ix *IndexKeys) Probes(tenant, purpose, value string) []string {
	cur := ix.Version(tenant)
	out := make([]string, 0, len(ix.versions)+1)
	out = append(out, ix.At(tenant, cur, purpose, value))
	for _, v := range ix.versions {
		if v != cur {
			out = append(out, ix.At(tenant, v, purpose, value))
		}
	}
	if _, ok := ix.keys[1]; ok {
		out = append(out, ix.At(tenant, 0, purpose, value))
	}
	return out
}

// IndexVersion reads the version an index value was made with (0 for one
// without a prefix).
func IndexVersion(index string) int {
	rest, ok := strings.CutPrefix(index, "v")
	if !ok {
		return 0
	}
	n, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0
	}
	v, err := strconv.Atoi(n)
	if err != nil {
		return 0
	}
	return v
}

// Matches reports, in constant time, whether index is value's index in the
// tenant under the version index names; false for a version no longer
// configured.
func (ix *IndexKeys) Matches(tenant, purpose, value, index string) bool {
	v := IndexVersion(index)
	known := v
	if v == 0 {
		known = 1
	}
	if _, ok := ix.keys[known]; !ok {
		return false
	}
	return hmac.Equal([]byte(ix.At(tenant, v, purpose, value)), []byte(index))
}
