package workflow

import (
	"errors"
	"net/mail"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is what a *ValidationError unwraps to, for callers that only
// branch on "the definition was rejected".
var ErrInvalid = errors.New("invalid workflow definition")

// idPattern is the shape of workflow, step and segment ids.
var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

const idRule = "must match ^[a-z0-9][a-z0-9_.-]{0,63}$"

// ValidID reports whether s has the shape of a workflow, step or segment
// id; IDRule says what that shape is.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// IDRule is the rule ValidID checks, for error messages.
const IDRule = idRule

// TriggerEvents are the FHIR event kinds a trigger may name.
var TriggerEvents = []string{
	"eob.received",
	"appointment.booked",
	"appointment.rescheduled",
	"appointment.cancelled",
	"appointment.fulfilled",
	"appointment.noshow",
}

// Registry is what validation checks names against.
type Registry struct {
	Channels map[string]bool // e.g. {"email": true}: what this version delivers
	// Configured, when set, are the channels this deployment has set up
	// (SMS needs a provider); a send or fallback on one of Channels it
	// lacks is a problem, since every notice of it would fail. Nil: all of
	// Channels.
	Configured map[string]bool
	Templates  map[string]bool // e.g. {"eob.notice": true, ...}
	// Workflow says whether a workflow with this id exists, for a goto that
	// starts another workflow; nil means none exists.
	Workflow func(id string) bool
	// NeedsSubject says whether a template describes the run's EOB or
	// appointment; when set, such a send step in a workflow started by an
	// API event or a segment (runs without one) is a problem.
	NeedsSubject func(template string) bool
	// SMSSender says whether a sender name may go in an SMS; when set, a
	// workflow that texts (an sms step or fallback) with a name it refuses
	// is a problem.
	SMSSender func(name string) bool
}

// Problem is one thing wrong with a definition. Step is the step's id, or
// "steps[i]" for a step without one; Field is the JSON path inside the step
// (or inside the definition when Step is empty).
type Problem struct {
	Step    string `json:"step,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// String reads "step wait-72h: window.from: must be HH:MM".
func (p Problem) String() string {
	var b strings.Builder
	if p.Step != "" {
		b.WriteString("step ")
		b.WriteString(p.Step)
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// ValidationError carries every problem Validate found. Use it as a
// *ValidationError; it unwraps to ErrInvalid.
type ValidationError struct{ Problems []Problem }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return ErrInvalid.Error() + ": " + strings.Join(parts, "; ")
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

// stepFields are the fields each step type may set (besides id and type).
var stepFields = map[string][]string{
	StepSend:         {"next", "channel", "template", "fallback"},
	StepWait:         {"next", "duration", "until", "relative", "next_day", "window", "if_passed"},
	StepWaitEvent:    {"next", "events", "timeout", "on_timeout"},
	StepBranch:       {"conditions", "else"},
	StepGoto:         {"target", "workflow"},
	StepAddToSegment: {"next", "segment"},
	StepEnd:          {"reason"},
}

// setFields lists the type-dependent fields a step sets, by JSON name.
func setFields(s Step) []string {
	var out []string
	add := func(name string, set bool) {
		if set {
			out = append(out, name)
		}
	}
	add("next", s.Next != "")
	add("channel", s.Channel != "")
	add("template", s.Template != "")
	add("fallback", s.Fallback != nil)
	add("duration", s.Duration != "")
	add("until", s.Until != "")
	add("relative", s.Relative != nil)
	add("next_day", s.NextDay)
	add("window", s.Window != nil)
	add("if_passed", s.IfPassed != "")
	add("events", len(s.Events) > 0)
	add("timeout", s.Timeout != "")
	add("on_timeout", s.OnTimeout != "")
	add("conditions", len(s.Conditions) > 0)
	add("else", s.Else != "")
	add("target", s.Target != "")
	add("workflow", s.Workflow != "")
	add("segment", s.Segment != "")
	add("reason", s.Reason != "")
	return out
}

// Predicate operators.
var predicateOps = []string{"eq", "ne", "in", "exists", "missing", "true", "false"}

// validator gathers problems; it never stops at the first.
type validator struct {
	d        Definition
	r        Registry
	index    map[string]int // first step with each id
	problems []Problem
}

func (v *validator) add(step, field, msg string) {
	v.problems = append(v.problems, Problem{Step: step, Field: field, Message: msg})
}

// Validate reports every problem of d at once, in a stable order:
// the definition's own fields, then each step in order, then the shape of
// the step graph (unreachable steps, paths with no end). It returns nil when
// d is valid. A valid definition never makes Advance fail or panic.
func Validate(d Definition, r Registry) []Problem {
	v := &validator{d: d, r: r, index: make(map[string]int, len(d.Steps))}
	v.definition()
	v.smsWindow()
	v.smsSender()
	for i, s := range d.Steps {
		if s.ID == "" {
			continue
		}
		if _, dup := v.index[s.ID]; !dup {
			v.index[s.ID] = i
		}
	}
	seen := make(map[string]bool, len(d.Steps))
	for i, s := range d.Steps {
		v.step(i, s, seen)
	}
	v.graph()
	return v.problems
}

func (v *validator) definition() {
	d := v.d
	switch {
	case d.ID == "":
		v.add("", "id", "a workflow id is required")
	case !idPattern.MatchString(d.ID):
		v.add("", "id", idRule)
	}
	set := 0
	for _, f := range []string{d.Trigger.Event, d.Trigger.APIEvent, d.Trigger.Segment} {
		if f != "" {
			set++
		}
	}
	if set != 1 {
		v.add("", "trigger", "exactly one of event, api_event or segment must be set")
	}
	if d.Trigger.Event != "" && !slices.Contains(TriggerEvents, d.Trigger.Event) {
		v.add("", "trigger.event", "unknown trigger event (one of "+strings.Join(TriggerEvents, ", ")+")")
	}
	switch d.Priority {
	case "", PriorityHigh, PriorityNormal, PriorityLow:
	default:
		v.add("", "priority", "must be high, normal or low")
	}
	switch d.Purpose {
	case "", "payment", "treatment", "operations", PurposeMarketing:
	default:
		v.add("", "purpose", "must be payment, treatment, operations or marketing")
	}
	v.tracking()
	if d.TimeZone != "" {
		if _, err := loadZone(d.TimeZone); err != nil {
			v.add("", "time_zone", "not a loadable IANA time zone")
		}
	}
	if d.LateAfter != "" {
		if la, err := ParseDuration(d.LateAfter); err != nil {
			v.add("", "late_after", "not a duration")
		} else if la < 0 {
			v.add("", "late_after", "must not be negative")
		}
	}
	if d.Sender.From != "" {
		if _, err := mail.ParseAddress(d.Sender.From); err != nil {
			v.add("", "sender.from", "not an email address")
		}
	}
	if d.Sender.ReplyTo != "" {
		if _, err := mail.ParseAddress(d.Sender.ReplyTo); err != nil {
			v.add("", "sender.reply_to", "not an email address")
		}
	}
	if len(d.Steps) == 0 {
		v.add("", "steps", "a workflow needs at least one step")
	}
}

// label names a step in problems: its id, or its position when it has none.
func label(i int, s Step) string {
	if s.ID == "" {
		return "steps[" + strconv.Itoa(i) + "]"
	}
	return s.ID
}

func (v *validator) step(i int, s Step, seen map[string]bool) {
	at := label(i, s)
	switch {
	case s.ID == "":
		v.add(at, "id", "a step id is required")
	case !idPattern.MatchString(s.ID):
		v.add(at, "id", idRule)
	case seen[s.ID]:
		v.add(at, "id", "duplicate step id")
	}
	seen[s.ID] = true

	allowed, known := stepFields[s.Type]
	if !known {
		if s.Type == "" {
			v.add(at, "type", "a step type is required")
		} else {
			v.add(at, "type", "unknown step type")
		}
		return
	}
	for _, f := range setFields(s) {
		if !slices.Contains(allowed, f) {
			v.add(at, f, "does not belong to a step of type "+s.Type)
		}
	}
	v.ref(at, "next", s.Next)

	switch s.Type {
	case StepSend:
		v.known(at, "channel", s.Channel, v.r.Channels)
		if v.r.Channels[s.Channel] && !v.r.deployed(s.Channel) {
			v.add(at, "channel", notConfigured(s.Channel))
		}
		v.known(at, "template", s.Template, v.r.Templates)
		v.fallback(at, s)
		if v.r.NeedsSubject != nil && v.r.NeedsSubject(s.Template) && v.d.Trigger.Event == "" &&
			(v.d.Trigger.APIEvent != "" || v.d.Trigger.Segment != "") {
			// The template describes an EOB or an appointment, which a run
			// started for a patient alone does not have.
			v.add(at, "template", "this template needs an EOB or an appointment; a workflow started by an API event or a segment has neither")
		}
	case StepWait:
		v.wait(at, s)
	case StepWaitEvent:
		if len(s.Events) == 0 {
			v.add(at, "events", "a wait_event needs at least one event")
		}
		for j, e := range s.Events {
			if e == "" {
				v.add(at, "events["+strconv.Itoa(j)+"]", "an event type is required")
			}
		}
		if s.Timeout == "" {
			v.add(at, "timeout", "a wait_event needs a timeout, or it may wait forever")
		} else if t, err := ParseDuration(s.Timeout); err != nil {
			v.add(at, "timeout", "not a duration")
		} else if t <= 0 {
			v.add(at, "timeout", "must be positive")
		}
		v.ref(at, "on_timeout", s.OnTimeout)
	case StepBranch:
		v.branch(at, s)
	case StepGoto:
		v.gotoStep(at, s)
	case StepAddToSegment:
		if s.Segment == "" {
			v.add(at, "segment", "required for an add_to_segment step")
		}
	}
}

// known checks a required name against a registry set.
func (v *validator) known(at, field, name string, set map[string]bool) {
	switch {
	case name == "":
		v.add(at, field, "required for a send step")
	case !set[name]:
		v.add(at, field, "unknown "+field)
	}
}

// deployed reports whether the deployment has set channel up: always,
// when the registry names no Configured channels.
func (r Registry) deployed(channel string) bool { return r.Configured == nil || r.Configured[channel] }

// notConfigured is the problem of a send or fallback on a channel this
// version delivers and the deployment has not set up.
func notConfigured(channel string) string {
	return "channel " + channel + " is not configured in this deployment: every notice sent on it would fail"
}

// ref checks that a step reference, when set, names a step.
func (v *validator) ref(at, field, target string) {
	if target == "" {
		return
	}
	if _, ok := v.index[target]; !ok {
		v.add(at, field, "points to a missing step")
	}
}

func (v *validator) wait(at string, s Step) {
	kinds := 0
	for _, set := range []bool{s.Duration != "", s.Until != "", s.Relative != nil, s.NextDay} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		v.add(at, "duration", "a wait needs exactly one of duration, until, relative or next_day")
	}
	if s.Duration != "" {
		if dur, err := ParseDuration(s.Duration); err != nil {
			v.add(at, "duration", "not a duration")
		} else if dur < 0 {
			v.add(at, "duration", "must not be negative")
		}
	}
	if s.Until != "" {
		if _, err := time.Parse(time.RFC3339, s.Until); err != nil {
			v.add(at, "until", "not an RFC 3339 instant")
		}
	}
	if rel := s.Relative; rel != nil {
		if rel.Fact != "start" && rel.Fact != "end" {
			v.add(at, "relative.fact", "must be start or end")
		}
		if rel.Offset != "" {
			if _, err := ParseDuration(rel.Offset); err != nil {
				v.add(at, "relative.offset", "not a duration")
			}
		}
	}
	if w := s.Window; w != nil {
		from, errFrom := clock(w.From, false)
		if errFrom != nil {
			v.add(at, "window.from", "must be HH:MM")
		}
		to, errTo := clock(w.To, true)
		if errTo != nil {
			v.add(at, "window.to", "must be HH:MM")
		}
		if errFrom == nil && errTo == nil && from >= to {
			v.add(at, "window.to", "must be after from")
		}
		for j, day := range w.Days {
			if _, err := windowDays([]string{day}); err != nil {
				v.add(at, "window.days["+strconv.Itoa(j)+"]", "must be mon, tue, wed, thu, fri, sat, sun, weekdays, weekends or all")
			}
		}
		if w.TimeZone != "" {
			if _, err := loadZone(w.TimeZone); err != nil {
				v.add(at, "window.time_zone", "not a loadable IANA time zone")
			}
		}
	}
	if s.NextDay && s.IfPassed != "" {
		// Its moment is always ahead and a late wake still sends.
		v.add(at, "if_passed", "a next_day wait never passes")
	}
	v.ref(at, "if_passed", s.IfPassed)
}

func (v *validator) branch(at string, s Step) {
	if len(s.Conditions) == 0 {
		v.add(at, "conditions", "a branch needs at least one condition")
	}
	for i, c := range s.Conditions {
		cf := "conditions[" + strconv.Itoa(i) + "]"
		if len(c.When) == 0 {
			v.add(at, cf+".when", "a condition needs at least one predicate")
		}
		for j, p := range c.When {
			v.predicate(at, cf+".when["+strconv.Itoa(j)+"]", p)
		}
		if c.Next == "" {
			v.add(at, cf+".next", "required for a condition")
		} else {
			v.ref(at, cf+".next", c.Next)
		}
	}
	if s.Else == "" {
		v.add(at, "else", "required for a branch")
	} else {
		v.ref(at, "else", s.Else)
	}
}

func (v *validator) predicate(at, pf string, p Predicate) {
	if _, _, ok := splitField(p.Field); !ok {
		v.add(at, pf+".field", "must be fact.<name>, contact.<name> or engagement.<event type>")
	}
	switch p.Op {
	case "eq", "ne":
		if p.Value == "" {
			v.add(at, pf+".value", "required for op "+p.Op)
		}
		if len(p.Values) > 0 {
			v.add(at, pf+".values", "does not belong with op "+p.Op)
		}
	case "in":
		if len(p.Values) == 0 {
			v.add(at, pf+".values", "required for op in")
		}
		if p.Value != "" {
			v.add(at, pf+".value", "does not belong with op in")
		}
	case "exists", "missing", "true", "false":
		if p.Value != "" {
			v.add(at, pf+".value", "does not belong with op "+p.Op)
		}
		if len(p.Values) > 0 {
			v.add(at, pf+".values", "does not belong with op "+p.Op)
		}
	default:
		v.add(at, pf+".op", "must be one of "+strings.Join(predicateOps, ", "))
	}
}

// splitField splits "fact.status" into its source and name.
func splitField(f string) (source, name string, ok bool) {
	source, name, ok = strings.Cut(f, ".")
	if !ok || name == "" {
		return "", "", false
	}
	switch source {
	case "fact", "contact", "engagement":
		return source, name, true
	}
	return "", "", false
}

func (v *validator) gotoStep(at string, s Step) {
	if (s.Target == "") == (s.Workflow == "") {
		v.add(at, "target", "a goto needs exactly one of target or workflow")
	}
	v.ref(at, "target", s.Target)
	if s.Workflow == "" {
		return
	}
	switch {
	case !idPattern.MatchString(s.Workflow):
		v.add(at, "workflow", "not a workflow id: "+idRule)
	case s.Workflow == v.d.ID:
		v.add(at, "workflow", "a goto may not start its own workflow: a run never re-enters")
	case v.r.Workflow == nil || !v.r.Workflow(s.Workflow):
		v.add(at, "workflow", "unknown workflow")
	}
}

// graph checks reachability from the first step and that every reachable
// step can reach an end. Edges to missing steps were reported already; they
// count as exits here so that one mistake gives one problem.
func (v *validator) graph() {
	steps := v.d.Steps
	n := len(steps)
	if n == 0 {
		return
	}
	succ := make([][]int, n)
	exit := make([]bool, n)
	// follow adds the edge from step i to explicit (or the step listed after
	// i when explicit is empty). report names the field when falling off the
	// end of the list is a problem of step i itself.
	follow := func(i int, explicit, report string) (int, bool) {
		if explicit != "" {
			j, ok := v.index[explicit]
			if !ok {
				exit[i] = true
				return 0, false
			}
			succ[i] = append(succ[i], j)
			return j, true
		}
		if i+1 < n {
			succ[i] = append(succ[i], i+1)
			return i + 1, true
		}
		exit[i] = true
		if report != "" {
			v.add(label(i, steps[i]), report, "the last step falls through with no next: the path has no end")
		}
		return 0, false
	}
	for i, s := range steps {
		switch s.Type {
		case StepSend, StepAddToSegment:
			follow(i, s.Next, "next")
		case StepWait:
			j, ok := follow(i, s.Next, "next")
			switch {
			case s.IfPassed != "":
				follow(i, s.IfPassed, "")
			case ok && steps[j].Type == StepSend:
				// A passed wait skips the send after it; that send's own
				// fall-through is reported on the send.
				k, ok := v.nextIndex(j)
				if ok {
					succ[i] = append(succ[i], k)
				} else {
					exit[i] = true
				}
			}
		case StepWaitEvent:
			follow(i, s.Next, "next")
			follow(i, s.OnTimeout, "on_timeout")
		case StepBranch:
			for _, c := range s.Conditions {
				if c.Next == "" {
					exit[i] = true
					continue
				}
				follow(i, c.Next, "")
			}
			if s.Else == "" {
				exit[i] = true
			} else {
				follow(i, s.Else, "")
			}
		case StepGoto:
			if s.Target != "" && s.Workflow == "" {
				follow(i, s.Target, "")
			} else {
				exit[i] = true
			}
		default: // end, and unknown types (reported)
			exit[i] = true
		}
	}

	reachable := make([]bool, n)
	queue := []int{0}
	reachable[0] = true
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, j := range succ[i] {
			if !reachable[j] {
				reachable[j] = true
				queue = append(queue, j)
			}
		}
	}
	pred := make([][]int, n)
	for i, js := range succ {
		for _, j := range js {
			pred[j] = append(pred[j], i)
		}
	}
	ends := make([]bool, n)
	queue = queue[:0]
	for i := range exit {
		if exit[i] {
			ends[i] = true
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		j := queue[0]
		queue = queue[1:]
		for _, i := range pred[j] {
			if !ends[i] {
				ends[i] = true
				queue = append(queue, i)
			}
		}
	}
	for i, s := range steps {
		switch {
		case !reachable[i]:
			v.add(label(i, s), "", "unreachable from the first step")
		case !ends[i]:
			v.add(label(i, s), "", "no end step and no goto to a workflow can be reached from this step")
		}
	}
}

// nextIndex is where step j continues by default (its next, or the step
// listed after it).
func (v *validator) nextIndex(j int) (int, bool) {
	s := v.d.Steps[j]
	if s.Next != "" {
		k, ok := v.index[s.Next]
		return k, ok
	}
	if j+1 < len(v.d.Steps) {
		return j + 1, true
	}
	return 0, false
}
