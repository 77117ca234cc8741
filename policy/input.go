package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Channel is how a notice would be delivered.
type Channel struct {
	Type             string `json:"type"`
	TLSEnforced      bool   `json:"tls_enforced"`
	MessageEncrypted bool   `json:"message_encrypted"`
	// EncryptionAvailable means the recipient has a key (S/MIME or OpenPGP),
	// so the message could be encrypted if the policy requires it.
	EncryptionAvailable bool `json:"encryption_available"`
	// Security names how the channel protects what it shows, when that is
	// more than transport: "portal-authenticated" is the portal once the
	// patient has proved who they are (ChannelPortalAuthenticated).
	Security string `json:"security,omitempty"`
}

// ChannelPortalAuthenticated is Channel.Security of the portal: the notice
// is shown over HTTPS to a patient who proved who they are.
const ChannelPortalAuthenticated = "portal-authenticated"

// ChannelMessageEncrypted is Channel.Security of a message encrypted for
// the recipient's own key (S/MIME or OpenPGP) and signed by the tenant.
const ChannelMessageEncrypted = "message-encrypted"

// Contact is what the patient asked for or agreed to, as the policies need
// it: never the addresses themselves.
type Contact struct {
	OptedOutChannels []string `json:"opted_out_channels,omitempty"`
	// OptedOutPurposes are the purposes the patient unsubscribed from
	// ("marketing"), through a mail's one-click link.
	OptedOutPurposes []string `json:"opted_out_purposes,omitempty"`
	// HasConfidentialAddress means the patient asked to be reached only at a
	// confidential-communication address (HIPAA 164.522(b)).
	HasConfidentialAddress bool     `json:"has_confidential_address"`
	Restrictions           []string `json:"restrictions,omitempty"`
	MarketingAuthorized    bool     `json:"marketing_authorized"`
	Language               string   `json:"language,omitempty"`
	AlternateFormat        string   `json:"alternate_format,omitempty"`
	// EmailSuppressed means the patient's address bounced permanently as
	// often as the suppression threshold allows: no email may go to it.
	EmailSuppressed bool `json:"email_suppressed,omitempty"`
}

// Input is what the policies judge: one notice payload on one channel for
// one contact. Its JSON form is the input document described in
// rego/README.md.
type Input struct {
	NoticeType string         `json:"notice_type"`
	Channel    Channel        `json:"channel"`
	Payload    map[string]any `json:"payload"`
	Purpose    string         `json:"purpose,omitempty"`
	// Facts are coarse properties of the source resource that rules may use
	// (for an EOB: "use", "outcome", sensitive categories as flags); never
	// codes or names. Values are strings, booleans or lists of strings.
	Facts   map[string]any `json:"facts,omitempty"`
	Contact Contact        `json:"contact"`
}

// LogValue keeps the payload, which is PHI, out of logs.
func (Input) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// InputHash is the hex SHA-256 of in's JSON encoding, for the decision log:
// the input holds PHI and is never stored, but the hash shows whether two
// decisions judged the same input. encoding/json writes struct fields in
// order and map keys sorted, so equal inputs hash alike. It returns "" for
// an input that has no JSON encoding, which Decide refuses as well.
func InputHash(in Input) string {
	b, err := json.Marshal(in)
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Keys of the input document. OPA never modifies input terms, so one copy is
// shared by every evaluation, as OPA shares its own interned terms.
var (
	keyNoticeType             = ast.StringTerm("notice_type")
	keyChannel                = ast.StringTerm("channel")
	keyType                   = ast.StringTerm("type")
	keyTLSEnforced            = ast.StringTerm("tls_enforced")
	keyMessageEncrypted       = ast.StringTerm("message_encrypted")
	keyEncryptionAvailable    = ast.StringTerm("encryption_available")
	keySecurity               = ast.StringTerm("security")
	keyPayload                = ast.StringTerm("payload")
	keyPurpose                = ast.StringTerm("purpose")
	keyFacts                  = ast.StringTerm("facts")
	keyContact                = ast.StringTerm("contact")
	keyOptedOutChannels       = ast.StringTerm("opted_out_channels")
	keyOptedOutPurposes       = ast.StringTerm("opted_out_purposes")
	keyHasConfidentialAddress = ast.StringTerm("has_confidential_address")
	keyRestrictions           = ast.StringTerm("restrictions")
	keyMarketingAuthorized    = ast.StringTerm("marketing_authorized")
	keyLanguage               = ast.StringTerm("language")
	keyAlternateFormat        = ast.StringTerm("alternate_format")
	keyEmailSuppressed        = ast.StringTerm("email_suppressed")
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
	channelItems := [][2]*ast.Term{
		ast.Item(keyType, ast.InternedTerm(in.Channel.Type)),
		ast.Item(keyTLSEnforced, ast.InternedTerm(in.Channel.TLSEnforced)),
		ast.Item(keyMessageEncrypted, ast.InternedTerm(in.Channel.MessageEncrypted)),
		ast.Item(keyEncryptionAvailable, ast.InternedTerm(in.Channel.EncryptionAvailable)),
	}
	if in.Channel.Security != "" {
		channelItems = append(channelItems, ast.Item(keySecurity, ast.InternedTerm(in.Channel.Security)))
	}
	channel := ast.NewObject(channelItems...)
	items := make([][2]*ast.Term, 0, 6)
	items = append(items,
		ast.Item(keyNoticeType, ast.InternedTerm(in.NoticeType)),
		ast.Item(keyChannel, ast.NewTerm(channel)),
		ast.Item(keyPayload, ast.NewTerm(payload)),
		ast.Item(keyContact, ast.NewTerm(in.Contact.regoValue())),
	)
	if in.Purpose != "" {
		items = append(items, ast.Item(keyPurpose, ast.InternedTerm(in.Purpose)))
	}
	if len(in.Facts) > 0 {
		facts := make([][2]*ast.Term, 0, len(in.Facts))
		for k, v := range in.Facts {
			t, err := factTerm(v)
			if err != nil {
				// k is a fact name chosen by Tidings, never a value.
				return nil, fmt.Errorf("policy: input facts.%s: %w", k, err)
			}
			facts = append(facts, ast.Item(ast.StringTerm(k), t))
		}
		items = append(items, ast.Item(keyFacts, ast.NewTerm(ast.NewObject(facts...))))
	}
	return ast.NewObject(items...), nil
}

// factTerm converts the fact value types Tidings uses without reflection,
// and anything else as OPA would.
func factTerm(v any) (*ast.Term, error) {
	switch v := v.(type) {
	case string:
		return ast.InternedTerm(v), nil
	case bool:
		return ast.InternedTerm(v), nil
	case []string:
		return stringsTerm(v), nil
	}
	x, err := ast.InterfaceToValue(v)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(x), nil
}

// stringsTerm is a []string as JSON encodes it: nil is null.
func stringsTerm(ss []string) *ast.Term {
	if ss == nil {
		return ast.NullTerm()
	}
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.InternedTerm(s)
	}
	return ast.ArrayTerm(terms...)
}

func (c Contact) regoValue() ast.Value {
	items := make([][2]*ast.Term, 0, 6)
	items = append(items,
		ast.Item(keyHasConfidentialAddress, ast.InternedTerm(c.HasConfidentialAddress)),
		ast.Item(keyMarketingAuthorized, ast.InternedTerm(c.MarketingAuthorized)),
	)
	if len(c.OptedOutChannels) > 0 {
		items = append(items, ast.Item(keyOptedOutChannels, stringsTerm(c.OptedOutChannels)))
	}
	if len(c.OptedOutPurposes) > 0 {
		items = append(items, ast.Item(keyOptedOutPurposes, stringsTerm(c.OptedOutPurposes)))
	}
	if len(c.Restrictions) > 0 {
		items = append(items, ast.Item(keyRestrictions, stringsTerm(c.Restrictions)))
	}
	if c.Language != "" {
		items = append(items, ast.Item(keyLanguage, ast.InternedTerm(c.Language)))
	}
	if c.AlternateFormat != "" {
		items = append(items, ast.Item(keyAlternateFormat, ast.InternedTerm(c.AlternateFormat)))
	}
	if c.EmailSuppressed {
		items = append(items, ast.Item(keyEmailSuppressed, ast.InternedTerm(true)))
	}
	return ast.NewObject(items...)
}
