package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
)

// Keys are generated once per test binary: RSA generation is slow.
var testKeys = sync.OnceValues(func() (*rsa.PrivateKey, *ecdsa.PrivateKey) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return rk, ek
})

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8PEM(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func sec1PEM(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("EC PRIVATE KEY", der)
}

func TestParsePrivateKeyPEM(t *testing.T) {
	rk, ek := testKeys()
	// openssl ecparam -genkey writes the curve OID in its own block first.
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22})
	good := []struct {
		name string
		pem  []byte
		pub  crypto.PublicKey
	}{
		{"PKCS#8 RSA", pkcs8PEM(t, rk), &rk.PublicKey},
		{"PKCS#1 RSA", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), &rk.PublicKey},
		{"PKCS#8 P-384", pkcs8PEM(t, ek), &ek.PublicKey},
		{"SEC1 P-384", sec1PEM(t, ek), &ek.PublicKey},
		{"SEC1 P-384 after EC PARAMETERS", append(ecParams, sec1PEM(t, ek)...), &ek.PublicKey},
		{"text before the block", append([]byte("key for tidings\n"), pkcs8PEM(t, ek)...), &ek.PublicKey},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePrivateKeyPEM(tc.pem)
			if err != nil {
				t.Fatal(err)
			}
			if eq, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(tc.pub) {
				t.Fatal("parsed key is not the key that was encoded")
			}
		})
	}

	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1, 2, 3}})
	bad := []struct {
		name, wantMsg string
		pem           []byte
	}{
		{"RSA 1024", "shorter than 2048", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small))},
		{"P-256", "P-384", pkcs8PEM(t, p256)},
		{"Ed25519", "RSA or ECDSA", pkcs8PEM(t, edk)},
		{"no PEM", "no PEM", []byte("not a key")},
		{"certificate", "not a private key", pemBlock("CERTIFICATE", []byte{0x30, 0x00})},
		{"corrupt PKCS#8", "PRIVATE KEY block", pemBlock("PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x00})},
		{"encrypted PEM", "encrypted", encrypted},
		{"encrypted PKCS#8", "encrypted", pemBlock("ENCRYPTED PRIVATE KEY", []byte{0x30, 0x00})},
		{"only EC PARAMETERS", "no PEM", ecParams},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePrivateKeyPEM(tc.pem)
			if !errors.Is(err, ErrUnsupportedKey) || k != nil {
				t.Fatalf("got key=%v err=%v, want ErrUnsupportedKey", k != nil, err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not say %q", err, tc.wantMsg)
			}
		})
	}
}

// TestAssertionSignaturesVerify checks the two JWS encodings against the
// standard library's verifiers directly, including that ES384 is the raw
// 96-byte r||s form and not ASN.1.
func TestAssertionSignaturesVerify(t *testing.T) {
	rk, ek := testKeys()
	f := newFake(t)
	f.register("rs", "k-rs", &rk.PublicKey)
	f.register("es", "k-es", &ek.PublicKey)
	for _, tc := range []struct {
		client string
		kid    string
		key    crypto.Signer
	}{{"rs", "k-rs", rk}, {"es", "k-es", ek}} {
		a, err := signAssertion(tc.key, tc.kid, tc.client, f.tokenURL, f.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.verifyAssertion(a); err != nil {
			t.Fatalf("%s: %v", tc.client, err)
		}
	}
}
