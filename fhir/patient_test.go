package fhir

import (
	"encoding/json"
	"testing"
)

func TestPatientContactFromFixtures(t *testing.T) {
	siu := bundleResources(t, mustRead(t, "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json"))
	tests := []struct {
		name    string
		ref     string
		related []json.RawMessage
		want    PatientContact
	}{
		// Ranked telecoms; the only email has rank 7.
		{"CARIN Patient2", "Patient/Patient2", []json.RawMessage{mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json")},
			PatientContact{PatientID: "Patient2", Email: "GXXX@XXXX.com", Language: "en", BirthDate: "1943-01-01"}},
		{"CARIN Patient2 by absolute URL", "https://payer.example/fhir/Patient/Patient2/_history/2", []json.RawMessage{mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json")},
			PatientContact{PatientID: "Patient2", Email: "GXXX@XXXX.com", Language: "en", BirthDate: "1943-01-01"}},
		// A telecom with use=home but no system and no value; no communication.
		{"HL7 patient-example", "Patient/example", []json.RawMessage{mustRead(t, "hl7-fhir-r4-spec/patient-example.json")},
			PatientContact{PatientID: "example", BirthDate: "1974-12-25"}},
		{"HL7 f001 by bare id", "f001", []json.RawMessage{mustRead(t, "hl7-fhir-r4-spec/patient-example.json"), mustRead(t, "hl7-fhir-r4-spec/patient-example-f001-pieter.json")},
			PatientContact{PatientID: "f001", Email: "p.heuvel@gmail.com", Language: "nl", BirthDate: "1944-11-17"}},
		// Its only system=email telecom holds "89898989", which is no
		// address: no email. Preferred language with codings ar then en.
		{"SIU patient among the whole batch", "Patient/9e909e52-61a1-be50-1878-a12ef8c36346", siu,
			PatientContact{PatientID: "9e909e52-61a1-be50-1878-a12ef8c36346", Email: "", Language: "ar", BirthDate: "1988-08-18"}},
		{"SIU patient by urn:uuid", "urn:uuid:9e909e52-61a1-be50-1878-a12ef8c36346", siu,
			PatientContact{PatientID: "9e909e52-61a1-be50-1878-a12ef8c36346", Email: "", Language: "ar", BirthDate: "1988-08-18"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PatientContactFrom(tc.ref, tc.related)
			if !ok || got != tc.want {
				t.Errorf("PatientContactFrom = %+v, %v; want %+v", got, ok, tc.want)
			}
		})
	}
}

func TestPatientContactFromMissing(t *testing.T) {
	related := []json.RawMessage{
		mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json"),
		mustRead(t, "carin-bb-2.0.0/Organization-Payer1.json"),
		[]byte(`{"broken`),
	}
	for _, ref := range []string{"Patient/other", "Organization/Payer1", "", "#p", "urn:uuid:00000000-0000-0000-0000-000000000000x"} {
		if got, ok := PatientContactFrom(ref, related); ok {
			t.Errorf("PatientContactFrom(%q) = %+v, want not found", ref, got)
		}
	}
	if _, ok := PatientContactFrom("Patient/Patient2", nil); ok {
		t.Errorf("found a patient in nothing")
	}
}

func TestPatientContactEmailChoice(t *testing.T) {
	p := mustJSON(t, map[string]any{
		"resourceType": "Patient", "id": "p1",
		"telecom": []any{
			map[string]any{"system": "phone", "value": "555", "use": "home", "rank": 1},
			map[string]any{"system": "email", "value": "work@example.org", "use": "work", "rank": 1},
			map[string]any{"system": "email", "value": "old@example.org", "use": "old", "rank": 1},
			map[string]any{"system": "email", "value": "home3@example.org", "use": "home", "rank": 3},
			map[string]any{"system": "email", "value": "home2@example.org", "use": "home", "rank": 2},
			map[string]any{"system": "email", "value": "", "use": "home", "rank": 1},
		},
		"communication": []any{
			map[string]any{"language": map[string]any{"coding": []any{map[string]any{"system": "urn:ietf:bcp:47", "code": "de"}}}},
			map[string]any{"language": map[string]any{"coding": []any{map[string]any{"code": "es"}}}, "preferred": true},
		},
	})
	got, ok := PatientContactFrom("Patient/p1", []json.RawMessage{p})
	if !ok || got.Email != "home2@example.org" || got.Language != "es" {
		t.Errorf("got %+v, %v; want home rank 2 and the preferred language", got, ok)
	}
	p = mustJSON(t, map[string]any{"resourceType": "Patient", "id": "p2",
		"telecom": []any{
			map[string]any{"system": "email", "value": "b@example.org", "rank": 2},
			map[string]any{"system": "email", "value": "a@example.org", "rank": 1},
		},
		"communication": []any{map[string]any{"language": map[string]any{"coding": []any{map[string]any{"system": "urn:ietf:bcp:47", "code": "fr-CA"}}}}},
	})
	got, ok = PatientContactFrom("Patient/p2", []json.RawMessage{p})
	if !ok || got.Email != "a@example.org" || got.Language != "fr-CA" {
		t.Errorf("got %+v, %v; want lowest rank and the first language", got, ok)
	}
}

// A birth date proves who someone is only when whole: a year or a month
// alone, or anything that is not a date, gives none.
func TestPatientBirthDateMustBeWhole(t *testing.T) {
	for in, want := range map[string]string{"1974-12-25": "1974-12-25", "1974": "", "1974-12": "", "1974-13-01": "", "": "", "25/12/1974": ""} {
		p := json.RawMessage(`{"resourceType":"Patient","id":"p1","birthDate":` + strconvQuote(in) + `}`)
		got, ok := PatientContactFrom("Patient/p1", []json.RawMessage{p})
		if !ok || got.BirthDate != want {
			t.Errorf("birthDate %q: got %q, %v; want %q", in, got.BirthDate, ok, want)
		}
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
