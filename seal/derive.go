package seal

import (
	"crypto/hmac"
	"crypto/sha256"
)

// DeriveKey is a 32-byte key for label ("link tokens v1"), derived from the
// oldest configured blind index key version: stable while that version is
// configured, and different for every label, so a key derived for one use
// never serves another and the index key itself never leaves the keyring.
// Removing that version (after a reindex) changes it; a use whose values
// must outlive that takes a key of its own (TIDINGS_LINK_KEY).
func (k *Keyring) DeriveKey(label string) []byte {
	m := hmac.New(sha256.New, k.index.oldest())
	m.Write([]byte("tidings derived key\x00"))
	m.Write([]byte(label))
	return m.Sum(nil)
}
