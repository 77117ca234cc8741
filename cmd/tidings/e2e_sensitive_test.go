package main

import (
	"bytes"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// An appointment booked for a sensitive reason goes out portal-only: the
// caught mail names neither the provider nor the location (nor the time);
// the same appointment for an ordinary reason names both. The SIU S12
// notification, through intake, the worker, the policy and the STARTTLS
// catcher.
func TestSensitiveAppointmentNamesNoProviderOrLocation(t *testing.T) {
	const (
		provider = "Dr Canary Kestrel"
		location = "Canary Wing Clinic"
		icd      = "http://hl7.org/fhir/sid/icd-10-cm"
		sct      = "http://snomed.info/sct"
	)
	for _, tc := range []struct {
		name      string
		reason    func(appt map[string]any)
		sensitive bool
	}{
		{name: "ordinary reason code", sensitive: false,
			reason: func(a map[string]any) { a["reasonCode"] = coded(icd, "Z00.00") }},
		{name: "mental health reason code", sensitive: true,
			reason: func(a map[string]any) { a["reasonCode"] = coded(icd, "F32.9") }},
		{name: "psychiatry specialty", sensitive: true,
			reason: func(a map[string]any) { a["specialty"] = coded(sct, "394587001") }},
		{name: "reasonReference to an ordinary contained Condition", sensitive: false,
			reason: func(a map[string]any) { withContainedReason(a, icd, "K51.90") }},
		{name: "reasonReference to a contained HIV Condition", sensitive: true,
			reason: func(a map[string]any) { withContainedReason(a, icd, "B20") }},
		// The bundle's own Condition ac4c8e5d (ulcerative colitis) is not
		// kept with the event (intake keeps no clinical resource besides
		// the focus), and this subscription has no source to read it from:
		// its category is unknown, so the notice counts as sensitive.
		{name: "reasonReference to a Condition only in the bundle", sensitive: true,
			reason: func(a map[string]any) {
				a["reasonReference"] = []any{map[string]any{"reference": "Condition/ac4c8e5d-ba4c-33b6-28f4-2f60bf978cfb"}}
			}},
		// Neither in the bundle nor readable from a source: unknown, so sensitive.
		{name: "reasonReference to a Condition nowhere at hand", sensitive: true,
			reason: func(a map[string]any) {
				a["reasonReference"] = []any{map[string]any{"reference": "Condition/not-in-the-bundle"}}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := workflowStack(t, siuStart.Add(-10*24*time.Hour))
			ts.putContact(t, siuPatient, `{"email":"appt-patient@example.org","time_zone":"Asia/Kolkata"}`)
			bundle := withAppointment(t, fixture(t, siuS12), func(a map[string]any) {
				for _, p := range a["participant"].([]any) {
					actor := p.(map[string]any)["actor"].(map[string]any)
					switch ref := actor["reference"].(string); {
					case strings.HasPrefix(ref, "Practitioner/"):
						actor["display"] = provider
					case strings.HasPrefix(ref, "Location/"):
						actor["display"] = location
					}
				}
				tc.reason(a)
			})
			if r := ts.notify(t, ts.wrap(t, bundle)); r.Status != 202 {
				t.Fatalf("notify: %d %s", r.Status, r.Body)
			}
			ts.waitNotices(t, 1)
			msgs := ts.Mail.Messages()
			if len(msgs) != 1 || !msgs[0].TLS {
				t.Fatalf("%d messages caught (want 1 over TLS)", len(msgs))
			}
			text := decodedText(t, msgs[0].Data)
			msg, err := mail.ReadMessage(bytes.NewReader(msgs[0].Data))
			if err != nil {
				t.Fatal(err)
			}
			subject := msg.Header.Get("Subject")
			if !strings.Contains(text, "/portal/dev/notices/") {
				t.Errorf("no portal link:\n%s", text)
			}
			details := []string{provider, location, "12:45"}
			if tc.sensitive {
				if subject != "You have a new message" {
					t.Errorf("subject %q, want the portal-only one", subject)
				}
				for _, s := range details {
					if strings.Contains(text, s) {
						t.Errorf("the sensitive appointment's mail carries %q:\n%s", s, text)
					}
				}
				return
			}
			if subject != "Your appointment is confirmed" {
				t.Errorf("subject %q", subject)
			}
			for _, s := range details {
				if !strings.Contains(text, s) {
					t.Errorf("the ordinary appointment's mail lacks %q:\n%s", s, text)
				}
			}
		})
	}
}

// withContainedReason gives the Appointment a contained Condition of that
// code as its reasonReference.
func withContainedReason(appt map[string]any, system, code string) {
	appt["contained"] = []any{map[string]any{"resourceType": "Condition", "id": "why", "code": map[string]any{"coding": coded(system, code)[0].(map[string]any)["coding"]}}}
	appt["reasonReference"] = []any{map[string]any{"reference": "#why"}}
}

func coded(system, code string) []any {
	return []any{map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}}
}
