package policy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"

	policyfiles "github.com/tidings-health/tidings/rego"
)

// ErrUnverified means a bundle's signature is missing or does not verify
// against the configured key, or the bundle holds a file the signature does
// not cover.
var ErrUnverified = errors.New("policy: bundle signature not verified")

// maxBundleBytes bounds what a bundle source reads, and maxBundleFileBytes
// each file unpacked from it (a gzip bomb stops there); Tidings' policies
// are a few dozen kilobytes.
const (
	maxBundleBytes     = 64 << 20
	maxBundleFileBytes = 16 << 20
)

// Source is where an Engine reads its policies: the embedded files, a
// directory, an fs.FS, or an OPA bundle. Its String form names it for
// Status, e.g. "embedded", "dir:/etc/tidings/rego", "bundle:/srv/b.tar.gz".
type Source struct {
	desc   string
	fsys   fs.FS
	bundle string                     // path of a .tar.gz bundle, when fsys is nil
	verify *bundle.VerificationConfig // nil: signatures are not checked
}

// String names the source.
func (s Source) String() string { return s.desc }

// FromEmbedded is the policies shipped in the binary.
func FromEmbedded() Source { return Source{desc: "embedded", fsys: policyfiles.FS} }

// FromDir reads the .rego and .json files under dir, as `opa eval -d dir`
// and `opa test dir` do, every time the engine loads.
func FromDir(dir string) Source {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return Source{desc: "dir:" + dir, fsys: os.DirFS(dir)}
}

// FromFS reads the .rego and .json files of fsys; name is how Status shows
// it.
func FromFS(name string, fsys fs.FS) Source { return Source{desc: name, fsys: fsys} }

// BundleKey verifies signed bundles (`opa build --signing-key`).
type BundleKey struct {
	// PEM holds the public key ("PUBLIC KEY" or "RSA PUBLIC KEY") or a
	// certificate. A private key is refused: it does not belong on a server
	// that only verifies.
	PEM []byte
	// Algorithm is the JWS algorithm the bundle was signed with. Empty picks
	// RS256 for an RSA key and ES256, ES384 or ES512 by an ECDSA key's curve.
	Algorithm string
}

// FromBundle reads an OPA bundle (.tar.gz, as `opa build` writes it). With a
// key, a bundle is accepted only if its .signatures.json verifies against
// the key and covers every file in it; without one, signatures are not
// checked. Bundles must be Rego v1 (OPA 1.x's default).
func FromBundle(path string, key *BundleKey) (Source, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	s := Source{desc: "bundle:" + path, bundle: path}
	if key == nil {
		return s, nil
	}
	alg, err := keyAlgorithm(key)
	if err != nil {
		return Source{}, err
	}
	// One key, whatever key id the signer put in the token: the kid names a
	// key, it does not choose one the operator did not configure.
	const keyID = "tidings"
	s.verify = bundle.NewVerificationConfig(
		map[string]*bundle.KeyConfig{keyID: {Key: string(key.PEM), Algorithm: alg}},
		keyID, "", nil)
	return s, nil
}

// keyAlgorithm checks that key holds a usable public key and returns the
// algorithm to verify with.
func keyAlgorithm(key *BundleKey) (string, error) {
	block, _ := pem.Decode(key.PEM)
	if block == nil {
		return "", errors.New("policy: bundle key: no PEM block")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return "", fmt.Errorf("policy: bundle key: PEM block %q is a private key; configure the public key", block.Type)
		}
		return "", fmt.Errorf("policy: bundle key: unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return "", fmt.Errorf("policy: bundle key: %w", err)
	}
	if key.Algorithm != "" {
		if !keys.IsSupportedAlgorithm(key.Algorithm) || strings.HasPrefix(key.Algorithm, "HS") {
			return "", fmt.Errorf("policy: bundle key: unsupported algorithm %q", key.Algorithm)
		}
		return key.Algorithm, nil
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return "RS256", nil
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		case elliptic.P521():
			return "ES512", nil
		}
	}
	return "", fmt.Errorf("policy: bundle key: a %T needs Algorithm set", pub)
}

// fetched is one read of a source: its content hash, which changes whenever
// any file does (tests included), and what is needed to decode it.
type fetched struct {
	hash  string
	files policyFiles // fs sources: every policy, test and data file
	raw   []byte      // bundle sources: the archive
}

// fetch reads the source once. Everything loaded afterwards comes from this
// read, so a revision never mixes files from before and after a change.
func (s Source) fetch() (fetched, error) {
	if s.fsys != nil {
		files, err := readPolicyFiles(s.fsys, true)
		if err != nil {
			return fetched{}, err
		}
		return fetched{hash: files.revision(), files: files}, nil
	}
	if s.bundle == "" {
		return fetched{}, errors.New("policy: no source configured")
	}
	f, err := os.Open(s.bundle)
	if err != nil {
		return fetched{}, fmt.Errorf("policy: read bundle: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxBundleBytes+1))
	if err != nil {
		return fetched{}, fmt.Errorf("policy: read bundle: %w", err)
	}
	if len(raw) > maxBundleBytes {
		return fetched{}, fmt.Errorf("policy: bundle is larger than %d bytes", maxBundleBytes)
	}
	h := sha256.Sum256(raw)
	return fetched{hash: hex.EncodeToString(h[:]), raw: raw}, nil
}

// policyFiles returns the files of a fetch, verifying and unpacking a bundle.
func (s Source) policyFiles(f fetched) (policyFiles, error) {
	if f.raw == nil {
		return f.files, nil
	}
	return s.unpackBundle(f.raw)
}

// unpackBundle turns a bundle into the same snapshot a directory gives: its
// modules by path and its data as one data.json at the root, which OPA's
// loader files at the same paths the bundle did.
func (s Source) unpackBundle(raw []byte) (policyFiles, error) {
	read := func(verify *bundle.VerificationConfig) (bundle.Bundle, error) {
		r := bundle.NewCustomReader(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(raw), "")).
			WithRegoVersion(ast.RegoV1).
			WithCapabilities(capabilities()).
			WithSizeLimitBytes(maxBundleFileBytes).
			WithLazyLoadingMode(false)
		if verify == nil {
			return r.WithSkipBundleVerification(true).Read()
		}
		return r.WithBundleVerificationConfig(verify).Read()
	}
	// Read once unverified, so that an error from the verifying read below
	// can only be about the signature, not about a malformed archive.
	b, err := read(nil)
	if err != nil {
		return nil, reject(fmt.Errorf("read bundle: %w", err))
	}
	if s.verify != nil {
		if b, err = read(s.verify); err != nil {
			return nil, reject(fmt.Errorf("%w: %w", ErrUnverified, err))
		}
	}
	if b.Type() != bundle.SnapshotBundleType {
		return nil, reject(errors.New("a delta bundle cannot be loaded on its own"))
	}
	files := make(policyFiles, 0, len(b.Modules)+1)
	for _, m := range b.Modules {
		files = append(files, policyFile{name: strings.TrimPrefix(m.Path, "/"), content: m.Raw})
	}
	if len(b.Data) > 0 {
		data, err := json.Marshal(b.Data) // map keys sorted: the same data, the same bytes
		if err != nil {
			return nil, reject(fmt.Errorf("bundle data: %w", err))
		}
		files = append(files, policyFile{name: "data.json", content: data})
	}
	files.sort()
	return files, nil
}
