package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	testSubscription = "https://tidings.example/fhir/Subscription/payer-eob"
	testTopic        = "http://tidings.example/topic/eob"
)

var testNow = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

var eobFixtures = []string{
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json",
	"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBInpatientNonFinancial1.json",
	"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBProfessionalNonFinancial1.json",
	"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBPharmacyNonFinancial1.json",
	"davinci-pdex/ExplanationOfBenefit-PDexPriorAuth1.json",
	"hl7-fhir-r4-spec/explanationofbenefit-example.json",
}

// wrapAndParse wraps body and parses the result back.
func wrapAndParse(t *testing.T, body []byte) ([]byte, *Notification) {
	t.Helper()
	out, err := WrapResources(body, testSubscription, testTopic, testNow)
	if err != nil {
		t.Fatalf("WrapResources: %v", err)
	}
	n, err := ParseNotification(out)
	if err != nil {
		t.Fatalf("ParseNotification(wrapped): %v", err)
	}
	if n.Type != TypeEventNotification || n.Status != "active" || n.Subscription != testSubscription || n.Topic != testTopic || n.Content != ContentFullResource {
		t.Errorf("wrapped status = %s %s %s %s %s", n.Type, n.Status, n.Subscription, n.Topic, n.Content)
	}
	if n.EventsSinceStart != int64(len(n.Events)) {
		t.Errorf("EventsSinceStart = %d with %d events", n.EventsSinceStart, len(n.Events))
	}
	for i, ev := range n.Events {
		if ev.EventNumber != int64(i+1) || ev.Timestamp != "2024-05-06T07:08:09.000Z" || ev.Focus == nil {
			t.Errorf("event %d = #%d %q focus=%v", i, ev.EventNumber, ev.Timestamp, ev.Focus != nil)
		}
	}
	return out, n
}

// entryTypes lists the resourceType of every entry of a Bundle.
func entryTypes(t *testing.T, bundle []byte) []string {
	t.Helper()
	var types []string
	for _, r := range bundleResources(t, bundle) {
		types = append(types, strings.SplitN(headOf(t, r), "/", 2)[0])
	}
	return types
}

func TestWrapResourcesEOBFixtures(t *testing.T) {
	for _, f := range eobFixtures {
		t.Run(f, func(t *testing.T) {
			raw := mustRead(t, f)
			out, n := wrapAndParse(t, raw)
			if len(n.Events) != 1 {
				t.Fatalf("%d events, want 1", len(n.Events))
			}
			ev := n.Events[0]
			if !jsonEqual(t, ev.Focus, raw) {
				t.Errorf("focus differs from the fixture")
			}
			if want := "ExplanationOfBenefit/" + ev.ID; ev.FocusRef != want || ev.ResourceType != "ExplanationOfBenefit" {
				t.Errorf("FocusRef = %q, want %q", ev.FocusRef, want)
			}
			if got := entryTypes(t, out); !reflect.DeepEqual(got, []string{"Parameters", "ExplanationOfBenefit"}) {
				t.Errorf("entries = %v", got)
			}
			want, err := EOBFactsFrom(raw, nil)
			if err != nil {
				t.Fatalf("EOBFactsFrom(raw): %v", err)
			}
			got, err := EOBFactsFrom(ev.Focus, ev.Related)
			if err != nil {
				t.Fatalf("EOBFactsFrom(round trip): %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round-trip facts differ")
			}
		})
	}
}

func TestWrapResourcesSynthea(t *testing.T) {
	raw := mustRead(t, "synthea/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json")
	out, n := wrapAndParse(t, raw)
	if len(n.Events) != 3 {
		t.Fatalf("%d events, want 3", len(n.Events))
	}
	for _, typ := range entryTypes(t, out) {
		switch typ {
		case "Parameters", "ExplanationOfBenefit", "Patient", "Practitioner":
		default:
			t.Errorf("wrapped bundle carries a %s", typ)
		}
	}
	if bytes.Contains(out, []byte(`"Observation"`)) || bytes.Contains(out, []byte(`"Claim"`)) {
		t.Errorf("wrapped bundle mentions an Observation or Claim")
	}
	all := bundleResources(t, raw)
	const patientID = "d78af07c-9cb9-4f31-9b11-c45a28f2eec8"
	for _, ev := range n.Events {
		if !strings.HasPrefix(ev.FocusRef, "urn:uuid:") || ev.ResourceType != "ExplanationOfBenefit" {
			t.Errorf("focus = %q %s", ev.FocusRef, ev.ResourceType)
		}
		var heads []string
		for _, r := range ev.Related {
			heads = append(heads, headOf(t, r))
		}
		if !contains(heads, "Patient/"+patientID) || !contains(heads, "Practitioner/0e99785d-8f2a-45c7-848c-d6b31d1aa50e") || len(heads) != 2 {
			t.Errorf("Related = %v, want the Patient and the Practitioner", heads)
		}
		got, err := EOBFactsFrom(ev.Focus, ev.Related)
		if err != nil {
			t.Fatalf("EOBFactsFrom: %v", err)
		}
		var rawEOB json.RawMessage
		for _, r := range all {
			if headOf(t, r) == "ExplanationOfBenefit/"+ev.ID {
				rawEOB = r
			}
		}
		want, err := EOBFactsFrom(rawEOB, all)
		if err != nil {
			t.Fatalf("EOBFactsFrom(all): %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("facts from Related differ from facts over the whole source bundle")
		}
		if viaEvent, err := ev.EOBFacts(); err != nil || !reflect.DeepEqual(viaEvent, want) {
			t.Errorf("Event.EOBFacts differs: %v", err)
		}
		if codes := SensitiveCodes(ev.Focus); !contains(codes, "185349003") {
			t.Errorf("SensitiveCodes(Synthea EOB) = %v, lacks the SNOMED service code", codes)
		}
		if got.PatientID != patientID || got.PatientRef != "urn:uuid:"+patientID || got.ProviderName != "June Kassulke" || got.PayerName != "private" || got.PatientShare != nil {
			t.Errorf("facts: patient=%q provider=%q payer=%q share=%v", got.PatientID, got.ProviderName, got.PayerName, got.PatientShare)
		}
		pc, ok := PatientContactFrom(got.PatientRef, ev.Related)
		if !ok || pc.PatientID != patientID || pc.Language != "zh" || pc.Email != "" {
			t.Errorf("PatientContactFrom = %+v, %v", pc, ok)
		}
	}
	ids := []string{n.Events[0].ID, n.Events[1].ID, n.Events[2].ID}
	if ids[0] != "5ca5a87f-be11-41dd-9c36-2de39282f8ff" || ids[2] != "e9729d25-e5f3-40d4-b3a5-87b795189ece" {
		t.Errorf("events out of bundle order: %v", ids)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestWrapResourcesSIU(t *testing.T) {
	wantStatus := map[string]string{
		"fhir-converter-hl7v2-siu/SIU-S12-01-expected.json": "booked",
		"fhir-converter-hl7v2-siu/SIU-S15-01-expected.json": "cancelled",
		"fhir-converter-hl7v2-siu/SIU-S26-01-expected.json": "noshow",
	}
	for f, status := range wantStatus {
		t.Run(f, func(t *testing.T) {
			out, n := wrapAndParse(t, mustRead(t, f))
			if len(n.Events) != 1 {
				t.Fatalf("%d events", len(n.Events))
			}
			ev := n.Events[0]
			var appt struct {
				Status      string `json:"status"`
				Participant []struct {
					Actor struct {
						Reference string `json:"reference"`
					} `json:"actor"`
				} `json:"participant"`
			}
			if err := json.Unmarshal(ev.Focus, &appt); err != nil {
				t.Fatal(err)
			}
			if ev.ResourceType != "Appointment" || ev.ID != "b7121f46-cf50-5cec-7cfb-5de8e42b82d2" || appt.Status != status {
				t.Errorf("focus = %s/%s status %q", ev.ResourceType, ev.ID, appt.Status)
			}
			for _, typ := range entryTypes(t, out) {
				switch typ {
				case "Parameters", "Appointment", "Patient", "Practitioner", "PractitionerRole", "Location", "Organization":
				default:
					t.Errorf("wrapped bundle carries a %s", typ)
				}
			}
			patientRef := appt.Participant[0].Actor.Reference
			pc, ok := PatientContactFrom(patientRef, ev.Related)
			if !ok || pc.PatientID != "9e909e52-61a1-be50-1878-a12ef8c36346" || pc.Email != "" /* its "email" 89898989 is no address */ || pc.Language != "ar" {
				t.Errorf("PatientContactFrom(%q) = %+v, %v", patientRef, pc, ok)
			}
		})
	}
}

func TestWrapResourcesBareAppointment(t *testing.T) {
	raw := mustRead(t, "hl7-fhir-r4-spec/appointment-example.json")
	_, n := wrapAndParse(t, raw)
	if len(n.Events) != 1 || n.Events[0].FocusRef != "Appointment/example" || !jsonEqual(t, n.Events[0].Focus, raw) {
		t.Errorf("events = %+v", n.Events)
	}
}

// TestWrapResourcesCarinCollection wraps EOBInpatient1 with the resources
// it references (and one it does not) in a collection Bundle.
func TestWrapResourcesCarinCollection(t *testing.T) {
	eob := mustRead(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	patient := mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json")
	payer := mustRead(t, "carin-bb-2.0.0/Organization-Payer1.json")
	coverage := mustRead(t, "carin-bb-2.0.0/Coverage-Coverage1.json")
	unrelated := mustRead(t, "carin-bb-2.0.0/Practitioner-Practitioner1.json")
	bundle := mustJSON(t, map[string]any{
		"resourceType": "Bundle", "type": "collection",
		"entry": []any{
			map[string]any{"fullUrl": "https://payer.example/fhir/ExplanationOfBenefit/EOBInpatient1", "resource": json.RawMessage(eob)},
			map[string]any{"fullUrl": "https://payer.example/fhir/Patient/Patient2", "resource": json.RawMessage(patient)},
			map[string]any{"fullUrl": "https://payer.example/fhir/Organization/Payer1", "resource": json.RawMessage(payer)},
			map[string]any{"fullUrl": "https://payer.example/fhir/Coverage/Coverage1", "resource": json.RawMessage(coverage)},
			map[string]any{"fullUrl": "https://payer.example/fhir/Practitioner/Practitioner1", "resource": json.RawMessage(unrelated)},
		},
	})
	out, n := wrapAndParse(t, bundle)
	if len(n.Events) != 1 {
		t.Fatalf("%d events", len(n.Events))
	}
	ev := n.Events[0]
	if ev.FocusRef != "https://payer.example/fhir/ExplanationOfBenefit/EOBInpatient1" {
		t.Errorf("FocusRef = %q", ev.FocusRef)
	}
	var heads []string
	for _, r := range ev.Related {
		heads = append(heads, headOf(t, r))
	}
	for _, want := range []string{"Patient/Patient2", "Organization/Payer1", "Coverage/Coverage1"} {
		if !contains(heads, want) {
			t.Errorf("Related %v lacks %s", heads, want)
		}
	}
	if contains(heads, "Practitioner/Practitioner1") || bytes.Contains(out, []byte(`"Practitioner1"`)) {
		t.Errorf("unreferenced Practitioner1 was carried along")
	}
	pc, ok := PatientContactFrom("Patient/Patient2", ev.Related)
	if !ok || pc.PatientID != "Patient2" || pc.Email != "GXXX@XXXX.com" || pc.Language != "en" {
		t.Errorf("PatientContactFrom = %+v, %v", pc, ok)
	}
	got, err := EOBFactsFrom(ev.Focus, ev.Related)
	if err != nil {
		t.Fatal(err)
	}
	want, err := EOBFactsFrom(eob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("facts differ: %+v vs %+v", got, want)
	}
}

func TestWrapResourcesDeterministic(t *testing.T) {
	raw := mustRead(t, "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json")
	a, err := WrapResources(raw, testSubscription, testTopic, testNow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := WrapResources(raw, testSubscription, testTopic, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("same input wrapped twice differs")
	}
	c, err := WrapResources(raw, testSubscription, testTopic, testNow.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, c) {
		t.Errorf("a later wrap has the same bundle")
	}
}

func TestWrapResourcesErrors(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		sub  string
		want error
	}{
		{"Patient", mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json"), testSubscription, ErrNoFocus},
		{"Subscription", mustRead(t, "subscriptions-backport-ig/subscription_resource_example.json"), testSubscription, ErrNoFocus},
		{"collection without focus", mustJSON(t, map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
			map[string]any{"resource": map[string]any{"resourceType": "Patient", "id": canary}}}}), testSubscription, ErrNoFocus},
		{"searchset without focus", mustRead(t, "subscriptions-backport-ig/subscription_status_example.json"), testSubscription, ErrNoFocus},
		{"notification bundle", mustRead(t, "subscriptions-backport-ig/full_resource_notification_bundle_example.json"), testSubscription, ErrAlreadyNotification},
		{"broken notification bundle", notificationBundle(baseParams(canary)), testSubscription, ErrMalformed},
		{"not JSON", []byte(`{"resourceType":"ExplanationOfBenefit","id":"` + canary), testSubscription, ErrMalformed},
		{"array", []byte(`[{"resourceType":"ExplanationOfBenefit"}]`), testSubscription, ErrMalformed},
		{"no resourceType", []byte(`{"id":"` + canary + `"}`), testSubscription, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := WrapResources(tc.body, tc.sub, testTopic, testNow)
			if !errors.Is(err, tc.want) || out != nil {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			assertNoCanary(t, err)
		})
	}
	if _, err := WrapResources(mustRead(t, eobFixtures[0]), "", testTopic, testNow); err == nil {
		t.Errorf("empty subscription URL accepted")
	}
}

func TestWrapResourcesWithoutIDsOrFullURLs(t *testing.T) {
	// An EOB without an id and a Patient reached by a relative reference.
	bundle := mustJSON(t, map[string]any{
		"resourceType": "Bundle", "type": "collection",
		"entry": []any{
			map[string]any{"resource": map[string]any{"resourceType": "ExplanationOfBenefit", "status": "active",
				"type": map[string]any{"text": "x"}, "use": "claim", "outcome": "complete", "created": "2024-01-01",
				"patient": map[string]any{"reference": "Patient/p1"}}},
			map[string]any{"resource": map[string]any{"resourceType": "Patient", "id": "p1"}},
		},
	})
	_, n := wrapAndParse(t, bundle)
	ev := n.Events[0]
	if !strings.HasPrefix(ev.FocusRef, "urn:uuid:") || len(ev.Related) != 1 || headOf(t, ev.Related[0]) != "Patient/p1" {
		t.Errorf("event = %q related=%d", ev.FocusRef, len(ev.Related))
	}
	// No topic: the parameter is left out.
	out, err := WrapResources(mustRead(t, eobFixtures[0]), testSubscription, "", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := ParseNotification(out); err != nil || back.Topic != "" {
		t.Errorf("no-topic wrap: %v topic=%q", err, back.Topic)
	}
}
