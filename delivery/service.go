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
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/valueset"
)

// Store is what delivering notices needs from storage; store.Store
// implements it.
type Store interface {
	EnsureRunNotice(ctx context.Context, run journey.Run, step, template, noticeType string, eventID int64) (Notice, error)
	ContactFor(ctx context.Context, tenantID, patientRef string) (Contact, error)
	UpsertContact(ctx context.Context, tenantID, patientRef string, c Contact) error
	RecordDecision(ctx context.Context, d Decision) error
	SealNoticePayload(ctx context.Context, noticeID int64, payload []byte) error
	FinishNotice(ctx context.Context, n Notice, status string, reasons []string) error
	// BeginDelivery claims the (notice, channel) delivery for an attempt:
	// proceed=false when it was already sent, ErrOutcomeUnknown when an
	// earlier attempt never finished, ErrRunEnded when the notice's run
	// ended before the claim.
	BeginDelivery(ctx context.Context, n Notice, channel string) (d Delivery, proceed bool, err error)
	FinishDelivery(ctx context.Context, d Delivery, status string, tls bool, messageID, errText string) error
}

// Policy decides whether a notice may go.
type Policy interface {
	Decide(ctx context.Context, in policy.Input) (policy.Decision, error)
}

// References reads, from a subscription's FHIR source, resources a
// notification did not carry (the patient, for the address; an insurer or
// provider, for its name), returning those found with the reference each
// was read by. intake.Fetcher implements it.
type References interface {
	FetchReferences(ctx context.Context, subscriptionID string, refs []string) ([]json.RawMessage, []string, error)
}

// Service delivers the notices of workflow runs' send steps: it builds the
// minimum-necessary notice from the run's event, finds the contact, asks
// the policy, honours the decision and hands the message to the channel,
// recording each step. It implements journey.Sender.
type Service struct {
	Store  Store
	Policy Policy
	// Channels by name ("email", and later "sms", "portal", "webhook").
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
}

var _ journey.Sender = (*Service)(nil)

// Send builds, decides on and delivers the notice of a run's send step.
// The notice is unique per (run, step): a retried or duplicated wake-up
// finds it and does not send again. It reports delivered once the channel
// took the message; it returns nil once the notice has an outcome (sent,
// denied, failed), and an error when the attempt should be retried; on the
// last try the notice fails instead.
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
	out := outgoing{template: a.Template, channel: a.Channel, from: req.From,
		// Opaque: a tenant's name could reveal the kind of care.
		messageID: "<" + n.PortalToken + "@tidings.invalid>"}
	if out.channel == "" {
		out.channel = "email"
	}
	var delivered bool
	switch noticeType {
	case notify.NoticeTypeEOB:
		delivered, err = s.deliverEOB(ctx, n, ev, out)
	default:
		delivered, err = s.deliverAppointment(ctx, n, ev, out)
	}
	switch {
	case err == nil, errors.Is(err, errFinal):
		return delivered, nil // sent, denied, skipped or failed: recorded on the notice
	case req.LastTry:
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return false, s.Store.FinishNotice(wctx, n, NoticeFailed, []string{"gave up after the last retry: " + err.Error()})
	}
	return false, err
}

// errFinal marks an outcome already recorded on the notice.
var errFinal = errors.New("the notice has its outcome")

// deliverEOB builds an EOB notice (the first one or its reminder) from the
// event, reading what the notification did not carry from the source.
func (s *Service) deliverEOB(ctx context.Context, n Notice, ev *journey.Event, out outgoing) (bool, error) {
	facts, err := ev.EOBFacts()
	if err != nil {
		return false, s.fail(ctx, n, "the ExplanationOfBenefit could not be read: "+err.Error())
	}
	rec := ev.Record
	if s.References != nil {
		// What the notification did not carry — the Patient (for the address),
		// the insurer or provider when it has no name — is read from the source.
		var refs []string
		if _, inBundle := rec.PatientContact(facts.PatientRef); !inBundle {
			refs = append(refs, facts.PatientRef)
		}
		insurer, provider := eobPartyRefs(rec.Focus)
		if facts.PayerName == "" {
			refs = append(refs, insurer)
		}
		if facts.ProviderName == "" {
			refs = append(refs, provider)
		}
		found, urls, err := s.References.FetchReferences(ctx, ev.SubscriptionID, refs)
		if err != nil {
			return false, fmt.Errorf("event %d: fetch a referenced resource: %w", ev.ID, err)
		}
		if len(found) > 0 {
			rec.RelatedURLs = append(slices.Clip(rec.RelatedURLs), make([]string, max(0, len(rec.Related)-len(rec.RelatedURLs)))...) // keep URLs index-aligned
			rec.Related = append(slices.Clip(rec.Related), found...)
			rec.RelatedURLs = append(rec.RelatedURLs, urls...)
			if f2, err := rec.EOBFacts(); err == nil {
				facts = f2
			}
		}
	}
	contact, err := s.contact(ctx, n.TenantID, facts.PatientID, facts.PatientRef, rec)
	if err != nil {
		return false, fmt.Errorf("event %d: contact: %w", ev.ID, err)
	}
	in := policy.Input{
		NoticeType: notify.NoticeTypeEOB,
		Purpose:    "payment",
		Facts:      map[string]any{"use": facts.Use, "outcome": facts.Outcome},
	}
	if s.ValueSets != nil {
		// Categories, never codes, go to the policy.
		cats := s.ValueSets.Categories(fhir.DiagnosisCodes(rec.Focus))
		in.Facts["sensitive_categories"] = cats
		in.Facts["has_sensitive_diagnosis"] = len(cats) > 0
	}
	return s.decideAndSend(ctx, n, contact, in, &eobDraft{n: notify.ToEOBNotice(facts, s.portalURL(n.PortalToken))}, out)
}

// deliverAppointment builds an appointment notice from the subject's latest
// event, its time shown in the contact's time zone.
func (s *Service) deliverAppointment(ctx context.Context, n Notice, ev *journey.Event, out outgoing) (bool, error) {
	facts, err := ev.AppointmentFacts()
	if err != nil {
		return false, s.fail(ctx, n, "the Appointment could not be read: "+err.Error())
	}
	contact, err := s.contact(ctx, n.TenantID, facts.PatientID, facts.PatientRef, ev.Record)
	if err != nil {
		return false, fmt.Errorf("event %d: contact: %w", ev.ID, err)
	}
	var loc *time.Location
	if contact.TimeZone != "" {
		loc, _ = time.LoadLocation(contact.TimeZone) // unknown: the appointment's own offset
	}
	in := policy.Input{
		NoticeType: notify.NoticeTypeAppointment,
		Purpose:    "treatment",
		Facts:      map[string]any{"status": facts.Status, "has_sensitive_reason": facts.HasSensitiveReason},
	}
	return s.decideAndSend(ctx, n, contact, in, &appointmentDraft{n: notify.ToAppointmentNotice(facts, loc, s.portalURL(n.PortalToken))}, out)
}

// decideAndSend asks the policy whether the notice may go to this contact
// on the step's channel and how, honours the decision, and delivers it
// once. It reports whether the channel took the message.
func (s *Service) decideAndSend(ctx context.Context, n Notice, contact Contact, base policy.Input, d draft, out outgoing) (bool, error) {
	ch, ok := s.Channels[out.channel]
	if !ok {
		return false, s.fail(ctx, n, "channel "+out.channel+" is not configured in this deployment; not sent")
	}
	if contact.Email == "" {
		return false, s.fail(ctx, n, "no email address for the patient")
	}
	in := policyInput(base, d, out.channel, ch.Security(), contact)
	start := time.Now()
	dec, err := s.Policy.Decide(ctx, in)
	latency := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return false, fmt.Errorf("notice %d: policy: %w", n.ID, ctx.Err()) // shutting down: retry later
	}
	p := apply(dec, err, d, contact, out)
	if err == nil || errors.Is(err, policy.ErrNoDecision) {
		rec := Decision{TenantID: n.TenantID, NoticeID: n.ID, Revision: dec.Revision, InputHash: policy.InputHash(in),
			Allow: dec.Allow, Reasons: dec.Deny, Redact: dec.Redact, Obligations: dec.Obligations, LatencyUS: latency.Microseconds()}
		if err != nil {
			rec.Reasons = []string{"no policy decision"}
		}
		if rerr := s.Store.RecordDecision(ctx, rec); rerr != nil && err == nil {
			return false, fmt.Errorf("notice %d: record decision: %w", n.ID, rerr)
		}
	}
	switch p.Status {
	case NoticeFailed:
		return false, s.fail(ctx, n, p.Reasons[0])
	case NoticeDenied:
		return false, s.Store.FinishNotice(ctx, n, NoticeDenied, p.Reasons)
	}
	if err := s.Store.SealNoticePayload(ctx, n.ID, p.Payload); err != nil {
		return false, fmt.Errorf("notice %d: %w", n.ID, err)
	}
	dl, proceed, err := s.Store.BeginDelivery(ctx, n, out.channel)
	switch {
	case errors.Is(err, ErrRunEnded):
		return false, s.Store.FinishNotice(ctx, n, NoticeSkipped, []string{"the run ended (a cancellation, an appointment entered in error) before the notice was delivered"})
	case errors.Is(err, ErrOutcomeUnknown):
		return false, s.fail(ctx, n, "an earlier delivery attempt ended without a recorded outcome; not resent, to avoid a duplicate")
	case err != nil:
		return false, fmt.Errorf("notice %d: begin delivery: %w", n.ID, err)
	case !proceed:
		// An earlier attempt delivered it.
		return true, s.Store.FinishNotice(ctx, n, NoticeSent, nil)
	}
	receipt, sendErr := ch.Send(ctx, p.Email)
	// Once the relay has answered, record it even if the task is being
	// cancelled: a lost "sent" would look like an unknown outcome.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if sendErr != nil {
		reason := "email delivery failed: " + sendErr.Error()
		if err := s.Store.FinishDelivery(wctx, dl, DeliveryFailed, false, "", reason); err != nil {
			return false, err
		}
		if errors.Is(sendErr, notify.ErrTemporary) {
			return false, fmt.Errorf("notice %d: %s", n.ID, reason)
		}
		return false, s.fail(wctx, n, reason)
	}
	if err := s.Store.FinishDelivery(wctx, dl, DeliverySent, receipt.TLS, receipt.MessageID, ""); err != nil {
		return false, err
	}
	return true, s.Store.FinishNotice(wctx, n, NoticeSent, nil)
}

// fail records the notice as failed, which is final. reason holds no PHI.
func (s *Service) fail(ctx context.Context, n Notice, reason string) error {
	if err := s.Store.FinishNotice(ctx, n, NoticeFailed, []string{reason}); err != nil {
		return err
	}
	return fmt.Errorf("notice %d failed: %w", n.ID, errFinal)
}

// contact finds where to send, most authoritative first: a contact registered
// through the API; the Patient resource that came with this event (which also
// refreshes the stored contact); a contact stored from an earlier bundle;
// and, in dev only, a placeholder on a reserved domain.
func (s *Service) contact(ctx context.Context, tenantID, patientID, patientRef string, ev fhir.Event) (Contact, error) {
	refs := journey.PatientRefs(patientID, patientRef)
	var stored *Contact
	for _, ref := range refs {
		c, err := s.Store.ContactFor(ctx, tenantID, ref)
		if err != nil && !errors.Is(err, fault.NotFound) {
			return Contact{}, err
		}
		if err == nil && c.Email != "" && stored == nil {
			stored = &c
		}
	}
	if stored != nil && stored.Source == "api" {
		return *stored, nil
	}
	pc, fromBundle := ev.PatientContact(patientRef)
	if fromBundle && pc.Email != "" {
		c := Contact{Email: pc.Email, Language: pc.Language, Source: "fhir"}
		if len(refs) > 0 && (stored == nil || stored.Email != c.Email || stored.Language != c.Language) {
			if err := s.Store.UpsertContact(ctx, tenantID, refs[0], c); err != nil {
				return Contact{}, err
			}
		}
		return c, nil
	}
	if stored != nil {
		return *stored, nil
	}
	if s.PlaceholderDomain != "" && patientID != "" {
		return Contact{Email: placeholder(patientID, s.PlaceholderDomain), Language: pc.Language, Source: "fhir"}, nil
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

func (s *Service) portalURL(token string) string {
	return strings.TrimRight(s.PublicBaseURL, "/") + "/portal/notices/" + token
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
