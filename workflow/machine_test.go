package workflow

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"
)

// t0 is a Monday morning, UTC.
var t0 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// def builds a valid definition from steps (the test fails when it is not).
func def(tb testing.TB, steps ...Step) Definition {
	tb.Helper()
	d := Definition{ID: "flow", Trigger: Trigger{Segment: "everyone"}, Steps: steps}
	if ps := Validate(d, testRegistry()); len(ps) > 0 {
		tb.Fatalf("test definition is not valid: %v", ps)
	}
	return d
}

func send(id, next string) Step {
	return Step{ID: id, Type: StepSend, Channel: "email", Template: "t.one", Next: next}
}

func end(id, reason string) Step { return Step{ID: id, Type: StepEnd, Reason: reason} }

func sent(step string) Action {
	return Action{Type: ActionSend, Step: step, Channel: "email", Template: "t.one"}
}

// checkAfter asserts what holds after every Advance: the run waits (with a
// time or events) or has ended, and never executed a step twice.
func checkAfter(tb testing.TB, st State) {
	tb.Helper()
	switch st.Status {
	case StatusWaiting:
		if st.WaitUntil.IsZero() && len(st.WaitingFor) == 0 {
			tb.Fatalf("waiting with neither a time nor events: %+v", st)
		}
	case StatusEnded:
		if !st.WaitUntil.IsZero() || len(st.WaitingFor) > 0 || st.Outcome == "" {
			tb.Fatalf("ended with a wait or without an outcome: %+v", st)
		}
	default:
		tb.Fatalf("status %q after Advance", st.Status)
	}
	seen := map[string]bool{}
	for _, s := range st.Visited {
		if seen[s] {
			tb.Fatalf("step %s visited twice: %v", s, st.Visited)
		}
		seen[s] = true
	}
}

// walk applies inputs in order from a fresh run and returns the last state
// and every action. It checks that Advance leaves its argument alone.
func walk(tb testing.TB, d Definition, inputs ...Input) (State, []Action) {
	tb.Helper()
	var st State
	var all []Action
	for i, in := range inputs {
		before := cloneState(st)
		next, acts, err := Advance(d, st, in)
		if err != nil {
			tb.Fatalf("input %d (%s): %v", i, in.Kind, err)
		}
		if !reflect.DeepEqual(before, st) {
			tb.Fatalf("input %d: Advance changed its argument", i)
		}
		checkAfter(tb, next)
		st = next
		all = append(all, acts...)
	}
	return st, all
}

func start(now time.Time) Input           { return Input{Kind: InputStart, Now: now} }
func wake(now time.Time) Input            { return Input{Kind: InputWake, Now: now} }
func event(now time.Time, e string) Input { return Input{Kind: InputEvent, Now: now, Event: e} }

func withFacts(in Input, f Facts) Input     { in.Facts = f; return in }
func withContact(in Input, c Contact) Input { in.Contact = c; return in }

func TestAdvance(t *testing.T) {
	past := t0.Add(-time.Hour).Format(time.RFC3339)
	tests := []struct {
		name    string
		d       Definition
		inputs  []Input
		want    State
		actions []Action
	}{
		{
			name:    "send then end",
			d:       def(t, send("a", ""), end("done", "")),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"a", "done"}, Outcome: OutcomeCompleted},
			actions: []Action{sent("a")},
		},
		{
			name:   "end with a reason",
			d:      def(t, end("bye", "unsubscribed")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusEnded, Step: "bye", Visited: []string{"bye"}, Outcome: "unsubscribed"},
		},
		{
			name: "send follows next, not the listing",
			d: def(t, send("a", "c"), send("b", "done"),
				Step{ID: "c", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "1h", Next: "done", OnTimeout: "b"}, end("done", "")),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusWaiting, Step: "c", Visited: []string{"a", "c"}, WaitUntil: at(time.Hour), WaitingFor: []string{"opened"}},
			actions: []Action{sent("a")},
		},
		{
			name:    "add to segment",
			d:       def(t, Step{ID: "seg", Type: StepAddToSegment, Segment: "vip"}, end("done", "")),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"seg", "done"}, Outcome: OutcomeCompleted},
			actions: []Action{{Type: ActionAddToSegment, Step: "seg", Segment: "vip"}},
		},
		{
			name:   "wait duration: waits",
			d:      def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: at(2 * time.Hour)},
		},
		{
			name:   "wait duration: an early wake changes nothing",
			d:      def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0), wake(at(time.Hour))},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: at(2 * time.Hour)},
		},
		{
			name:    "wait duration: due wake continues",
			d:       def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs:  []Input{start(t0), wake(at(2 * time.Hour))},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"w", "s", "done"}, Happened: map[string]string{"w": HappenedTime}, Outcome: OutcomeCompleted},
			actions: []Action{sent("s")},
		},
		{
			name:    "wait duration: a wake exactly LateAfter (1h) late is on time",
			d:       def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs:  []Input{start(t0), wake(at(3 * time.Hour))},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"w", "s", "done"}, Happened: map[string]string{"w": HappenedTime}, Outcome: OutcomeCompleted},
			actions: []Action{sent("s")},
		},
		{
			name:   "late wake beyond LateAfter: the reminder is skipped",
			d:      def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0), wake(at(3*time.Hour + time.Second))},
			want:   State{Status: StatusEnded, Step: "done", Visited: []string{"w", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
		},
		{
			name: "late wake beyond a custom LateAfter",
			d: func() Definition {
				d := def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", ""))
				d.LateAfter = "10m"
				return d
			}(),
			inputs: []Input{start(t0), wake(at(2*time.Hour + 11*time.Minute))},
			want:   State{Status: StatusEnded, Step: "done", Visited: []string{"w", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
		},
		{
			name:   "wait until: waits for the instant",
			d:      def(t, Step{ID: "w", Type: StepWait, Until: "2026-01-07T15:30:00+01:00"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 7, 14, 30, 0, 0, time.UTC)},
		},
		{
			name:   "wait until passed at entry: the send after it is skipped",
			d:      def(t, Step{ID: "w", Type: StepWait, Until: past}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusEnded, Step: "done", Visited: []string{"w", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
		},
		{
			name:   "wait until exactly now is not passed",
			d:      def(t, Step{ID: "w", Type: StepWait, Until: t0.Format(time.RFC3339)}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: t0},
		},
		{
			name:    "passed goes to if_passed",
			d:       def(t, Step{ID: "w", Type: StepWait, Until: past, IfPassed: "late"}, send("s", ""), end("done", ""), Step{ID: "late", Type: StepSend, Channel: "sms", Template: "t.two", Next: "done"}),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"w", "late", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
			actions: []Action{{Type: ActionSend, Step: "late", Channel: "sms", Template: "t.two"}},
		},
		{
			name:    "passed with no send after the wait goes to next",
			d:       def(t, Step{ID: "w", Type: StepWait, Until: past}, Step{ID: "seg", Type: StepAddToSegment, Segment: "lapsed"}, end("done", "")),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"w", "seg", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
			actions: []Action{{Type: ActionAddToSegment, Step: "seg", Segment: "lapsed"}},
		},
		{
			name: "passed skips the send to that send's next",
			d: def(t, Step{ID: "b", Type: StepBranch, Else: "w", Conditions: []Condition{{When: []Predicate{{Field: "fact.kind", Op: "eq", Value: "other"}}, Next: "x"}}},
				Step{ID: "w", Type: StepWait, Until: past}, send("s", "done"), end("x", "wrong"), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusEnded, Step: "done", Visited: []string{"b", "w", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
		},
		{
			name:   "wait relative: start minus offset",
			d:      def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-1d"}}, send("s", ""), end("done", "")),
			inputs: []Input{withFacts(start(t0), Facts{"start": "2026-01-09T08:30:00-06:00"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 8, 14, 30, 0, 0, time.UTC)},
		},
		{
			name:   "wait relative: empty offset is the fact itself",
			d:      def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "end"}}, send("s", ""), end("done", "")),
			inputs: []Input{withFacts(start(t0), Facts{"end": "2026-01-09T08:30:00Z"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 9, 8, 30, 0, 0, time.UTC)},
		},
		{
			name:    "wait relative: missing fact ends the run",
			d:       def(t, send("a", ""), Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-1d"}}, send("s", ""), end("done", "")),
			inputs:  []Input{withFacts(start(t0), Facts{"end": "2026-01-09T08:30:00Z"})},
			want:    State{Status: StatusEnded, Step: "w", Visited: []string{"a", "w"}, Outcome: OutcomeMissingFact},
			actions: []Action{sent("a")},
		},
		{
			name:   "wait relative: unparseable fact ends the run",
			d:      def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-1d"}}, send("s", ""), end("done", "")),
			inputs: []Input{withFacts(start(t0), Facts{"start": "2026-01-09"})},
			want:   State{Status: StatusEnded, Step: "w", Visited: []string{"w"}, Outcome: OutcomeMissingFact},
		},
		{
			name: "wait relative: a window that pushes a reminder past the appointment skips it",
			d: def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-1h"}, Window: &Window{Days: []string{"all"}, From: "09:00", To: "18:00"}},
				send("s", ""), end("done", "")),
			// Start at 08:00 UTC: the reminder would be 07:00, moved to 09:00, after the start.
			inputs: []Input{withFacts(start(t0), Facts{"start": "2026-01-06T08:00:00Z"})},
			want:   State{Status: StatusEnded, Step: "done", Visited: []string{"w", "done"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeCompleted},
		},
		{
			name: "wait relative: a window before the appointment is kept",
			d: def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-1h"}, Window: &Window{Days: []string{"all"}, From: "09:00", To: "18:00"}},
				send("s", ""), end("done", "")),
			inputs: []Input{withFacts(start(t0), Facts{"start": "2026-01-06T09:30:00Z"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 9, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: the window's own zone first",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00", TimeZone: "Asia/Kolkata"}},
				send("s", ""), end("done", "")),
			// Due Tuesday 10:00 UTC = 15:30 IST: Wednesday 09:00 IST.
			inputs: []Input{withContact(start(t0), Contact{TimeZone: "America/Chicago"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 7, 3, 30, 0, 0, time.UTC)},
		},
		{
			name: "window: then the contact's zone",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00"}},
				send("s", ""), end("done", "")),
			// Due Tuesday 10:00 UTC = 04:00 CST: Tuesday 09:00 CST.
			inputs: []Input{withContact(start(t0), Contact{TimeZone: "America/Chicago"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 15, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: a contact zone that does not load falls back to the workflow's",
			d: func() Definition {
				d := def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00"}}, send("s", ""), end("done", ""))
				d.TimeZone = "Asia/Tokyo"
				return d
			}(),
			// Due Tuesday 10:00 UTC = 19:00 JST: Wednesday 09:00 JST.
			inputs: []Input{withContact(start(t0), Contact{TimeZone: "Mars/Olympus_Mons"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 7, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: else UTC",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "11:00", To: "12:00"}},
				send("s", ""), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 11, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: with no zone, the subject's utc_offset",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00"}},
				send("s", ""), end("done", "")),
			// Due Tuesday 10:00 UTC = 04:00 −06:00: Tuesday 09:00 −06:00.
			inputs: []Input{withFacts(start(t0), Facts{FactUTCOffset: "-06:00"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 15, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: the workflow's zone before the subject's utc_offset",
			d: func() Definition {
				d := def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00"}}, send("s", ""), end("done", ""))
				d.TimeZone = "Asia/Tokyo"
				return d
			}(),
			inputs: []Input{withFacts(start(t0), Facts{FactUTCOffset: "-06:00"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 7, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: the contact's zone before the subject's utc_offset",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00"}},
				send("s", ""), end("done", "")),
			// Due Tuesday 10:00 UTC = 19:00 JST: Wednesday 09:00 JST.
			inputs: []Input{withContact(withFacts(start(t0), Facts{FactUTCOffset: "-06:00"}), Contact{TimeZone: "Asia/Tokyo"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 7, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "window: a utc_offset that does not read falls back to UTC",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "24h", Window: &Window{From: "09:00", To: "12:00"}},
				send("s", ""), end("done", "")),
			// Due Tuesday 10:00 UTC, inside 09:00–12:00 UTC.
			inputs: []Input{withFacts(start(t0), Facts{FactUTCOffset: "-6:00"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 10, 0, 0, 0, time.UTC)},
		},
		{
			name:   "next_day without a window: midnight UTC",
			d:      def(t, Step{ID: "w", Type: StepWait, NextDay: true}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 0, 0, 0, 0, time.UTC)},
		},
		{
			name:   "next_day without a window: midnight in the contact's zone",
			d:      def(t, Step{ID: "w", Type: StepWait, NextDay: true}, send("s", ""), end("done", "")),
			inputs: []Input{withContact(start(t0), Contact{TimeZone: "America/Chicago"})},
			// Monday 04:00 CST: Tuesday 00:00 CST.
			want: State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 6, 0, 0, 0, time.UTC)},
		},
		{
			name:   "next_day without a window: midnight in the subject's utc_offset",
			d:      def(t, Step{ID: "w", Type: StepWait, NextDay: true}, send("s", ""), end("done", "")),
			inputs: []Input{withFacts(start(t0), Facts{FactUTCOffset: "+05:30"})},
			// Monday 15:30 +05:30: Tuesday 00:00 +05:30.
			want: State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 5, 18, 30, 0, 0, time.UTC)},
		},
		{
			name: "next_day: the window's own zone decides the day",
			d: def(t, Step{ID: "w", Type: StepWait, NextDay: true, Window: &Window{Days: []string{"all"}, From: "08:00", To: "20:00", TimeZone: "Asia/Tokyo"}},
				send("s", ""), end("done", "")),
			// Monday 19:00 JST: Tuesday 00:00 JST, then 08:00 JST. (In Chicago,
			// the contact's zone, it would be Tuesday 08:00 CST.)
			inputs: []Input{withContact(start(t0), Contact{TimeZone: "America/Chicago"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 5, 23, 0, 0, 0, time.UTC)},
		},
		{
			name:    "next_day: a due wake sends",
			d:       def(t, Step{ID: "w", Type: StepWait, NextDay: true}, send("s", ""), end("done", "")),
			inputs:  []Input{start(t0), wake(time.Date(2026, 1, 6, 0, 0, 0, 0, time.UTC))},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"w", "s", "done"}, Happened: map[string]string{"w": HappenedTime}, Outcome: OutcomeCompleted},
			actions: []Action{sent("s")},
		},
		{
			name:    "next_day never passes: a wake a day late still sends",
			d:       def(t, Step{ID: "w", Type: StepWait, NextDay: true}, send("s", ""), end("done", "")),
			inputs:  []Input{start(t0), wake(time.Date(2026, 1, 7, 0, 0, 0, 0, time.UTC))},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"w", "s", "done"}, Happened: map[string]string{"w": HappenedTime}, Outcome: OutcomeCompleted},
			actions: []Action{sent("s")},
		},
		{
			name:   "next_day: changed facts do not move it",
			d:      def(t, Step{ID: "w", Type: StepWait, NextDay: true}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0), withFacts(Input{Kind: InputFactsChanged, Now: at(time.Hour)}, Facts{"start": "2026-01-09T08:30:00Z"})},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 6, 0, 0, 0, 0, time.UTC)},
		},
		{
			name:   "wait_event: waits for its events with a timeout",
			d:      def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened", "clicked"}, Timeout: "2d", Next: "yes", OnTimeout: "no"}, end("yes", "engaged"), end("no", "ignored")),
			inputs: []Input{start(t0)},
			want:   State{Status: StatusWaiting, Step: "we", Visited: []string{"we"}, WaitUntil: at(48 * time.Hour), WaitingFor: []string{"opened", "clicked"}},
		},
		{
			name: "wait_event: other events are recorded, its own continues",
			d:    def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened", "clicked"}, Timeout: "2d", Next: "yes", OnTimeout: "no"}, end("yes", "engaged"), end("no", "ignored")),
			inputs: []Input{start(t0), event(at(time.Minute), "delivered"), event(at(2*time.Minute), "delivered"),
				event(at(time.Hour), "clicked")},
			want: State{Status: StatusEnded, Step: "yes", Visited: []string{"we", "yes"}, Engagement: []string{"delivered", "delivered", "clicked"},
				Happened: map[string]string{"we": "clicked"}, Outcome: "engaged"},
		},
		{
			name:   "wait_event: a wake before the timeout changes nothing",
			d:      def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "2d", Next: "yes", OnTimeout: "no"}, end("yes", "engaged"), end("no", "ignored")),
			inputs: []Input{start(t0), wake(at(47 * time.Hour))},
			want:   State{Status: StatusWaiting, Step: "we", Visited: []string{"we"}, WaitUntil: at(48 * time.Hour), WaitingFor: []string{"opened"}},
		},
		{
			name:   "wait_event: timeout path",
			d:      def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "2d", Next: "yes", OnTimeout: "no"}, end("yes", "engaged"), end("no", "ignored")),
			inputs: []Input{start(t0), wake(at(48 * time.Hour))},
			want:   State{Status: StatusEnded, Step: "no", Visited: []string{"we", "no"}, Happened: map[string]string{"we": HappenedTimeout}, Outcome: "ignored"},
		},
		{
			name: "wait_event: timeout defaults to the step listed next",
			d: def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "1h", Next: "yes"},
				send("reminder", "no"), end("yes", "engaged"), end("no", "")),
			inputs:  []Input{start(t0), wake(at(5 * time.Hour))},
			want:    State{Status: StatusEnded, Step: "no", Visited: []string{"we", "reminder", "no"}, Happened: map[string]string{"we": HappenedTimeout}, Outcome: OutcomeCompleted},
			actions: []Action{sent("reminder")},
		},
		{
			name: "wait_event satisfied by earlier engagement",
			d: def(t, Step{ID: "w", Type: StepWait, Duration: "1h"},
				Step{ID: "we", Type: StepWaitEvent, Events: []string{"clicked", "opened"}, Timeout: "1d", Next: "yes", OnTimeout: "no"},
				end("yes", "engaged"), end("no", "ignored")),
			inputs: []Input{start(t0), event(at(time.Minute), "opened"), event(at(2*time.Minute), "clicked"), wake(at(time.Hour))},
			want: State{Status: StatusEnded, Step: "yes", Visited: []string{"w", "we", "yes"}, Engagement: []string{"opened", "clicked"},
				Happened: map[string]string{"w": HappenedTime, "we": "opened"}, Outcome: "engaged"},
		},
		{
			name: "goto target",
			d: def(t, Step{ID: "k", Type: StepBranch, Else: "a", Conditions: []Condition{{When: []Predicate{{Field: "fact.kind", Op: "eq", Value: "other"}}, Next: "b"}}},
				send("a", ""), Step{ID: "g", Type: StepGoto, Target: "c"}, send("b", ""), end("c", "")),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "c", Visited: []string{"k", "a", "g", "c"}, Outcome: OutcomeCompleted},
			actions: []Action{sent("a")},
		},
		{
			name:    "goto workflow",
			d:       def(t, send("a", ""), Step{ID: "g", Type: StepGoto, Workflow: "follow-up"}),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "g", Visited: []string{"a", "g"}, Outcome: OutcomeGoto},
			actions: []Action{sent("a"), {Type: ActionStartWorkflow, Step: "g", Workflow: "follow-up"}},
		},
		{
			name: "loop by goto ends with loop, sending once",
			d: def(t, send("a", ""), Step{ID: "w", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "1d", Next: "done", OnTimeout: "again"},
				Step{ID: "again", Type: StepGoto, Target: "a"}, end("done", "")),
			inputs:  []Input{start(t0), wake(at(24 * time.Hour))},
			want:    State{Status: StatusEnded, Step: "again", Visited: []string{"a", "w", "again"}, Happened: map[string]string{"w": HappenedTimeout}, Outcome: OutcomeLoop},
			actions: []Action{sent("a")},
		},
		{
			name:    "loop by next",
			d:       def(t, send("a", ""), Step{ID: "w", Type: StepWait, Duration: "1h", Next: "a", IfPassed: "done"}, end("done", "")),
			inputs:  []Input{start(t0), wake(at(time.Hour))},
			want:    State{Status: StatusEnded, Step: "w", Visited: []string{"a", "w"}, Happened: map[string]string{"w": HappenedTime}, Outcome: OutcomeLoop},
			actions: []Action{sent("a")},
		},
		{
			name:    "loop by on_timeout",
			d:       def(t, send("a", ""), Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "1h", Next: "done", OnTimeout: "a"}, end("done", "")),
			inputs:  []Input{start(t0), wake(at(time.Hour))},
			want:    State{Status: StatusEnded, Step: "we", Visited: []string{"a", "we"}, Happened: map[string]string{"we": HappenedTimeout}, Outcome: OutcomeLoop},
			actions: []Action{sent("a")},
		},
		{
			name:    "loop by if_passed",
			d:       def(t, send("a", ""), Step{ID: "w", Type: StepWait, Until: past, IfPassed: "a"}, end("done", "")),
			inputs:  []Input{start(t0)},
			want:    State{Status: StatusEnded, Step: "w", Visited: []string{"a", "w"}, Happened: map[string]string{"w": HappenedPassed}, Outcome: OutcomeLoop},
			actions: []Action{sent("a")},
		},
		{
			name: "loop by branch arm",
			d: def(t, send("a", ""), Step{ID: "b", Type: StepBranch, Else: "done",
				Conditions: []Condition{{When: []Predicate{{Field: "fact.kind", Op: "eq", Value: "again"}}, Next: "a"}}}, end("done", "")),
			inputs:  []Input{withFacts(start(t0), Facts{"kind": "again"})},
			want:    State{Status: StatusEnded, Step: "b", Visited: []string{"a", "b"}, Outcome: OutcomeLoop},
			actions: []Action{sent("a")},
		},
		{
			// Validate rejects this (no end after g); Advance still stops.
			name:   "a goto to itself is a loop",
			d:      Definition{ID: "flow", Steps: []Step{{ID: "w", Type: StepWaitEvent, Events: []string{"x"}, Timeout: "1h", Next: "g", OnTimeout: "done"}, {ID: "g", Type: StepGoto, Target: "g"}, end("done", "")}},
			inputs: []Input{start(t0), event(at(time.Minute), "x")},
			want: State{Status: StatusEnded, Step: "g", Visited: []string{"w", "g"}, Engagement: []string{"x"},
				Happened: map[string]string{"w": "x"}, Outcome: OutcomeLoop},
		},
		{
			name:   "end input while waiting",
			d:      def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0), {Kind: InputEnd, Now: at(time.Hour), Reason: "entered_in_error"}},
			want:   State{Status: StatusEnded, Step: "w", Visited: []string{"w"}, Outcome: "entered_in_error"},
		},
		{
			name:   "end input defaults to cancelled and clears the event wait",
			d:      def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "2d", Next: "yes", OnTimeout: "no"}, end("yes", ""), end("no", "")),
			inputs: []Input{start(t0), {Kind: InputEnd, Now: at(time.Hour)}},
			want:   State{Status: StatusEnded, Step: "we", Visited: []string{"we"}, Outcome: OutcomeCancelled},
		},
		{
			name:    "re-entry: a second start changes nothing",
			d:       def(t, send("a", ""), Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs:  []Input{start(t0), start(at(time.Minute))},
			want:    State{Status: StatusWaiting, Step: "w", Visited: []string{"a", "w"}, WaitUntil: at(2 * time.Hour)},
			actions: []Action{sent("a")},
		},
		{
			name: "re-entry: nothing moves an ended run",
			d:    def(t, send("a", ""), end("done", "")),
			inputs: []Input{start(t0), start(at(time.Minute)), event(at(time.Hour), "opened"), wake(at(2 * time.Hour)),
				withFacts(Input{Kind: InputFactsChanged, Now: at(3 * time.Hour)}, Facts{"start": "2026-02-01T00:00:00Z"}),
				{Kind: InputEnd, Now: at(4 * time.Hour), Reason: "cancelled"}},
			want:    State{Status: StatusEnded, Step: "done", Visited: []string{"a", "done"}, Outcome: OutcomeCompleted},
			actions: []Action{sent("a")},
		},
		{
			name: "facts changed: a later start moves the wait later",
			d:    def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-24h"}}, send("s", ""), end("done", "")),
			inputs: []Input{
				withFacts(start(t0), Facts{"start": "2026-01-09T10:00:00Z"}),
				withFacts(Input{Kind: InputFactsChanged, Now: at(time.Hour)}, Facts{"start": "2026-01-12T16:00:00Z"}),
			},
			want: State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: time.Date(2026, 1, 11, 16, 0, 0, 0, time.UTC)},
		},
		{
			name: "facts changed: an earlier start whose reminder has passed skips it",
			d: def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-24h"}}, send("s", ""),
				Step{ID: "w2", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-1h"}}, send("s2", ""), end("done", "")),
			inputs: []Input{
				withFacts(start(t0), Facts{"start": "2026-01-09T10:00:00Z"}),
				withFacts(Input{Kind: InputFactsChanged, Now: at(time.Hour)}, Facts{"start": "2026-01-05T20:00:00Z"}),
			},
			want: State{Status: StatusWaiting, Step: "w2", Visited: []string{"w", "w2"}, Happened: map[string]string{"w": HappenedPassed},
				WaitUntil: time.Date(2026, 1, 5, 19, 0, 0, 0, time.UTC)},
		},
		{
			name: "facts changed: start removed ends the run",
			d:    def(t, Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-24h"}}, send("s", ""), end("done", "")),
			inputs: []Input{
				withFacts(start(t0), Facts{"start": "2026-01-09T10:00:00Z"}),
				withFacts(Input{Kind: InputFactsChanged, Now: at(time.Hour)}, Facts{"status": "booked"}),
			},
			want: State{Status: StatusEnded, Step: "w", Visited: []string{"w"}, Outcome: OutcomeMissingFact},
		},
		{
			name: "facts changed: a duration wait is not moved",
			d:    def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0),
				withFacts(Input{Kind: InputFactsChanged, Now: at(time.Hour)}, Facts{"start": "2026-01-05T10:30:00Z"})},
			want: State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: at(2 * time.Hour)},
		},
		{
			name: "facts changed: a wait_event is not moved",
			d:    def(t, Step{ID: "we", Type: StepWaitEvent, Events: []string{"opened"}, Timeout: "2d", Next: "yes", OnTimeout: "no"}, end("yes", ""), end("no", "")),
			inputs: []Input{start(t0),
				withFacts(Input{Kind: InputFactsChanged, Now: at(time.Hour)}, Facts{"start": "2026-01-05T10:30:00Z"})},
			want: State{Status: StatusWaiting, Step: "we", Visited: []string{"we"}, WaitUntil: at(48 * time.Hour), WaitingFor: []string{"opened"}},
		},
		{
			name:   "an event while waiting for time is recorded only",
			d:      def(t, Step{ID: "w", Type: StepWait, Duration: "2h"}, send("s", ""), end("done", "")),
			inputs: []Input{start(t0), event(at(time.Minute), "opened"), {Kind: InputEvent, Now: at(time.Minute)}},
			want:   State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}, WaitUntil: at(2 * time.Hour), Engagement: []string{"opened"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, actions := walk(t, tc.d, tc.inputs...)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("state\n got %+v\nwant %+v", got, tc.want)
			}
			if !slices.Equal(actions, tc.actions) {
				t.Errorf("actions\n got %+v\nwant %+v", actions, tc.actions)
			}
		})
	}
}

func TestBranch(t *testing.T) {
	branch := func(conds ...Condition) Definition {
		steps := []Step{{ID: "w", Type: StepWait, Duration: "1m"},
			{ID: "b", Type: StepBranch, Conditions: conds, Else: "no"},
			end("yes", "yes"), end("no", "no")}
		if slices.ContainsFunc(conds, func(c Condition) bool { return c.Next == "yes2" }) {
			steps = append(steps, end("yes2", "yes2"))
		}
		return def(t, steps...)
	}
	one := func(p ...Predicate) Definition { return branch(Condition{When: p, Next: "yes"}) }
	facts := Facts{"status": "fulfilled", "kind": "", "paid": "true", "flag": "false"}
	contact := Contact{Language: "es", TimeZone: "America/Chicago", Fields: map[string]string{"plan": "gold", "language": "fr"}}
	tests := []struct {
		name   string
		d      Definition
		events []string
		want   string
	}{
		{"eq holds", one(Predicate{Field: "fact.status", Op: "eq", Value: "fulfilled"}), nil, "yes"},
		{"eq differs", one(Predicate{Field: "fact.status", Op: "eq", Value: "booked"}), nil, "no"},
		{"eq on a missing fact", one(Predicate{Field: "fact.outcome", Op: "eq", Value: "x"}), nil, "no"},
		{"ne holds", one(Predicate{Field: "fact.status", Op: "ne", Value: "booked"}), nil, "yes"},
		{"ne fails on equal", one(Predicate{Field: "fact.status", Op: "ne", Value: "fulfilled"}), nil, "no"},
		{"ne holds on a missing fact", one(Predicate{Field: "fact.outcome", Op: "ne", Value: "x"}), nil, "yes"},
		{"in holds", one(Predicate{Field: "fact.status", Op: "in", Values: []string{"arrived", "fulfilled"}}), nil, "yes"},
		{"in fails", one(Predicate{Field: "fact.status", Op: "in", Values: []string{"arrived", "booked"}}), nil, "no"},
		{"exists holds", one(Predicate{Field: "fact.status", Op: "exists"}), nil, "yes"},
		{"exists fails on an empty fact", one(Predicate{Field: "fact.kind", Op: "exists"}), nil, "no"},
		{"exists fails on an absent fact", one(Predicate{Field: "fact.outcome", Op: "exists"}), nil, "no"},
		{"missing holds", one(Predicate{Field: "fact.outcome", Op: "missing"}), nil, "yes"},
		{"missing fails", one(Predicate{Field: "fact.status", Op: "missing"}), nil, "no"},
		{"true on a fact", one(Predicate{Field: "fact.paid", Op: "true"}), nil, "yes"},
		{"true fails on false", one(Predicate{Field: "fact.flag", Op: "true"}), nil, "no"},
		{"false on a fact", one(Predicate{Field: "fact.flag", Op: "false"}), nil, "yes"},
		{"false fails on a missing fact", one(Predicate{Field: "fact.nothing", Op: "false"}), nil, "no"},
		{"engagement true when recorded", one(Predicate{Field: "engagement.opened", Op: "true"}), []string{"delivered", "opened"}, "yes"},
		{"engagement true fails when not", one(Predicate{Field: "engagement.clicked", Op: "true"}), []string{"opened"}, "no"},
		{"engagement false when not recorded", one(Predicate{Field: "engagement.clicked", Op: "false"}), []string{"opened"}, "yes"},
		{"engagement eq true", one(Predicate{Field: "engagement.opened", Op: "eq", Value: "true"}), []string{"opened"}, "yes"},
		{"engagement exists always", one(Predicate{Field: "engagement.clicked", Op: "exists"}), nil, "yes"},
		{"contact language", one(Predicate{Field: "contact.language", Op: "eq", Value: "es"}), nil, "yes"},
		{"contact time zone", one(Predicate{Field: "contact.time_zone", Op: "eq", Value: "America/Chicago"}), nil, "yes"},
		{"contact field", one(Predicate{Field: "contact.plan", Op: "in", Values: []string{"gold", "silver"}}), nil, "yes"},
		{"contact field missing", one(Predicate{Field: "contact.tier", Op: "missing"}), nil, "yes"},
		{"all predicates must hold", one(Predicate{Field: "fact.status", Op: "eq", Value: "fulfilled"}, Predicate{Field: "contact.plan", Op: "eq", Value: "silver"}), nil, "no"},
		{"all predicates hold", one(Predicate{Field: "fact.status", Op: "eq", Value: "fulfilled"}, Predicate{Field: "contact.plan", Op: "eq", Value: "gold"}), nil, "yes"},
		{"first match wins", branch(
			Condition{When: []Predicate{{Field: "fact.status", Op: "eq", Value: "booked"}}, Next: "no"},
			Condition{When: []Predicate{{Field: "fact.status", Op: "exists"}}, Next: "yes"},
			Condition{When: []Predicate{{Field: "fact.status", Op: "eq", Value: "fulfilled"}}, Next: "yes2"}), nil, "yes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inputs := []Input{start(t0)}
			for _, e := range tc.events {
				inputs = append(inputs, event(t0, e))
			}
			inputs = append(inputs, withContact(withFacts(wake(at(time.Minute)), facts), contact))
			got, _ := walk(t, tc.d, inputs...)
			if got.Outcome != tc.want || got.Step != tc.want {
				t.Errorf("branch went to %s (outcome %s), want %s", got.Step, got.Outcome, tc.want)
			}
			if want := []string{"w", "b", tc.want}; !slices.Equal(got.Visited, want) {
				t.Errorf("visited %v, want %v", got.Visited, want)
			}
		})
	}
}

func TestAdvanceErrors(t *testing.T) {
	d := def(t, Step{ID: "w", Type: StepWait, Duration: "1h"}, send("s", ""), end("done", ""))
	tests := []struct {
		name string
		st   State
		in   Input
		want error
	}{
		{"current step missing", State{Status: StatusWaiting, Step: "gone", Visited: []string{"gone"}, WaitUntil: t0}, wake(t0), ErrState},
		{"waiting at a send", State{Status: StatusWaiting, Step: "s", Visited: []string{"w", "s"}, WaitUntil: t0}, wake(t0), ErrState},
		{"timed wait without a time", State{Status: StatusWaiting, Step: "w", Visited: []string{"w"}}, wake(t0), ErrState},
		{"wake before start", State{}, wake(t0), ErrState},
		{"event before start", State{}, event(t0, "opened"), ErrState},
		{"unknown status", State{Status: "paused", Step: "w"}, wake(t0), ErrState},
		{"unknown input", State{}, Input{Kind: "poke", Now: t0}, ErrInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := cloneState(tc.st)
			got, actions, err := Advance(d, tc.st, tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(got, before) || actions != nil {
				t.Errorf("on error Advance returned %+v, %v; want the state unchanged and no actions", got, actions)
			}
		})
	}
	// A definition Validate rejects may fail, but does not panic.
	bad := Definition{ID: "bad", Steps: []Step{{ID: "a", Type: StepSend, Next: "nowhere"}}}
	if _, _, err := Advance(bad, State{}, start(t0)); !errors.Is(err, ErrDefinition) {
		t.Errorf("missing target: err = %v, want ErrDefinition", err)
	}
	if _, _, err := Advance(Definition{}, State{}, start(t0)); !errors.Is(err, ErrDefinition) {
		t.Errorf("no steps: err = %v, want ErrDefinition", err)
	}
}

func TestAdvanceIsDeterministic(t *testing.T) {
	d := def(t, send("a", ""), Step{ID: "w", Type: StepWait, Relative: &Relative{Fact: "start", Offset: "-24h"},
		Window: &Window{From: "09:00", To: "17:00"}}, send("s", ""), end("done", ""))
	in := withContact(withFacts(start(t0), Facts{"start": "2026-01-09T10:00:00Z"}), Contact{TimeZone: "Europe/London"})
	st1, a1, err1 := Advance(d, State{}, in)
	st2, a2, err2 := Advance(d, State{}, in)
	if err1 != nil || err2 != nil || !reflect.DeepEqual(st1, st2) || !slices.Equal(a1, a2) {
		t.Errorf("two calls differ: %+v %v %v / %+v %v %v", st1, a1, err1, st2, a2, err2)
	}
	if want := time.Date(2026, 1, 8, 10, 0, 0, 0, time.UTC); !st1.WaitUntil.Equal(want) || st1.WaitUntil.Location() != time.UTC {
		t.Errorf("WaitUntil = %v, want %v in UTC", st1.WaitUntil, want)
	}
}
