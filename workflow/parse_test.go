package workflow

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const reminderJSON = `{
  "id": "reminders",
  "trigger": {"event": "appointment.booked"},
  "priority": "high",
  "sender": {"name": "Clinic", "from": "clinic@example.org"},
  "time_zone": "America/Chicago",
  "late_after": "30m",
  "steps": [
    {"id": "confirm", "type": "send", "channel": "email", "template": "t.one"},
    {"id": "wait", "type": "wait", "relative": {"fact": "start", "offset": "-1d"},
     "window": {"days": ["mon", "weekends"], "from": "09:00", "to": "18:00", "time_zone": "Asia/Kolkata"}},
    {"id": "remind", "type": "send", "channel": "email", "template": "t.two"},
    {"id": "check", "type": "branch",
     "conditions": [{"when": [{"field": "fact.status", "op": "in", "values": ["fulfilled", "arrived"]}], "next": "done"}],
     "else": "done"},
    {"id": "done", "type": "end", "reason": "finished"}
  ]
}`

// The same definition in YAML, with unquoted times, a negative offset and
// a flow sequence.
const reminderYAML = `
# comments are fine
id: reminders
trigger:
  event: appointment.booked
priority: high
sender: {name: Clinic, from: clinic@example.org}
time_zone: America/Chicago
late_after: 30m
steps:
  - {id: confirm, type: send, channel: email, template: t.one}
  - id: wait
    type: wait
    relative: {fact: start, offset: -1d}
    window:
      days: [mon, weekends]
      from: 09:00
      to: 18:00
      time_zone: Asia/Kolkata
  - {id: remind, type: send, channel: email, template: t.two}
  - id: check
    type: branch
    conditions:
      - when:
          - field: fact.status
            op: in
            values: [fulfilled, arrived]
        next: done
    else: done
  - id: done
    type: end
    reason: finished
`

func TestParseJSONAndYAMLAgree(t *testing.T) {
	fromJSON, err := Parse([]byte(reminderJSON))
	if err != nil {
		t.Fatalf("Parse JSON: %v", err)
	}
	fromYAML, err := Parse([]byte(reminderYAML))
	if err != nil {
		t.Fatalf("Parse YAML: %v", err)
	}
	if !reflect.DeepEqual(fromJSON, fromYAML) {
		t.Errorf("YAML and JSON differ:\njson %+v\nyaml %+v", fromJSON, fromYAML)
	}
	w := fromYAML.Steps[1]
	if w.Relative == nil || w.Relative.Offset != "-1d" || w.Window == nil || w.Window.From != "09:00" || w.Window.To != "18:00" {
		t.Errorf("wait step read as %+v", w)
	}
	if got := fromYAML.Steps[3].Conditions[0].When[0].Values; !reflect.DeepEqual(got, []string{"fulfilled", "arrived"}) {
		t.Errorf("branch values = %v", got)
	}
	if ps := Validate(fromJSON, testRegistry()); len(ps) > 0 {
		t.Errorf("the sample is not valid: %v", ps)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, src, wantIn string
	}{
		{"empty", "", "empty"},
		{"blank", "  \n\t ", "empty"},
		{"json unknown top-level field", `{"id": "x", "steps": [], "colour": "red"}`, `unknown field "colour"`},
		{"json unknown step field", `{"id": "x", "steps": [{"id": "a", "type": "end", "delay": "1h"}]}`, `unknown field "delay"`},
		{"json wrong type", `{"id": "x", "steps": [{"id": "a", "type": "wait", "duration": 72}]}`, "cannot unmarshal number"},
		{"json trailing data", `{"id": "x"} {"id": "y"}`, "data after the definition"},
		{"json syntax", `{"id": "x",`, "does not parse"},
		{"yaml unknown field", "id: x\nsteps: []\nfavourite: yes\n", `unknown field "favourite"`},
		{"yaml unknown nested field", "id: x\nsteps:\n  - id: a\n    type: end\n    extra: 1\n", `unknown field "extra"`},
		{"yaml unquoted boolean value", "id: x\nsteps:\n  - id: b\n    type: branch\n    conditions:\n      - when: [{field: fact.paid, op: eq, value: true}]\n        next: b\n", "cannot unmarshal bool"},
		{"json next_day as a string", `{"id": "x", "steps": [{"id": "w", "type": "wait", "next_day": "yes"}]}`, "cannot unmarshal string"},
		{"yaml list at the root", "- id: x\n", "not a mapping"},
		{"yaml scalar at the root", "just words\n", "not a mapping"},
		{"yaml two documents", "id: x\n---\nid: y\n", "more than one yaml document"},
		{"yaml non-string key", "id: x\nsteps:\n  - 1: a\n", "not a string"},
		{"yaml syntax", "id: [x\n", "yaml"},
		{"yaml null document", "null\n", "not a mapping"},
		{"yaml infinity", "id: x\nversion: .inf\n", "not a finite number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src))
			if !errors.Is(err, ErrParse) {
				t.Fatalf("err = %v, want ErrParse", err)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantIn)
			}
		})
	}
}

func TestParseYAMLTimestampBecomesString(t *testing.T) {
	d, err := Parse([]byte("id: x\nsteps:\n  - id: w\n    type: wait\n    until: !!timestamp 2026-03-08T09:00:00Z\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := d.Steps[0].Until; got != "2026-03-08T09:00:00Z" {
		t.Errorf("until = %q", got)
	}
}

// nextDayYAML is a wait for the next business day, in YAML: next_day is a
// boolean, so it is not quoted.
const nextDayYAML = `
id: noshow
trigger: {event: appointment.noshow}
steps:
  - id: wait
    type: wait
    next_day: true
    window: {days: [weekdays], from: 09:00, to: 18:00}
  - {id: notice, type: send, channel: email, template: t.one}
  - {id: done, type: end}
`

func TestParseNextDay(t *testing.T) {
	fromYAML, err := Parse([]byte(nextDayYAML))
	if err != nil {
		t.Fatalf("Parse YAML: %v", err)
	}
	fromJSON, err := Parse([]byte(`{"id": "noshow", "trigger": {"event": "appointment.noshow"}, "steps": [
	  {"id": "wait", "type": "wait", "next_day": true, "window": {"days": ["weekdays"], "from": "09:00", "to": "18:00"}},
	  {"id": "notice", "type": "send", "channel": "email", "template": "t.one"},
	  {"id": "done", "type": "end"}]}`))
	if err != nil {
		t.Fatalf("Parse JSON: %v", err)
	}
	if !fromYAML.Steps[0].NextDay {
		t.Errorf("next_day: true did not set NextDay")
	}
	if !reflect.DeepEqual(fromYAML, fromJSON) {
		t.Errorf("YAML and JSON differ:\n%+v\n%+v", fromYAML, fromJSON)
	}
	if ps := Validate(fromYAML, testRegistry()); len(ps) > 0 {
		t.Errorf("Validate: %v", ps)
	}
}

func TestParseRoundTrip(t *testing.T) {
	d, err := Parse([]byte(reminderJSON))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse of marshalled definition: %v", err)
	}
	if !reflect.DeepEqual(d, again) {
		t.Errorf("round trip differs:\n%+v\n%+v", d, again)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"72h", 72 * time.Hour},
		{"7d", 7 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"12h1d", 36 * time.Hour},
		{"-72h", -72 * time.Hour},
		{"-1d", -24 * time.Hour},
		{"+2h", 2 * time.Hour},
		{"30m", 30 * time.Minute},
		{"0s", 0},
		{"0", 0},
		{"0d", 0},
		{"1.5h", 90 * time.Minute},
		{"2d3h4m5s", 2*24*time.Hour + 3*time.Hour + 4*time.Minute + 5*time.Second},
		{"1d1d", 48 * time.Hour},
		{"100ms", 100 * time.Millisecond},
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "-", "+", "d", "h", "1", "1x", "1.5d", "1 d", " 1d", "1d-2h", "--1h", "1w", "1D", "106752d", "9223372036854775807d", "106751d24h"} {
		if got, err := ParseDuration(bad); !errors.Is(err, ErrDuration) {
			t.Errorf("ParseDuration(%q) = %v, %v; want ErrDuration", bad, got, err)
		} else if len(bad) > 2 && strings.Contains(err.Error(), bad) {
			t.Errorf("ParseDuration(%q) error repeats the value: %v", bad, err)
		}
	}
}
