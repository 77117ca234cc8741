package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
)

// otherSource registers a second subscription of the dev tenant, with no
// source of its own: another FHIR server, whose resource ids may be the
// same as the first one's for different resources.
const (
	otherSource       = "other-ehr"
	otherSourceSecret = "other-ehr-subscription-secret-0123456789"
)

func (ts *testStack) addOtherSource(t *testing.T) {
	t.Helper()
	if err := ts.app.store.CreateSubscription(context.Background(), intake.Subscription{ID: otherSource, TenantID: devTenant}, otherSourceSecret); err != nil {
		t.Fatal(err)
	}
}

// notifyFromOther posts resources, wrapped into a notification of the
// other subscription, to its notify URL.
func (ts *testStack) notifyFromOther(t *testing.T, raw []byte) {
	t.Helper()
	body, err := fhir.WrapResources(raw, ts.BaseURL+"/fhir/r4/Subscription/"+otherSource, "eob", time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	if r := ts.postTo(t, otherSource, body, "application/fhir+json", otherSourceSecret, nil); r.Status != 202 {
		t.Fatalf("notify from %s: %d %s", otherSource, r.Status, r.Body)
	}
}

// Two FHIR servers of one tenant may use the same id for different
// appointments. A cancelled Appointment/123 from the second must not end
// the reminders the first one's Appointment/123 started: the first
// patient's reminder still goes out.
func TestAnotherSourcesCancellationKeepsReminders(t *testing.T) {
	ts, clock := workflowStack(t, siuStart.Add(-4*24*time.Hour))
	ts.addOtherSource(t)
	ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, siuS12))); r.Status != 202 {
		t.Fatalf("S12: %d", r.Status)
	}
	due72 := siuStart.Add(-72 * time.Hour)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 72 h reminder", waitingAt("wait-72h", due72))
	ts.waitNotices(t, 1)

	// The other server's appointment with the same id is cancelled: its own
	// cancellation notice goes out (a workflow of its own subject).
	ts.notifyFromOther(t, fixture(t, siuS15))
	ts.waitNotices(t, 2)
	ts.waitRun(t, siuAppointment, "appointment-cancelled", "completed", ended("completed"))
	reminders := runOf(t, ts.runsOf(t, siuAppointment), "appointment-reminders")
	if reminders.Status != "waiting" || reminders.Step != "wait-72h" {
		t.Fatalf("the first source's reminders after the other's cancellation: %s at %s (%s), want waiting at wait-72h",
			reminders.Status, reminders.Step, reminders.Outcome)
	}
	for _, r := range ts.runsOf(t, siuAppointment) {
		want := "subscription/" + devSubscription
		if r.WorkflowID == "appointment-cancelled" {
			want = "subscription/" + otherSource
		}
		if r.Source != want {
			t.Errorf("run of %s shows source %q, want %q", r.WorkflowID, r.Source, want)
		}
	}

	clock.Set(due72)
	ts.waitNotices(t, 3)
	ts.waitRun(t, siuAppointment, "appointment-reminders", "waiting for the 24 h reminder", waitingAt("wait-24h", siuStart.Add(-24*time.Hour)))
	want := []string{"Your appointment is confirmed", "Your appointment was cancelled", "Reminder: upcoming appointment"}
	if got := ts.subjects(t); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", got, want)
	}
}

// A Patient bundled by one subscription tells where that source's patient
// lives; it must not redirect the notices of another source's patient who
// has the same id. The first source's later EOB, which carries no Patient,
// goes to the address the first source gave.
func TestAnotherSourcesPatientDoesNotRedirectNotices(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	ts.addOtherSource(t)
	patient := fixture(t, "carin-bb-2.0.0/Patient-Patient2.json")
	const firstEmail = "GXXX@XXXX.com" // the fixture's own
	const otherEmail = "someone-else@example.org"
	var p map[string]any
	if err := json.Unmarshal(patient, &p); err != nil {
		t.Fatal(err)
	}
	p["telecom"] = []any{map[string]any{"system": "email", "value": otherEmail}}
	otherPatient, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	collection := withPatient2

	if r := ts.notify(t, ts.wrap(t, collection(patient, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")))); r.Status != 202 {
		t.Fatalf("first source: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 1)
	ts.notifyFromOther(t, collection(otherPatient, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")))
	ts.waitNotices(t, 2)
	// The first source's next EOB, without its Patient.
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))); r.Status != 202 {
		t.Fatalf("first source, bare EOB: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 3)

	msgs := ts.Mail.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	var to []string
	for _, m := range msgs {
		to = append(to, strings.ToLower(strings.Join(m.To, ",")))
	}
	want := []string{strings.ToLower(firstEmail), otherEmail, strings.ToLower(firstEmail)}
	if strings.Join(to, "|") != strings.Join(want, "|") {
		t.Fatalf("sent to %q, want %q", to, want)
	}
}
