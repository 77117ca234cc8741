package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// ErrTestsFailed means at least one Rego test failed or raised an error.
var ErrTestsFailed = errors.New("policy: rego tests failed")

// TestReport is the outcome of a policy test run.
type TestReport struct {
	Passed, Failed, Skipped int
	// Failures names each failed test with its file and line, then the
	// error or the test's print output, the way `opa test` does.
	Failures []string
	// Coverage is the percentage of lines of the policy modules (not the
	// *_test.rego ones) that the tests evaluated, as `opa test --coverage`
	// counts them; zero when coverage was not measured.
	Coverage float64
	// NotCovered lists the policy lines no test reached, e.g.
	// "notice.rego:42" or "notice.rego:50-53".
	NotCovered []string
}

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
	r, err := runTests(ctx, files, false)
	return r.Passed, err
}

// RunTestsWithCoverage is RunTests with the full report, including which
// lines of the policies the tests cover. The error is as RunTests'; the
// report is filled whenever the tests ran, failed or not.
func RunTestsWithCoverage(ctx context.Context, fsys fs.FS) (TestReport, error) {
	files, err := readPolicyFiles(fsys, true)
	if err != nil {
		return TestReport{}, err
	}
	return runTests(ctx, files, true)
}

func runTests(ctx context.Context, files policyFiles, withCoverage bool) (TestReport, error) {
	loaded, err := files.load()
	if err != nil {
		return TestReport{}, err
	}
	modules := loaded.ParsedModules()
	compiler := ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1)
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(inmem.NewFromObject(loaded.Documents)).
		SetModules(modules).
		CapturePrintOutput(true)
	var cov *cover.Cover
	if withCoverage {
		cov = cover.New()
		// The supplementary passes only explain why a line was missed; they
		// cost two more evaluations of every test.
		runner = runner.SetCoverageQueryTracer(cov).SetCoverageRuns([]cover.Kind{})
	}
	results, err := runner.RunTests(ctx, nil)
	if err != nil {
		return TestReport{}, fmt.Errorf("policy: compile tests: %w", err)
	}

	var report TestReport
	total := 0
	for r := range results {
		total++
		switch {
		case r.Skip:
			report.Skipped++
		case r.Pass():
			report.Passed++
		default:
			report.Failed++
			report.Failures = append(report.Failures, describeFailure(r))
		}
	}
	slices.Sort(report.Failures)
	if cov != nil {
		report.Coverage, report.NotCovered = coverage(cov, modules)
	}
	if report.Failed > 0 {
		return report, fmt.Errorf("%w: %d of %d:\n%s", ErrTestsFailed, report.Failed, total, strings.Join(report.Failures, "\n"))
	}
	if err := ctx.Err(); err != nil {
		// The tester stops early on cancellation without failing a test.
		return report, fmt.Errorf("policy: run tests: %w", err)
	}
	return report, nil
}

// coverage is the covered share of the lines of the non-test modules. OPA's
// overall figure also counts the test modules' own lines, which the tests
// always cover, so it is summed here per policy file instead.
func coverage(cov *cover.Cover, modules map[string]*ast.Module) (float64, []string) {
	policies := make(map[string]*ast.Module, len(modules))
	for name, m := range modules {
		if !isTestFile(name) {
			policies[name] = m
		}
	}
	report := cov.Report(policies)
	var covered, notCovered int
	var missed []fileLines
	for name := range policies {
		fr := report.Files[name]
		if fr == nil {
			continue
		}
		covered += fr.CoveredLines
		notCovered += fr.NotCoveredLines
		for _, r := range fr.NotCovered {
			missed = append(missed, fileLines{name, r.Start.Row, r.End.Row})
		}
	}
	slices.SortFunc(missed, fileLines.compare)
	missed = slices.Compact(missed)
	lines := make([]string, len(missed))
	for i, m := range missed {
		lines[i] = m.String()
	}
	if covered+notCovered == 0 {
		return 0, lines
	}
	return 100 * float64(covered) / float64(covered+notCovered), lines
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

// fileLines is a span of lines in a policy file.
type fileLines struct {
	file       string
	start, end int
}

func (l fileLines) compare(o fileLines) int {
	if c := strings.Compare(l.file, o.file); c != 0 {
		return c
	}
	if l.start != o.start {
		return l.start - o.start
	}
	return l.end - o.end
}

func (l fileLines) String() string {
	if l.end <= l.start {
		return fmt.Sprintf("%s:%d", l.file, l.start)
	}
	return fmt.Sprintf("%s:%d-%d", l.file, l.start, l.end)
}
