package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

// newlyAdded stands for a built-in that a future OPA version adds: it is in
// this version's capabilities, so a deny-list would let policies call it.
const newlyAdded = "tidings_test.newly_added"

func init() {
	rego.RegisterBuiltin1(&rego.Function{Name: newlyAdded, Decl: types.NewFunction(types.Args(types.A), types.B)},
		func(rego.BuiltinContext, *ast.Term) (*ast.Term, error) { return ast.BooleanTerm(true), nil })
}

// callOf is a module whose only rule calls the built-in b with inputs as
// its arguments.
func callOf(b *ast.Builtin) string {
	args := b.Decl.FuncArgs()
	n := len(args.Args)
	if args.Variadic != nil {
		n++
	}
	in := make([]string, n)
	for i := range in {
		in[i] = fmt.Sprintf("input.a%d", i)
	}
	call := b.Name + "(" + strings.Join(in, ", ") + ")"
	if b.Decl.Result() != nil {
		call = "_ = " + call
	}
	return "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": [], \"obligations\": {}} if {\n\t" + call + "\n}\n"
}

// Every built-in of this OPA version that is not on the allow-list, and
// one that an upgrade would add, makes a policy fail to compile.
func TestUnlistedBuiltinsDoNotCompile(t *testing.T) {
	ctx := context.Background()
	all := ast.CapabilitiesForThisVersion().Builtins
	var fake *ast.Builtin
	for _, b := range all {
		if b.Name == newlyAdded {
			fake = b
		}
	}
	if fake == nil {
		t.Fatalf("%s is not among this version's built-ins; the test proves nothing", newlyAdded)
	}
	// Without the allow-list, the fake built-in compiles and runs.
	q, err := rego.New(rego.Query(DecisionQuery), rego.Module("p.rego", callOf(fake)), rego.SetRegoVersion(ast.RegoV1)).PrepareForEval(ctx)
	if err != nil {
		t.Fatalf("with OPA's own capabilities: %v", err)
	}
	if rs, err := q.Eval(ctx, rego.EvalInput(map[string]any{"a0": 1})); err != nil || len(rs) != 1 {
		t.Fatalf("with OPA's own capabilities: %v %v", rs, err)
	}

	refused := 0
	for _, b := range all {
		if allowedBuiltins[b.Name] {
			continue
		}
		refused++
		_, err := New(ctx, fstest.MapFS{"p.rego": {Data: []byte(callOf(b))}})
		if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), b.Name) {
			t.Errorf("%s: New = %v, want a rejection naming it", b.Name, err)
		}
	}
	t.Logf("%d built-ins allowed, %d refused", len(all)-refused, refused)
	for _, name := range []string{"http.send", "net.lookup_ip_addr", "opa.runtime", "json.verify_schema", "json.match_schema", "rand.intn", "trace"} {
		if allowedBuiltins[name] {
			t.Errorf("%s is allowed", name)
		}
	}
}

// The allow-list names built-ins that exist: a misspelt or removed one
// would silently break the policies that use it.
func TestAllowedBuiltinsExist(t *testing.T) {
	have := map[string]bool{}
	for _, b := range ast.CapabilitiesForThisVersion().Builtins {
		have[b.Name] = true
	}
	for name := range allowedBuiltins {
		if !have[name] {
			t.Errorf("allowed built-in %s is not in this OPA version", name)
		}
	}
}
