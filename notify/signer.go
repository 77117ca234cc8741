package notify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// MessageSigner signs the encrypted notices of one tenant: with an S/MIME
// certificate and its private key (the health plan's, as a CA issued it),
// with an OpenPGP private key, or with both. A notice encrypted for a
// patient's S/MIME certificate is signed with the S/MIME pair, one for an
// OpenPGP key with the OpenPGP key. TenantID "*" signs for every tenant:
// use it only for the service's own identity, since a tenant's signature
// must never vouch for another tenant's mail.
type MessageSigner struct {
	TenantID string
	// Cert is the S/MIME signing certificate, Chain its intermediates (put
	// in the message so the patient's client can build the path), Key its
	// private key (RSA of 2048 bits or more, or ECDSA on P-256/384/521).
	Cert  *x509.Certificate
	Chain []*x509.Certificate
	Key   crypto.Signer
	// OpenPGP is an OpenPGP private key, decrypted, that can sign.
	OpenPGP *openpgp.Entity
}

// LoadSMIMESigner reads an S/MIME signing certificate (PEM; the first is
// the signer's, any after it its intermediates) and its private key (PEM,
// PKCS#1, PKCS#8 or SEC 1) for tenant.
func LoadSMIMESigner(tenant, certFile, keyFile string) (MessageSigner, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return MessageSigner{}, fmt.Errorf("S/MIME signing key of tenant %s: %w", tenant, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return MessageSigner{}, fmt.Errorf("S/MIME signing key of tenant %s cannot sign", tenant)
	}
	s := MessageSigner{TenantID: tenant, Key: signer}
	for i, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return MessageSigner{}, fmt.Errorf("S/MIME signing certificate of tenant %s: %w", tenant, err)
		}
		if i == 0 {
			s.Cert = c
		} else {
			s.Chain = append(s.Chain, c)
		}
	}
	return s, nil
}

// LoadOpenPGPSigner reads an armored OpenPGP private key (not protected by
// a passphrase: the file's permissions protect it) for tenant.
func LoadOpenPGPSigner(tenant, keyFile string) (MessageSigner, error) {
	f, err := os.Open(keyFile)
	if err != nil {
		return MessageSigner{}, fmt.Errorf("OpenPGP signing key of tenant %s: %w", tenant, err)
	}
	defer f.Close()
	ents, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil || len(ents) != 1 {
		return MessageSigner{}, fmt.Errorf("OpenPGP signing key of tenant %s: want one armored private key", tenant)
	}
	return MessageSigner{TenantID: tenant, OpenPGP: ents[0]}, nil
}

// messageSigners are the channel's signers by tenant.
type messageSigners map[string]MessageSigner

// newMessageSigners checks signers and indexes them by tenant, merging a
// tenant's S/MIME and OpenPGP entries and reporting each bad one.
func newMessageSigners(signers []MessageSigner, now time.Time, bad func(string)) messageSigners {
	out := messageSigners{}
	for _, s := range signers {
		name := "message signer of tenant " + s.TenantID
		if s.TenantID == "" {
			bad("a message signer names no tenant (\"*\" for all)")
			continue
		}
		m := out[s.TenantID]
		m.TenantID = s.TenantID
		if s.Cert != nil || s.Key != nil {
			if m.Cert != nil {
				bad(name + " has two S/MIME certificates")
			}
			if problem := smimeSignerProblem(s, now); problem != "" {
				bad(name + ": " + problem)
			}
			m.Cert, m.Chain, m.Key = s.Cert, s.Chain, s.Key
		}
		if s.OpenPGP != nil {
			if m.OpenPGP != nil {
				bad(name + " has two OpenPGP keys")
			}
			if problem := openPGPSignerProblem(s.OpenPGP, now); problem != "" {
				bad(name + ": " + problem)
			}
			m.OpenPGP = s.OpenPGP
		}
		out[s.TenantID] = m
	}
	return out
}

func smimeSignerProblem(s MessageSigner, now time.Time) string {
	switch {
	case s.Cert == nil || s.Key == nil:
		return "an S/MIME signer needs both certificate and key"
	case now.After(s.Cert.NotAfter) || now.Before(s.Cert.NotBefore):
		return "the S/MIME certificate is not valid now"
	case s.Cert.KeyUsage != 0 && s.Cert.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return "the S/MIME certificate's key usage does not allow digitalSignature"
	}
	switch pub := s.Key.Public().(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return fmt.Sprintf("the S/MIME key is RSA of %d bits; at least 2048", pub.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if !ecdsaCurveOK(pub.Curve) {
			return "the S/MIME key's curve is not P-256, P-384 or P-521"
		}
	default:
		return "the S/MIME key is neither RSA nor ECDSA"
	}
	if eq, ok := s.Key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(s.Cert.PublicKey) {
		return "the S/MIME key does not match its certificate"
	}
	return ""
}

func openPGPSignerProblem(e *openpgp.Entity, now time.Time) string {
	k, ok := e.SigningKey(now)
	switch {
	case e.PrivateKey == nil:
		return "the OpenPGP key is a public key; signing needs the private key"
	case !ok || k.PrivateKey == nil:
		return "the OpenPGP key has no valid signing key"
	case k.PrivateKey.Encrypted:
		return "the OpenPGP key is protected by a passphrase; give it unprotected (the file's permissions protect it)"
	}
	if err := strongOpenPGP(k.PublicKey, "signing key"); err != nil {
		return strings.TrimPrefix(err.Error(), ErrUnusableKey.Error()+": ")
	}
	return ""
}

// signerFor is the signer of kind (KeySMIME, KeyOpenPGP) for tenant: the
// tenant's own, else the one for every tenant.
func (ss messageSigners) signerFor(tenant, kind string) (MessageSigner, bool) {
	for _, t := range []string{tenant, "*"} {
		s, ok := ss[t]
		if ok && (kind == KeySMIME && s.Cert != nil || kind == KeyOpenPGP && s.OpenPGP != nil) {
			return s, true
		}
	}
	return MessageSigner{}, false
}
