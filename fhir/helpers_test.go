package fhir

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// canary is planted in inputs; no error string may ever contain it.
const canary = "CANARY-7731-PHI"

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", path))
	if err != nil {
		tb.Fatalf("read fixture: %v", err)
	}
	return b
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	return b
}

// jsonEqual reports whether two documents hold the same JSON value.
func jsonEqual(tb testing.TB, a, b []byte) bool {
	tb.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		tb.Fatalf("unmarshal a: %v", err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		tb.Fatalf("unmarshal b: %v", err)
	}
	return reflect.DeepEqual(x, y)
}

// headOf returns "Type/id" of a resource.
func headOf(tb testing.TB, raw []byte) string {
	tb.Helper()
	var h resourceHead
	if err := json.Unmarshal(raw, &h); err != nil {
		tb.Fatalf("resource head: %v", err)
	}
	return h.ResourceType + "/" + h.ID
}

// bundleResources returns the resources of a Bundle's entries.
func bundleResources(tb testing.TB, bundle []byte) []json.RawMessage {
	tb.Helper()
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(bundle, &b); err != nil {
		tb.Fatalf("bundle: %v", err)
	}
	var out []json.RawMessage
	for _, e := range b.Entry {
		if len(e.Resource) > 0 {
			out = append(out, e.Resource)
		}
	}
	return out
}

func assertNoCanary(tb testing.TB, err error) {
	tb.Helper()
	if err != nil && strings.Contains(err.Error(), canary) {
		tb.Errorf("error string leaks input: %q", err.Error())
	}
}

// fixtureFiles lists every JSON fixture under testdata.
func fixtureFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob("testdata/*/*.json")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no fixtures: %v", err)
	}
	for i := range files {
		files[i] = strings.TrimPrefix(files[i], "testdata/")
	}
	return files
}
