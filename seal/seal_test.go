package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
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

func TestSealOpenRoundTripAndRotation(t *testing.T) {
	old := mustRing(t, "k1:"+key(1), "")
	sealedOld := old.Seal([]byte("Jane Canary S06.0X1A"), "task:event")
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
	got, err := rotated.Open(sealedOld, "task:event")
	if err != nil || string(got) != "Jane Canary S06.0X1A" {
		t.Fatalf("open old = %q, %v", got, err)
	}
	sealedNew := rotated.Seal([]byte("x"), "task:event")
	if kid, _ := KeyID(sealedNew); kid != "k2" {
		t.Fatalf("new key id = %q", kid)
	}
	if _, err := old.Open(sealedNew, "task:event"); !errors.Is(err, ErrUnknownKey) {
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
	if kid, _ := KeyID(k.Seal([]byte("x"), "ctx")); kid != "k10" {
		t.Fatalf("sealed with %q, want k10", kid)
	}
	if one := mustRing(t, "k9:"+key(9), ""); one.Primary() != "k9" {
		t.Fatalf("a single key is the primary; got %q", one.Primary())
	}
}

func TestOpenRejectsTamperingAndWrongContext(t *testing.T) {
	k := mustRing(t, "k1:"+key(1), "")
	s := k.Seal([]byte("payload"), "a")
	if _, err := k.Open(s, "b"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong context: %v", err)
	}
	for i := range s {
		bad := append([]byte(nil), s...)
		bad[i] ^= 0x40
		if _, err := k.Open(bad, "a"); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := k.Open(nil, "a"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("nil: %v", err)
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
	if a.BlindIndex("patient", "Patient/1") != b.BlindIndex("patient", "Patient/1") {
		t.Error("blind index changed with the sealing key; it must depend only on the index key")
	}
	if a.BlindIndex("patient", "Patient/1") == a.BlindIndex("patient", "Patient/2") {
		t.Error("different values collide")
	}
	if a.BlindIndex("patient", "x") == a.BlindIndex("email", "x") {
		t.Error("purposes collide")
	}
}

func FuzzOpen(f *testing.F) {
	k := mustRing(f, "k1:"+key(1), "")
	f.Add(k.Seal([]byte("hello"), "ctx"))
	f.Add([]byte{1, 2, 'k', '1'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, err := k.Open(b, "ctx")
		if err == nil && !bytes.Equal(plain, []byte("hello")) {
			// Any accepted value must be one we sealed; GCM makes forgeries infeasible.
			t.Fatalf("forged value opened: %q", plain)
		}
	})
}
