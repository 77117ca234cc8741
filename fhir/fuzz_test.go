package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// maxSeedBytes keeps the big fixtures (Synthea, the SIU batches) out of the
// fuzz corpus: the engine mutates large inputs slowly. The unit tests cover
// them in full.
const maxSeedBytes = 24 << 10

// seedFixtures adds every small fixture, and the wrapped form of the
// wrappable ones, to a fuzz corpus.
func seedFixtures(f *testing.F) {
	for _, name := range fixtureFiles(f) {
		body := mustRead(f, name)
		if len(body) > maxSeedBytes {
			continue
		}
		f.Add(body)
		if out, err := WrapResources(body, testSubscription, testTopic, testNow); err == nil {
			f.Add(out)
		}
	}
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[{"fullUrl":"urn:uuid:a1","resource":{"resourceType":"Appointment","id":"a1","status":"booked","participant":[{"actor":{"reference":"Patient/p1"}},{"actor":{"reference":"PractitionerRole/r1"}}]}},{"fullUrl":"urn:uuid:p1","resource":{"resourceType":"Patient","id":"p1","telecom":[{"system":"email","value":"x@example.org"}]}},{"resource":{"resourceType":"PractitionerRole","id":"r1","practitioner":{"reference":"Practitioner/d1"}}},{"resource":{"resourceType":"Practitioner","id":"d1"}},{"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"SubscriptionStatus","type":"heartbeat","subscription":{"reference":"Subscription/1"}}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"Parameters","parameter":[{"name":"subscription","valueReference":{"reference":"a"}},{"name":"status","valueCode":"active"},{"name":"type","valueCode":"event-notification"},{"name":"notification-event","part":[{"name":"focus","valueReference":{"reference":"Patient/1/_history/2"}},{"name":"event-number","valueDecimal":1.0}]}]}},{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","id":"1"}}]}`))
}

func FuzzParseNotification(f *testing.F) {
	seedFixtures(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseNotification(body)
		if err != nil {
			if n != nil {
				t.Fatalf("notification with error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotNotification) {
				t.Fatalf("error is neither ErrMalformed nor ErrNotNotification: %v", err)
			}
			return
		}
		if !validTypes[n.Type] || n.Subscription == "" {
			t.Fatalf("accepted a status without a valid type or subscription")
		}
		for _, ev := range n.Events {
			if (ev.Focus != nil) != (n.Content == ContentFullResource) && ev.Focus != nil {
				t.Fatalf("focus present but content %s", n.Content)
			}
			if ev.Focus == nil && len(ev.Related) > 0 && ev.FocusRef == "" {
				continue // additional-context only
			}
			if ev.Focus != nil {
				_, _ = EOBFactsFrom(ev.Focus, ev.Related)
				_ = SensitiveCodes(ev.Focus)
				_, _ = PatientContactFrom(ev.FocusRef, ev.Related)
			}
		}
	})
}

func FuzzWrapResources(f *testing.F) {
	seedFixtures(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := WrapResources(body, testSubscription, testTopic, testNow)
		if err != nil {
			if out != nil {
				t.Fatalf("output with error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoFocus) && !errors.Is(err, ErrAlreadyNotification) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		n, err := ParseNotification(out)
		if err != nil {
			t.Fatalf("wrapped output does not parse: %v", err)
		}
		if n.Content != ContentFullResource || len(n.Events) == 0 {
			t.Fatalf("wrapped output is %s with %d events", n.Content, len(n.Events))
		}
		for _, ev := range n.Events {
			if ev.Focus == nil || (ev.ResourceType != "ExplanationOfBenefit" && ev.ResourceType != "Appointment") {
				t.Fatalf("wrapped event focus %q", ev.ResourceType)
			}
			for _, r := range ev.Related {
				var h resourceHead
				if json.Unmarshal(r, &h) != nil || !relatedTypes[h.ResourceType] {
					t.Fatalf("related resource of type %q", h.ResourceType)
				}
			}
		}
	})
}

func FuzzEOBFactsFrom(f *testing.F) {
	for _, name := range eobFixtures {
		f.Add(mustRead(f, name), mustRead(f, "carin-bb-2.0.0/Patient-Patient2.json"))
	}
	f.Add(mustRead(f, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"), []byte(`{"resourceType":"Organization","id":"Payer1","name":"x"}`))
	f.Add([]byte(`{"resourceType":"ExplanationOfBenefit","use":"claim","total":[{"category":{"coding":[{"code":"memberliability"}]},"amount":{"value":1e30,"currency":"USD"}}]}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, eob, related []byte) {
		facts, err := EOBFactsFrom(eob, []json.RawMessage{related})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error is not ErrMalformed: %v", err)
			}
		} else if facts.PatientShare != nil {
			if _, ok := parseDecimal(facts.PatientShare.Value); !ok {
				t.Fatalf("PatientShare is not a decimal")
			}
		}
		_ = SensitiveCodes(eob)
		_, _ = PatientContactFrom(facts.PatientRef, []json.RawMessage{related})
	})
}

func FuzzAppointmentFactsFrom(f *testing.F) {
	hl7 := mustRead(f, "hl7-fhir-r4-spec/appointment-example.json")
	f.Add(hl7, mustRead(f, "hl7-fhir-r4-spec/practitioner-example.json"))
	f.Add(hl7, mustRead(f, "hl7-fhir-r4-spec/patient-example.json"))
	f.Add(mustRead(f, "hl7-fhir-r4-spec/appointment-example-request.json"), mustRead(f, "hl7-fhir-r4-spec/patient-example.json"))
	for _, file := range []string{siuS12, siuS15, siuS26} {
		bundle := mustRead(f, file)
		appt := resourceOf(f, bundle, "Appointment")
		for _, typ := range []string{"Patient", "Practitioner", "Location"} {
			f.Add([]byte(appt), []byte(resourceOf(f, bundle, typ)))
		}
	}
	f.Add([]byte(`{"resourceType":"Appointment","status":"cancelled","start":"2024-03-01T09:30:00.25-05:00","cancelationReason":{"coding":[{"system":"`+cancellationReasonSystem+`","code":"pat-mv"}]},"contained":[{"resourceType":"Location","id":"l","name":"B"}],"participant":[{"actor":{"reference":"#l"},"status":"accepted"},{"actor":{"reference":"PractitionerRole/r"},"status":"accepted"}]}`),
		[]byte(`{"resourceType":"PractitionerRole","id":"r","practitioner":{"display":"Dr X"}}`))
	f.Fuzz(func(t *testing.T, appt, related []byte) {
		facts, err := AppointmentFactsFrom(appt, []json.RawMessage{related})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error is not ErrMalformed: %v", err)
			}
			if !reflect.DeepEqual(facts, AppointmentFacts{}) {
				t.Fatalf("facts returned with an error")
			}
			return
		}
		switch facts.Status {
		case "proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error", "checked-in", "waitlist":
		default:
			t.Fatalf("status %q accepted", facts.Status)
		}
		if (facts.Start == "") != facts.StartTime.IsZero() || (facts.End == "") != facts.EndTime.IsZero() {
			t.Fatalf("start/end strings and times disagree")
		}
		if facts.MinutesDuration < 0 {
			t.Fatalf("negative duration")
		}
		switch facts.CancelledBy {
		case "", "patient", "provider", "other":
		default:
			t.Fatalf("CancelledBy = %q", facts.CancelledBy)
		}
		if k := AppointmentEventKindOf(facts, &facts); k != KindOther {
			t.Fatalf("the same version twice gives %q", k)
		}
		first := AppointmentEventKindOf(facts, nil)
		switch facts.Status {
		case "booked", "cancelled", "fulfilled", "noshow", "entered-in-error":
			if string(first) != facts.Status {
				t.Fatalf("first sight of %s gives %q", facts.Status, first)
			}
		default:
			if first != KindOther {
				t.Fatalf("first sight of %s gives %q", facts.Status, first)
			}
		}
		for _, c := range facts.Reasons {
			if c.Code == "" {
				t.Fatalf("a reason without a code: %+v", facts.Reasons)
			}
		}
		for _, r := range facts.UnreadReasons {
			if r == "" {
				t.Fatalf("an empty unread reason: %q", facts.UnreadReasons)
			}
		}
	})
}

// FuzzDecodeEOB checks the one-pass decode against the probe and model
// decoded one after the other: the same result, or both an error (the
// one-pass decode falls back to the careful one to word it). Inputs are
// what checkJSON passes, as in eobFacts. One difference is allowed: a key
// given twice, whose earlier value the one pass never looks at.
func FuzzDecodeEOB(f *testing.F) {
	for _, name := range eobFixtures {
		f.Add(mustRead(f, name))
	}
	f.Add([]byte(`{"resourceType":"ExplanationOfBenefit","use":null}`))
	f.Add([]byte(`{"resourceType":"ExplanationOfBenefit","use":5,"outcome":"complete"}`))
	f.Add([]byte(`{"resourceType":"ExplanationOfBenefit","use":"cl\u0061im"}`))
	f.Add([]byte(`{"resourceType":"ExplanationOfBenefit","USE":"preauthorization","contained":[{"resourceType":"Condition","id":"c"}]}`))
	f.Add([]byte(`{"resourceType":"Patient","use":"claim"}`))
	f.Fuzz(func(t *testing.T, eob []byte) {
		if checkJSON(eob, "ExplanationOfBenefit") != nil || repeatsAKey(eob) {
			return
		}
		p1, e1, err1 := decodeEOB(eob)
		p2, e2, err2 := decodeEOBCarefully(eob)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("one pass: %v; careful: %v", err1, err2)
		}
		if err1 != nil {
			if err1.Error() != err2.Error() {
				t.Fatalf("errors differ: %v / %v", err1, err2)
			}
			return
		}
		j1, _ := json.Marshal([]any{p1, e1})
		j2, _ := json.Marshal([]any{p2, e2})
		if string(j1) != string(j2) {
			t.Fatalf("decodes differ:\n%s\n%s", j1, j2)
		}
	})
}

// repeatsAKey reports whether any object in doc names a key twice (keys
// compared without case, as encoding/json matches fields); a document it
// cannot read counts as repeating.
func repeatsAKey(doc []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(doc))
	var walk func() bool
	walk = func() bool {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return true
				}
				key := strings.ToLower(k.(string))
				if seen[key] {
					return true
				}
				seen[key] = true
				if walk() {
					return true
				}
			}
			_, _ = dec.Token()
		case json.Delim('['):
			for dec.More() {
				if walk() {
					return true
				}
			}
			_, _ = dec.Token()
		}
		return false
	}
	return walk()
}
