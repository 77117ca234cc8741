package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseNotificationFixtures(t *testing.T) {
	const sub = "https://fhirserver.org/fhir/Subscription/123"
	const topic = "http://fhirserver.org/topics/patient-admission"
	const encounter = "https://fhirserver.org/fhir/Encounter/86009987-eabe-42bf-8c02-b112b18cb616"
	tests := []struct {
		file         string
		wantErr      error
		typ          NotificationType
		status       string
		subscription string
		content      Content
		events       int
		eventNumber  int64
		focusRef     string
		sinceStart   int64
		errNames     string // a part the error message must contain
	}{
		{file: "handshake_bundle_example.json", typ: TypeHandshake, status: "requested", subscription: sub, content: ContentEmpty, events: 0, sinceStart: 0},
		{file: "heartbeat_bundle_example.json", typ: TypeHeartbeat, status: "active", subscription: sub, content: ContentEmpty, events: 0, sinceStart: 2},
		{file: "empty_notification_bundle_example.json", typ: TypeEventNotification, status: "active", subscription: sub, content: ContentEmpty, events: 1, eventNumber: 1, sinceStart: 1},
		// Declares the backport notification profile but its status entry
		// lacks request/response, which a history Bundle requires.
		{file: "empty_notification_bundle_non_conformant_example.json", wantErr: ErrMalformed, errNames: "entry[0] has no request"},
		{file: "id_only_notification_bundle_example.json", typ: TypeEventNotification, status: "active", subscription: sub, content: ContentIDOnly, events: 1, eventNumber: 1, focusRef: encounter, sinceStart: 1},
		{file: "full_resource_notification_bundle_example.json", typ: TypeEventNotification, status: "active", subscription: sub, content: ContentFullResource, events: 1, eventNumber: 1, focusRef: encounter, sinceStart: 1},
		{file: "subscription_status_example.json", wantErr: ErrNotNotification},
		{file: "subscription_resource_example.json", wantErr: ErrNotNotification},
		{file: "Subscription_id-only.json", wantErr: ErrNotNotification},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body := mustRead(t, "subscriptions-backport-ig/"+tc.file)
			n, err := ParseNotification(body)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || n != nil {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errNames) {
					t.Errorf("err = %q, want it to say %q", err, tc.errNames)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNotification: %v", err)
			}
			if n.Type != tc.typ || n.Status != tc.status || n.Subscription != tc.subscription || n.Topic != topic {
				t.Errorf("status = %q %q %q %q, want %q %q %q %q", n.Type, n.Status, n.Subscription, n.Topic, tc.typ, tc.status, tc.subscription, topic)
			}
			if n.Content != tc.content {
				t.Errorf("Content = %q, want %q", n.Content, tc.content)
			}
			if n.EventsSinceStart != tc.sinceStart {
				t.Errorf("EventsSinceStart = %d, want %d", n.EventsSinceStart, tc.sinceStart)
			}
			if len(n.Events) != tc.events {
				t.Fatalf("%d events, want %d", len(n.Events), tc.events)
			}
			if tc.events == 0 {
				return
			}
			ev := n.Events[0]
			if ev.EventNumber != tc.eventNumber || ev.FocusRef != tc.focusRef {
				t.Errorf("event = #%d %q, want #%d %q", ev.EventNumber, ev.FocusRef, tc.eventNumber, tc.focusRef)
			}
			if ev.Timestamp != "2020-05-29T11:44:13.1882432-05:00" {
				t.Errorf("Timestamp = %q", ev.Timestamp)
			}
			switch tc.content {
			case ContentEmpty:
				if ev.ResourceType != "" || ev.Focus != nil {
					t.Errorf("empty event has focus %q", ev.ResourceType)
				}
			case ContentIDOnly:
				if ev.ResourceType != "Encounter" || ev.ID != "86009987-eabe-42bf-8c02-b112b18cb616" || ev.Focus != nil {
					t.Errorf("id-only event = %s/%s focus=%v", ev.ResourceType, ev.ID, ev.Focus != nil)
				}
			case ContentFullResource:
				if ev.ResourceType != "Encounter" || ev.ID != "86009987-eabe-42bf-8c02-b112b18cb616" {
					t.Errorf("focus = %s/%s", ev.ResourceType, ev.ID)
				}
				// Exactly the bytes of the bundle, not a re-encoding.
				if len(ev.Focus) == 0 || !bytes.Contains(body, ev.Focus) || !bytes.HasPrefix(ev.Focus, []byte("{")) {
					t.Errorf("Focus is not the resource as sent")
				}
				// The Encounter's subject Patient is not in the Bundle.
				if len(ev.Related) != 0 {
					t.Errorf("Related = %d resources, want 0", len(ev.Related))
				}
			}
		})
	}
}

// notificationBundle builds a Backport history Bundle around a status
// parameter list and further entries.
func notificationBundle(params []any, entries ...any) []byte {
	status := map[string]any{
		"resourceType": "Parameters",
		"meta":         map[string]any{"profile": []string{backportStatusProfile}},
		"parameter":    params,
	}
	all := []any{map[string]any{"fullUrl": "urn:uuid:9e41ff6d-5be6-4e6a-8b85-abd4e7f58400", "resource": status}}
	all = append(all, entries...)
	b, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "history", "entry": all})
	if err != nil {
		panic(err)
	}
	return b
}

func baseParams(typ string) []any {
	return []any{
		map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": "https://ehr.example/fhir/Subscription/7"}},
		map[string]any{"name": "topic", "valueCanonical": "http://example.org/topic/eob"},
		map[string]any{"name": "status", "valueCode": "active"},
		map[string]any{"name": "type", "valueCode": typ},
	}
}

func eventParam(parts ...any) any {
	return map[string]any{"name": "notification-event", "part": parts}
}

func TestParseNotificationCounterShapes(t *testing.T) {
	tests := []struct {
		name  string
		since any // parameter value[x] object for events-since-subscription-start
		num   any // event-number part
		want  int64
	}{
		{"valueString", map[string]any{"valueString": "12"}, map[string]any{"valueString": "12"}, 12},
		{"valueInteger", map[string]any{"valueInteger": 12}, map[string]any{"valueInteger": 12}, 12},
		{"valueInteger64 as string", map[string]any{"valueInteger64": "12"}, map[string]any{"valueInteger64": "12"}, 12},
		{"valueUnsignedInt", map[string]any{"valueUnsignedInt": 12}, map[string]any{"valueUnsignedInt": 12}, 12},
		{"valueDecimal", map[string]any{"valueDecimal": json.Number("12.0")}, map[string]any{"valueDecimal": json.Number("12")}, 12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			since := tc.since.(map[string]any)
			since["name"] = "events-since-subscription-start"
			num := tc.num.(map[string]any)
			num["name"] = "event-number"
			// Parts out of the usual order, timestamp as valueDateTime.
			params := append(baseParams("event-notification"), since, eventParam(
				map[string]any{"name": "focus", "valueReference": map[string]any{"reference": "ExplanationOfBenefit/e1/_history/4"}},
				map[string]any{"name": "timestamp", "valueDateTime": "2024-03-01T10:00:00Z"},
				num,
			))
			n, err := ParseNotification(notificationBundle(params))
			if err != nil {
				t.Fatalf("ParseNotification: %v", err)
			}
			if n.EventsSinceStart != tc.want || len(n.Events) != 1 || n.Events[0].EventNumber != tc.want {
				t.Fatalf("since=%d events=%d", n.EventsSinceStart, len(n.Events))
			}
			ev := n.Events[0]
			if n.Content != ContentIDOnly || ev.ResourceType != "ExplanationOfBenefit" || ev.ID != "e1" || ev.VersionID != "4" || ev.Timestamp != "2024-03-01T10:00:00Z" {
				t.Errorf("event = %+v content=%s", ev, n.Content)
			}
		})
	}
}

func TestParseNotificationAbsentCounters(t *testing.T) {
	n, err := ParseNotification(notificationBundle(append(baseParams("event-notification"),
		eventParam(map[string]any{"name": "focus", "valueReference": map[string]any{"reference": "Appointment/a1"}}))))
	if err != nil {
		t.Fatalf("ParseNotification: %v", err)
	}
	if n.EventsSinceStart != -1 || n.Events[0].EventNumber != -1 {
		t.Errorf("absent counters = %d, %d; want -1, -1", n.EventsSinceStart, n.Events[0].EventNumber)
	}
}

// relatedFixture is a full-resource notification whose EOB references its
// patient by urn:uuid, its insurer by absolute URL and its provider by
// Type/id (through a PractitionerRole), next to resources it does not
// reference.
func relatedFixture() []byte {
	eob := map[string]any{
		"resourceType": "ExplanationOfBenefit", "id": "eob1", "meta": map[string]any{"versionId": "3"},
		"status": "active", "type": map[string]any{"text": "x"}, "use": "claim", "outcome": "complete",
		"created":   "2024-02-02",
		"patient":   map[string]any{"reference": "urn:uuid:11111111-2222-3333-4444-555555555555"},
		"insurer":   map[string]any{"reference": "https://payer.example/fhir/Organization/payer"},
		"provider":  map[string]any{"reference": "PractitionerRole/role1"},
		"insurance": []any{map[string]any{"focal": true, "coverage": map[string]any{"reference": "Coverage/cov1"}}},
		"claim":     map[string]any{"reference": "Claim/claim1"},
	}
	return notificationBundle(
		append(baseParams("event-notification"), eventParam(
			map[string]any{"name": "event-number", "valueString": "5"},
			map[string]any{"name": "focus", "valueReference": map[string]any{"reference": "https://payer.example/fhir/ExplanationOfBenefit/eob1"}},
		)),
		map[string]any{"fullUrl": "https://payer.example/fhir/ExplanationOfBenefit/eob1", "resource": eob},
		map[string]any{"fullUrl": "urn:uuid:11111111-2222-3333-4444-555555555555", "resource": map[string]any{"resourceType": "Patient", "id": "p-77", "name": []any{map[string]any{"family": canary}}}},
		map[string]any{"fullUrl": "https://payer.example/fhir/Organization/payer", "resource": map[string]any{"resourceType": "Organization", "id": "payer", "name": "Acme Health"}},
		map[string]any{"resource": map[string]any{"resourceType": "PractitionerRole", "id": "role1", "practitioner": map[string]any{"reference": "Practitioner/dr1"}}},
		map[string]any{"resource": map[string]any{"resourceType": "Practitioner", "id": "dr1", "name": []any{map[string]any{"given": []string{"Ann"}, "family": "Lee"}}}},
		map[string]any{"resource": map[string]any{"resourceType": "Coverage", "id": "cov1", "payor": []any{map[string]any{"reference": "Organization/payer"}}}},
		map[string]any{"resource": map[string]any{"resourceType": "Claim", "id": "claim1", "patient": map[string]any{"reference": "urn:uuid:11111111-2222-3333-4444-555555555555"}}},
		map[string]any{"resource": map[string]any{"resourceType": "Observation", "id": "obs1", "subject": map[string]any{"reference": "urn:uuid:11111111-2222-3333-4444-555555555555"}}},
		map[string]any{"resource": map[string]any{"resourceType": "Organization", "id": "unrelated", "name": "Elsewhere"}},
	)
}

func TestParseNotificationRelated(t *testing.T) {
	n, err := ParseNotification(relatedFixture())
	if err != nil {
		t.Fatalf("ParseNotification: %v", err)
	}
	if n.Content != ContentFullResource || len(n.Events) != 1 {
		t.Fatalf("content=%s events=%d", n.Content, len(n.Events))
	}
	ev := n.Events[0]
	if !ev.Guarded {
		t.Error("a focus from a checked body is not marked Guarded")
	}
	if ev.ResourceType != "ExplanationOfBenefit" || ev.ID != "eob1" || ev.VersionID != "3" || ev.EventNumber != 5 {
		t.Errorf("event = %s/%s v%s #%d", ev.ResourceType, ev.ID, ev.VersionID, ev.EventNumber)
	}
	var got []string
	for _, r := range ev.Related {
		got = append(got, headOf(t, r))
	}
	// Document order of the (key-sorted) EOB, then the second hop.
	want := []string{"Coverage/cov1", "Organization/payer", "Patient/p-77", "PractitionerRole/role1", "Practitioner/dr1"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Related = %v, want %v (no Claim, Observation or unreferenced Organization)", got, want)
	}
	// The patient's urn:uuid is not its id: only the fullUrls resolve it.
	if facts, err := EOBFactsFrom(ev.Focus, ev.Related); err != nil || facts.PatientID != "" {
		t.Errorf("EOBFactsFrom without fullUrls guessed PatientID %q (%v)", facts.PatientID, err)
	}
	if _, ok := PatientContactFrom("urn:uuid:11111111-2222-3333-4444-555555555555", ev.Related); ok {
		t.Errorf("PatientContactFrom without fullUrls found a patient")
	}
	if pc, ok := ev.PatientContact("urn:uuid:11111111-2222-3333-4444-555555555555"); !ok || pc.PatientID != "p-77" {
		t.Errorf("Event.PatientContact = %+v, %v", pc, ok)
	}
	facts, err := ev.EOBFacts()
	if err != nil {
		t.Fatalf("Event.EOBFacts: %v", err)
	}
	if facts.PatientID != "p-77" || facts.PayerName != "Acme Health" || facts.ProviderName != "Ann Lee" || facts.VersionID != "3" {
		t.Errorf("facts: patient=%q payer=%q provider=%q version=%q", facts.PatientID, facts.PayerName, facts.ProviderName, facts.VersionID)
	}
}

func TestParseNotificationSubscriptionStatusResource(t *testing.T) {
	for _, bundleType := range []string{"history", "subscription-notification"} {
		t.Run(bundleType, func(t *testing.T) {
			body := mustJSON(t, map[string]any{
				"resourceType": "Bundle", "type": bundleType,
				"entry": []any{
					map[string]any{"fullUrl": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001", "resource": map[string]any{
						"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
						"eventsSinceSubscriptionStart": "9",
						"notificationEvent": []any{map[string]any{
							"eventNumber": "9", "timestamp": "2024-01-01T00:00:00Z",
							"focus":             map[string]any{"reference": "Appointment/ap1"},
							"additionalContext": []any{map[string]any{"reference": "Patient/pt1"}},
						}},
						"subscription": map[string]any{"reference": "https://ehr.example/Subscription/s1"},
						"topic":        "http://example.org/topic/appt",
					}},
					map[string]any{"fullUrl": "https://ehr.example/Appointment/ap1", "resource": map[string]any{"resourceType": "Appointment", "id": "ap1", "status": "booked"}},
					map[string]any{"fullUrl": "https://ehr.example/Patient/pt1", "resource": map[string]any{"resourceType": "Patient", "id": "pt1"}},
				},
			})
			n, err := ParseNotification(body)
			if err != nil {
				t.Fatalf("ParseNotification: %v", err)
			}
			if n.Type != TypeEventNotification || n.Subscription != "https://ehr.example/Subscription/s1" || n.Topic != "http://example.org/topic/appt" || n.EventsSinceStart != 9 {
				t.Errorf("notification = %+v", n)
			}
			if len(n.Events) != 1 || n.Events[0].EventNumber != 9 || n.Events[0].ID != "ap1" || n.Content != ContentFullResource {
				t.Fatalf("events = %+v", n.Events)
			}
			if len(n.Events[0].Related) != 1 || headOf(t, n.Events[0].Related[0]) != "Patient/pt1" {
				t.Errorf("additional-context patient not in Related")
			}
		})
	}
}

func TestParseNotificationErrors(t *testing.T) {
	full := string(mustRead(t, "subscriptions-backport-ig/full_resource_notification_bundle_example.json"))
	withParam := func(extra ...any) []byte {
		return notificationBundle(append(baseParams("event-notification"), extra...))
	}
	deep := strings.Repeat(`{"a":`, MaxDepth+1) + `"` + canary + `"` + strings.Repeat("}", MaxDepth+1)
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"not JSON", []byte(`{"resourceType": "Bundle", ` + canary), ErrMalformed},
		{"empty", []byte("  "), ErrMalformed},
		{"truncated fixture", []byte(full[:len(full)/2]), ErrMalformed},
		{"two documents", []byte(`{"resourceType":"Bundle"} {"x":"` + canary + `"}`), ErrMalformed},
		{"duplicate key", []byte(`{"resourceType":"Bundle","type":"history","type":"` + canary + `"}`), ErrMalformed},
		{"too deep", []byte(deep), ErrMalformed},
		{"key repeated in another case", []byte(`{"resourceType":"Bundle","type":"history","TYPE":"` + canary + `"}`), ErrMalformed},
		{"too large", append([]byte(`{"resourceType":"Bundle","x":"`), append(bytes.Repeat([]byte("a"), MaxBodyBytes), '"', '}')...), ErrMalformed},
		{"array", []byte(`["` + canary + `"]`), ErrNotNotification},
		{"Patient", mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json"), ErrNotNotification},
		{"EOB", mustRead(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), ErrNotNotification},
		{"searchset", mustRead(t, "subscriptions-backport-ig/subscription_status_example.json"), ErrNotNotification},
		{"batch", mustRead(t, "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json"), ErrNotNotification},
		{"history without status", mustJSON(t, map[string]any{"resourceType": "Bundle", "type": "history", "entry": []any{
			map[string]any{"resource": map[string]any{"resourceType": "Patient", "id": canary}}}}), ErrNotNotification},
		{"history with unrelated Parameters", mustJSON(t, map[string]any{"resourceType": "Bundle", "type": "history", "entry": []any{
			map[string]any{"resource": map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "x", "valueString": canary}}}}}}), ErrNotNotification},
		{"history without entries", []byte(`{"resourceType":"Bundle","type":"history"}`), ErrNotNotification},
		{"resourceType not a string", []byte(`{"resourceType":12345` + `}`), ErrMalformed},
		{"entry not an array", []byte(`{"resourceType":"Bundle","type":"history","entry":{"a":"` + canary + `"}}`), ErrMalformed},
		{"duplicate type parameter", withParam(map[string]any{"name": "type", "valueCode": canary}), ErrMalformed},
		{"unknown type code", notificationBundle(baseParams(canary)), ErrMalformed},
		{"unknown status code", notificationBundle([]any{
			map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": "Subscription/1"}},
			map[string]any{"name": "status", "valueCode": canary},
			map[string]any{"name": "type", "valueCode": "heartbeat"}}), ErrMalformed},
		{"no subscription", notificationBundle([]any{
			map[string]any{"name": "status", "valueCode": "active"},
			map[string]any{"name": "type", "valueCode": "heartbeat"},
			map[string]any{"name": "events-since-subscription-start", "valueString": "1"}}), ErrMalformed},
		{"no type", notificationBundle([]any{
			map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": canary}},
			map[string]any{"name": "status", "valueCode": "active"}}), ErrMalformed},
		{"events-since not an integer", withParam(map[string]any{"name": "events-since-subscription-start", "valueString": canary}), ErrMalformed},
		{"events-since negative", withParam(map[string]any{"name": "events-since-subscription-start", "valueInteger": -4}), ErrMalformed},
		{"events-since huge", withParam(map[string]any{"name": "events-since-subscription-start", "valueInteger": json.Number("98765432109876543210987")}), ErrMalformed},
		{"two value[x]", withParam(map[string]any{"name": "events-since-subscription-start", "valueString": "1", "valueInteger": 1}), ErrMalformed},
		{"unexpected property", withParam(map[string]any{"name": "error", canary: 1}), ErrMalformed},
		{"parameter not an object", withParam(canary), ErrMalformed},
		{"parameter without name", withParam(map[string]any{"valueString": canary}), ErrMalformed},
		{"focus not a reference", withParam(eventParam(map[string]any{"name": "focus", "valueString": canary})), ErrMalformed},
		{"duplicate focus part", withParam(eventParam(
			map[string]any{"name": "focus", "valueReference": map[string]any{"reference": "Appointment/a"}},
			map[string]any{"name": "focus", "valueReference": map[string]any{"reference": canary}})), ErrMalformed},
		{"duplicate event-number", withParam(
			eventParam(map[string]any{"name": "event-number", "valueString": "3"}),
			eventParam(map[string]any{"name": "event-number", "valueString": "3"})), ErrMalformed},
		{"notification-event with a value", withParam(map[string]any{"name": "notification-event", "valueString": canary}), ErrMalformed},
		{"duplicate fullUrl", notificationBundle(baseParams("event-notification"),
			map[string]any{"fullUrl": "urn:uuid:1", "resource": map[string]any{"resourceType": "Patient", "id": "a"}},
			map[string]any{"fullUrl": "urn:uuid:1", "resource": map[string]any{"resourceType": "Patient", "id": canary}}), ErrMalformed},
		{"entry resource not an object", notificationBundle(baseParams("event-notification"), map[string]any{"resource": canary}), ErrMalformed},
		{"SubscriptionStatus bad eventNumber", mustJSON(t, map[string]any{"resourceType": "Bundle", "type": "history", "entry": []any{
			map[string]any{"resource": map[string]any{"resourceType": "SubscriptionStatus", "type": "event-notification",
				"subscription":      map[string]any{"reference": "Subscription/1"},
				"notificationEvent": []any{map[string]any{"eventNumber": canary}}}}}}), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNotification(tc.body)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if n != nil {
				t.Errorf("notification returned with an error")
			}
			assertNoCanary(t, err)
			if strings.Contains(err.Error(), "98765432109876543210987") {
				t.Errorf("error string leaks a number: %q", err)
			}
		})
	}
}

func TestParseNotificationErrorNamesPosition(t *testing.T) {
	body := notificationBundle(append(baseParams("event-notification"),
		map[string]any{"name": "events-since-subscription-start", "valueString": canary}))
	_, err := ParseNotification(body)
	want := "entry[0].resource.parameter[4].valueString"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to name %s", err, want)
	}
}

func TestParseNotificationManyEventsBounded(t *testing.T) {
	var params []any
	params = append(params, baseParams("event-notification")...)
	for i := 0; i <= MaxEvents; i++ {
		params = append(params, eventParam(map[string]any{"name": "event-number", "valueString": fmt.Sprint(i)}))
	}
	if _, err := ParseNotification(notificationBundle(params)); !errors.Is(err, ErrMalformed) {
		t.Errorf("err = %v, want ErrMalformed for more than MaxEvents events", err)
	}
}

// TestParseNotificationHostileReferencesBounded feeds thousands of entries
// sharing one id and a focus with thousands of distinct references to them.
// With linear work per reference this finishes at once; a quadratic walk
// would not finish within the test timeout.
func TestParseNotificationHostileReferencesBounded(t *testing.T) {
	const copies = 3000
	var refs []any
	for i := 0; i < 20000; i++ {
		refs = append(refs, map[string]any{"reference": fmt.Sprintf("Patient/same/_history/%d", i)})
	}
	entries := []any{map[string]any{"fullUrl": "urn:uuid:f", "resource": map[string]any{
		"resourceType": "ExplanationOfBenefit", "id": "f", "related": refs,
		"patient": map[string]any{"reference": "Patient/same"},
	}}}
	for i := 0; i < copies; i++ {
		entries = append(entries, map[string]any{"resource": map[string]any{"resourceType": "Patient", "id": "same",
			"generalPractitioner": []any{map[string]any{"reference": "Organization?identifier=x|" + fmt.Sprint(i)}}}})
	}
	var events []any
	for i := 0; i < 200; i++ {
		events = append(events, eventParam(
			map[string]any{"name": "event-number", "valueString": fmt.Sprint(i)},
			map[string]any{"name": "focus", "valueReference": map[string]any{"reference": "urn:uuid:f"}}))
	}
	n, err := ParseNotification(notificationBundle(append(baseParams("event-notification"), events...), entries...))
	if err != nil {
		t.Fatalf("ParseNotification: %v", err)
	}
	if len(n.Events) != 200 || len(n.Events[0].Related) != 1 || headOf(t, n.Events[0].Related[0]) != "Patient/same" {
		t.Fatalf("events=%d related=%d", len(n.Events), len(n.Events[0].Related))
	}
}

func BenchmarkParseNotificationSynthea(b *testing.B) {
	wrapped, err := WrapResources(mustRead(b, "synthea/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"), testSubscription, testTopic, testNow)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wrapped)))
	for b.Loop() {
		if _, err := ParseNotification(wrapped); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrapResourcesSynthea(b *testing.B) {
	raw := mustRead(b, "synthea/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json")
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := WrapResources(raw, testSubscription, testTopic, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseNotificationHistoryEntries checks the request/response rule for
// history Bundles: enforced when the Bundle declares the Backport
// notification profile, not otherwise (HAPI FHIR's R4 notifications
// declare no profile, send the status entry bare and focus entries with a
// request but no response), never for R5 subscription-notification Bundles.
func TestParseNotificationHistoryEntries(t *testing.T) {
	status := map[string]any{"resourceType": "Parameters", "parameter": append(baseParams("event-notification"), eventParam(
		map[string]any{"name": "event-number", "valueString": "1"},
		map[string]any{"name": "focus", "valueReference": map[string]any{"reference": "Appointment/a1"}},
	))}
	statusRequest := map[string]any{"method": "GET", "url": "https://ehr.example/fhir/Subscription/7/$status"}
	focus := map[string]any{"resourceType": "Appointment", "id": "a1", "status": "booked"}
	focusRequest := map[string]any{"method": "PUT", "url": "Appointment/a1"}
	bundle := func(typ string, profile bool, entries ...map[string]any) []byte {
		b := map[string]any{"resourceType": "Bundle", "type": typ, "entry": entries}
		if profile {
			b["meta"] = map[string]any{"profile": []string{backportNotificationProfile}}
		}
		return mustJSON(t, b)
	}
	tests := []struct {
		name    string
		body    []byte
		wantErr string // "" when the Bundle must parse
	}{
		{"HAPI shape: no profile, bare status, focus without response", bundle("history", false,
			map[string]any{"fullUrl": "urn:uuid:5b1e0c7e-0000-4000-8000-000000000001", "resource": status},
			map[string]any{"fullUrl": "https://ehr.example/fhir/Appointment/a1", "resource": focus, "request": focusRequest}), ""},
		{"R5 subscription-notification with the profile and no request/response", bundle("subscription-notification", true,
			map[string]any{"resource": status},
			map[string]any{"fullUrl": "https://ehr.example/fhir/Appointment/a1", "resource": focus}), ""},
		{"profile, every entry complete", bundle("history", true,
			map[string]any{"resource": status, "request": statusRequest, "response": map[string]any{"status": "200"}},
			map[string]any{"resource": focus, "request": focusRequest, "response": map[string]any{"status": "200"}}), ""},
		{"profile, status entry bare", bundle("history", true,
			map[string]any{"resource": status},
			map[string]any{"resource": focus, "request": focusRequest, "response": map[string]any{"status": "200"}}), "entry[0] has no request"},
		{"profile, focus entry without response", bundle("history", true,
			map[string]any{"resource": status, "request": statusRequest, "response": map[string]any{"status": "200"}},
			map[string]any{"resource": focus, "request": focusRequest}), "entry[1] has no response"},
		{"profile, request without url", bundle("history", true,
			map[string]any{"resource": status, "request": map[string]any{"method": "GET"}, "response": map[string]any{"status": "200"}},
			map[string]any{"resource": focus, "request": focusRequest, "response": map[string]any{"status": "200"}}), "entry[0].request lacks a method or url"},
		{"profile, request not an object", bundle("history", true,
			map[string]any{"resource": status, "request": canary, "response": map[string]any{"status": "200"}},
			map[string]any{"resource": focus, "request": focusRequest, "response": map[string]any{"status": "200"}}), "entry[0].request lacks a method or url"},
		{"profile, response without status", bundle("history", true,
			map[string]any{"resource": status, "request": statusRequest, "response": map[string]any{"status": "200"}},
			map[string]any{"resource": focus, "request": focusRequest, "response": map[string]any{"etag": canary}}), "entry[1].response lacks a status"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNotification(tc.body)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseNotification: %v", err)
				}
				if n.Content != ContentFullResource || len(n.Events) != 1 || n.Events[0].ID != "a1" {
					t.Errorf("content=%s events=%+v", n.Content, n.Events)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || n != nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrMalformed saying %q", err, tc.wantErr)
			}
			assertNoCanary(t, err)
		})
	}
}
