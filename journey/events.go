package journey

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// ProcessEvent turns a stored event into workflow runs: it starts the runs
// of every active workflow the event's trigger starts (eob.received,
// appointment.booked, ...), and for an appointment applies the lifecycle to
// the runs it already has (a cancellation ends its reminders, a reschedule
// moves them). An event no workflow wants gets a skipped notice saying so.
// It is idempotent: runs are unique per (workflow, subject). The event is
// read and decoded once; the new runs' first sends use it.
func (r *Engine) ProcessEvent(ctx context.Context, tenantID string, eventID int64) error {
	ev, err := r.Store.LoadEvent(ctx, eventID)
	if err != nil {
		if errors.Is(err, fault.NotFound) {
			return permanent(fmt.Errorf("event %d: %w", eventID, err))
		}
		return fmt.Errorf("load event %d: %w", eventID, err)
	}
	if ev.TenantID != tenantID {
		return permanent(fmt.Errorf("event %d: task tenant does not match", eventID))
	}
	return r.processEvent(ctx, ev)
}

// ProcessEvents processes a batch of claimed events and returns each one's
// outcome, in order: nil, an error wrapping ErrPermanent (final), or an
// error to retry. Events about one subject are processed one after
// another, in the order they were stored; different subjects at once, up to
// Parallel.
func (r *Engine) ProcessEvents(ctx context.Context, events []*Event) []error {
	errs := make([]error, len(events))
	var order []string
	bySubject := map[string][]int{}
	for i, ev := range events {
		key := ev.TenantID + "\x00" + ev.Source + "\x00" + ev.ResourceType + "/" + ev.ResourceID
		if _, ok := bySubject[key]; !ok {
			order = append(order, key)
		}
		bySubject[key] = append(bySubject[key], i)
	}
	// New EOBs, one version each, go together (the batch path); the rest
	// one at a time, each subject's versions in order.
	var eobs []int
	var rest [][]int
	for _, key := range order {
		idx := bySubject[key]
		if len(idx) == 1 && events[idx[0]].ResourceType == "ExplanationOfBenefit" {
			eobs = append(eobs, idx[0])
			continue
		}
		rest = append(rest, idx)
	}
	sem := make(chan struct{}, max(r.Parallel, 1))
	var wg sync.WaitGroup
	for _, idx := range rest {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, i := range idx {
				errs[i] = r.processEvent(ctx, events[i])
			}
		}()
	}
	if len(eobs) > 0 {
		batch := make([]*Event, len(eobs))
		for k, i := range eobs {
			batch[k] = events[i]
		}
		for k, err := range r.processEOBs(ctx, batch) {
			errs[eobs[k]] = err
		}
	}
	wg.Wait()
	return errs
}

func (r *Engine) processEvent(ctx context.Context, ev *Event) error {
	switch ev.ResourceType {
	case "Appointment":
		return r.processAppointment(ctx, ev)
	case "ExplanationOfBenefit":
		return r.processEOB(ctx, ev)
	}
	return permanent(fmt.Errorf("event %d: no notice for resource type %s", ev.ID, ev.ResourceType))
}

// GiveUpEvent records, on the event's notice, that processing it ran out
// of retries, rather than leave it pending for ever. cause holds no PHI.
func (r *Engine) GiveUpEvent(ctx context.Context, tenantID string, eventID int64, cause error) error {
	ev, err := r.Store.LoadEvent(ctx, eventID)
	if err != nil {
		return err
	}
	return r.Store.CloseEvent(ctx, ev, noticeTypeOfEvent(ev), OutcomeFailed, "gave up after the last retry: "+cause.Error())
}

func noticeTypeOfEvent(ev *Event) string {
	if ev.ResourceType == "Appointment" {
		return notify.NoticeTypeAppointment
	}
	return notify.NoticeTypeEOB
}

func (r *Engine) processEOB(ctx context.Context, ev *Event) error {
	facts, err := ev.EOBFacts()
	if err != nil {
		return r.closeEvent(ctx, ev, OutcomeFailed, "the ExplanationOfBenefit could not be read: "+err.Error())
	}
	refs := PatientRefs(facts.PatientID, facts.PatientRef)
	if len(refs) == 0 {
		return r.closeEvent(ctx, ev, OutcomeFailed, "the ExplanationOfBenefit names no patient")
	}
	nr := NewRun{TenantID: ev.TenantID, Source: ev.Source, Subject: "ExplanationOfBenefit/" + ev.ResourceID,
		PatientIndex: r.Store.PatientIndex(ev.TenantID, refs[0]), EventID: &ev.ID,
		Facts: workflow.Facts{"patient": refs[0], "use": facts.Use, "outcome": facts.Outcome}}
	// A new version of an EOB a run already follows: its reminder shows this one.
	if _, err := r.Store.RefreshSubject(ctx, ev.TenantID, ev.Source, nr.Subject, ev.ID, nr.Facts, false, r.now()); err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	return r.startRuns(ctx, ev, nr, "event:eob.received")
}

// startRuns starts the workflows of the triggers; when none is active, the
// event is closed with a skipped notice that says so.
func (r *Engine) startRuns(ctx context.Context, ev *Event, nr NewRun, triggers ...string) error {
	total := 0
	for _, trigger := range triggers {
		n, err := r.start(ctx, ev.TenantID, trigger, nr, ev)
		if err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		total += n
	}
	if total == 0 {
		return r.closeEvent(ctx, ev, OutcomeSkipped, "no active workflow for "+strings.Join(triggers, " or "))
	}
	return nil
}

// closeEvent records an event that leads to no run with a notice of the
// outcome, so every event is accounted for. A failure is final: retrying
// reads the same event.
func (r *Engine) closeEvent(ctx context.Context, ev *Event, outcome Outcome, reason string) error {
	if err := r.Store.CloseEvent(ctx, ev, noticeTypeOfEvent(ev), outcome, reason); err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	if outcome == OutcomeFailed {
		return permanent(fmt.Errorf("event %d failed", ev.ID))
	}
	return nil
}

// processAppointment derives what happened to the appointment from this
// version and the previous one that took effect (booked, rescheduled,
// cancelled, ...), records it on the event, applies it to the appointment's
// runs (a cancellation ends the reminders, entered-in-error ends every run
// silently, a reschedule recomputes waits relative to the start, any change
// refreshes the facts branches read), then starts the workflows its kind
// triggers.
func (r *Engine) processAppointment(ctx context.Context, ev *Event) error {
	// One appointment's events are processed one at a time (in any replica):
	// the newest-version check, the lifecycle and the run starts below must
	// not interleave with another version's.
	var err error
	got, lerr := r.Store.WithSubjectLock(ctx, ev.TenantID, ev.Source, "Appointment/"+ev.ResourceID, func() error {
		err = r.applyAppointment(ctx, ev)
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

func (r *Engine) applyAppointment(ctx context.Context, ev *Event) error {
	// Events of one appointment can be processed out of order (retries,
	// concurrent tasks); only its newest version decides. Intake stores every
	// event before enqueuing any, so the newest is known here. An
	// appointment is its source's: another source's Appointment with the
	// same id is another appointment, and never touches these runs.
	if latest, err := r.Store.LatestEventID(ctx, ev.TenantID, ev.Source, ev.ResourceType, ev.ResourceID); err != nil {
		return fmt.Errorf("event %d: latest version: %w", ev.ID, err)
	} else if latest != ev.ID {
		if err := r.Store.MarkSuperseded(ctx, ev.ID); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		return r.closeEvent(ctx, ev, OutcomeSkipped, "superseded by a newer version of the appointment")
	}
	cur, err := ev.AppointmentFacts()
	if err != nil {
		return r.closeEvent(ctx, ev, OutcomeFailed, "the Appointment could not be read: "+err.Error())
	}
	var prev *fhir.AppointmentFacts
	if pe, err := r.Store.PreviousAppliedEvent(ctx, ev.TenantID, ev.Source, ev.ResourceType, ev.ResourceID, ev.ID); err == nil {
		if pf, err := pe.AppointmentFacts(); err == nil {
			prev = &pf
		}
	} else if !errors.Is(err, fault.NotFound) {
		return fmt.Errorf("event %d: previous version: %w", ev.ID, err)
	}
	kind := fhir.AppointmentEventKindOf(cur, prev)
	refs := PatientRefs(cur.PatientID, cur.PatientRef)
	if len(refs) == 0 {
		return r.closeEvent(ctx, ev, OutcomeFailed, "the Appointment names no patient")
	}
	subject := "Appointment/" + ev.ResourceID
	facts := appointmentRunFacts(refs[0], cur, kind)
	now := r.now()
	switch kind {
	case fhir.KindCancelled:
		// The cancellation workflow's own run, if a retry finds it, stays.
		keep, err := r.Store.ActiveWorkflows(ctx, ev.TenantID, "event:appointment.cancelled")
		if err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		ids := make([]string, len(keep))
		for i, w := range keep {
			ids[i] = w.ID
		}
		if _, err := r.Store.EndSubjectRuns(ctx, ev.TenantID, ev.Source, subject, workflow.OutcomeCancelled, ids, now); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
	case fhir.KindEnteredInError:
		if _, err := r.Store.EndSubjectRuns(ctx, ev.TenantID, ev.Source, subject, "entered-in-error", nil, now); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		if err := r.Store.SetEventKind(ctx, ev.ID, string(kind)); err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		return r.closeEvent(ctx, ev, OutcomeSkipped, "appointment entered in error: its runs ended without a notice")
	default:
		wakes, err := r.Store.RefreshSubject(ctx, ev.TenantID, ev.Source, subject, ev.ID, facts, kind == fhir.KindRescheduled, now)
		if err != nil {
			return fmt.Errorf("event %d: %w", ev.ID, err)
		}
		r.Wake(ctx, wakes)
	}
	nr := NewRun{TenantID: ev.TenantID, Source: ev.Source, Subject: subject, PatientIndex: r.Store.PatientIndex(ev.TenantID, refs[0]), EventID: &ev.ID, Facts: facts}
	// The kind is recorded once the version has taken effect on the runs
	// (a later version's kind is derived against it).
	if err := r.Store.SetEventKind(ctx, ev.ID, string(kind)); err != nil {
		return fmt.Errorf("event %d: %w", ev.ID, err)
	}
	triggers := []string{"event:appointment." + string(kind)}
	if kind == fhir.KindRescheduled {
		// A booking whose first version was superseded before it was
		// processed starts its reminders here (a run that exists, or has
		// ended, is not started again).
		triggers = append(triggers, "event:appointment.booked")
	}
	return r.startRuns(ctx, ev, nr, triggers...)
}

// appointmentRunFacts are the facts an appointment's runs wait and branch
// on: never more than the patient reference (sealed with the run), status,
// kind and times.
func appointmentRunFacts(patientRef string, cur fhir.AppointmentFacts, kind fhir.AppointmentEventKind) workflow.Facts {
	facts := workflow.Facts{"patient": patientRef, "status": cur.Status, "kind": string(kind)}
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
	return facts
}

// PatientRefs are the keys a patient's contact may be registered under:
// "Patient/<id>", then the reference as the resource wrote it.
func PatientRefs(patientID, patientRef string) []string {
	var refs []string
	if patientID != "" {
		refs = append(refs, "Patient/"+patientID)
	}
	if patientRef != "" && (len(refs) == 0 || patientRef != refs[0]) {
		refs = append(refs, patientRef)
	}
	return refs
}
