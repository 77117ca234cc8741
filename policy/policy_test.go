package policy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/policy"
	policyfiles "github.com/tidings-health/tidings/rego"
)

// eobNotice is a complete EOB email notice that the shipped policies allow.
func eobNotice() policy.Input {
	return policy.Input{
		NoticeType: "eob",
		Channel:    policy.Channel{Type: "email", TLSEnforced: true},
		Payload: map[string]any{
			"payer_name":    "Example Health Plan",
			"service_date":  "2024-03-01",
			"provider_name": "Example Clinic",
			"patient_share": 45.2,
			"portal_url":    "https://portal.example.org/eob/8c1f",
		},
		Purpose: "payment",
	}
}

func mustEmbedded(tb testing.TB) *policy.Engine {
	tb.Helper()
	e, err := policy.NewEmbedded(context.Background())
	if err != nil {
		tb.Fatalf("NewEmbedded: %v", err)
	}
	return e
}

func mustNew(tb testing.TB, fsys fstest.MapFS) *policy.Engine {
	tb.Helper()
	e, err := policy.New(context.Background(), fsys)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return e
}

// minCoverage is the share of the shipped policies' lines their own tests
// must reach (issue 4).
const minCoverage = 90.0

func TestRegoTests(t *testing.T) {
	r, err := policy.RunTestsWithCoverage(context.Background(), policyfiles.FS)
	if err != nil {
		t.Fatal(err)
	}
	if r.Passed == 0 {
		t.Fatal("no rego tests ran")
	}
	t.Logf("%d rego tests passed, %d skipped; coverage of the policies %.1f%%", r.Passed, r.Skipped, r.Coverage)
	if len(r.NotCovered) > 0 {
		t.Logf("lines no test reaches: %s", strings.Join(r.NotCovered, ", "))
	}
	if r.Coverage < minCoverage {
		t.Errorf("the rego tests cover %.1f%% of the policies, want at least %.0f%%", r.Coverage, minCoverage)
	}
}

func TestRunTestsNamesFailures(t *testing.T) {
	fsys := fstest.MapFS{
		"p.rego": {Data: []byte("package p\n\nx := input.x\n\ny := 1 if input.a\n\ny := 2 if input.b\n")},
		"p_test.rego": {Data: []byte(`package p_test

import data.p

test_passes if p.x == 1 with input as {"x": 1}

test_fails if p.x == 2 with input as {"x": 1}

test_errors if {
	print("conflicting", "values")
	p.y == 1 with input as {"a": true, "b": true}
}

todo_test_later if false
`)},
	}
	passed, err := policy.RunTests(context.Background(), fsys)
	if !errors.Is(err, policy.ErrTestsFailed) {
		t.Fatalf("err = %v, want ErrTestsFailed", err)
	}
	if passed != 1 {
		t.Errorf("passed = %d, want 1", passed)
	}
	msg := err.Error()
	for _, want := range []string{
		"2 of 4",
		"data.p_test.test_fails (p_test.rego:7): FAIL",
		"data.p_test.test_errors (p_test.rego:9): ERROR: ",
		"eval_conflict_error",
		"conflicting values",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "test_passes") || strings.Contains(msg, "todo_test_later") {
		t.Errorf("error names a test that did not fail:\n%s", msg)
	}
}

func TestRunTestsWithCoverage(t *testing.T) {
	fsys := fstest.MapFS{
		// Lines 3 and 5 hold rule heads, 6-7 a body; the test reaches only x.
		"p.rego": {Data: []byte("package p\n\nx := 1 if input.a\n\ny := 2 if {\n\tinput.b\n\tinput.c\n}\n")},
		"p_test.rego": {Data: []byte(`package p_test

import data.p

test_x if p.x == 1 with input as {"a": true}

test_fails if p.y == 2 with input as {}

todo_test_later if false
`)},
	}
	r, err := policy.RunTestsWithCoverage(context.Background(), fsys)
	if !errors.Is(err, policy.ErrTestsFailed) {
		t.Fatalf("err = %v, want ErrTestsFailed", err)
	}
	if r.Passed != 1 || r.Failed != 1 || r.Skipped != 1 {
		t.Errorf("passed/failed/skipped = %d/%d/%d, want 1/1/1", r.Passed, r.Failed, r.Skipped)
	}
	if len(r.Failures) != 1 || !strings.HasPrefix(r.Failures[0], "data.p_test.test_fails (p_test.rego:7): FAIL") {
		t.Errorf("Failures = %q", r.Failures)
	}
	// One of four lines (3, 5, 6, 7) is covered; the test module's own lines
	// do not count.
	if r.Coverage != 25 {
		t.Errorf("Coverage = %v, want 25", r.Coverage)
	}
	if want := []string{"p.rego:5", "p.rego:6", "p.rego:7"}; !slices.Equal(r.NotCovered, want) {
		t.Errorf("NotCovered = %q, want %q", r.NotCovered, want)
	}

	fsys["p_test.rego"] = &fstest.MapFile{Data: []byte(`package p_test

import data.p

test_x if p.x == 1 with input as {"a": true}

test_y if p.y == 2 with input as {"b": true, "c": true}
`)}
	r, err = policy.RunTestsWithCoverage(context.Background(), fsys)
	if err != nil || r.Coverage != 100 || len(r.NotCovered) != 0 || r.Passed != 2 {
		t.Errorf("full coverage run = %+v, %v", r, err)
	}
	if passed, err := policy.RunTests(context.Background(), fsys); passed != 2 || err != nil {
		t.Errorf("RunTests = %d, %v", passed, err)
	}
}

func TestRunTestsRejectsBrokenTestModule(t *testing.T) {
	fsys := fstest.MapFS{
		"p.rego":      {Data: []byte("package p\n\nx := 1\n")},
		"p_test.rego": {Data: []byte("package p_test\n\ntest_x if data.p.x ==\n")},
	}
	_, err := policy.RunTests(context.Background(), fsys)
	if err == nil || !strings.Contains(err.Error(), "p_test.rego:") {
		t.Fatalf("err = %v, want a parse error in p_test.rego", err)
	}
}

// TestDecide checks the shipped policies against the promises of issue 4
// that hold whatever the exact wording of the rules: the rule-by-rule cases
// are the policies' own Rego tests.
func TestDecide(t *testing.T) {
	e := mustEmbedded(t)
	with := func(change func(*policy.Input)) policy.Input {
		in := eobNotice()
		in.Payload = maps.Clone(in.Payload)
		change(&in)
		return in
	}
	phiFields := []string{"patient_share", "payer_name", "provider_name", "service_date"}
	tests := []struct {
		name  string
		in    policy.Input
		check func(t *testing.T, d policy.Decision)
	}{
		{"complete notice over enforced TLS", eobNotice(), func(t *testing.T, d policy.Decision) {
			if !d.Allow || len(d.Redact) != 0 || len(d.Obligations) != 0 {
				t.Errorf("want a plain allow, got %+v", d)
			}
		}},
		{"complete notice encrypted without TLS", with(func(in *policy.Input) {
			in.Channel = policy.Channel{Type: "email", MessageEncrypted: true}
		}), func(t *testing.T, d policy.Decision) {
			if !d.Allow || len(d.Redact) != 0 || d.Has("portal_only") {
				t.Errorf("want a plain allow, got %+v", d)
			}
		}},
		{"PHI on an unprotected channel", with(func(in *policy.Input) { in.Channel.TLSEnforced = false }),
			func(t *testing.T, d policy.Decision) {
				// Either no send, or a portal-only notice without the PHI.
				if d.Allow && (!d.Has("portal_only") || !containsAll(d.Redact, phiFields)) {
					t.Errorf("PHI may go out unprotected: %+v", d)
				}
			}},
		{"field outside the allowlist", with(func(in *policy.Input) { in.Payload["diagnosis"] = "E11.9" }),
			denies("diagnosis")},
		{"unknown notice type", with(func(in *policy.Input) { in.NoticeType = "lab_result" }), denies("lab_result")},
		{"no notice type", with(func(in *policy.Input) { in.NoticeType = "" }), denies("notice_type")},
		{"email opted out", with(func(in *policy.Input) { in.Contact.OptedOutChannels = []string{"sms", "email"} }),
			denies("opted out")},
		{"marketing without authorization", with(func(in *policy.Input) { in.Purpose = "marketing" }), denies("marketing")},
		{"confidential address", with(func(in *policy.Input) { in.Contact.HasConfidentialAddress = true }),
			func(t *testing.T, d policy.Decision) {
				if !d.Allow || !d.Has("route_to_confidential_address") {
					t.Errorf("want an allow routed to the confidential address, got %+v", d)
				}
			}},
		{"mental-health diagnosis", with(func(in *policy.Input) {
			in.Facts = map[string]any{"use": "claim", "outcome": "complete", "sensitive_categories": []string{"mental_health"}, "has_sensitive_diagnosis": true}
		}), func(t *testing.T, d policy.Decision) {
			if !d.Allow || !d.Has("portal_only") || !d.Has("generic_provider_label") || !slices.Contains(d.Redact, "provider_name") {
				t.Errorf("want a portal-only notice without the provider's name, got %+v", d)
			}
		}},
		{"preauthorization", with(func(in *policy.Input) { in.Facts = map[string]any{"use": "preauthorization"} }),
			denies("preauthorization")},
		{"error outcome", with(func(in *policy.Input) { in.Facts = map[string]any{"use": "claim", "outcome": "error"} }),
			denies("error")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Allow != (len(d.Deny) == 0) {
				t.Errorf("Allow = %v with reasons %q", d.Allow, d.Deny)
			}
			if d.Revision != e.Revision() {
				t.Errorf("Revision = %q, want the engine's %q", d.Revision, e.Revision())
			}
			tt.check(t, d)
		})
	}
}

// denies checks that a decision denies with a reason that mentions what.
func denies(what string) func(*testing.T, policy.Decision) {
	return func(t *testing.T, d policy.Decision) {
		t.Helper()
		if d.Allow || !slices.ContainsFunc(d.Deny, func(r string) bool { return strings.Contains(r, what) }) {
			t.Errorf("want a denial naming %q, got %+v", what, d)
		}
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func TestDecideReasonsCarryNoPayloadValues(t *testing.T) {
	const canary = "Zebediah Canary-Quill"
	in := eobNotice()
	in.Channel = policy.Channel{Type: "email"}
	in.Payload["diagnosis"] = canary
	in.Payload["payer_name"] = canary
	d, err := mustEmbedded(t).Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || len(d.Deny) == 0 {
		t.Fatalf("decision = %+v, want a denial", d)
	}
	if got := fmt.Sprint(d.Deny); strings.Contains(got, canary) {
		t.Errorf("deny reasons leak a payload value: %s", got)
	}
}

func TestInputLogValueRedactsPayload(t *testing.T) {
	const canary = "Zebediah Canary-Quill"
	in := eobNotice()
	in.Payload["payer_name"] = canary
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("deciding", "input", in)
	if strings.Contains(buf.String(), canary) {
		t.Errorf("log line leaks the payload: %s", buf.String())
	}
	if !strings.Contains(buf.String(), `"input":"[REDACTED]"`) {
		t.Errorf("log line = %s, want input [REDACTED]", buf.String())
	}
}

func TestNewReportsSyntaxError(t *testing.T) {
	fsys := fstest.MapFS{
		"ok.rego":     {Data: []byte("package tidings.notice\n\nx := 1\n")},
		"broken.rego": {Data: []byte("package tidings.notice\n\ndecision := {\n")},
	}
	_, err := policy.New(context.Background(), fsys)
	if err == nil {
		t.Fatal("New accepted a module with a syntax error")
	}
	for _, want := range []string{"broken.rego:", "rego_parse_error"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestNewReportsCompileError(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"unsafe variable", "package tidings.notice\n\ndecision := x if {\n\ty := 1\n}\n",
			[]string{"p.rego:3", "rego_unsafe_var_error", "var x is unsafe"}},
		{"type error", "package tidings.notice\n\ndecision := count(1)\n",
			[]string{"p.rego:3", "rego_type_error", "count"}},
		// A policy sees PHI; it must not be able to send it over the network.
		{"network built-in", "package tidings.notice\n\ndecision := http.send({\"method\": \"get\", \"url\": \"https://example.org\"})\n",
			[]string{"p.rego:3", "rego_type_error", "undefined function http.send"}},
		{"environment built-in", "package tidings.notice\n\ndecision := opa.runtime().env\n",
			[]string{"p.rego:3", "undefined function opa.runtime"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.New(context.Background(), fstest.MapFS{"p.rego": {Data: []byte(tt.src)}})
			if err == nil {
				t.Fatal("New accepted the module")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
		})
	}
}

func TestNewRejectsEmptyDirectory(t *testing.T) {
	_, err := policy.New(context.Background(), fstest.MapFS{"data/x.json": {Data: []byte(`{"a": 1}`)}})
	if err == nil {
		t.Fatal("New accepted a directory without policies")
	}
}

func TestDecideFailsClosed(t *testing.T) {
	tests := []struct {
		name, src string
	}{
		{"decision undefined", "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": []} if input.never\n"},
		{"no decision rule", "package tidings.notice\n\nallow := true\n"},
		{"decision not an object", "package tidings.notice\n\ndecision := \"yes\"\n"},
		{"allow missing", "package tidings.notice\n\ndecision := {\"deny\": [], \"redact\": []}\n"},
		{"allow not a boolean", "package tidings.notice\n\ndecision := {\"allow\": \"true\", \"deny\": [], \"redact\": []}\n"},
		{"deny not an array", "package tidings.notice\n\ndecision := {\"allow\": false, \"deny\": \"no\", \"redact\": []}\n"},
		{"deny with a non-string", "package tidings.notice\n\ndecision := {\"allow\": false, \"deny\": [1], \"redact\": []}\n"},
		{"redact missing", "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": []}\n"},
		{"allows and denies", "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [\"x\"], \"redact\": []}\n"},
		{"conflicting values", "package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": []} if input.notice_type\n\ndecision := {\"allow\": false, \"deny\": [\"x\"], \"redact\": []} if input.channel\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustNew(t, fstest.MapFS{"p.rego": {Data: []byte(tt.src)}})
			d, err := e.Decide(context.Background(), eobNotice())
			if !errors.Is(err, policy.ErrNoDecision) {
				t.Fatalf("Decide = %+v, %v; want ErrNoDecision", d, err)
			}
			if d.Allow {
				t.Error("failed decision allows")
			}
		})
	}
}

func TestDecideRejectsUnencodablePayload(t *testing.T) {
	in := eobNotice()
	in.Payload["callback"] = func() {}
	d, err := mustEmbedded(t).Decide(context.Background(), in)
	if err == nil || d.Allow {
		t.Fatalf("Decide = %+v, %v; want an error", d, err)
	}
	if !strings.Contains(err.Error(), "payload") {
		t.Errorf("error does not say the payload is at fault: %v", err)
	}
}

func TestDecideHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := mustEmbedded(t).Decide(ctx, eobNotice())
	if !errors.Is(err, policy.ErrNoDecision) || d.Allow {
		t.Fatalf("Decide after cancel = %+v, %v; want ErrNoDecision", d, err)
	}
}

// TestDecideStopsWhenCancelled cancels a decision while the policy is
// still working: a nine-million-step loop over the input, which partial
// evaluation cannot fold away. Without the cancellation reaching OPA the
// loop would finish and allow.
func TestDecideStopsWhenCancelled(t *testing.T) {
	e := mustNew(t, fstest.MapFS{"p.rego": {Data: []byte(`package tidings.notice

n := count({i | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i == j + count(input.payload)})

decision := {"allow": n >= 0, "deny": [], "redact": []}
`)}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	d, err := e.Decide(ctx, eobNotice())
	if !errors.Is(err, policy.ErrNoDecision) || d.Allow {
		t.Fatalf("Decide with a deadline mid-evaluation = %+v, %v; want ErrNoDecision", d, err)
	}
	if !strings.Contains(err.Error(), "cancel") {
		t.Errorf("error = %v; want it to say the evaluation was cancelled", err)
	}
}

func TestRevision(t *testing.T) {
	base := fstest.MapFS{
		"p.rego":        {Data: []byte("package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": []}\n")},
		"data/v.json":   {Data: []byte(`{"v": 1}`)},
		"p_test.rego":   {Data: []byte("package tidings.notice_test\n\ntest_x if true\n")},
		"README.md":     {Data: []byte("about")},
		"unrelated.txt": {Data: []byte("x")},
	}
	rev := mustNew(t, base).Revision()
	if len(rev) != 64 || strings.Trim(rev, "0123456789abcdef") != "" {
		t.Fatalf("Revision = %q, want 64 hex digits", rev)
	}
	if again := mustNew(t, maps.Clone(base)).Revision(); again != rev {
		t.Errorf("same files, different revision: %s vs %s", again, rev)
	}

	changed := func(name string, f func(fstest.MapFS)) {
		t.Helper()
		fsys := maps.Clone(base)
		f(fsys)
		got := mustNew(t, fsys).Revision()
		if name == "" && got != rev {
			t.Errorf("revision changed for a file that is not compiled")
		}
		if name != "" && got == rev {
			t.Errorf("revision unchanged after %s", name)
		}
	}
	changed("", func(m fstest.MapFS) { m["README.md"] = &fstest.MapFile{Data: []byte("new")} })
	changed("", func(m fstest.MapFS) { m["p_test.rego"] = &fstest.MapFile{Data: []byte("package x_test\n")} })
	changed("", func(m fstest.MapFS) {
		m["decision.schema.json"] = &fstest.MapFile{Data: []byte(`{"$schema": "https://json-schema.org/draft/2020-12/schema"}`)}
	})
	changed("a policy edit", func(m fstest.MapFS) {
		m["p.rego"] = &fstest.MapFile{Data: append(bytes.Clone(m["p.rego"].Data), "# note\n"...)}
	})
	changed("a data edit", func(m fstest.MapFS) { m["data/v.json"] = &fstest.MapFile{Data: []byte(`{"v": 2}`)} })
	changed("a rename", func(m fstest.MapFS) {
		m["data/w.json"] = m["data/v.json"]
		delete(m, "data/v.json")
	})
}

func TestDirectoryOverrideMatchesEmbedded(t *testing.T) {
	// The rego/ folder on disk also holds README.md and Go files; loading it as
	// an override must compile exactly what the binary embeds.
	dir, err := policy.New(context.Background(), os.DirFS("../rego"))
	if err != nil {
		t.Fatal(err)
	}
	if emb := mustEmbedded(t); dir.Revision() != emb.Revision() {
		t.Errorf("revision of ../rego = %s, embedded = %s", dir.Revision(), emb.Revision())
	}
}

func TestDecideConcurrently(t *testing.T) {
	e := mustEmbedded(t)
	ctx := context.Background()
	allowed := eobNotice()
	denied := eobNotice()
	denied.Payload = maps.Clone(denied.Payload)
	denied.Payload["diagnosis"] = "E11.9"
	denied.Channel.TLSEnforced = false

	want := map[bool]policy.Decision{}
	for i, in := range []policy.Input{allowed, denied} {
		d, err := e.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		want[i == 0] = d
	}
	if !want[true].Allow || want[false].Allow {
		t.Fatalf("baseline decisions wrong: %+v", want)
	}

	const goroutines, perGoroutine = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				isAllowed := (g+i)%2 == 0
				in := denied
				if isAllowed {
					in = allowed
				}
				d, err := e.Decide(ctx, in)
				if err != nil {
					errs <- err
					return
				}
				w := want[isAllowed]
				if d.Allow != w.Allow || !slices.Equal(d.Deny, w.Deny) || d.Revision != w.Revision {
					errs <- fmt.Errorf("goroutine %d call %d: got %+v, want %+v", g, i, d, w)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// shippedAllowlist reads data/allowlist.json and data/non_phi.json as the
// policies do, so that the fuzz target checks the shipped lists, whatever
// they hold.
func shippedAllowlist(tb testing.TB) (allow map[string]map[string][]string, nonPHI []string) {
	tb.Helper()
	var a struct {
		Allowlist map[string]map[string][]string `json:"allowlist"`
	}
	var n struct {
		NonPHI []string `json:"non_phi_fields"`
	}
	for name, v := range map[string]any{"data/allowlist.json": &a, "data/non_phi.json": &n} {
		b, err := fs.ReadFile(policyfiles.FS, name)
		if err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
	}
	if len(a.Allowlist) == 0 {
		tb.Fatal("empty allowlist")
	}
	return a.Allowlist, n.NonPHI
}

// FuzzDecide checks the shipped policies' promises for arbitrary notices: a
// decision always comes back, its reasons are sorted and never quote a payload
// value, nothing goes out that the allowlist does not list for its notice
// type and channel, PHI goes out only on a protected channel, and never
// without a portal link.
func FuzzDecide(f *testing.F) {
	f.Add("eob", "email", true, false, "payer_name", "Example Health Plan", "https://portal.example.org/eob/1", "")
	f.Add("eob", "email", false, true, "service_date", "2024-03-01", "https://portal.example.org/eob/2", "")
	f.Add("eob", "email", false, false, "diagnosis", "E11.9", "https://portal.example.org/eob/3", "mental_health")
	f.Add("eob", "sms", true, false, "patient_share", "45.20", "", "")
	f.Add("appointment", "push", false, false, "location_name", "Example Clinic", "https://p", "hiv_sti")
	f.Add("", "", false, false, "portal_url", "", " ", "")
	f.Add("appointment", "email", true, true, "member_id", "M-1\x00\n\"", "https://p", "")

	e := mustEmbedded(f)
	allowlist, nonPHI := shippedAllowlist(f)
	f.Fuzz(func(t *testing.T, noticeType, channel string, tls, encrypted bool, field, value, portal, category string) {
		// The marker makes a leaked value recognisable in a reason.
		const marker = "VALUE#"
		in := policy.Input{
			NoticeType: noticeType,
			Channel:    policy.Channel{Type: channel, TLSEnforced: tls, MessageEncrypted: encrypted},
			Payload:    map[string]any{"portal_url": portal, field: marker + value},
			Facts:      map[string]any{"use": "claim", "outcome": "complete"},
		}
		if category != "" {
			in.Facts["sensitive_categories"] = []string{category}
		}
		d, err := e.Decide(context.Background(), in)
		if err != nil {
			t.Fatalf("Decide: %v", err)
		}
		if d.Allow != (len(d.Deny) == 0) {
			t.Fatalf("Allow = %v with reasons %q", d.Allow, d.Deny)
		}
		if !slices.IsSorted(d.Deny) {
			t.Errorf("reasons not sorted: %q", d.Deny)
		}
		if !strings.Contains(noticeType+channel+field+category, marker) {
			for _, r := range d.Deny {
				if strings.Contains(r, marker) {
					t.Errorf("reason quotes the payload value: %q", r)
				}
			}
		}
		if !d.Allow {
			return
		}
		allowed := allowlist[noticeType][channel]
		if allowed == nil {
			t.Fatalf("allowed notice type %q on channel %q, which the allowlist does not list", noticeType, channel)
		}
		protected := tls || encrypted || d.Has("requires_message_encryption")
		for name := range in.Payload {
			if slices.Contains(d.Redact, name) {
				continue
			}
			if !slices.Contains(allowed, name) {
				t.Errorf("allowed field %q outside the allowlist", name)
			}
			if !protected && !slices.Contains(nonPHI, name) {
				t.Errorf("allowed PHI field %q on an unprotected channel", name)
			}
		}
		if link, _ := in.Payload["portal_url"].(string); slices.Contains(d.Redact, "portal_url") || strings.TrimSpace(link) == "" {
			t.Error("allowed a notice without a portal link")
		}
		if category != "" {
			// A flagged notice names no provider or location and goes to the portal.
			if !d.Has("portal_only") && !d.Has("requires_message_encryption") {
				t.Errorf("flagged notice allowed without portal_only or encryption: %+v", d)
			}
			for _, revealing := range []string{"provider_name", "location_name"} {
				if _, ok := in.Payload[revealing]; ok && !slices.Contains(d.Redact, revealing) {
					t.Errorf("flagged notice keeps %s", revealing)
				}
			}
		}
	})
}

func TestObligationsAreRead(t *testing.T) {
	fsys := fstest.MapFS{"p.rego": {Data: []byte(`package tidings.notice

decision := {"allow": true, "deny": [], "redact": [], "obligations": {"portal_only": true, "generic_provider_label": false}}
`)}}
	e, err := policy.New(context.Background(), fsys)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), eobNotice())
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Obligations) != 1 || !d.Has("portal_only") || d.Has("generic_provider_label") {
		t.Fatalf("obligations %v", d.Obligations)
	}
	bad := fstest.MapFS{"p.rego": {Data: []byte(`package tidings.notice

decision := {"allow": true, "deny": [], "redact": [], "obligations": {"portal_only": "yes"}}
`)}}
	e, err = policy.New(context.Background(), bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decide(context.Background(), eobNotice()); !errors.Is(err, policy.ErrNoDecision) {
		t.Fatalf("a non-boolean obligation: %v", err)
	}
}

// A policy sees PHI: it must not reach the network or the filesystem, not
// even through JSON Schema "$ref" resolution.
func TestPoliciesCannotReachOut(t *testing.T) {
	for name, body := range map[string]string{
		"http.send":      `x := http.send({"method": "GET", "url": "http://127.0.0.1:1/"})`,
		"verify_schema":  `x := json.verify_schema({"$ref": "file:///etc/passwd"})`,
		"match_schema":   `x := json.match_schema({}, {"$ref": "http://127.0.0.1:1/s.json"})`,
		"runtime":        `x := opa.runtime()`,
		"lookup_ip_addr": `x := net.lookup_ip_addr("example.org")`,
	} {
		fsys := fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\n" + body + "\n\ndecision := {\"allow\": false, \"deny\": [\"x\"], \"redact\": [], \"obligations\": {}}\n")}}
		if _, err := policy.New(context.Background(), fsys); err == nil {
			t.Errorf("%s: a policy that reaches out compiled", name)
		}
	}
}
