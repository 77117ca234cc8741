package journey

import (
	"time"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/workflow"
)

// Event is one stored FHIR notification event (an EOB or Appointment
// version) as the core works on it: its record decoded once, when the store
// loaded it, and its facts read at most once per task.
type Event struct {
	ID             int64
	TenantID       string
	SubscriptionID string
	// Source is the FHIR server the event came from, which scopes its
	// resource ids: the subscription's registered source, or
	// "subscription/<id>" for a subscription registered without one. Two
	// sources' Appointment/123 are different appointments.
	Source       string
	ResourceType string
	ResourceID   string
	VersionID    string
	// Kind is what the event meant once it took effect ("booked",
	// "rescheduled", … for an appointment; "superseded" when a newer version
	// overtook it); empty before.
	Kind string
	// Attempts counts failed tries at processing the event.
	Attempts int
	// Record is the focus resource and the resources the notification
	// carried with it.
	Record fhir.Event

	// Facts read from Record, memoised: a task works on one event in one
	// goroutine, and reads them once.
	eob     *fhir.EOBFacts
	eobErr  error
	appt    *fhir.AppointmentFacts
	apptErr error
	codes   *[]fhir.Coding
}

// DiagnosisCodes reads the diagnosis codings of the event's EOB, once:
// callers turn them into coarse categories, never carry them on.
func (e *Event) DiagnosisCodes() []fhir.Coding {
	if e.codes == nil {
		var c []fhir.Coding
		if f, err := e.EOBFacts(); err == nil {
			c = f.Diagnoses // read with the facts, in the same decode
		} else {
			c = fhir.DiagnosisCodes(e.Record.Focus)
		}
		e.codes = &c
	}
	return *e.codes
}

// EOBFacts reads the event's ExplanationOfBenefit, once.
func (e *Event) EOBFacts() (fhir.EOBFacts, error) {
	if e.eob == nil {
		f, err := e.Record.EOBFacts()
		e.eob, e.eobErr = &f, err
	}
	return *e.eob, e.eobErr
}

// AppointmentFacts reads the event's Appointment, once.
func (e *Event) AppointmentFacts() (fhir.AppointmentFacts, error) {
	if e.appt == nil {
		f, err := e.Record.AppointmentFacts()
		e.appt, e.apptErr = &f, err
	}
	return *e.appt, e.apptErr
}

// SetRecord replaces the record (more of it was fetched) and forgets the
// facts read from the old one.
func (e *Event) SetRecord(r fhir.Event) {
	e.Record = r
	e.eob, e.eobErr, e.appt, e.apptErr, e.codes = nil, nil, nil, nil, nil
}

// KindSuperseded marks an event a newer version of its resource overtook
// before it was processed: it never took effect.
const KindSuperseded = "superseded"

// Outcome is how an event that leads to no run is closed (its notice's status).
type Outcome string

// Outcomes of an event closed without a run.
const (
	OutcomeSkipped Outcome = "skipped"
	OutcomeFailed  Outcome = "failed"
)

// Run is one workflow run: a subject (an EOB, an appointment, or a patient
// for API-event and segment workflows) going through one workflow version.
type Run struct {
	ID              int64
	TenantID        string
	WorkflowID      string
	WorkflowVersion int
	// Source scopes Subject (see Event.Source); "" for a patient-scoped run.
	Source           string
	Subject          string
	PatientIndex     string
	EventID          *int64
	Status           string
	Step             string
	FactsChanged     bool
	DueAt            *time.Time
	WakeSeq          int64
	EngagementCursor int64
	Priority         string
	Outcome          string
	CreatedAt        time.Time
	// Attempts counts failed attempts at the pending actions.
	Attempts int

	State workflow.State
	Facts workflow.Facts
	// Pending are actions decided and saved with State, not all done yet.
	Pending []workflow.Action
}

// Wake is a run's wake-up to hand to the queue: the run, the seq it is
// for, and when.
type Wake struct {
	ID       int64
	TenantID string
	WakeSeq  int64
	DueAt    time.Time
	Step     string
	Priority string
}

// NewRun is a run to start.
type NewRun struct {
	TenantID        string
	WorkflowID      string
	WorkflowVersion int
	Priority        string
	Source          string // scopes Subject (see Event.Source); "" for a patient-scoped run
	Subject         string
	PatientIndex    string
	EventID         *int64
	Facts           workflow.Facts
}

// Engagement is one engagement or API event, as a run sees it.
type Engagement struct {
	ID   int64
	Type string
}

// Workflow statuses.
const (
	WorkflowDraft  = "draft"
	WorkflowActive = "active"
	WorkflowPaused = "paused"
)

// Workflow is a workflow's current version and status.
type Workflow struct {
	ID         string
	Status     string
	Version    int
	Trigger    string // TriggerKey of the definition's trigger
	Priority   string
	UpdatedAt  time.Time
	Definition workflow.Definition
}

// TriggerKey is how a workflow's trigger is indexed: "event:<kind>",
// "api:<type>" or "segment:<name>".
func TriggerKey(t workflow.Trigger) string {
	switch {
	case t.Event != "":
		return "event:" + t.Event
	case t.APIEvent != "":
		return "api:" + t.APIEvent
	case t.Segment != "":
		return "segment:" + t.Segment
	}
	return ""
}

// RunStep is one step of a run's path.
type RunStep struct {
	Step     string
	Happened string
	At       time.Time
}

// RunView is a run as operators see it: no facts, no PHI.
type RunView struct {
	ID              int64
	WorkflowID      string
	WorkflowVersion int
	Source          string
	Subject         string
	Status          string
	Step            string
	Outcome         string
	DueAt           *time.Time
	CreatedAt       time.Time
	Path            []RunStep
}

// StepStats are one step's figures.
type StepStats struct {
	Step      string
	Now       int64            // runs waiting at this step
	Processed int64            // runs that executed it
	Outcomes  map[string]int64 // runs that ended at this step, by outcome
	// DropOff is the share of runs that executed this step and ended there
	// without reaching an end step (cancelled, loop, error, missing fact, a
	// step of an older version); an end step's own outcome (completed,
	// viewed, ...) is no drop-off.
	DropOff float64
}

// Clock tells the time; tests inject one they can move.
type Clock interface{ Now() time.Time }

// SystemClock is the real time.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// StepCounts are a workflow's runs counted per step, as stored.
type StepCounts struct {
	Processed []struct {
		Step string
		N    int64
	}
	At []struct {
		Step    string
		Status  string
		Outcome string
		N       int64
	}
}
