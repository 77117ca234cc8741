package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	policyfiles "github.com/tidings-health/tidings/rego"
)

// DecisionQuery is the one document Tidings asks the policies for.
const DecisionQuery = "data.tidings.notice.decision"

// ErrNoDecision means the policies gave no usable answer: the decision was
// undefined, malformed, or evaluation failed. Callers must not send.
var ErrNoDecision = errors.New("policy: no decision")

// Channel is how a notice would be delivered.
type Channel struct {
	Type             string `json:"type"`
	TLSEnforced      bool   `json:"tls_enforced"`
	MessageEncrypted bool   `json:"message_encrypted"`
}

// Input is what the policies judge: one notice payload on one channel. Its JSON
// form is the input document described in rego/README.md.
type Input struct {
	NoticeType string         `json:"notice_type"`
	Channel    Channel        `json:"channel"`
	Payload    map[string]any `json:"payload"`
	Purpose    string         `json:"purpose,omitempty"`
	// Facts are coarse properties of the source resource that rules may use
	// (for an EOB: "use" and "outcome"); never codes or names.
	Facts map[string]string `json:"facts,omitempty"`
}

// LogValue keeps the payload, which is PHI, out of logs.
func (Input) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Decision is the policies' answer for one Input. Deny holds the reasons, which
// name fields but never carry their values. Revision identifies the policy
// files that decided, for the decision log.
type Decision struct {
	Allow  bool
	Deny   []string
	Redact []string
	// Obligations are conditions on sending, by name (portal_only,
	// requires_message_encryption, generic_provider_label,
	// route_to_confidential_address): only those set to true are listed.
	// A caller that cannot meet one must not send.
	Obligations []string
	Revision    string
}

// Has reports whether the decision carries an obligation.
func (d Decision) Has(obligation string) bool {
	for _, o := range d.Obligations {
		if o == obligation {
			return true
		}
	}
	return false
}

// Engine evaluates one compiled revision of the policies. It is safe for
// concurrent use; to change policies, build a new Engine.
type Engine struct {
	query    rego.PreparedEvalQuery
	revision string
}

// New loads every .rego file (except *_test.rego) and every .json data file in
// fsys, compiles them once and prepares DecisionQuery. Data files load under
// the path of their folder, as `opa eval -d` loads them. A module that does not
// parse or compile makes New fail with the compiler's messages.
func New(ctx context.Context, fsys fs.FS) (*Engine, error) {
	files, err := readPolicyFiles(fsys, false)
	if err != nil {
		return nil, err
	}
	query, err := prepare(ctx, files)
	if err != nil {
		return nil, err
	}
	return &Engine{query: query, revision: files.revision()}, nil
}

// NewEmbedded builds an Engine from the policies shipped in the binary.
func NewEmbedded(ctx context.Context) (*Engine, error) {
	return New(ctx, policyfiles.FS)
}

// Revision is the hex SHA-256 of the policy files this Engine compiled.
func (e *Engine) Revision() string { return e.revision }

// Decide asks the policies whether in may be sent. Any error means there is no
// decision and the notice must not go; errors.Is(err, ErrNoDecision) holds for
// every failure of the policies themselves.
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	if err := ctx.Err(); err != nil {
		// OPA checks cancellation only now and then; a short evaluation could finish.
		return Decision{}, fmt.Errorf("%w: %w", ErrNoDecision, err)
	}
	input, err := in.regoValue()
	if err != nil {
		return Decision{}, err
	}
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return Decision{}, fmt.Errorf("%w: evaluate %s: %w", ErrNoDecision, DecisionQuery, err)
	}
	d, err := decisionFrom(rs)
	if err != nil {
		return Decision{}, err
	}
	d.Revision = e.revision
	return d, nil
}

// prepare compiles files and prepares DecisionQuery against them.
func prepare(ctx context.Context, files policyFiles) (rego.PreparedEvalQuery, error) {
	loaded, err := files.load()
	if err != nil {
		return rego.PreparedEvalQuery{}, err
	}
	if len(loaded.Modules) == 0 {
		return rego.PreparedEvalQuery{}, errors.New("policy: no .rego modules to compile")
	}
	// The data files never change after load, so the store hands out AST values
	// and evaluation does not convert them again on every read.
	store := inmem.NewFromObjectWithOpts(loaded.Documents,
		inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	opts := []func(*rego.Rego){
		rego.Query(DecisionQuery),
		rego.Store(store),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Capabilities(capabilities()),
	}
	for _, m := range loaded.ParsedModules() {
		opts = append(opts, rego.ParsedModule(m))
	}
	query, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("policy: compile: %w", err)
	}
	return query, nil
}

// capabilities are OPA's built-ins minus those that reach outside the process.
// A policy sees PHI, so it must not be able to send it anywhere or read the
// process environment; a module that calls one of these does not compile.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion() // a fresh copy on every call
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(b *ast.Builtin) bool {
		switch b.Name {
		case "http.send", "net.lookup_ip_addr", "opa.runtime":
			return true
		}
		return false
	})
	return caps
}

// decisionFrom reads the decision document, refusing anything that is not
// exactly the agreed shape so that a broken policy fails closed.
func decisionFrom(rs rego.ResultSet) (Decision, error) {
	if len(rs) == 0 {
		return Decision{}, fmt.Errorf("%w: %s is undefined", ErrNoDecision, DecisionQuery)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Decision{}, fmt.Errorf("%w: %s gave %d results", ErrNoDecision, DecisionQuery, len(rs))
	}
	doc, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("%w: %s is a %s, want an object", ErrNoDecision, DecisionQuery, jsonType(rs[0].Expressions[0].Value))
	}
	allow, ok := doc["allow"].(bool)
	if !ok {
		return Decision{}, fmt.Errorf("%w: decision.allow is %s, want a boolean", ErrNoDecision, jsonType(doc["allow"]))
	}
	deny, err := stringList(doc, "deny")
	if err != nil {
		return Decision{}, err
	}
	redact, err := stringList(doc, "redact")
	if err != nil {
		return Decision{}, err
	}
	if allow && len(deny) > 0 {
		return Decision{}, fmt.Errorf("%w: decision allows and denies at once", ErrNoDecision)
	}
	var obligations []string
	switch ob := doc["obligations"].(type) {
	case nil:
	case map[string]any:
		for name, v := range ob {
			on, ok := v.(bool)
			if !ok {
				return Decision{}, fmt.Errorf("%w: decision.obligations.%s is %s, want a boolean", ErrNoDecision, name, jsonType(v))
			}
			if on {
				obligations = append(obligations, name)
			}
		}
		sort.Strings(obligations)
	default:
		return Decision{}, fmt.Errorf("%w: decision.obligations is %s, want an object", ErrNoDecision, jsonType(doc["obligations"]))
	}
	return Decision{Allow: allow, Deny: deny, Redact: redact, Obligations: obligations}, nil
}

func stringList(doc map[string]any, key string) ([]string, error) {
	items, ok := doc[key].([]any)
	if !ok {
		return nil, fmt.Errorf("%w: decision.%s is %s, want an array of strings", ErrNoDecision, key, jsonType(doc[key]))
	}
	out := make([]string, len(items))
	for i, item := range items {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("%w: decision.%s[%d] is %s, want a string", ErrNoDecision, key, i, jsonType(item))
		}
		out[i] = s
	}
	return out, nil
}

// jsonType names the JSON type of a decoded value without showing the value.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null or missing"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return "a number"
	}
}
