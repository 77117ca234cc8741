package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// minRSABits is the smallest RSA modulus accepted for RS384; SMART Backend
// Services and NIST SP 800-131A both set 2048.
const minRSABits = 2048

// ParsePrivateKeyPEM reads the first private key in a PEM document: PKCS #8
// ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"),
// skipping an "EC PARAMETERS" block as openssl writes it. It returns an
// *rsa.PrivateKey of at least 2048 bits or an *ecdsa.PrivateKey on P-384, and
// ErrUnsupportedKey for anything else. Encrypted PEM is refused. Errors never
// quote key material.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: no PEM private key block found", ErrUnsupportedKey)
		}
		if _, ok := block.Headers["Proc-Type"]; ok {
			return nil, fmt.Errorf("%w: encrypted PEM is not supported", ErrUnsupportedKey)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: encrypted PKCS #8 is not supported", ErrUnsupportedKey)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("%w: PEM block is not a private key", ErrUnsupportedKey)
		}
		if err != nil {
			// x509 errors describe the structure, not the key bytes.
			return nil, fmt.Errorf("%w: %s block: %w", ErrUnsupportedKey, block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: key cannot sign", ErrUnsupportedKey)
		}
		if _, err := jwsAlg(signer); err != nil {
			return nil, err
		}
		return signer, nil
	}
}

// jwsAlg names the JWS algorithm the key signs with, or refuses the key.
func jwsAlg(k crypto.Signer) (string, error) {
	if k == nil {
		return "", fmt.Errorf("%w: no key", ErrUnsupportedKey)
	}
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		if pub.N == nil || pub.N.BitLen() < minRSABits {
			return "", fmt.Errorf("%w: RSA key shorter than %d bits", ErrUnsupportedKey, minRSABits)
		}
		return "RS384", nil
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P384() {
			return "", fmt.Errorf("%w: ECDSA key is not on P-384 (ES384)", ErrUnsupportedKey)
		}
		return "ES384", nil
	default:
		return "", fmt.Errorf("%w: key type must be RSA or ECDSA P-384", ErrUnsupportedKey)
	}
}
