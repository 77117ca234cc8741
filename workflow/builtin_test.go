package workflow

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"
)

func builtin(tb testing.TB, id string) Definition {
	tb.Helper()
	for _, d := range Builtins() {
		if d.ID == id {
			return d
		}
	}
	tb.Fatalf("no built-in workflow %q", id)
	return Definition{}
}

func TestBuiltinsAreValid(t *testing.T) {
	reg := builtinRegistry()
	type shape struct{ trigger, priority string }
	want := map[string]shape{
		"eob-notice":            {"eob.received", PriorityNormal},
		"appointment-reminders": {"appointment.booked", PriorityHigh},
		"appointment-cancelled": {"appointment.cancelled", PriorityHigh},
		"appointment-noshow":    {"appointment.noshow", PriorityNormal},
	}
	used := map[string]bool{}
	var ids []string
	for _, d := range Builtins() {
		ids = append(ids, d.ID)
		if ps := Validate(d, reg); len(ps) > 0 {
			t.Errorf("%s: %v", d.ID, ps)
		}
		w, ok := want[d.ID]
		if !ok {
			t.Errorf("unexpected built-in %s", d.ID)
			continue
		}
		if d.Trigger != (Trigger{Event: w.trigger}) || d.Priority != w.priority {
			t.Errorf("%s: trigger %+v priority %q, want %s %s", d.ID, d.Trigger, d.Priority, w.trigger, w.priority)
		}
		if d.Sender != (Sender{Name: "Tidings"}) {
			t.Errorf("%s: sender %+v, want name Tidings and no from", d.ID, d.Sender)
		}
		for _, s := range d.Steps {
			if s.Type == StepSend {
				used[s.Template] = true
				if s.Channel != "email" {
					t.Errorf("%s/%s: channel %q", d.ID, s.ID, s.Channel)
				}
			}
		}
	}
	if !slices.Equal(ids, []string{"appointment-cancelled", "appointment-noshow", "appointment-reminders", "eob-notice"}) {
		t.Errorf("built-ins %v", ids)
	}
	if len(used) != 7 {
		t.Errorf("built-ins send %d templates, want 7: %v", len(used), used)
	}
	if !reg.Workflow("eob-notice") || reg.Workflow("nope") {
		t.Errorf("RegistryOf.Workflow does not resolve built-in ids")
	}
	// Each call returns fresh values.
	a := Builtins()
	a[0].Steps[0].ID = "changed"
	if Builtins()[0].Steps[0].ID == "changed" {
		t.Errorf("Builtins shares its values between calls")
	}
}

// siuAppointment reads the start and end of the Appointment in the published
// SIU S12 conversion: 2021-09-24T12:45:00+05:30 to 13:35.
func siuAppointment(t *testing.T) (start, end string) {
	t.Helper()
	b, err := os.ReadFile("testdata/fhir-converter-hl7v2-siu/SIU-S12-01-expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				Start        string `json:"start"`
				End          string `json:"end"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	for _, e := range bundle.Entry {
		if e.Resource.ResourceType == "Appointment" {
			return e.Resource.Start, e.Resource.End
		}
	}
	t.Fatal("no Appointment in the SIU bundle")
	return "", ""
}

func TestAppointmentRemindersWithSIUTimes(t *testing.T) {
	startFact, endFact := siuAppointment(t)
	if startFact != "2021-09-24T12:45:00+05:30" || endFact != "2021-09-24T13:35:00+05:30" {
		t.Fatalf("fixture times %s %s", startFact, endFact)
	}
	d := builtin(t, "appointment-reminders")
	apptStart := mustTime(t, startFact)
	utc := func(s string) time.Time { return mustTime(t, s) }

	type wake struct {
		at     time.Time
		status string    // the appointment's status fact at that moment
		want   time.Time // WaitUntil after it; zero when the run ends
		sends  []string  // templates sent by this input
	}
	tests := []struct {
		name    string
		zone    string
		booked  time.Time
		first   time.Time // WaitUntil after the start
		skipped []string  // waits that passed at once
		wakes   []wake
		outcome []string // visited at the end
	}{
		{
			name: "booked 10 days before, patient in Kolkata", zone: "Asia/Kolkata",
			booked: apptStart.Add(-10 * 24 * time.Hour),
			// start − 72 h is 12:45 IST, inside 09:00–18:00.
			first: utc("2021-09-21T07:15:00Z"),
			wakes: []wake{
				{utc("2021-09-21T07:15:00Z"), "booked", utc("2021-09-23T07:15:00Z"), []string{"appointment.reminder"}},
				{utc("2021-09-23T07:15:00Z"), "booked", utc("2021-09-24T10:05:00Z"), []string{"appointment.reminder"}},
				// end + 2 h: 15:35 IST.
				{utc("2021-09-24T10:05:00Z"), "fulfilled", time.Time{}, []string{"appointment.survey"}},
			},
			outcome: []string{"confirmation", "wait-72h", "reminder-72h", "wait-24h", "reminder-24h", "wait-after", "fulfilled", "survey", "done"},
		},
		{
			name: "booked 10 days before, patient in Chicago", zone: "America/Chicago",
			booked: apptStart.Add(-10 * 24 * time.Hour),
			// start − 72 h is 02:15 CDT: moved to 09:00 CDT.
			first: utc("2021-09-21T14:00:00Z"),
			wakes: []wake{
				{utc("2021-09-21T14:20:00Z"), "booked", utc("2021-09-23T14:00:00Z"), []string{"appointment.reminder"}},
				{utc("2021-09-23T14:00:00Z"), "booked", utc("2021-09-24T10:05:00Z"), []string{"appointment.reminder"}},
				{utc("2021-09-24T10:05:00Z"), "noshow", time.Time{}, nil},
			},
			outcome: []string{"confirmation", "wait-72h", "reminder-72h", "wait-24h", "reminder-24h", "wait-after", "fulfilled", "done"},
		},
		{
			name: "booked 2 days before: the 72 h reminder is skipped", zone: "Asia/Kolkata",
			booked:  apptStart.Add(-48 * time.Hour),
			first:   utc("2021-09-23T07:15:00Z"),
			skipped: []string{"wait-72h"},
			wakes: []wake{
				{utc("2021-09-23T07:15:00Z"), "booked", utc("2021-09-24T10:05:00Z"), []string{"appointment.reminder"}},
				{utc("2021-09-24T10:05:00Z"), "fulfilled", time.Time{}, []string{"appointment.survey"}},
			},
			outcome: []string{"confirmation", "wait-72h", "wait-24h", "reminder-24h", "wait-after", "fulfilled", "survey", "done"},
		},
		{
			name: "booked 1 hour before: both reminders are skipped", zone: "Asia/Kolkata",
			booked:  apptStart.Add(-time.Hour),
			first:   utc("2021-09-24T10:05:00Z"),
			skipped: []string{"wait-72h", "wait-24h"},
			wakes: []wake{
				{utc("2021-09-24T10:05:00Z"), "fulfilled", time.Time{}, []string{"appointment.survey"}},
			},
			outcome: []string{"confirmation", "wait-72h", "wait-24h", "wait-after", "fulfilled", "survey", "done"},
		},
		{
			name: "the 24 h reminder's wake-up comes 2 hours late: skipped", zone: "Asia/Kolkata",
			booked: apptStart.Add(-10 * 24 * time.Hour),
			first:  utc("2021-09-21T07:15:00Z"),
			wakes: []wake{
				{utc("2021-09-21T07:15:00Z"), "booked", utc("2021-09-23T07:15:00Z"), []string{"appointment.reminder"}},
				{utc("2021-09-23T09:15:00Z"), "booked", utc("2021-09-24T10:05:00Z"), nil},
				{utc("2021-09-24T10:05:00Z"), "booked", time.Time{}, nil},
			},
			outcome: []string{"confirmation", "wait-72h", "reminder-72h", "wait-24h", "wait-after", "fulfilled", "done"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			contact := Contact{TimeZone: tc.zone, Language: "en"}
			facts := func(status string) Facts {
				return Facts{"start": startFact, "end": endFact, "status": status}
			}
			st, acts, err := Advance(d, State{}, Input{Kind: InputStart, Now: tc.booked, Facts: facts("booked"), Contact: contact})
			if err != nil {
				t.Fatal(err)
			}
			checkAfter(t, st)
			if !slices.Equal(templates(acts), []string{"appointment.confirmation"}) {
				t.Errorf("on booking sent %v", templates(acts))
			}
			if st.Status != StatusWaiting || !st.WaitUntil.Equal(tc.first) {
				t.Fatalf("after booking: %s until %s, want waiting until %s", st.Status, st.WaitUntil, tc.first)
			}
			for _, s := range tc.skipped {
				if st.Happened[s] != HappenedPassed {
					t.Errorf("%s: happened %q, want passed", s, st.Happened[s])
				}
			}
			for i, w := range tc.wakes {
				st, acts, err = Advance(d, st, Input{Kind: InputWake, Now: w.at, Facts: facts(w.status), Contact: contact})
				if err != nil {
					t.Fatal(err)
				}
				checkAfter(t, st)
				if !slices.Equal(templates(acts), w.sends) {
					t.Errorf("wake %d sent %v, want %v", i, templates(acts), w.sends)
				}
				if !st.WaitUntil.Equal(w.want) {
					t.Errorf("wake %d: waiting until %s, want %s", i, st.WaitUntil, w.want)
				}
			}
			if st.Status != StatusEnded || st.Outcome != OutcomeCompleted {
				t.Errorf("run %s/%s, want ended/completed", st.Status, st.Outcome)
			}
			if !slices.Equal(st.Visited, tc.outcome) {
				t.Errorf("path %v\nwant %v", st.Visited, tc.outcome)
			}
		})
	}
}

// Contacts read from FHIR carry no time zone; the worker sets the
// appointment's UTC offset as a fact, and the windows are read in it.
func TestAppointmentRemindersUseTheSubjectOffset(t *testing.T) {
	startFact, endFact := siuAppointment(t)
	d := builtin(t, "appointment-reminders")
	booked := mustTime(t, startFact).Add(-10 * 24 * time.Hour)

	// waits runs the appointment to its end, waking on time, and returns
	// every WaitUntil on the way.
	waits := func(contact Contact, offset string) []time.Time {
		t.Helper()
		facts := Facts{"start": startFact, "end": endFact, "status": "fulfilled"}
		if offset != "" {
			facts[FactUTCOffset] = offset
		}
		st, _, err := Advance(d, State{}, Input{Kind: InputStart, Now: booked, Facts: facts, Contact: contact})
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Time
		for st.Status == StatusWaiting {
			out = append(out, st.WaitUntil)
			if st, _, err = Advance(d, st, Input{Kind: InputWake, Now: st.WaitUntil, Facts: facts, Contact: contact}); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	kolkata := waits(Contact{TimeZone: "Asia/Kolkata"}, "")
	want := []time.Time{
		mustTime(t, "2021-09-21T07:15:00Z"), // 12:45 IST
		mustTime(t, "2021-09-23T07:15:00Z"),
		mustTime(t, "2021-09-24T10:05:00Z"), // end + 2 h
	}
	if !slices.EqualFunc(kolkata, want, time.Time.Equal) {
		t.Fatalf("with Asia/Kolkata: %v, want %v", kolkata, want)
	}
	if got := waits(Contact{Language: "en"}, "+05:30"); !slices.EqualFunc(got, kolkata, time.Time.Equal) {
		t.Errorf("with utc_offset +05:30 and no zone: %v, want as Asia/Kolkata %v", got, kolkata)
	}
	// Without either, UTC: 12:45 IST is 07:15 UTC, before 09:00 UTC, so the
	// reminders would move to 09:00 UTC, 14:30 IST.
	if got := waits(Contact{}, ""); len(got) == 0 || !got[0].Equal(mustTime(t, "2021-09-21T09:00:00Z")) {
		t.Errorf("with no zone and no offset: %v, want the first at 09:00 UTC", got)
	}
	// An offset that does not read is skipped: UTC again.
	if got := waits(Contact{}, "IST"); len(got) == 0 || !got[0].Equal(mustTime(t, "2021-09-21T09:00:00Z")) {
		t.Errorf("with an unreadable offset: %v, want the first at 09:00 UTC", got)
	}
}

// A reminder outside the window moves to the opening in the subject's
// offset, not in UTC.
func TestAppointmentReminderMovedInTheSubjectOffset(t *testing.T) {
	d := builtin(t, "appointment-reminders")
	booked := mustTime(t, "2021-09-14T07:15:00Z") // 12:45 at +05:30
	// The appointment is tomorrow 18:45 +05:30: the 72 h reminder has passed,
	// the 24 h one (today 18:45 +05:30, 13:15 UTC) is after 18:00 and moves
	// to 09:00 +05:30 tomorrow. Read in UTC it would have stayed at 13:15.
	facts := Facts{"start": "2021-09-15T18:45:00+05:30", "end": "2021-09-15T19:30:00+05:30", FactUTCOffset: "+05:30"}
	st, acts, err := Advance(d, State{}, Input{Kind: InputStart, Now: booked, Facts: facts})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(templates(acts), []string{"appointment.confirmation"}) || st.Happened["wait-72h"] != HappenedPassed {
		t.Errorf("start: %+v, sent %v", st, templates(acts))
	}
	if want := mustTime(t, "2021-09-15T03:30:00Z"); st.Step != "wait-24h" || !st.WaitUntil.Equal(want) {
		t.Errorf("at %s until %s, want wait-24h until %s", st.Step, st.WaitUntil.Format(time.RFC3339), want.Format(time.RFC3339))
	}
	if got := st.WaitUntil.In(time.FixedZone("", 5*3600+1800)).Format("15:04"); got != "09:00" {
		t.Errorf("the reminder is at %s local, want 09:00", got)
	}
}

func TestAppointmentRescheduled(t *testing.T) {
	startFact, endFact := siuAppointment(t)
	d := builtin(t, "appointment-reminders")
	contact := Contact{TimeZone: "Asia/Kolkata"}
	booked := mustTime(t, "2021-09-14T07:15:00Z") // 10 days before, 12:45 IST
	st, _, err := Advance(d, State{}, Input{Kind: InputStart, Now: booked, Facts: Facts{"start": startFact, "end": endFact}, Contact: contact})
	if err != nil {
		t.Fatal(err)
	}
	// A week later: the 72 h reminder moves a week.
	later, _, err := Advance(d, st, Input{Kind: InputFactsChanged, Now: booked.Add(time.Hour), Contact: contact,
		Facts: Facts{"start": "2021-10-01T12:45:00+05:30", "end": "2021-10-01T13:35:00+05:30"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := mustTime(t, "2021-09-28T07:15:00Z"); later.Step != "wait-72h" || !later.WaitUntil.Equal(want) {
		t.Errorf("rescheduled later: at %s until %s, want wait-72h until %s", later.Step, later.WaitUntil, want)
	}
	// Moved to tomorrow evening (18:45 IST): the 72 h reminder has passed
	// and is skipped; the 24 h one (18:45 IST today) is outside the window and
	// moves to 09:00 IST tomorrow, still before the appointment.
	sooner, acts, err := Advance(d, st, Input{Kind: InputFactsChanged, Now: booked.Add(time.Hour), Contact: contact,
		Facts: Facts{"start": "2021-09-15T18:45:00+05:30", "end": "2021-09-15T19:30:00+05:30"}})
	if err != nil {
		t.Fatal(err)
	}
	checkAfter(t, sooner)
	if len(acts) != 0 {
		t.Errorf("a reschedule sent %v", acts)
	}
	if want := mustTime(t, "2021-09-15T03:30:00Z"); sooner.Step != "wait-24h" || !sooner.WaitUntil.Equal(want) || sooner.Happened["wait-72h"] != HappenedPassed {
		t.Errorf("rescheduled sooner: %+v, want wait-24h until %s with wait-72h passed", sooner, want)
	}
}

func TestEOBNotice(t *testing.T) {
	d := builtin(t, "eob-notice")
	now := mustTime(t, "2026-03-02T15:00:00Z")
	st, acts, err := Advance(d, State{}, Input{Kind: InputStart, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(templates(acts), []string{"eob.notice"}) || !st.WaitUntil.Equal(now.Add(7*24*time.Hour)) || !slices.Equal(st.WaitingFor, []string{"portal.viewed"}) {
		t.Fatalf("after start: %+v, sent %v", st, templates(acts))
	}

	viewed, acts, err := Advance(d, st, Input{Kind: InputEvent, Now: now.Add(48 * time.Hour), Event: "portal.viewed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 0 || viewed.Status != StatusEnded || viewed.Outcome != "viewed" || viewed.Happened["wait-viewed"] != "portal.viewed" {
		t.Errorf("viewed: %+v, sent %v", viewed, acts)
	}

	early, acts, err := Advance(d, st, Input{Kind: InputWake, Now: now.Add(7*24*time.Hour - time.Second)})
	if err != nil || len(acts) != 0 || early.Status != StatusWaiting {
		t.Errorf("early wake: %+v %v %v", early, acts, err)
	}
	timedOut, acts, err := Advance(d, st, Input{Kind: InputWake, Now: now.Add(7 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(templates(acts), []string{"eob.reminder"}) || timedOut.Outcome != OutcomeCompleted || timedOut.Happened["wait-viewed"] != HappenedTimeout {
		t.Errorf("timeout: %+v, sent %v", timedOut, templates(acts))
	}
}

func TestAppointmentCancelled(t *testing.T) {
	st, acts, err := Advance(builtin(t, "appointment-cancelled"), State{}, Input{Kind: InputStart, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(templates(acts), []string{"appointment.cancelled"}) || st.Status != StatusEnded || st.Outcome != OutcomeCompleted {
		t.Errorf("%+v, sent %v", st, templates(acts))
	}
}

func TestAppointmentNoShowNextBusinessDay(t *testing.T) {
	d := builtin(t, "appointment-noshow")
	tests := []struct {
		name, now string
		zone      string // the contact's
		offset    string // Facts utc_offset
		want      string
	}{
		// New York in January is EST, UTC−5. 2026-01-05 is a Monday.
		{"thursday 19:00 → friday 09:00", "2026-01-09T00:00:00Z", "America/New_York", "", "2026-01-09T14:00:00Z"},
		{"friday 19:00 → monday 09:00", "2026-01-10T00:00:00Z", "America/New_York", "", "2026-01-12T14:00:00Z"},
		{"monday 20:00 → tuesday 09:00", "2026-01-06T01:00:00Z", "America/New_York", "", "2026-01-06T14:00:00Z"},
		{"monday 08:00 → tuesday 09:00, not the same day", "2026-01-05T13:00:00Z", "America/New_York", "", "2026-01-06T14:00:00Z"},
		{"wednesday 10:00 → thursday 09:00", "2026-01-07T15:00:00Z", "America/New_York", "", "2026-01-08T14:00:00Z"},
		{"friday 15:00 → monday 09:00", "2026-01-09T20:00:00Z", "America/New_York", "", "2026-01-12T14:00:00Z"},
		{"saturday 10:00 → monday 09:00", "2026-01-10T15:00:00Z", "America/New_York", "", "2026-01-12T14:00:00Z"},
		{"sunday 23:30 → monday 09:00", "2026-01-12T04:30:00Z", "America/New_York", "", "2026-01-12T14:00:00Z"},
		// Chicago moves to CDT on Sunday 2026-03-08 and back to CST on
		// Sunday 2026-11-01; 09:00 stays 09:00 on the wall clock.
		{"chicago: friday 19:00 CST → monday 09:00 CDT", "2026-03-07T01:00:00Z", "America/Chicago", "", "2026-03-09T14:00:00Z"},
		{"chicago: sunday 08:00 CDT, the change day → monday 09:00 CDT", "2026-03-08T13:00:00Z", "America/Chicago", "", "2026-03-09T14:00:00Z"},
		{"chicago: friday 19:00 CDT → monday 09:00 CST", "2026-10-31T00:00:00Z", "America/Chicago", "", "2026-11-02T15:00:00Z"},
		{"kolkata: friday 18:00 IST → monday 09:00 IST", "2026-01-09T12:30:00Z", "Asia/Kolkata", "", "2026-01-12T03:30:00Z"},
		// No contact zone: the appointment's offset decides. In UTC this
		// would be Saturday 01:00 and so Monday 09:00 UTC.
		{"offset only: thursday 19:00 −06:00 → friday 09:00 −06:00", "2026-01-09T01:00:00Z", "", "-06:00", "2026-01-09T15:00:00Z"},
		{"the contact's zone wins over the offset", "2026-01-09T00:00:00Z", "America/New_York", "+05:30", "2026-01-09T14:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			contact := Contact{TimeZone: tc.zone}
			facts := Facts{"status": "noshow"}
			if tc.offset != "" {
				facts[FactUTCOffset] = tc.offset
			}
			st, acts, err := Advance(d, State{}, Input{Kind: InputStart, Now: mustTime(t, tc.now), Contact: contact, Facts: facts})
			if err != nil {
				t.Fatal(err)
			}
			if len(acts) != 0 || st.Status != StatusWaiting || !st.WaitUntil.Equal(mustTime(t, tc.want)) {
				t.Fatalf("%s until %s (sent %v), want waiting until %s", st.Status, st.WaitUntil.Format(time.RFC3339), acts, tc.want)
			}
			st, acts, err = Advance(d, st, Input{Kind: InputWake, Now: st.WaitUntil, Contact: contact, Facts: facts})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(templates(acts), []string{"appointment.noshow"}) || st.Outcome != OutcomeCompleted || st.Happened["next-business-day"] != HappenedTime {
				t.Errorf("%+v, sent %v", st, templates(acts))
			}
		})
	}
}

// A worker that was down past LateAfter still sends the no-show notice: a
// next_day wait never passes.
func TestAppointmentNoShowLateWakeStillSends(t *testing.T) {
	d := builtin(t, "appointment-noshow")
	contact := Contact{TimeZone: "America/New_York"}
	st, _, err := Advance(d, State{}, Input{Kind: InputStart, Now: mustTime(t, "2026-01-09T00:00:00Z"), Contact: contact})
	if err != nil {
		t.Fatal(err)
	}
	st, acts, err := Advance(d, st, Input{Kind: InputWake, Now: st.WaitUntil.Add(5 * time.Hour), Contact: contact})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(templates(acts), []string{"appointment.noshow"}) || st.Happened["next-business-day"] != HappenedTime {
		t.Errorf("late wake: %+v, sent %v", st, templates(acts))
	}
}

func templates(acts []Action) []string {
	var out []string
	for _, a := range acts {
		if a.Type == ActionSend {
			out = append(out, a.Template)
		}
	}
	return out
}
