package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// A decision's notice type, channel type and channel security take a handful
// of values in any deployment (an EOB or an appointment; email, SMS or the
// portal), and most rules test them before anything else. A revision
// therefore also keeps, for each combination it has been asked about, the
// policies partially evaluated with those three parts of the input known
// and the rest unknown: the residual is only the rules that still depend on
// the payload, facts, contact and transport flags, about half the work of
// the query partially evaluated with the whole input unknown (compare
// BenchmarkDecideEOB with BenchmarkDecideEOBGeneral). It is a plan, not a
// cache of decisions: every decision still evaluates the rules on its own
// input. FuzzPartialEvalAgrees holds the specialised queries to the
// policies as written. Tenants' uploaded revisions are not specialised:
// their code was tried in the sandbox with the whole input unknown only.

// maxSpecialised bounds the specialised queries a revision keeps (each is
// about half a megabyte); inputs past it use the general query.
const maxSpecialised = 32

// specialiseTimeout bounds one partial evaluation (about 11 ms for the
// shipped policies); past it the key is decided by the general query.
const specialiseTimeout = 5 * time.Second

// specKey is the part of the input a specialised query was evaluated with.
type specKey struct {
	noticeType, channelType, security string
}

// The input paths a specialised query leaves unknown. With specKey's three
// they are every path Input.regoValue writes, and specKeyOf accepts only an
// input with no other key, so nothing the residual assumes absent is present.
var (
	specUnknowns        = []string{"input.payload", "input.purpose", "input.facts", "input.contact", "input.channel.tls_enforced", "input.channel.message_encrypted", "input.channel.encryption_available"}
	specTopKeys         = map[string]bool{"notice_type": true, "channel": true, "payload": true, "purpose": true, "facts": true, "contact": true}
	specChannelKeys     = map[string]bool{"type": true, "security": true, "tls_enforced": true, "message_encrypted": true, "encryption_available": true}
	errNotSpecialisable = errors.New("policy: the modules read the input in a way a specialised query cannot hold")
)

// specKeyOf is the key of input, and false when input is not an object of
// exactly the shape Input.regoValue builds with string notice and channel
// types (then only the general query decides it).
func specKeyOf(input ast.Value) (specKey, bool) {
	obj, ok := input.(ast.Object)
	if !ok || !onlyKeys(obj, specTopKeys) {
		return specKey{}, false
	}
	nt, ok := stringAt(obj, "notice_type")
	if !ok {
		return specKey{}, false
	}
	ct := obj.Get(keyChannel)
	if ct == nil {
		return specKey{}, false
	}
	ch, ok := ct.Value.(ast.Object)
	if !ok || !onlyKeys(ch, specChannelKeys) {
		return specKey{}, false
	}
	typ, ok := stringAt(ch, "type")
	if !ok {
		return specKey{}, false
	}
	key := specKey{noticeType: nt, channelType: typ}
	if ch.Get(keySecurity) != nil {
		// Input.regoValue leaves an empty security out; the specialised
		// query takes "" to mean absent.
		if key.security, ok = stringAt(ch, "security"); !ok || key.security == "" {
			return specKey{}, false
		}
	}
	return key, true
}

func onlyKeys(obj ast.Object, allowed map[string]bool) bool {
	for _, k := range obj.Keys() {
		s, ok := k.Value.(ast.String)
		if !ok || !allowed[string(s)] {
			return false
		}
	}
	return true
}

func stringAt(obj ast.Object, key string) (string, bool) {
	t := obj.Get(ast.InternedTerm(key))
	if t == nil {
		return "", false
	}
	s, ok := t.Value.(ast.String)
	return string(s), ok
}

// known is the input document the key stands for.
func (k specKey) known() map[string]any {
	ch := map[string]any{"type": k.channelType}
	if k.security != "" {
		ch["security"] = k.security
	}
	return map[string]any{"notice_type": k.noticeType, "channel": ch}
}

// newSpecialised specialises files, a revision's modules and data without
// tests, on demand.
func newSpecialised(files policyFiles) *specialised {
	return &specialised{files: files, byKey: map[specKey]*specEntry{}}
}

// specialised is the queries a revision has specialised so far.
type specialised struct {
	files policyFiles // the revision's modules and data, without tests
	mu    sync.Mutex
	byKey map[specKey]*specEntry
}

type specEntry struct {
	once  sync.Once
	query *rego.PreparedEvalQuery // nil when the key could not be specialised
}

// query is the query specialised to key, built on first use; nil means
// decide with the general query.
func (s *specialised) query(ctx context.Context, key specKey) *rego.PreparedEvalQuery {
	s.mu.Lock()
	e, ok := s.byKey[key]
	if !ok {
		if len(s.byKey) >= maxSpecialised {
			s.mu.Unlock()
			return nil
		}
		e = &specEntry{}
		s.byKey[key] = e
	}
	s.mu.Unlock()
	e.once.Do(func() {
		// Built once for every later decision: the caller's deadline must
		// not leave the key unspecialised for the revision's life, but the
		// partial evaluation gets a bound of its own.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), specialiseTimeout)
		defer cancel()
		q, err := prepareSpecialised(bctx, s.files, key)
		if err == nil {
			e.query = &q
		}
	})
	return e.query
}

// prepareSpecialised partially evaluates DecisionQuery against files with
// key's part of the input known, and prepares the residual for evaluation.
// The original modules are compiled in as well, so that the residual may
// still refer to any rule it did not inline.
func prepareSpecialised(ctx context.Context, files policyFiles, key specKey) (rego.PreparedEvalQuery, error) {
	loaded, err := files.load()
	if err != nil {
		return rego.PreparedEvalQuery{}, err
	}
	modules := loaded.ParsedModules()
	for _, m := range modules {
		if !specialisable(m) {
			return rego.PreparedEvalQuery{}, errNotSpecialisable
		}
	}
	store := dataStore(loaded)
	const resultVar = "__tidings_decision__"
	opts := append(regoOptions(resultVar+" = "+DecisionQuery, store, modules),
		rego.Input(key.known()),
		rego.Unknowns(specUnknowns),
		rego.PartialNamespace("tidings_specialised"),
	)
	pq, err := rego.New(opts...).Partial(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("policy: specialise: %w", err)
	}
	if len(pq.Queries) == 0 {
		// The decision is undefined for every input with this key; the
		// general query says so with its own error.
		return rego.PreparedEvalQuery{}, errNotSpecialisable
	}
	result := &ast.Module{Package: &ast.Package{Path: ast.MustParseRef("data.tidings_specialised_result")}}
	for _, body := range pq.Queries {
		result.Rules = append(result.Rules, &ast.Rule{
			Head:   ast.NewHead(ast.Var("decision"), nil, ast.VarTerm(resultVar)),
			Body:   body,
			Module: result,
		})
	}
	q, err := rego.New(regoOptions("data.tidings_specialised_result.decision", store,
		modules, append(pq.Support, result)...)...).PrepareForEval(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("policy: specialise: %w", err)
	}
	return q, nil
}

// specialisable reports whether every read of the input in m names a
// top-level key, and under input.channel a key of the channel, with a
// constant: the partial evaluation then sees exactly which paths are known
// and which unknown. A module that reads input (or input.channel) whole,
// iterates over its keys, imports it or replaces it with `with` is decided
// by the general query only, and so is a module in a package of the names
// the specialised query itself uses.
func specialisable(m *ast.Module) bool {
	if strings.HasPrefix(m.Package.Path.String(), "data.tidings_specialised") {
		return false // the packages the specialised query is made of
	}
	for _, imp := range m.Imports {
		if ref, ok := imp.Path.Value.(ast.Ref); ok && ref.HasPrefix(ast.InputRootRef) {
			return false
		}
	}
	withless := true
	ast.WalkExprs(m, func(e *ast.Expr) bool {
		if len(e.With) > 0 {
			withless = false
		}
		return !withless
	})
	return withless && inputReadsSpecialisable(m)
}

// inputReadsSpecialisable reports whether every use of input within x is a
// ref inputRefSpecialisable accepts.
func inputReadsSpecialisable(x any) bool {
	ok := true
	ast.WalkTerms(x, func(t *ast.Term) bool {
		if !ok {
			return true
		}
		switch v := t.Value.(type) {
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				ok = false // input on its own, not as the head of a ref
			}
		case ast.Ref:
			if v.HasPrefix(ast.InputRootRef) {
				ok = inputRefSpecialisable(v)
				for _, k := range v[1:] {
					ok = ok && inputReadsSpecialisable(k)
				}
				return true // the head is input itself, and the keys are checked
			}
		}
		return false
	})
	return ok
}

func inputRefSpecialisable(ref ast.Ref) bool {
	if len(ref) < 2 {
		return false
	}
	top, ok := ref[1].Value.(ast.String)
	if !ok {
		return false
	}
	if top == "channel" {
		if len(ref) < 3 {
			return false
		}
		if _, ok := ref[2].Value.(ast.String); !ok {
			return false
		}
	}
	return true
}
