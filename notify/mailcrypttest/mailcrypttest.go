// Package mailcrypttest makes the keys that tests of message-level
// encryption need (a tenant's S/MIME CA and signing certificate, a
// patient's certificate, OpenPGP keys) and opens captured mail with
// programs other than the sender's: Debian's openssl and gpg.
package mailcrypttest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Need skips nothing: it fails the test when a program is missing, since
// scripts/ensure-deps.sh installs them.
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed (scripts/ensure-deps.sh installs it): %v", p, err)
		}
	}
}

// Cert is a certificate with its key, and both as PEM files.
type Cert struct {
	Cert     *x509.Certificate
	Key      *rsa.PrivateKey
	CertFile string
	KeyFile  string
}

// CertOptions shape a certificate.
type CertOptions struct {
	CN        string
	Email     string
	Bits      int // default 2048
	NotBefore time.Time
	NotAfter  time.Time // default a year from now
	KeyUsage  x509.KeyUsage
	ExtUsage  []x509.ExtKeyUsage
	IsCA      bool
}

// NewCert issues a certificate under issuer (nil: self-signed) and writes
// it and its key into dir.
func NewCert(t testing.TB, dir string, issuer *Cert, o CertOptions) *Cert {
	t.Helper()
	if o.Bits == 0 {
		o.Bits = 2048
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().AddDate(1, 0, 0)
	}
	key, err := rsa.GenerateKey(rand.Reader, o.Bits)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: o.CN},
		NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage: o.KeyUsage, ExtKeyUsage: o.ExtUsage,
		IsCA: o.IsCA, BasicConstraintsValid: true,
	}
	if o.Email != "" {
		tmpl.EmailAddresses = []string{o.Email}
	}
	parent, signer := tmpl, crypto.Signer(key)
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(o.CN, " ", "-")
	c := &Cert{Cert: cert, Key: key, CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	write(t, c.CertFile, c.CertPEM())
	write(t, c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	return c
}

// CertPEM is the certificate as PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// TenantSMIME is a tenant's S/MIME CA and a signing certificate it issued.
func TenantSMIME(t testing.TB, dir string) (ca, signer *Cert) {
	t.Helper()
	ca = NewCert(t, dir, nil, CertOptions{CN: "Tenant Root CA", IsCA: true, KeyUsage: x509.KeyUsageCertSign})
	signer = NewCert(t, dir, ca, CertOptions{CN: "Acme Health Notices", Email: "notices@acme.example",
		KeyUsage: x509.KeyUsageDigitalSignature, ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	return ca, signer
}

// PatientSMIME is a patient's S/MIME certificate for address, valid until
// notAfter (zero: a year from now).
func PatientSMIME(t testing.TB, dir, address string, notAfter time.Time) *Cert {
	t.Helper()
	o := CertOptions{CN: "Patient " + address, Email: address, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	if !notAfter.IsZero() && notAfter.Before(time.Now()) {
		o.NotBefore = notAfter.AddDate(-1, 0, 0)
	}
	return NewCert(t, dir, nil, o)
}

// OpenSSL runs openssl with args and returns its standard output, failing
// the test with its standard error when it fails.
func OpenSSL(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := run(exec.Command("openssl", args...))
	if err != nil {
		t.Fatalf("openssl %s: %v", args[0], err)
	}
	return out
}

// DecryptSMIME opens a captured S/MIME mail with openssl cms: it decrypts
// with the patient's key, verifies the signature against the tenant's CA
// and returns the signed MIME entity.
func DecryptSMIME(t testing.TB, mailFile string, patient, ca *Cert) []byte {
	t.Helper()
	dir := t.TempDir()
	inner := filepath.Join(dir, "inner.eml")
	OpenSSL(t, "cms", "-decrypt", "-in", mailFile, "-recip", patient.CertFile, "-inkey", patient.KeyFile, "-out", inner)
	return OpenSSL(t, "cms", "-verify", "-in", inner, "-CAfile", ca.CertFile)
}

// TryDecryptSMIME decrypts a captured S/MIME mail with key's key and
// returns the inner entity, or openssl's error.
func TryDecryptSMIME(t testing.TB, mailFile string, key *Cert) ([]byte, error) {
	t.Helper()
	return run(exec.Command("openssl", "cms", "-decrypt", "-in", mailFile, "-recip", key.CertFile, "-inkey", key.KeyFile))
}

// GPG is a gpg home of its own.
type GPG struct {
	Home string
	t    testing.TB
}

// NewGPG makes a gpg home in a short temporary folder (gpg-agent's socket
// path is limited) and stops its agent when the test ends.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	Need(t, "gpg", "gpgconf")
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &GPG{Home: home, t: t}
	t.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		_ = os.RemoveAll(home)
	})
	return g
}

// Run runs gpg in the home with args, stdin as input; it returns standard
// output and the status lines (--status-fd) and fails the test on error.
func (g *GPG) Run(stdin []byte, args ...string) (out, status []byte) {
	g.t.Helper()
	statusFile := filepath.Join(g.Home, "status")
	cmd := exec.Command("gpg", append([]string{"--homedir", g.Home, "--batch", "--yes", "--no-tty",
		"--pinentry-mode", "loopback", "--passphrase", "", "--status-file", statusFile}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := run(cmd)
	if err != nil {
		g.t.Fatalf("gpg %s: %v", strings.Join(args, " "), err)
	}
	status, _ = os.ReadFile(statusFile)
	return out, status
}

// NewKey generates an Ed25519/Curve25519 key for uid that expires after
// validity ("1y", "1d"), created at created (zero: now), and returns its
// armored public key.
func (g *GPG) NewKey(uid, validity string, created time.Time) string {
	g.t.Helper()
	args := []string{"--quick-gen-key", uid, "future-default", "default", validity}
	if !created.IsZero() {
		args = append([]string{"--faked-system-time", created.UTC().Format("20060102T150405")}, args...)
	}
	g.Run(nil, args...)
	pub, _ := g.Run(nil, "--armor", "--export", uid)
	return string(pub)
}

// Import adds an armored key to the home.
func (g *GPG) Import(armored string) {
	g.t.Helper()
	g.Run([]byte(armored), "--import")
}

// OpenPGPSigner makes a tenant's OpenPGP signing key (Ed25519) with go-crypto
// and writes it, armored and unprotected, to dir; it returns the file and
// the armored public key.
func OpenPGPSigner(t testing.TB, dir, name, address string) (keyFile, public string) {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", address, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var priv, pub bytes.Buffer
	w, _ := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, _ = armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	keyFile = filepath.Join(dir, "tenant-openpgp.asc")
	write(t, keyFile, priv.Bytes())
	return keyFile, pub.String()
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func run(cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &cmdError{err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }
