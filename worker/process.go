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
	"github.com/tidings-health/tidings/workflow"
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
	PreviousAppliedEvent(ctx context.Context, tenantID, resourceType, resourceID string, eventID int64) (store.LoadedEvent, error)
	WithTryLock(ctx context.Context, name string, fn func() error) (bool, error)
	SetEventKind(ctx context.Context, eventID int64, kind string) error
	LatestEventID(ctx context.Context, tenantID, resourceType, resourceID string) (int64, error)
	MarkEventProcessed(ctx context.Context, eventID int64) error
	MarkSuperseded(ctx context.Context, eventID int64) error
}

// Policy decides whether a notice may go.
type Policy interface {
	Decide(ctx context.Context, in policy.Input) (policy.Decision, error)
}

// Channel delivers one rendered notice and says how secure it is (the
// policy decides on that). notify.EmailChannel is the email channel; SMS,
// portal and webhook channels implement the same interface and register
// under their name in Processor.Channels.
type Channel interface {
	Security() notify.Security
	Send(ctx context.Context, e notify.Email) (notify.Receipt, error)
}

// EmailSender is the email channel.
type EmailSender = Channel

// Processor turns events into notices.
type Processor struct {
	Store  Store
	Policy Policy
	Email  EmailSender
	// Channels are the other channels by name ("sms", "portal", "webhook");
	// "email" is Email.
	Channels map[string]Channel
	Keys     *seal.Keyring
	Log      *slog.Logger
	// PublicBaseURL is where patients read notices; the link carries only an opaque token.
	PublicBaseURL string
	// ValueSets classify diagnoses into sensitive categories for the policy
	// (nil: no categories are computed).
	ValueSets *valueset.Sets
	// Fetcher performs fetches (id-only and empty notifications, pings); nil
	// when no FHIR source is configured anywhere.
	Fetcher *intake.Fetcher
	// Runs starts and advances workflow runs.
	Runs *Runs
	// Engagements records what happened to a notice ("delivered"); nil: nothing is recorded.
	Engagements interface {
		RecordDelivered(ctx context.Context, tenantID, patientRef, subject string, now time.Time) ([]store.RunWake, error)
	}
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
	done := err == nil || errors.Is(err, asynq.SkipRetry)
	if !done && lastTry(ctx) {
		// Out of retries: say so on the notice rather than leave it pending for ever.
		p.giveUp(ctx, et, err)
		done = true
	}
	if done {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if merr := p.Store.MarkEventProcessed(wctx, et.ID); merr != nil && p.Log != nil {
			p.Log.Warn("could not mark an event processed; the reconciler may enqueue it again (harmless)", "event_id", et.ID, "err", merr)
		}
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

// ProcessEvent turns an event into workflow runs: it starts the runs of
// every active workflow the event's trigger starts (eob.received,
// appointment.booked, ...), and for an appointment applies the lifecycle to
// the runs it already has (a cancellation ends its reminders, a reschedule
// moves them). An event no workflow wants gets a skipped notice saying so.
// It is idempotent: runs are unique per (workflow, subject).
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
	switch ev.ResourceType {
	case "Appointment":
		return p.processAppointment(ctx, ev)
	case "ExplanationOfBenefit":
		return p.processEOB(ctx, ev)
	}
	return permanent(fmt.Errorf("event %d: no notice for resource type %s", eventID, ev.ResourceType))
}

func (p *Processor) processEOB(ctx context.Context, ev store.LoadedEvent) error {
	var rec intake.EventRecord
	if err := json.Unmarshal(ev.Resource, &rec); err != nil {
		return p.closeEvent(ctx, ev, notify.NoticeTypeEOB, store.NoticeFailed, "the stored event could not be decoded")
	}
	fev := rec.Event()
	facts, err := fev.EOBFacts()
	if err != nil {
		return p.closeEvent(ctx, ev, notify.NoticeTypeEOB, store.NoticeFailed, "the ExplanationOfBenefit could not be read: "+err.Error())
	}
	// A run started here takes its first steps in this task: hand it the
	// event already opened and read.
	ctx = context.WithValue(ctx, openedEventKey{}, openedEOB{ev: ev, fev: fev, facts: facts})
	refs := patientRefs(facts.PatientID, facts.PatientRef)
	if len(refs) == 0 {
		return p.closeEvent(ctx, ev, notify.NoticeTypeEOB, store.NoticeFailed, "the ExplanationOfBenefit names no patient")
	}
	nr := store.NewRun{TenantID: ev.TenantID, Subject: "ExplanationOfBenefit/" + ev.ResourceID,
		PatientIndex: p.Runs.Store.PatientIndex(refs[0]), EventID: &ev.ID,
		Facts: workflow.Facts{"patient": refs[0], "use": facts.Use, "outcome": facts.Outcome}}
	// A new version of an EOB a run already follows: its reminder shows this one.
	if _, err := p.Runs.Store.RefreshSubject(ctx, ev.TenantID, nr.Subject, ev.ID, nr.Facts, false, p.Runs.now()); err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	return p.startRuns(ctx, ev, notify.NoticeTypeEOB, nr, "event:eob.received")
}

// startRuns starts the workflows of the triggers; when none is active, the
// event is closed with a skipped notice that says so.
func (p *Processor) startRuns(ctx context.Context, ev store.LoadedEvent, noticeType string, nr store.NewRun, triggers ...string) error {
	total := 0
	for _, trigger := range triggers {
		n, err := p.Runs.Start(ctx, ev.TenantID, trigger, nr)
		if err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		total += n
	}
	if total == 0 {
		return p.closeEvent(ctx, ev, noticeType, store.NoticeSkipped, "no active workflow for "+strings.Join(triggers, " or "))
	}
	return nil
}

// closeEvent records an event that leads to no run with a notice of the
// outcome, so every event is accounted for.
func (p *Processor) closeEvent(ctx context.Context, ev store.LoadedEvent, noticeType, status, reason string) error {
	n, err := p.Store.EnsureNotice(ctx, ev.TenantID, ev.ID, noticeType)
	if err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	if n.Status != store.NoticePending {
		return nil
	}
	if status == store.NoticeFailed {
		return p.fail(ctx, n, reason)
	}
	return p.Store.FinishNotice(ctx, n, status, []string{reason})
}

// SendStep builds, decides on and delivers the notice of a run's send step.
// The notice is unique per (run, step): a retried or duplicated wake-up
// finds it and does not send again. It returns nil once the notice has an
// outcome (sent, denied, failed), and an error when the attempt should be
// retried; on the last try the notice fails instead.
func (p *Processor) SendStep(ctx context.Context, run store.Run, a workflow.Action, lastTry bool) error {
	noticeType, err := noticeTypeOf(a.Template)
	if err == nil && run.EventID == nil {
		err = fmt.Errorf("template %s needs the run's EOB or appointment, and this run (started by an API event or a segment) has none", a.Template)
	}
	if err != nil {
		// Nothing to send, nor a notice to record it on (a notice belongs to
		// an event); retrying will not change that. Saving a workflow refuses
		// such send steps; this covers definitions saved before that check.
		if p.Log != nil {
			p.Log.Warn("send step skipped", "run_id", run.ID, "workflow", run.WorkflowID, "step", a.Step, "err", err)
		}
		return nil
	}
	opened, haveOpened := ctx.Value(openedEventKey{}).(openedEOB)
	ev := opened.ev
	if !haveOpened || ev.ID != *run.EventID {
		if ev, err = p.Store.LoadEvent(ctx, *run.EventID); err != nil {
			return fmt.Errorf("load event %d: %w", *run.EventID, err)
		}
	}
	n, err := p.Runs.Store.EnsureRunNotice(ctx, run, a.Step, a.Template, noticeType, ev.ID)
	if err != nil {
		return err
	}
	if n.Status != store.NoticePending {
		return nil
	}
	out := &outgoing{template: a.Template, channel: a.Channel}
	if def, derr := p.Runs.definition(ctx, run); derr == nil {
		out.sender = def.Sender
	}
	switch noticeType {
	case notify.NoticeTypeEOB:
		err = p.deliverEOB(ctx, n, ev, out)
	default:
		err = p.deliverAppointment(ctx, n, ev, out)
	}
	switch {
	case err == nil && out.sent:
		return p.recordDelivered(ctx, run)
	case err == nil:
		return nil // denied, skipped or failed: recorded on the notice
	case errors.Is(err, asynq.SkipRetry):
		return nil // the notice has its outcome
	case lastTry:
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return p.Store.FinishNotice(wctx, n, store.NoticeFailed, []string{"gave up after the last retry: " + err.Error()})
	}
	return err
}

// recordDelivered records a "delivered" engagement (the relay took the
// message) for the run's subject, so a workflow can wait for it.
func (p *Processor) recordDelivered(ctx context.Context, run store.Run) error {
	if p.Engagements == nil {
		return nil
	}
	wakes, err := p.Engagements.RecordDelivered(ctx, run.TenantID, run.Facts["patient"], run.Subject, p.Runs.now())
	if err != nil {
		return fmt.Errorf("record delivered: %w", err)
	}
	p.Runs.Wake(ctx, wakes)
	return nil
}

// deliverEOB builds an EOB notice (the first one or its reminder) from the
// event, reading what the notification did not carry from the source.
func (p *Processor) deliverEOB(ctx context.Context, n store.Notice, ev store.LoadedEvent, out *outgoing) error {
	eventID := ev.ID
	fev, facts, err := openEOB(ctx, ev)
	if errors.Is(err, errUndecodable) {
		return p.fail(ctx, n, "the stored event could not be decoded")
	}
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
	contact, err := p.contact(ctx, n.TenantID, facts.PatientID, facts.PatientRef, fev)
	if err != nil {
		return fmt.Errorf("event %d: contact: %w", eventID, err)
	}
	notice := notify.ToEOBNotice(facts, p.portalURL(n.PortalToken))
	in := policy.Input{
		NoticeType: notify.NoticeTypeEOB,
		Purpose:    "payment",
		Facts:      map[string]any{"use": facts.Use, "outcome": facts.Outcome},
	}
	if p.ValueSets != nil {
		// Categories, never codes, go to the policy.
		cats := p.ValueSets.Categories(fhir.DiagnosisCodes(fev.Focus))
		in.Facts["sensitive_categories"] = cats
		in.Facts["has_sensitive_diagnosis"] = len(cats) > 0
	}
	return p.decideAndSend(ctx, n, contact, in, &eobDraft{n: notice}, out)
}

// openedEventKey carries an EOB event the task has already opened and read
// (processEOB) to the run steps it takes in the same task.
type openedEventKey struct{}

type openedEOB struct {
	ev    store.LoadedEvent
	fev   fhir.Event
	facts fhir.EOBFacts
}

var errUndecodable = errors.New("the stored event could not be decoded")

// openEOB reads an EOB event, reusing what this task already read.
func openEOB(ctx context.Context, ev store.LoadedEvent) (fhir.Event, fhir.EOBFacts, error) {
	if o, ok := ctx.Value(openedEventKey{}).(openedEOB); ok && o.ev.ID == ev.ID {
		return o.fev, o.facts, nil
	}
	var rec intake.EventRecord
	if err := json.Unmarshal(ev.Resource, &rec); err != nil {
		return fhir.Event{}, fhir.EOBFacts{}, errUndecodable
	}
	fev := rec.Event()
	facts, err := fev.EOBFacts()
	return fev, facts, err
}

// deliverAppointment builds an appointment notice from the subject's latest
// event, its time shown in the contact's time zone.
func (p *Processor) deliverAppointment(ctx context.Context, n store.Notice, ev store.LoadedEvent, out *outgoing) error {
	var rec intake.EventRecord
	if err := json.Unmarshal(ev.Resource, &rec); err != nil {
		return p.fail(ctx, n, "the stored event could not be decoded")
	}
	fev := rec.Event()
	facts, err := fev.AppointmentFacts()
	if err != nil {
		return p.fail(ctx, n, "the Appointment could not be read: "+err.Error())
	}
	contact, err := p.contact(ctx, n.TenantID, facts.PatientID, facts.PatientRef, fev)
	if err != nil {
		return fmt.Errorf("event %d: contact: %w", ev.ID, err)
	}
	var loc *time.Location
	if contact.TimeZone != "" {
		loc, _ = time.LoadLocation(contact.TimeZone) // unknown: the appointment's own offset
	}
	notice := notify.ToAppointmentNotice(facts, loc, p.portalURL(n.PortalToken))
	in := policy.Input{
		NoticeType: notify.NoticeTypeAppointment,
		Purpose:    "treatment",
		Facts:      map[string]any{"status": facts.Status, "has_sensitive_reason": facts.HasSensitiveReason},
	}
	return p.decideAndSend(ctx, n, contact, in, &appointmentDraft{n: notice}, out)
}

// noticeDraft is a notice on its way through the policy: the payload as the
// policy sees it, the changes a decision may ask for, and its rendering.
type noticeDraft interface {
	Fields() map[string]any
	Redact(fields ...string) error
	HideProvider()
	PortalOnly()
	Render(template, lang string, portalOnly bool) (notify.Email, error)
	Payload() ([]byte, error)
}

type eobDraft struct {
	n          notify.EOBNotice
	portalOnly bool
}

func (d *eobDraft) Fields() map[string]any { return d.n.Fields() }
func (d *eobDraft) Redact(f ...string) (err error) {
	d.n, err = d.n.Redact(f...)
	return err
}
func (d *eobDraft) HideProvider() { d.n.ProviderName = "" }
func (d *eobDraft) PortalOnly()   { d.n = notify.EOBNotice{PortalURL: d.n.PortalURL} }
func (d *eobDraft) Render(template, lang string, portalOnly bool) (notify.Email, error) {
	switch {
	case portalOnly:
		return notify.RenderPortalOnlyEmail(d.n.PortalURL, lang)
	case template == "eob.reminder":
		return notify.RenderEOBReminderEmail(d.n, lang)
	}
	return notify.RenderEOBEmail(d.n, lang)
}
func (d *eobDraft) Payload() ([]byte, error) { return json.Marshal(d.n) }

type appointmentDraft struct{ n notify.AppointmentNotice }

func (d *appointmentDraft) Fields() map[string]any { return d.n.Fields() }
func (d *appointmentDraft) Redact(f ...string) (err error) {
	d.n, err = d.n.Redact(f...)
	return err
}
func (d *appointmentDraft) HideProvider() { d.n.ProviderName = "" }
func (d *appointmentDraft) PortalOnly()   { d.n = notify.AppointmentNotice{PortalURL: d.n.PortalURL} }
func (d *appointmentDraft) Render(template, lang string, portalOnly bool) (notify.Email, error) {
	if portalOnly {
		return notify.RenderPortalOnlyEmail(d.n.PortalURL, lang)
	}
	return notify.RenderAppointmentEmail(template, d.n, lang)
}
func (d *appointmentDraft) Payload() ([]byte, error) { return json.Marshal(d.n) }

// outgoing is how a send step wants its notice sent.
type outgoing struct {
	sent     bool // set once the relay took the message
	template string
	channel  string          // "email"; the only channel this version delivers on
	sender   workflow.Sender // the workflow's identity: name, from, reply-to
}

// decideAndSend asks the policy whether the notice may go to this contact
// on the step's channel and how, honours the decision (redactions,
// obligations, the patient's own requests whatever the policy says), and
// delivers it once.
func (p *Processor) decideAndSend(ctx context.Context, n store.Notice, contact store.ContactDetails, in policy.Input, d noticeDraft, out *outgoing) error {
	tenantID := n.TenantID
	if out.channel == "" {
		out.channel = "email"
	}
	ch, ok := p.channel(out.channel)
	if !ok {
		return p.fail(ctx, n, "channel "+out.channel+" is not configured in this deployment; not sent")
	}
	if contact.Email == "" {
		return p.fail(ctx, n, "no email address for the patient")
	}
	sec := ch.Security()
	in.Channel = policy.Channel{Type: out.channel, TLSEnforced: sec.TLSEnforced, MessageEncrypted: sec.MessageEncrypted}
	in.Payload = d.Fields()
	in.Contact = policy.Contact{OptedOutChannels: contact.OptedOutChannels, HasConfidentialAddress: contact.ConfidentialEmail != "",
		Restrictions: contact.Restrictions, MarketingAuthorized: contact.MarketingAuthorized,
		Language: contact.Language, AlternateFormat: contact.AlternateFormat}
	start := time.Now()
	dec, err := p.Policy.Decide(ctx, in)
	latency := time.Since(start)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("notice %d: policy: %w", n.ID, ctx.Err()) // shutting down: retry later
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
		return fmt.Errorf("notice %d: record decision: %w", n.ID, err)
	}
	// The patient's own requests hold whatever the policy says: an opted-out
	// channel gets nothing.
	if dec.Allow && slices.Contains(contact.OptedOutChannels, out.channel) {
		dec = policy.Decision{Deny: []string{"the patient opted out of " + out.channel + " (enforced by the worker)"}}
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
		if err := d.Redact(dec.Redact...); err != nil {
			return p.fail(ctx, n, "the policy asked for a redaction the notice cannot make: "+err.Error())
		}
	}
	if dec.Has("generic_provider_label") {
		d.HideProvider() // a provider's name can reveal the care
	}
	portalOnly := dec.Has("portal_only")
	if portalOnly {
		// Nothing but the link: not even what kind of notice waits.
		d.PortalOnly()
	}
	msg, err := d.Render(out.template, contact.Language, portalOnly)
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
	msg.FromName, msg.From, msg.ReplyTo = out.sender.Name, out.sender.From, out.sender.ReplyTo
	payload, err := d.Payload()
	if err != nil {
		return err
	}
	if err := p.Store.SealNoticePayload(ctx, n.ID, payload); err != nil {
		return fmt.Errorf("notice %d: %w", n.ID, err)
	}

	dl, proceed, err := p.Store.BeginDelivery(ctx, n, out.channel)
	if errors.Is(err, store.ErrRunEnded) {
		return p.Store.FinishNotice(ctx, n, store.NoticeSkipped, []string{"the run ended (a cancellation, an appointment entered in error) before the notice was delivered"})
	}
	if errors.Is(err, store.ErrOutcomeUnknown) {
		return p.fail(ctx, n, "an earlier delivery attempt ended without a recorded outcome; not resent, to avoid a duplicate")
	}
	if err != nil {
		return fmt.Errorf("notice %d: begin delivery: %w", n.ID, err)
	}
	if !proceed {
		out.sent = true // an earlier attempt delivered it
		return p.Store.FinishNotice(ctx, n, store.NoticeSent, nil)
	}
	receipt, sendErr := ch.Send(ctx, msg)
	// Once the relay has answered, record it even if the task is being
	// cancelled: a lost "sent" would look like an unknown outcome.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if sendErr != nil {
		reason := "email delivery failed: " + sendErr.Error()
		if err := p.Store.FinishDelivery(wctx, dl, store.DeliveryFailed, false, "", reason); err != nil {
			return err
		}
		if errors.Is(sendErr, notify.ErrTemporary) {
			return fmt.Errorf("notice %d: %s", n.ID, reason)
		}
		return p.fail(wctx, n, reason)
	}
	if err := p.Store.FinishDelivery(wctx, dl, store.DeliverySent, receipt.TLS, receipt.MessageID, ""); err != nil {
		return err
	}
	out.sent = true
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
func (p *Processor) contact(ctx context.Context, tenantID, patientID, patientRef string, ev fhir.Event) (store.ContactDetails, error) {
	refs := patientRefs(patientID, patientRef)
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
	pc, fromBundle := ev.PatientContact(patientRef)
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
	if p.PlaceholderDomain != "" && patientID != "" {
		return store.ContactDetails{Email: placeholder(patientID, p.PlaceholderDomain), Language: pc.Language, Source: "fhir"}, nil
	}
	return store.ContactDetails{}, nil
}

// patientRefs are the keys a contact may be registered under: "Patient/<id>".
func patientRefs(patientID, patientRef string) []string {
	var refs []string
	if patientID != "" {
		refs = append(refs, "Patient/"+patientID)
	}
	if patientRef != "" && (len(refs) == 0 || patientRef != refs[0]) {
		refs = append(refs, patientRef)
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

// NoticeTypeAppointment is the notice an Appointment event leads to.
const NoticeTypeAppointment = notify.NoticeTypeAppointment

// processAppointment derives what happened to the appointment from this
// version and the previous one that took effect (booked, rescheduled,
// cancelled, ...), records it on the event, applies it to the appointment's runs (a
// cancellation ends the reminders, entered-in-error ends every run
// silently, a reschedule recomputes waits relative to the start, any change
// refreshes the facts branches read), then starts the workflows its kind
// triggers.
func (p *Processor) processAppointment(ctx context.Context, ev store.LoadedEvent) error {
	// One appointment's events are processed one at a time (in any replica):
	// the newest-version check, the lifecycle and the run starts below must
	// not interleave with another version's.
	var err error
	got, lerr := p.Store.WithTryLock(ctx, "subject:"+ev.TenantID+"/Appointment/"+ev.ResourceID, func() error {
		err = p.applyAppointment(ctx, ev)
		return nil
	})
	if lerr != nil {
		return fmt.Errorf("event %d: %w", ev.ID, lerr)
	}
	if !got {
		return fmt.Errorf("event %d: another version of the appointment is being processed; retrying", ev.ID)
	}
	return err
}

func (p *Processor) applyAppointment(ctx context.Context, ev store.LoadedEvent) error {
	// Events of one appointment can be processed out of order (retries,
	// concurrent tasks); only its newest version decides. Intake stores every
	// event before enqueuing any, so the newest is known here.
	if latest, err := p.Store.LatestEventID(ctx, ev.TenantID, ev.ResourceType, ev.ResourceID); err != nil {
		return fmt.Errorf("event %d: latest version: %w", ev.ID, err)
	} else if latest != ev.ID {
		if err := p.Store.MarkSuperseded(ctx, ev.ID); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		return p.closeEvent(ctx, ev, NoticeTypeAppointment, store.NoticeSkipped, "superseded by a newer version of the appointment")
	}
	cur, err := appointmentFacts(ev.Resource)
	if err != nil {
		return p.closeEvent(ctx, ev, NoticeTypeAppointment, store.NoticeFailed, "the Appointment could not be read: "+err.Error())
	}
	var prev *fhir.AppointmentFacts
	if pe, err := p.Store.PreviousAppliedEvent(ctx, ev.TenantID, ev.ResourceType, ev.ResourceID, ev.ID); err == nil {
		if pf, err := appointmentFacts(pe.Resource); err == nil {
			prev = &pf
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("event %d: previous version: %w", ev.ID, err)
	}
	kind := fhir.AppointmentEventKindOf(cur, prev)
	refs := patientRefs(cur.PatientID, cur.PatientRef)
	if len(refs) == 0 {
		return p.closeEvent(ctx, ev, NoticeTypeAppointment, store.NoticeFailed, "the Appointment names no patient")
	}
	subject := "Appointment/" + ev.ResourceID
	facts := workflow.Facts{"patient": refs[0], "status": cur.Status, "kind": string(kind)}
	if !cur.StartTime.IsZero() {
		facts["start"] = cur.StartTime.Format(time.RFC3339)
	}
	if t, err := time.Parse(time.RFC3339, cur.Start); err == nil {
		// Send windows fall back to the appointment's own offset when the
		// contact has no time zone.
		facts["utc_offset"] = t.Format("Z07:00")
	}
	if !cur.EndTime.IsZero() {
		facts["end"] = cur.EndTime.Format(time.RFC3339)
	}
	rs, now := p.Runs, p.Runs.now()
	switch kind {
	case fhir.KindCancelled:
		// The cancellation workflow's own run, if a retry finds it, stays.
		keep, err := rs.Store.ActiveWorkflows(ctx, ev.TenantID, "event:appointment.cancelled")
		if err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		ids := make([]string, len(keep))
		for i, w := range keep {
			ids[i] = w.ID
		}
		if _, err := rs.Store.EndSubjectRuns(ctx, ev.TenantID, subject, workflow.OutcomeCancelled, ids, now); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
	case fhir.KindEnteredInError:
		if _, err := rs.Store.EndSubjectRuns(ctx, ev.TenantID, subject, "entered-in-error", nil, now); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		if err := p.Store.SetEventKind(ctx, ev.ID, string(kind)); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		return p.closeEvent(ctx, ev, NoticeTypeAppointment, store.NoticeSkipped, "appointment entered in error: its runs ended without a notice")
	default:
		wakes, err := rs.Store.RefreshSubject(ctx, ev.TenantID, subject, ev.ID, facts, kind == fhir.KindRescheduled, now)
		if err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		rs.Wake(ctx, wakes)
	}
	nr := store.NewRun{TenantID: ev.TenantID, Subject: subject, PatientIndex: rs.Store.PatientIndex(refs[0]), EventID: &ev.ID, Facts: facts}
	// The kind is recorded once the version has taken effect on the runs
	// (a later version's kind is derived against it).
	if err := p.Store.SetEventKind(ctx, ev.ID, string(kind)); err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	triggers := []string{"event:appointment." + string(kind)}
	if kind == fhir.KindRescheduled {
		// A booking whose first version was superseded before it was
		// processed starts its reminders here (a run that exists, or has
		// ended, is not started again).
		triggers = append(triggers, "event:appointment.booked")
	}
	return p.startRuns(ctx, ev, NoticeTypeAppointment, nr, triggers...)
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

// channel finds a delivery channel by name.
func (p *Processor) channel(name string) (Channel, bool) {
	if name == "email" && p.Email != nil {
		return p.Email, true
	}
	ch, ok := p.Channels[name]
	return ch, ok
}
