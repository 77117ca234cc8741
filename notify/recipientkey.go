package notify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Kinds of recipient key.
const (
	KeySMIME   = "smime"   // an X.509 certificate for S/MIME (CMS EnvelopedData)
	KeyOpenPGP = "openpgp" // an OpenPGP public key (PGP/MIME)
)

// MaxRecipientKeyBytes bounds the key material a contact may carry.
const MaxRecipientKeyBytes = 32 << 10

// ErrUnusableKey wraps every reason a recipient key cannot be used to
// encrypt a message. The messages name the rule, never the key material
// or an address it holds.
var ErrUnusableKey = errors.New("the encryption key cannot be used")

// RecipientKey is a contact's key, parsed and checked: an S/MIME
// certificate or an OpenPGP public key that may encrypt mail to the patient.
// It identifies the patient (a certificate or a user id names the address),
// so it logs as [REDACTED].
type RecipientKey struct {
	Kind   string
	cert   *x509.Certificate
	entity *openpgp.Entity
}

// LogValue keeps the key, which names the patient, out of logs.
func (RecipientKey) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

func unusable(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnusableKey}, args...)...)
}

// KindOf says which kind of key material is: KeySMIME for a PEM
// certificate, KeyOpenPGP for an armored OpenPGP public key block, "" for
// anything else.
func KindOf(material string) string {
	s := strings.TrimSpace(material)
	switch {
	case strings.HasPrefix(s, "-----BEGIN CERTIFICATE-----"):
		return KeySMIME
	case strings.HasPrefix(s, "-----BEGIN PGP PUBLIC KEY BLOCK-----"):
		return KeyOpenPGP
	}
	return ""
}

// ParseRecipientKey reads a PEM certificate or an armored OpenPGP public
// key and checks that it can encrypt mail at now: not expired (nor not yet
// valid), not revoked (OpenPGP: a revocation signature in the key), usable
// for encryption (S/MIME: keyEncipherment and email protection when the
// certificate restricts its use; OpenPGP: a subkey or primary key flagged
// for encrypting communications) and strong enough (RSA of 2048 bits or
// more; OpenPGP also EC on NIST P-256, P-384, P-521, Curve25519 or
// Curve448). Every refusal wraps ErrUnusableKey. Revocation of an S/MIME
// certificate by its CA (CRL, OCSP) is not checked: the service reaches no
// CA.
func ParseRecipientKey(material string, now time.Time) (*RecipientKey, error) {
	if len(material) > MaxRecipientKeyBytes {
		return nil, unusable("the key is larger than %d bytes", MaxRecipientKeyBytes)
	}
	switch KindOf(material) {
	case KeySMIME:
		return parseSMIMECert(material, now)
	case KeyOpenPGP:
		return parseOpenPGPKey(material, now)
	}
	if strings.Contains(material, "PRIVATE KEY") {
		return nil, unusable("that is a private key; give only the certificate or public key")
	}
	return nil, unusable("it is neither a PEM certificate (BEGIN CERTIFICATE) nor an armored OpenPGP public key (BEGIN PGP PUBLIC KEY BLOCK)")
}

// Check says whether k can still encrypt at now (a key valid when it was
// registered may have expired or been revoked since).
func (k *RecipientKey) Check(now time.Time) error {
	switch k.Kind {
	case KeySMIME:
		return checkSMIMECert(k.cert, now)
	case KeyOpenPGP:
		return checkOpenPGPEntity(k.entity, now)
	}
	return unusable("unknown kind")
}

func parseSMIMECert(material string, now time.Time) (*RecipientKey, error) {
	rest := []byte(strings.TrimSpace(material))
	var certs []*x509.Certificate
	for len(bytes.TrimSpace(rest)) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		switch {
		case block == nil:
			return nil, unusable("the certificate is not valid PEM")
		case strings.Contains(block.Type, "PRIVATE KEY"):
			return nil, unusable("that includes a private key; give only the certificate")
		case block.Type != "CERTIFICATE":
			return nil, unusable("a PEM block is not a CERTIFICATE")
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, unusable("the certificate does not parse as X.509")
		}
		certs = append(certs, c)
	}
	if len(certs) != 1 {
		return nil, unusable("give exactly one certificate, the patient's (%d given)", len(certs))
	}
	if err := checkSMIMECert(certs[0], now); err != nil {
		return nil, err
	}
	return &RecipientKey{Kind: KeySMIME, cert: certs[0]}, nil
}

func checkSMIMECert(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return unusable("the certificate expired")
	case now.Before(c.NotBefore):
		return unusable("the certificate is not valid yet")
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageKeyEncipherment == 0:
		return unusable("the certificate's key usage does not allow keyEncipherment")
	case len(c.ExtKeyUsage) > 0 && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) &&
		!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny):
		return unusable("the certificate's extended key usage does not allow email protection")
	}
	switch pub := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < 2048 {
			return unusable("the certificate's RSA key has %d bits; at least 2048", bits)
		}
	case *ecdsa.PublicKey:
		// CMS key agreement (ECDH) recipients are not supported: the
		// message could not be encrypted to it.
		return unusable("S/MIME certificates with EC keys are not supported; use an RSA key of 2048 bits or more")
	default:
		return unusable("the certificate's key is not RSA")
	}
	return nil
}

func parseOpenPGPKey(material string, now time.Time) (*RecipientKey, error) {
	ents, err := openpgp.ReadArmoredKeyRing(strings.NewReader(material))
	if err != nil {
		return nil, unusable("the OpenPGP key does not parse")
	}
	if len(ents) != 1 {
		return nil, unusable("give exactly one OpenPGP key, the patient's (%d given)", len(ents))
	}
	e := ents[0]
	if e.PrivateKey != nil {
		return nil, unusable("that is a private key; give only the public key")
	}
	if err := checkOpenPGPEntity(e, now); err != nil {
		return nil, err
	}
	return &RecipientKey{Kind: KeyOpenPGP, entity: e}, nil
}

func checkOpenPGPEntity(e *openpgp.Entity, now time.Time) error {
	if e.Revoked(now) {
		return unusable("the OpenPGP key is revoked")
	}
	if sig, _ := e.PrimarySelfSignature(); sig == nil || e.PrimaryKey.KeyExpired(sig, now) || sig.SigExpired(now) {
		return unusable("the OpenPGP key expired (or has no valid self-signature)")
	}
	if err := strongOpenPGP(e.PrimaryKey, "primary key"); err != nil {
		return err
	}
	k, ok := e.EncryptionKey(now)
	if !ok {
		return unusable("the OpenPGP key has no valid encryption subkey (expired, revoked or none flagged for encryption)")
	}
	return strongOpenPGP(k.PublicKey, "encryption key")
}

// strongOpenPGP accepts RSA of 2048 bits or more and EC on curves of at
// least 256 bits that are in wide use (no secp256k1, no DSA or ElGamal).
func strongOpenPGP(pk *packet.PublicKey, which string) error {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		bits, err := pk.BitLength()
		if err != nil || bits < 2048 {
			return unusable("the OpenPGP %s is RSA of %d bits; at least 2048", which, bits)
		}
		return nil
	case packet.PubKeyAlgoEd25519, packet.PubKeyAlgoX25519, packet.PubKeyAlgoEd448, packet.PubKeyAlgoX448:
		return nil
	case packet.PubKeyAlgoECDSA, packet.PubKeyAlgoECDH, packet.PubKeyAlgoEdDSA:
		curve, err := pk.Curve()
		if err == nil {
			switch curve {
			case packet.CurveNistP256, packet.CurveNistP384, packet.CurveNistP521, packet.Curve25519, packet.Curve448:
				return nil
			}
		}
		return unusable("the OpenPGP %s uses a curve other than P-256, P-384, P-521, Curve25519 or Curve448", which)
	}
	return unusable("the OpenPGP %s's algorithm is not RSA or a supported elliptic curve", which)
}

// ecdsaCurveOK is true for the NIST curves a tenant's S/MIME signing key
// may use.
func ecdsaCurveOK(c elliptic.Curve) bool {
	return c == elliptic.P256() || c == elliptic.P384() || c == elliptic.P521()
}
