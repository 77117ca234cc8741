package delivery

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/workflow"
)

// draft is a notice on its way through the policy: the payload as the
// policy sees it, the changes a decision may ask for, and its rendering.
type draft interface {
	Fields() map[string]any
	Redact(fields ...string) error
	// HideProvider drops what names the provider and returns those fields.
	HideProvider() []string
	PortalOnly()
	Render(template, lang, format string, portalOnly bool) (notify.Email, error)
	Payload() ([]byte, error)
	// Clone is a copy that changes to d do not reach.
	Clone() draft
}

type eobDraft struct{ n notify.EOBNotice }

func (d *eobDraft) Fields() map[string]any { return d.n.Fields() }
func (d *eobDraft) Redact(f ...string) (err error) {
	d.n, err = d.n.Redact(f...)
	return err
}
func (d *eobDraft) HideProvider() []string {
	d.n.ProviderName = ""
	return []string{"provider_name"}
}
func (d *eobDraft) PortalOnly() { d.n = notify.EOBNotice{PortalURL: d.n.PortalURL} }
func (d *eobDraft) Render(template, lang, format string, portalOnly bool) (notify.Email, error) {
	switch {
	case portalOnly:
		return notify.RenderPortalOnlyEmail(d.n.PortalURL, lang, notify.Format(format))
	case template == "eob.reminder":
		return notify.RenderEOBReminderEmail(d.n, lang, notify.Format(format))
	}
	return notify.RenderEOBEmail(d.n, lang, notify.Format(format))
}
func (d *eobDraft) Payload() ([]byte, error) { return json.Marshal(d.n) }
func (d *eobDraft) Clone() draft             { c := *d; return &c }

type appointmentDraft struct{ n notify.AppointmentNotice }

func (d *appointmentDraft) Fields() map[string]any { return d.n.Fields() }
func (d *appointmentDraft) Redact(f ...string) (err error) {
	d.n, err = d.n.Redact(f...)
	return err
}

// HideProvider drops the location too: generic_provider_label names no
// provider or location, and a clinic's name reveals the care as well.
func (d *appointmentDraft) HideProvider() []string {
	d.n.ProviderName, d.n.LocationName = "", ""
	return []string{"provider_name", "location_name"}
}
func (d *appointmentDraft) PortalOnly() { d.n = notify.AppointmentNotice{PortalURL: d.n.PortalURL} }
func (d *appointmentDraft) Render(template, lang, format string, portalOnly bool) (notify.Email, error) {
	if portalOnly {
		return notify.RenderPortalOnlyEmail(d.n.PortalURL, lang, notify.Format(format))
	}
	return notify.RenderAppointmentEmail(template, d.n, lang, notify.Format(format))
}
func (d *appointmentDraft) Payload() ([]byte, error) { return json.Marshal(d.n) }
func (d *appointmentDraft) Clone() draft             { c := *d; return &c }

// policyInput completes what the policies judge: the notice (type,
// purpose, facts already in base) as d would send it, on a channel of that
// security, to a contact with these preferences. The contact's addresses
// never go in; only whether a confidential one exists.
func policyInput(base policy.Input, d draft, channel string, sec notify.Security, c Contact) policy.Input {
	in := base
	in.Channel = policy.Channel{Type: channel, TLSEnforced: sec.TLSEnforced, MessageEncrypted: sec.MessageEncrypted,
		EncryptionAvailable: sec.MessageEncrypted}
	if sec.MessageEncrypted {
		in.Channel.Security = policy.ChannelMessageEncrypted
	}
	in.Payload = d.Fields()
	in.Contact = policy.Contact{OptedOutChannels: c.OptedOutChannels, OptedOutPurposes: c.OptedOutPurposes, HasConfidentialAddress: c.ConfidentialEmail != "",
		Restrictions: c.Restrictions, MarketingAuthorized: c.MarketingAuthorized,
		Language: c.Language, AlternateFormat: c.AlternateFormat, EmailSuppressed: c.EmailSuppressed}
	return in
}

// supportedObligations are the policy obligations this version can honour.
var supportedObligations = map[string]bool{
	"portal_only":                   true,
	"generic_provider_label":        true,
	"route_to_confidential_address": true,
	// requires_message_encryption is met only when the message goes
	// encrypted for the patient's key (outgoing.encryptFor).
}

// plan is what a decision makes of a draft: a message to send, or the
// notice's final status and why.
type plan struct {
	Status  string // "" to send Email; NoticeDenied or NoticeFailed otherwise
	Reasons []string
	Email   notify.Email
	Payload []byte // the notice as sent, to store sealed
	// PortalOnly: the decision left nothing but the portal link.
	PortalOnly bool
	// Disclosure describes what Email discloses, for the accounting of
	// disclosures: its delivery's outcome completes it.
	Disclosure Disclosure
}

// outgoing is how a send step wants its notice sent.
type outgoing struct {
	template string
	channel  string
	from     workflow.Sender // the workflow's identity: name, from, reply-to
	purpose  string          // the workflow's purpose; "": the notice type's
	resend   bool            // an operator's resend of an unknown delivery
	tenant   string          // whose notice: its DKIM key
	// tracking: the workflow tracks opens and clicks; patientRef: whom the
	// run is for (the purposes the patient unsubscribed from).
	tracking   bool
	patientRef string
	// encryptFor is the patient's key the message is encrypted for (nil:
	// none); keyProblem says why the patient's key cannot be used, and
	// the notice then goes portal-only (encryption.go).
	encryptFor *notify.RecipientKey
	keyProblem string
	// canFallBack: the step has a fallback, so a notice this channel
	// cannot deliver is not failed (see Service.undeliverable).
	canFallBack bool
}

func failed(reason string) plan { return plan{Status: NoticeFailed, Reasons: []string{reason}} }

// apply honours a policy decision on a draft, failing closed: no decision,
// an obligation this version cannot meet, a redaction the notice cannot
// make, a confidential address the policy asks for and the contact lacks —
// each fails the notice, visibly, rather than send it. The patient's own
// requests hold whatever the policy says: an opted-out channel gets nothing,
// and a confidential-communication address is the only one used. It
// changes d.
func apply(dec policy.Decision, decideErr error, d draft, c Contact, out outgoing) plan {
	if decideErr != nil {
		if errors.Is(decideErr, policy.ErrNoDecision) {
			// A broken policy is not a denial: the notice fails, so it can be re-driven.
			return failed("no policy decision (not sent): " + decideErr.Error())
		}
		return failed("the policy input could not be built: " + decideErr.Error())
	}
	if dec.Allow && slices.Contains(c.OptedOutChannels, out.channel) {
		return plan{Status: NoticeDenied, Reasons: []string{"the patient opted out of " + out.channel + " (enforced by the worker)"}}
	}
	if !dec.Allow {
		reasons := dec.Deny
		if len(reasons) == 0 {
			reasons = []string{"policy did not allow the notice"}
		}
		return plan{Status: NoticeDenied, Reasons: reasons}
	}
	for _, o := range dec.Obligations {
		if !supportedObligations[o] && (o != "requires_message_encryption" || out.encryptFor == nil) {
			return failed("the policy set obligation " + o + ", which this version cannot meet; not sent")
		}
	}
	redacted := slices.Clone(dec.Redact)
	if len(dec.Redact) > 0 {
		if err := d.Redact(dec.Redact...); err != nil {
			return failed("the policy asked for a redaction the notice cannot make: " + err.Error())
		}
	}
	if dec.Has("generic_provider_label") {
		redacted = append(redacted, d.HideProvider()...) // a provider's name can reveal the care
	}
	portalOnly := dec.Has("portal_only") || out.keyProblem != ""
	var reasons []string
	if out.keyProblem != "" {
		reasons = []string{keyFallback(out.keyProblem)}
	}
	if portalOnly {
		// Nothing but the link: not even what kind of notice waits.
		d.PortalOnly()
	}
	if out.channel == ChannelSMS {
		// The policy's portal_only, not a key problem's: an SMS goes only
		// when the policy itself says portal-only.
		return smsPlan(dec, d, c, out, dec.Has("portal_only"))
	}
	msg, err := d.Render(out.template, c.Language, c.AlternateFormat, portalOnly)
	if err != nil {
		return failed("the notice could not be rendered")
	}
	msg.To = c.Email
	if dec.Has("route_to_confidential_address") && c.ConfidentialEmail == "" {
		return failed("the policy routes this notice to a confidential address, and none is on file")
	}
	if c.ConfidentialEmail != "" {
		// HIPAA 164.522(b): a confidential-communication address is used,
		// and only it, whatever the policy says.
		msg.To = c.ConfidentialEmail
	}
	msg.FromName, msg.From, msg.ReplyTo, msg.TenantID = out.from.Name, out.from.From, out.from.ReplyTo, out.tenant
	msg.EncryptFor = out.encryptFor
	payload, err := d.Payload()
	if err != nil {
		return failed("the notice could not be encoded")
	}
	return plan{Email: msg, Payload: payload, PortalOnly: portalOnly, Reasons: reasons,
		Disclosure: disclosed(out.channel, msg.To, redacted, portalOnly)}
}
