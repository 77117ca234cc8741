package journey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/workflow"
)

// Queue hands run wake-ups to the task queue. Enqueuing the same wake-up
// twice while it is queued is a no-op that reports queued=false.
type Queue interface {
	EnqueueRun(ctx context.Context, w Wake, delay time.Duration) (queued bool, err error)
}

// MaxAttempts is how often a run's pending actions are tried; the last
// attempt fails a send's notice instead of retrying it.
const MaxAttempts = 12

// RetryDelay is how long a run waits before its pending actions are tried
// again after attempts failures: 5 s, doubling, to at most 30 minutes.
func RetryDelay(attempts int) time.Duration {
	return min(5*time.Second<<min(attempts, 10), 30*time.Minute)
}

// DefaultHorizon is how far ahead wake-ups go into Redis; later ones wait
// in Postgres until the scheduler promotes them.
const DefaultHorizon = time.Hour

// Engine drives workflow runs: it turns stored events into runs (and
// applies an appointment's lifecycle to the runs it has), advances runs
// with the step machine when they wake, executes what the machine asks,
// and records engagement and API events and segment membership.
type Engine struct {
	Store Store
	Queue Queue
	Clock Clock
	Log   *slog.Logger
	// Parallel is how many events of a batch are processed at once (1),
	// besides the new EOBs, which go together.
	Parallel int
	// Sender carries out send actions. When set (in the worker), a new run's
	// first steps are taken in the task that started it; unset (the API),
	// new runs are queued.
	Sender Sender
	// Horizon: wake-ups due within it are enqueued at once (delayed);
	// later ones are left to the scheduler. 0 means DefaultHorizon; a
	// negative value enqueues only what is already due (tests with a
	// moved clock).
	Horizon time.Duration

	defs sync.Map // "tenant/workflow/version" → workflow.Definition (versions never change)
}

// EndRun ends a waiting run with an outcome if it is still at seq (a run
// whose own processing keeps failing ends with "error").
func (r *Engine) EndRun(ctx context.Context, tenantID string, runID, seq int64, outcome string) error {
	return r.Store.EndRun(ctx, tenantID, runID, seq, outcome, r.now())
}

// Now is the engine's clock.
func (r *Engine) Now() time.Time { return r.now() }

func (r *Engine) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// WakeHorizon is how far ahead wake-ups go into the queue; later ones
// wait in Postgres for the scheduler.
func (r *Engine) WakeHorizon() time.Duration { return r.horizon() }

func (r *Engine) horizon() time.Duration {
	if r.Horizon == 0 {
		return DefaultHorizon
	}
	return max(r.Horizon, 0)
}

// Start starts a run of every active workflow the trigger starts, for the
// subject. It reports how many workflows the trigger matched (a run that
// already existed counts: nobody re-enters a workflow).
func (r *Engine) Start(ctx context.Context, tenantID, triggerKey string, nr NewRun) (int, error) {
	return r.start(ctx, tenantID, triggerKey, nr, nil)
}

// start is Start for an event the task has already opened (nil: none),
// which the new runs' first sends use.
func (r *Engine) start(ctx context.Context, tenantID, triggerKey string, nr NewRun, opened *Event) (int, error) {
	wfs, err := r.Store.ActiveWorkflows(ctx, tenantID, triggerKey)
	if err != nil {
		return 0, fmt.Errorf("active workflows: %w", err)
	}
	for _, wf := range wfs {
		if _, err := r.startOne(ctx, wf.ID, wf.Version, wf.Priority, nr, opened); err != nil {
			return 0, err
		}
	}
	return len(wfs), nil
}

func (r *Engine) startOne(ctx context.Context, workflowID string, version int, priority string, nr NewRun, opened *Event) (bool, error) {
	nr.WorkflowID, nr.WorkflowVersion, nr.Priority = workflowID, version, priority
	w, created, err := r.Store.StartRun(ctx, nr, r.now())
	if err != nil {
		return false, fmt.Errorf("start run of %s: %w", workflowID, err)
	}
	if !created {
		return false, nil
	}
	if r.Sender != nil {
		// The worker takes the run's first steps in the task that started
		// it (usually a send): no second task, and no wait for one.
		if err := r.advance(ctx, w.TenantID, w.ID, w.WakeSeq, opened); err == nil {
			return true, nil
		}
	}
	// If this enqueue fails the scheduler promotes the run: it is due.
	r.enqueue(ctx, w)
	return true, nil
}

// Wake hands wake-ups to the queue now (those due within the horizon).
func (r *Engine) Wake(ctx context.Context, wakes []Wake) {
	for _, w := range wakes {
		r.enqueue(ctx, w)
	}
}

// enqueue hands one wake-up to the queue if it is due within the horizon
// and records that it did; a failure is left to the scheduler, which
// promotes every due wake-up that is not marked.
func (r *Engine) enqueue(ctx context.Context, w Wake) {
	delay := w.DueAt.Sub(r.now())
	if delay > r.horizon() {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := r.Queue.EnqueueRun(qctx, w, delay); err != nil {
		return
	}
	_ = r.Store.MarkPromoted(ctx, []Wake{w})
}

// definition is the workflow version a run follows; versions never
// change, so they are cached.
func (r *Engine) definition(ctx context.Context, run Run) (workflow.Definition, error) {
	key := run.TenantID + "/" + run.WorkflowID + "/" + strconv.Itoa(run.WorkflowVersion)
	if d, ok := r.defs.Load(key); ok {
		return d.(workflow.Definition), nil
	}
	d, err := r.Store.WorkflowVersion(ctx, run.TenantID, run.WorkflowID, run.WorkflowVersion)
	if err != nil {
		return d, err
	}
	r.defs.Store(key, d)
	return d, nil
}

// Send is one send action of a run to carry out.
type Send struct {
	Run    Run
	Action workflow.Action
	// Event is the run's EOB or appointment event, opened (nil when the run
	// has none: an API-event or segment workflow).
	Event *Event
	// From is the workflow's sender identity (name, from, reply-to).
	From workflow.Sender
	// Purpose is the workflow's (payment, treatment, operations); "":
	// the notice type's.
	Purpose string
	// Tracking: the workflow's mails carry an open pixel and click redirects.
	Tracking bool
	// LastTry: the notice fails instead of asking to be retried.
	LastTry bool
	// Resend: an operator asked to send again a notice whose delivery's
	// outcome is unknown (see Engine.Resend).
	Resend bool
	// Workflow is the run's definition (its SMS window, its zone); zero
	// when it could not be read.
	Workflow workflow.Definition
	// Now is the engine's time for this send.
	Now time.Time
}

// Sender carries out send actions: it builds, decides on and delivers the
// notice of (run, step). It reports delivered once the channel took the
// message (now or in an earlier attempt), returns nil once the notice has
// an outcome (sent, denied, failed: the run goes on either way), and an
// error only when the attempt should be retried; on the last try it fails
// the notice instead.
type Sender interface {
	Send(ctx context.Context, s Send) (delivered bool, err error)
}

// Advance processes one wake-up of a run. It feeds the step machine what
// happened (the start, engagement events that arrived, a changed subject,
// the timer), saves the new state together with the actions the machine
// decided, and only then carries them out and marks them done: a
// cancellation that commits first wins, and a worker that dies mid-way
// leaves the actions saved for the next wake-up. Every action is idempotent
// (a send is unique per (run, step)). A stale wake-up (the run moved on)
// does nothing.
func (r *Engine) Advance(ctx context.Context, tenantID string, runID, seq int64) error {
	return r.advance(ctx, tenantID, runID, seq, nil)
}

func (r *Engine) advance(ctx context.Context, tenantID string, runID, seq int64, opened *Event) error {
	run, err := r.Store.LoadRun(ctx, runID)
	if errors.Is(err, fault.NotFound) {
		return permanent(fmt.Errorf("run %d: %w", runID, err))
	}
	if err != nil {
		return fmt.Errorf("load run %d: %w", runID, err)
	}
	if run.TenantID != tenantID {
		return permanent(fmt.Errorf("run %d: task tenant does not match", runID))
	}
	if run.Status == workflow.StatusEnded || seq != run.WakeSeq {
		return nil
	}
	t := &task{engine: r, opened: opened}
	// Three rounds at most: finish saved actions, step the machine, carry
	// out what it decided. The run's next wake-up is enqueued once, at the end.
	var next *Wake
	defer func() {
		if next != nil && !next.DueAt.IsZero() {
			r.enqueue(ctx, *next)
		}
	}()
	for round := 0; round < 3; round++ {
		if len(run.Pending) > 0 {
			// The attempt count lives in Postgres (an Asynq retry would carry
			// a stale seq); on the last attempt a send fails its notice and
			// any other action is given up, so the run moves on.
			last := run.Attempts >= MaxAttempts-1
			for _, a := range run.Pending {
				err := t.execute(ctx, run, a, last)
				if err != nil && last {
					if r.Log != nil {
						r.Log.Warn("run action given up after the last attempt", "run_id", runID, "step", a.Step, "err", err)
					}
					err = nil
				}
				if err != nil {
					// Retried with backoff as a new wake-up; recorded even if
					// this task is being cancelled (a timeout counts too).
					wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					retry := r.now().Add(RetryDelay(run.Attempts))
					var later *Deferred
					if errors.As(err, &later) {
						retry = later.Until // not before then (an SMS in quiet hours)
					}
					w, derr := r.Store.DeferPending(wctx, run, retry)
					cancel()
					if derr != nil && !errors.Is(derr, ErrStale) {
						return fmt.Errorf("run %d step %s: %w (and: %w)", runID, a.Step, err, derr)
					}
					if derr == nil {
						next = &w
					}
					if r.Log != nil {
						r.Log.Warn("run action failed; retrying later", "run_id", runID, "step", a.Step, "attempt", run.Attempts+1, "err", err)
					}
					return nil
				}
			}
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			w, err := r.Store.ClearPending(wctx, run, r.now())
			cancel()
			if errors.Is(err, ErrStale) {
				return nil // ended (cancelled) meanwhile; what was decided is done
			}
			if err != nil {
				return fmt.Errorf("run %d: %w", runID, err)
			}
			next = &w
			if run.State.Status == workflow.StatusEnded {
				return nil
			}
			// Look again if events arrived while the actions ran.
			if run, err = r.Store.LoadRun(ctx, runID); err != nil {
				return fmt.Errorf("reload run %d: %w", runID, err)
			}
			if run.Status == workflow.StatusEnded || run.WakeSeq != w.WakeSeq {
				next = nil // someone else moved it; their wake-up takes over
				return nil
			}
			if !run.FactsChanged && run.DueAt != nil && run.DueAt.After(r.now()) {
				// Only an event the run waits for needs it now; others
				// (the "delivered" of its own send) are fed at its next wake-up.
				events, err := r.Store.EngagementsSince(ctx, run, run.CreatedAt)
				if err != nil || !slices.ContainsFunc(events, func(e Engagement) bool { return slices.Contains(run.State.WaitingFor, e.Type) }) {
					return err
				}
			}
			continue
		}
		w, saved, err := r.step(ctx, run)
		if errors.Is(err, ErrStale) {
			next = nil // moved by an event or a cancellation; its wake-up takes over
			return nil
		}
		if err != nil {
			return fmt.Errorf("run %d: %w", runID, err)
		}
		next = &w
		if w.DueAt.IsZero() || len(saved.Pending) == 0 {
			return nil
		}
		run = saved
	}
	// Work remains (actions decided in the last round, or events that came
	// meanwhile): wake the run again at once rather than at its due time.
	if next != nil && !next.DueAt.IsZero() {
		next.DueAt = r.now()
	}
	return nil
}

// step feeds the machine and saves its state with the actions it decided.
// On success it returns the run as saved.
func (r *Engine) step(ctx context.Context, run Run) (Wake, Run, error) {
	now := r.now()
	def, err := r.definition(ctx, run)
	if err != nil {
		return Wake{}, run, fmt.Errorf("definition: %w", err)
	}
	wc, err := r.Store.ContactPreferences(ctx, run.TenantID, run.Source, run.Facts["patient"])
	if err != nil {
		return Wake{}, run, fmt.Errorf("contact: %w", err)
	}
	events, err := r.Store.EngagementsSince(ctx, run, run.CreatedAt)
	if err != nil {
		return Wake{}, run, fmt.Errorf("engagements: %w", err)
	}
	st, actions, cursor := feedMachine(def, run, wc, events, now)
	w, err := r.Store.SaveRun(ctx, run, st, actions, cursor, now)
	if err != nil {
		return w, run, err
	}
	run.State, run.Pending, run.WakeSeq, run.EngagementCursor, run.FactsChanged = st, actions, w.WakeSeq, cursor, false
	run.Step, run.Attempts = st.Step, 0
	if len(actions) == 0 && st.Status == workflow.StatusEnded {
		run.Status = workflow.StatusEnded
	}
	return w, run, nil
}

// feedMachine gives the step machine what happened to a run since it was
// saved: its start (a new run), the engagement events that arrived, a
// change of its subject, and the timer; it returns the state, the actions
// decided, and the engagement cursor after them. A state that does not fit
// its definition ends the run visibly ("error"), after what was decided
// before the error.
func feedMachine(def workflow.Definition, run Run, contact workflow.Contact, events []Engagement, now time.Time) (workflow.State, []workflow.Action, int64) {
	st := run.State
	var actions []workflow.Action
	feed := func(in workflow.Input) error {
		in.Now, in.Facts, in.Contact = now, run.Facts, contact
		next, acts, err := workflow.Advance(def, st, in)
		if err != nil {
			return err
		}
		st = next
		actions = append(actions, acts...)
		return nil
	}
	var errs []error
	if st.Status == "" {
		errs = append(errs, feed(workflow.Input{Kind: workflow.InputStart}))
	}
	cursor := run.EngagementCursor
	for _, e := range events {
		errs = append(errs, feed(workflow.Input{Kind: workflow.InputEvent, Event: e.Type}))
		cursor = e.ID
	}
	if run.FactsChanged {
		errs = append(errs, feed(workflow.Input{Kind: workflow.InputFactsChanged}))
	}
	errs = append(errs, feed(workflow.Input{Kind: workflow.InputWake}))
	if err := errors.Join(errs...); err != nil {
		st.Status, st.Outcome, st.WaitUntil, st.WaitingFor = workflow.StatusEnded, "error", time.Time{}, nil
	}
	return st, actions, cursor
}

// task is one wake-up being processed: the event it has opened is read
// from the database and decoded at most once.
type task struct {
	engine *Engine
	opened *Event
}

// event is the run's event, opened once per task.
func (t *task) event(ctx context.Context, run Run) (*Event, error) {
	if run.EventID == nil {
		return nil, nil
	}
	if t.opened != nil && t.opened.ID == *run.EventID {
		return t.opened, nil
	}
	ev, err := t.engine.Store.LoadEvent(ctx, *run.EventID)
	if err != nil {
		return nil, fmt.Errorf("load event %d: %w", *run.EventID, err)
	}
	t.opened = ev
	return ev, nil
}

func (t *task) execute(ctx context.Context, run Run, a workflow.Action, lastTry bool) error {
	r := t.engine
	switch a.Type {
	case workflow.ActionSend:
		return t.send(ctx, run, a, lastTry)
	case workflow.ActionStartWorkflow:
		wfs, err := r.startTargets(ctx, run.TenantID, a.Workflow)
		if err != nil || len(wfs) == 0 {
			return err // a paused or deleted target starts nothing
		}
		if run.EventID == nil && strings.HasPrefix(wfs[0].Trigger, "event:") {
			// Its sends need the EOB or appointment this run does not have.
			if r.Log != nil {
				r.Log.Warn("go-to not followed: the target workflow needs an EOB or appointment", "run_id", run.ID, "step", a.Step, "workflow", a.Workflow)
			}
			return nil
		}
		nr := NewRun{TenantID: run.TenantID, Source: run.Source, Subject: run.Subject, PatientIndex: run.PatientIndex, EventID: run.EventID, Facts: run.Facts}
		_, err = r.startOne(ctx, wfs[0].ID, wfs[0].Version, wfs[0].Priority, nr, t.opened)
		return err
	case workflow.ActionAddToSegment:
		// Segment members are kept by patient reference, which every run
		// carries in its (sealed) facts.
		ref, ok := run.Facts["patient"]
		if !ok {
			return nil
		}
		_, _, err := r.JoinSegment(ctx, run.TenantID, a.Segment, ref)
		return err
	}
	return nil
}

// send carries out a send action through the Sender and, once the channel
// took the message, records a "delivered" engagement for the run's subject
// so a workflow can wait for it.
func (t *task) send(ctx context.Context, run Run, a workflow.Action, lastTry bool) error {
	r := t.engine
	if r.Sender == nil {
		return errors.New("no sender in this process")
	}
	ev, err := t.event(ctx, run)
	if err != nil {
		return err
	}
	s := Send{Run: run, Action: a, Event: ev, LastTry: lastTry, Now: r.now()}
	if def, err := r.definition(ctx, run); err == nil {
		s.From, s.Purpose, s.Workflow, s.Tracking = def.Sender, def.Purpose, def, def.Tracking
	}
	_, err = r.deliver(ctx, s)
	return err
}

// deliver hands a send to the Sender and, once the channel took the
// message, records a "delivered" engagement for the run's subject.
func (r *Engine) deliver(ctx context.Context, s Send) (bool, error) {
	delivered, err := r.Sender.Send(ctx, s)
	if err != nil || !delivered {
		return false, err
	}
	wakes, err := r.Store.RecordDelivered(ctx, s.Run.TenantID, s.Run.Facts["patient"], s.Run.Subject, r.now())
	if err != nil {
		return true, fmt.Errorf("record delivered: %w", err)
	}
	r.Wake(ctx, wakes)
	return true, nil
}

// Resend carries out a run's send step once more, for an operator who
// asked that a delivery whose outcome is unknown be sent again: the notice
// is built, decided on by the policy (as it stands now) and delivered
// through the Sender as a first attempt is, and a "delivered" engagement
// is recorded. The run itself does not move. It reports whether the
// channel took the message; false with no error means the Sender recorded
// another outcome (denied, failed, unknown again, or the notice was no
// longer pending).
func (r *Engine) Resend(ctx context.Context, runID int64, step string) (bool, error) {
	if r.Sender == nil {
		return false, errors.New("no sender in this process")
	}
	run, err := r.Store.LoadRun(ctx, runID)
	if err != nil {
		return false, fmt.Errorf("load run %d: %w", runID, err)
	}
	def, err := r.definition(ctx, run)
	if err != nil {
		return false, fmt.Errorf("run %d: workflow %s version %d: %w", runID, run.WorkflowID, run.WorkflowVersion, err)
	}
	i := slices.IndexFunc(def.Steps, func(s workflow.Step) bool { return s.ID == step && s.Type == workflow.StepSend })
	if i < 0 {
		return false, fmt.Errorf("run %d: workflow %s has no send step %q", runID, run.WorkflowID, step)
	}
	st := def.Steps[i]
	ev, err := (&task{engine: r}).event(ctx, run)
	if err != nil {
		return false, err
	}
	return r.deliver(ctx, Send{Run: run, Event: ev, From: def.Sender, Purpose: def.Purpose, Tracking: def.Tracking, Resend: true, Workflow: def, Now: r.now(),
		Action: workflow.Action{Type: workflow.ActionSend, Step: step, Channel: st.Channel, Template: st.Template, Fallback: st.Fallback}})
}

// startTargets finds the active workflow a go-to names; a paused or
// missing one starts nothing.
func (r *Engine) startTargets(ctx context.Context, tenantID, id string) ([]Workflow, error) {
	wf, err := r.Store.Workflow(ctx, tenantID, id)
	if errors.Is(err, fault.NotFound) || (err == nil && wf.Status != WorkflowActive) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []Workflow{wf}, nil
}

// RecordEvent records an engagement or API event for a patient (delivered,
// opened, clicked, portal.viewed, unsubscribed, portal.login, ...), wakes the
// patient's waiting runs so a wait for it ends, and starts the workflows the
// event type triggers (one run per workflow and patient). data may be PHI:
// it is stored sealed and never read back into a run.
func (r *Engine) RecordEvent(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte) (id int64, started int, err error) {
	id, wakes, err := r.Store.RecordEngagement(ctx, tenantID, patientRef, subject, eventType, data, r.now())
	if err != nil {
		return 0, 0, err
	}
	r.Wake(ctx, wakes)
	started, err = r.Start(ctx, tenantID, "api:"+eventType, r.patientRun(tenantID, patientRef))
	return id, started, err
}

// JoinSegment adds a patient to a segment and starts the workflows that
// joining it triggers.
func (r *Engine) JoinSegment(ctx context.Context, tenantID, segment, patientRef string) (joined bool, started int, err error) {
	joined, err = r.Store.AddSegmentMember(ctx, tenantID, segment, patientRef)
	if err != nil || !joined {
		return joined, 0, err
	}
	started, err = r.Start(ctx, tenantID, "segment:"+segment, r.patientRun(tenantID, patientRef))
	return joined, started, err
}

// Enroll starts a workflow for every member of a segment, by hand. Members
// that already have a run of it are not enrolled again.
func (r *Engine) Enroll(ctx context.Context, tenantID, workflowID, segment string) (int, error) {
	wf, err := r.Store.Workflow(ctx, tenantID, workflowID)
	if errors.Is(err, fault.NotFound) {
		return 0, ErrNoSuchWorkflow
	}
	if err != nil {
		return 0, err
	}
	if wf.Status != WorkflowActive {
		return 0, ErrNotActive
	}
	if strings.HasPrefix(wf.Trigger, "event:") {
		// Its steps need the EOB or appointment that starts it.
		return 0, ErrNeedsSubject
	}
	members, err := r.Store.SegmentMembers(ctx, tenantID, segment)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ref := range members {
		created, err := r.startOne(ctx, wf.ID, wf.Version, wf.Priority, r.patientRun(tenantID, ref), nil)
		if err != nil {
			return n, err
		}
		if created {
			n++
		}
	}
	return n, nil
}

// Errors the API shows as they are.
var (
	// ErrNoSuchWorkflow means the tenant has no workflow with that id.
	ErrNoSuchWorkflow = fault.New(fault.NotFound, "no such workflow in this tenant")
	// ErrNotActive means a workflow is not active and starts no runs.
	ErrNotActive = fault.New(fault.Conflict, "the workflow is not active; activate it before enrolling")
	// ErrNeedsSubject means a workflow works on an EOB or an appointment and
	// cannot be started for a patient alone (enrolled from a segment).
	ErrNeedsSubject = fault.New(fault.Conflict, "the workflow is started by FHIR events and works on their EOB or appointment; it cannot be enrolled from a segment")
)

// patientRun is a run whose subject is the patient (API-event and segment
// triggers): the subject names the patient by blind index only.
func (r *Engine) patientRun(tenantID, patientRef string) NewRun {
	idx := r.Store.PatientIndex(tenantID, patientRef)
	return NewRun{TenantID: tenantID, Subject: "patient:" + idx, PatientIndex: idx, Facts: workflow.Facts{"patient": patientRef}}
}
