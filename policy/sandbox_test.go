package policy_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/policy"
)

// sandboxed is an Engine with the active policy version("a") whose
// candidates run in this test binary started as the sandbox child.
func sandboxed(t *testing.T, limits policy.Sandbox) *policy.Engine {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	limits.Path, limits.Args = exe, []string{"policy", "sandbox"}
	e, err := policy.Open(context.Background(), policy.FromFS("test", version("a")), policy.WithSandbox(limits))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A candidate decides the same in the child as in this process.
func TestSandboxEvaluatesCandidate(t *testing.T) {
	ctx := context.Background()
	want, wantErr := mustNew(t, version("a")).Evaluate(ctx, candidate, []byte(sample))
	got, err := sandboxed(t, policy.Sandbox{}).Evaluate(ctx, candidate, []byte(sample))
	if err != nil || wantErr != nil {
		t.Fatalf("Evaluate: sandboxed %v, in process %v", err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sandboxed\n%+v\nin process\n%+v", got, want)
	}
}

// Refusals and missing decisions come back with their sentinels and the
// compiler's or the tests' messages.
func TestSandboxReportsRejections(t *testing.T) {
	e := sandboxed(t, policy.Sandbox{})
	failing := version("c")
	failing["notice_test.rego"] = version("a")["notice_test.rego"]
	for name, tt := range map[string]struct {
		fsys fstest.MapFS
		want error
		text string
	}{
		"syntax error":      {fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := {\n")}}, policy.ErrRejected, "p.rego:"},
		"its test fails":    {failing, policy.ErrTestsFailed, "test_version"},
		"unlisted built-in": {fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := http.send({})\n")}}, policy.ErrRejected, "http.send"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.Evaluate(context.Background(), tt.fsys, []byte(sample))
			if !errors.Is(err, tt.want) || !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Evaluate = %v, want %v naming %q", err, tt.want, tt.text)
			}
			if fault.CodeOf(err) != fault.Unprocessable {
				t.Errorf("code %s, want unprocessable", fault.CodeOf(err))
			}
		})
	}
	bad := fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := {\"allow\": \"yes\"} if input.x\n")}}
	r, err := e.Evaluate(context.Background(), bad, []byte(`{"x": true}`))
	if !errors.Is(err, policy.ErrNoDecision) || errors.Is(err, policy.ErrRejected) || len(r.Fired) != 1 {
		t.Fatalf("malformed decision: %v, fired %q", err, r.Fired)
	}
}

// concatBomb asks for one 2 GB string at once.
var concatBomb = fstest.MapFS{"p.rego": {Data: []byte(`package tidings.notice

s := sprintf("%0999999[1]d", [1])

big := concat("", [s | some i in numbers.range(1, 2000)])

decision := {"allow": count(big) == 0, "deny": [], "redact": [], "obligations": {}}
`)}}

// spin takes minutes of CPU in a few kilobytes of memory.
var spin = fstest.MapFS{"p.rego": {Data: []byte(`package tidings.notice

n := count({i | some i in numbers.range(1, 30000); some j in numbers.range(1, 30000); i == j + 1000000})

decision := {"allow": n == 0, "deny": [], "redact": [], "obligations": {}}
`)}}

func TestSandboxLimits(t *testing.T) {
	e := sandboxed(t, policy.Sandbox{Memory: 256 << 20, Timeout: 2 * time.Second})
	for name, tt := range map[string]struct {
		fsys fstest.MapFS
		want string
	}{
		"memory": {concatBomb, "the dry run exceeded its memory limit"},
		"time":   {spin, "the dry run exceeded its time limit"},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := e.Evaluate(context.Background(), tt.fsys, []byte(sample))
			t.Logf("%s: %v after %s", name, err, time.Since(start).Round(time.Millisecond))
			if !errors.Is(err, policy.ErrDryRunLimit) || fault.CodeOf(err) != fault.Unprocessable || fault.MessageOf(err) != tt.want {
				t.Fatalf("Evaluate = %v (%s: %q), want %q", err, fault.CodeOf(err), fault.MessageOf(err), tt.want)
			}
			if elapsed := time.Since(start); elapsed > time.Minute {
				t.Fatalf("the dry run took %s", elapsed)
			}
		})
	}
	// The process is still deciding with its active revision.
	if got := madeBy(t, e); got != "a" {
		t.Errorf("active policy %q, want a", got)
	}
}
