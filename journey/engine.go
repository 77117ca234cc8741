package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/workflow"
)

// Clock tells the time; tests inject one they can move.
type Clock interface{ Now() time.Time }

// SystemClock is the real time.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// RunStore is what running workflows needs from storage.
type RunStore interface {
	ActiveWorkflows(ctx context.Context, tenantID, triggerKey string) ([]store.WorkflowInfo, error)
	WorkflowVersion(ctx context.Context, tenantID, id string, version int) (workflow.Definition, error)
	StartRun(ctx context.Context, r store.NewRun, now time.Time) (store.RunWake, bool, error)
	LoadRun(ctx context.Context, id int64) (store.Run, error)
	SaveRun(ctx context.Context, r store.Run, st workflow.State, actions []workflow.Action, cursor int64, now time.Time) (store.RunWake, error)
	ClearPending(ctx context.Context, r store.Run, now time.Time) (store.RunWake, error)
	DeferPending(ctx context.Context, r store.Run, retry time.Time) (store.RunWake, error)
	EndRun(ctx context.Context, tenantID string, runID, seq int64, outcome string, now time.Time) error
	RefreshSubject(ctx context.Context, tenantID, subject string, eventID int64, facts workflow.Facts, changed bool, now time.Time) ([]store.RunWake, error)
	EndSubjectRuns(ctx context.Context, tenantID, subject, outcome string, keep []string, now time.Time) (int, error)
	EngagementsSince(ctx context.Context, r store.Run, since time.Time) ([]store.Engagement, error)
	MarkPromoted(ctx context.Context, wakes []store.RunWake) error
	EnsureRunNotice(ctx context.Context, r store.Run, step, template, noticeType string, eventID int64) (store.Notice, error)
	ContactByIndex(ctx context.Context, tenantID, patientIndex string) (store.ContactDetails, error)
	AddSegmentMember(ctx context.Context, tenantID, segment, patientRef string) (bool, error)
	PatientIndex(patientRef string) string
	Workflow(ctx context.Context, tenantID, id string) (store.WorkflowInfo, error)
}

// RunQueue hands run wake-ups to Asynq.
type RunQueue interface {
	EnqueueRun(ctx context.Context, w store.RunWake, delay time.Duration) (bool, error)
}

// MaxAttempts is how often a run's pending actions are tried; the last
// attempt fails a send's notice instead of retrying it.
const MaxAttempts = 12

// retryDelay backs off from 5 s, doubling, to at most 30 minutes.
func retryDelay(attempts int) time.Duration {
	return min(5*time.Second<<min(attempts, 10), 30*time.Minute)
}

// DefaultHorizon is how far ahead wake-ups go into Redis; later ones wait
// in Postgres until the scheduler promotes them.
const DefaultHorizon = time.Hour

// Runs drives workflow runs: it starts them from events, advances them
// with the step machine when they wake, and executes what the machine asks.
type Runs struct {
	Store RunStore
	Queue RunQueue
	Clock Clock
	Log   *slog.Logger
	// Sender, when set (in the worker), carries out a new run's first steps
	// in the task that started it; unset (the API), new runs are queued.
	Sender Sender
	// Horizon: wake-ups due within it are enqueued at once (delayed);
	// later ones are left to the scheduler. 0 means DefaultHorizon; a
	// negative value enqueues only what is already due (tests with a
	// moved clock).
	Horizon time.Duration

	defs sync.Map // "tenant/workflow/version" → workflow.Definition (versions never change)
}

func (r *Runs) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

func (r *Runs) horizon() time.Duration {
	if r.Horizon == 0 {
		return DefaultHorizon
	}
	return max(r.Horizon, 0)
}

// Start starts a run of every active workflow the trigger starts, for the
// subject. It reports how many workflows the trigger matched (a run that
// already existed counts: nobody re-enters a workflow).
func (r *Runs) Start(ctx context.Context, tenantID, triggerKey string, nr store.NewRun) (int, error) {
	wfs, err := r.Store.ActiveWorkflows(ctx, tenantID, triggerKey)
	if err != nil {
		return 0, fmt.Errorf("active workflows: %w", err)
	}
	for _, wf := range wfs {
		if _, err := r.startOne(ctx, wf.ID, wf.Version, wf.Priority, nr); err != nil {
			return 0, err
		}
	}
	return len(wfs), nil
}

func (r *Runs) startOne(ctx context.Context, workflowID string, version int, priority string, nr store.NewRun) (bool, error) {
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
		if err := r.Advance(ctx, w.TenantID, w.ID, w.WakeSeq, r.Sender); err == nil {
			return true, nil
		}
	}
	// If this enqueue fails the scheduler promotes the run: it is due.
	r.enqueue(ctx, w)
	return true, nil
}

// Wake hands wake-ups to the queue now (those due within the horizon).
func (r *Runs) Wake(ctx context.Context, wakes []store.RunWake) {
	for _, w := range wakes {
		r.enqueue(ctx, w)
	}
}

// enqueue hands one wake-up to the queue if it is due within the horizon
// and records that it did; a failure is left to the scheduler, which
// promotes every due wake-up that is not marked.
func (r *Runs) enqueue(ctx context.Context, w store.RunWake) {
	delay := w.DueAt.Sub(r.now())
	if delay > r.horizon() {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := r.Queue.EnqueueRun(qctx, w, delay); err != nil {
		return
	}
	_ = r.Store.MarkPromoted(ctx, []store.RunWake{w})
}

func (r *Runs) definition(ctx context.Context, run store.Run) (workflow.Definition, error) {
	key := run.TenantID + "/" + run.WorkflowID + "/" + fmt.Sprint(run.WorkflowVersion)
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

// Sender executes a run's send action: it builds, decides on and delivers
// the notice of (run, step). It returns nil once the notice has an outcome
// (sent, denied, failed: the run goes on either way) and an error only
// when the attempt should be retried; on the last try it fails the notice.
type Sender interface {
	SendStep(ctx context.Context, run store.Run, a workflow.Action, lastTry bool) error
}

// Advance processes one wake-up of a run. It feeds the step machine what
// happened (the start, engagement events that arrived, a changed subject,
// the timer), saves the new state together with the actions the machine
// decided, and only then carries them out and marks them done: a
// cancellation that commits first wins, and a worker that dies mid-way
// leaves the actions saved for the next wake-up. Every action is idempotent
// (a send is unique per (run, step)). A stale wake-up (the run moved on)
// does nothing.
func (r *Runs) Advance(ctx context.Context, tenantID string, runID, seq int64, send Sender) error {
	run, err := r.Store.LoadRun(ctx, runID)
	if errors.Is(err, store.ErrNotFound) {
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
	// Three rounds at most: finish saved actions, step the machine, carry
	// out what it decided. The run's next wake-up is enqueued once, at the end.
	var next *store.RunWake
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
				err := r.execute(ctx, run, a, send, last)
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
					w, derr := r.Store.DeferPending(wctx, run, r.now().Add(retryDelay(run.Attempts)))
					cancel()
					if derr != nil && !errors.Is(derr, store.ErrStale) {
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
			if errors.Is(err, store.ErrStale) {
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
				if err != nil || !slices.ContainsFunc(events, func(e store.Engagement) bool { return slices.Contains(run.State.WaitingFor, e.Type) }) {
					return err
				}
			}
			continue
		}
		w, saved, err := r.step(ctx, run)
		if errors.Is(err, store.ErrStale) {
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
func (r *Runs) step(ctx context.Context, run store.Run) (store.RunWake, store.Run, error) {
	now := r.now()
	def, err := r.definition(ctx, run)
	if err != nil {
		return store.RunWake{}, run, fmt.Errorf("definition: %w", err)
	}
	contact, err := r.Store.ContactByIndex(ctx, run.TenantID, run.PatientIndex)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.RunWake{}, run, fmt.Errorf("contact: %w", err)
	}
	wc := workflow.Contact{TimeZone: contact.TimeZone, Language: contact.Language}
	st := run.State
	var actions []workflow.Action
	feed := func(in workflow.Input) error {
		in.Now, in.Facts, in.Contact = now, run.Facts, wc
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
	events, err := r.Store.EngagementsSince(ctx, run, run.CreatedAt)
	if err != nil {
		return store.RunWake{}, run, fmt.Errorf("engagements: %w", err)
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
		// The state does not fit its definition: end the run visibly, after
		// what was decided before the error.
		st.Status, st.Outcome, st.WaitUntil, st.WaitingFor = workflow.StatusEnded, "error", time.Time{}, nil
	}
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

func (r *Runs) execute(ctx context.Context, run store.Run, a workflow.Action, send Sender, lastTry bool) error {
	switch a.Type {
	case workflow.ActionSend:
		return send.SendStep(ctx, run, a, lastTry)
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
		nr := store.NewRun{TenantID: run.TenantID, Subject: run.Subject, PatientIndex: run.PatientIndex, EventID: run.EventID, Facts: run.Facts}
		_, err = r.startOne(ctx, wfs[0].ID, wfs[0].Version, wfs[0].Priority, nr)
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

// startTargets finds the active workflow a go-to names; a paused or
// missing one starts nothing.
func (r *Runs) startTargets(ctx context.Context, tenantID, id string) ([]store.WorkflowInfo, error) {
	wf, err := r.Store.Workflow(ctx, tenantID, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && wf.Status != store.WorkflowActive) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []store.WorkflowInfo{wf}, nil
}

// HandleRunTask is the Asynq handler for TypeRunWake.
func (p *Processor) HandleRunTask(ctx context.Context, t *asynq.Task) error {
	pl, err := openTask(p.Keys, t)
	if err != nil {
		return fmt.Errorf("open task payload: %w: %w", err, asynq.SkipRetry)
	}
	err = p.Runs.Advance(ctx, pl.TenantID, pl.ID, pl.Seq, p)
	if err != nil && !errors.Is(err, asynq.SkipRetry) && lastTry(ctx) {
		// Out of retries on the run's own bookkeeping (not its actions,
		// which back off in Postgres): end it visibly rather than let it be
		// replaced and fail again for ever.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if eerr := p.Runs.Store.EndRun(wctx, pl.TenantID, pl.ID, pl.Seq, "error", p.Runs.now()); eerr != nil && p.Log != nil {
			p.Log.Error("could not end a run that ran out of retries", "run_id", pl.ID, "err", eerr)
		}
	}
	return err
}

// noticeTypeOf maps a send step's template to the policy's notice type.
func noticeTypeOf(template string) (string, error) {
	nt := notify.NoticeTypeOf(template)
	if nt == "" {
		return "", fmt.Errorf("template %q is not known", template)
	}
	return nt, nil
}

// EventStore is what recording engagement and API events needs.
type EventStore interface {
	RecordEngagement(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte, now time.Time) (int64, []store.RunWake, error)
	SegmentMembers(ctx context.Context, tenantID, segment string) ([]string, error)
}

// RecordEvent records an engagement or API event for a patient (delivered,
// opened, clicked, portal.viewed, unsubscribed, portal.login, ...), wakes the
// patient's waiting runs so a wait for it ends, and starts the workflows the
// event type triggers (one run per workflow and patient). data may be PHI:
// it is stored sealed and never read back into a run.
func (r *Runs) RecordEvent(ctx context.Context, es EventStore, tenantID, patientRef, subject, eventType string, data []byte) (id int64, started int, err error) {
	id, wakes, err := es.RecordEngagement(ctx, tenantID, patientRef, subject, eventType, data, r.now())
	if err != nil {
		return 0, 0, err
	}
	r.Wake(ctx, wakes)
	started, err = r.Start(ctx, tenantID, "api:"+eventType, r.patientRun(tenantID, patientRef))
	return id, started, err
}

// JoinSegment adds a patient to a segment and starts the workflows that
// joining it triggers.
func (r *Runs) JoinSegment(ctx context.Context, tenantID, segment, patientRef string) (joined bool, started int, err error) {
	joined, err = r.Store.AddSegmentMember(ctx, tenantID, segment, patientRef)
	if err != nil || !joined {
		return joined, 0, err
	}
	started, err = r.Start(ctx, tenantID, "segment:"+segment, r.patientRun(tenantID, patientRef))
	return joined, started, err
}

// Enroll starts a workflow for every member of a segment, by hand. Members
// that already have a run of it are not enrolled again.
func (r *Runs) Enroll(ctx context.Context, es EventStore, tenantID, workflowID, segment string) (int, error) {
	wf, err := r.Store.Workflow(ctx, tenantID, workflowID)
	if err != nil {
		return 0, err
	}
	if wf.Status != store.WorkflowActive {
		return 0, fmt.Errorf("workflow %s is %s: %w", workflowID, wf.Status, ErrNotActive)
	}
	if strings.HasPrefix(wf.Trigger, "event:") {
		// Its steps need the EOB or appointment that starts it.
		return 0, fmt.Errorf("workflow %s is started by FHIR events: %w", workflowID, ErrNeedsSubject)
	}
	members, err := es.SegmentMembers(ctx, tenantID, segment)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ref := range members {
		created, err := r.startOne(ctx, wf.ID, wf.Version, wf.Priority, r.patientRun(tenantID, ref))
		if err != nil {
			return n, err
		}
		if created {
			n++
		}
	}
	return n, nil
}

// Journeys is the run driver as the API uses it: engagement and API
// events, segment membership, enrolment.
type Journeys struct {
	Runs   *Runs
	Events EventStore
}

// RecordEvent records an engagement or API event (see Runs.RecordEvent).
func (j Journeys) RecordEvent(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte) (int64, int, error) {
	return j.Runs.RecordEvent(ctx, j.Events, tenantID, patientRef, subject, eventType, data)
}

// JoinSegment adds a patient to a segment (see Runs.JoinSegment).
func (j Journeys) JoinSegment(ctx context.Context, tenantID, segment, patientRef string) (bool, int, error) {
	return j.Runs.JoinSegment(ctx, tenantID, segment, patientRef)
}

// Enroll starts a workflow for a segment's members (see Runs.Enroll).
func (j Journeys) Enroll(ctx context.Context, tenantID, workflowID, segment string) (int, error) {
	return j.Runs.Enroll(ctx, j.Events, tenantID, workflowID, segment)
}

// ErrNotActive means a workflow is not active and starts no runs.
var ErrNotActive = errors.New("workflow is not active")

// ErrNeedsSubject means a workflow works on an EOB or an appointment and
// cannot be started for a patient alone (enrolled from a segment).
var ErrNeedsSubject = errors.New("workflow needs an EOB or appointment to start")

// patientRun is a run whose subject is the patient (API-event and segment
// triggers): the subject names the patient by blind index only.
func (r *Runs) patientRun(tenantID, patientRef string) store.NewRun {
	idx := r.Store.PatientIndex(patientRef)
	return store.NewRun{TenantID: tenantID, Subject: "patient:" + idx, PatientIndex: idx, Facts: workflow.Facts{"patient": patientRef}}
}
