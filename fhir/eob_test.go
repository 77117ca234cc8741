package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func money(v, c string) *Money { return &Money{Value: v, Currency: c} }

func TestEOBFactsFixtures(t *testing.T) {
	tests := []struct {
		file               string
		share              *Money
		payer, provider    string
		serviceDate        string
		use, outcome       string
		patientID          string
		isPreauthorization bool
	}{
		// No memberliability anywhere: falls to total paidbypatient = 0.
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json", money("0", "USD"), "XXX Health Plan", "XXX Health Plan", "2019-01-01", "claim", "partial", "Patient2", false},
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json", money("0", "USD"), "Organization Payer 1", "Orange Medical Group", "2019-01-01", "claim", "partial", "Patient2", false},
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json", money("0", "USD"), "XXX Health Plan", "XXX Health Plan", "2019-01-01", "claim", "partial", "Patient2", false},
		// Item memberliability 80 wins over total paidbypatient 0.
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json", money("80", "USD"), "XXX Health Plan", "XXX Health Plan", "2019-10-30", "claim", "partial", "Patient2", false},
		// Totals are submitted/benefit/discount/paidtoprovider only.
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json", nil, "XXX Health Plan", "XXX Dental Plan", "2021-03-01", "claim", "complete", "Patient2", false},
		// Total memberliability = 0; provider has no display and no resource.
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json", money("0", "USD"), "UPMC Health Plan", "", "2022-09-10", "claim", "complete", "Patient1", false},
		{"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBInpatientNonFinancial1.json", nil, "XXX Health Plan", "XXX Health Plan", "2019-01-01", "claim", "partial", "Patient2", false},
		{"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBProfessionalNonFinancial1.json", nil, "XXX Health Plan", "XXX Health Plan", "2019-01-01", "claim", "partial", "Patient2", false},
		{"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBPharmacyNonFinancial1.json", nil, "XXX Health Plan", "XXX Health Plan", "2019-10-30", "claim", "partial", "Patient2", false},
		// Prior authorization: only an "eligible" total.
		{"davinci-pdex/ExplanationOfBenefit-PDexPriorAuth1.json", nil, "Example Health Plan", "Another Example Health Plan", "2021-10-01", "preauthorization", "queued", "1", true},
		// No billablePeriod: the item servicedDate; no displays.
		{"hl7-fhir-r4-spec/explanationofbenefit-example.json", nil, "", "", "2014-08-16", "claim", "complete", "pat1", false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			f, err := EOBFactsFrom(mustRead(t, tc.file), nil)
			if err != nil {
				t.Fatalf("EOBFactsFrom: %v", err)
			}
			if (f.PatientShare == nil) != (tc.share == nil) || (f.PatientShare != nil && *f.PatientShare != *tc.share) {
				t.Errorf("PatientShare = %v, want %v", f.PatientShare, tc.share)
			}
			if f.PayerName != tc.payer || f.ProviderName != tc.provider {
				t.Errorf("payer/provider = %q/%q, want %q/%q", f.PayerName, f.ProviderName, tc.payer, tc.provider)
			}
			if f.ServiceDate != tc.serviceDate || f.Use != tc.use || f.Outcome != tc.outcome {
				t.Errorf("date/use/outcome = %q/%q/%q", f.ServiceDate, f.Use, f.Outcome)
			}
			if f.PatientID != tc.patientID || f.IsPreauthorization != tc.isPreauthorization {
				t.Errorf("patient=%q preauth=%v", f.PatientID, f.IsPreauthorization)
			}
			if f.ID == "" || !strings.HasPrefix(f.PatientRef, "Patient/") {
				t.Errorf("id=%q patientRef=%q", f.ID, f.PatientRef)
			}
		})
	}
}

// eobWith builds a minimal valid EOB and sets extra fields on it.
func eobWith(t *testing.T, extra map[string]any) []byte {
	t.Helper()
	e := map[string]any{
		"resourceType": "ExplanationOfBenefit", "id": "x1", "status": "active",
		"type": map[string]any{"text": "professional"}, "use": "claim", "outcome": "complete",
		"created": "2024-03-04T10:00:00Z", "patient": map[string]any{"reference": "Patient/p1"},
		"insurer": map[string]any{"display": "Plan"}, "provider": map[string]any{"display": "Clinic"},
		"insurance": []any{},
	}
	for k, v := range extra {
		if v == nil {
			delete(e, k)
		} else {
			e[k] = v
		}
	}
	return mustJSON(t, e)
}

func adj(code, system string, value any, currency string) map[string]any {
	a := map[string]any{"category": map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}}
	if value != nil {
		m := map[string]any{"value": value}
		if currency != "" {
			m["currency"] = currency
		}
		a["amount"] = m
	}
	return a
}

const (
	c4bb = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
	core = "http://terminology.hl7.org/CodeSystem/adjudication"
)

func TestEOBFactsPatientShareRules(t *testing.T) {
	n := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		name string
		eob  map[string]any
		want *Money
	}{
		{"total memberliability wins", map[string]any{
			"total": []any{adj("paidbypatient", c4bb, n("5.00"), "USD"), adj("memberliability", c4bb, n("45.20"), "USD")},
			"item":  []any{map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("1"), "USD")}}},
		}, money("45.20", "USD")},
		{"item sum is exact", map[string]any{"item": []any{
			map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("0.1"), "USD")}},
			map[string]any{"sequence": 2, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", "", n("0.2"), "USD")}},
			map[string]any{"sequence": 3, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("45.00"), "USD")}},
		}}, money("45.30", "USD")},
		{"details count only when the item has none", map[string]any{"item": []any{
			map[string]any{"sequence": 1, "productOrService": map[string]any{},
				"adjudication": []any{adj("memberliability", c4bb, n("10"), "USD")},
				"detail":       []any{map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("10"), "USD")}}}},
			map[string]any{"sequence": 2, "productOrService": map[string]any{},
				"detail": []any{
					map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("2.5"), "USD")}},
					map[string]any{"sequence": 2, "productOrService": map[string]any{}, "subDetail": []any{
						map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("1.25"), "USD")}}}},
				}},
		}}, money("13.75", "USD")},
		{"header adjudication before items", map[string]any{
			"adjudication": []any{adj("memberliability", c4bb, n("7"), "USD")},
			"item":         []any{map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("1"), "USD")}}},
		}, money("7", "USD")},
		{"older patientpay code", map[string]any{"total": []any{adj("patientpay", "", n("12.5"), "EUR")}}, money("12.5", "EUR")},
		{"core system paidbypatient", map[string]any{"total": []any{adj("paidbypatient", core, n("3"), "USD")}}, money("3", "USD")},
		{"mixed currencies do not sum", map[string]any{"item": []any{
			map[string]any{"sequence": 1, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("1"), "USD")}},
			map[string]any{"sequence": 2, "productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("1"), "CAD")}},
		}}, nil},
		{"amount without value is skipped", map[string]any{"total": []any{adj("memberliability", c4bb, nil, ""), adj("paidbypatient", c4bb, n("4"), "USD")}}, money("4", "USD")},
		{"exponent amounts sum exactly", map[string]any{"addItem": []any{
			map[string]any{"productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("1.5e1"), "USD")}},
			map[string]any{"productOrService": map[string]any{}, "adjudication": []any{adj("memberliability", c4bb, n("25E-2"), "USD")}},
		}}, money("15.25", "USD")},
		{"unreadable amount counts as absent", map[string]any{"total": []any{adj("memberliability", c4bb, n("1e70"), "USD"), adj("paidbypatient", c4bb, n("2"), "USD")}}, money("2", "USD")},
		{"nothing", map[string]any{"total": []any{adj("submitted", core, n("100"), "USD")}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := EOBFactsFrom(eobWith(t, tc.eob), nil)
			if err != nil {
				t.Fatalf("EOBFactsFrom: %v", err)
			}
			if (f.PatientShare == nil) != (tc.want == nil) || (f.PatientShare != nil && *f.PatientShare != *tc.want) {
				t.Errorf("PatientShare = %v, want %v", f.PatientShare, tc.want)
			}
		})
	}
}

func TestEOBFactsServiceDateAndAbsence(t *testing.T) {
	f, err := EOBFactsFrom(eobWith(t, map[string]any{
		"use": nil, "outcome": nil,
		"item": []any{
			map[string]any{"sequence": 1, "productOrService": map[string]any{}, "servicedPeriod": map[string]any{"start": "2024-02-10T09:00:00-05:00"}},
			map[string]any{"sequence": 2, "productOrService": map[string]any{}, "servicedDate": "2024-02-08"},
			map[string]any{"sequence": 3, "productOrService": map[string]any{}, "servicedDate": "2024"},
		},
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.ServiceDate != "2024-02-08" {
		t.Errorf("ServiceDate = %q, want the earliest full item date", f.ServiceDate)
	}
	// samply decodes a missing enum as its first code; we must not.
	if f.Use != "" || f.Outcome != "" || f.IsPreauthorization {
		t.Errorf("absent use/outcome = %q/%q", f.Use, f.Outcome)
	}
	f, err = EOBFactsFrom(eobWith(t, nil), nil)
	if err != nil || f.ServiceDate != "2024-03-04" {
		t.Errorf("ServiceDate falls back to created: %q %v", f.ServiceDate, err)
	}
}

func TestEOBFactsResolvesNames(t *testing.T) {
	practitioner := mustRead(t, "carin-bb-2.0.0/Practitioner-Practitioner1.json")
	payer := mustRead(t, "carin-bb-2.0.0/Organization-Payer1.json")
	patient := mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json")
	var org struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(payer, &org); err != nil || org.Name == "" {
		t.Fatalf("payer fixture has no name: %v", err)
	}
	t.Run("related", func(t *testing.T) {
		f, err := EOBFactsFrom(eobWith(t, map[string]any{
			"insurer":  map[string]any{"reference": "Organization/Payer1"},
			"provider": map[string]any{"reference": "https://ehr.example/fhir/Practitioner/Practitioner1"},
			"patient":  map[string]any{"reference": "urn:uuid:0b5e0c1a-7a3c-4d9b-9d7e-3e1d2c4b5a69"},
		}), []json.RawMessage{practitioner, payer, patient})
		if err != nil {
			t.Fatal(err)
		}
		if f.PayerName != org.Name || f.ProviderName != "John Smith" {
			t.Errorf("payer=%q provider=%q", f.PayerName, f.ProviderName)
		}
		// The urn:uuid matches no id: no guess, even with one Patient.
		if f.PatientID != "" {
			t.Errorf("PatientID = %q", f.PatientID)
		}
	})
	t.Run("contained and PractitionerRole", func(t *testing.T) {
		f, err := EOBFactsFrom(eobWith(t, map[string]any{
			"contained": []any{
				map[string]any{"resourceType": "Organization", "id": "ins", "name": "Contained Insurer"},
				map[string]any{"resourceType": "PractitionerRole", "id": "role", "practitioner": map[string]any{"reference": "Practitioner/Practitioner1"}},
			},
			"insurer":  map[string]any{"reference": "#ins"},
			"provider": map[string]any{"reference": "#role"},
		}), []json.RawMessage{practitioner})
		if err != nil {
			t.Fatal(err)
		}
		if f.PayerName != "Contained Insurer" || f.ProviderName != "John Smith" {
			t.Errorf("payer=%q provider=%q", f.PayerName, f.ProviderName)
		}
	})
	t.Run("conditional reference with display", func(t *testing.T) {
		f, err := EOBFactsFrom(eobWith(t, map[string]any{
			"provider": map[string]any{"reference": "Organization?identifier=https://github.com/synthetichealth/synthea|abc", "display": "Lahey Clinic"},
		}), nil)
		if err != nil || f.ProviderName != "Lahey Clinic" {
			t.Errorf("provider=%q err=%v", f.ProviderName, err)
		}
		f, err = EOBFactsFrom(eobWith(t, map[string]any{
			"provider": map[string]any{"reference": "Organization?identifier=https://npi.example|123"},
		}), []json.RawMessage{mustJSON(t, map[string]any{"resourceType": "Organization", "id": "o9", "name": "By Identifier",
			"identifier": []any{map[string]any{"system": "https://npi.example", "value": "123"}}})})
		if err != nil || f.ProviderName != "By Identifier" {
			t.Errorf("conditional provider=%q err=%v", f.ProviderName, err)
		}
	})
}

func TestEOBFactsErrors(t *testing.T) {
	tests := []struct {
		name    string
		eob     []byte
		related []json.RawMessage
	}{
		{"not JSON", []byte(`{"resourceType":"ExplanationOfBenefit","id":"` + canary), nil},
		{"a Patient", mustRead(t, "carin-bb-2.0.0/Patient-Patient2.json"), nil},
		{"an array", []byte(`["` + canary + `"]`), nil},
		{"unknown use code", eobWith(t, map[string]any{"use": canary}), nil},
		{"use is a number", eobWith(t, map[string]any{"use": json.Number("987654321")}), nil},
		{"amount is a string of letters", eobWith(t, map[string]any{"total": []any{adj("memberliability", c4bb, canary, "USD")}}), nil},
		{"duplicate key", []byte(`{"resourceType":"ExplanationOfBenefit","id":"a","id":"` + canary + `"}`), nil},
		{"broken related", eobWith(t, nil), []json.RawMessage{[]byte(`{"resourceType":"Patient","id":"` + canary)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EOBFactsFrom(tc.eob, tc.related)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			assertNoCanary(t, err)
			if strings.Contains(err.Error(), "987654321") {
				t.Errorf("error leaks a number: %q", err)
			}
		})
	}
}

func TestSensitiveCodes(t *testing.T) {
	tests := []struct {
		file    string
		want    []string
		notWant []string
	}{
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json", []string{"S06.0X1A", "Dummy"}, []string{"not-applicable", "innetwork", "11"}},
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json", []string{"0777-3105-02"}, []string{"7", "memberliability"}},
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json", []string{"97110"}, nil},
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json", []string{"D1110", "D0120"}, nil},
		{"davinci-pdex/ExplanationOfBenefit-PDexPriorAuth1.json", []string{"BB201"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got := SensitiveCodes(mustRead(t, tc.file))
			for _, w := range tc.want {
				if !contains(got, w) {
					t.Errorf("SensitiveCodes = %v, missing %q", got, w)
				}
			}
			for _, nw := range tc.notWant {
				if contains(got, nw) {
					t.Errorf("SensitiveCodes = %v, includes administrative %q", got, nw)
				}
			}
		})
	}
	t.Run("DRG, procedure, modifiers, contained clinical", func(t *testing.T) {
		got := SensitiveCodes(eobWith(t, map[string]any{
			"supportingInfo": []any{
				map[string]any{"sequence": 1, "category": map[string]any{"coding": []any{map[string]any{"code": "drg"}}}, "code": map[string]any{"coding": []any{map[string]any{"code": "470"}}}},
				map[string]any{"sequence": 2, "category": map[string]any{"coding": []any{map[string]any{"code": "admtype"}}}, "code": map[string]any{"coding": []any{map[string]any{"code": "9"}}}},
			},
			"procedure": []any{map[string]any{"sequence": 1, "procedureCodeableConcept": map[string]any{"coding": []any{map[string]any{"code": "0SRC0J9"}}}}},
			"item": []any{map[string]any{"sequence": 1, "productOrService": map[string]any{"coding": []any{map[string]any{"code": "99213"}}},
				"modifier": []any{map[string]any{"coding": []any{map[string]any{"code": "25"}}}}}},
			"contained": []any{
				map[string]any{"resourceType": "Condition", "id": "c", "code": map[string]any{"coding": []any{map[string]any{"code": "F32.9"}}}},
				map[string]any{"resourceType": "Coverage", "id": "cov", "type": map[string]any{"coding": []any{map[string]any{"code": "HIP"}}}},
			},
		}))
		for _, w := range []string{"470", "0SRC0J9", "99213", "25", "F32.9"} {
			if !contains(got, w) {
				t.Errorf("missing %q in %v", w, got)
			}
		}
		for _, nw := range []string{"9", "HIP", "drg"} {
			if contains(got, nw) {
				t.Errorf("includes %q in %v", nw, got)
			}
		}
	})
	if got := SensitiveCodes([]byte(`{"broken`)); got != nil {
		t.Errorf("SensitiveCodes(broken) = %v", got)
	}
}

func TestPHITypesLogRedacted(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("facts", "eob", EOBFacts{PatientID: canary, PatientShare: money("45.20", "USD"), ProviderName: canary})
	log.Info("contact", "patient", PatientContact{PatientID: canary, Email: canary + "@example.org"})
	log.Info("money", "share", Money{Value: "45.20", Currency: "USD"})
	log.Info("event", "event", Event{FocusRef: "Patient/" + canary, ID: canary, Focus: json.RawMessage(`{"name":"` + canary + `"}`)})
	log.Info("notification", "n", Notification{Events: []Event{{ID: canary}}})
	out := buf.String()
	if strings.Contains(out, canary) || strings.Contains(out, "45.20") {
		t.Errorf("PHI in logs: %s", out)
	}
	if strings.Count(out, "[REDACTED]") != 3 {
		t.Errorf("want 3 redacted values: %s", out)
	}
}

// The diagnoses EOB facts carry are exactly what DiagnosisCodes reads from
// the same EOB, for every published example.
func TestEOBFactsDiagnosesMatchDiagnosisCodes(t *testing.T) {
	n := 0
	for _, path := range fixtureFiles(t) {
		raw := mustRead(t, path)
		if !strings.HasPrefix(headOf(t, raw), "ExplanationOfBenefit/") {
			continue
		}
		f, err := EOBFactsFrom(raw, nil)
		if err != nil {
			continue
		}
		n++
		if want := DiagnosisCodes(raw); !slices.Equal(f.Diagnoses, want) {
			t.Errorf("%s: facts %v, DiagnosisCodes %v", path, f.Diagnoses, want)
		}
	}
	if n < 8 {
		t.Fatalf("only %d EOBs read", n)
	}
	withContained := []byte(`{"resourceType":"ExplanationOfBenefit","status":"active","use":"claim","patient":{"reference":"Patient/p"},
		"contained":[{"resourceType":"Condition","id":"c1","code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"F32.9"}]}}],
		"diagnosis":[{"sequence":1,"diagnosisReference":{"reference":"#c1"}},{"sequence":2,"diagnosisCodeableConcept":{"coding":[{"code":"E11.9"}]}}]}`)
	f, err := EOBFactsFrom(withContained, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := DiagnosisCodes(withContained); len(want) != 2 || !slices.Equal(f.Diagnoses, want) {
		t.Fatalf("facts %v, DiagnosisCodes %v", f.Diagnoses, want)
	}
}

// BenchmarkEOBFacts measures facts from the largest CARIN EOB example: the
// worker builds them once per notice.
func BenchmarkEOBFacts(b *testing.B) {
	eob := mustRead(b, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	b.SetBytes(int64(len(eob)))
	for b.Loop() {
		if _, err := EOBFactsFrom(eob, nil); err != nil {
			b.Fatal(err)
		}
	}
}
