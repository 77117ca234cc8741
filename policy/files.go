package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
)

// policyFile is one policy or data file as read, named by its slash-separated
// path inside the policy directory.
type policyFile struct {
	name    string
	content []byte
}

// policyFiles is a snapshot of a policy directory, sorted by name. Everything
// compiled comes from the snapshot, so the revision always matches what runs
// even if the directory changes while it is read.
type policyFiles []policyFile

// readPolicyFiles reads every .rego and .json file under fsys. Test modules
// (*_test.rego) are included only when withTests is set; other files (README,
// Go sources) are ignored, and so are JSON Schemas (*.schema.json), which
// document the input and output for people and are not data the policies
// read. Hidden files and folders (.name) are skipped: editors keep backups
// there, and a Kubernetes ConfigMap volume holds a second copy of every file
// in a hidden timestamped folder.
func readPolicyFiles(fsys fs.FS, withTests bool) (policyFiles, error) {
	var files policyFiles
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if hidden(name) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isPolicyFile(name, withTests) {
			return nil
		}
		content, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		files = append(files, policyFile{name: name, content: content})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: read policy files: %w", err)
	}
	files.sort()
	return files, nil
}

func (files policyFiles) sort() {
	slices.SortFunc(files, func(a, b policyFile) int { return strings.Compare(a.name, b.name) })
}

// withoutTests is the files a revision compiles: all but *_test.rego.
func (files policyFiles) withoutTests() policyFiles {
	out := make(policyFiles, 0, len(files))
	for _, f := range files {
		if !isTestFile(f.name) {
			out = append(out, f)
		}
	}
	return out
}

func (files policyFiles) hasTests() bool {
	return slices.ContainsFunc(files, func(f policyFile) bool { return isTestFile(f.name) })
}

func isTestFile(name string) bool { return strings.HasSuffix(name, "_test.rego") }

func hidden(name string) bool {
	base := path.Base(name)
	return name != "." && strings.HasPrefix(base, ".")
}

func isPolicyFile(name string, withTests bool) bool {
	switch path.Ext(name) {
	case ".json":
		return !strings.HasSuffix(name, ".schema.json")
	case ".rego":
		return withTests || !isTestFile(name)
	}
	return false
}

// revision is the hex SHA-256 over the files in name order. Each name and
// content is preceded by its length, so no two different sets of files hash
// alike by shifting bytes from one file into the next.
func (files policyFiles) revision() string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.name)))
		h.Write(n[:])
		h.Write([]byte(f.name))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.content)))
		h.Write(n[:])
		h.Write(f.content)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// load parses the modules and data documents with OPA's loader, the same one
// `opa test` and `opa eval -d` use, so data lands at the same paths.
func (files policyFiles) load() (*loader.Result, error) {
	snapshot := make(fstest.MapFS, len(files))
	for _, f := range files {
		snapshot[f.name] = &fstest.MapFile{Data: f.content, Mode: 0o444}
	}
	loaded, err := loader.NewFileLoader().
		WithFS(snapshot).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		All([]string{"."})
	if err != nil {
		return nil, fmt.Errorf("policy: load: %w", err)
	}
	return loaded, nil
}
