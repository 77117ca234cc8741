package policy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// writeBundle writes a bundle with OPA's bundle writer, signed with the PEM
// private key privPEM (ES256) unless it is empty.
func writeBundle(tb testing.TB, modules map[string]string, data map[string]any, privPEM string) []byte {
	tb.Helper()
	b := bundle.Bundle{Data: data, Manifest: bundle.Manifest{Revision: "fuzz", Roots: &[]string{""}}}
	for name, src := range modules {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + name, Path: "/" + name, Raw: []byte(src)})
	}
	slices.SortFunc(b.Modules, func(x, y bundle.ModuleFile) int { return bytes.Compare([]byte(x.Path), []byte(y.Path)) })
	if privPEM != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(privPEM, "ES256", ""), "fuzz", true); err != nil {
			tb.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := bundle.Write(&out, b); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// FuzzUnpackBundle feeds arbitrary archives to the bundle reader. Nothing
// panics, every failure is a rejection, and with a key configured the only
// content that is ever accepted is exactly what was signed.
func FuzzUnpackBundle(f *testing.F) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	modules := map[string]string{
		"notice.rego":      "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": data.r}\n",
		"notice_test.rego": "package tidings.notice_test\n\ntest_ok if data.tidings.notice.decision.allow\n",
	}
	data := map[string]any{"r": []any{"x"}}
	signed := writeBundle(f, modules, data, privPEM)
	verified, err := FromBundle("fuzz.tar.gz", &BundleKey{PEM: pubPEM})
	if err != nil {
		f.Fatal(err)
	}
	unverified, _ := FromBundle("fuzz.tar.gz", nil)
	// Everything the key ever signed; the fuzzer cannot sign anything else.
	var signedContents []policyFiles
	for _, b := range [][]byte{signed, writeBundle(f, map[string]string{"notice.rego": modules["notice.rego"]}, data, privPEM)} {
		files, err := verified.unpackBundle(b)
		if err != nil {
			f.Fatalf("a signed bundle: %v", err)
		}
		signedContents = append(signedContents, files)
		f.Add(b)
	}
	f.Add(signed[:len(signed)/2])
	f.Add(writeBundle(f, modules, data, ""))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if _, err := unverified.unpackBundle(raw); err != nil && !errors.Is(err, ErrRejected) {
			t.Fatalf("unverified: %v is not a rejection", err)
		}
		files, err := verified.unpackBundle(raw)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("verified: %v is not a rejection", err)
			}
			return
		}
		same := func(want policyFiles) bool {
			return slices.EqualFunc(files, want, func(a, b policyFile) bool { return a.name == b.name && bytes.Equal(a.content, b.content) })
		}
		if !slices.ContainsFunc(signedContents, same) {
			t.Fatalf("accepted content that was not signed: %d files", len(files))
		}
	})
}
