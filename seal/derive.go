package seal

import (
	"crypto/hmac"
	"crypto/sha256"
)

// DeriveKey is a 32-byte key for label ("link tokens v1"), derived from the
// blind index key: stable for the life of the data like the indexes, and
// different for every label, so a key derived for one use never serves
// another and the index key itself never leaves the keyring.
func (k *Keyring) DeriveKey(label string) []byte {
	m := hmac.New(sha256.New, k.index)
	m.Write([]byte("tidings derived key\x00"))
	m.Write([]byte(label))
	return m.Sum(nil)
}
