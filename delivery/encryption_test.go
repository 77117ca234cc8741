package delivery

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/notify/mailcrypttest"
	"github.com/tidings-health/tidings/policy"
)

const keyHolder = "keyholder.m4v@example.org"

// A contact request gives at most one key, each in its own field.
func TestEncryptionKeyOf(t *testing.T) {
	cert := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	pgp := "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n"
	for _, tc := range []struct {
		smime, pgp, want, problem string
	}{
		{"", "", "", ""},
		{cert, "", cert, ""},
		{"", pgp, pgp, ""},
		{cert, pgp, "", "not both"},
		{pgp, "", "", "smime_certificate must be a PEM certificate"},
		{"", cert, "", "openpgp_key must be an armored OpenPGP public key"},
	} {
		got, err := EncryptionKeyOf(tc.smime, tc.pgp)
		if tc.problem == "" {
			if err != nil || got != tc.want {
				t.Errorf("EncryptionKeyOf: %q, %v", got, err)
			}
			continue
		}
		if !errors.Is(err, fault.Invalid) || !strings.Contains(err.Error(), tc.problem) || strings.Contains(err.Error(), "MIIB") {
			t.Errorf("err %v, want Invalid saying %q", err, tc.problem)
		}
	}
}

// Registration refuses a key that cannot encrypt, saying which rule it
// breaks and quoting neither the key nor the address; nothing is stored.
func TestRegisterRefusesAnUnusableKey(t *testing.T) {
	dir := t.TempDir()
	expired := mailcrypttest.PatientSMIME(t, dir, keyHolder, time.Now().Add(-time.Hour))
	cs := Contacts{} // no store: a refused contact never reaches it
	err := cs.Register(context.Background(), "t1", "p1", Contact{Email: keyHolder, EncryptionKey: string(expired.CertPEM())})
	if !errors.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "encryption key: the certificate expired") {
		t.Fatalf("err %v", err)
	}
	if strings.Contains(err.Error(), keyHolder) || strings.Contains(err.Error(), "BEGIN") {
		t.Fatalf("the refusal quotes the key or the address: %v", err)
	}
}

// emailChannel is an email channel (never dialled here) that signs
// tenant acme's S/MIME mail.
func emailChannel(t *testing.T) *notify.EmailChannel {
	t.Helper()
	_, tenant := mailcrypttest.TenantSMIME(t, t.TempDir())
	signer, err := notify.LoadSMIMESigner("acme", tenant.CertFile, tenant.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := notify.NewEmailChannel(notify.SMTPConfig{Host: "127.0.0.1", Port: 2525, From: "notices@tidings.example",
		RequireTLS: true, Signers: []notify.MessageSigner{signer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch
}

// A usable key makes the notice go encrypted, and the policy sees
// channel.security "message-encrypted"; a key that cannot be used now, or
// a tenant the channel has no signer for, sends the notice portal-only,
// recorded with the reason.
func TestEncryptionPerRecipient(t *testing.T) {
	dir := t.TempDir()
	ch := emailChannel(t)
	s := &Service{Channels: map[string]Channel{"email": ch}}
	valid := string(mailcrypttest.PatientSMIME(t, dir, keyHolder, time.Time{}).CertPEM())
	// A key that has expired since it was registered.
	expired := string(mailcrypttest.PatientSMIME(t, dir, keyHolder, time.Now().Add(-time.Minute)).CertPEM())
	base := policy.Input{NoticeType: notify.NoticeTypeEOB, Purpose: "payment"}

	for _, tc := range []struct {
		name, tenant, key string
		encrypted         bool
		problem           string
	}{
		{"no key", "acme", "", false, ""},
		{"a usable key", "acme", valid, true, ""},
		{"an expired key", "acme", expired, false, "the certificate expired"},
		{"a tenant without a signer", "beta", valid, false, "no smime signing key is configured for the tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Contact{Email: keyHolder, Language: "en", EncryptionKey: tc.key}
			o := out
			o.tenant = tc.tenant
			o, sec := s.encryption(tc.tenant, c, o, ch.Security())
			in := policyInput(base, eob(), "email", sec, c)
			if got := in.Channel.Security == policy.ChannelMessageEncrypted && in.Channel.MessageEncrypted; got != tc.encrypted {
				t.Fatalf("policy channel %+v, want encrypted %v", in.Channel, tc.encrypted)
			}
			p := apply(allow(), nil, eob(), c, o)
			if p.Status != "" {
				t.Fatalf("plan %s %v", p.Status, p.Reasons)
			}
			if (p.Email.EncryptFor != nil) != tc.encrypted {
				t.Fatalf("EncryptFor %v, want encrypted %v", p.Email.EncryptFor != nil, tc.encrypted)
			}
			if tc.problem == "" {
				if p.PortalOnly || len(p.Reasons) != 0 || !strings.Contains(p.Email.Text, "Oncology Partners") {
					t.Fatalf("portal-only %v, reasons %v", p.PortalOnly, p.Reasons)
				}
				return
			}
			if !p.PortalOnly || len(p.Reasons) != 1 || !strings.Contains(p.Reasons[0], tc.problem) ||
				!strings.Contains(p.Reasons[0], "sent portal-only") {
				t.Fatalf("portal-only %v, reasons %v", p.PortalOnly, p.Reasons)
			}
			for _, phi := range []string{"Oncology Partners", "Acme Health", "45.20"} {
				if strings.Contains(p.Email.Text, phi) || strings.Contains(p.Email.HTML, phi) {
					t.Fatalf("the fallback message carries %q", phi)
				}
			}
			if strings.Contains(p.Reasons[0], keyHolder) {
				t.Fatal("the recorded reason names the patient")
			}
		})
	}
}

// requires_message_encryption is met when the message goes encrypted for
// the patient's key, and fails closed otherwise.
func TestRequiresMessageEncryption(t *testing.T) {
	ch := emailChannel(t)
	s := &Service{Channels: map[string]Channel{"email": ch}}
	c := Contact{Email: keyHolder, EncryptionKey: string(mailcrypttest.PatientSMIME(t, t.TempDir(), keyHolder, time.Time{}).CertPEM())}
	o := out
	o.tenant = "acme"
	o, _ = s.encryption("acme", c, o, ch.Security())
	if p := apply(allow("requires_message_encryption"), nil, eob(), c, o); p.Status != "" || p.Email.EncryptFor == nil {
		t.Fatalf("with a key: %s %v", p.Status, p.Reasons)
	}
	c.EncryptionKey = ""
	if p := apply(allow("requires_message_encryption"), nil, eob(), c, out); p.Status != NoticeFailed {
		t.Fatalf("without a key: %q", p.Status)
	}
}
