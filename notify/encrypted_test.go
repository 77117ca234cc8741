package notify

import (
	"bytes"
	"crypto/x509"
	"errors"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/notify/mailcrypttest"
)

// sendEncrypted sends eobEmail encrypted for key through a catcher and
// returns the captured file and its bytes.
func sendEncrypted(t *testing.T, signers []MessageSigner, key *RecipientKey) (string, []byte) {
	t.Helper()
	s := catcher(t, mailcatch.Options{STARTTLS: true, Dir: t.TempDir()})
	cfg := configFor(t, s)
	cfg.Signers = signers
	c := mustChannel(t, cfg)
	e := eobEmail(t)
	e.TenantID, e.EncryptFor = "acme", key
	if sec := c.SecurityFor("acme", key, time.Now()); !sec.MessageEncrypted || !sec.TLSEnforced {
		t.Fatalf("SecurityFor = %+v, want TLS and message encryption", sec)
	}
	if _, err := c.Send(sendCtx(t), e); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages captured", len(msgs))
	}
	raw, err := os.ReadFile(msgs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, phi := range []string{canaryPayer, "Lovelace", "1,234.50"} {
		if bytes.Contains(raw, []byte(phi)) {
			t.Fatalf("the encrypted mail carries %q in clear", phi)
		}
	}
	return msgs[0].Path, raw
}

// smimeParties makes, in dir, tenant acme's CA and signer and the
// patient's certificate valid until notAfter (zero: a year), read as a
// recipient key.
func smimeParties(t *testing.T, dir string, notAfter time.Time) (ca, patient *mailcrypttest.Cert, key *RecipientKey, signer MessageSigner) {
	t.Helper()
	ca, tenant := mailcrypttest.TenantSMIME(t, dir)
	patient = mailcrypttest.PatientSMIME(t, dir, canaryRcpt, notAfter)
	key, err := ParseRecipientKey(string(patient.CertPEM()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if signer, err = LoadSMIMESigner("acme", tenant.CertFile, tenant.KeyFile); err != nil {
		t.Fatal(err)
	}
	return ca, patient, key, signer
}

// assertNotice checks a decrypted MIME entity carries the whole notice.
func assertNotice(t *testing.T, entity []byte) {
	t.Helper()
	for _, want := range []string{canaryPayer, "Lovelace", "1,234.50", "text/html"} {
		if !bytes.Contains(entity, []byte(want)) {
			t.Errorf("the decrypted notice lacks %q:\n%s", want, entity)
		}
	}
}

// An S/MIME recipient gets the whole notice signed by the tenant's
// certificate and enveloped with AES-256 for the patient's certificate;
// openssl decrypts it, finds AES-256-CBC, and verifies the signature
// against the tenant's CA. Another key does not open it.
func TestSMIMEEncryptedMailOpensWithOpenSSL(t *testing.T) {
	mailcrypttest.Need(t, "openssl")
	dir := t.TempDir()
	ca, patient, key, signer := smimeParties(t, dir, time.Time{})
	path, raw := sendEncrypted(t, []MessageSigner{signer}, key)
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if mt != "application/pkcs7-mime" || params["smime-type"] != "enveloped-data" {
		t.Fatalf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	if msg.Header.Get("Subject") != "You have a new Explanation of Benefits" {
		t.Errorf("outer Subject %q", msg.Header.Get("Subject"))
	}
	info := mailcrypttest.OpenSSL(t, "cms", "-cmsout", "-print", "-in", path)
	if !bytes.Contains(info, []byte("aes-256-cbc")) || !bytes.Contains(info, []byte("rsaesOaep")) {
		t.Errorf("the envelope is not AES-256-CBC with RSAES-OAEP:\n%s", info)
	}
	assertNotice(t, mailcrypttest.DecryptSMIME(t, path, patient, ca))

	other := mailcrypttest.PatientSMIME(t, dir, "someone@else.example", time.Time{})
	if _, err := mailcrypttest.TryDecryptSMIME(t, path, other); err == nil {
		t.Error("another patient's key decrypted the mail")
	}
}

// An OpenPGP recipient gets PGP/MIME: gpg decrypts it with the patient's
// key and reports a good signature by the tenant's key.
func TestOpenPGPEncryptedMailOpensWithGPG(t *testing.T) {
	g := mailcrypttest.NewGPG(t)
	pub := g.NewKey("Patient <"+canaryRcpt+">", "1y", time.Time{})
	key, err := ParseRecipientKey(pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyFile, tenantPub := mailcrypttest.OpenPGPSigner(t, t.TempDir(), "Acme Health", "notices@acme.example")
	g.Import(tenantPub)
	signer, err := LoadOpenPGPSigner("acme", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, raw := sendEncrypted(t, []MessageSigner{signer}, key)
	armored := pgpMIMEPayload(t, raw)
	entity, status := g.Run([]byte(armored), "--decrypt")
	assertNotice(t, entity)
	fpr := strings.ToUpper(signer.OpenPGP.PrimaryKey.KeyIdString())
	if !bytes.Contains(status, []byte("[GNUPG:] GOODSIG")) || !bytes.Contains(status, []byte(fpr)) {
		t.Errorf("no good signature by the tenant's key %s:\n%s", fpr, status)
	}
	if !bytes.Contains(status, []byte("DECRYPTION_OKAY")) {
		t.Errorf("gpg did not report DECRYPTION_OKAY:\n%s", status)
	}
}

// pgpMIMEPayload checks the RFC 3156 structure and returns the armored
// message.
func pgpMIMEPayload(t *testing.T, raw []byte) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/encrypted" || params["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	var payload string
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		b := new(bytes.Buffer)
		b.ReadFrom(p)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, ct)
		if ct == "application/octet-stream" {
			payload = b.String()
		}
	}
	if len(parts) != 2 || parts[0] != "application/pgp-encrypted" || !strings.Contains(payload, "BEGIN PGP MESSAGE") {
		t.Fatalf("parts %v", parts)
	}
	return payload
}

// A key that can no longer encrypt (here: expired since it was read) is
// not used: the channel refuses to build the message, nothing is sent.
func TestExpiredKeyIsNotUsedToSend(t *testing.T) {
	dir := t.TempDir()
	_, tenant := mailcrypttest.TenantSMIME(t, dir)
	patient := mailcrypttest.PatientSMIME(t, dir, canaryRcpt, time.Now().Add(-time.Minute))
	// Read while it was still valid.
	key, err := ParseRecipientKey(string(patient.CertPEM()), patient.Cert.NotAfter.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := LoadSMIMESigner("acme", tenant.CertFile, tenant.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := catcher(t, mailcatch.Options{STARTTLS: true, Dir: t.TempDir()})
	cfg := configFor(t, s)
	cfg.Signers = []MessageSigner{signer}
	c := mustChannel(t, cfg)
	if sec := c.SecurityFor("acme", key, patient.Cert.NotAfter.Add(-time.Hour)); !sec.MessageEncrypted {
		t.Error("the key did not count as message encryption while it was valid")
	}
	if sec := c.SecurityFor("acme", key, time.Now()); sec.MessageEncrypted {
		t.Error("an expired key counts as message encryption")
	}
	if sec := c.SecurityFor("other", key, patient.Cert.NotAfter.Add(-time.Hour)); sec.MessageEncrypted {
		t.Error("a tenant without a signer counts as message encryption")
	}
	e := eobEmail(t)
	e.TenantID, e.EncryptFor = "acme", key
	if _, err := c.Send(sendCtx(t), e); !errors.Is(err, ErrInvalidEmail) || !errors.Is(err, ErrUnusableKey) {
		t.Fatalf("Send with an expired key: %v", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages sent", n)
	}
}

// The channel refuses to start with a signer it could not sign with, and
// says why for each.
func TestMessageSignersAreValidated(t *testing.T) {
	dir := t.TempDir()
	_, good := mailcrypttest.TenantSMIME(t, dir)
	weak := mailcrypttest.NewCert(t, dir, nil, mailcrypttest.CertOptions{CN: "weak", Bits: 1024})
	expired := mailcrypttest.NewCert(t, dir, nil, mailcrypttest.CertOptions{CN: "expired",
		NotBefore: time.Now().AddDate(-1, 0, 0), NotAfter: time.Now().Add(-time.Hour)})
	encipherOnly := mailcrypttest.NewCert(t, dir, nil, mailcrypttest.CertOptions{CN: "encipher", KeyUsage: x509.KeyUsageKeyEncipherment})
	pgpFile, _ := mailcrypttest.OpenPGPSigner(t, dir, "Acme", "notices@acme.example")
	pgp, err := LoadOpenPGPSigner("acme", pgpFile)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := LoadOpenPGPSigner("acme", pgpFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := locked.OpenPGP.EncryptPrivateKeys([]byte("pass"), nil); err != nil {
		t.Fatal(err)
	}
	s := catcher(t, mailcatch.Options{STARTTLS: true, Dir: t.TempDir()})
	smime := func(tenant string, c *mailcrypttest.Cert, key *mailcrypttest.Cert) MessageSigner {
		return MessageSigner{TenantID: tenant, Cert: c.Cert, Key: key.Key}
	}
	for _, tc := range []struct {
		name    string
		signers []MessageSigner
		want    string // "" when accepted
	}{
		{"an S/MIME and an OpenPGP signer", []MessageSigner{smime("acme", good, good), pgp}, ""},
		{"no tenant", []MessageSigner{smime("", good, good)}, "names no tenant"},
		{"RSA 1024", []MessageSigner{smime("acme", weak, weak)}, "RSA of 1024 bits"},
		{"expired", []MessageSigner{smime("acme", expired, expired)}, "not valid now"},
		{"no digitalSignature", []MessageSigner{smime("acme", encipherOnly, encipherOnly)}, "digitalSignature"},
		{"a key not the certificate's", []MessageSigner{smime("acme", good, encipherOnly)}, "does not match"},
		{"two certificates for a tenant", []MessageSigner{smime("acme", good, good), smime("acme", good, good)}, "two S/MIME"},
		{"a passphrase-protected OpenPGP key", []MessageSigner{locked}, "passphrase"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := configFor(t, s)
			cfg.Signers = tc.signers
			c, err := NewEmailChannel(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
