package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/mail"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/worker"
)

// movableClock is the clock the worker reads; a test moves it to a wait's
// end instead of sleeping for days. Between moves it runs at real speed, so
// a retry the worker defers by seconds still comes due.
type movableClock struct {
	mu    sync.Mutex
	t     time.Time
	setAt time.Time
}

func (c *movableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.Add(time.Since(c.setAt))
}

func (c *movableClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t, c.setAt = t, time.Now()
}

// The published SIU S12 appointment: 2021-09-24 12:45–13:35 +05:30, for
// Patient/9e909e52-61a1-be50-1878-a12ef8c36346.
const (
	siuPatient     = "9e909e52-61a1-be50-1878-a12ef8c36346"
	siuAppointment = "Appointment/b7121f46-cf50-5cec-7cfb-5de8e42b82d2"
	siuS12         = "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json"
	siuS15         = "fhir-converter-hl7v2-siu/SIU-S15-01-expected.json"
)

var (
	siuStart = time.Date(2021, 9, 24, 7, 15, 0, 0, time.UTC) // 12:45 +05:30
	siuEnd   = time.Date(2021, 9, 24, 8, 5, 0, 0, time.UTC)  // 13:35 +05:30
)

// workflowStack is a stack whose worker reads a clock the test moves, and
// enqueues only wake-ups already due (the scheduler promotes the rest as
// the clock reaches them).
func workflowStack(t *testing.T, start time.Time) (*testStack, *movableClock) {
	t.Helper()
	clock := &movableClock{}
	clock.Set(start)
	ts := newTestStack(t, testOpts{Clock: clock, WakeHorizon: -1, ScheduleEvery: 50 * time.Millisecond, NoPlaceholder: true})
	return ts, clock
}

// putContact registers the patient's address and time zone through the API.
// saveAndActivate saves a workflow definition through the API with an
// operator key and activates it.
func saveAndActivate(t *testing.T, h http.Handler, token, id, def string) {
	t.Helper()
	if r := doRequest(h, "POST", "/v1/workflows", "application/json", token, def); r.Code != 201 {
		t.Fatalf("POST /v1/workflows: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h, "POST", "/v1/workflows/"+id+"/activate", "", token, ""); r.Code != 200 {
		t.Fatalf("activate %s: %d %s", id, r.Code, r.Body)
	}
}

// offerAndRequiredEOBWorkflows saves and activates two workflows of one
// step each that both start on every EOB: "eob-offers" (purpose marketing,
// from offers@plan.example) and "eob-required" (purpose payment, from
// eob@plan.example).
func offerAndRequiredEOBWorkflows(t *testing.T, h http.Handler, token string) {
	t.Helper()
	saveAndActivate(t, h, token, "eob-offers", `{"id": "eob-offers", "purpose": "marketing", "trigger": {"event": "eob.received"},
		"sender": {"name": "Plan offers", "from": "offers@plan.example"},
		"steps": [{"id": "offer", "type": "send", "channel": "email", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`)
	saveAndActivate(t, h, token, "eob-required", `{"id": "eob-required", "purpose": "payment", "trigger": {"event": "eob.received"},
		"sender": {"name": "Plan", "from": "eob@plan.example"},
		"steps": [{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`)
}

func (ts *testStack) putContact(t *testing.T, patientID, body string) {
	t.Helper()
	token := ts.apiKey(t, "dev", access.Contacts)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := doRequest(h, "PUT", "/v1/contacts/Patient/"+patientID, "application/json", token, body); r.Code != 200 {
		t.Fatalf("PUT contact: %d %s", r.Code, r.Body)
	}
}

// subjects are the subjects of the messages caught so far, in order.
func (ts *testStack) subjects(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range ts.Mail.Messages() {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg.Header.Get("Subject"))
	}
	return out
}

func (ts *testStack) runsOf(t *testing.T, subject string) []journey.RunView {
	t.Helper()
	runs, err := ts.app.store.RunsForSubject(context.Background(), devTenant, "", subject)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func runOf(t *testing.T, runs []journey.RunView, workflowID string) journey.RunView {
	t.Helper()
	for _, r := range runs {
		if r.WorkflowID == workflowID {
			return r
		}
	}
	t.Fatalf("no run of %s among %+v", workflowID, runs)
	return journey.RunView{}
}

// waitRun waits until the subject's run of a workflow satisfies ok.
func (ts *testStack) waitRun(t *testing.T, subject, workflowID string, what string, ok func(journey.RunView) bool) journey.RunView {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a hang guard: a loaded machine can take its time
	for {
		for _, r := range ts.runsOf(t, subject) {
			if r.WorkflowID == workflowID && ok(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			if os.Getenv("TIDINGS_TEST_LOGS") != "" {
				t.Log(ts.Logs.String())
			}
			t.Fatalf("timed out waiting for the %s run to be %s: %+v", workflowID, what, ts.runsOf(t, subject))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitingAt: the run waits at step until due, or up to a minute after it
// (a timeout is computed from the clock, which runs on between moves).
func waitingAt(step string, due time.Time) func(journey.RunView) bool {
	return func(r journey.RunView) bool {
		if r.Status != "waiting" || r.Step != step || r.DueAt == nil {
			return false
		}
		d := r.DueAt.Sub(due)
		return d >= 0 && d < time.Minute
	}
}

func ended(outcome string) func(journey.RunView) bool {
	return func(r journey.RunView) bool { return r.Status == "ended" && r.Outcome == outcome }
}

func pathOf(r journey.RunView) string {
	steps := make([]string, len(r.Path))
	for i, s := range r.Path {
		steps[i] = s.Step
		if s.Happened != "" {
			steps[i] += "(" + s.Happened + ")"
		}
	}
	return strings.Join(steps, " ")
}

// withAppointment returns the S12 bundle with its Appointment changed.
func withAppointment(t *testing.T, raw []byte, change func(appt map[string]any)) []byte {
	t.Helper()
	return editEntries(t, raw, func(res map[string]any) {
		if res["resourceType"] == "Appointment" {
			change(res)
		}
	})
}

// editEntries returns the bundle with change applied to each entry's resource.
func editEntries(t *testing.T, raw []byte, change func(res map[string]any)) []byte {
	t.Helper()
	return editJSON(t, raw, func(bundle map[string]any) {
		for _, e := range bundle["entry"].([]any) {
			change(e.(map[string]any)["resource"].(map[string]any))
		}
	})
}

// editJSON returns raw, a JSON object, changed.
func editJSON(t *testing.T, raw []byte, change func(map[string]any)) json.RawMessage {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	change(doc)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The built-in appointment workflow, from the booked SIU message ten days
// ahead: the confirmation at once, a reminder at start − 72 h and one at
// start − 24 h (inside 09:00–18:00 in the patient's zone), and after the
// visit, once it is fulfilled, the survey link.
func TestAppointmentWorkflowConfirmsRemindsAndSurveys(t *testing.T) {
	ts, clock := workflowStack(t, siuStart.Add(-10*24*time.Hour))
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 1)
	// 12:45 Kolkata − 72 h is 12:45 local, inside the window.
	due72 := siuStart.Add(-72 * time.Hour)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", due72))

	clock.Set(due72)
	ts.waitNotices(t, 2)
	due24 := siuStart.Add(-24 * time.Hour)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 24 h reminder", waitingAt("wait-24h", due24))

	clock.Set(due24.Add(time.Minute))
	ts.waitNotices(t, 3)
	after := siuEnd.Add(2 * time.Hour)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the end of the visit", waitingAt("wait-after", after))

	// The visit took place: the EHR marks the appointment fulfilled.
	fulfilled := withAppointment(t, fixture(t, siuS12), func(a map[string]any) { a["status"] = "fulfilled" })
	if r := ts.notify(t, ts.wrap(t, fulfilled)); r.Status != 202 {
		t.Fatalf("fulfilled: %d %s", r.Status, r.Body)
	}
	// No workflow starts on "fulfilled": the event is closed with a skipped
	// notice once its facts reached the waiting run.
	ts.waitNotices(t, 4)
	clock.Set(after)
	run := ts.waitRun(t, siuAppointment, "appointment-reminders", "completed", ended("completed"))
	ts.waitNotices(t, 5)

	want := []string{"Your appointment is confirmed", "Reminder: upcoming appointment", "Reminder: upcoming appointment", "How was your visit?"}
	if got := ts.subjects(t); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", got, want)
	}
	for _, m := range ts.Mail.Messages() {
		if len(m.To) != 1 || m.To[0] != "appt-patient@example.org" || !m.TLS {
			t.Errorf("message to %v (TLS %v)", m.To, m.TLS)
		}
	}
	// The reminders show the time in the patient's zone.
	if text := decodedText(t, ts.Mail.Messages()[1].Data); !strings.Contains(text, "12:45") {
		t.Errorf("the reminder does not show 12:45 (Asia/Kolkata):\n%s", text)
	}
	if p := pathOf(run); p != "confirmation wait-72h(time) reminder-72h wait-24h(time) reminder-24h wait-after(time) fulfilled survey done" {
		t.Errorf("path %s", p)
	}
	// Nothing more: the run has ended and is not re-entered by the trigger.
	if r := ts.notify(t, ts.wrap(t, withAppointment(t, fixture(t, siuS12), func(a map[string]any) { a["comment"] = "x" }))); r.Status != 202 {
		t.Fatalf("S12 again: %d", r.Status)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(ts.Mail.Messages()); n != 4 {
		t.Errorf("%d messages after the run ended, want 4", n)
	}
	if runs := ts.runsOf(t, siuAppointment); len(runs) != 1 {
		t.Errorf("%d runs for the appointment, want 1", len(runs))
	}
}

// Cancelled between the reminders: the reminder run ends, the remaining
// reminder is never sent, and the cancellation notice goes out.
func TestCancelledAppointmentStopsReminders(t *testing.T) {
	ts, clock := workflowStack(t, siuStart.Add(-4*24*time.Hour))
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	due72 := siuStart.Add(-72 * time.Hour)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", due72))
	clock.Set(due72)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 24 h reminder", waitingAt("wait-24h", siuStart.Add(-24*time.Hour)))
	ts.waitNotices(t, 2)

	clock.Set(due72.Add(time.Hour))
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS15))); r.Status != 202 {
		t.Fatalf("S15: %d", r.Status)
	}
	ts.waitNotices(t, 3)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "cancelled", ended("cancelled"))
	ts.waitRun(t, siuAppointment, "appointment-cancelled", "completed", ended("completed"))

	// The 24 h reminder's moment comes and goes: nothing is sent.
	clock.Set(siuStart.Add(-24 * time.Hour))
	time.Sleep(400 * time.Millisecond) // several scheduler passes
	want := []string{"Your appointment is confirmed", "Reminder: upcoming appointment", "Your appointment was cancelled"}
	if got := ts.subjects(t); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", got, want)
	}
}

// A reschedule moves the reminders: the appointment moves two days later,
// so the 72 h reminder's wake-up moves with it, and nothing is sent at the
// old moment.
func TestRescheduleMovesReminders(t *testing.T) {
	ts, clock := workflowStack(t, siuStart.Add(-10*24*time.Hour))
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	ts.waitNotices(t, 1)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", siuStart.Add(-72*time.Hour)))

	later := 48 * time.Hour
	moved := withAppointment(t, fixture(t, siuS12), func(a map[string]any) {
		a["start"] = siuStart.Add(later).Format(time.RFC3339)
		a["end"] = siuEnd.Add(later).Format(time.RFC3339)
	})
	if r := ts.notify(t, ts.wrap(t, moved)); r.Status != 202 {
		t.Fatalf("rescheduled: %d %s", r.Status, r.Body)
	}
	newDue := siuStart.Add(later - 72*time.Hour)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "moved to the new start − 72 h", waitingAt("wait-72h", newDue))

	clock.Set(siuStart.Add(-72 * time.Hour).Add(time.Minute)) // the old moment
	time.Sleep(400 * time.Millisecond)
	if n := len(ts.Mail.Messages()); n != 1 {
		t.Fatalf("%d messages at the old reminder time, want 1 (the confirmation)", n)
	}
	clock.Set(newDue)
	ts.waitNotices(t, 2) // the confirmation and the reminder (the reschedule starts no new run: the booking's exists)
	if got := ts.subjects(t); len(got) != 2 || got[1] != "Reminder: upcoming appointment" {
		t.Fatalf("messages %q, want the confirmation and a reminder", got)
	}
	// The reminder shows the new date: 2021-09-26 12:45 in Kolkata.
	if text := decodedText(t, ts.Mail.Messages()[1].Data); !strings.Contains(text, "26") || !strings.Contains(text, "12:45") {
		t.Errorf("the reminder does not show the new start:\n%s", text)
	}
}

// The EOB workflow: the notice, then a reminder after seven days only if
// the member did not view it in the portal.
func TestEOBReminderOnlyWithoutPortalView(t *testing.T) {
	const eobFile = "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json" // about Patient2
	for _, viewed := range []bool{true, false} {
		name := map[bool]string{true: "viewed", false: "not viewed"}[viewed]
		t.Run(name, func(t *testing.T) {
			t0 := time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC)
			ts, clock := workflowStack(t, t0)
			ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
			if r := ts.notify(t, ts.wrap(t, fixture(t, eobFile))); r.Status != 202 {
				t.Fatalf("EOB: %d %s", r.Status, r.Body)
			}
			ts.waitNotices(t, 1)
			var subject string
			ts.app.store.RawScan(context.Background(), &subject, `SELECT subject FROM runs`)
			ts.waitRun(t, subject, "eob-notice", "waiting for a portal view", waitingAt("wait-viewed", t0.Add(7*24*time.Hour)))
			if viewed {
				clock.Set(t0.Add(26 * time.Hour))
				token := ts.apiKey(t, "dev", access.Operator)
				h, _ := ts.app.handler(nil)
				if r := doRequest(h, "POST", "/v1/events", "application/json", token, `{"type":"portal.viewed","patient":"Patient/Patient2"}`); r.Code != 202 {
					t.Fatalf("POST /v1/events: %d %s", r.Code, r.Body)
				}
				run := ts.waitRun(t, subject, "eob-notice", "ended as viewed", ended("viewed"))
				if p := pathOf(run); p != "notice wait-viewed(portal.viewed) viewed" {
					t.Errorf("path %s", p)
				}
			}
			clock.Set(t0.Add(7*24*time.Hour + time.Minute))
			if viewed {
				time.Sleep(400 * time.Millisecond)
				if n := len(ts.Mail.Messages()); n != 1 {
					t.Fatalf("%d messages, want only the notice", n)
				}
				return
			}
			ts.waitNotices(t, 2)
			run := ts.waitRun(t, subject, "eob-notice", "completed", ended("completed"))
			if p := pathOf(run); p != "notice wait-viewed(timeout) reminder done" {
				t.Errorf("path %s", p)
			}
			want := []string{"You have a new Explanation of Benefits", "Reminder: you have an Explanation of Benefits to view"}
			if got := ts.subjects(t); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("messages %q, want %q", got, want)
			}
		})
	}
}

// A workflow posted through the API, with a wait short enough to run in
// real time: Redis is wiped (FLUSHALL) while the run's wake-up sits in it,
// and the scheduler restores the wake-up from Postgres: no run is lost.
func TestFlushAllLosesNoRun(t *testing.T) {
	ctx := context.Background()
	rd, err := testenv.StartRedis(ctx, t.TempDir(), testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	ts := newTestStack(t, testOpts{RedisAddr: rd.Addr, NoWorkflows: true, NoPlaceholder: true,
		ScheduleEvery: 100 * time.Millisecond, WakeSlack: 500 * time.Millisecond})
	token := ts.apiKey(t, "dev", access.Operator)
	h, _ := ts.app.handler(nil)
	def := `{"id": "eob-quick", "trigger": {"event": "eob.received"}, "priority": "high", "sender": {"name": "Plan"},
		"steps": [
			{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"},
			{"id": "pause", "type": "wait", "duration": "3s"},
			{"id": "reminder", "type": "send", "channel": "email", "template": "eob.reminder"},
			{"id": "done", "type": "end"}]}`
	saveAndActivate(t, h, token, "eob-quick", def)
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))); r.Status != 202 {
		t.Fatalf("EOB: %d", r.Status)
	}
	ts.waitNotices(t, 1)
	subject := "ExplanationOfBenefit/EOBPharmacy1"
	ts.waitRun(t, subject, "eob-quick", "waiting", func(r journey.RunView) bool { return r.Status == "waiting" && r.Step == "pause" })

	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	// The wake-up is in Redis (scheduled on the high-priority queue) ...
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := rc.ZCard(ctx, "asynq:{workflow_high}:scheduled").Result()
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduled wake-ups in Redis: %d, %v; want 1", n, err)
		}
	}
	// ... and then it is not.
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := rc.DBSize(ctx).Result(); n != 0 {
		t.Fatalf("Redis holds %d keys after FLUSHALL", n)
	}
	run := ts.waitRun(t, subject, "eob-quick", "completed", ended("completed"))
	ts.waitNotices(t, 2)
	if p := pathOf(run); p != "notice pause(time) reminder done" {
		t.Errorf("path %s", p)
	}
	// The scheduler logs once its pass ends, which may be after the wake-up
	// it handed over has already run the reminder.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(ts.Logs.String(), "scheduler restored wake-ups the queue had lost"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("the scheduler did not report restoring the wake-up")
			break
		}
	}
	if got := ts.subjects(t); len(got) != 2 || got[1] != "Reminder: you have an Explanation of Benefits to view" {
		t.Errorf("messages %q", got)
	}
	// Stats show the run's path.
	r := doRequest(h, "GET", "/v1/workflows/eob-quick/stats", "", token, "")
	var stats struct {
		Steps []api.StepStatsBody `json:"steps"`
	}
	if err := json.Unmarshal(r.Body.Bytes(), &stats); err != nil || r.Code != 200 {
		t.Fatalf("stats: %d %s", r.Code, r.Body)
	}
	for _, s := range stats.Steps {
		if s.Processed != 1 || s.Now != 0 {
			t.Errorf("step %s: processed %d, now %d; want 1, 0", s.Step, s.Processed, s.Now)
		}
	}
	if last := stats.Steps[len(stats.Steps)-1]; last.Outcomes["completed"] != 1 {
		t.Errorf("last step outcomes %v", last.Outcomes)
	}
}

// Booked and cancelled arrive before the worker sees either (a backlog, a
// retry): only the newest version decides. The booking is recorded as
// superseded, no confirmation or reminder goes out, and the cancellation
// notice does.
func TestOutOfOrderLifecycleOnlyNewestDecides(t *testing.T) {
	clock := &movableClock{}
	clock.Set(siuStart.Add(-10 * 24 * time.Hour))
	ts := newTestStack(t, testOpts{Clock: clock, WakeHorizon: -1, ScheduleEvery: 50 * time.Millisecond, NoPlaceholder: true, DeferWorker: true})
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	for _, f := range []string{siuS12, siuS15} {
		if r := ts.notify(t, ts.wrap(t, fixture(t, f))); r.Status != 202 {
			t.Fatalf("%s: %d", f, r.Status)
		}
	}
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	ts.waitRun(t, siuAppointment, "appointment-cancelled", "completed", ended("completed"))
	ts.waitNotices(t, 2)
	outs, _ := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	var superseded bool
	for _, o := range outs {
		superseded = superseded || (o.Status == delivery.NoticeSkipped && strings.Contains(strings.Join(o.Reasons, ""), "superseded"))
	}
	if !superseded {
		t.Errorf("the booking was not recorded as superseded: %+v", outs)
	}
	if runs := ts.runsOf(t, siuAppointment); len(runs) != 1 {
		t.Errorf("runs %+v; want only the cancellation's", runs)
	}
	if got := ts.subjects(t); len(got) != 1 || got[0] != "Your appointment was cancelled" {
		t.Fatalf("messages %q; want only the cancellation", got)
	}
}

// An appointment entered in error ends its runs without a word.
func TestEnteredInErrorEndsRunsSilently(t *testing.T) {
	ts, clock := workflowStack(t, siuStart.Add(-10*24*time.Hour))
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", siuStart.Add(-72*time.Hour)))
	ts.waitNotices(t, 1)
	eie := withAppointment(t, fixture(t, siuS12), func(a map[string]any) { a["status"] = "entered-in-error" })
	if r := ts.notify(t, ts.wrap(t, eie)); r.Status != 202 {
		t.Fatalf("entered-in-error: %d", r.Status)
	}
	ts.waitRun(t, siuAppointment, "appointment-reminders", "ended", ended("entered-in-error"))
	clock.Set(siuStart.Add(-24 * time.Hour))
	time.Sleep(400 * time.Millisecond)
	if got := ts.subjects(t); len(got) != 1 {
		t.Fatalf("messages %q; want only the confirmation", got)
	}
}

func backlogStack(t *testing.T, start time.Time) (*testStack, *movableClock, *asynq.Inspector) {
	clock := &movableClock{}
	clock.Set(start)
	addr, db := testenv.NewRedisDB(t)
	ts := newTestStack(t, testOpts{Clock: clock, WakeHorizon: -1, ScheduleEvery: 50 * time.Millisecond, NoPlaceholder: true, RedisAddr: addr, RedisDB: db})
	insp := asynq.NewInspector(worker.RedisOpt(addr, "", db))
	t.Cleanup(func() { insp.Close() })
	return ts, clock, insp
}

// Two cancelled versions of a booked appointment stored before the worker
// processes either (the event queue paused): the first is superseded, and
// the second is compared with the version that took effect (booked), so it
// is a cancellation: the reminders end and the cancellation notice goes.
func TestTwoCancelledVersionsInABacklog(t *testing.T) {
	ts, clock, insp := backlogStack(t, siuStart.Add(-10*24*time.Hour))
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	ts.waitNotices(t, 1)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", siuStart.Add(-72*time.Hour)))
	if err := insp.PauseQueue("default"); err != nil {
		t.Fatal(err)
	}
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS15))); r.Status != 202 {
		t.Fatalf("S15: %d", r.Status)
	}
	second := withAppointment(t, fixture(t, siuS15), func(a map[string]any) { a["comment"] = "cancellation reason added" })
	if r := ts.notify(t, ts.wrap(t, second)); r.Status != 202 {
		t.Fatalf("S15 again: %d %s", r.Status, r.Body)
	}
	if err := insp.UnpauseQueue("default"); err != nil {
		t.Fatal(err)
	}
	ts.waitNotices(t, 3)
	time.Sleep(500 * time.Millisecond)
	runs := ts.runsOf(t, siuAppointment)
	for _, r := range runs {
		t.Logf("run %s status %s outcome %s step %s", r.WorkflowID, r.Status, r.Outcome, r.Step)
	}
	outs, _ := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	for _, o := range outs {
		t.Logf("notice %d event %d %s %v", o.NoticeID, o.EventID, o.Status, o.Reasons)
	}
	clock.Set(siuStart.Add(-72 * time.Hour))
	time.Sleep(1500 * time.Millisecond)
	got := ts.subjects(t)
	t.Logf("messages: %q", got)
	if strings.Join(got, "|") != "Your appointment is confirmed|Your appointment was cancelled" {
		t.Errorf("messages %q; want the confirmation and the cancellation, no reminder", got)
	}
}

// A reschedule followed by another update with the same new start, both
// stored before processing: the second is compared with the booking that
// took effect, so it is the reschedule, and the reminders move.
func TestRescheduleThenUpdateInABacklog(t *testing.T) {
	ts, _, insp := backlogStack(t, siuStart.Add(-10*24*time.Hour))
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	ts.waitNotices(t, 1)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", siuStart.Add(-72*time.Hour)))
	if err := insp.PauseQueue("default"); err != nil {
		t.Fatal(err)
	}
	later := 48 * time.Hour
	move := func(comment string) []byte {
		return withAppointment(t, fixture(t, siuS12), func(a map[string]any) {
			a["start"] = siuStart.Add(later).Format(time.RFC3339)
			a["end"] = siuEnd.Add(later).Format(time.RFC3339)
			if comment != "" {
				a["comment"] = comment
			}
		})
	}
	for _, b := range [][]byte{move(""), move("room changed")} {
		if r := ts.notify(t, ts.wrap(t, b)); r.Status != 202 {
			t.Fatalf("post: %d %s", r.Status, r.Body)
		}
	}
	if err := insp.UnpauseQueue("default"); err != nil {
		t.Fatal(err)
	}
	// The first moved version is superseded, the second is the reschedule:
	// the 72 h reminder moves to the new start − 72 h.
	ts.waitRun(t, siuAppointment, "appointment-reminders", "moved to the new start − 72 h", waitingAt("wait-72h", siuStart.Add(later-72*time.Hour)))
}

// An event is never only in Redis: workers claim events from Postgres, so
// a FLUSHALL before any worker saw the event loses nothing.
func TestFlushAllLosesNoEvent(t *testing.T) {
	ctx := context.Background()
	rd, err := testenv.StartRedis(ctx, t.TempDir(), testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	ts := newTestStack(t, testOpts{RedisAddr: rd.Addr, NoPlaceholder: true, DeferWorker: true,
		ReconcileEvery: 100 * time.Millisecond, WakeSlack: 500 * time.Millisecond})
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))); r.Status != 202 {
		t.Fatalf("EOB: %d", r.Status)
	}
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	ts.waitNotices(t, 1)
	if got := ts.subjects(t); len(got) != 1 || got[0] != "You have a new Explanation of Benefits" {
		t.Fatalf("messages %q", got)
	}
}
