package client

import (
	"crypto"
	"crypto/rand"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"time"
)

// assertionLifetime is how far ahead a client assertion's exp is set. SMART
// allows at most five minutes; one minute less keeps a token endpoint whose
// clock runs behind ours from rejecting it.
const assertionLifetime = 4 * time.Minute

// es384Size is the width of r and of s in a JWS ES384 signature (RFC 7518
// section 3.4): the P-384 group order is 384 bits.
const es384Size = 48

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

type jwtClaims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
	Jti string `json:"jti"`
}

// newJTI returns 128 random bits, base64url: never repeated in practice.
func newJTI() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("fhir/client: jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// signAssertion builds and signs a private_key_jwt client assertion
// (RFC 7523; SMART App Launch v2 Backend Services).
func signAssertion(key crypto.Signer, kid, clientID, aud string, now time.Time) (string, error) {
	alg, err := jwsAlg(key)
	if err != nil {
		return "", err
	}
	jti, err := newJTI()
	if err != nil {
		return "", err
	}
	h, err := json.Marshal(jwtHeader{Alg: alg, Kid: kid, Typ: "JWT"})
	if err != nil {
		return "", fmt.Errorf("fhir/client: assertion header: %w", err)
	}
	c, err := json.Marshal(jwtClaims{
		Iss: clientID, Sub: clientID, Aud: aud,
		Exp: now.Add(assertionLifetime).Unix(), Iat: now.Unix(), Jti: jti,
	})
	if err != nil {
		return "", fmt.Errorf("fhir/client: assertion claims: %w", err)
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	digest := sha512.Sum384([]byte(input))
	// For an *rsa.PrivateKey with crypto.SHA384 as opts, Sign is
	// rsa.SignPKCS1v15 (RS384); for an *ecdsa.PrivateKey it is an ASN.1
	// ECDSA signature over the SHA-384 digest, converted below.
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA384)
	if err != nil {
		return "", fmt.Errorf("fhir/client: signing assertion: %w", err)
	}
	if alg == "ES384" {
		if sig, err = ecdsaRaw(sig, es384Size); err != nil {
			return "", err
		}
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ecdsaRaw converts an ASN.1 DER ECDSA signature to the JWS form: r and s as
// fixed-width big-endian integers, concatenated.
func ecdsaRaw(der []byte, size int) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil ||
		rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > size*8 || rs.S.BitLen() > size*8 {
		return nil, fmt.Errorf("fhir/client: signing assertion: malformed ECDSA signature")
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}
