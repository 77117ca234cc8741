// Package sealtest makes values the way older releases sealed them, for tests
// that prove those values still open and are re-sealed by rotation.
package sealtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
)

// SealV1 seals plain as format version 1 did: the associated data was the
// header followed by a context string ("table.column" or "asynq:type").
func SealV1(key []byte, kid, context string, plain []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	out := append([]byte{1, byte(len(kid))}, kid...)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, append(append([]byte(nil), out...), context...))
}
