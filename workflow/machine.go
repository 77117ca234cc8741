package workflow

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// FactUTCOffset is the fact holding the subject's UTC offset ("+05:30",
// "-06:00", "Z"), which the worker sets from the appointment's time. Send
// windows fall back to it when no IANA zone is known.
const FactUTCOffset = "utc_offset"

// OutcomeMissingFact ends a run whose wait is relative to a fact the run does
// not have (or cannot read as an RFC 3339 instant).
const OutcomeMissingFact = "missing_fact"

// What ended a wait, in State.Happened (besides the event type for a
// wait_event).
const (
	HappenedTime    = "time"    // a timed wait came due and was processed in time
	HappenedPassed  = "passed"  // its moment had passed: the reminder after it is skipped
	HappenedTimeout = "timeout" // a wait_event's timeout came before its events
)

// DefaultLateAfter is Definition.LateAfter when it is empty.
const DefaultLateAfter = time.Hour

var (
	// ErrState: the run's state does not fit the definition (its step is
	// missing, or it waits on a step that cannot wait).
	ErrState = errors.New("run state does not fit the workflow")
	// ErrDefinition: the definition cannot run; Validate rejects every
	// definition that gives this.
	ErrDefinition = errors.New("workflow definition cannot run")
	// ErrInput: the input's Kind is not one of the Input* constants.
	ErrInput = errors.New("unknown input kind")
)

// Advance is the step machine: it applies one input to a run's state and
// returns the new state and the actions the worker must carry out, in order.
// It is deterministic and reads no clock: the time is in.Now. Every input
// carries the run's current Facts and Contact. st is not modified.
//
// Rules:
//
//   - An ended run does not change and yields no actions, whatever the input
//     (no re-entry). InputStart on a run that has started (Status != "") does
//     nothing either, so a duplicated start is harmless.
//   - InputEnd ends the run with Outcome in.Reason (default "cancelled"), no
//     actions; its wait is cleared.
//   - InputStart enters the first step. Running means: enter a step (append it
//     to Visited), execute it, and go on until the run waits or ends. Entering
//     a step that is already in Visited ends the run with Outcome "loop": a run
//     never executes a step twice, whether it gets there by next, a goto
//     target, a branch arm, if_passed or on_timeout. So a run sends at most once
//     per step.
//   - send emits a send action and continues with Next (default: the step
//     listed after it); add_to_segment likewise emits add_to_segment.
//   - wait with a duration waits until in.Now + duration; with until, until
//     that instant; with relative, until Facts[fact] + offset; with next_day,
//     until 00:00 of the calendar day after in.Now in the window's zone. A
//     window moves the moment to the window's next opening (NextOpening). The
//     zone is the window's, else the contact's, else the workflow's, else the
//     subject's UTC offset (Facts "utc_offset", "+05:30", "Z", as a fixed
//     zone), else UTC; a zone that does not load and an offset that does not
//     read are skipped. A relative wait whose fact is missing or not RFC 3339
//     ends the run with "missing_fact". The wait has passed when its moment
//     (after the window) is before in.Now, or when a negative offset was moved
//     by the window to or after the fact itself (a reminder after the
//     appointment). A passed wait records Happened "passed" and goes to
//     IfPassed, by default past the send that follows it (to that send's next),
//     or to its next when no send follows: a passed reminder is skipped, never
//     sent late. Otherwise the run waits with WaitUntil set. A next_day wait
//     never passes: its moment is always after in.Now.
//   - InputWake at a timed wait: before WaitUntil nothing changes; later than
//     WaitUntil + LateAfter (default 1h) the wait has passed (as above),
//     except a next_day wait, which never passes; otherwise Happened is "time"
//     and the run continues with Next.
//   - wait_event continues at once with Next when one of its events is
//     already in Engagement (Happened is the first such event recorded);
//     otherwise the run waits with WaitingFor = Events and WaitUntil =
//     in.Now + Timeout. InputEvent for one of WaitingFor records it in Happened
//     and continues with Next; InputWake at or after WaitUntil records
//     "timeout" and continues with OnTimeout (default: the step listed next).
//   - Every InputEvent on a run that has not ended appends its event type to
//     Engagement, whatever the run waits for.
//   - branch tests its conditions in order; a condition holds when all its
//     predicates hold; the first that holds sends the run to its Next, none
//     to Else. Predicate fields: fact.<name> reads in.Facts; contact.language
//     and contact.time_zone read in.Contact, other contact.<name> its Fields;
//     engagement.<event type> is "true" when that event is in Engagement, else
//     "false". An empty value counts as missing. eq holds for an equal present
//     value, ne is its negation (so it holds for a missing value), in holds
//     for a present value listed in Values, exists/missing test presence, and
//     true/false hold for exactly "true"/"false".
//   - goto with Target goes to that step (the loop rule applies); with
//     Workflow it emits start_workflow and ends the run with "goto".
//   - end ends the run with Reason, default "completed".
//   - InputFactsChanged recomputes a relative wait the run is waiting at from
//     the new facts (window and passed rules apply, so a reminder whose new
//     moment has passed is skipped); at any other step nothing changes.
//
// After a successful Advance the run is waiting (WaitUntil set or WaitingFor
// non-empty) or ended. At most len(Steps)+1 steps execute per call; more would
// be a bug and ends the run with "loop". Advance fails only with ErrState (the
// state does not fit the definition, e.g. its step is missing, or a non-start
// input for a run that never started), ErrInput, or ErrDefinition for a
// definition that Validate rejects; on error it returns st unchanged.
func Advance(d Definition, st State, in Input) (State, []Action, error) {
	if st.Status == StatusEnded {
		return st, nil, nil
	}
	m := &machine{
		d:      d,
		st:     cloneState(st),
		in:     in,
		index:  make(map[string]int, len(d.Steps)),
		budget: len(d.Steps) + 1,
	}
	for i, s := range d.Steps {
		if _, dup := m.index[s.ID]; !dup {
			m.index[s.ID] = i
		}
	}
	if err := m.apply(); err != nil {
		return st, nil, err
	}
	return m.st, m.actions, nil
}

type machine struct {
	d       Definition
	st      State
	in      Input
	index   map[string]int
	actions []Action
	budget  int // steps this call may still execute
}

func (m *machine) apply() error {
	switch m.in.Kind {
	case InputStart:
		if m.st.Status != "" {
			return nil
		}
		if len(m.d.Steps) == 0 {
			return fmt.Errorf("%w: no steps", ErrDefinition)
		}
		return m.run(m.d.Steps[0].ID)
	case InputEnd:
		reason := m.in.Reason
		if reason == "" {
			reason = OutcomeCancelled
		}
		m.end(reason)
		return nil
	case InputWake, InputEvent, InputFactsChanged:
	default:
		return fmt.Errorf("%w: %q", ErrInput, m.in.Kind)
	}

	if m.st.Status != StatusWaiting {
		return fmt.Errorf("%w: run is not waiting (status %q)", ErrState, m.st.Status)
	}
	i, ok := m.index[m.st.Step]
	if !ok || m.st.Step == "" {
		return fmt.Errorf("%w: current step is missing", ErrState)
	}
	s := m.d.Steps[i]
	if s.Type != StepWait && s.Type != StepWaitEvent {
		return fmt.Errorf("%w: waiting at a %s step", ErrState, s.Type)
	}

	switch m.in.Kind {
	case InputEvent:
		if m.in.Event == "" {
			return nil
		}
		m.st.Engagement = append(m.st.Engagement, m.in.Event)
		if s.Type == StepWaitEvent && slices.Contains(m.st.WaitingFor, m.in.Event) {
			m.happened(s.ID, m.in.Event)
			return m.run(m.next(i, s.Next))
		}
		return nil

	case InputWake:
		if s.Type == StepWaitEvent {
			if m.st.WaitUntil.IsZero() || m.in.Now.Before(m.st.WaitUntil) {
				return nil
			}
			m.happened(s.ID, HappenedTimeout)
			return m.run(m.next(i, s.OnTimeout))
		}
		if m.st.WaitUntil.IsZero() {
			return fmt.Errorf("%w: timed wait without a time", ErrState)
		}
		if m.in.Now.Before(m.st.WaitUntil) {
			return nil
		}
		if !s.NextDay && m.in.Now.After(m.st.WaitUntil.Add(m.lateAfter())) {
			m.happened(s.ID, HappenedPassed)
			return m.run(m.passed(i, s))
		}
		m.happened(s.ID, HappenedTime)
		return m.run(m.next(i, s.Next))

	default: // InputFactsChanged
		if s.Type != StepWait || s.Relative == nil {
			return nil
		}
		return m.timed(i, s)
	}
}

// run enters step id and executes steps until the run waits or ends.
func (m *machine) run(id string) error {
	for {
		if id == "" {
			// Fell off the end of the list; Validate rejects this.
			m.end(OutcomeCompleted)
			return nil
		}
		i, ok := m.index[id]
		if !ok {
			return fmt.Errorf("%w: a step points to a missing step", ErrDefinition)
		}
		if slices.Contains(m.st.Visited, id) || m.budget <= 0 {
			m.end(OutcomeLoop)
			return nil
		}
		m.budget--
		m.st.Visited = append(m.st.Visited, id)
		m.st.Step = id
		s := m.d.Steps[i]

		switch s.Type {
		case StepSend:
			m.actions = append(m.actions, Action{Type: ActionSend, Step: id, Channel: s.Channel, Template: s.Template, Fallback: s.Fallback})
			id = m.next(i, s.Next)
		case StepAddToSegment:
			m.actions = append(m.actions, Action{Type: ActionAddToSegment, Step: id, Segment: s.Segment})
			id = m.next(i, s.Next)
		case StepEnd:
			reason := s.Reason
			if reason == "" {
				reason = OutcomeCompleted
			}
			m.end(reason)
			return nil
		case StepGoto:
			switch {
			case s.Workflow != "":
				m.actions = append(m.actions, Action{Type: ActionStartWorkflow, Step: id, Workflow: s.Workflow})
				m.end(OutcomeGoto)
				return nil
			case s.Target != "":
				id = s.Target
			default:
				return fmt.Errorf("%w: goto without target or workflow", ErrDefinition)
			}
		case StepBranch:
			next, ok := m.branch(s)
			if !ok {
				return fmt.Errorf("%w: branch without else", ErrDefinition)
			}
			id = next
		case StepWaitEvent:
			if ev, ok := m.engaged(s.Events); ok {
				m.happened(id, ev)
				id = m.next(i, s.Next)
				continue
			}
			timeout, err := ParseDuration(s.Timeout)
			if err != nil || len(s.Events) == 0 {
				return fmt.Errorf("%w: wait_event needs events and a timeout", ErrDefinition)
			}
			m.st.Status = StatusWaiting
			m.st.WaitingFor = slices.Clone(s.Events)
			m.st.WaitUntil = m.in.Now.Add(timeout).UTC()
			return nil
		case StepWait:
			return m.timed(i, s)
		default:
			return fmt.Errorf("%w: unknown step type", ErrDefinition)
		}
	}
}

// timed computes the moment of the wait at step i (on entry, or again after
// the facts changed) and either waits for it, or, when it has passed, moves
// on, or ends the run when the fact it is relative to is missing.
func (m *machine) timed(i int, s Step) error {
	now := m.in.Now
	var moment, fact time.Time
	negative := false
	switch {
	case s.Duration != "":
		dur, err := ParseDuration(s.Duration)
		if err != nil {
			return fmt.Errorf("%w: wait duration", ErrDefinition)
		}
		moment = now.Add(dur)
	case s.Until != "":
		t, err := time.Parse(time.RFC3339, s.Until)
		if err != nil {
			return fmt.Errorf("%w: wait until", ErrDefinition)
		}
		moment = t
	case s.Relative != nil:
		var off time.Duration
		if s.Relative.Offset != "" {
			var err error
			if off, err = ParseDuration(s.Relative.Offset); err != nil {
				return fmt.Errorf("%w: wait relative offset", ErrDefinition)
			}
		}
		t, err := time.Parse(time.RFC3339, m.in.Facts[s.Relative.Fact])
		if err != nil {
			m.end(OutcomeMissingFact)
			return nil
		}
		fact = t
		negative = off < 0
		moment = t.Add(off)
	case s.NextDay:
		moment = nextDayStart(now, m.zone(s.Window))
	default:
		return fmt.Errorf("%w: wait without duration, until, relative or next_day", ErrDefinition)
	}
	if s.Window != nil {
		opening, err := NextOpening(moment, *s.Window, m.zone(s.Window))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDefinition, err)
		}
		moment = opening
	}
	if !s.NextDay && (moment.Before(now) || (negative && !moment.Before(fact))) {
		m.happened(s.ID, HappenedPassed)
		return m.run(m.passed(i, s))
	}
	m.st.Status = StatusWaiting
	m.st.WaitUntil = moment.UTC()
	m.st.WaitingFor = nil
	return nil
}

// next is the step after step i: explicit when set, else the one listed
// after it ("" past the last).
func (m *machine) next(i int, explicit string) string {
	if explicit != "" {
		return explicit
	}
	if i+1 < len(m.d.Steps) {
		return m.d.Steps[i+1].ID
	}
	return ""
}

// passed is where a passed wait goes: IfPassed, else past the send that
// follows the wait, else the wait's next.
func (m *machine) passed(i int, s Step) string {
	if s.IfPassed != "" {
		return s.IfPassed
	}
	n := m.next(i, s.Next)
	if j, ok := m.index[n]; ok && m.d.Steps[j].Type == StepSend {
		return m.next(j, m.d.Steps[j].Next)
	}
	return n
}

// engaged returns the first event recorded in Engagement that is one of
// events.
func (m *machine) engaged(events []string) (string, bool) {
	for _, e := range m.st.Engagement {
		if slices.Contains(events, e) {
			return e, true
		}
	}
	return "", false
}

func (m *machine) branch(s Step) (string, bool) {
	for _, c := range s.Conditions {
		if len(c.When) > 0 && m.holdsAll(c.When) {
			return c.Next, true
		}
	}
	return s.Else, s.Else != ""
}

func (m *machine) holdsAll(ps []Predicate) bool {
	for _, p := range ps {
		if !m.holds(p) {
			return false
		}
	}
	return true
}

// holds evaluates one predicate; see Predicate. An empty value counts as
// missing. ne is the negation of eq, so it holds for a missing value; true
// and false hold only for the exact strings "true" and "false".
func (m *machine) holds(p Predicate) bool {
	v, present := m.value(p.Field)
	switch p.Op {
	case "eq":
		return present && v == p.Value
	case "ne":
		return !present || v != p.Value
	case "in":
		return present && slices.Contains(p.Values, v)
	case "exists":
		return present
	case "missing":
		return !present
	case "true":
		return present && v == "true"
	case "false":
		return present && v == "false"
	}
	return false
}

// value reads a predicate field: fact.<name> from the facts, contact.language
// and contact.time_zone from the contact, other contact.<name> from its
// fields, engagement.<event type> as "true" or "false".
func (m *machine) value(field string) (string, bool) {
	source, name, ok := splitField(field)
	if !ok {
		return "", false
	}
	var v string
	switch source {
	case "fact":
		v = m.in.Facts[name]
	case "contact":
		switch name {
		case "language":
			v = m.in.Contact.Language
		case "time_zone":
			v = m.in.Contact.TimeZone
		default:
			v = m.in.Contact.Fields[name]
		}
	case "engagement":
		if slices.Contains(m.st.Engagement, name) {
			return "true", true
		}
		return "false", true
	}
	return v, v != ""
}

// zone is the zone a wait's window (w, nil for none) and next day are read
// in: the window's, the contact's, the workflow's, then the subject's UTC
// offset, then UTC, skipping any that does not load or read.
func (m *machine) zone(w *Window) *time.Location {
	var windowZone string
	if w != nil {
		windowZone = w.TimeZone
	}
	return zoneOf(windowZone, m.in.Contact.TimeZone, m.d.TimeZone, m.in.Facts[FactUTCOffset])
}

func (m *machine) lateAfter() time.Duration {
	if m.d.LateAfter == "" {
		return DefaultLateAfter
	}
	la, err := ParseDuration(m.d.LateAfter)
	if err != nil || la < 0 {
		return DefaultLateAfter
	}
	return la
}

func (m *machine) happened(step, what string) {
	if m.st.Happened == nil {
		m.st.Happened = make(map[string]string)
	}
	m.st.Happened[step] = what
	m.st.WaitUntil = time.Time{}
	m.st.WaitingFor = nil
}

func (m *machine) end(outcome string) {
	m.st.Status = StatusEnded
	m.st.Outcome = outcome
	m.st.WaitUntil = time.Time{}
	m.st.WaitingFor = nil
}

func cloneState(st State) State {
	st.Visited = slices.Clone(st.Visited)
	st.WaitingFor = slices.Clone(st.WaitingFor)
	st.Engagement = slices.Clone(st.Engagement)
	st.Happened = maps.Clone(st.Happened)
	return st
}
