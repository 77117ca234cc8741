package policy

import (
	"context"
	"encoding/json"
	"testing"

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
	tests := map[string]Input{
		"realistic EOB":     realisticEOB(),
		"nested payload":    nested,
		"no purpose":        noPurpose,
		"zero input":        {},
		"empty payload":     {NoticeType: "eob", Payload: map[string]any{}},
		"encrypted, no tls": {NoticeType: "eob", Channel: Channel{Type: "email", MessageEncrypted: true}},
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

func mustEngine(tb testing.TB) *Engine {
	tb.Helper()
	e, err := NewEmbedded(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func BenchmarkDecideEOB(b *testing.B) {
	e := mustEngine(b)
	ctx := context.Background()
	in := realisticEOB()
	b.ReportAllocs()
	for b.Loop() {
		d, err := e.Decide(ctx, in)
		if err != nil || !d.Allow {
			b.Fatalf("Decide = %+v, %v", d, err)
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
		query, err := prepare(ctx, files)
		if err != nil {
			b.Fatal(err)
		}
		e := &Engine{query: query}
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
				"type":              in.Channel.Type,
				"tls_enforced":      in.Channel.TLSEnforced,
				"message_encrypted": in.Channel.MessageEncrypted,
			},
			"payload": in.Payload,
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
				rs, err := e.query.Eval(ctx, opt)
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
