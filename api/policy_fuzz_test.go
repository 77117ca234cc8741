package api

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tidings-health/tidings/fault"
)

// FuzzCandidateFS feeds the file names of a policy upload or dry run (a
// tenant's, so untrusted) to candidateFS: it never panics, refuses with
// 400, and every file it takes is a relative path inside the candidate
// (no "..", no leading "/" or "."), ending in .rego or .json.
func FuzzCandidateFS(f *testing.F) {
	for _, pair := range [][2]string{
		{"plan/notice.rego", "data/x.json"},
		{"../etc/x.rego", "a.rego"},
		{"/abs.rego", "./b.json"},
		{"a/../../c.rego", "d.txt"},
		{".hidden.rego", `a\..\b.rego`},
		{"a//b.rego", "a/./b.rego"},
	} {
		f.Add(pair[0], pair[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := candidateFS(map[string]string{a: "package x", b: "{}"})
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("refused with %v, not a 400", err)
			}
			return
		}
		m, ok := got.(fstest.MapFS)
		if !ok || len(m) == 0 {
			t.Fatalf("taken as %T with %d files", got, len(m))
		}
		for name := range m {
			if !fs.ValidPath(name) || strings.HasPrefix(name, ".") || strings.Contains("/"+name+"/", "/../") ||
				!(strings.HasSuffix(name, ".rego") || strings.HasSuffix(name, ".json")) {
				t.Fatalf("took the file name %q (from %q, %q)", name, a, b)
			}
		}
	})
}
