package workflow

import (
	"log/slog"
	"time"
)

// Step types.
const (
	StepSend         = "send"           // deliver a notice through a channel
	StepWait         = "wait"           // wait for a time: a duration, a date, a moment relative to a fact, or the next day
	StepWaitEvent    = "wait_event"     // wait for an engagement or API event, with a timeout
	StepBranch       = "branch"         // ordered conditions, first match wins, with a fallback
	StepGoto         = "goto"           // continue at a step of this workflow or start another workflow
	StepAddToSegment = "add_to_segment" // put the subject's patient in a segment
	StepEnd          = "end"            // the run ends
)

// Priorities, mapped by the worker to weighted queues.
const (
	PriorityHigh   = "high"
	PriorityNormal = "normal"
	PriorityLow    = "low"
)

// Definition is one version of a workflow: what starts it, who it is sent as,
// and its steps. It holds no PHI: it is configuration written by the tenant.
type Definition struct {
	// ID is the workflow's stable key within a tenant ("appointment-reminders").
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Version is assigned by the store on save; it is ignored on input.
	Version  int     `json:"version,omitempty"`
	Trigger  Trigger `json:"trigger"`
	Priority string  `json:"priority,omitempty"` // high | normal | low; default normal
	Sender   Sender  `json:"sender"`
	// Purpose is why its notices disclose what they do, as the accounting
	// of disclosures records it and the policy sees it: payment, treatment
	// or operations. Empty: each notice's type decides (an EOB is about
	// payment, an appointment about treatment). "marketing" marks a
	// workflow the patient may leave: its mails carry a one-click
	// unsubscribe link (RFC 8058), and the policy needs the patient's
	// authorization for it.
	Purpose string `json:"purpose,omitempty"`
	// Tracking adds an open pixel to its mails and routes their links
	// through signed click redirects, recorded as "opened" and "clicked"
	// engagements (engagement.go). Off unless set.
	Tracking bool `json:"tracking,omitempty"`
	// TimeZone is the IANA zone for send windows and next_day waits when
	// neither the window nor the contact has one. Without it the subject's
	// UTC offset (Facts "utc_offset") is used, then UTC; see
	// Window.TimeZone.
	TimeZone string `json:"time_zone,omitempty"`
	// LateAfter is how late a timed wake-up may be processed and still count
	// as on time (a worker outage, a queue backlog); a reminder later than
	// this is skipped, not sent late. Duration syntax; default "1h".
	LateAfter string `json:"late_after,omitempty"`
	// SMSWindow is when the workflow may send an SMS (its sms steps and
	// sms fallbacks): outside it is quiet time, and an SMS due then waits
	// for the window's next opening (SMSOpening). Nil: any time.
	SMSWindow *Window `json:"sms_window,omitempty"`
	// Steps run from the first one; a step without Next continues with the
	// step listed after it.
	Steps []Step `json:"steps"`
}

// Trigger says what starts a run. Exactly one field is set.
type Trigger struct {
	// Event is a FHIR event kind: "eob.received", "appointment.booked",
	// "appointment.rescheduled", "appointment.cancelled",
	// "appointment.fulfilled", "appointment.noshow".
	Event string `json:"event,omitempty"`
	// APIEvent is an event type posted to /v1/events ("portal.login").
	APIEvent string `json:"api_event,omitempty"`
	// Segment starts a run when a patient joins that segment, and lets the
	// tenant enroll the segment's members by hand.
	Segment string `json:"segment,omitempty"`
}

// Sender is the identity a workflow's messages go out as.
type Sender struct {
	Name    string `json:"name,omitempty"`
	From    string `json:"from,omitempty"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// Step is one step. Which fields apply depends on Type; Validate reports
// fields that do not belong to the type.
type Step struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	// Next is the step that follows send, wait, add_to_segment, and a
	// wait_event whose event arrived; default: the step listed next.
	Next string `json:"next,omitempty"`

	// send (and its shorthands email, sms, portal; see StepEmail)
	Channel  string `json:"channel,omitempty"`  // "email", "sms" or "portal"; the channel registry decides what exists
	Template string `json:"template,omitempty"` // e.g. "appointment.reminder"
	// Fallback is where the notice goes when Channel cannot deliver it.
	Fallback *Fallback `json:"fallback,omitempty"`

	// wait: exactly one of Duration, Until, Relative, NextDay.
	Duration string    `json:"duration,omitempty"` // "72h", "7d", "1d12h"
	Until    string    `json:"until,omitempty"`    // RFC 3339 instant
	Relative *Relative `json:"relative,omitempty"`
	// NextDay waits until the start (00:00) of the next calendar day in the
	// window's zone (resolved as for Window.TimeZone), then lets Window
	// apply: with a weekdays 09:00–18:00 window that is the next business
	// day's opening. Its moment is always ahead, so it never passes.
	NextDay bool `json:"next_day,omitempty"`
	// Window keeps the wake-up inside a send window (wait steps only).
	Window *Window `json:"window,omitempty"`
	// IfPassed is where a wait goes when its moment had already passed when
	// the run reached it (or was later than LateAfter): default, the step
	// after the send that follows the wait, so a passed reminder is skipped.
	// A next_day wait never passes and takes no IfPassed.
	IfPassed string `json:"if_passed,omitempty"`

	// wait_event
	Events    []string `json:"events,omitempty"`     // engagement or API event types
	Timeout   string   `json:"timeout,omitempty"`    // duration
	OnTimeout string   `json:"on_timeout,omitempty"` // default: the step listed next

	// branch
	Conditions []Condition `json:"conditions,omitempty"`
	Else       string      `json:"else,omitempty"` // required for a branch

	// goto: Target in this workflow, or Workflow to start that workflow for
	// the same subject (this run then ends with reason "goto").
	Target   string `json:"target,omitempty"`
	Workflow string `json:"workflow,omitempty"`

	// add_to_segment
	Segment string `json:"segment,omitempty"`

	// end
	Reason string `json:"reason,omitempty"` // recorded as the run's outcome; default "completed"
}

// Relative is a moment relative to a time fact: Fact + Offset.
type Relative struct {
	Fact   string `json:"fact"`   // "start" or "end" (of the appointment)
	Offset string `json:"offset"` // signed duration: "-72h", "2h"
}

// Window is a recurring send window, read on the wall clock of one zone (see
// TimeZone).
type Window struct {
	// Days are "mon".."sun", or "weekdays", "weekends", "all"; default weekdays.
	Days []string `json:"days,omitempty"`
	From string   `json:"from"` // "09:00", local
	To   string   `json:"to"`   // "18:00", local, after From
	// TimeZone is the IANA zone the window is read in. The zone is the first
	// of these that is set and valid: this TimeZone, Contact.TimeZone,
	// Definition.TimeZone, the subject's UTC offset (Facts "utc_offset",
	// "+05:30", "-06:00" or "Z", as a fixed zone: contacts read from FHIR
	// carry no zone, but the appointment's time carries its offset), then
	// UTC. An offset knows no daylight-saving rules, so it is only a fallback
	// after the IANA zones.
	TimeZone string `json:"time_zone,omitempty"`
}

// Condition is one branch arm: all predicates hold → go to Next.
type Condition struct {
	When []Predicate `json:"when"`
	Next string      `json:"next"`
}

// Predicate compares one value the run knows.
type Predicate struct {
	// Field is "fact.<name>", "contact.<name>" or "engagement.<event type>"
	// (true when that event was recorded in this run).
	Field string `json:"field"`
	// Op is eq, ne, in, exists, missing, true, false.
	Op     string   `json:"op"`
	Value  string   `json:"value,omitempty"`
	Values []string `json:"values,omitempty"` // for in
}

// Facts are the values a run carries about its subject: "status", "kind",
// "start", "end" (RFC 3339), "outcome", "utc_offset" (the subject's UTC
// offset, "+05:30" or "Z", a fallback zone for windows), ... They may be
// PHI (an appointment's time is) and are sealed at rest by the store.
type Facts map[string]string

// LogValue keeps facts out of logs.
func (Facts) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Contact is what a step may read of the contact: preferences, never
// addresses.
type Contact struct {
	TimeZone string            `json:"time_zone,omitempty"`
	Language string            `json:"language,omitempty"`
	Fields   map[string]string `json:"fields,omitempty"` // further non-address fields for branches
}

// Run states.
const (
	StatusWaiting = "waiting"
	StatusEnded   = "ended"
)

// Outcomes a run may end with besides an end step's reason.
const (
	OutcomeCompleted = "completed"
	OutcomeLoop      = "loop"
	OutcomeGoto      = "goto"
	OutcomeCancelled = "cancelled"
)

// State is a run's position, held in Postgres. It holds no PHI: step ids,
// event types and times.
type State struct {
	Status string `json:"status"` // "" before the first Advance, then waiting or ended
	Step   string `json:"step"`   // the step the run is at (waiting) or ended on
	// Visited are the steps executed, in order: the run's path.
	Visited []string `json:"visited"`
	// WaitUntil is when the current wait ends (timer or event timeout);
	// zero when the run waits only for an event, or has ended.
	WaitUntil time.Time `json:"wait_until,omitzero"`
	// WaitingFor are the event types the current wait_event listens for.
	WaitingFor []string `json:"waiting_for,omitempty"`
	// Engagement are the event types recorded in this run, in order.
	Engagement []string `json:"engagement,omitempty"`
	// Happened is what ended each wait: step id → event type, "timeout",
	// "time" or "passed".
	Happened map[string]string `json:"happened,omitempty"`
	Outcome  string            `json:"outcome,omitempty"`
}

// Input kinds.
const (
	InputStart        = "start"         // the run was created
	InputWake         = "wake"          // a timer came due (Now ≥ WaitUntil) or anything else woke the run
	InputEvent        = "event"         // Event arrived for this run's patient
	InputFactsChanged = "facts_changed" // the subject changed (a reschedule): waits relative to facts are recomputed
	InputEnd          = "end"           // end the run now with Reason (cancellation, entered-in-error)
)

// Input is what happened to a run.
type Input struct {
	Kind    string
	Now     time.Time
	Event   string // for InputEvent
	Reason  string // for InputEnd
	Facts   Facts
	Contact Contact
}

// Action types.
const (
	ActionSend          = "send"           // deliver Template on Channel, once per (run, Step)
	ActionAddToSegment  = "add_to_segment" // Segment
	ActionStartWorkflow = "start_workflow" // start Workflow for the same subject
)

// Action is something the worker must do for the run, in order.
type Action struct {
	Type     string `json:"type"`
	Step     string `json:"step"`
	Channel  string `json:"channel,omitempty"`
	Template string `json:"template,omitempty"`
	Segment  string `json:"segment,omitempty"`
	Workflow string `json:"workflow,omitempty"`
	// Fallback of a send action: see Step.Fallback.
	Fallback *Fallback `json:"fallback,omitempty"`
}
