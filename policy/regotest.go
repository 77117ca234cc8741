package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// ErrTestsFailed means at least one Rego test failed or raised an error.
var ErrTestsFailed = errors.New("policy: rego tests failed")

// RunTests runs every test_ rule in the *_test.rego files of fsys against the
// policies and data beside them, with OPA's tester and the same restricted
// built-ins as New. It returns how many passed. If any test fails or errors,
// the error wraps ErrTestsFailed and names each failing test with its file and
// line. Skipped tests (todo_test_) neither pass nor fail.
func RunTests(ctx context.Context, fsys fs.FS) (passed int, err error) {
	files, err := readPolicyFiles(fsys, true)
	if err != nil {
		return 0, err
	}
	loaded, err := files.load()
	if err != nil {
		return 0, err
	}
	compiler := ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1)
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(inmem.NewFromObject(loaded.Documents)).
		SetModules(loaded.ParsedModules()).
		CapturePrintOutput(true)
	results, err := runner.RunTests(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("policy: compile tests: %w", err)
	}

	var failures []string
	total := 0
	for r := range results {
		total++
		switch {
		case r.Skip:
		case r.Pass():
			passed++
		default:
			failures = append(failures, describeFailure(r))
		}
	}
	if len(failures) > 0 {
		slices.Sort(failures)
		return passed, fmt.Errorf("%w: %d of %d:\n%s", ErrTestsFailed, len(failures), total, strings.Join(failures, "\n"))
	}
	return passed, nil
}

// describeFailure names a failed test the way `opa test` does: package, rule,
// file and line, then the error or the print output that explains it.
func describeFailure(r *tester.Result) string {
	var b strings.Builder
	b.WriteString(r.Package)
	b.WriteByte('.')
	b.WriteString(r.Name)
	if r.Location != nil {
		fmt.Fprintf(&b, " (%s:%d)", r.Location.File, r.Location.Row)
	}
	if r.Error != nil {
		b.WriteString(": ERROR: ")
		b.WriteString(r.Error.Error())
	} else {
		b.WriteString(": FAIL")
	}
	if out := strings.TrimSpace(string(r.Output)); out != "" {
		b.WriteString("\n\t")
		b.WriteString(strings.ReplaceAll(out, "\n", "\n\t"))
	}
	return b.String()
}
