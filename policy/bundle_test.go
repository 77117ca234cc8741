package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"

	"github.com/tidings-health/tidings/policy"
	policyfiles "github.com/tidings-health/tidings/rego"
)

// testKey is a signing key pair in PEM, as `opa build --signing-key` and
// a verifying server would hold them.
type testKey struct {
	private, public []byte
	alg             string
}

func newTestKey(t *testing.T, alg string) testKey {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("no test key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return testKey{
		private: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		public:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		alg:     alg,
	}
}

// buildBundle builds fsys into a bundle the way `opa build` does, signed
// with key unless key is nil.
func buildBundle(t *testing.T, fsys fs.FS, key *testKey) []byte {
	t.Helper()
	var out bytes.Buffer
	c := compile.New().
		WithFS(fsys).
		WithPaths(".").
		WithRegoVersion(ast.RegoV1).
		WithOutput(&out)
	if key != nil {
		c = c.WithBundleSigningConfig(bundle.NewSigningConfig(string(key.private), key.alg, "")).
			WithBundleVerificationKeyID("release")
	}
	if err := c.Build(context.Background()); err != nil {
		t.Fatalf("build bundle: %v", err)
	}
	return out.Bytes()
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rewriteBundle changes a bundle's files after it was built (and signed):
// edit returns a file's new content, or nil to drop it; extra files are
// appended.
func rewriteBundle(t *testing.T, raw []byte, edit func(name string, content []byte) []byte, extra map[string]string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	put := func(name string, content []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(content); err != nil {
			t.Fatal(err)
		}
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if content = edit(h.Name, content); content != nil {
			put(h.Name, content)
		}
	}
	for name, content := range extra {
		put(name, []byte(content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func keep(_ string, content []byte) []byte { return content }

func openBundle(t *testing.T, path string, key *policy.BundleKey) (*policy.Engine, error) {
	t.Helper()
	src, err := policy.FromBundle(path, key)
	if err != nil {
		t.Fatalf("FromBundle: %v", err)
	}
	return policy.Open(context.Background(), src)
}

func TestSignedBundleLoads(t *testing.T) {
	dir := t.TempDir()
	for _, alg := range []string{"ES256", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			key := newTestKey(t, alg)
			path := writeFile(t, filepath.Join(dir, alg+".tar.gz"), buildBundle(t, version("a"), &key))
			// The algorithm is left for FromBundle to infer from the key.
			e, err := openBundle(t, path, &policy.BundleKey{PEM: key.public})
			if err != nil {
				t.Fatal(err)
			}
			if got := madeBy(t, e); got != "a" {
				t.Errorf("decided by %q, want a", got)
			}
			if st := e.Status(); st.Source != "bundle:"+path || st.Revision == "" || st.LastError != "" {
				t.Errorf("Status = %+v", st)
			}
		})
	}
}

func TestBundleWithoutKeyIsNotVerified(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "b.tar.gz"), buildBundle(t, version("a"), nil))
	e, err := openBundle(t, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := madeBy(t, e); got != "a" {
		t.Errorf("decided by %q, want a", got)
	}
}

func TestBundleRejectedWhenKeyConfigured(t *testing.T) {
	dir := t.TempDir()
	key := newTestKey(t, "ES256")
	other := newTestKey(t, "ES256")
	signed := buildBundle(t, version("a"), &key)
	tamper := func(name string, content []byte) []byte {
		if strings.HasSuffix(name, "notice.rego") {
			return bytes.Replace(content, []byte(`deny := [] if`), []byte(`deny := [] if true
deny := [] if`), 1)
		}
		return content
	}
	tests := map[string][]byte{
		"unsigned":                      buildBundle(t, version("a"), nil),
		"signed by other key":           buildBundle(t, version("a"), &other),
		"a policy edited after signing": rewriteBundle(t, signed, tamper, nil),
		"data edited after signing": rewriteBundle(t, signed, func(name string, content []byte) []byte {
			if name == "/data.json" {
				return bytes.Replace(content, []byte(`"version"`), []byte(`"also":true,"version"`), 1)
			}
			return content
		}, nil),
		"a file added after signing": rewriteBundle(t, signed, keep, map[string]string{"/extra.rego": "package tidings.extra\n\nx := 1\n"}),
		"a file removed after signing": rewriteBundle(t, signed, func(name string, content []byte) []byte {
			if strings.HasSuffix(name, "notice_test.rego") {
				return nil
			}
			return content
		}, nil),
		"signature removed": rewriteBundle(t, signed, func(name string, content []byte) []byte {
			if strings.HasSuffix(name, ".signatures.json") {
				return nil
			}
			return content
		}, nil),
	}
	// Each bad bundle replaces a good one: the good revision must stay.
	goodPath := writeFile(t, filepath.Join(dir, "policy.tar.gz"), signed)
	e, err := openBundle(t, goodPath, &policy.BundleKey{PEM: key.public, Algorithm: "ES256"})
	if err != nil {
		t.Fatalf("the good bundle: %v", err)
	}
	good := e.Revision()
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(dir, "bad.tar.gz"), raw)
			if _, err := openBundle(t, path, &policy.BundleKey{PEM: key.public}); !errors.Is(err, policy.ErrUnverified) || !errors.Is(err, policy.ErrRejected) {
				t.Fatalf("Open = %v, want ErrRejected and ErrUnverified", err)
			}
			// The same bundle passes unverified: only the signature is wrong.
			if _, err := openBundle(t, path, nil); err != nil {
				t.Fatalf("unverified Open = %v", err)
			}

			writeFile(t, goodPath, raw)
			err := e.Reload(context.Background())
			if !errors.Is(err, policy.ErrUnverified) {
				t.Fatalf("Reload = %v, want ErrUnverified", err)
			}
			if st := e.Status(); st.Revision != good || !strings.Contains(st.LastError, "signature") {
				t.Errorf("Status = %+v", st)
			}
			if got := madeBy(t, e); got != "a" {
				t.Errorf("decided by %q, want a", got)
			}
			writeFile(t, goodPath, signed)
			if err := e.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBundleRunsItsTests(t *testing.T) {
	fsys := version("a")
	fsys["notice_test.rego"] = version("b")["notice_test.rego"]
	path := writeFile(t, filepath.Join(t.TempDir(), "b.tar.gz"), buildBundle(t, fsys, nil))
	if _, err := openBundle(t, path, nil); !errors.Is(err, policy.ErrTestsFailed) {
		t.Fatalf("Open = %v, want ErrTestsFailed", err)
	}
}

func TestMalformedBundleIsRejected(t *testing.T) {
	dir := t.TempDir()
	for name, raw := range map[string][]byte{
		"not gzip":  []byte("package tidings.notice\n"),
		"truncated": buildBundle(t, version("a"), nil)[:100],
		"empty":     {},
	} {
		path := writeFile(t, filepath.Join(dir, "b.tar.gz"), raw)
		if _, err := openBundle(t, path, nil); !errors.Is(err, policy.ErrRejected) {
			t.Errorf("%s: Open = %v, want ErrRejected", name, err)
		}
	}
}

func TestBundleKeyChecks(t *testing.T) {
	key := newTestKey(t, "ES256")
	tests := map[string]policy.BundleKey{
		"private key":        {PEM: key.private},
		"no PEM":             {PEM: []byte("not a key")},
		"HMAC algorithm":     {PEM: key.public, Algorithm: "HS256"},
		"unknown algorithm":  {PEM: key.public, Algorithm: "XX1"},
		"corrupt public key": {PEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})},
	}
	for name, k := range tests {
		if _, err := policy.FromBundle("b.tar.gz", &k); err == nil {
			t.Errorf("%s: FromBundle accepted the key", name)
		}
	}
	_, err := policy.FromBundle("b.tar.gz", &policy.BundleKey{PEM: key.private})
	if err == nil || strings.Contains(err.Error(), string(key.private[30:60])) {
		t.Errorf("the private key error = %v; it must not quote the key", err)
	}
}

// TestShippedPoliciesAsBundle builds rego/ as `opa build rego/` would and
// checks that the bundle decides as the embedded files do: the data lands at
// the same paths.
func TestShippedPoliciesAsBundle(t *testing.T) {
	key := newTestKey(t, "ES256")
	path := writeFile(t, filepath.Join(t.TempDir(), "rego.tar.gz"), buildBundle(t, policyfiles.FS, &key))
	b, err := openBundle(t, path, &policy.BundleKey{PEM: key.public})
	if err != nil {
		t.Fatal(err)
	}
	emb := mustEmbedded(t)
	denied := eobNotice()
	denied.Payload["diagnosis"] = "E11.9"
	for _, in := range []policy.Input{eobNotice(), denied} {
		want, err := emb.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if got.Allow != want.Allow || !slices.Equal(got.Deny, want.Deny) || !slices.Equal(got.Redact, want.Redact) || !slices.Equal(got.Obligations, want.Obligations) {
			t.Errorf("bundle decided %+v, embedded %+v", got, want)
		}
	}
}
