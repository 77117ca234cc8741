package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/notify/mailcrypttest"
)

// A patient who registered an S/MIME certificate or an OpenPGP key gets
// the whole notice encrypted for it and signed by the plan: notification →
// worker → captured mail, opened with Debian's openssl (cms -decrypt, then
// cms -verify against the plan's CA) and gpg (--decrypt, a good signature
// by the plan's key). A sensitive notice goes encrypted too, without the
// provider's name. A key that expired after it was registered sends the
// notice portal-only, with no PHI in the mail, and records why.
func TestNoticeEncryptedForThePatientsKey(t *testing.T) {
	mailcrypttest.Need(t, "openssl", "gpg")
	dir := t.TempDir()
	ca, planCert := mailcrypttest.TenantSMIME(t, dir)
	pgpKeyFile, planPGP := mailcrypttest.OpenPGPSigner(t, dir, "Dev Health Plan", "notices@plan.example")
	ts := newTestStack(t, testOpts{NoPlaceholder: true,
		SMIMEKeys:   "dev:" + planCert.CertFile + ":" + planCert.KeyFile,
		OpenPGPKeys: "dev:" + pgpKeyFile})
	const address = "member.k3w@example.org"
	// Each EOB below is about Patient2, a run of its own. noticeOf posts
	// one and returns the nth mail caught and the EOB's patient share.
	noticeOf := func(t *testing.T, eob []byte, n int64) ([]byte, string) {
		t.Helper()
		if r := ts.notify(t, ts.wrap(t, eob)); r.Status != 202 {
			t.Fatalf("notification: %d %s", r.Status, r.Body)
		}
		ts.waitNotices(t, n)
		msgs := ts.Mail.Messages()
		if int64(len(msgs)) != n {
			t.Fatalf("%d mails caught, want %d", len(msgs), n)
		}
		share, _ := shareOf(t, eob)
		return msgs[n-1].Data, share
	}
	notice := func(t *testing.T, fixturePath string, n int64) ([]byte, string) {
		t.Helper()
		return noticeOf(t, fixture(t, fixturePath), n)
	}
	// phiFree fails when raw shows any of the notice's PHI in clear.
	phiFree := func(t *testing.T, raw []byte, share string) {
		t.Helper()
		for _, phi := range []string{share, "XXX Health Plan", "Provider"} {
			if bytes.Contains(raw, []byte(phi)) {
				t.Fatalf("the mail carries %q in clear", phi)
			}
		}
	}
	// whole fails unless text is the whole notice.
	whole := func(t *testing.T, text, share string) {
		t.Helper()
		for _, want := range []string{share, "XXX Health Plan", "Explanation of Benefits", "/portal/dev/notices/"} {
			if !strings.Contains(text, want) {
				t.Fatalf("the decrypted notice lacks %q:\n%s", want, text)
			}
		}
	}

	t.Run("unusable keys are refused", func(t *testing.T) {
		token := ts.apiKey(t, "dev", access.Contacts)
		h, err := ts.app.handler(nil)
		if err != nil {
			t.Fatal(err)
		}
		expired := string(mailcrypttest.PatientSMIME(t, dir, address, time.Now().Add(-time.Hour)).CertPEM())
		weak := string(mailcrypttest.NewCert(t, dir, nil, mailcrypttest.CertOptions{CN: "weak " + address, Email: address, Bits: 1024}).CertPEM())
		for _, tc := range []struct{ body, want string }{
			{contactWithKey(t, address, "smime_certificate", expired), "encryption key: the certificate expired"},
			{contactWithKey(t, address, "smime_certificate", weak), "at least 2048"},
			{contactWithKey(t, address, "openpgp_key", expired), "openpgp_key must be an armored OpenPGP public key"},
			{`{"email":"` + address + `","smime_certificate":"x","openpgp_key":"y"}`, "not both"},
		} {
			r := doRequest(h, "PUT", "/v1/contacts/Patient/Patient2", "application/json", token, tc.body)
			body := r.Body.String()
			if r.Code != 400 || !strings.Contains(body, tc.want) {
				t.Errorf("PUT contact: %d %s, want 400 saying %q", r.Code, body, tc.want)
			}
			if strings.Contains(body, address) || strings.Contains(body, strings.Split(expired, "\n")[1]) ||
				strings.Contains(body, strings.Split(weak, "\n")[1]) {
				t.Errorf("the 400 echoes the address or the key: %s", body)
			}
		}
	})

	t.Run("S/MIME", func(t *testing.T) {
		patient := mailcrypttest.PatientSMIME(t, dir, address, time.Time{})
		ts.putContact(t, "Patient2", contactWithKey(t, address, "smime_certificate", string(patient.CertPEM())))
		raw, share := notice(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json", 1)
		phiFree(t, raw, share)
		mailFile := filepath.Join(t.TempDir(), "mail.eml")
		if err := os.WriteFile(mailFile, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		whole(t, decodedText(t, mailcrypttest.DecryptSMIME(t, mailFile, patient, ca)), share)
		ts.wantLastNotice(t, "[]", "full")
	})

	t.Run("OpenPGP", func(t *testing.T) {
		g := mailcrypttest.NewGPG(t)
		g.Import(planPGP)
		pub := g.NewKey("Member <"+address+">", "1y", time.Time{})
		ts.putContact(t, "Patient2", contactWithKey(t, address, "openpgp_key", pub))
		raw, share := notice(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json", 2)
		phiFree(t, raw, share)
		start := bytes.Index(raw, []byte("-----BEGIN PGP MESSAGE-----"))
		end := bytes.Index(raw, []byte("-----END PGP MESSAGE-----"))
		if start < 0 || end < start || !bytes.Contains(raw, []byte("multipart/encrypted")) {
			t.Fatalf("not a PGP/MIME message:\n%s", raw)
		}
		entity, status := g.Run(raw[start:end+len("-----END PGP MESSAGE-----")], "--decrypt")
		whole(t, decodedText(t, entity), share)
		if !bytes.Contains(status, []byte("[GNUPG:] GOODSIG")) || !bytes.Contains(status, []byte("Dev Health Plan")) {
			t.Fatalf("no good signature by the plan's key:\n%s", status)
		}
		ts.wantLastNotice(t, "[]", "full")
	})

	t.Run("a sensitive notice, S/MIME", func(t *testing.T) {
		// Encrypted for the patient's own key, a sensitive notice goes whole
		// but for the provider, whose name can reveal the care (rego rule 3);
		// over TLS alone it would go portal-only. The published inpatient
		// EOB, its provider named in memory for a behavioural-health clinic
		// and its diagnosis changed to F32.9 (no published example has one).
		const clinic = "Riverside Behavioral Health"
		eob := editJSON(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), func(e map[string]any) {
			e["id"] = "EOBInpatient1sensitive"
			e["provider"].(map[string]any)["display"] = clinic
		})
		eob = bytes.Replace(eob, []byte(`"S06.0X1A"`), []byte(`"F32.9"`), -1)
		if !bytes.Contains(eob, []byte(`"F32.9"`)) {
			t.Fatal("the diagnosis was not replaced")
		}
		patient := mailcrypttest.PatientSMIME(t, dir, address, time.Time{})
		ts.putContact(t, "Patient2", contactWithKey(t, address, "smime_certificate", string(patient.CertPEM())))
		raw, share := noticeOf(t, eob, 3)
		phiFree(t, raw, share)
		if bytes.Contains(raw, []byte(clinic)) {
			t.Fatal("the mail names the clinic in clear")
		}
		mailFile := filepath.Join(t.TempDir(), "mail.eml")
		if err := os.WriteFile(mailFile, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		text := decodedText(t, mailcrypttest.DecryptSMIME(t, mailFile, patient, ca))
		whole(t, text, share)
		if strings.Contains(text, clinic) || strings.Contains(text, "F32") {
			t.Fatalf("the decrypted sensitive notice names the clinic or the diagnosis:\n%s", text)
		}
		ts.wantLastNotice(t, "[]", "redacted")
	})

	t.Run("a key expired since it was registered", func(t *testing.T) {
		// Registered while valid (with room for a slow key generation),
		// expired when the notice goes.
		patient := mailcrypttest.PatientSMIME(t, dir, address, time.Now().Add(8*time.Second))
		ts.putContact(t, "Patient2", contactWithKey(t, address, "smime_certificate", string(patient.CertPEM())))
		time.Sleep(time.Until(patient.Cert.NotAfter.Add(time.Second)))
		raw, share := notice(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json", 4)
		phiFree(t, raw, share)
		text := decodedText(t, raw)
		if strings.Contains(text, "Explanation of Benefits") || !strings.Contains(text, "/portal/dev/notices/") ||
			bytes.Contains(raw, []byte("pkcs7-mime")) {
			t.Fatalf("not a plain portal-only notice:\n%s", text)
		}
		ts.wantLastNotice(t, "the certificate expired", "portal-only")
	})
}

// contactWithKey is a contact request for address with a key in field.
func contactWithKey(t *testing.T, address, field, key string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{"email": address, field: key})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantLastNotice checks the latest notice was sent with reasons holding
// reason, and the latest disclosure's detail.
func (ts *testStack) wantLastNotice(t *testing.T, reason, detail string) {
	t.Helper()
	var got []string
	ts.app.store.RawScan(context.Background(), &got, `SELECT n.status || ' ' || n.reasons::text || ' ' ||
		(SELECT d.detail FROM disclosures d ORDER BY d.id DESC LIMIT 1) FROM notices n ORDER BY n.id DESC LIMIT 1`)
	if len(got) != 1 || !strings.HasPrefix(got[0], "sent ") || !strings.Contains(got[0], reason) || !strings.HasSuffix(got[0], " "+detail) {
		t.Fatalf("latest notice %q, want sent with %q and a %s disclosure", got, reason, detail)
	}
}

// A patient with an S/MIME certificate whose plan has no S/MIME signing
// key configured gets the notice portal-only, with no PHI in the mail: the
// worker cannot send it encrypted and signed, and a patient who asked for
// encrypted mail never gets PHI in a message that is not. The reason is
// recorded.
func TestNoSignerForTheTenantSendsPortalOnly(t *testing.T) {
	mailcrypttest.Need(t, "openssl")
	const address = "member.s1g@example.org"
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	patient := mailcrypttest.PatientSMIME(t, t.TempDir(), address, time.Time{})
	ts.putContact(t, "Patient2", contactWithKey(t, address, "smime_certificate", string(patient.CertPEM())))
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	if r := ts.notify(t, ts.wrap(t, eob)); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	share, _ := shareOf(t, eob)
	text := decodedText(t, msgs[0].Data)
	for _, phi := range []string{share, "XXX Health Plan", "Explanation of Benefits"} {
		if strings.Contains(text, phi) {
			t.Fatalf("the mail carries %q:\n%s", phi, text)
		}
	}
	if !strings.Contains(text, "/portal/dev/notices/") || bytes.Contains(msgs[0].Data, []byte("pkcs7-mime")) {
		t.Fatalf("not a plain portal-only notice:\n%s", text)
	}
	ts.waitNotices(t, 1)
	ts.wantLastNotice(t, "no smime signing key is configured for the tenant; sent portal-only", "portal-only")
}
