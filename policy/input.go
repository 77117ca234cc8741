package policy

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Keys of the input document. OPA never modifies input terms, so one copy is
// shared by every evaluation, as OPA shares its own interned terms.
var (
	keyNoticeType       = ast.StringTerm("notice_type")
	keyChannel          = ast.StringTerm("channel")
	keyType             = ast.StringTerm("type")
	keyTLSEnforced      = ast.StringTerm("tls_enforced")
	keyMessageEncrypted = ast.StringTerm("message_encrypted")
	keyPayload          = ast.StringTerm("payload")
	keyPurpose          = ast.StringTerm("purpose")
	keyFacts            = ast.StringTerm("facts")
)

// regoValue builds the input document directly as an OPA value. It equals what
// OPA would build from in's JSON encoding, without encoding and decoding JSON
// on every decision (see BenchmarkDecideInput).
func (in Input) regoValue() (ast.Value, error) {
	payload := ast.Value(ast.NullValue) // a nil map encodes as JSON null
	if in.Payload != nil {
		v, err := ast.InterfaceToValue(in.Payload)
		if err != nil {
			// The conversion error names a Go type at most; never the values.
			return nil, fmt.Errorf("policy: input payload: %w", err)
		}
		payload = v
	}
	channel := ast.NewObject(
		ast.Item(keyType, ast.InternedTerm(in.Channel.Type)),
		ast.Item(keyTLSEnforced, ast.InternedTerm(in.Channel.TLSEnforced)),
		ast.Item(keyMessageEncrypted, ast.InternedTerm(in.Channel.MessageEncrypted)),
	)
	items := make([][2]*ast.Term, 0, 5)
	items = append(items,
		ast.Item(keyNoticeType, ast.InternedTerm(in.NoticeType)),
		ast.Item(keyChannel, ast.NewTerm(channel)),
		ast.Item(keyPayload, ast.NewTerm(payload)),
	)
	if in.Purpose != "" {
		items = append(items, ast.Item(keyPurpose, ast.InternedTerm(in.Purpose)))
	}
	if len(in.Facts) > 0 {
		facts := make([][2]*ast.Term, 0, len(in.Facts))
		for k, v := range in.Facts {
			facts = append(facts, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
		}
		items = append(items, ast.Item(keyFacts, ast.NewTerm(ast.NewObject(facts...))))
	}
	return ast.NewObject(items...), nil
}
