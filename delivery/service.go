package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/valueset"
)

// Store is what delivering notices needs from storage; store.Store
// implements it.
type Store interface {
	EnsureRunNotice(ctx context.Context, run journey.Run, step, template, noticeType string, eventID int64) (Notice, error)
	// ContactFor finds the patient's contact registered through the API,
	// else the one the source's bundles gave (never another source's).
	ContactFor(ctx context.Context, tenantID, source, patientRef string) (Contact, error)
	UpsertContact(ctx context.Context, tenantID, patientRef string, c Contact) error
	OptOuts
	RecordDecision(ctx context.Context, d Decision) error
	// SealNoticePayload stores the notice as sent and its portal view
	// (PortalView's JSON), both sealed, and the portal's decision (when
	// there is one) in the same transaction: no view without its decision.
	SealNoticePayload(ctx context.Context, noticeID int64, payload, portal []byte, portalDecision *Decision) error
	FinishNotice(ctx context.Context, n Notice, status string, reasons []string) error
	// BeginDelivery claims the (notice, channel) delivery for an attempt:
	// proceed=false when it was already sent, ErrOutcomeUnknown when an
	// earlier attempt never finished (the delivery is then marked
	// DeliveryUnknown) or its outcome is unknown, ErrRunEnded when the
	// notice's run ended before the claim. resend is an operator's resend
	// of an unknown delivery: that one is claimed, and a run that ended
	// normally since does not stop it (a cancelled one does).
	// disclosed is what the attempt discloses: a delivery later marked
	// unknown without its answer is accounted for with it.
	BeginDelivery(ctx context.Context, n Notice, channel, messageID string, resend bool, disclosed Disclosure) (d Delivery, proceed bool, err error)
	// FinishDelivery records an attempt's outcome; a delivery sent, or
	// whose outcome is unknown, records disclosed (its content, recipient
	// and patient) in the accounting of disclosures with it.
	FinishDelivery(ctx context.Context, d Delivery, status string, tls bool, messageID, errText string, disclosed Disclosure) error
}

// Policy decides whether a notice may go, with the rules of the notice's
// tenant; *policy.Tenants is it.
type Policy interface {
	Decide(ctx context.Context, tenantID string, in policy.Input) (policy.Decision, error)
}

// References reads, from a subscription's FHIR source, resources a
// notification did not carry (the patient, for the address; an insurer or
// provider, for its name), returning those found with the reference each
// was read by. intake.Fetcher implements it.
type References interface {
	FetchReferences(ctx context.Context, tenantID, subscriptionID string, refs []string) ([]json.RawMessage, []string, error)
}

// Service delivers the notices of workflow runs' send steps: it builds the
// minimum-necessary notice from the run's event, finds the contact, asks
// the policy, honours the decision and hands the message to the channel,
// recording each step. It implements journey.Sender.
type Service struct {
	Store  Store
	Policy Policy
	// Channels by name ("email", "sms"; a portal step sends nothing).
	Channels map[string]Channel
	// References fetches what a notification did not carry; nil when no
	// FHIR source is configured anywhere.
	References References
	// ValueSets classify diagnoses into sensitive categories for the policy
	// (nil: no categories are computed).
	ValueSets *valueset.Sets
	// PublicBaseURL is where patients read notices; the link carries only an opaque token.
	PublicBaseURL string
	// PlaceholderDomain, when set (dev only), gives a patient without an email
	// address "<patient id>@<domain>", which must be a reserved domain such as patients.invalid.
	PlaceholderDomain string
	Log               *slog.Logger
	// Metrics counts decisions and notices' outcomes; nil counts nothing.
	Metrics *metrics.Metrics
	// Links adds unsubscribe headers and tracking to mails (links.go); nil:
	// none, and a marketing or tracked workflow's mail is not sent.
	Links Links
}

var _ journey.Sender = (*Service)(nil)

// Send builds, decides on and delivers the notice of a run's send step.
// The notice is unique per (run, step): a retried or duplicated wake-up
// finds it and does not send again. It reports delivered once the channel
// took the message; it returns nil once the notice has an outcome (sent,
// denied, failed) or its delivery's outcome is unknown (the notice then
// stays pending until an operator resolves it), and an error when the
// attempt should be retried; on the last try the notice fails instead.
func (s *Service) Send(ctx context.Context, req journey.Send) (bool, error) {
	run, a, ev := req.Run, req.Action, req.Event
	noticeType := notify.NoticeTypeOf(a.Template)
	var err error
	switch {
	case noticeType == "":
		err = fmt.Errorf("template %q is not known", a.Template)
	case ev == nil:
		err = fmt.Errorf("template %s needs the run's EOB or appointment, and this run (started by an API event or a segment) has none", a.Template)
	}
	if err != nil {
		// Nothing to send, nor a notice to record it on (a notice belongs to
		// an event); retrying will not change that. Saving a workflow refuses
		// such send steps; this covers definitions saved before that check.
		if s.Log != nil {
			s.Log.Warn("send step skipped", "run_id", run.ID, "workflow", run.WorkflowID, "step", a.Step, "err", err)
		}
		return false, nil
	}
	n, err := s.Store.EnsureRunNotice(ctx, run, a.Step, a.Template, noticeType, ev.ID)
	if err != nil {
		return false, err
	}
	if n.Status != NoticePending {
		return false, nil
	}
	out := outgoing{template: a.Template, channel: a.Channel, from: req.From, purpose: req.Purpose, resend: req.Resend, tenant: run.TenantID,
		tracking: req.Tracking, patientRef: run.Facts["patient"]}
	if out.channel == "" {
		out.channel = "email"
	}
	sub, reason, err := s.read(ctx, ev, noticeType)
	if err == nil && reason != "" {
		err = s.fail(ctx, n, out.channel, reason)
	}
	var delivered bool
	if err == nil {
		var contact Contact
		contact, err = s.contact(ctx, n.TenantID, sub)
		switch {
		case err == nil:
			delivered, err = s.sendStep(ctx, n, run, contact, sub, out, req)
		case errors.Is(err, seal.ErrCorrupt), errors.Is(err, seal.ErrUnknownKey):
			// Fail closed, for good: a sealed address that does not open
			// for its row (altered, or copied from another patient or
			// tenant) or under any configured key will not open on retry.
			err = s.fail(ctx, n, out.channel, "the contact's sealed address does not open for its row")
		}
	}
	switch {
	case err == nil, errors.Is(err, errFinal):
		return delivered, nil // sent, denied, skipped or failed: recorded on the notice
	case req.LastTry:
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return false, s.finish(wctx, n, out.channel, NoticeFailed, []string{"gave up after the last retry: " + err.Error()})
	}
	return false, err
}

// errFinal marks an outcome already recorded on the notice.
var errFinal = errors.New("the notice has its outcome")

// subject is what a notice is about, read from its event: the facts, and
// the record with whatever was fetched for it.
type subject struct {
	event      *journey.Event
	noticeType string
	eob        fhir.EOBFacts
	appt       fhir.AppointmentFacts
	rec        fhir.Event
	patientID  string
	patientRef string
}

// read reads the event a notice is about. For an EOB it reads from the
// source what the notification did not carry: the Patient (for the
// address), the insurer or provider when it has no name. A reason is a
// final failure (the event cannot become a notice); an error, one to retry.
func (s *Service) read(ctx context.Context, ev *journey.Event, noticeType string) (subject, string, error) {
	sub := subject{event: ev, noticeType: noticeType, rec: ev.Record}
	if noticeType != notify.NoticeTypeEOB {
		facts, err := ev.AppointmentFacts()
		if err != nil {
			return sub, "the Appointment could not be read: " + err.Error(), nil
		}
		if s.References != nil && len(facts.UnreadReasons) > 0 {
			// A reason the notification did not carry decides whether the
			// visit is sensitive: read it from the source.
			found, err := s.fetch(ctx, ev, &sub.rec, facts.UnreadReasons)
			if err != nil {
				return sub, "", err
			}
			if found {
				if f2, err := sub.rec.AppointmentFacts(); err == nil {
					facts = f2
				}
			}
		}
		sub.appt, sub.patientID, sub.patientRef = facts, facts.PatientID, facts.PatientRef
		return sub, "", nil
	}
	facts, err := ev.EOBFacts()
	if err != nil {
		return sub, "the ExplanationOfBenefit could not be read: " + err.Error(), nil
	}
	if s.References != nil {
		var refs []string
		if _, inBundle := sub.rec.PatientContact(facts.PatientRef); !inBundle {
			refs = append(refs, facts.PatientRef)
		}
		if facts.PayerName == "" || facts.ProviderName == "" {
			// Decoding the EOB again took 7% of the worker's CPU in a
			// load run: only for a name the EOB does not carry.
			insurer, provider := eobPartyRefs(sub.rec.Focus)
			if facts.PayerName == "" {
				refs = append(refs, insurer)
			}
			if facts.ProviderName == "" {
				refs = append(refs, provider)
			}
		}
		found, err := s.fetch(ctx, ev, &sub.rec, refs)
		if err != nil {
			return sub, "", err
		}
		if found {
			if f2, err := sub.rec.EOBFacts(); err == nil {
				facts = f2
			}
		}
	}
	sub.eob, sub.patientID, sub.patientRef = facts, facts.PatientID, facts.PatientRef
	return sub, "", nil
}

// fetch reads refs from the event's source and adds what it found to rec's
// related resources, under the reference each was read by. It reports
// whether it found any.
func (s *Service) fetch(ctx context.Context, ev *journey.Event, rec *fhir.Event, refs []string) (bool, error) {
	found, urls, err := s.References.FetchReferences(ctx, ev.TenantID, ev.SubscriptionID, refs)
	if err != nil {
		return false, fmt.Errorf("event %d: fetch a referenced resource: %w", ev.ID, err)
	}
	if len(found) == 0 {
		return false, nil
	}
	rec.RelatedURLs = append(slices.Clip(rec.RelatedURLs), make([]string, max(0, len(rec.Related)-len(rec.RelatedURLs)))...) // keep URLs index-aligned
	rec.Related = append(slices.Clip(rec.Related), found...)
	rec.RelatedURLs = append(rec.RelatedURLs, urls...)
	return true, nil
}

// draftFor builds the minimum-necessary notice for a contact (an
// appointment's time is shown in the contact's zone) and the part of the
// policy input that describes it.
func (s *Service) draftFor(sub subject, contact Contact, portalToken, purpose string) (policy.Input, draft) {
	var tenantID string
	if sub.event != nil {
		tenantID = sub.event.TenantID
	}
	link := s.portalURL(tenantID, portalToken)
	if sub.noticeType == notify.NoticeTypeEOB {
		in := policy.Input{NoticeType: notify.NoticeTypeEOB, Purpose: PurposeOf(purpose, notify.NoticeTypeEOB),
			Facts: map[string]any{"use": sub.eob.Use, "outcome": sub.eob.Outcome}}
		s.addSensitivity(in.Facts, sub.event.DiagnosisCodes(), false)
		return in, &eobDraft{n: notify.ToEOBNotice(sub.eob, link)}
	}
	var loc *time.Location
	if contact.TimeZone != "" {
		loc, _ = time.LoadLocation(contact.TimeZone) // unknown: the appointment's own offset
	}
	in := policy.Input{NoticeType: notify.NoticeTypeAppointment, Purpose: PurposeOf(purpose, notify.NoticeTypeAppointment),
		Facts: map[string]any{"status": sub.appt.Status}}
	s.addSensitivity(in.Facts, sub.appt.Reasons, len(sub.appt.UnreadReasons) > 0)
	return in, &appointmentDraft{n: notify.ToAppointmentNotice(sub.appt, loc, link)}
}

// addSensitivity classifies the codes (an EOB's diagnoses, an
// Appointment's reasons) and adds the categories, never the codes, to the
// policy facts. unknown says a reason could not be read (a reference the
// source did not give): its category is unknown, so the notice counts as
// sensitive.
func (s *Service) addSensitivity(facts map[string]any, codes []fhir.Coding, unknown bool) {
	var cats []string
	if s.ValueSets != nil {
		cats = s.ValueSets.Categories(codes)
		facts["sensitive_categories"] = cats
	} else if !unknown {
		return
	}
	facts["has_sensitive_diagnosis"] = len(cats) > 0 || unknown
}

// decision asks the policy about a notice for a contact on a channel and
// applies the answer: the plan, and the decision to log (nil when the input
// could not be built: there was nothing to decide on). An error means the
// ask was cut short (shutting down): retry.
func (s *Service) decision(ctx context.Context, tenantID string, contact Contact, base policy.Input, d draft, out outgoing, sec notify.Security) (plan, *Decision, error) {
	out, sec = s.encryption(tenantID, contact, out, sec)
	var err error
	if contact, err = s.withOptOuts(ctx, tenantID, contact, base.Purpose, out); err != nil {
		return plan{}, nil, err
	}
	return s.decide(ctx, tenantID, contact, policyInput(base, d, out.channel, sec, contact), d, out)
}

// decide asks the policy about a built input; see decision.
func (s *Service) decide(ctx context.Context, tenantID string, contact Contact, in policy.Input, d draft, out outgoing) (plan, *Decision, error) {
	start := time.Now()
	dec, err := s.Policy.Decide(ctx, tenantID, in)
	latency := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return plan{}, nil, fmt.Errorf("policy: %w", ctx.Err())
	}
	switch {
	case err != nil:
		s.Metrics.Decision(metrics.NoDecision, latency)
	case dec.Allow:
		s.Metrics.Decision(metrics.Allow, latency)
	default:
		s.Metrics.Decision(metrics.Deny, latency)
	}
	p := apply(dec, err, d, contact, out)
	p.Disclosure.NoticeType, p.Disclosure.Purpose = in.NoticeType, in.Purpose
	if err != nil && !errors.Is(err, policy.ErrNoDecision) {
		return p, nil, nil
	}
	rec := &Decision{TenantID: tenantID, Channel: in.Channel.Type, Revision: dec.Revision, InputHash: policy.InputHash(in),
		Allow: dec.Allow, Reasons: dec.Deny, Redact: dec.Redact, Obligations: dec.Obligations, LatencyUS: latency.Microseconds()}
	if err != nil {
		rec.Reasons = []string{"no policy decision"}
	}
	return p, rec, nil
}

// decideAndSend asks the policy whether the notice may go to this contact
// on the step's channel and how, honours the decision, and delivers it
// once. It reports whether the channel took the message.
func (s *Service) decideAndSend(ctx context.Context, n Notice, run journey.Run, contact Contact, base policy.Input, d draft, out outgoing, view PortalView) (bool, error) {
	ch, ok := s.Channels[out.channel]
	if !ok {
		return false, s.fail(ctx, n, out.channel, "channel "+out.channel+" is not configured in this deployment; not sent")
	}
	if addressOf(contact, out.channel) == "" {
		return false, s.undeliverable(ctx, n, out, "no "+out.channel+" address for the patient")
	}
	pd := d.Clone() // the portal's decision starts from the undecided notice
	p, rec, err := s.decision(ctx, n.TenantID, contact, base, d, out, ch.Security())
	if err != nil {
		return false, fmt.Errorf("notice %d: %w", n.ID, err)
	}
	if rec != nil {
		rec.NoticeID = n.ID
		if rerr := s.Store.RecordDecision(ctx, *rec); rerr != nil && p.Status != NoticeFailed {
			return false, fmt.Errorf("notice %d: record decision: %w", n.ID, rerr)
		}
	}
	switch p.Status {
	case NoticeFailed:
		return false, s.fail(ctx, n, out.channel, p.Reasons[0])
	case NoticeDenied:
		return false, s.finish(ctx, n, out.channel, NoticeDenied, p.Reasons)
	}
	portal, prec, err := s.portalDecision(ctx, n.TenantID, contact, base, pd, out, portalAddress(contact, out.channel, p.Email.To), view)
	if err != nil {
		return false, fmt.Errorf("notice %d: portal: %w", n.ID, err)
	}
	if prec != nil {
		prec.NoticeID = n.ID
	}
	if err := s.Store.SealNoticePayload(ctx, n.ID, p.Payload, portal, prec); err != nil {
		return false, fmt.Errorf("notice %d: %w", n.ID, err)
	}
	if p.Email, err = s.stamp(p.Email, n.ID, out); err != nil {
		return false, s.fail(ctx, n, out.channel, err.Error())
	}
	disclosed := p.Disclosure
	disclosed.PatientIndex, disclosed.PatientRef = run.PatientIndex, run.Facts["patient"]
	dl, proceed, err := s.Store.BeginDelivery(ctx, n, out.channel, messageIDFor(ch), out.resend, disclosed)
	switch {
	case errors.Is(err, ErrRunEnded):
		return false, s.finish(ctx, n, out.channel, NoticeSkipped, []string{"the run ended (a cancellation, an appointment entered in error) before the notice was delivered"})
	case errors.Is(err, ErrOutcomeUnknown):
		// An earlier attempt may have reached the relay: not sent again.
		// The delivery is unknown and the notice pending until an operator
		// resolves it (tidings deliveries resolve).
		return false, nil
	case err != nil:
		return false, fmt.Errorf("notice %d: begin delivery: %w", n.ID, err)
	case !proceed:
		// An earlier attempt delivered it.
		return true, s.finish(ctx, n, out.channel, NoticeSent, nil)
	}
	p.Email.MessageID = dl.MessageID
	receipt, sendErr := ch.Send(ctx, p.Email)
	// Once the relay has answered, record it even if the task is being
	// cancelled: a lost "sent" would look like an unknown outcome.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if errors.Is(sendErr, notify.ErrUnknownOutcome) {
		// The relay may have taken it: never retried on its own. The
		// Message-ID lets an operator find it in the relay's logs.
		reason := out.channel + " delivery outcome unknown: " + sendErr.Error()
		if s.Log != nil {
			s.Log.Warn("delivery outcome unknown; not retried", "delivery_id", dl.ID, "notice_id", n.ID)
		}
		if err := s.Store.FinishDelivery(wctx, dl, DeliveryUnknown, false, p.Email.MessageID, reason, disclosed); err != nil {
			return false, err
		}
		s.Metrics.Notice(DeliveryUnknown, out.channel)
		return false, nil
	}
	if sendErr != nil {
		reason := out.channel + " delivery failed: " + sendErr.Error()
		if err := s.Store.FinishDelivery(wctx, dl, DeliveryFailed, false, "", reason, Disclosure{}); err != nil {
			return false, err
		}
		if errors.Is(sendErr, notify.ErrTemporary) {
			return false, fmt.Errorf("notice %d: %s", n.ID, reason)
		}
		return false, s.undeliverable(wctx, n, out, reason)
	}
	if err := s.Store.FinishDelivery(wctx, dl, DeliverySent, receipt.TLS, receipt.MessageID, "", disclosed); err != nil {
		return false, err
	}
	return true, s.finish(wctx, n, out.channel, NoticeSent, p.Reasons)
}

// finish records the notice's final status, and counts it.
func (s *Service) finish(ctx context.Context, n Notice, channel, status string, reasons []string) error {
	if err := s.Store.FinishNotice(ctx, n, status, reasons); err != nil {
		return err
	}
	s.Metrics.Notice(status, channel)
	return nil
}

// fail records the notice as failed, which is final. reason holds no PHI.
func (s *Service) fail(ctx context.Context, n Notice, channel, reason string) error {
	if err := s.finish(ctx, n, channel, NoticeFailed, []string{reason}); err != nil {
		return err
	}
	return fmt.Errorf("notice %d failed: %w", n.ID, errFinal)
}

// contact finds where to send (see pickContact), reading the contacts stored
// under the patient's references, and stores the bundle's contact when it
// is new.
func (s *Service) contact(ctx context.Context, tenantID string, sub subject) (Contact, error) {
	refs := journey.PatientRefs(sub.patientID, sub.patientRef)
	stored := make([]*Contact, len(refs))
	for i, ref := range refs {
		c, err := s.Store.ContactFor(ctx, tenantID, sub.event.Source, ref)
		if err != nil && !errors.Is(err, fault.NotFound) {
			return Contact{}, err
		}
		if err == nil {
			stored[i] = &c
		}
	}
	c, upsert := s.pickContact(stored, sub)
	if upsert != nil {
		if err := s.Store.UpsertContact(ctx, tenantID, refs[0], *upsert); err != nil {
			return Contact{}, err
		}
	}
	return c, nil
}

// pickContact finds where to send, most authoritative first: a contact
// registered through the API; the Patient resource that came with the event
// (to be stored, as upsert, for the event's source when it differs from
// the stored one); a contact stored from an earlier bundle of the same
// source; and, in dev only, a placeholder on a reserved domain. stored
// holds the contacts under the patient's references (journey.PatientRefs,
// in that order; nil where there is none) as ContactFor finds them: the
// API's, else the event's source's, never another source's.
func (s *Service) pickContact(stored []*Contact, sub subject) (c Contact, upsert *Contact) {
	var found *Contact
	for _, c := range stored {
		if c != nil && (c.Email != "" || c.Phone != "") && found == nil {
			found = c
		}
	}
	if found != nil && found.Source == "api" {
		return *found, nil
	}
	pc, fromBundle := sub.rec.PatientContact(sub.patientRef)
	if fromBundle && pc.Email != "" {
		c := Contact{Email: pc.Email, Language: pc.Language, Source: "fhir", FHIRSource: sub.event.Source}
		if len(stored) > 0 && (found == nil || found.Email != c.Email || found.Language != c.Language) {
			upsert = &c
		}
		return c, upsert
	}
	if found != nil {
		return *found, nil
	}
	if s.PlaceholderDomain != "" && sub.patientID != "" {
		return Contact{Email: placeholder(sub.patientID, s.PlaceholderDomain), Language: pc.Language, Source: "fhir"}, nil
	}
	return Contact{}, nil
}

func placeholder(patientID, domain string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(patientID) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	local := strings.Trim(b.String(), ".-")
	if local == "" {
		local = "patient"
	}
	if len(local) > 64 {
		local = local[:64]
	}
	return local + "@" + domain
}

// eobPartyRefs reads an EOB's insurer and provider references.
func eobPartyRefs(eob json.RawMessage) (insurer, provider string) {
	var head struct {
		Insurer  struct{ Reference string } `json:"insurer"`
		Provider struct{ Reference string } `json:"provider"`
	}
	_ = json.Unmarshal(eob, &head)
	return head.Insurer.Reference, head.Provider.Reference
}
