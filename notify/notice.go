package notify

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tidings-health/tidings/fhir"
)

// NoticeTypeEOB names the EOB notice for policy input and templates.
const NoticeTypeEOB = "eob"

// maxNameRunes bounds a payer or provider name taken from a FHIR resource.
const maxNameRunes = 200

// EOBNotice is the minimum-necessary payload of an EOB notice, built field by
// field. Nothing else may be added: the policy checks the field set.
type EOBNotice struct {
	PayerName    string `json:"payer_name,omitempty"`
	ServiceDate  string `json:"service_date,omitempty"` // YYYY-MM-DD
	ProviderName string `json:"provider_name,omitempty"`
	PatientShare string `json:"patient_share,omitempty"` // formatted by FormatMoney; "" when unknown
	PortalURL    string `json:"portal_url"`
}

// LogValue keeps the notice out of logs: it is PHI.
func (EOBNotice) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// ToEOBNotice builds the notice from EOB facts, field by field. Names are
// trimmed, their control characters and runs of white space collapsed to one
// space, and cut to 200 characters; the service date is kept only when it
// is a full date (a dateTime keeps its date part); the share is formatted
// by FormatMoney and left empty when the facts have none. Use, outcome,
// patient and resource ids are deliberately not carried over.
func ToEOBNotice(f fhir.EOBFacts, portalURL string) EOBNotice {
	n := EOBNotice{
		PayerName:    cleanName(f.PayerName),
		ServiceDate:  isoDate(f.ServiceDate),
		ProviderName: cleanName(f.ProviderName),
		PortalURL:    strings.ToValidUTF8(strings.TrimSpace(portalURL), "\uFFFD"),
	}
	if f.PatientShare != nil {
		n.PatientShare = FormatMoney(f.PatientShare.Value, f.PatientShare.Currency)
	}
	return n
}

// Fields returns the notice as the policy sees it: exactly the JSON object
// the notice encodes to, that is every non-empty field plus portal_url,
// which is always present (it is required; a policy can deny an empty one).
func (n EOBNotice) Fields() map[string]any { return fieldsOf(n.PortalURL, n.optional()) }

// optional lists the fields a policy may redact, by JSON name.
func (n *EOBNotice) optional() []noticeField {
	return []noticeField{
		{"payer_name", &n.PayerName},
		{"service_date", &n.ServiceDate},
		{"provider_name", &n.ProviderName},
		{"patient_share", &n.PatientShare},
	}
}

// noticeField is one optional field of a notice payload.
type noticeField struct {
	name  string // as in JSON and in the policy's allow-list
	value *string
}

func fieldsOf(portalURL string, optional []noticeField) map[string]any {
	m := map[string]any{"portal_url": portalURL}
	for _, f := range optional {
		if *f.value != "" {
			m[f.name] = *f.value
		}
	}
	return m
}

// redact empties the named fields; a name that is not among them is an
// error wrapping ErrUnknownField.
func redact(optional []noticeField, names []string) error {
	for _, name := range names {
		i := slices.IndexFunc(optional, func(f noticeField) bool { return f.name == name })
		if i < 0 {
			return fmt.Errorf("%w %q", ErrUnknownField, name)
		}
		*optional[i].value = ""
	}
	return nil
}

// cleanName makes an outside name safe to place in a line of text.
func cleanName(s string) string {
	var b strings.Builder
	space := false
	runes := 0
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) {
			space = true
			continue
		}
		if runes == maxNameRunes {
			break
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
			runes++
			if runes == maxNameRunes {
				break
			}
		}
		space = false
		b.WriteRune(r)
		runes++
	}
	return strings.TrimSpace(b.String())
}

// isoDate returns the YYYY-MM-DD date of a FHIR date or dateTime, or "" for
// a partial date (year or year-month) or anything malformed.
func isoDate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) < len(time.DateOnly) || (len(s) > len(time.DateOnly) && s[len(time.DateOnly)] != 'T') {
		return ""
	}
	d := s[:len(time.DateOnly)]
	if _, err := time.Parse(time.DateOnly, d); err != nil {
		return ""
	}
	return d
}

// ErrUnknownField means a redaction named a field the notice does not have
// (or one it cannot do without); the caller must not send.
var ErrUnknownField = errors.New("notify: cannot redact field")

// Redact returns the notice without the named fields, as a policy asks. The
// portal link cannot be redacted: a notice without it has no purpose.
func (n EOBNotice) Redact(fields ...string) (EOBNotice, error) {
	if err := redact(n.optional(), fields); err != nil {
		return EOBNotice{}, err
	}
	return n, nil
}
