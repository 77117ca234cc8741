package notify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/tidings-health/tidings/notify/mailcrypttest"
)

// FuzzParseRecipientKey: whatever a contact request carries as a key, the
// parser returns a usable key or an ErrUnusableKey that quotes none of
// it, and never panics.
func FuzzParseRecipientKey(f *testing.F) {
	cert := mailcrypttest.PatientSMIME(f, f.TempDir(), "fuzz@example.org", time.Time{})
	f.Add(string(cert.CertPEM()))
	f.Add(armoredPGPKey(f, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA}, false, false))
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f.Add("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEZ\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, material string) {
		k, err := ParseRecipientKey(material, time.Now())
		if err == nil {
			if k == nil || (k.Kind != KeySMIME && k.Kind != KeyOpenPGP) {
				t.Fatalf("no error and key %v", k)
			}
			return
		}
		if !errors.Is(err, ErrUnusableKey) {
			t.Fatalf("error %v is not ErrUnusableKey", err)
		}
		msg := strings.TrimPrefix(err.Error(), ErrUnusableKey.Error())
		for _, line := range strings.Split(material, "\n") {
			if len(line) >= 12 && strings.Contains(msg, line) {
				t.Fatalf("the refusal %q quotes the key", err)
			}
		}
	})
}
