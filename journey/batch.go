package journey

import (
	"context"
	"fmt"
	"time"

	"github.com/tidings-health/tidings/workflow"
)

// The hot path: a batch of new EOBs, each starting its workflow's run,
// whose first steps send a notice and then wait. Taken one event at a time
// that is a dozen transactions per notice; here a whole batch is read with
// a few queries, its runs are planned by the pure step machine, and a
// BatchStarter writes them with their notices in one transaction, sends,
// and records the outcomes in a second. What the machine decides that is
// not a send (a go-to, a segment), and anything unusual, takes the general
// path of one event at a time.

// Start is a new run planned in memory: its first steps already taken by
// the step machine, the sends they decided still to be carried out.
type Start struct {
	Run   NewRun
	State workflow.State
	// Sends are the send actions the first steps decided, in order.
	Sends []workflow.Action
	Event *Event
	From  workflow.Sender // the workflow's sender identity
	// Purpose is the workflow's (payment, treatment, operations); "":
	// its notices' types decide.
	Purpose string
	// Tracking: the workflow's mails carry an open pixel and click redirects.
	Tracking bool
	Now      time.Time
}

// Started is what became of a Start.
type Started struct {
	// Created is false when the workflow already had a run for the subject
	// (nobody re-enters a workflow): nothing was written or sent.
	Created bool
	// Delivered: a send's message was taken by the channel.
	Delivered bool
	// Err is set when the start must be tried again (nothing of it was
	// written) or its sends' bookkeeping failed.
	Err error
}

// BatchStarter writes planned runs with their notices and carries out
// their sends, a batch at a time; besides each start's outcome it returns
// the wake-ups for the queue (the runs' next ones, and any run their
// "delivered" woke). delivery.Service implements it.
type BatchStarter interface {
	Start(ctx context.Context, starts []Start) ([]Started, []Wake)
}

// BatchStore is what the batch path needs from storage beyond Store.
type BatchStore interface {
	// RefreshSubjects gives the waiting runs of each subject its newest
	// event and facts (as RefreshSubject without a change to react to).
	RefreshSubjects(ctx context.Context, refreshes []SubjectRefresh) error
	// ContactPreferencesOf are the zones and languages of patients, by
	// patient reference (zero for those without a contact): the contact
	// registered through the API, else the one the source's bundles gave.
	ContactPreferencesOf(ctx context.Context, tenantID, source string, patientRefs []string) (map[string]workflow.Contact, error)
}

// SubjectRefresh is one subject's newest event and facts.
type SubjectRefresh struct {
	TenantID string
	Source   string
	Subject  string
	EventID  int64
	Facts    workflow.Facts
}

// processEOBs processes a batch of EOB events, one subject each (the
// caller keeps one subject's versions in order). It returns each event's
// outcome, as processEvent would.
func (r *Engine) processEOBs(ctx context.Context, evs []*Event) []error {
	errs := make([]error, len(evs))
	starter, ok := r.Sender.(BatchStarter)
	bs, ok2 := r.Store.(BatchStore)
	if !ok || !ok2 || len(evs) < 2 {
		for i, ev := range evs {
			errs[i] = r.processEvent(ctx, ev)
		}
		return errs
	}
	now := r.now()
	type pending struct {
		i  int
		nr NewRun
	}
	var todo []pending
	var refreshes []SubjectRefresh
	for i, ev := range evs {
		facts, err := ev.EOBFacts()
		if err != nil {
			errs[i] = r.closeEvent(ctx, ev, OutcomeFailed, "the ExplanationOfBenefit could not be read: "+err.Error())
			continue
		}
		refs := PatientRefs(facts.PatientID, facts.PatientRef)
		if len(refs) == 0 {
			errs[i] = r.closeEvent(ctx, ev, OutcomeFailed, "the ExplanationOfBenefit names no patient")
			continue
		}
		nr := NewRun{TenantID: ev.TenantID, Source: ev.Source, Subject: "ExplanationOfBenefit/" + ev.ResourceID,
			PatientIndex: r.Store.PatientIndex(ev.TenantID, refs[0]), EventID: &ev.ID,
			Facts: workflow.Facts{"patient": refs[0], "use": facts.Use, "outcome": facts.Outcome}}
		todo = append(todo, pending{i, nr})
		refreshes = append(refreshes, refreshOf(nr))
	}
	if len(todo) == 0 {
		return errs
	}
	fail := func(err error) []error {
		for _, p := range todo {
			errs[p.i] = fmt.Errorf("event %d: %w", evs[p.i].ID, err)
		}
		return errs
	}
	// A new version of an EOB a run already follows: its reminder shows this one.
	if err := bs.RefreshSubjects(ctx, refreshes); err != nil {
		return fail(err)
	}
	const trigger = "event:eob.received"
	workflows := map[string][]Workflow{}
	prefs := map[string]map[string]workflow.Contact{}
	prefsKey := func(nr NewRun) string { return nr.TenantID + "\x00" + nr.Source }
	for _, p := range todo {
		tenant := p.nr.TenantID
		if _, ok := workflows[tenant]; !ok {
			wfs, err := r.Store.ActiveWorkflows(ctx, tenant, trigger)
			if err != nil {
				return fail(fmt.Errorf("active workflows: %w", err))
			}
			workflows[tenant] = wfs
		}
		key := prefsKey(p.nr)
		if _, ok := prefs[key]; ok {
			continue
		}
		var refs []string
		for _, q := range todo {
			if prefsKey(q.nr) == key {
				refs = append(refs, q.nr.Facts["patient"])
			}
		}
		var err error
		if prefs[key], err = bs.ContactPreferencesOf(ctx, tenant, p.nr.Source, refs); err != nil {
			return fail(fmt.Errorf("contacts: %w", err))
		}
	}
	var starts []Start
	var startOf []int // the event each start is for
	for _, p := range todo {
		ev := evs[p.i]
		wfs := workflows[p.nr.TenantID]
		if len(wfs) == 0 {
			errs[p.i] = r.closeEvent(ctx, ev, OutcomeSkipped, "no active workflow for "+trigger)
			continue
		}
		for _, wf := range wfs {
			nr := p.nr
			nr.WorkflowID, nr.WorkflowVersion, nr.Priority = wf.ID, wf.Version, wf.Priority
			run := Run{TenantID: nr.TenantID, WorkflowID: nr.WorkflowID, WorkflowVersion: nr.WorkflowVersion, Facts: nr.Facts}
			def, err := r.definition(ctx, run)
			if err != nil {
				errs[p.i] = fmt.Errorf("event %d: definition: %w", ev.ID, err)
				break
			}
			st, actions, _ := feedMachine(def, run, prefs[prefsKey(nr)][nr.Facts["patient"]], nil, now)
			if !onlySends(actions) {
				// A go-to, a segment, or a send the batch does not make (an
				// SMS, a portal step, a fallback): the general path carries it out.
				if _, err := r.startOne(ctx, wf.ID, wf.Version, wf.Priority, p.nr, ev); err != nil {
					errs[p.i] = fmt.Errorf("event %d: %w", ev.ID, err)
				}
				continue
			}
			starts = append(starts, Start{Run: nr, State: st, Sends: actions, Event: ev, From: def.Sender, Purpose: def.Purpose, Tracking: def.Tracking, Now: now})
			startOf = append(startOf, p.i)
		}
	}
	if len(starts) == 0 {
		return errs
	}
	started, wakes := starter.Start(ctx, starts)
	var again []SubjectRefresh
	var againOf []int
	for k, s := range started {
		i := startOf[k]
		if s.Err != nil && errs[i] == nil {
			errs[i] = fmt.Errorf("event %d: %w", evs[i].ID, s.Err)
		}
		// One refresh per event, however many of its workflows' starts
		// (which come together) found their run.
		if s.Err == nil && !s.Created && (len(againOf) == 0 || againOf[len(againOf)-1] != i) {
			again, againOf = append(again, refreshOf(starts[k].Run)), append(againOf, i)
		}
	}
	// A run that did not exist at the refresh above may have been created
	// since by another batch (or replica) holding an older version of the
	// subject: refresh again, so that its facts are this version's (the
	// refresh never goes back to an older event).
	if len(again) > 0 {
		if err := bs.RefreshSubjects(ctx, again); err != nil {
			for _, i := range againOf {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("event %d: refresh runs: %w", evs[i].ID, err)
				}
			}
		}
	}
	r.Wake(ctx, wakes)
	return errs
}

// refreshOf is the refresh of the runs of nr's subject to nr's event and
// facts.
func refreshOf(nr NewRun) SubjectRefresh {
	return SubjectRefresh{TenantID: nr.TenantID, Source: nr.Source, Subject: nr.Subject, EventID: *nr.EventID, Facts: nr.Facts}
}

// onlySends reports whether actions are all sends the batch path makes:
// plain email, without a fallback. SMS (its quiet hours), portal steps and
// fallbacks are carried out one at a time by the Sender.
func onlySends(actions []workflow.Action) bool {
	for _, a := range actions {
		if a.Type != workflow.ActionSend || (a.Channel != "" && a.Channel != workflow.ChannelEmail) || a.Fallback != nil {
			return false
		}
	}
	return true
}
