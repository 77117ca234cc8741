package policy_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tidings-health/tidings/policy"
)

// candidate is a policy in the style of the shipped one: partial deny
// rules, a default, an obligation rule and a helper function.
var candidate = fstest.MapFS{"notice.rego": {Data: []byte(`package tidings.notice

decision := {"allow": count(deny) == 0, "deny": sort(deny), "redact": [], "obligations": {"portal_only": portal_only}}

default portal_only := false

portal_only if input.channel.type == "sms"

deny contains "input has no notice_type" if not input.notice_type

deny contains sprintf("field %q is not allowed", [f]) if {
	some f, _ in input.payload
	not allowed(f)
}

allowed(f) if f in {"portal_url"}
`)}}

const sample = `{"notice_type": "eob", "channel": {"type": "sms"},
 "payload": {"portal_url": "https://p.example.org/1", "diagnosis": "F32.9", "member_id": "M-1"}}`

func TestEvaluateCandidate(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, version("a"))
	active := e.Status()

	r, err := e.Evaluate(ctx, candidate, []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	d := r.Decision
	wantDeny := []string{`field "diagnosis" is not allowed`, `field "member_id" is not allowed`}
	if d.Allow || !slices.Equal(d.Deny, wantDeny) || !d.Has("portal_only") {
		t.Errorf("Decision = %+v, want a denial with %q and portal_only", d, wantDeny)
	}
	if want := revisionOf(t, candidate); d.Revision != want {
		t.Errorf("Revision = %s, want the candidate's %s", d.Revision, want)
	}
	wantFired := []string{
		"data.tidings.notice.decision (notice.rego:3)",
		"data.tidings.notice.portal_only (notice.rego:7)", // not the default on line 5
		"data.tidings.notice.deny (notice.rego:11)",
		"data.tidings.notice.allowed (notice.rego:16)",
	}
	if !slices.Equal(r.Fired, wantFired) {
		t.Errorf("Fired =\n%q\nwant\n%q", r.Fired, wantFired)
	}

	// The dry run changed nothing.
	if st := e.Status(); st != active {
		t.Errorf("Status after a dry run = %+v, want %+v", st, active)
	}
	if got := madeBy(t, e); got != "a" {
		t.Errorf("the active policy is %q after a dry run, want a", got)
	}
}

func TestEvaluateActive(t *testing.T) {
	e := mustNew(t, version("b"))
	r, err := e.Evaluate(context.Background(), nil, []byte(`{"notice_type": "eob"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Decision.Revision != e.Revision() || !slices.Equal(r.Decision.Deny, []string{"made by b"}) {
		t.Errorf("Decision = %+v", r.Decision)
	}
	// Only the rule for b fired, not the one for a (line 7).
	want := []string{
		"data.tidings.notice.decision (notice.rego:3)",
		"data.tidings.notice.allow (notice.rego:5)",
		"data.tidings.notice.deny (notice.rego:9)",
	}
	if !slices.Equal(r.Fired, want) {
		t.Errorf("Fired = %q, want %q", r.Fired, want)
	}
}

func TestEvaluateShippedPolicy(t *testing.T) {
	r, err := mustEmbedded(t).Evaluate(context.Background(), nil, []byte(`{
		"notice_type": "eob",
		"channel": {"type": "email", "tls_enforced": true},
		"payload": {"portal_url": "https://portal.example.org/eob/1", "payer_name": "Example Health Plan", "diagnosis": "F32.9"},
		"purpose": "payment", "contact": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("decision %+v, fired:\n%s", r.Decision, strings.Join(r.Fired, "\n"))
	if r.Decision.Allow {
		t.Errorf("a diagnosis in the payload was allowed: %+v", r.Decision)
	}
	if !slices.ContainsFunc(r.Fired, func(s string) bool { return strings.HasPrefix(s, "data.tidings.notice.deny (") }) {
		t.Errorf("no deny rule among the fired rules: %q", r.Fired)
	}
	for _, f := range r.Fired {
		if !regexp.MustCompile(`^(default )?data\.[\w.]+ \([\w/]+\.rego:\d+\)$`).MatchString(f) {
			t.Errorf("fired rule %q is not \"<rule> (<file>:<line>)\"", f)
		}
	}
}

func TestEvaluateRejectsCandidate(t *testing.T) {
	e := mustNew(t, version("a"))
	failing := version("c")
	failing["notice_test.rego"] = version("a")["notice_test.rego"]
	tests := map[string]struct {
		fsys fstest.MapFS
		want error
		text string
	}{
		"syntax error":     {fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := {\n")}}, policy.ErrRejected, "p.rego:"},
		"its test fails":   {failing, policy.ErrTestsFailed, "test_version"},
		"no rego modules":  {fstest.MapFS{"x.json": {Data: []byte(`{}`)}}, policy.ErrRejected, "no .rego modules"},
		"network built-in": {fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := http.send({})\n")}}, policy.ErrRejected, "http.send"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := e.Evaluate(context.Background(), tt.fsys, []byte(sample))
			if !errors.Is(err, tt.want) || !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Evaluate = %v, want %v naming %q", err, tt.want, tt.text)
			}
			if got := madeBy(t, e); got != "a" {
				t.Errorf("active policy %q, want a", got)
			}
		})
	}
}

func TestEvaluateMalformedDecisionListsFiredRules(t *testing.T) {
	bad := fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := {\"allow\": \"yes\"} if input.x\n")}}
	r, err := mustNew(t, version("a")).Evaluate(context.Background(), bad, []byte(`{"x": true}`))
	if !errors.Is(err, policy.ErrNoDecision) {
		t.Fatalf("err = %v, want ErrNoDecision", err)
	}
	if !slices.Equal(r.Fired, []string{"data.tidings.notice.decision (p.rego:3)"}) {
		t.Errorf("Fired = %q", r.Fired)
	}
}

// invalidInputMessage is every shape an input error may take: positions and
// JSON types, never the input's text.
var invalidInputMessage = regexp.MustCompile(`^policy: invalid input: (not valid JSON at byte \d+|empty or truncated JSON|not valid JSON|more than one JSON value \(after byte \d+\)|the input is (a boolean|a string|an array|a number|null or missing), want an object)$`)

func TestEvaluateRejectsInput(t *testing.T) {
	e := mustNew(t, version("a"))
	for _, in := range []string{
		``, `   `, `{"notice_type": "Zebediah`, `{"a": 1} {"b": 2}`, `{"a": 1}}`, `["Zebediah"]`, `"Zebediah"`, `12`, `null`, `{'a': 1}`, "{\"a\": \"\xff\"}x",
	} {
		_, err := e.Evaluate(context.Background(), nil, []byte(in))
		if !errors.Is(err, policy.ErrInvalidInput) {
			t.Errorf("Evaluate(%q) = %v, want ErrInvalidInput", in, err)
			continue
		}
		if !invalidInputMessage.MatchString(err.Error()) {
			t.Errorf("Evaluate(%q): unexpected message %q", in, err)
		}
	}
}

// FuzzEvaluateInput feeds arbitrary bytes as a sample input: Evaluate either
// decides or says the input is invalid, and its messages never quote it.
func FuzzEvaluateInput(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(`{"notice_type": "eob", "channel": {"type": "email", "tls_enforced": true}, "payload": {"portal_url": "x"}, "contact": {"opted_out_channels": ["email"]}, "facts": {"use": "claim", "sensitive_categories": ["hiv_sti"]}}`))
	f.Add([]byte(`{"payload": {"n": 1e400, "m": -0.0, "s": "\u00e9\ud83d\ude00"}}`))
	f.Add([]byte(`[1, 2`))
	f.Add([]byte(`{} []`))
	e := mustNew(f, candidate)
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := e.Evaluate(context.Background(), nil, in)
		if err != nil {
			if !errors.Is(err, policy.ErrInvalidInput) || !invalidInputMessage.MatchString(err.Error()) {
				t.Fatalf("Evaluate = %v", err)
			}
			return
		}
		if r.Decision.Revision != e.Revision() || len(r.Fired) == 0 {
			t.Fatalf("result %+v", r)
		}
	})
}

func TestEvaluateNamesAppliedDefaults(t *testing.T) {
	r, err := mustNew(t, version("a")).Evaluate(context.Background(), candidate, []byte(`{"notice_type": "eob", "channel": {"type": "email"}, "payload": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"data.tidings.notice.decision (notice.rego:3)",
		"default data.tidings.notice.portal_only (notice.rego:5)",
	}
	if !slices.Equal(r.Fired, want) || !r.Decision.Allow {
		t.Errorf("Fired = %q (decision %+v), want %q", r.Fired, r.Decision, want)
	}
}
