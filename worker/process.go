package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tidings-health/tidings/valueset"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

// Store is what the worker needs from storage.
type Store interface {
	LoadEvent(ctx context.Context, id int64) (store.LoadedEvent, error)
	EnsureNotice(ctx context.Context, tenantID string, eventID int64, noticeType string) (store.Notice, error)
	ContactFor(ctx context.Context, tenantID, patientRef string) (store.ContactDetails, error)
	UpsertContact(ctx context.Context, tenantID, patientRef string, c store.ContactDetails) error
	RecordDecision(ctx context.Context, d store.DecisionRecord) error
	SealNoticePayload(ctx context.Context, noticeID int64, payload []byte) error
	FinishNotice(ctx context.Context, n store.Notice, status string, reasons []string) error
	BeginDelivery(ctx context.Context, n store.Notice, channel string) (store.Delivery, bool, error)
	FinishDelivery(ctx context.Context, d store.Delivery, status string, tls bool, messageID, errText string) error
	PreviousEvent(ctx context.Context, tenantID, resourceType, resourceID string, eventID int64) (store.LoadedEvent, error)
	SetEventKind(ctx context.Context, eventID int64, kind string) error
}

// Policy decides whether a notice may go.
type Policy interface {
	Decide(ctx context.Context, in policy.Input) (policy.Decision, error)
}

// EmailSender delivers one email; notify.EmailChannel is the real one.
type EmailSender interface {
	Security() notify.Security
	Send(ctx context.Context, e notify.Email) (notify.Receipt, error)
}

// Processor turns events into notices.
type Processor struct {
	Store  Store
	Policy Policy
	Email  EmailSender
	Keys   *seal.Keyring
	Log    *slog.Logger
	// PublicBaseURL is where patients read notices; the link carries only an opaque token.
	PublicBaseURL string
	// ValueSets classify diagnoses into sensitive categories for the policy
	// (nil: no categories are computed).
	ValueSets *valueset.Sets
	// Fetcher performs fetches (id-only and empty notifications, pings); nil
	// when no FHIR source is configured anywhere.
	Fetcher *intake.Fetcher
	// PlaceholderDomain, when set (dev only), gives a patient without an email
	// address "<patient id>@<domain>", which must be a reserved domain such as patients.invalid.
	PlaceholderDomain string
}

// HandleEventTask is the Asynq handler for TypeProcessEvent.
func (p *Processor) HandleEventTask(ctx context.Context, t *asynq.Task) error {
	et, err := openTask(p.Keys, t)
	if err != nil {
		// A payload we cannot open never will be: no key for it, or tampered with.
		return fmt.Errorf("open task payload: %w: %w", err, asynq.SkipRetry)
	}
	err = p.ProcessEvent(ctx, et.TenantID, et.ID)
	if err != nil && !errors.Is(err, asynq.SkipRetry) && lastTry(ctx) {
		// Out of retries: say so on the notice rather than leave it pending for ever.
		p.giveUp(ctx, et, err)
	}
	return err
}

func lastTry(ctx context.Context) bool {
	retried, ok := asynq.GetRetryCount(ctx)
	max, ok2 := asynq.GetMaxRetry(ctx)
	return ok && ok2 && retried >= max
}

func (p *Processor) giveUp(ctx context.Context, et taskPayload, cause error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	noticeType := notify.NoticeTypeEOB
	if ev, err := p.Store.LoadEvent(wctx, et.ID); err == nil && ev.ResourceType == "Appointment" {
		noticeType = NoticeTypeAppointment
	}
	n, err := p.Store.EnsureNotice(wctx, et.TenantID, et.ID, noticeType)
	if err == nil && n.Status == store.NoticePending {
		err = p.Store.FinishNotice(wctx, n, store.NoticeFailed, []string{"gave up after the last retry: " + cause.Error()})
	}
	if err != nil && p.Log != nil {
		p.Log.Error("could not record a notice that ran out of retries", "event_id", et.ID, "err", err)
	}
}

// permanent marks an outcome already recorded that must not be retried.
func permanent(err error) error { return fmt.Errorf("%w: %w", err, asynq.SkipRetry) }

// ProcessEvent builds the event's notice, asks the policy, and delivers it.
// It is idempotent: a notice that is no longer pending is left alone, and a
// delivery already sent (or whose outcome is unknown) is not sent again.
func (p *Processor) ProcessEvent(ctx context.Context, tenantID string, eventID int64) error {
	ev, err := p.Store.LoadEvent(ctx, eventID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return permanent(fmt.Errorf("event %d: %w", eventID, err))
		}
		return fmt.Errorf("load event %d: %w", eventID, err)
	}
	if ev.TenantID != tenantID {
		return permanent(fmt.Errorf("event %d: task tenant does not match", eventID))
	}
	if ev.ResourceType == "Appointment" {
		return p.processAppointment(ctx, ev)
	}
	if ev.ResourceType != "ExplanationOfBenefit" {
		return permanent(fmt.Errorf("event %d: no notice for resource type %s", eventID, ev.ResourceType))
	}
	n, err := p.Store.EnsureNotice(ctx, tenantID, eventID, notify.NoticeTypeEOB)
	if err != nil {
		return fmt.Errorf("event %d: %w", eventID, err)
	}
	if n.Status != store.NoticePending {
		return nil
	}
	var rec intake.EventRecord
	if err := json.Unmarshal(ev.Resource, &rec); err != nil {
		return p.fail(ctx, n, "the stored event could not be decoded")
	}
	fev := rec.Event()
	facts, err := fev.EOBFacts()
	if err != nil {
		return p.fail(ctx, n, "the ExplanationOfBenefit could not be read: "+err.Error())
	}
	if p.Fetcher != nil {
		// What the notification did not carry — the Patient (for the address),
		// the insurer or provider when it has no name — is read from the source.
		var refs []string
		if _, inBundle := fev.PatientContact(facts.PatientRef); !inBundle {
			refs = append(refs, facts.PatientRef)
		}
		insurer, provider := eobPartyRefs(fev.Focus)
		if facts.PayerName == "" {
			refs = append(refs, insurer)
		}
		if facts.ProviderName == "" {
			refs = append(refs, provider)
		}
		found, urls, err := p.Fetcher.FetchReferences(ctx, ev.SubscriptionID, refs)
		if err != nil {
			return fmt.Errorf("event %d: fetch a referenced resource: %w", eventID, err)
		}
		if len(found) > 0 {
			for len(fev.RelatedURLs) < len(fev.Related) {
				fev.RelatedURLs = append(fev.RelatedURLs, "") // keep URLs index-aligned
			}
			fev.Related = append(fev.Related, found...)
			fev.RelatedURLs = append(fev.RelatedURLs, urls...)
			if f2, err := fev.EOBFacts(); err == nil {
				facts = f2
			}
		}
	}
	contact, err := p.contact(ctx, tenantID, facts, fev)
	if err != nil {
		return fmt.Errorf("event %d: contact: %w", eventID, err)
	}
	if contact.Email == "" {
		return p.fail(ctx, n, "no email address for the patient")
	}

	notice := notify.ToEOBNotice(facts, p.portalURL(n.PortalToken))
	sec := p.Email.Security()
	in := policy.Input{
		NoticeType: notify.NoticeTypeEOB,
		Channel:    policy.Channel{Type: "email", TLSEnforced: sec.TLSEnforced, MessageEncrypted: sec.MessageEncrypted},
		Payload:    notice.Fields(),
		Purpose:    "payment",
		Facts:      map[string]any{"use": facts.Use, "outcome": facts.Outcome},
		Contact: policy.Contact{OptedOutChannels: contact.OptedOutChannels, HasConfidentialAddress: contact.ConfidentialEmail != "",
			Restrictions: contact.Restrictions, MarketingAuthorized: contact.MarketingAuthorized,
			Language: contact.Language, AlternateFormat: contact.AlternateFormat},
	}
	if p.ValueSets != nil {
		// Categories, never codes, go to the policy.
		cats := p.ValueSets.Categories(fhir.DiagnosisCodes(fev.Focus))
		in.Facts["sensitive_categories"] = cats
		in.Facts["has_sensitive_diagnosis"] = len(cats) > 0
	}
	start := time.Now()
	dec, err := p.Policy.Decide(ctx, in)
	latency := time.Since(start)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("event %d: policy: %w", eventID, ctx.Err()) // shutting down: retry later
		case errors.Is(err, policy.ErrNoDecision):
			// Fail closed: no decision, no send. A broken policy is not a
			// denial: the notice fails, visibly, so it can be re-driven.
			_ = p.Store.RecordDecision(ctx, store.DecisionRecord{TenantID: tenantID, NoticeID: n.ID,
				InputHash: policy.InputHash(in), Reasons: []string{"no policy decision"}, LatencyUS: latency.Microseconds()})
			return p.fail(ctx, n, "no policy decision (not sent): "+err.Error())
		default:
			// The input could not be built; it will not be next time either.
			return p.fail(ctx, n, "the policy input could not be built: "+err.Error())
		}
	}
	if err := p.Store.RecordDecision(ctx, store.DecisionRecord{
		TenantID: tenantID, NoticeID: n.ID, Revision: dec.Revision, InputHash: policy.InputHash(in),
		Allow: dec.Allow, Reasons: dec.Deny, Redact: dec.Redact, Obligations: dec.Obligations, LatencyUS: latency.Microseconds(),
	}); err != nil {
		return fmt.Errorf("event %d: record decision: %w", eventID, err)
	}
	// The patient's own requests hold whatever the policy says: an opted-out
	// channel gets nothing.
	if dec.Allow && slices.Contains(contact.OptedOutChannels, "email") {
		dec = policy.Decision{Deny: []string{"the patient opted out of email (enforced by the worker)"}}
	}
	if !dec.Allow {
		reasons := dec.Deny
		if len(reasons) == 0 {
			reasons = []string{"policy did not allow the notice"}
		}
		return p.Store.FinishNotice(ctx, n, store.NoticeDenied, reasons)
	}
	// Fail closed on conditions this worker cannot meet yet.
	for _, o := range dec.Obligations {
		if !supportedObligations[o] {
			return p.fail(ctx, n, "the policy set obligation "+o+", which this version cannot meet; not sent")
		}
	}
	if len(dec.Redact) > 0 {
		if notice, err = notice.Redact(dec.Redact...); err != nil {
			return p.fail(ctx, n, "the policy asked for a redaction the notice cannot make: "+err.Error())
		}
	}
	if dec.Has("generic_provider_label") {
		notice.ProviderName = "" // a provider's name can reveal the care
	}
	var msg notify.Email
	if dec.Has("portal_only") {
		// Nothing but the link: not even what kind of notice waits.
		notice = notify.EOBNotice{PortalURL: notice.PortalURL}
		msg, err = notify.RenderPortalOnlyEmail(notice.PortalURL, contact.Language)
	} else {
		msg, err = notify.RenderEOBEmail(notice, contact.Language)
	}
	if err != nil {
		return p.fail(ctx, n, "the notice could not be rendered")
	}
	msg.To = contact.Email
	if dec.Has("route_to_confidential_address") && contact.ConfidentialEmail == "" {
		return p.fail(ctx, n, "the policy routes this notice to a confidential address, and none is on file")
	}
	if contact.ConfidentialEmail != "" {
		// HIPAA 164.522(b): a confidential-communication address is used,
		// and only it, whatever the policy says.
		msg.To = contact.ConfidentialEmail
	}
	// Opaque: a tenant's name could reveal the kind of care.
	msg.MessageID = "<" + n.PortalToken + "@tidings.invalid>"
	payload, err := json.Marshal(notice)
	if err != nil {
		return err
	}
	if err := p.Store.SealNoticePayload(ctx, n.ID, payload); err != nil {
		return fmt.Errorf("event %d: %w", eventID, err)
	}

	d, proceed, err := p.Store.BeginDelivery(ctx, n, "email")
	if errors.Is(err, store.ErrOutcomeUnknown) {
		return p.fail(ctx, n, "an earlier delivery attempt ended without a recorded outcome; not resent, to avoid a duplicate")
	}
	if err != nil {
		return fmt.Errorf("event %d: begin delivery: %w", eventID, err)
	}
	if !proceed {
		return p.Store.FinishNotice(ctx, n, store.NoticeSent, nil)
	}
	receipt, sendErr := p.Email.Send(ctx, msg)
	// Once the relay has answered, record it even if the task is being
	// cancelled: a lost "sent" would look like an unknown outcome.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if sendErr != nil {
		reason := "email delivery failed: " + sendErr.Error()
		if err := p.Store.FinishDelivery(wctx, d, store.DeliveryFailed, false, "", reason); err != nil {
			return err
		}
		if errors.Is(sendErr, notify.ErrTemporary) {
			return fmt.Errorf("event %d: %s", eventID, reason)
		}
		return p.fail(wctx, n, reason)
	}
	if err := p.Store.FinishDelivery(wctx, d, store.DeliverySent, receipt.TLS, receipt.MessageID, ""); err != nil {
		return err
	}
	return p.Store.FinishNotice(wctx, n, store.NoticeSent, nil)
}

// fail records the notice as failed and stops retries. reason holds no PHI.
func (p *Processor) fail(ctx context.Context, n store.Notice, reason string) error {
	if err := p.Store.FinishNotice(ctx, n, store.NoticeFailed, []string{reason}); err != nil {
		return err
	}
	return permanent(fmt.Errorf("notice %d failed", n.ID))
}

// contact finds where to send, most authoritative first: a contact registered
// through the API; the Patient resource that came with this event (which also
// refreshes the stored contact); a contact stored from an earlier bundle;
// and, in dev only, a placeholder on a reserved domain.
func (p *Processor) contact(ctx context.Context, tenantID string, facts fhir.EOBFacts, ev fhir.Event) (store.ContactDetails, error) {
	refs := patientRefs(facts)
	var stored *store.ContactDetails
	for _, ref := range refs {
		c, err := p.Store.ContactFor(ctx, tenantID, ref)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.ContactDetails{}, err
		}
		if err == nil && c.Email != "" && stored == nil {
			stored = &c
		}
	}
	if stored != nil && stored.Source == "api" {
		return *stored, nil
	}
	pc, fromBundle := ev.PatientContact(facts.PatientRef)
	if fromBundle && pc.Email != "" {
		c := store.ContactDetails{Email: pc.Email, Language: pc.Language, Source: "fhir"}
		if len(refs) > 0 && (stored == nil || stored.Email != c.Email || stored.Language != c.Language) {
			if err := p.Store.UpsertContact(ctx, tenantID, refs[0], c); err != nil {
				return store.ContactDetails{}, err
			}
		}
		return c, nil
	}
	if stored != nil {
		return *stored, nil
	}
	if p.PlaceholderDomain != "" && facts.PatientID != "" {
		return store.ContactDetails{Email: placeholder(facts.PatientID, p.PlaceholderDomain), Language: pc.Language, Source: "fhir"}, nil
	}
	return store.ContactDetails{}, nil
}

// patientRefs are the keys a contact may be registered under: "Patient/<id>".
func patientRefs(f fhir.EOBFacts) []string {
	var refs []string
	if f.PatientID != "" {
		refs = append(refs, "Patient/"+f.PatientID)
	}
	if f.PatientRef != "" && (len(refs) == 0 || f.PatientRef != refs[0]) {
		refs = append(refs, f.PatientRef)
	}
	return refs
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

func (p *Processor) portalURL(token string) string {
	return strings.TrimRight(p.PublicBaseURL, "/") + "/portal/notices/" + token
}

// Ensure the interface stays satisfied by the real adapter.
var _ Store = (*store.Store)(nil)

// HandleFetchTask is the Asynq handler for TypeFetch.
func (p *Processor) HandleFetchTask(ctx context.Context, t *asynq.Task) error {
	ft, err := openTask(p.Keys, t)
	if err != nil {
		return fmt.Errorf("open task payload: %w: %w", err, asynq.SkipRetry)
	}
	err = p.Fetcher.ProcessFetch(ctx, ft.TenantID, ft.ID)
	if errors.Is(err, intake.ErrPermanent) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if err != nil && lastTry(ctx) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if gerr := p.Fetcher.GiveUp(wctx, ft.ID, err); gerr != nil && p.Log != nil {
			p.Log.Error("could not record a fetch that ran out of retries", "fetch_id", ft.ID, "err", gerr)
		}
	}
	return err
}

// NoticeTypeAppointment is the notice an Appointment event will lead to.
const NoticeTypeAppointment = "appointment"

// processAppointment derives what happened to the appointment from this
// version and the previous one Tidings saw (booked, rescheduled, cancelled,
// ...), records it on the event, and closes its notice as skipped: appointment
// notices are sent by workflows, which come later.
func (p *Processor) processAppointment(ctx context.Context, ev store.LoadedEvent) error {
	n, err := p.Store.EnsureNotice(ctx, ev.TenantID, ev.ID, NoticeTypeAppointment)
	if err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	if n.Status != store.NoticePending {
		return nil
	}
	cur, err := appointmentFacts(ev.Resource)
	if err != nil {
		return p.fail(ctx, n, "the Appointment could not be read: "+err.Error())
	}
	var prev *fhir.AppointmentFacts
	if pe, err := p.Store.PreviousEvent(ctx, ev.TenantID, ev.ResourceType, ev.ResourceID, ev.ID); err == nil {
		if pf, err := appointmentFacts(pe.Resource); err == nil {
			prev = &pf
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("event %d: previous version: %w", ev.ID, err)
	}
	kind := fhir.AppointmentEventKindOf(cur, prev)
	if err := p.Store.SetEventKind(ctx, ev.ID, string(kind)); err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	return p.Store.FinishNotice(ctx, n, store.NoticeSkipped,
		[]string{"appointment " + string(kind) + ": appointment notices are sent by workflows, not in this version"})
}

func appointmentFacts(record []byte) (fhir.AppointmentFacts, error) {
	var rec intake.EventRecord
	if err := json.Unmarshal(record, &rec); err != nil {
		return fhir.AppointmentFacts{}, err
	}
	return rec.Event().AppointmentFacts()
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

// supportedObligations are the policy obligations this worker can honour.
var supportedObligations = map[string]bool{
	"portal_only":                   true,
	"generic_provider_label":        true,
	"route_to_confidential_address": true,
	// requires_message_encryption: no S/MIME or OpenPGP yet, so it fails closed.
}
