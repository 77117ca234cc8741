package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/workflow"
)

const portal = "https://portal.example.org/portal/notices/tok123"

func eob() *eobDraft {
	return &eobDraft{n: notify.EOBNotice{PayerName: "Acme Health", ServiceDate: "2026-03-01",
		ProviderName: "Oncology Partners", PatientShare: "$45.20", PortalURL: portal}}
}

func appointment() *appointmentDraft {
	return &appointmentDraft{n: notify.AppointmentNotice{AppointmentDate: "2026-05-12", AppointmentTime: "09:30", LocationName: "Clinic 4",
		ProviderName: "Dr. Canary", PortalURL: portal}}
}

var home = Contact{Email: "home@example.org", Language: "en"}

var out = outgoing{template: "eob.notice", channel: "email",
	from: workflow.Sender{Name: "Acme Notices", From: "notices@acme.example", ReplyTo: "help@acme.example"}}

func allow(obligations ...string) policy.Decision {
	return policy.Decision{Allow: true, Obligations: obligations, Revision: "r1"}
}

// The policy input carries the notice as it would go, the channel's
// security and the contact's requests, never the contact's addresses.
func TestPolicyInput(t *testing.T) {
	base := policy.Input{NoticeType: notify.NoticeTypeEOB, Purpose: "payment", Facts: map[string]any{"use": "claim"}}
	c := Contact{Email: "home@example.org", ConfidentialEmail: "secret@example.org", Language: "es",
		OptedOutChannels: []string{"sms"}, Restrictions: []string{"eob"}, MarketingAuthorized: true, AlternateFormat: "large-print"}
	in := policyInput(base, eob(), "email", notify.Security{TLSEnforced: true}, c)
	want := policy.Input{NoticeType: "eob", Purpose: "payment", Facts: map[string]any{"use": "claim"},
		Channel: policy.Channel{Type: "email", TLSEnforced: true},
		Payload: map[string]any{"payer_name": "Acme Health", "service_date": "2026-03-01", "provider_name": "Oncology Partners",
			"patient_share": "$45.20", "portal_url": portal},
		Contact: policy.Contact{OptedOutChannels: []string{"sms"}, HasConfidentialAddress: true, Restrictions: []string{"eob"},
			MarketingAuthorized: true, Language: "es", AlternateFormat: "large-print"}}
	if policy.InputHash(in) != policy.InputHash(want) {
		t.Fatalf("input\n%+v\nwant\n%+v", in, want)
	}
	b, _ := json.Marshal(in)
	for _, addr := range []string{c.Email, c.ConfidentialEmail} {
		if strings.Contains(string(b), addr) {
			t.Fatalf("the policy input carries an address: %s", b)
		}
	}
	// A notice already cut to the link shows only the link.
	d := eob()
	d.PortalOnly()
	if got := policyInput(base, d, "email", notify.Security{}, home).Payload; len(got) != 1 || got["portal_url"] != portal {
		t.Fatalf("portal-only payload %v", got)
	}
}

// Every way a decision is honoured, and every way it fails closed.
func TestApply(t *testing.T) {
	type want struct {
		status  string // "" = send
		reason  string // a substring of the first reason
		to      string
		body    []string // substrings the text body must have
		notBody []string // and must not
	}
	for _, tc := range []struct {
		name    string
		dec     policy.Decision
		err     error
		draft   func() draft
		contact Contact
		want    want
	}{
		{name: "allowed: the full notice to the address of record", dec: allow(), draft: func() draft { return eob() }, contact: home,
			want: want{to: home.Email, body: []string{"Acme Health", "$45.20", "Oncology Partners", portal}}},
		{name: "no decision fails the notice, never sends",
			err: fmt.Errorf("%w: data.tidings.notice.decision is undefined", policy.ErrNoDecision), draft: func() draft { return eob() }, contact: home,
			want: want{status: NoticeFailed, reason: "no policy decision (not sent)"}},
		{name: "an input the policy cannot take fails the notice",
			err: errors.New("policy: input payload: unsupported type"), draft: func() draft { return eob() }, contact: home,
			want: want{status: NoticeFailed, reason: "the policy input could not be built"}},
		{name: "denied with the policy's reasons", dec: policy.Decision{Deny: []string{"restriction on eob"}},
			draft: func() draft { return eob() }, contact: home, want: want{status: NoticeDenied, reason: "restriction on eob"}},
		{name: "denied without reasons still says why", dec: policy.Decision{},
			draft: func() draft { return eob() }, contact: home, want: want{status: NoticeDenied, reason: "policy did not allow"}},
		{name: "an opted-out channel gets nothing whatever the policy says", dec: allow(),
			draft: func() draft { return eob() }, contact: Contact{Email: home.Email, OptedOutChannels: []string{"email"}},
			want: want{status: NoticeDenied, reason: "opted out of email (enforced by the worker)"}},
		{name: "an obligation this version cannot meet fails closed", dec: allow("requires_message_encryption"),
			draft: func() draft { return eob() }, contact: home,
			want: want{status: NoticeFailed, reason: "obligation requires_message_encryption"}},
		{name: "a redaction the notice cannot make fails closed", dec: policy.Decision{Allow: true, Redact: []string{"diagnosis"}},
			draft: func() draft { return eob() }, contact: home, want: want{status: NoticeFailed, reason: "redaction the notice cannot make"}},
		{name: "a redaction removes the field", dec: policy.Decision{Allow: true, Redact: []string{"patient_share"}},
			draft: func() draft { return eob() }, contact: home,
			want: want{to: home.Email, body: []string{"Acme Health"}, notBody: []string{"$45.20"}}},
		{name: "portal-only carries the link and nothing else", dec: allow("portal_only"),
			draft: func() draft { return eob() }, contact: home,
			want: want{to: home.Email, body: []string{portal}, notBody: []string{"Acme Health", "$45.20", "Oncology", "Explanation"}}},
		{name: "a generic provider label hides the provider", dec: allow("generic_provider_label"),
			draft: func() draft { return eob() }, contact: home,
			want: want{to: home.Email, body: []string{"Acme Health"}, notBody: []string{"Oncology Partners"}}},
		{name: "a confidential address is the only one used", dec: allow(),
			draft: func() draft { return eob() }, contact: Contact{Email: home.Email, ConfidentialEmail: "secret@example.org"},
			want: want{to: "secret@example.org", body: []string{"Acme Health"}}},
		{name: "routing to a confidential address that is not on file fails closed", dec: allow("route_to_confidential_address"),
			draft: func() draft { return eob() }, contact: home,
			want: want{status: NoticeFailed, reason: "confidential address, and none is on file"}},
		{name: "routing to the confidential address on file", dec: allow("route_to_confidential_address"),
			draft: func() draft { return eob() }, contact: Contact{Email: home.Email, ConfidentialEmail: "secret@example.org"},
			want: want{to: "secret@example.org"}},
		{name: "an appointment with a generic provider label names neither provider nor location", dec: allow("generic_provider_label"),
			draft: func() draft { return appointment() }, contact: home,
			want: want{to: home.Email, body: []string{"9:30"}, notBody: []string{"Dr. Canary", "Clinic 4"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := out
			if _, ok := tc.draft().(*appointmentDraft); ok {
				o.template = "appointment.confirmation"
			}
			p := apply(tc.dec, tc.err, tc.draft(), tc.contact, o)
			if p.Status != tc.want.status {
				t.Fatalf("status %q (%v), want %q", p.Status, p.Reasons, tc.want.status)
			}
			if tc.want.status != "" {
				if len(p.Reasons) == 0 || !strings.Contains(p.Reasons[0], tc.want.reason) {
					t.Fatalf("reasons %q, want one with %q", p.Reasons, tc.want.reason)
				}
				if p.Email.To != "" || p.Payload != nil {
					t.Fatal("a notice that is not sent has a message")
				}
				return
			}
			e := p.Email
			if e.To != tc.want.to || e.MessageID != "" || e.FromName != "Acme Notices" || e.From != o.from.From || e.ReplyTo != o.from.ReplyTo {
				t.Fatalf("message to %q id %q from %q <%s> reply-to %s", e.To, e.MessageID, e.FromName, e.From, e.ReplyTo)
			}
			for _, s := range tc.want.body {
				if !strings.Contains(e.Text, s) || !strings.Contains(e.HTML, s) {
					t.Errorf("the message lacks %q:\n%s", s, e.Text)
				}
			}
			for _, s := range tc.want.notBody {
				if strings.Contains(e.Text+e.HTML+e.Subject, s) || strings.Contains(string(p.Payload), s) {
					t.Errorf("the message or its stored payload has %q:\n%s", s, e.Text)
				}
			}
			var fields map[string]any
			if err := json.Unmarshal(p.Payload, &fields); err != nil || fields["portal_url"] != portal {
				t.Errorf("stored payload %s (%v)", p.Payload, err)
			}
		})
	}
}

// The supported obligations are exactly the ones apply honours; a policy
// obligation outside the list can never be sent on.
func TestSupportedObligationsAreHonoured(t *testing.T) {
	var names []string
	for o := range supportedObligations {
		names = append(names, o)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"generic_provider_label", "portal_only", "route_to_confidential_address"}) {
		t.Fatalf("supported obligations %v: add a TestApply case for each new one", names)
	}
}

// What a plan discloses, for the accounting: how much of the notice (the
// fields left out by name, never their values) and the address it really
// goes to (a confidential one when on file).
func TestPlanDescribesItsDisclosure(t *testing.T) {
	confidential := Contact{Email: "home@example.org", ConfidentialEmail: "secret@example.org"}
	for _, tc := range []struct {
		name     string
		dec      policy.Decision
		d        draft
		c        Contact
		detail   string
		redacted []string
		to       string
	}{
		{"full", allow(), eob(), home, DetailFull, nil, "home@example.org"},
		{"redacted", policy.Decision{Allow: true, Redact: []string{"patient_share"}}, eob(), confidential, DetailRedacted, []string{"patient_share"}, "secret@example.org"},
		{"generic provider label", allow("generic_provider_label"), appointment(), home, DetailRedacted, []string{"provider_name", "location_name"}, "home@example.org"},
		{"portal only", allow("portal_only", "generic_provider_label"), eob(), home, DetailPortalOnly, nil, "home@example.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := out
			if _, ok := tc.d.(*appointmentDraft); ok {
				o.template = "appointment.reminder"
			}
			p := apply(tc.dec, nil, tc.d, tc.c, o)
			if p.Status != "" {
				t.Fatalf("not sent: %s %v", p.Status, p.Reasons)
			}
			got := p.Disclosure
			if got.Detail != tc.detail || !slices.Equal(got.Redacted, tc.redacted) || got.Recipient != tc.to || got.Recipient != p.Email.To || got.Channel != "email" {
				t.Errorf("disclosure %+v, want %s %v to %s", got, tc.detail, tc.redacted, tc.to)
			}
		})
	}
	if PurposeOf("", notify.NoticeTypeEOB) != PurposePayment || PurposeOf("", notify.NoticeTypeAppointment) != PurposeTreatment ||
		PurposeOf(PurposeOperations, notify.NoticeTypeEOB) != PurposeOperations {
		t.Error("PurposeOf: the workflow's purpose first, then the notice type's")
	}
}
