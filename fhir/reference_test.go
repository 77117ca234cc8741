package fhir

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// collectReferencesByTokens is the walk collectReferences replaced, kept to
// check it: it returns every Reference.reference string inside a JSON
// value, in document order, without duplicates. The value has passed
// checkJSON, so a token error simply ends the walk.
func collectReferencesByTokens(raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		object    bool
		expectKey bool
		key       string
	}
	var stack []frame
	seen := make(map[string]struct{})
	var out []string
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		n := len(stack)
		if n > 0 && stack[n-1].object && stack[n-1].expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			stack[n-1].key, _ = tok.(string)
			stack[n-1].expectKey = false
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, frame{object: true, expectKey: true})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:n-1]
				valueDone()
			}
		case string:
			if n > 0 && stack[n-1].object && stack[n-1].key == "reference" && t != "" {
				if _, dup := seen[t]; !dup {
					seen[t] = struct{}{}
					out = append(out, t)
					if len(out) >= maxRefsPerResource {
						return out
					}
				}
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// The byte scanner finds exactly the references encoding/json's tokens do,
// in the same order, on every published example.
func TestCollectReferencesAgreesWithTokens(t *testing.T) {
	n := 0
	filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil || checkJSON(b, "doc") != nil {
			return nil
		}
		n++
		if got, want := collectReferences(b), collectReferencesByTokens(b); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
		return nil
	})
	if n < 30 {
		t.Fatalf("only %d examples read", n)
	}
	doc := []byte(`{"a":{"reference":"Patient/1"},"b":[{"reference":"Org\/2"},{"reference":""},{"x":"reference"}],"reference":"Patient/1","c":{"reference":{"reference":"Loc/3"}},"d":["reference","x"]}`)
	if got, want := collectReferences(doc), collectReferencesByTokens(doc); !slices.Equal(got, want) || len(got) != 3 {
		t.Fatalf("%v, want %v", got, want)
	}
}

func FuzzCollectReferences(f *testing.F) {
	f.Add([]byte(`{"a":{"reference":"Patient/1"},"b":[{"reference":"Org\u002f2"}]}`))
	f.Add([]byte(`{"reference":["x"],"r":{"reference":"y"}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if checkJSON(doc, "doc") != nil || bytes.Count(doc, []byte("[")) > 5000 {
			return
		}
		if got, want := collectReferences(doc), collectReferencesByTokens(doc); !slices.Equal(got, want) {
			t.Fatalf("%v, want %v", got, want)
		}
	})
}
