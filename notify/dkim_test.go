package notify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/tidings-health/tidings/mailcatch"
)

// dkimDNS answers DKIM key queries from a map of published records, as the
// signing domains' DNS would.
type dkimDNS map[string]string

func (d dkimDNS) publish(t testing.TB, selector, domain string, pub any) {
	t.Helper()
	switch k := pub.(type) {
	case ed25519.PublicKey:
		d[selector+"._domainkey."+domain] = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k)
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		d[selector+"._domainkey."+domain] = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	}
}

func (d dkimDNS) lookup(name string) ([]string, error) {
	if r, ok := d[name]; ok {
		return []string{r}, nil
	}
	return nil, errors.New("no such record")
}

// verifyDKIM checks a captured message's signatures with go-msgauth (an
// implementation other than the signer's) and returns the verified
// signing domains; every signature must verify.
func verifyDKIM(t *testing.T, dns dkimDNS, raw []byte) []string {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: dns.lookup})
	if err != nil {
		t.Fatalf("dkim verify: %v", err)
	}
	var domains []string
	for _, v := range vs {
		if v.Err != nil {
			t.Fatalf("the DKIM signature of %s does not verify: %v", v.Domain, v.Err)
		}
		domains = append(domains, v.Domain)
	}
	return domains
}

func writePEM(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Each tenant's mail from its own domain is signed with its key, the
// service's own domain with the key for every tenant; a tenant's mail from
// another tenant's domain goes unsigned. Signatures verify with another
// implementation and break when the body is changed.
func TestDKIMSignsPerTenantDomain(t *testing.T) {
	dns := dkimDNS{}
	acmeKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	svcPub, svcKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dns.publish(t, "s2026", "acme.example", &acmeKey.PublicKey)
	dns.publish(t, "svc", "tidings.example", svcPub)
	acme, err := LoadDKIMKey("acme", "acme.example", "s2026", writePEM(t, acmeKey))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := LoadDKIMKey("*", "tidings.example", "svc", writePEM(t, svcKey))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	s := catcher(t, mailcatch.Options{STARTTLS: true, Dir: dir})
	cfg := configFor(t, s)
	cfg.DKIM = []DKIMKey{acme, svc}
	c := mustChannel(t, cfg)

	for i, tc := range []struct {
		name, tenant, from string
		want               string // signing domain, "" for none
	}{
		{"the tenant's own domain", "acme", "eob@acme.example", "acme.example"},
		{"the service's domain, any tenant", "beta", "", "tidings.example"},
		{"another tenant's domain", "beta", "eob@acme.example", ""},
		{"a domain with no key", "acme", "eob@elsewhere.example", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := eobEmail(t)
			e.TenantID, e.From = tc.tenant, tc.from
			if _, err := c.Send(sendCtx(t), e); err != nil {
				t.Fatal(err)
			}
			msgs := s.Messages()
			raw, err := os.ReadFile(msgs[i].Path)
			if err != nil {
				t.Fatal(err)
			}
			got := verifyDKIM(t, dns, raw)
			if tc.want == "" {
				if len(got) != 0 || bytes.Contains(raw, []byte("DKIM-Signature")) {
					t.Fatalf("signed by %v, want unsigned", got)
				}
				return
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("signed by %v, want %s", got, tc.want)
			}
			// The verifier is not a rubber stamp: a changed body fails.
			tampered := bytes.Replace(raw, []byte("Explanation of Benefits"), []byte("Explanation of Benefit!"), 1)
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(tampered), &dkim.VerifyOptions{LookupTXT: dns.lookup})
			if err != nil || len(vs) != 1 || vs[0].Err == nil {
				t.Fatalf("a tampered message verified (%v, %d signatures)", err, len(vs))
			}
		})
	}
}

func TestDKIMKeysAreValidated(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	s := catcher(t, mailcatch.Options{STARTTLS: true, Dir: t.TempDir()})
	for _, tc := range []struct {
		key  DKIMKey
		want string
	}{
		{DKIMKey{TenantID: "acme", Domain: "acme.example", Selector: "s1", Signer: weak}, "RSA of 1024 bits"},
		{DKIMKey{Domain: "acme.example", Selector: "s1", Signer: edKey}, "names no tenant"},
		{DKIMKey{TenantID: "acme", Domain: "not a domain", Selector: "s1", Signer: edKey}, "not a domain name"},
		{DKIMKey{TenantID: "acme", Domain: "acme.example", Selector: "", Signer: edKey}, "no valid selector"},
	} {
		cfg := configFor(t, s)
		cfg.DKIM = []DKIMKey{tc.key}
		_, err := NewEmailChannel(cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("key %+v: err %v, want %q", tc.key.Domain, err, tc.want)
		}
	}
	if _, err := LoadDKIMKey("acme", "acme.example", "s1", filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("a missing key file loaded")
	}
}
