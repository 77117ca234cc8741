package workflow

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// manyProblems breaks nearly every rule at once.
const manyProblems = `{
  "id": "Bad Id",
  "trigger": {"event": "appointment.exploded", "segment": "vip"},
  "priority": "urgent",
  "purpose": "advertising",
  "time_zone": "Mars/Olympus_Mons",
  "late_after": "soon",
  "sender": {"name": "Clinic", "from": "not an address", "reply_to": "also not"},
  "steps": [
    {"id": "start", "type": "send", "channel": "pigeon", "template": "t.missing", "duration": "1h"},
    {"id": "start", "type": "send"},
    {"id": "w1", "type": "wait", "duration": "1h", "until": "tomorrow", "next": "nowhere"},
    {"id": "w2", "type": "wait", "relative": {"fact": "birthday", "offset": "-3x"},
     "window": {"days": ["funday", "sun"], "from": "9am", "to": "18:00", "time_zone": "Nowhere/City"}, "if_passed": "ghost"},
    {"id": "w3", "type": "wait", "duration": "-1h", "window": {"from": "18:00", "to": "09:00"}},
    {"id": "w4", "type": "wait"},
    {"id": "ev", "type": "wait_event", "events": [""], "timeout": "0s", "on_timeout": "gone", "segment": "vip"},
    {"id": "ev2", "type": "wait_event", "next": "br"},
    {"id": "br", "type": "branch", "next": "start", "conditions": [
      {"when": [{"field": "mood.happy", "op": "eq"}, {"field": "fact.status", "op": "like", "value": "x"},
                {"field": "engagement.opened", "op": "true", "value": "yes"}, {"field": "contact.", "op": "in"}],
       "next": "missing-arm"},
      {"when": [], "next": "g1"}]},
    {"id": "br2", "type": "branch"},
    {"id": "g1", "type": "goto", "target": "start", "workflow": "other"},
    {"id": "g2", "type": "goto"},
    {"id": "g3", "type": "goto", "workflow": "unknown-flow"},
    {"id": "g4", "type": "goto", "workflow": "Bad Id"},
    {"id": "seg", "type": "add_to_segment", "reason": "why"},
    {"id": "Bad_Step", "type": "teleport"},
    {"type": "end"},
    {"id": "", "type": ""},
    {"id": "tail", "type": "send", "channel": "email", "template": "t.one"}
  ]
}`

func TestValidateReportsEveryProblem(t *testing.T) {
	d, err := Parse([]byte(manyProblems))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := Validate(d, testRegistry())
	want := []Problem{
		{"", "id", idRule},
		{"", "trigger", "exactly one of event, api_event or segment must be set"},
		{"", "trigger.event", "unknown trigger event (one of " + strings.Join(TriggerEvents, ", ") + ")"},
		{"", "priority", "must be high, normal or low"},
		{"", "purpose", "must be payment, treatment, operations or marketing"},
		{"", "time_zone", "not a loadable IANA time zone"},
		{"", "late_after", "not a duration"},
		{"", "sender.from", "not an email address"},
		{"", "sender.reply_to", "not an email address"},

		{"start", "duration", "does not belong to a step of type send"},
		{"start", "channel", "unknown channel"},
		{"start", "template", "unknown template"},
		{"start", "id", "duplicate step id"},
		{"start", "channel", "required for a send step"},
		{"start", "template", "required for a send step"},

		{"w1", "next", "points to a missing step"},
		{"w1", "duration", "a wait needs exactly one of duration, until, relative or next_day"},
		{"w1", "until", "not an RFC 3339 instant"},

		{"w2", "relative.fact", "must be start or end"},
		{"w2", "relative.offset", "not a duration"},
		{"w2", "window.from", "must be HH:MM"},
		{"w2", "window.days[0]", "must be mon, tue, wed, thu, fri, sat, sun, weekdays, weekends or all"},
		{"w2", "window.time_zone", "not a loadable IANA time zone"},
		{"w2", "if_passed", "points to a missing step"},

		{"w3", "duration", "must not be negative"},
		{"w3", "window.to", "must be after from"},

		{"w4", "duration", "a wait needs exactly one of duration, until, relative or next_day"},

		{"ev", "segment", "does not belong to a step of type wait_event"},
		{"ev", "events[0]", "an event type is required"},
		{"ev", "timeout", "must be positive"},
		{"ev", "on_timeout", "points to a missing step"},

		{"ev2", "events", "a wait_event needs at least one event"},
		{"ev2", "timeout", "a wait_event needs a timeout, or it may wait forever"},

		{"br", "next", "does not belong to a step of type branch"},
		{"br", "conditions[0].when[0].field", "must be fact.<name>, contact.<name> or engagement.<event type>"},
		{"br", "conditions[0].when[0].value", "required for op eq"},
		{"br", "conditions[0].when[1].op", "must be one of eq, ne, in, exists, missing, true, false"},
		{"br", "conditions[0].when[2].value", "does not belong with op true"},
		{"br", "conditions[0].when[3].field", "must be fact.<name>, contact.<name> or engagement.<event type>"},
		{"br", "conditions[0].when[3].values", "required for op in"},
		{"br", "conditions[0].next", "points to a missing step"},
		{"br", "conditions[1].when", "a condition needs at least one predicate"},
		{"br", "else", "required for a branch"},

		{"br2", "conditions", "a branch needs at least one condition"},
		{"br2", "else", "required for a branch"},

		{"g1", "target", "a goto needs exactly one of target or workflow"},
		{"g2", "target", "a goto needs exactly one of target or workflow"},
		{"g3", "workflow", "unknown workflow"},
		{"g4", "workflow", "not a workflow id: " + idRule},

		{"seg", "reason", "does not belong to a step of type add_to_segment"},
		{"seg", "segment", "required for an add_to_segment step"},

		{"Bad_Step", "id", idRule},
		{"Bad_Step", "type", "unknown step type"},
		{"steps[16]", "id", "a step id is required"},
		{"steps[17]", "id", "a step id is required"},
		{"steps[17]", "type", "a step type is required"},

		// The graph: the first step falls through to the duplicate start
		// and on to w1, whose next points nowhere (reported above, and an
		// exit for the graph). Nothing else is reached.
		{"tail", "next", "the last step falls through with no next: the path has no end"},
		{"w2", "", "unreachable from the first step"},
		{"w3", "", "unreachable from the first step"},
		{"w4", "", "unreachable from the first step"},
		{"ev", "", "unreachable from the first step"},
		{"ev2", "", "unreachable from the first step"},
		{"br", "", "unreachable from the first step"},
		{"g1", "", "unreachable from the first step"},
		{"br2", "", "unreachable from the first step"},
		{"g2", "", "unreachable from the first step"},
		{"g3", "", "unreachable from the first step"},
		{"g4", "", "unreachable from the first step"},
		{"seg", "", "unreachable from the first step"},
		{"Bad_Step", "", "unreachable from the first step"},
		{"steps[16]", "", "unreachable from the first step"},
		{"steps[17]", "", "unreachable from the first step"},
		{"tail", "", "unreachable from the first step"},
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing problem %s", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("unexpected problem %s", g)
		}
	}

	// The error form carries them all and is recognisable.
	var err2 error = &ValidationError{Problems: got}
	var ve *ValidationError
	if !errors.As(fmt.Errorf("saving: %w", err2), &ve) || len(ve.Problems) != len(got) {
		t.Errorf("errors.As did not find the ValidationError")
	}
	if !errors.Is(err2, ErrInvalid) {
		t.Errorf("ValidationError does not unwrap to ErrInvalid")
	}
	if msg := err2.Error(); !strings.Contains(msg, "step w3: window.to: must be after from") || strings.Count(msg, "; ") != len(got)-1 {
		t.Errorf("Error() = %q", msg)
	}
}

// validBase is a small valid workflow that each case below breaks in one way.
func validBase() Definition {
	return Definition{
		ID:      "base",
		Trigger: Trigger{Event: "appointment.booked"},
		Steps: []Step{
			{ID: "a", Type: StepSend, Channel: "email", Template: "t.one"},
			{ID: "b", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "2d", Next: "c", OnTimeout: "d"},
			{ID: "c", Type: StepEnd},
			{ID: "d", Type: StepEnd, Reason: "ignored"},
		},
	}
}

func TestValidateOneProblemEach(t *testing.T) {
	if ps := Validate(validBase(), testRegistry()); len(ps) > 0 {
		t.Fatalf("base is not valid: %v", ps)
	}
	tests := []struct {
		name   string
		change func(d *Definition)
		want   []Problem
	}{
		{"no steps", func(d *Definition) { d.Steps = nil }, []Problem{{"", "steps", "a workflow needs at least one step"}}},
		{"missing workflow id", func(d *Definition) { d.ID = "" }, []Problem{{"", "id", "a workflow id is required"}}},
		{"workflow id too long", func(d *Definition) { d.ID = strings.Repeat("a", 65) }, []Problem{{"", "id", idRule}}},
		{"no trigger", func(d *Definition) { d.Trigger = Trigger{} }, []Problem{{"", "trigger", "exactly one of event, api_event or segment must be set"}}},
		{"api event trigger", func(d *Definition) { d.Trigger = Trigger{APIEvent: "portal.login"} }, nil},
		{"segment trigger", func(d *Definition) { d.Trigger = Trigger{Segment: "vip"} }, nil},
		{"two triggers", func(d *Definition) { d.Trigger.APIEvent = "portal.login" }, []Problem{{"", "trigger", "exactly one of event, api_event or segment must be set"}}},
		{"every allowed trigger event", func(d *Definition) {}, nil},
		{"local time zone refused", func(d *Definition) { d.TimeZone = "Local" }, []Problem{{"", "time_zone", "not a loadable IANA time zone"}}},
		{"negative late_after", func(d *Definition) { d.LateAfter = "-1h" }, []Problem{{"", "late_after", "must not be negative"}}},
		{"priorities", func(d *Definition) { d.Priority = PriorityLow }, nil},
		{"step id with capitals", func(d *Definition) { d.Steps[2].ID = "C"; d.Steps[1].Next = "C" }, []Problem{{"C", "id", idRule}}},
		{"duplicate id", func(d *Definition) { d.Steps[3].ID = "c" }, []Problem{
			// b's on_timeout "d" is gone, and the second c is reached by nothing.
			{"b", "on_timeout", "points to a missing step"},
			{"c", "id", "duplicate step id"},
			{"c", "", "unreachable from the first step"},
		}},
		{"unknown channel", func(d *Definition) { d.Steps[0].Channel = "fax" }, []Problem{{"a", "channel", "unknown channel"}}},
		{"nil registry knows nothing", func(d *Definition) {}, nil},
		{"send with a window", func(d *Definition) { d.Steps[0].Window = &Window{From: "09:00", To: "10:00"} }, []Problem{{"a", "window", "does not belong to a step of type send"}}},
		{"end with next", func(d *Definition) { d.Steps[2].Next = "d" }, []Problem{{"c", "next", "does not belong to a step of type end"}}},
		{"wait_event without timeout", func(d *Definition) { d.Steps[1].Timeout = "" }, []Problem{{"b", "timeout", "a wait_event needs a timeout, or it may wait forever"}}},
		{"wait_event bad timeout", func(d *Definition) { d.Steps[1].Timeout = "a week" }, []Problem{{"b", "timeout", "not a duration"}}},
		{"unreachable step", func(d *Definition) { d.Steps[1].OnTimeout = "c" }, []Problem{{"d", "", "unreachable from the first step"}}},
		{"last step falls through", func(d *Definition) {
			d.Steps = d.Steps[:1]
		}, []Problem{{"a", "next", "the last step falls through with no next: the path has no end"}}},
		{"last wait_event times out into nothing", func(d *Definition) {
			d.Steps = []Step{d.Steps[1], d.Steps[2]}
			d.Steps[0].OnTimeout = ""
			d.Steps = []Step{d.Steps[1], d.Steps[0]}
			d.Steps[0] = Step{ID: "start", Type: StepGoto, Target: "b"}
		}, []Problem{{"b", "next", "points to a missing step"}, {"b", "on_timeout", "the last step falls through with no next: the path has no end"}}},
		{"cycle with no way out", func(d *Definition) {
			d.Steps = []Step{
				{ID: "a", Type: StepSend, Channel: "email", Template: "t.one"},
				{ID: "b", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "1d", Next: "a", OnTimeout: "again"},
				{ID: "again", Type: StepGoto, Target: "a"},
			}
		}, []Problem{
			{"a", "", "no end step and no goto to a workflow can be reached from this step"},
			{"b", "", "no end step and no goto to a workflow can be reached from this step"},
			{"again", "", "no end step and no goto to a workflow can be reached from this step"},
		}},
		{"cycle with a way out is fine", func(d *Definition) {
			d.Steps = []Step{
				{ID: "a", Type: StepSend, Channel: "email", Template: "t.one"},
				{ID: "b", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "1d", Next: "done", OnTimeout: "again"},
				{ID: "again", Type: StepGoto, Target: "a"},
				{ID: "done", Type: StepEnd},
			}
		}, nil},
		{"goto workflow is an end", func(d *Definition) {
			d.Steps = []Step{{ID: "a", Type: StepGoto, Workflow: "other"}}
		}, nil},
		{"goto own workflow", func(d *Definition) {
			d.Steps = []Step{{ID: "a", Type: StepGoto, Workflow: "base"}}
		}, []Problem{{"a", "workflow", "a goto may not start its own workflow: a run never re-enters"}}},
		{"goto missing target", func(d *Definition) {
			d.Steps = []Step{{ID: "a", Type: StepGoto, Target: "z"}}
		}, []Problem{{"a", "target", "points to a missing step"}}},
		{"a passed wait skipping a send into nothing", func(d *Definition) {
			d.Steps = []Step{
				{ID: "w", Type: StepWait, Duration: "1h", Next: "s"},
				{ID: "x", Type: StepEnd},
				{ID: "s", Type: StepSend, Channel: "email", Template: "t.one"},
			}
		}, []Problem{
			{"s", "next", "the last step falls through with no next: the path has no end"},
			// Neither the wait's time path (to s) nor its passed path (past s) reaches x.
			{"x", "", "unreachable from the first step"},
		}},
		{"wait relative with empty offset", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, Relative: &Relative{Fact: "end"}}
		}, nil},
		{"wait next_day with a window", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, NextDay: true, Window: &Window{Days: []string{"weekdays"}, From: "09:00", To: "18:00"}}
		}, nil},
		{"wait next_day without a window (midnight)", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, NextDay: true}
		}, nil},
		{"wait next_day and a duration", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, NextDay: true, Duration: "24h"}
		}, []Problem{{"a", "duration", "a wait needs exactly one of duration, until, relative or next_day"}}},
		{"wait next_day and relative", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, NextDay: true, Relative: &Relative{Fact: "start", Offset: "-1h"}}
		}, []Problem{{"a", "duration", "a wait needs exactly one of duration, until, relative or next_day"}}},
		{"wait next_day with if_passed", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, NextDay: true, IfPassed: "c"}
		}, []Problem{{"a", "if_passed", "a next_day wait never passes"}}},
		{"send with next_day", func(d *Definition) { d.Steps[0].NextDay = true }, []Problem{{"a", "next_day", "does not belong to a step of type send"}}},
		{"window days and 24:00", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepWait, Duration: "1d", Window: &Window{Days: []string{"mon", "weekends", "all"}, From: "00:00", To: "24:00", TimeZone: "Europe/London"}}
		}, nil},
		{"every predicate op", func(d *Definition) {
			d.Steps[0] = Step{ID: "a", Type: StepBranch, Else: "b", Conditions: []Condition{
				{When: []Predicate{{Field: "fact.status", Op: "eq", Value: "x"}, {Field: "fact.status", Op: "ne", Value: "y"}}, Next: "c"},
				{When: []Predicate{{Field: "contact.language", Op: "in", Values: []string{"en"}}, {Field: "contact.time_zone", Op: "exists"}}, Next: "c"},
				{When: []Predicate{{Field: "contact.plan", Op: "missing"}, {Field: "engagement.opened", Op: "true"}, {Field: "engagement.clicked", Op: "false"}}, Next: "d"},
			}}
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := validBase()
			tc.change(&d)
			reg := testRegistry()
			if tc.name == "nil registry knows nothing" {
				reg = Registry{}
				tc.want = []Problem{{"a", "channel", "unknown channel"}, {"a", "template", "unknown template"}}
			}
			got := Validate(d, reg)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate =\n  %v\nwant\n  %v", got, tc.want)
			}
		})
	}
}

func TestValidateGotoWorkflowWithNilRegistryFunc(t *testing.T) {
	d := Definition{ID: "x", Trigger: Trigger{Segment: "s"}, Steps: []Step{{ID: "a", Type: StepGoto, Workflow: "other"}}}
	got := Validate(d, Registry{})
	want := []Problem{{"a", "workflow", "unknown workflow"}}
	if !slices.Equal(got, want) {
		t.Errorf("Validate = %v, want %v", got, want)
	}
}

func TestValidateAcceptsEveryTriggerEvent(t *testing.T) {
	for _, ev := range TriggerEvents {
		d := validBase()
		d.Trigger = Trigger{Event: ev}
		if ps := Validate(d, testRegistry()); len(ps) > 0 {
			t.Errorf("trigger %s: %v", ev, ps)
		}
	}
	d := validBase()
	d.Trigger = Trigger{Event: "patient.created"}
	if ps := Validate(d, testRegistry()); len(ps) != 1 || ps[0].Field != "trigger.event" {
		t.Errorf("unknown trigger event: %v", ps)
	}
}
