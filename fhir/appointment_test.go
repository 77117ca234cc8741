package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	siuS12 = "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json"
	siuS15 = "fhir-converter-hl7v2-siu/SIU-S15-01-expected.json"
	siuS26 = "fhir-converter-hl7v2-siu/SIU-S26-01-expected.json"

	siuAppointmentID = "b7121f46-cf50-5cec-7cfb-5de8e42b82d2"
	siuPatientID     = "9e909e52-61a1-be50-1878-a12ef8c36346"
)

// appointmentEvent wraps a fixture the way intake does for a bare resource
// or batch Bundle and returns its one Appointment event.
func appointmentEvent(t *testing.T, file string) Event {
	t.Helper()
	_, n := wrapAndParse(t, mustRead(t, file))
	if len(n.Events) != 1 || n.Events[0].ResourceType != "Appointment" {
		t.Fatalf("%s: %d events, want one Appointment", file, len(n.Events))
	}
	return n.Events[0]
}

// mustAppointmentFacts is Event.AppointmentFacts over a wrapped fixture.
func mustAppointmentFacts(t *testing.T, file string) AppointmentFacts {
	t.Helper()
	f, err := appointmentEvent(t, file).AppointmentFacts()
	if err != nil {
		t.Fatalf("%s: AppointmentFacts: %v", file, err)
	}
	return f
}

// resourceOf returns the first resource of the given type in a Bundle.
func resourceOf(t testing.TB, bundle []byte, typ string) json.RawMessage {
	t.Helper()
	for _, r := range bundleResources(t, bundle) {
		if strings.HasPrefix(headOf(t, r), typ+"/") {
			return r
		}
	}
	t.Fatalf("no %s in bundle", typ)
	return nil
}

func TestAppointmentFactsFixtures(t *testing.T) {
	siuStart := time.Date(2021, 9, 24, 7, 15, 0, 0, time.UTC) // 12:45 at +05:30
	siuEnd := time.Date(2021, 9, 24, 8, 5, 0, 0, time.UTC)
	siu := func(status string) AppointmentFacts {
		return AppointmentFacts{
			ID: siuAppointmentID, Status: status,
			Start: "2021-09-24T12:45:00+05:30", End: "2021-09-24T13:35:00+05:30",
			StartTime: siuStart, EndTime: siuEnd, MinutesDuration: 1,
			PatientRef: "Patient/" + siuPatientID, PatientID: siuPatientID,
			PractitionerName: "Robert C GE", LocationName: "055",
		}
	}
	tests := []struct {
		file string
		want AppointmentFacts
	}{
		// The reasonReference names a Condition the example does not carry:
		// unread. Description and comment are not carried.
		{"hl7-fhir-r4-spec/appointment-example.json", AppointmentFacts{
			ID: "example", Status: "booked",
			Start: "2013-12-10T09:00:00Z", End: "2013-12-10T11:00:00Z",
			StartTime: time.Date(2013, 12, 10, 9, 0, 0, 0, time.UTC), EndTime: time.Date(2013, 12, 10, 11, 0, 0, 0, time.UTC),
			PatientRef: "Patient/example", PatientID: "example",
			PractitionerName: "Dr Adam Careful", LocationName: "South Wing, second floor",
			Reasons:       []Coding{{"http://example.org/service-category", "gp"}, {"", "52"}, {"http://snomed.info/sct", "394814009"}},
			UnreadReasons: []string{"Condition/example"},
		}},
		// Proposed: only requestedPeriod, no start; the attending
		// participant has no actor yet.
		{"hl7-fhir-r4-spec/appointment-example-request.json", AppointmentFacts{
			ID: "examplereq", Status: "proposed", MinutesDuration: 15,
			PatientRef: "Patient/example", PatientID: "example",
			LocationName: "South Wing, second floor",
			Reasons:      []Coding{{"http://snomed.info/sct", "413095006"}, {"http://example.org/service-category", "gp"}, {"http://snomed.info/sct", "394814009"}},
		}},
		// No reason, service or specialty (appointmentType is not read).
		// Names resolve from the Bundle's Practitioner and Location.
		{siuS12, siu("booked")},
		{siuS15, siu("cancelled")},
		{siuS26, siu("noshow")},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got := mustAppointmentFacts(t, tc.file)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("facts =\n%+v\nwant\n%+v", got, tc.want)
			}
			// What the visit is for travels only as codes in Reasons
			// (for classification), never in any other field.
			rest := got
			rest.Reasons = nil
			dump := fmt.Sprintf("%#v", rest)
			for _, secret := range []string{"MRI", "burn", "Severe", "emergency", "EMERGENCY", "Gastroenterologist",
				"General Discussion", "General practice", "FOLLOWUP", "WALKIN", "Clinical Review", "413095006", "myringotomy", "ServiceRequest"} {
				if strings.Contains(dump, secret) {
					t.Errorf("facts carry %q", secret)
				}
			}
		})
	}
}

// TestAppointmentFactsFromMatchesEvent: the SIU Bundle's resources given
// directly (its references are "Type/id", so no fullUrl is needed) yield
// the same facts as the notification path.
func TestAppointmentFactsFromMatchesEvent(t *testing.T) {
	for _, file := range []string{siuS12, siuS15, siuS26} {
		raw := mustRead(t, file)
		got, err := AppointmentFactsFrom(resourceOf(t, raw, "Appointment"), bundleResources(t, raw))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if want := mustAppointmentFacts(t, file); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: facts over the whole Bundle differ from the event's:\n%+v\n%+v", file, got, want)
		}
	}
}

func TestAppointmentFactsResolution(t *testing.T) {
	appt := map[string]any{
		"resourceType": "Appointment", "id": "a1", "meta": map[string]any{"versionId": "7"}, "status": "cancelled",
		"start": "2024-03-01T09:30:00.250-05:00", "end": "2024-03-01T10:00:00-05:00",
		"cancelationReason": map[string]any{"coding": []any{map[string]any{"system": cancellationReasonSystem, "code": "prov-onc"}}, "text": canary},
		"contained":         []any{map[string]any{"resourceType": "Location", "id": "loc", "name": "Clinic B"}},
		"participant": []any{
			// A device first: neither patient, practitioner nor location.
			map[string]any{"actor": map[string]any{"reference": "Device/d1"}, "status": "accepted"},
			// Patient by urn:uuid that is not its id: only fullUrls resolve it.
			map[string]any{"actor": map[string]any{"reference": "urn:uuid:6f1c9a52-3d4e-4b8a-9c1d-2e3f4a5b6c7d"}, "status": "accepted"},
			// Role without display, resolved to its practitioner.
			map[string]any{"actor": map[string]any{"reference": "PractitionerRole/r1"}, "status": "accepted"},
			map[string]any{"actor": map[string]any{"reference": "#loc"}, "status": "accepted"},
		},
	}
	related := []json.RawMessage{
		mustJSON(t, map[string]any{"resourceType": "Patient", "id": "p-9"}),
		mustJSON(t, map[string]any{"resourceType": "PractitionerRole", "id": "r1", "practitioner": map[string]any{"reference": "Practitioner/d1"}}),
		mustJSON(t, map[string]any{"resourceType": "Practitioner", "id": "d1", "name": []any{map[string]any{"given": []string{"Ann"}, "family": "Lee"}}}),
	}
	ev := Event{Focus: mustJSON(t, appt), Related: related, RelatedURLs: []string{"urn:uuid:6f1c9a52-3d4e-4b8a-9c1d-2e3f4a5b6c7d", "", ""}}
	got, err := ev.AppointmentFacts()
	if err != nil {
		t.Fatal(err)
	}
	want := AppointmentFacts{
		ID: "a1", VersionID: "7", Status: "cancelled",
		Start: "2024-03-01T09:30:00.250-05:00", End: "2024-03-01T10:00:00-05:00",
		StartTime: time.Date(2024, 3, 1, 14, 30, 0, 250e6, time.UTC), EndTime: time.Date(2024, 3, 1, 15, 0, 0, 0, time.UTC),
		PatientRef: "urn:uuid:6f1c9a52-3d4e-4b8a-9c1d-2e3f4a5b6c7d", PatientID: "p-9",
		PractitionerName: "Ann Lee", LocationName: "Clinic B", CancelledBy: "provider",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("facts =\n%+v\nwant\n%+v", got, want)
	}
	if strings.Contains(fmt.Sprintf("%#v", got), "onc") || strings.Contains(fmt.Sprintf("%#v", got), canary) {
		t.Errorf("cancellation reason code or text carried")
	}
	// Without fullUrls the urn:uuid is not guessed: a Patient participant
	// is still recognised by nothing, so PatientRef stays empty.
	noURLs, err := AppointmentFactsFrom(ev.Focus, related)
	if err != nil {
		t.Fatal(err)
	}
	if noURLs.PatientID != "" || noURLs.PatientRef != "" {
		t.Errorf("AppointmentFactsFrom guessed patient %q %q", noURLs.PatientRef, noURLs.PatientID)
	}
}

func TestAppointmentFactsActorByTypeAndCancelledBy(t *testing.T) {
	for _, tc := range []struct {
		code, system, want string
	}{
		{"pat", cancellationReasonSystem, "patient"},
		{"pat-crs", cancellationReasonSystem, "patient"},
		{"prov", cancellationReasonSystem, "provider"},
		{"oth-weath", cancellationReasonSystem, "other"},
		{"maint", cancellationReasonSystem, "other"},
		{"pat", "http://example.org/local", ""},
	} {
		appt := mustJSON(t, map[string]any{
			"resourceType": "Appointment", "status": "cancelled",
			"cancelationReason": map[string]any{"coding": []any{map[string]any{"system": tc.system, "code": tc.code}}},
			"participant": []any{
				// No reference: the kind comes from Reference.type.
				map[string]any{"actor": map[string]any{"type": "http://hl7.org/fhir/StructureDefinition/Practitioner", "display": " Dr Who "}, "status": "accepted"},
				map[string]any{"actor": map[string]any{"type": "Location", "display": "Room 4"}, "status": "accepted"},
				map[string]any{"actor": map[string]any{"type": "Patient", "display": canary}, "status": "accepted"},
			},
		})
		got, err := AppointmentFactsFrom(appt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.CancelledBy != tc.want || got.PractitionerName != "Dr Who" || got.LocationName != "Room 4" || got.PatientRef != "" || got.Reasons != nil {
			t.Errorf("%s|%s: %+v", tc.system, tc.code, got)
		}
	}
}

// Reasons hold the codes of reasonCode, serviceCategory, serviceType,
// specialty and of the Condition, Procedure or Observation a
// reasonReference resolves to, wherever it is; free text never.
func TestAppointmentFactsReasons(t *testing.T) {
	icd := func(code string) map[string]any {
		return map[string]any{"coding": []any{map[string]any{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}}, "text": canary}
	}
	condition := func(id, code string) map[string]any {
		return map[string]any{"resourceType": "Condition", "id": id, "code": icd(code), "subject": map[string]any{"reference": "Patient/p1"}}
	}
	ref := func(r string) map[string]any { return map[string]any{"reference": r, "display": canary} }
	appt := mustJSON(t, map[string]any{
		"resourceType": "Appointment", "status": "booked", "participant": []any{},
		"contained":       []any{condition("c1", "F32.9")},
		"reasonCode":      []any{icd("Z30.09"), map[string]any{"text": canary}},
		"serviceCategory": []any{icd("A"), map[string]any{"coding": []any{map[string]any{"code": ""}}}},
		"serviceType":     []any{icd("B")},
		"specialty":       []any{icd("C")},
		"reasonReference": []any{
			ref("#c1"),                        // contained
			ref("Condition/c2"),               // in the notification
			ref("Procedure/p3"),               // in the notification
			ref("Patient/p1"),                 // not a reason resource: no codes
			ref("Condition/missing"),          // nowhere
			map[string]any{"display": canary}, // nothing to read
		},
		"description": canary, "comment": canary, "patientInstruction": canary,
	})
	related := []json.RawMessage{
		mustJSON(t, condition("c2", "B20")),
		mustJSON(t, map[string]any{"resourceType": "Procedure", "id": "p3", "code": icd("Z31.0")}),
		mustJSON(t, map[string]any{"resourceType": "Patient", "id": "p1"}),
	}
	got, err := AppointmentFactsFrom(appt, related)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, c := range got.Reasons {
		codes = append(codes, c.Code)
	}
	if want := "Z30.09 A B C F32.9 B20 Z31.0"; strings.Join(codes, " ") != want {
		t.Errorf("reason codes %q, want %q", strings.Join(codes, " "), want)
	}
	if !slices.Equal(got.UnreadReasons, []string{"Condition/missing"}) {
		t.Errorf("unread %q", got.UnreadReasons)
	}
	if strings.Contains(fmt.Sprintf("%#v", got), canary) {
		t.Errorf("free text in the facts: %+v", got)
	}
	// The same reference, once the resource is at hand, is read.
	got, err = AppointmentFactsFrom(appt, append(related, mustJSON(t, condition("missing", "F10.20"))))
	if err != nil || got.UnreadReasons != nil || got.Reasons[len(got.Reasons)-1].Code != "F10.20" {
		t.Errorf("after fetching: %+v %v", got, err)
	}
}

func TestAppointmentFactsEveryStatus(t *testing.T) {
	for _, status := range []string{"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error", "checked-in", "waitlist"} {
		got, err := AppointmentFactsFrom(mustJSON(t, map[string]any{"resourceType": "Appointment", "status": status, "participant": []any{}}), nil)
		if err != nil || got.Status != status {
			t.Errorf("%s: %+v %v", status, got, err)
		}
	}
}

func TestAppointmentFactsErrors(t *testing.T) {
	valid := func(extra map[string]any) []byte {
		a := map[string]any{"resourceType": "Appointment", "status": "booked", "participant": []any{}}
		for k, v := range extra {
			a[k] = v
		}
		return mustJSON(t, a)
	}
	tests := []struct {
		name    string
		appt    []byte
		related []json.RawMessage
		says    string
	}{
		{"not JSON", []byte(`{"resourceType":"Appointment","status":"` + canary), nil, "not valid JSON"},
		{"array", []byte(`["` + canary + `"]`), nil, "not a JSON object"},
		{"EOB", mustRead(t, eobFixtures[0]), nil, "not Appointment"},
		{"no status", mustJSON(t, map[string]any{"resourceType": "Appointment", "id": canary, "participant": []any{}}), nil, "no status"},
		{"unknown status", valid(map[string]any{"status": canary}), nil, "invalid value"},
		{"R5-only status", valid(map[string]any{"status": "scheduled"}), nil, "invalid value"},
		{"status not a string", valid(map[string]any{"status": 12345}), nil, "Appointment"},
		{"start not an instant", valid(map[string]any{"start": canary}), nil, "Appointment.start is not a FHIR instant"},
		{"start without zone", valid(map[string]any{"start": "2024-03-01T09:30:00"}), nil, "Appointment.start"},
		{"start a date", valid(map[string]any{"start": "2024-03-01"}), nil, "Appointment.start"},
		{"start the zero instant", valid(map[string]any{"start": "0001-01-01T00:00:00Z"}), nil, "Appointment.start"},
		{"end not an instant", valid(map[string]any{"start": "2024-03-01T09:30:00Z", "end": canary}), nil, "Appointment.end"},
		{"negative duration", valid(map[string]any{"minutesDuration": -5}), nil, "minutesDuration is negative"},
		{"participant status unknown", valid(map[string]any{"participant": []any{map[string]any{"status": canary}}}), nil, "invalid value"},
		{"related not an object", valid(nil), []json.RawMessage{json.RawMessage(`"` + canary + `"`)}, "related[0]"},
		{"related not JSON", valid(nil), []json.RawMessage{json.RawMessage(`{"x":"` + canary)}, "related[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppointmentFactsFrom(tc.appt, tc.related)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want ErrMalformed saying %q", err, tc.says)
			}
			if !reflect.DeepEqual(got, AppointmentFacts{}) {
				t.Errorf("facts returned with an error: %+v", got)
			}
			assertNoCanary(t, err)
			if strings.Contains(err.Error(), "12345") {
				t.Errorf("error leaks a value: %q", err)
			}
		})
	}
	if _, err := (Event{}).AppointmentFacts(); !errors.Is(err, ErrMalformed) {
		t.Errorf("event without focus: %v", err)
	}
}

func TestAppointmentFactsLogRedacted(t *testing.T) {
	f := mustAppointmentFacts(t, "hl7-fhir-r4-spec/appointment-example.json")
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("appointment", "facts", f)
	logger.Info("appointment", slog.Any("facts", f))
	out := buf.String()
	if strings.Count(out, "[REDACTED]") != 2 {
		t.Errorf("log = %s", out)
	}
	for _, leak := range []string{"Adam Careful", "South Wing", "Patient/example", "2013-12-10"} {
		if strings.Contains(out, leak) {
			t.Errorf("log carries %q: %s", leak, out)
		}
	}
}

func TestAppointmentEventKindOf(t *testing.T) {
	s12 := mustAppointmentFacts(t, siuS12)
	s15 := mustAppointmentFacts(t, siuS15)
	s26 := mustAppointmentFacts(t, siuS26)
	hl7Booked := mustAppointmentFacts(t, "hl7-fhir-r4-spec/appointment-example.json")
	hl7Proposed := mustAppointmentFacts(t, "hl7-fhir-r4-spec/appointment-example-request.json")

	// The previous version booked an hour later.
	earlier := s12
	earlier.StartTime = s12.StartTime.Add(time.Hour)
	// The same instant written in UTC: not a reschedule.
	sameInstant := s12
	sameInstant.Start = "2021-09-24T07:15:00Z"
	// Status transitions that no published example shows, built from S12.
	with := func(status string) AppointmentFacts { f := s12; f.Status = status; return f }
	withoutStart := s12
	withoutStart.Start, withoutStart.StartTime = "", time.Time{}

	tests := []struct {
		name string
		cur  AppointmentFacts
		prev *AppointmentFacts
		want AppointmentEventKind
	}{
		{"S12 first seen", s12, nil, KindBooked},
		{"S12 again", s12, &s12, KindOther},
		{"S12 then S15", s15, &s12, KindCancelled},
		{"S12 then S26", s26, &s12, KindNoShow},
		{"S15 first seen", s15, nil, KindCancelled},
		{"S15 again", s15, &s15, KindOther},
		{"S26 again", s26, &s26, KindOther},
		{"S15 then S12 (rebooked)", s12, &s15, KindBooked},
		{"S12 with another start before", s12, &earlier, KindRescheduled},
		{"S12 with the same instant in another offset before", s12, &sameInstant, KindOther},
		{"start added to a booked appointment", s12, &withoutStart, KindRescheduled},
		{"hl7 appointment-example first seen", hl7Booked, nil, KindBooked},
		{"hl7 appointment-example-request (proposed)", hl7Proposed, nil, KindOther},
		{"proposed then booked", s12, &hl7Proposed, KindBooked},
		{"booked then fulfilled", with("fulfilled"), &s12, KindFulfilled},
		{"fulfilled again", with("fulfilled"), ptr(with("fulfilled")), KindOther},
		{"booked then entered-in-error", with("entered-in-error"), &s12, KindEnteredInError},
		{"cancelled then noshow", s26, &s15, KindNoShow},
		{"booked then arrived", with("arrived"), &s12, KindOther},
		{"arrived then checked-in", with("checked-in"), ptr(with("arrived")), KindOther},
		{"pending first seen", with("pending"), nil, KindOther},
		{"waitlist first seen", with("waitlist"), nil, KindOther},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AppointmentEventKindOf(tc.cur, tc.prev); got != tc.want {
				t.Errorf("kind = %q, want %q", got, tc.want)
			}
		})
	}
}
