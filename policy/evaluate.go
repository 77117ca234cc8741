package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/tidings-health/tidings/fault"
)

// ErrInvalidInput means a dry run's input is not one JSON object.
var ErrInvalidInput = errors.New("policy: invalid input")

// EvalResult is a dry run's outcome: the decision and the rules behind it.
type EvalResult struct {
	Decision Decision
	// Fired lists every rule of the policies whose body succeeded while the
	// decision was made, once each, as "data.tidings.notice.deny
	// (notice.rego:87)", in file and line order: the deny, redact and
	// obligation rules that produced values and the helper rules they used.
	// A default that applied reads "default data.tidings.notice.portal_only
	// (notice.rego:75)".
	Fired []string
}

// Evaluate is a dry run for compliance analysts: it decides on in, a raw
// input document such as a sample file, and reports the rules that fired.
// With candidate nil it asks the active revision; otherwise it compiles the
// policies in candidate and runs their tests as Reload would, and decides
// with them, but never makes them active. A candidate is arbitrary code from
// a caller: with WithSandbox it compiles and runs in a child process under a
// time and memory limit, and a child over either gives a fault.Unprocessable
// error wrapping ErrDryRunLimit. A candidate that is refused gives an error
// wrapping ErrRejected; input that is not one JSON object, ErrInvalidInput.
// When the policies give no usable decision the error wraps ErrNoDecision
// and the result still lists the rules that fired.
func (e *Engine) Evaluate(ctx context.Context, candidate fs.FS, in json.RawMessage) (EvalResult, error) {
	input, err := parseInput(in)
	if err != nil {
		return EvalResult{}, err
	}
	if candidate == nil {
		rev := e.active.Load()
		if rev == nil {
			return EvalResult{}, fmt.Errorf("%w: no policy is loaded", ErrNoDecision)
		}
		return rev.dryRun(ctx, input)
	}
	files, err := readPolicyFiles(candidate, true)
	if err != nil {
		return EvalResult{}, err
	}
	return e.evaluateFiles(ctx, files, in, input)
}

// evaluateFiles dry-runs files, code from a caller, in the sandbox when
// the Engine has one; in is input parsed.
func (e *Engine) evaluateFiles(ctx context.Context, files policyFiles, in json.RawMessage, input ast.Value) (EvalResult, error) {
	if e.sandbox != nil {
		return e.sandbox.evaluate(ctx, files, in)
	}
	return dryRunCandidate(ctx, files, input)
}

// checkUpload loads files as a revision would, tests included, in the
// sandbox when the Engine has one, and returns the revision's id.
func (e *Engine) checkUpload(ctx context.Context, files policyFiles) (string, error) {
	if e.sandbox != nil {
		return e.sandbox.check(ctx, files)
	}
	rev, err := checkCandidate(ctx, files)
	if err != nil {
		return "", err
	}
	return rev.id, nil
}

// dryRunCandidate compiles and tests files as Reload would, then decides
// on input with them.
func dryRunCandidate(ctx context.Context, files policyFiles, input ast.Value) (EvalResult, error) {
	rev, err := compileRevision(ctx, files)
	if err != nil {
		return EvalResult{}, err
	}
	return rev.dryRun(ctx, input)
}

// dryRun decides on input and lists the rules that fired.
func (r *revision) dryRun(ctx context.Context, input ast.Value) (EvalResult, error) {
	fired := &firedRules{seen: map[*ast.Rule]bool{}}
	d, err := r.decide(ctx, &r.query, input, rego.EvalQueryTracer(fired))
	return EvalResult{Decision: d, Fired: fired.list()}, err
}

// parseInput reads one JSON object. Its errors give positions, never the
// input's text, which may be PHI.
func parseInput(raw json.RawMessage) (ast.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers stay exact, as OPA reads them
	var doc any
	if err := dec.Decode(&doc); err != nil {
		var syntax *json.SyntaxError
		switch {
		case errors.As(err, &syntax):
			return nil, fault.Errorf(fault.Invalid, "%w: not valid JSON at byte %d", ErrInvalidInput, syntax.Offset)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fault.Errorf(fault.Invalid, "%w: empty or truncated JSON", ErrInvalidInput)
		default:
			return nil, fault.Errorf(fault.Invalid, "%w: not valid JSON", ErrInvalidInput)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fault.Errorf(fault.Invalid, "%w: more than one JSON value (after byte %d)", ErrInvalidInput, dec.InputOffset())
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, fault.Errorf(fault.Invalid, "%w: the input is %s, want an object", ErrInvalidInput, jsonType(doc))
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil, fault.Errorf(fault.Invalid, "%w: %w", ErrInvalidInput, err)
	}
	return v, nil
}

// firedRules is a tracer that records each rule whose body succeeded: OPA
// emits an Exit event with the rule as its node exactly then.
type firedRules struct {
	seen  map[*ast.Rule]bool
	rules []*ast.Rule
}

func (*firedRules) Enabled() bool { return true }

func (*firedRules) Config() topdown.TraceConfig { return topdown.TraceConfig{} }

func (f *firedRules) TraceEvent(ev topdown.Event) {
	if ev.Op != topdown.ExitOp {
		return
	}
	r, ok := ev.Node.(*ast.Rule)
	if !ok || f.seen[r] || r.Location == nil || r.Location.File == "" {
		return
	}
	f.seen[r] = true
	f.rules = append(f.rules, r)
}

func (f *firedRules) list() []string {
	type fired struct {
		at   fileLines
		name string
	}
	all := make([]fired, 0, len(f.rules))
	for _, r := range f.rules {
		name := r.Head.Ref().String()
		if r.Module != nil && r.Module.Package != nil {
			name = r.Module.Package.Path.Extend(r.Head.Ref()).String()
		}
		if r.Default {
			name = "default " + name
		}
		all = append(all, fired{fileLines{r.Location.File, r.Location.Row, r.Location.Row}, name})
	}
	slices.SortFunc(all, func(a, b fired) int { return a.at.compare(b.at) })
	out := make([]string, 0, len(all))
	for _, x := range all {
		s := x.name + " (" + x.at.String() + ")"
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}
