package delivery

import (
	"context"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
)

// An SMS is decided on with the shipped rules as the link alone, goes
// only under portal_only, to the phone, with the fixed text: whatever the
// notice holds, nothing of it reaches the text or the policy's payload,
// and the portal's decision still starts from the whole notice.
func TestSMSPlanCarriesOnlyTheLink(t *testing.T) {
	ctx := context.Background()
	e, err := policy.NewEmbedded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{Policy: shippedPolicy{e}}
	base := policy.Input{NoticeType: notify.NoticeTypeEOB, Purpose: "payment", Facts: map[string]any{"use": "claim", "outcome": "complete"}}
	phone := Contact{Email: "home@example.org", Phone: "+15551234567", Language: "en"}
	smsOut := out
	smsOut.channel = ChannelSMS
	full := eob()
	d := &smsDraft{full: full, portalURL: portalURLOf(full)}
	p, rec, err := s.decision(ctx, "t1", phone, base, d, smsOut, notify.Security{})
	if err != nil || rec == nil {
		t.Fatal(err)
	}
	if p.Status != "" {
		t.Fatalf("plan %s: %v", p.Status, p.Reasons)
	}
	want := "You have a new message from Acme Notices. Read it securely: " + portal + " Reply STOP to opt out."
	if p.Email.To != phone.Phone || p.Email.Text != want || p.Email.Subject != "" || p.Email.HTML != "" || p.Email.From != "" {
		t.Errorf("message %+v", p.Email)
	}
	for _, phi := range []string{"Oncology", "45.20", "2026-03-01", "Acme Health"} {
		if strings.Contains(p.Email.Text, phi) || strings.Contains(string(p.Payload), phi) {
			t.Errorf("%q reached the SMS or its payload: %q %s", phi, p.Email.Text, p.Payload)
		}
	}
	if p.Disclosure.Detail != DetailPortalOnly || p.Disclosure.Recipient != phone.Phone {
		t.Errorf("disclosure %+v", p.Disclosure)
	}
	if c, ok := d.Clone().(*eobDraft); !ok || c.n.ProviderName == "" {
		t.Errorf("the portal's decision should start from the whole notice, got %#v", d.Clone())
	}

	// Without portal_only from the policy, no SMS.
	if p := apply(allow(), nil, &smsDraft{full: eob(), portalURL: portal}, phone, smsOut); p.Status != NoticeFailed {
		t.Errorf("an SMS without portal_only: %+v", p)
	}
	// A confidential address: denied by the policy (and by the worker).
	conf := phone
	conf.ConfidentialEmail = "secret@example.org"
	if p, _, _ := s.decision(ctx, "t1", conf, base, &smsDraft{full: eob(), portalURL: portal}, smsOut, notify.Security{}); p.Status != NoticeDenied {
		t.Errorf("an SMS to a patient with a confidential address: %+v", p)
	}
	if p := apply(allow("portal_only"), nil, &smsDraft{full: eob(), portalURL: portal}, conf, smsOut); p.Status != NoticeDenied {
		t.Errorf("the worker's own check: %+v", p)
	}
	// Opted out of SMS (a STOP): denied.
	stopped := phone
	stopped.OptedOutChannels = []string{"sms"}
	if p := apply(allow("portal_only"), nil, &smsDraft{full: eob(), portalURL: portal}, stopped, smsOut); p.Status != NoticeDenied {
		t.Errorf("an SMS to a patient who sent STOP: %+v", p)
	}
}

func TestAddresses(t *testing.T) {
	c := Contact{Email: "home@example.org", Phone: "+15551234567"}
	if addressOf(c, ChannelSMS) != c.Phone || addressOf(c, ChannelEmail) != c.Email || addressOf(Contact{Email: "a@b.org"}, ChannelSMS) != "" {
		t.Error("addressOf")
	}
	c.ConfidentialEmail = "secret@example.org"
	if addressOf(c, ChannelEmail) != c.ConfidentialEmail || portalAddress(c, ChannelSMS, c.Phone) != c.ConfidentialEmail {
		t.Error("a confidential address is the one used, and the portal's code goes there")
	}
}

type keptContacts struct{ got []Contact }

func (k *keptContacts) UpsertContact(_ context.Context, _, _ string, c Contact) error {
	k.got = append(k.got, c)
	return nil
}

// A contact needs an email or a phone, and a phone is E.164; the refusal
// names the field, never the value.
func TestRegisterChecksThePhone(t *testing.T) {
	k := &keptContacts{}
	cs := Contacts{Store: k}
	ctx := context.Background()
	if err := cs.Register(ctx, "t1", "p1", Contact{Phone: "+15551234567"}); err != nil {
		t.Errorf("a phone alone: %v", err)
	}
	for _, c := range []Contact{{}, {Phone: "555-123-4567"}, {Email: "a@example.org", Phone: "+1 555 123"}} {
		err := cs.Register(ctx, "t1", "p1", c)
		if err == nil || (c.Phone != "" && (!strings.Contains(err.Error(), "phone must be an E.164 number") || strings.Contains(err.Error(), c.Phone))) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	if len(k.got) != 1 {
		t.Errorf("%d contacts stored, want only the valid one", len(k.got))
	}
}
