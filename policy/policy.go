package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/tidings-health/tidings/fault"
)

// DecisionQuery is the one document Tidings asks the policies for.
const DecisionQuery = "data.tidings.notice.decision"

// ErrNoDecision means the policies gave no usable answer: the decision was
// undefined, malformed, or evaluation failed, or no policy is loaded. Callers
// must not send.
var ErrNoDecision = errors.New("policy: no decision")

// ErrRejected means a policy was refused: it does not parse or compile, its
// own tests fail, or a bundle's signature does not verify. An Engine keeps
// deciding with the revision it had.
var ErrRejected = errors.New("policy: rejected")

// rejection wraps why a policy was refused so that errors.Is finds both
// ErrRejected and the cause, and reads "policy: rejected: <cause>".
type rejection struct{ err error }

func (r rejection) Error() string {
	return ErrRejected.Error() + ": " + strings.TrimPrefix(r.err.Error(), "policy: ")
}

func (r rejection) Unwrap() []error { return []error{ErrRejected, r.err} }

// FaultCode and FaultMessage: a refused policy is the analyst's to fix, and
// the compiler's or the tests' messages say how.
func (r rejection) FaultCode() fault.Code { return fault.Unprocessable }
func (r rejection) FaultMessage() string  { return r.Error() }

func reject(err error) error {
	if errors.Is(err, ErrRejected) {
		return err
	}
	return rejection{err}
}

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
	return slices.Contains(d.Obligations, obligation)
}

// Engine decides with one revision of the policies at a time and can swap
// in a new one while it runs. A revision is compiled, tested and prepared
// completely before it becomes active, in one atomic step, so every decision
// comes from exactly one revision. It is safe for concurrent use.
type Engine struct {
	src     Source
	log     *slog.Logger
	sandbox *Sandbox // candidate dry runs run in a child process; nil: in this one
	active  atomic.Pointer[revision]

	loadMu   sync.Mutex // one load at a time
	lastSeen string     // content hash last loaded or rejected; under loadMu

	statusMu  sync.Mutex
	lastErr   string
	lastErrAt time.Time
}

// revision is one compiled and prepared set of policy files.
type revision struct {
	id   string // hex SHA-256 of the compiled files
	hash string // content hash of the source read it came from
	// query evaluates the modules as written; dry runs trace it, so the
	// rules they report are the analyst's own.
	query rego.PreparedEvalQuery
	// fast is query partially evaluated against the revision's data, with
	// the input unknown: data lookups and helper rules are folded in once,
	// at load, instead of on every decision. FuzzPartialEvalAgrees holds it
	// to query. Only revisions that become active have one.
	fast *rego.PreparedEvalQuery
	// special holds fast specialised to the notice type and channel of
	// the inputs seen so far (specialise.go). Only an Engine's own
	// revisions have it; a tenant's upload decides with fast.
	special  *specialised
	loadedAt time.Time
}

// Option configures an Engine.
type Option func(*Engine)

// WithLogger logs every load: the revision that became active, or why a
// policy was rejected (compiler and test messages name files, lines and
// rules, never notice data).
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// NewEngine returns an Engine for src with no policy loaded. It decides
// nothing (ErrNoDecision) until Reload succeeds, so a process can start, show
// the rejection in Status and pick up a corrected policy with Watch.
func NewEngine(src Source, opts ...Option) *Engine {
	e := &Engine{src: src}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Open returns an Engine with src loaded, or the reason src was rejected.
func Open(ctx context.Context, src Source, opts ...Option) (*Engine, error) {
	e := NewEngine(src, opts...)
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// New loads every .rego file (except *_test.rego) and every .json data file in
// fsys, compiles them once and prepares DecisionQuery. Data files load under
// the path of their folder, as `opa eval -d` loads them. A module that does not
// parse or compile, or a failing test in a *_test.rego file beside them, makes
// New fail with the compiler's or the tester's messages.
func New(ctx context.Context, fsys fs.FS) (*Engine, error) {
	return Open(ctx, FromFS("fs", fsys))
}

// NewEmbedded builds an Engine from the policies shipped in the binary.
func NewEmbedded(ctx context.Context) (*Engine, error) {
	return Open(ctx, FromEmbedded())
}

// Revision is the hex SHA-256 of the policy files the active revision
// compiled, or "" when no policy is loaded.
func (e *Engine) Revision() string {
	if r := e.active.Load(); r != nil {
		return r.id
	}
	return ""
}

// Status is what an operator or compliance analyst sees of an Engine.
type Status struct {
	Revision string    `json:"revision"`
	LoadedAt time.Time `json:"loaded_at,omitzero"`
	Source   string    `json:"source"`
	// LastError is why the latest load failed, with the compiler's or the
	// tester's messages; empty when the latest load succeeded or found the
	// active revision unchanged.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Status reports the active revision and the outcome of the latest load.
func (e *Engine) Status() Status {
	s := Status{Source: e.src.String()}
	if r := e.active.Load(); r != nil {
		s.Revision, s.LoadedAt = r.id, r.loadedAt
	}
	e.statusMu.Lock()
	s.LastError, s.LastErrorAt = e.lastErr, e.lastErrAt
	e.statusMu.Unlock()
	return s
}

// Reload reads the source again. A changed policy is compiled, its own
// *_test.rego tests run, and only then does it replace the active revision;
// if any step fails the error wraps ErrRejected, Status shows it, and the
// active revision keeps deciding. An unchanged source is not recompiled.
func (e *Engine) Reload(ctx context.Context) error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	f, err := e.src.fetch()
	if err != nil {
		e.lastSeen = ""
		return e.failed(err)
	}
	return e.load(ctx, f)
}

// Watch polls the source every interval (2s if interval is not positive)
// and reloads when its content changes, until ctx ends. A rejected change is
// not retried until the content changes again; Status and the logger report
// it.
func (e *Engine) Watch(ctx context.Context, interval time.Duration) {
	every(ctx, interval, nil, func() { e.poll(ctx) })
}

// every runs fn every interval (2s if not positive) and whenever wake
// signals (nil: never), until ctx ends.
func every(ctx context.Context, interval time.Duration, wake <-chan struct{}, fn func()) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		}
		fn()
	}
}

func (e *Engine) poll(ctx context.Context) {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	f, err := e.src.fetch()
	if err != nil {
		// A directory being replaced can be unreadable for a moment; report
		// a failure once, not on every tick.
		e.lastSeen = ""
		e.statusMu.Lock()
		same := e.lastErr == err.Error()
		e.statusMu.Unlock()
		if !same {
			_ = e.failed(err)
		}
		return
	}
	if f.hash == e.lastSeen {
		return
	}
	_ = e.load(ctx, f)
}

// load makes f the active revision unless it fails; the caller holds loadMu.
func (e *Engine) load(ctx context.Context, f fetched) error {
	if cur := e.active.Load(); cur != nil && cur.hash == f.hash {
		e.lastSeen = f.hash
		e.setError(nil)
		return nil
	}
	rev, err := e.compile(ctx, f)
	if err != nil {
		if ctx.Err() == nil {
			e.lastSeen = f.hash // a rejection, not an interruption: do not retry the same content
		}
		return e.failed(err)
	}
	rev.loadedAt = time.Now()
	e.active.Store(rev)
	e.lastSeen = f.hash
	e.setError(nil)
	if e.log != nil {
		e.log.Info("policy loaded", "revision", rev.id, "source", e.src.String())
	}
	return nil
}

func (e *Engine) compile(ctx context.Context, f fetched) (*revision, error) {
	files, err := e.src.policyFiles(f)
	if err != nil {
		return nil, err
	}
	rev, err := checkCandidate(ctx, files)
	if err != nil {
		return nil, err
	}
	rev.hash = f.hash
	// The operator's own policies: a tenant's upload, tried in the sandbox
	// with the whole input unknown only, is never specialised in-process.
	rev.special = newSpecialised(files.withoutTests())
	return rev, nil
}

// checkCandidate makes files a revision that can decide: compiled, tested,
// and partially evaluated against its data, the whole path a revision takes
// before it becomes active.
func checkCandidate(ctx context.Context, files policyFiles) (*revision, error) {
	rev, err := compileRevision(ctx, files)
	if err != nil {
		return nil, err
	}
	fast, err := prepare(ctx, files.withoutTests(), true)
	if err != nil {
		return nil, reject(err)
	}
	rev.fast = &fast
	return rev, nil
}

// compileRevision compiles and prepares the policies in files, then runs the
// tests among them against those policies. Nothing is returned unless all of
// it succeeds.
func compileRevision(ctx context.Context, files policyFiles) (*revision, error) {
	compiled := files.withoutTests()
	query, err := prepare(ctx, compiled, false)
	if err != nil {
		return nil, reject(err)
	}
	if files.hasTests() {
		if _, err := runTests(ctx, files, false); err != nil {
			return nil, reject(err)
		}
	}
	return &revision{id: compiled.revision(), query: query}, nil
}

func (e *Engine) failed(err error) error {
	e.setError(err)
	if e.log != nil {
		e.log.Error("policy not loaded; the active revision keeps deciding",
			"source", e.src.String(), "revision", e.Revision(), "err", err)
	}
	return err
}

func (e *Engine) setError(err error) {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	if err == nil {
		e.lastErr, e.lastErrAt = "", time.Time{}
		return
	}
	e.lastErr, e.lastErrAt = err.Error(), time.Now()
}

// Decide asks the policies whether in may be sent. Any error means there is no
// decision and the notice must not go; errors.Is(err, ErrNoDecision) holds for
// every failure of the policies themselves, and when no policy is loaded.
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	if err := ctx.Err(); err != nil {
		// OPA checks cancellation only now and then; a short evaluation could finish.
		return Decision{}, fmt.Errorf("%w: %w", ErrNoDecision, err)
	}
	return e.active.Load().decideOn(ctx, in) // one revision for the whole decision
}

// decideOn decides on in with r, with the query queryFor picks; a nil r
// is no policy loaded.
func (r *revision) decideOn(ctx context.Context, in Input) (Decision, error) {
	if r == nil {
		return Decision{}, fmt.Errorf("%w: no policy is loaded", ErrNoDecision)
	}
	input, err := in.regoValue()
	if err != nil {
		return Decision{}, err
	}
	d, err := r.decide(ctx, r.queryFor(ctx, input), input)
	if err != nil {
		return d, err
	}
	if quotesPayload(d, in.Payload) {
		// Reasons are stored and shown unsealed: a policy (a tenant's own
		// may be careless) that puts a payload value into one gives no
		// decision rather than a record with PHI in it.
		return Decision{}, fmt.Errorf("%w: a reason, redaction or obligation quotes a value of the payload; they must name fields, never their values", ErrNoDecision)
	}
	return d, nil
}

// queryFor is the query r decides input with: the one specialised to
// input's notice type and channel when there is one, else the partially
// evaluated query, else the policies as written.
func (r *revision) queryFor(ctx context.Context, input ast.Value) *rego.PreparedEvalQuery {
	if r.special != nil {
		if key, ok := specKeyOf(input); ok {
			if q := r.special.query(ctx, key); q != nil {
				return q
			}
		}
	}
	if r.fast != nil {
		return r.fast
	}
	return &r.query
}

// decide evaluates q, one of r's queries, on input.
func (r *revision) decide(ctx context.Context, q *rego.PreparedEvalQuery, input ast.Value, opts ...rego.EvalOption) (Decision, error) {
	// OPA otherwise starts a goroutine per evaluation to watch ctx; a
	// callback registered on ctx does the same without one.
	c := topdown.NewCancel()
	stop := context.AfterFunc(ctx, c.Cancel)
	defer stop()
	opts = append(opts, rego.EvalParsedInput(input), rego.EvalExternalCancel(c))
	rs, err := q.Eval(ctx, opts...)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: evaluate %s: %w", ErrNoDecision, DecisionQuery, err)
	}
	d, err := decisionFrom(rs)
	if err != nil {
		return Decision{}, err
	}
	d.Revision = r.id
	return d, nil
}

// quotesPayload reports whether any of d's deny reasons, redactions or
// obligation names contains a payload value of four characters or more
// (short values such as "1" or "yes" would match any text), as a string or
// as the number it is; or contains it folded (see fold), as whole words,
// so that upper(), lower(), trim_prefix("$") or other punctuation do not
// hide a value ("RIVERSIDE BEHAVIORAL HEALTH", "45.20" of "$45.20"). A
// policy cannot be kept from quoting by any such check (it could spell a
// value backwards); this one catches the careless ways.
func quotesPayload(d Decision, payload map[string]any) bool {
	if len(d.Deny) == 0 && len(d.Redact) == 0 && len(d.Obligations) == 0 {
		return false
	}
	var values []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			values = append(values, v)
		case float64:
			values = append(values, strconv.FormatFloat(v, 'f', -1, 64))
		case json.Number:
			values = append(values, v.String())
		case int:
			values = append(values, strconv.Itoa(v))
		case int64:
			values = append(values, strconv.FormatInt(v, 10))
		case []any:
			for _, x := range v {
				walk(x)
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	for _, v := range payload {
		walk(v)
	}
	var folded []string
	for _, v := range values {
		// A single short word ("Plan", "Clinic") folded would match prose;
		// a folded value counts when it has a digit, two words or 8 letters.
		if f := fold(v); len(f) >= 4 && (strings.ContainsAny(f, "0123456789 ") || len(f) >= 8) {
			folded = append(folded, " "+f+" ")
		}
	}
	for _, text := range slices.Concat(d.Deny, d.Redact, d.Obligations) {
		for _, v := range values {
			if len(v) >= 4 && strings.Contains(text, v) {
				return true
			}
		}
		words := " " + fold(text) + " "
		for _, f := range folded {
			if strings.Contains(words, f) {
				return true
			}
		}
	}
	return false
}

// fold lowercases s and turns every run of characters other than letters
// and digits into one space, trimmed: "$45.20" and "45.20" both fold to
// "45 20", "Riverside Behavioral" and "RIVERSIDE-BEHAVIORAL" to "riverside
// behavioral". Matching folded values as whole words (between spaces)
// keeps a value from matching inside a longer word.
func fold(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			b.WriteRune(unicode.ToLower(r))
		default:
			space = true
		}
	}
	return b.String()
}

// prepare compiles files and prepares DecisionQuery against them; with
// partial, the query is first partially evaluated with the input unknown.
func prepare(ctx context.Context, files policyFiles, partial bool) (rego.PreparedEvalQuery, error) {
	loaded, err := files.load()
	if err != nil {
		return rego.PreparedEvalQuery{}, err
	}
	if len(loaded.Modules) == 0 {
		return rego.PreparedEvalQuery{}, errors.New("policy: no .rego modules to compile")
	}
	opts := regoOptions(DecisionQuery, dataStore(loaded), loaded.ParsedModules())
	var prep []rego.PrepareOption
	if partial {
		prep = append(prep, rego.WithPartialEval())
	}
	query, err := rego.New(opts...).PrepareForEval(ctx, prep...)
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("policy: compile: %w", err)
	}
	return query, nil
}

// dataStore holds loaded's data documents. They never change after load,
// so the store hands out AST values and evaluation does not convert them
// again on every read.
func dataStore(loaded *loader.Result) storage.Store {
	return inmem.NewFromObjectWithOpts(loaded.Documents,
		inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
}

// regoOptions are what every query of a revision is prepared with: query,
// the data in store, Rego v1, the allowed built-ins, the revision's modules
// and any more.
func regoOptions(query string, store storage.Store, modules map[string]*ast.Module, more ...*ast.Module) []func(*rego.Rego) {
	opts := make([]func(*rego.Rego), 0, 4+len(modules)+len(more))
	opts = append(opts,
		rego.Query(query),
		rego.Store(store),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Capabilities(capabilities()),
	)
	for _, m := range modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	for _, m := range more {
		opts = append(opts, rego.ParsedModule(m))
	}
	return opts
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
