package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/seal/sealtest"
)

func mustRing(t testing.TB, spec, primary string) *Keyring {
	t.Helper()
	keys, err := ParseKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeyring(keys, primary, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func key(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

var taskPlace = Place{Table: "asynq", Column: "event"}

func TestSealOpenRoundTripAndRotation(t *testing.T) {
	old := mustRing(t, "k1:"+key(1), "")
	sealedOld := old.Seal([]byte("Jane Canary S06.0X1A"), taskPlace)
	if bytes.Contains(sealedOld, []byte("Canary")) {
		t.Fatal("plaintext visible in sealed value")
	}
	if kid, _ := KeyID(sealedOld); kid != "k1" {
		t.Fatalf("key id = %q", kid)
	}
	// Rotate: k2 is named primary, k1 still opens old values.
	rotated := mustRing(t, "k1:"+key(1)+",k2:"+key(2), "k2")
	if rotated.Primary() != "k2" {
		t.Fatalf("primary = %q", rotated.Primary())
	}
	got, err := rotated.Open(sealedOld, taskPlace)
	if err != nil || string(got) != "Jane Canary S06.0X1A" {
		t.Fatalf("open old = %q, %v", got, err)
	}
	if rotated.Current(sealedOld) || !old.Current(sealedOld) {
		t.Fatal("Current does not follow the primary key")
	}
	sealedNew := rotated.Seal([]byte("x"), taskPlace)
	if kid, _ := KeyID(sealedNew); kid != "k2" {
		t.Fatalf("new key id = %q", kid)
	}
	if _, err := old.Open(sealedNew, taskPlace); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old ring opening new value: %v", err)
	}
}

// The primary key is named, never the lexically last id: "k10" sorts
// before "k9", and a keyring that guessed would seal with the old key.
func TestPrimaryKeyIsExplicit(t *testing.T) {
	spec := "k9:" + key(9) + ",k10:" + key(10)
	keys, err := ParseKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeyring(keys, "", bytes.Repeat([]byte{7}, 32)); !errors.Is(err, ErrConfig) {
		t.Fatalf("two keys and no primary: %v", err)
	}
	if _, err := NewKeyring(keys, "k11", bytes.Repeat([]byte{7}, 32)); err == nil || !strings.Contains(err.Error(), `"k11" is not among the keys`) {
		t.Fatalf("unknown primary: %v", err)
	}
	k := mustRing(t, spec, "k10")
	if kid, _ := KeyID(k.Seal([]byte("x"), taskPlace)); kid != "k10" {
		t.Fatalf("sealed with %q, want k10", kid)
	}
	if one := mustRing(t, "k9:"+key(9), ""); one.Primary() != "k9" {
		t.Fatalf("a single key is the primary; got %q", one.Primary())
	}
}

func TestOpenRejectsTamperingAndWrongPlace(t *testing.T) {
	k := mustRing(t, "k1:"+key(1), "")
	home := Place{Tenant: "t1", Table: "contacts", Column: "email_sealed", Row: []string{"idx1"}}
	s := k.Seal([]byte("payload"), home)
	if got, err := k.Open(s, home); err != nil || string(got) != "payload" {
		t.Fatalf("open at home: %q, %v", got, err)
	}
	elsewhere := []Place{
		{Tenant: "t2", Table: "contacts", Column: "email_sealed", Row: []string{"idx1"}},
		{Tenant: "t1", Table: "contacts", Column: "confidential_email_sealed", Row: []string{"idx1"}},
		{Tenant: "t1", Table: "runs", Column: "email_sealed", Row: []string{"idx1"}},
		{Tenant: "t1", Table: "contacts", Column: "email_sealed", Row: []string{"idx2"}},
		{Tenant: "t1", Table: "contacts", Column: "email_sealed"},
		{Tenant: "t1", Table: "contacts", Column: "email_sealed", Row: []string{"idx", "1"}},
		// Shifting a byte between adjacent fields changes the encoding.
		{Tenant: "t1c", Table: "ontacts", Column: "email_sealed", Row: []string{"idx1"}},
	}
	for _, p := range elsewhere {
		if _, err := k.Open(s, p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("opened at %+v: %v", p, err)
		}
	}
	for i := range s {
		bad := append([]byte(nil), s...)
		bad[i] ^= 0x40
		if _, err := k.Open(bad, home); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := k.Open(nil, home); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("nil: %v", err)
	}
}

func sealV1(t *testing.T, raw byte, kid, context string, plain []byte) []byte {
	t.Helper()
	return sealtest.SealV1(bytes.Repeat([]byte{raw}, 32), kid, context, plain)
}

func TestVersion1ValuesStillOpen(t *testing.T) {
	k := mustRing(t, "k1:"+key(1)+",k2:"+key(2), "k2")
	v1 := sealV1(t, 1, "k1", "contacts.email_sealed", []byte("old@example.org"))
	p := Place{Tenant: "t1", Table: "contacts", Column: "email_sealed", Row: []string{"i"}}
	if got, err := k.Open(v1, p); err != nil || string(got) != "old@example.org" {
		t.Fatalf("v1 value: %q, %v", got, err)
	}
	if k.Current(v1) {
		t.Fatal("a version-1 value counts as current")
	}
	if h, _ := ParseHeader(v1); h.Version != 1 || h.KeyID != "k1" {
		t.Fatalf("header %+v", h)
	}
	if _, err := k.Open(v1, Place{Table: "contacts", Column: "confidential_email_sealed"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("v1 value opened in another column: %v", err)
	}
	task := sealV1(t, 2, "k2", "asynq:event", []byte("t"))
	if _, err := k.Open(task, Place{Table: "asynq", Column: "event", Legacy: "asynq:event"}); err != nil {
		t.Fatalf("v1 task with its legacy context: %v", err)
	}
	// A version-2 value relabelled as version 1 does not open.
	v2 := k.Seal([]byte("x"), p)
	v2[0] = 1
	if _, err := k.Open(v2, Place{Table: "contacts", Column: "email_sealed"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("downgraded value: %v", err)
	}
}

func TestParseKeysReportsEveryProblem(t *testing.T) {
	_, err := ParseKeys("nocolon, bad id!:" + key(1) + ",short:AAAA,k1:" + key(1) + ",k1:" + key(2))
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"key 1", "key 2", `"short"`, `"k1": listed twice`} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if bytes.Contains([]byte(err.Error()), []byte(key(2))) {
		t.Error("error message leaks key material")
	}
}

func TestBlindIndexIsStableAndKeyed(t *testing.T) {
	a := mustRing(t, "k1:"+key(1), "")
	b := mustRing(t, "k9:"+key(9), "")
	if a.BlindIndex("t1", "patient", "Patient/1") != b.BlindIndex("t1", "patient", "Patient/1") {
		t.Error("blind index changed with the sealing key; it must depend only on the index key")
	}
	if a.BlindIndex("t1", "patient", "Patient/1") == a.BlindIndex("t1", "patient", "Patient/2") {
		t.Error("different values collide")
	}
	if a.BlindIndex("t1", "patient", "x") == a.BlindIndex("t1", "email", "x") {
		t.Error("purposes collide")
	}
	if a.BlindIndex("t1", "patient", "Patient/1") == a.BlindIndex("t2", "patient", "Patient/1") {
		t.Error("one patient indexes alike in two tenants")
	}
	if got := a.BlindIndex("t1", "patient", "Patient/1"); !strings.HasPrefix(got, "v1:") || IndexVersion(got) != 1 {
		t.Errorf("index %q does not name version 1", got)
	}
}

// indexRing is a keyring whose index keys are versions 1 and 2 (key bytes
// 7 and 8), primary, with tenant overrides.
func indexRing(t *testing.T, primary int, tenants map[string]int) *Keyring {
	t.Helper()
	ix, err := NewIndexKeys(map[int][]byte{1: bytes.Repeat([]byte{7}, 32), 2: bytes.Repeat([]byte{8}, 32)}, primary, tenants)
	if err != nil {
		t.Fatal(err)
	}
	return mustRing(t, "k1:"+key(1), "").WithIndexKeys(ix)
}

func TestBlindIndexRotation(t *testing.T) {
	old := mustRing(t, "k1:"+key(1), "") // index key 7 as version 1
	v1 := old.BlindIndex("t1", "patient", "Patient/1")
	legacy := mac(bytes.Repeat([]byte{7}, 32), "patient", "Patient/1") // before versions
	if IndexVersion(legacy) != 0 {
		t.Fatalf("a legacy index reads as version %d", IndexVersion(legacy))
	}

	rotated := indexRing(t, 2, nil)
	v2 := rotated.BlindIndex("t1", "patient", "Patient/1")
	if IndexVersion(v2) != 2 || v2 == v1 {
		t.Fatalf("after rotation the index is %q (version %d)", v2, IndexVersion(v2))
	}
	probes := rotated.BlindIndexes("t1", "patient", "Patient/1")
	if len(probes) != 3 || probes[0] != v2 || probes[1] != v1 || probes[2] != legacy {
		t.Errorf("probes = %q, want current, version 1, legacy", probes)
	}

	// One tenant moved to version 2 alone; the others stay on 1.
	one := indexRing(t, 1, map[string]int{"t1": 2})
	if got := one.BlindIndex("t1", "patient", "Patient/1"); got != v2 {
		t.Errorf("t1 moved to version 2 indexes as %q", got)
	}
	if got := one.BlindIndex("t2", "patient", "Patient/1"); IndexVersion(got) != 1 {
		t.Errorf("t2 left on version 1 indexes as %q", got)
	}

	// Without version 1 the legacy rows are no longer probed.
	ix, err := NewIndexKeys(map[int][]byte{2: bytes.Repeat([]byte{8}, 32)}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if probes := old.WithIndexKeys(ix).BlindIndexes("t1", "patient", "Patient/1"); len(probes) != 1 || probes[0] != v2 {
		t.Errorf("probes without version 1 = %q", probes)
	}
}

func TestIndexKeysConfig(t *testing.T) {
	keys, err := ParseIndexKeys("1:" + key(1) + ", v2:" + key(2))
	if err != nil || len(keys) != 2 {
		t.Fatalf("ParseIndexKeys = %v, %v", len(keys), err)
	}
	if _, err := NewIndexKeys(keys, 0, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("two versions and no primary: %v", err)
	}
	if _, err := NewIndexKeys(keys, 3, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("an unconfigured primary: %v", err)
	}
	if _, err := NewIndexKeys(keys, 2, map[string]int{"t": 5}); !errors.Is(err, ErrConfig) {
		t.Errorf("a tenant on an unconfigured version: %v", err)
	}
	if single, err := ParseIndexKeys(key(3)); err != nil || len(single[1]) != 32 {
		t.Errorf("a single key is not version 1: %v", err)
	}
	for _, bad := range []string{"0:" + key(1), "x:" + key(1), "1:short", "1:" + key(1) + ",1:" + key(2)} {
		if _, err := ParseIndexKeys(bad); !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), key(1)) {
			t.Errorf("ParseIndexKeys(%.6s…) = %v", bad, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	k := mustRing(f, "k1:"+key(1), "")
	p := Place{Tenant: "t", Table: "x", Column: "y", Row: []string{"1"}}
	f.Add(k.Seal([]byte("hello"), p))
	f.Add([]byte{1, 2, 'k', '1'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, err := k.Open(b, p)
		if err == nil && !bytes.Equal(plain, []byte("hello")) {
			// Any accepted value must be one we sealed; GCM makes forgeries infeasible.
			t.Fatalf("forged value opened: %q", plain)
		}
	})
}

// FuzzParseHeader: the header parser takes bytes read from the database;
// it must never panic, and what it accepts must be self-consistent.
func FuzzParseHeader(f *testing.F) {
	k := mustRing(f, "k1:"+key(1), "")
	f.Add(k.Seal([]byte("hello"), taskPlace))
	f.Add([]byte{1, 2, 'k', '1'})
	f.Add([]byte{2, 0})
	f.Add([]byte{2, 255, 'a'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("accepted version %d", h.Version)
		}
		if h.Len != 2+len(h.KeyID) || h.Len > len(b) || string(b[2:h.Len]) != h.KeyID || !validID(h.KeyID) {
			t.Fatalf("header %+v inconsistent with %x", h, b)
		}
	})
}

// The hot path makes an index per notice and, during a rotation, probes
// every version: derived tenant keys are cached, so each costs one HMAC.
func BenchmarkBlindIndexes(b *testing.B) {
	k, err := NewIndexKeys(map[int][]byte{1: bytes.Repeat([]byte{7}, 32), 2: bytes.Repeat([]byte{8}, 32)}, 2, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			k.Index("t1", "patient", "Patient/p1")
		}
	})
	b.Run("before-versions", func(b *testing.B) { // the global index of earlier releases
		for b.Loop() {
			k.At("t1", 0, "patient", "Patient/p1")
		}
	})
	b.Run("probes", func(b *testing.B) {
		for b.Loop() {
			k.Probes("t1", "patient", "Patient/p1")
		}
	})
}
