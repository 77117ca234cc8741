package workflow

import (
	"errors"
	"strings"
	"testing"
)

func channelRegistry() Registry {
	r := testRegistry()
	r.Channels["portal"] = true
	return r
}

func TestChannelStepsAreSendStepsWithAFallback(t *testing.T) {
	d := mustParse(t, `
id: nudge
trigger: {event: eob.received}
sms_window: {days: [all], from: "08:00", to: "21:00", time_zone: America/Chicago}
steps:
  - {id: mail, type: email, template: t.one, fallback: {channel: sms}}
  - {id: text, type: sms, template: t.two}
  - {id: shelf, type: portal, template: t.three}
  - {id: done, type: end}
`, channelRegistry())
	for i, want := range []string{"email", "sms", "portal"} {
		if s := d.Steps[i]; s.Type != StepSend || s.Channel != want {
			t.Errorf("steps[%d] = %s on %q, want a send step on %s", i, s.Type, s.Channel, want)
		}
	}
	st, acts, err := Advance(d, State{}, Input{Kind: InputStart, Now: mustTime(t, "2026-01-05T15:00:00Z")})
	if err != nil || st.Status != StatusEnded || len(acts) != 3 {
		t.Fatalf("Advance: %v %+v %+v", err, st, acts)
	}
	if f := acts[0].Fallback; f == nil || f.Channel != "sms" {
		t.Errorf("the email send's action carries fallback %+v, want sms", f)
	}
}

func TestChannelStepWithAnotherChannelDoesNotParse(t *testing.T) {
	_, err := Parse([]byte(`{"id": "x", "trigger": {"event": "eob.received"}, "steps": [{"id": "a", "type": "sms", "channel": "email", "template": "t.one"}]}`))
	if !errors.Is(err, ErrParse) || !strings.Contains(err.Error(), "a sms step takes no channel") {
		t.Errorf("err = %v", err)
	}
}

func TestValidateFallbacksAndSMSWindow(t *testing.T) {
	d := validBase()
	d.SMSWindow = &Window{From: "21:00", To: "08:00", TimeZone: "Mars/Olympus"}
	d.Steps = []Step{
		{ID: "a", Type: StepSend, Channel: "email", Template: "t.one", Fallback: &Fallback{Channel: "email"}},
		{ID: "b", Type: StepSend, Channel: "email", Template: "t.one", Fallback: &Fallback{Channel: "fax", Template: "t.nine"}},
		{ID: "c", Type: StepSend, Channel: "portal", Template: "t.one", Fallback: &Fallback{Channel: "sms"}},
		{ID: "d", Type: StepSend, Channel: "email", Template: "t.one", Fallback: &Fallback{}},
		{ID: "w", Type: StepWait, Duration: "1h", Fallback: &Fallback{Channel: "sms"}},
		{ID: "e", Type: StepEnd},
	}
	var got []string
	for _, p := range Validate(d, channelRegistry()) {
		got = append(got, p.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"sms_window: invalid send window: from must be before to",
		"sms_window.time_zone: not a loadable IANA time zone",
		"step a: fallback.channel: must differ from the step's channel",
		"step b: fallback.channel: unknown channel",
		"step b: fallback.template: unknown template",
		"step c: fallback: a portal step always delivers",
		"step d: fallback.channel: required for a fallback",
		"step w: fallback: does not belong to a step of type wait",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
}

func TestSMSOpeningKeepsQuietHours(t *testing.T) {
	d := validBase()
	d.SMSWindow = &Window{Days: []string{"all"}, From: "08:00", To: "21:00"}
	for _, c := range []struct{ now, tz, offset, want string }{
		// 22:30 in Chicago: the next opening is 08:00 there.
		{"2026-01-06T04:30:00Z", "America/Chicago", "", "2026-01-06T14:00:00Z"},
		// Inside the window: now.
		{"2026-01-06T15:00:00Z", "America/Chicago", "", "2026-01-06T15:00:00Z"},
		// No zone from the contact: the subject's offset.
		{"2026-01-06T04:30:00Z", "", "-06:00", "2026-01-06T14:00:00Z"},
		// Nothing: UTC, where 04:30 is quiet too.
		{"2026-01-06T04:30:00Z", "", "", "2026-01-06T08:00:00Z"},
	} {
		got, err := SMSOpening(d, mustTime(t, c.now), c.tz, Facts{FactUTCOffset: c.offset})
		if err != nil || !got.Equal(mustTime(t, c.want)) {
			t.Errorf("SMSOpening(%s, %q, %q) = %v, %v; want %s", c.now, c.tz, c.offset, got, err, c.want)
		}
	}
	d.SMSWindow = nil
	if got, _ := SMSOpening(d, mustTime(t, "2026-01-06T04:30:00Z"), "", nil); !got.Equal(mustTime(t, "2026-01-06T04:30:00Z")) {
		t.Errorf("no window: %v, want now", got)
	}
}

// The sender name goes in every SMS: a workflow that texts must have one
// the registry accepts; one that does not text may name itself freely.
func TestSMSSenderNameIsCheckedWhenTheWorkflowTexts(t *testing.T) {
	r := channelRegistry()
	r.SMSSender = func(name string) bool { return !strings.ContainsAny(name, ":$") }
	d := validBase()
	d.Sender.Name = "Dr Who: Oncology $45"
	d.Steps = []Step{{ID: "a", Type: StepSend, Channel: "email", Template: "t.one", Fallback: &Fallback{Channel: "sms"}}, {ID: "e", Type: StepEnd}}
	if ps := Validate(d, r); len(ps) != 1 || ps[0].Field != "sender.name" {
		t.Errorf("an SMS fallback with that name: %v", ps)
	}
	d.Steps[0].Fallback = nil
	if ps := Validate(d, r); len(ps) != 0 {
		t.Errorf("no SMS, any name: %v", ps)
	}
}

// A deployment that has not set a channel up (no SMS provider) refuses a
// definition that sends on it or falls back to it: every notice would fail.
func TestChannelsTheDeploymentLacksAreProblems(t *testing.T) {
	d, err := Parse([]byte(`{"id": "nudge", "trigger": {"event": "eob.received"}, "steps": [
		{"id": "mail", "type": "email", "template": "t.one", "fallback": {"channel": "sms"}},
		{"id": "text", "type": "sms", "template": "t.two"},
		{"id": "done", "type": "end"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := channelRegistry()
	if p := Validate(d, r); len(p) != 0 {
		t.Fatalf("with every channel set up: %v", p)
	}
	r.Configured = map[string]bool{"email": true, "portal": true}
	var got []string
	for _, p := range Validate(d, r) {
		got = append(got, p.Step+" "+p.Field+": "+p.Message)
	}
	want := []string{
		"mail fallback.channel: channel sms is not configured in this deployment: every notice sent on it would fail",
		"text channel: channel sms is not configured in this deployment: every notice sent on it would fail",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
