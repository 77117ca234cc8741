package rego_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	policyfiles "github.com/tidings-health/tidings/rego"
)

// example is one input and the decision README.md says it gets.
type example struct {
	line            int // of the input block
	input, decision []byte
}

// readmeExamples reads the ```json input and ```json decision blocks of
// README.md; each input block must be followed by a decision block.
func readmeExamples(t *testing.T) []example {
	t.Helper()
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var (
		examples []example
		kind     string // the block being read: "input", "decision" or ""
		start    int
		block    bytes.Buffer
	)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case kind == "" && (line == "```json input" || line == "```json decision"):
			kind, start = strings.TrimPrefix(line, "```json "), n
			block.Reset()
		case kind != "" && line == "```":
			content := bytes.Clone(block.Bytes())
			if kind == "input" {
				examples = append(examples, example{line: start, input: content})
			} else {
				if len(examples) == 0 || examples[len(examples)-1].decision != nil {
					t.Fatalf("README.md:%d: decision block without an input block before it", start)
				}
				examples[len(examples)-1].decision = content
			}
			kind = ""
		case kind != "":
			block.WriteString(line)
			block.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, ex := range examples {
		if ex.decision == nil {
			t.Fatalf("README.md:%d: input block without a decision block after it", ex.line)
		}
	}
	return examples
}

// decide evaluates data.tidings.notice.decision with the policies and data
// shipped in the binary (FS), tests left out.
type decide func(t *testing.T, input any) any

func shippedPolicy(t *testing.T) decide {
	t.Helper()
	loaded, err := loader.NewFileLoader().
		WithFS(policyfiles.FS).
		WithRegoVersion(ast.RegoV1).
		Filtered([]string{"."}, func(_ string, info fs.FileInfo, _ int) bool {
			return strings.HasSuffix(info.Name(), "_test.rego")
		})
	if err != nil {
		t.Fatal(err)
	}
	opts := []func(*rego.Rego){
		rego.Query("data.tidings.notice.decision"),
		rego.Store(inmem.NewFromObject(loaded.Documents)),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for _, m := range loaded.ParsedModules() {
		opts = append(opts, rego.ParsedModule(m))
	}
	q, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return func(t *testing.T, input any) any {
		t.Helper()
		rs, err := q.Eval(context.Background(), rego.EvalInput(input))
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 {
			t.Fatalf("the decision is undefined")
		}
		return rs[0].Expressions[0].Value
	}
}

// schemaCheck validates a document against one definition of
// decision.schema.json and returns the validation errors.
type schemaCheck func(t *testing.T, doc any, def string) []string

func decisionSchema(t *testing.T) (map[string]any, schemaCheck) {
	t.Helper()
	raw, err := os.ReadFile("decision.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("decision.schema.json: %v", err)
	}
	if got := schema["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("decision.schema.json: $schema is %v, want draft 2020-12", got)
	}
	// OPA's own JSON Schema validator, through the json.match_schema built-in.
	q, err := rego.New(rego.Query("x := json.match_schema(input.doc, input.schema)")).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return schema, func(t *testing.T, doc any, def string) []string {
		t.Helper()
		s := maps.Clone(schema)
		s["$ref"] = "#/$defs/" + def
		rs, err := q.Eval(context.Background(), rego.EvalInput(map[string]any{"doc": doc, "schema": s}))
		if err != nil {
			t.Fatal(err)
		}
		result := rs[0].Bindings["x"].([]any)
		if result[0] == true {
			return nil
		}
		var errs []string
		for _, e := range result[1].([]any) {
			b, _ := json.Marshal(e)
			errs = append(errs, string(b))
		}
		if len(errs) == 0 {
			errs = []string{"no match, no error reported"}
		}
		return errs
	}
}

func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// canonical is v as JSON with object keys sorted.
func canonical(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReadmeExamples(t *testing.T) {
	examples := readmeExamples(t)
	if len(examples) < 5 {
		t.Fatalf("README.md has %d examples, want at least 5", len(examples))
	}
	decide := shippedPolicy(t)
	_, check := decisionSchema(t)
	for _, ex := range examples {
		input, documented := decodeJSON(t, ex.input), decodeJSON(t, ex.decision)
		if errs := check(t, input, "input"); errs != nil {
			t.Errorf("README.md:%d: the input does not match decision.schema.json#/$defs/input: %v", ex.line, errs)
		}
		if errs := check(t, documented, "decision"); errs != nil {
			t.Errorf("README.md:%d: the decision does not match decision.schema.json#/$defs/decision: %v", ex.line, errs)
		}
		got := decide(t, input)
		if canonical(t, got) != canonical(t, documented) {
			t.Errorf("README.md:%d: the policy decides\n%s\nthe README says\n%s", ex.line, canonical(t, got), canonical(t, documented))
		}
	}
}

func TestSchemaRejectsMalformedDocuments(t *testing.T) {
	_, check := decisionSchema(t)
	obligations := map[string]any{"portal_only": false, "requires_message_encryption": false, "generic_provider_label": false, "route_to_confidential_address": false}
	channel := map[string]any{"type": "email", "tls_enforced": true, "message_encrypted": false, "encryption_available": false}
	tests := []struct {
		name, def string
		doc       any
	}{
		{"allowed with reasons", "decision", map[string]any{"allow": true, "deny": []any{"x"}, "redact": []any{}, "obligations": obligations}},
		{"denied without reasons", "decision", map[string]any{"allow": false, "deny": []any{}, "redact": []any{}, "obligations": obligations}},
		{"an obligation missing", "decision", map[string]any{"allow": true, "deny": []any{}, "redact": []any{}, "obligations": map[string]any{"portal_only": false}}},
		{"an obligation as a string", "decision", map[string]any{"allow": true, "deny": []any{}, "redact": []any{}, "obligations": map[string]any{"portal_only": "yes", "requires_message_encryption": false, "generic_provider_label": false, "route_to_confidential_address": false}}},
		{"unknown channel", "input", map[string]any{"notice_type": "eob", "channel": map[string]any{"type": "fax", "tls_enforced": true, "message_encrypted": false, "encryption_available": false}, "payload": map[string]any{}}},
		{"no payload", "input", map[string]any{"notice_type": "eob", "channel": channel}},
		{"misspelt channel flag", "input", map[string]any{"notice_type": "eob", "channel": map[string]any{"type": "email", "tls_enforce": true, "message_encrypted": false, "encryption_available": false}, "payload": map[string]any{}}},
		{"categories as one string", "input", map[string]any{"notice_type": "eob", "channel": channel, "payload": map[string]any{}, "facts": map[string]any{"sensitive_categories": "mental_health"}}},
		{"confidential address as a string", "input", map[string]any{"notice_type": "eob", "channel": channel, "payload": map[string]any{}, "contact": map[string]any{"has_confidential_address": "yes"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if check(t, tc.doc, tc.def) == nil {
				t.Errorf("decision.schema.json#/$defs/%s accepts it", tc.def)
			}
		})
	}
}

// TestSchemaNamesWhatTheDataLists keeps the schema's lists of notice types,
// channels and obligations in step with the data files and the policy.
func TestSchemaNamesWhatTheDataLists(t *testing.T) {
	schema, _ := decisionSchema(t)
	decide := shippedPolicy(t)
	var dataFiles struct {
		Allowlist map[string]any `json:"allowlist"`
		Channels  map[string]any `json:"channels"`
	}
	for _, name := range []string{"data/allowlist.json", "data/channels.json"} {
		raw, err := fs.ReadFile(policyfiles.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &dataFiles); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	at := func(path ...string) any {
		var v any = schema
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("decision.schema.json has no %s", strings.Join(path, "/"))
			}
			v = m[p]
		}
		return v
	}
	strs := func(v any) []string {
		var out []string
		for _, s := range v.([]any) {
			out = append(out, s.(string))
		}
		slices.Sort(out)
		return out
	}
	keys := func(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

	input := []string{"$defs", "input", "properties"}
	if got, want := strs(at(append(input, "notice_type", "enum")...)), keys(dataFiles.Allowlist); !slices.Equal(got, want) {
		t.Errorf("schema notice types %v, data/allowlist.json lists %v", got, want)
	}
	if got, want := strs(at(append(input, "channel", "properties", "type", "enum")...)), keys(dataFiles.Channels); !slices.Equal(got, want) {
		t.Errorf("schema channel types %v, data/channels.json lists %v", got, want)
	}
	if got, want := strs(at(append(input, "contact", "properties", "opted_out_channels", "items", "enum")...)), keys(dataFiles.Channels); !slices.Equal(got, want) {
		t.Errorf("schema opted-out channels %v, data/channels.json lists %v", got, want)
	}
	decided := decide(t, map[string]any{}).(map[string]any)
	if got, want := strs(at("$defs", "decision", "required")), keys(decided); !slices.Equal(got, want) {
		t.Errorf("schema decision keys %v, the policy answers with %v", got, want)
	}
	if got, want := strs(at("$defs", "decision", "properties", "obligations", "required")), keys(decided["obligations"].(map[string]any)); !slices.Equal(got, want) {
		t.Errorf("schema obligations %v, the policy answers with %v", got, want)
	}
}
