package notify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/tidings-health/tidings/notify/mailcrypttest"
)

const keyOwner = "keyowner.q7z@example.net"

// armoredPGPKey makes an OpenPGP key for keyOwner with cfg and returns it
// armored, public only unless private; revoke revokes it first.
func armoredPGPKey(t testing.TB, cfg *packet.Config, private, revoke bool) string {
	t.Helper()
	e, err := openpgp.NewEntity("Key Owner", "", keyOwner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if revoke {
		if err := e.RevokeKey(packet.KeyCompromised, "", cfg); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	typ := openpgp.PublicKeyType
	if private {
		typ = openpgp.PrivateKeyType
	}
	w, _ := armor.Encode(&buf, typ, nil)
	if private {
		err = e.SerializePrivate(w, nil)
	} else {
		err = e.Serialize(w)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.String()
}

func ecCertPEM(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: keyOwner},
		EmailAddresses: []string{keyOwner}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// Registration checks: expiry, key usage, algorithm strength, shape. Each
// refusal wraps ErrUnusableKey and names the rule, never the address or
// the key.
func TestParseRecipientKey(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cert := func(o mailcrypttest.CertOptions) string {
		o.CN, o.Email = "Key Owner "+keyOwner, keyOwner
		return string(mailcrypttest.NewCert(t, dir, nil, o).CertPEM())
	}
	encrypting := x509.KeyUsageKeyEncipherment
	email := []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	good := cert(mailcrypttest.CertOptions{KeyUsage: encrypting, ExtUsage: email})
	past := func() time.Time { return now.AddDate(-2, 0, 0) }
	ed := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA}

	for _, tc := range []struct {
		name, material string
		kind           string // "" when refused
		want           string // in the refusal
	}{
		{"S/MIME certificate", good, KeySMIME, ""},
		{"S/MIME without key usage extensions", cert(mailcrypttest.CertOptions{}), KeySMIME, ""},
		{"S/MIME expired", cert(mailcrypttest.CertOptions{NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.Add(-time.Minute), KeyUsage: encrypting}), "", "expired"},
		{"S/MIME not valid yet", cert(mailcrypttest.CertOptions{NotBefore: now.Add(time.Hour), KeyUsage: encrypting}), "", "not valid yet"},
		{"S/MIME signing only", cert(mailcrypttest.CertOptions{KeyUsage: x509.KeyUsageDigitalSignature}), "", "keyEncipherment"},
		{"S/MIME for TLS servers", cert(mailcrypttest.CertOptions{KeyUsage: encrypting, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), "", "email protection"},
		{"S/MIME RSA 1024", cert(mailcrypttest.CertOptions{Bits: 1024, KeyUsage: encrypting}), "", "1024 bits; at least 2048"},
		{"S/MIME EC", ecCertPEM(t), "", "EC keys are not supported"},
		{"S/MIME two certificates", good + good, "", "exactly one certificate"},
		{"S/MIME with its private key", good + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "", "private key"},
		{"S/MIME bad DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "", "does not parse"},
		{"OpenPGP Ed25519/Curve25519", armoredPGPKey(t, ed, false, false), KeyOpenPGP, ""},
		{"OpenPGP RSA 3072", armoredPGPKey(t, &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 3072}, false, false), KeyOpenPGP, ""},
		{"OpenPGP RSA 1024", armoredPGPKey(t, &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 1024}, false, false), "", "1024 bits; at least 2048"},
		{"OpenPGP expired", armoredPGPKey(t, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: past, KeyLifetimeSecs: 86400}, false, false), "", "expired"},
		{"OpenPGP revoked", armoredPGPKey(t, ed, false, true), "", "revoked"},
		{"OpenPGP private key", armoredPGPKey(t, ed, true, false), "", "private key"},
		{"OpenPGP garbage", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n", "", "does not parse"},
		{"a bare private key", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "", "private key"},
		{"anything else", "ssh-ed25519 AAAAC3Nza " + keyOwner, "", "neither a PEM certificate"},
		{"too large", strings.Repeat("A", MaxRecipientKeyBytes+1), "", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseRecipientKey(tc.material, time.Now()) // after the keys were made
			if tc.kind != "" {
				if err != nil || k.Kind != tc.kind {
					t.Fatalf("got %v, %v; want a %s key", k, err, tc.kind)
				}
				if err := k.Check(time.Now()); err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnusableKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrUnusableKey saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), keyOwner) || strings.Contains(err.Error(), "AAAA") {
				t.Fatalf("the refusal echoes the key: %v", err)
			}
		})
	}
}

// A key valid when registered is checked again when used.
func TestRecipientKeyCheckAtSendTime(t *testing.T) {
	p := mailcrypttest.PatientSMIME(t, t.TempDir(), keyOwner, time.Now().Add(time.Hour))
	k, err := ParseRecipientKey(string(p.CertPEM()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Check(time.Now().Add(2 * time.Hour)); !errors.Is(err, ErrUnusableKey) {
		t.Fatalf("an expired certificate checked %v", err)
	}
	pk, err := ParseRecipientKey(armoredPGPKey(t, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, KeyLifetimeSecs: 3600}, false, false), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := pk.Check(time.Now().Add(2 * time.Hour)); !errors.Is(err, ErrUnusableKey) {
		t.Fatalf("an expired OpenPGP key checked %v", err)
	}
}
