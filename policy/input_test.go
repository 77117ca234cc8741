package policy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"

	policyfiles "github.com/tidings-health/tidings/rego"
)

// realisticEOB is an EOB notice as the notify package builds it.
func realisticEOB() Input {
	return Input{
		NoticeType: "eob",
		Channel:    Channel{Type: "email", TLSEnforced: true},
		Payload: map[string]any{
			"payer_name":    "Example Health Plan",
			"service_date":  "2024-03-01",
			"provider_name": "Example Family Clinic",
			"patient_share": 45.2,
			"portal_url":    "https://portal.example.org/eob/8c1f5e2a-3b7d-4f1e-9a2b-6c0d1e2f3a4b",
		},
		Purpose: "payment",
	}
}

// realisticEOBFull is realisticEOB with the facts and contact preferences
// the worker fills in.
func realisticEOBFull() Input {
	in := realisticEOB()
	in.Channel.EncryptionAvailable = true
	in.Facts = map[string]any{
		"use":                     "claim",
		"outcome":                 "complete",
		"sensitive_categories":    []string{},
		"has_sensitive_diagnosis": false,
		"minor":                   false,
	}
	in.Contact = Contact{
		OptedOutChannels: []string{"sms"},
		Restrictions:     []string{"appointment"},
		Language:         "es",
		AlternateFormat:  "large_print",
	}
	return in
}

// viaJSON is the input value OPA builds when handed in itself: encode to JSON,
// decode, convert.
func viaJSON(t *testing.T, in Input) ast.Value {
	t.Helper()
	bs, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := util.UnmarshalJSON(bs, &x); err != nil {
		t.Fatal(err)
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRegoValueMatchesJSONEncoding(t *testing.T) {
	nested := realisticEOB()
	nested.Payload["lines"] = []any{map[string]any{"code": "99213", "amount": 120}, nil, true}
	nested.Payload["count"] = 3
	nested.Payload["tags"] = []string{"a", "b"}
	noPurpose := realisticEOB()
	noPurpose.Purpose = ""
	contact := realisticEOB()
	contact.Contact = Contact{OptedOutChannels: []string{"email", "sms"}, HasConfidentialAddress: true, Restrictions: []string{"all"}, MarketingAuthorized: true, Language: "en", AlternateFormat: "braille"}
	emptyLists := realisticEOB()
	emptyLists.Contact = Contact{OptedOutChannels: []string{}, Restrictions: []string{}}
	facts := realisticEOB()
	facts.Facts = map[string]any{
		"use": "claim", "minor": true, "categories": []string{"hiv_sti", "mental_health"},
		"none": []string(nil), "empty": []string{}, "count": 2, "nested": map[string]any{"a": []any{1.5, "x"}},
	}
	tests := map[string]Input{
		"realistic EOB":          realisticEOB(),
		"with facts and contact": realisticEOBFull(),
		"every contact field":    contact,
		"empty contact lists":    emptyLists,
		"fact value types":       facts,
		"nested payload":         nested,
		"no purpose":             noPurpose,
		"zero input":             {},
		"empty payload":          {NoticeType: "eob", Payload: map[string]any{}},
		"encrypted, no tls":      {NoticeType: "eob", Channel: Channel{Type: "email", MessageEncrypted: true, EncryptionAvailable: true}},
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := in.regoValue()
			if err != nil {
				t.Fatal(err)
			}
			if want := viaJSON(t, in); got.Compare(want) != 0 {
				t.Errorf("regoValue =\n%v\nJSON gives\n%v", got, want)
			}
		})
	}
}

func TestRegoValueRejectsUnencodableFact(t *testing.T) {
	in := realisticEOB()
	in.Facts = map[string]any{"callback": func() {}}
	if _, err := in.regoValue(); err == nil || !strings.Contains(err.Error(), "facts.callback") {
		t.Fatalf("err = %v, want one naming facts.callback", err)
	}
}

func mustEngine(tb testing.TB) *Engine {
	tb.Helper()
	e, err := NewEmbedded(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func BenchmarkDecideEOB(b *testing.B) {
	benchDecideAllowed(b, mustEngine(b), realisticEOB())
}

func benchDecideAllowed(b *testing.B, e *Engine, in Input) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d, err := e.Decide(ctx, in)
		if err != nil || !d.Allow {
			b.Fatalf("Decide = %+v, %v", d, err)
		}
	}
}

// BenchmarkDecideEOBGeneral is BenchmarkDecideEOB with the query
// partially evaluated with the whole input unknown, as Decide uses it for
// inputs that have no specialised query (specialise.go).
func BenchmarkDecideEOBGeneral(b *testing.B) {
	e := mustEngine(b)
	e.active.Load().special = nil
	benchDecideAllowed(b, e, realisticEOB())
}

// BenchmarkDecideEOBPortal is the portal's decision that every sent
// notice now also takes: BenchmarkDecideEOBFull's input on the
// authenticated portal.
func BenchmarkDecideEOBPortal(b *testing.B) {
	e := mustEngine(b)
	ctx := context.Background()
	in := realisticEOBFull()
	in.Channel = Channel{Type: "portal", Security: ChannelPortalAuthenticated}
	b.ReportAllocs()
	for b.Loop() {
		d, err := e.Decide(ctx, in)
		if err != nil || !d.Allow || len(d.Obligations) != 0 {
			b.Fatalf("Decide = %+v, %v", d, err)
		}
	}
}

// BenchmarkDecideEOBFull is BenchmarkDecideEOB with facts and contact
// preferences filled in, as the worker sends them.
func BenchmarkDecideEOBFull(b *testing.B) {
	e := mustEngine(b)
	ctx := context.Background()
	in := realisticEOBFull()
	if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
		b.Fatalf("Decide = %+v, %v", d, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideReprepared compiles and prepares the policies for every
// decision, as a naive integration would; compare with BenchmarkDecideEOB.
func BenchmarkDecideReprepared(b *testing.B) {
	ctx := context.Background()
	files, err := readPolicyFiles(policyfiles.FS, false)
	if err != nil {
		b.Fatal(err)
	}
	in := realisticEOB()
	b.ReportAllocs()
	for b.Loop() {
		query, err := prepare(ctx, files, false)
		if err != nil {
			b.Fatal(err)
		}
		e := &Engine{}
		e.active.Store(&revision{query: query})
		d, err := e.Decide(ctx, in)
		if err != nil || !d.Allow {
			b.Fatalf("Decide = %+v, %v", d, err)
		}
	}
}

// BenchmarkDecideInput compares ways of handing the input to OPA: building
// the AST value directly (what Decide does), a Go map, and the Input struct,
// which OPA converts through a JSON round trip.
func BenchmarkDecideInput(b *testing.B) {
	e := mustEngine(b)
	ctx := context.Background()
	in := realisticEOB()
	asMap := func(in Input) map[string]any {
		m := map[string]any{
			"notice_type": in.NoticeType,
			"channel": map[string]any{
				"type":                 in.Channel.Type,
				"tls_enforced":         in.Channel.TLSEnforced,
				"message_encrypted":    in.Channel.MessageEncrypted,
				"encryption_available": in.Channel.EncryptionAvailable,
			},
			"payload": in.Payload,
			"contact": map[string]any{
				"has_confidential_address": in.Contact.HasConfidentialAddress,
				"marketing_authorized":     in.Contact.MarketingAuthorized,
			},
		}
		if in.Purpose != "" {
			m["purpose"] = in.Purpose
		}
		return m
	}
	variants := map[string]func() (rego.EvalOption, error){
		"ast": func() (rego.EvalOption, error) {
			v, err := in.regoValue()
			return rego.EvalParsedInput(v), err
		},
		"map":  func() (rego.EvalOption, error) { return rego.EvalInput(asMap(in)), nil },
		"json": func() (rego.EvalOption, error) { return rego.EvalInput(in), nil },
	}
	for _, name := range []string{"ast", "map", "json"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				opt, err := variants[name]()
				if err != nil {
					b.Fatal(err)
				}
				rs, err := e.active.Load().fast.Eval(ctx, opt)
				if err != nil {
					b.Fatal(err)
				}
				if d, err := decisionFrom(rs); err != nil || !d.Allow {
					b.Fatalf("decision = %+v, %v", d, err)
				}
			}
		})
	}
}

func TestInputHash(t *testing.T) {
	in := realisticEOBFull()
	h := InputHash(in)
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("InputHash = %q, want 64 hex digits", h)
	}
	// The same input built again, its maps filled in another order.
	again := realisticEOBFull()
	again.Payload = map[string]any{}
	for _, k := range []string{"portal_url", "patient_share", "provider_name", "service_date", "payer_name"} {
		again.Payload[k] = in.Payload[k]
	}
	if InputHash(again) != h {
		t.Error("equal inputs hash differently")
	}
	changes := map[string]func(*Input){
		"payload value":    func(in *Input) { in.Payload["patient_share"] = 45.21 },
		"channel":          func(in *Input) { in.Channel.TLSEnforced = false },
		"fact":             func(in *Input) { in.Facts["minor"] = true },
		"contact":          func(in *Input) { in.Contact.HasConfidentialAddress = true },
		"contact language": func(in *Input) { in.Contact.Language = "" },
	}
	for name, change := range changes {
		other := realisticEOBFull()
		change(&other)
		if InputHash(other) == h {
			t.Errorf("a change of %s keeps the hash", name)
		}
	}
	bad := realisticEOB()
	bad.Payload["callback"] = func() {}
	if got := InputHash(bad); got != "" {
		t.Errorf("InputHash of an unencodable input = %q, want empty", got)
	}
}

// BenchmarkRegoValue is the input builder alone, the part of a decision that
// grows with the input.
func BenchmarkRegoValue(b *testing.B) {
	for name, in := range map[string]Input{"eob": realisticEOB(), "eob_full": realisticEOBFull()} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in.regoValue(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Folded matching: case and punctuation do not hide a value, a value does
// not match inside a longer word, and one short common word ("Plan") is
// not taken for a quote of the prose around it.
func TestQuotesPayloadFolded(t *testing.T) {
	for _, c := range []struct {
		reason string
		value  any
		quotes bool
	}{
		{"RIVERSIDE BEHAVIORAL HEALTH is not allowed", "Riverside Behavioral Health", true},
		{"share 1,234.56 is too high", "$1,234.56", true},
		{"served 2024/03/01", "2024-03-01", true},
		{"this plan sends no EOB notice by email", "Plan", false},
		{"the patient's restriction \"eob\" covers this notice", "Eob Co", false},
		{"the patient's restriction \"eob\" covers this notice", "Eob Covers", true},
		{"field \"provider_name\" is not allowed in a eob notice on email", "Example Family Clinic", false},
	} {
		got := quotesPayload(Decision{Deny: []string{c.reason}}, map[string]any{"v": c.value})
		if got != c.quotes {
			t.Errorf("%q quotes %q: %v, want %v", c.reason, c.value, got, c.quotes)
		}
	}
	if fold("  $45.20 — RIVERSIDE-Behavioral ") != "45 20 riverside behavioral" {
		t.Errorf("fold = %q", fold("  $45.20 — RIVERSIDE-Behavioral "))
	}
}

// A policy whose reason quotes a payload value gives no decision: reasons
// are stored and shown unsealed, so PHI must never reach one.
func TestReasonQuotingThePayloadGivesNoDecision(t *testing.T) {
	for name, rule := range map[string]string{
		"deny":       `deny contains sprintf("plan %s is not allowed", [input.payload.payer_name])`,
		"number":     `deny contains sprintf("share %v is too high", [input.payload.patient_share])`,
		"redact":     `redact contains input.payload.provider_name`,
		"obligation": `obligations[input.payload.payer_name] := true`,
		// The careless ways around an exact match.
		"upper case":     `deny contains sprintf("%s is not allowed", [upper(input.payload.provider_name)])`,
		"lower case":     `deny contains lower(input.payload.payer_name)`,
		"no dollar sign": `deny contains sprintf("share %s is too high", [trim_prefix(input.payload.formatted_share, "$")])`,
		"dashes":         `deny contains replace(input.payload.provider_name, " ", "-")`,
		"slashes":        `deny contains replace(input.payload.service_date, "-", "/")`,
	} {
		t.Run(name, func(t *testing.T) {
			mod := "package tidings.notice\n\ndefault allow := false\n\n" + rule + "\n\n" + `redact contains "x" if false` + "\n\n" + `deny contains "y" if false` + "\n\n" +
				`obligations["portal_only"] := true if false` + "\n\n" +
				`decision := {"allow": count(deny) == 0, "deny": sort(deny), "redact": sort(redact), "obligations": obligations}` + "\n"
			e, err := New(context.Background(), fstest.MapFS{"p.rego": &fstest.MapFile{Data: []byte(mod)}})
			if err != nil {
				t.Fatal(err)
			}
			in := realisticEOB()
			in.Payload["formatted_share"] = "$1,234.56"
			_, err = e.Decide(context.Background(), in)
			if !errors.Is(err, ErrNoDecision) || strings.Contains(err.Error(), "Example") || strings.Contains(err.Error(), "45.2") || strings.Contains(err.Error(), "234") {
				t.Fatalf("Decide = %v, want ErrNoDecision naming no value", err)
			}
		})
	}
	// The shipped rules never quote: a denial names fields only.
	in := realisticEOB()
	in.Payload["diagnosis"] = "F32.9"
	d, err := mustEngine(t).Decide(context.Background(), in)
	if err != nil || d.Allow || len(d.Deny) == 0 {
		t.Fatalf("shipped rules on an extra field: %+v, %v", d, err)
	}
}
