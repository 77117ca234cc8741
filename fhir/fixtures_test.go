package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fixtureOutcome is what one fixture must yield from both entry points a
// body can take: ParseNotification (is it a notification?) and
// WrapResources (does it hold something to notify about?).
type fixtureOutcome struct {
	// parseErr is the sentinel ParseNotification must return, with
	// errSays in its message; nil when notification must match.
	parseErr     error
	errSays      string
	notification *wantNotification

	// wrapErr is the sentinel WrapResources must return; nil when the
	// wrapped Bundle's events must match events, in order.
	wrapErr error
	events  []wantFocus
}

type wantNotification struct {
	typ     NotificationType
	content Content
	events  int
	focus   string // "Type/id" of the first event's focus; "" when none
}

// wantFocus is one wrapped event: its focus and the facts it yields.
type wantFocus struct {
	focus string // "Type/id"
	// ExplanationOfBenefit: EOBFacts.ID (the focus id), Use and PatientID.
	use, patientID string
	// Appointment: AppointmentFacts.Status and PatientID (patientID above).
	status string
}

const (
	subscriptionEncounter = "Encounter/86009987-eabe-42bf-8c02-b112b18cb616"
	syntheaPatient        = "d78af07c-9cb9-4f31-9b11-c45a28f2eec8"
)

func eobWant(id, use, patientID string) []wantFocus {
	return []wantFocus{{focus: "ExplanationOfBenefit/" + id, use: use, patientID: patientID}}
}

func apptWant(id, status, patientID string) []wantFocus {
	return []wantFocus{{focus: "Appointment/" + id, status: status, patientID: patientID}}
}

// notNotification is the outcome of a resource that is neither a
// notification nor something to notify about.
var notNotification = fixtureOutcome{parseErr: ErrNotNotification, wrapErr: ErrNoFocus}

// bareFocus is the outcome of a resource (or Bundle) that is no
// notification but wraps into one.
func bareFocus(events []wantFocus) fixtureOutcome {
	return fixtureOutcome{parseErr: ErrNotNotification, events: events}
}

// notification is the outcome of a notification Bundle.
func notification(typ NotificationType, content Content, events int, focus string) fixtureOutcome {
	return fixtureOutcome{notification: &wantNotification{typ, content, events, focus}, wrapErr: ErrAlreadyNotification}
}

// fixtureTable lists every file under testdata by its path there. A file
// without a row, or a row without a file, fails the test.
var fixtureTable = map[string]fixtureOutcome{
	// CARIN Blue Button 2.0.0.
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json":                  bareFocus(eobWant("EOBInpatient1", "claim", "Patient2")),
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json":                 bareFocus(eobWant("EOBOutpatient1", "claim", "Patient2")),
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json":               bareFocus(eobWant("EOBProfessional1", "claim", "Patient2")),
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json":                   bareFocus(eobWant("EOBPharmacy1", "claim", "Patient2")),
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json":                       bareFocus(eobWant("EOBOral1", "claim", "Patient2")),
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json": bareFocus(eobWant("EOBProfessionalTransportation1", "claim", "Patient1")),
	"carin-bb-2.0.0/Coverage-Coverage1.json":                                  notNotification,
	"carin-bb-2.0.0/Organization-Payer1.json":                                 notNotification,
	"carin-bb-2.0.0/Organization-ProviderOrganization1.json":                  notNotification,
	"carin-bb-2.0.0/Patient-Patient2.json":                                    notNotification,
	"carin-bb-2.0.0/Practitioner-Practitioner1.json":                          notNotification,
	"carin-bb-2.0.0/RelatedPerson-RelatedPerson1.json":                        notNotification,

	// CARIN non-financial EOBs (no totals).
	"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBInpatientNonFinancial1.json":    bareFocus(eobWant("EOBInpatientNonFinancial1", "claim", "Patient2")),
	"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBPharmacyNonFinancial1.json":     bareFocus(eobWant("EOBPharmacyNonFinancial1", "claim", "Patient2")),
	"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBProfessionalNonFinancial1.json": bareFocus(eobWant("EOBProfessionalNonFinancial1", "claim", "Patient2")),

	// Da Vinci PDex prior authorization.
	"davinci-pdex/ExplanationOfBenefit-PDexPriorAuth1.json": bareFocus(eobWant("PDexPriorAuth1", "preauthorization", "1")),

	// HL7v2 SIU messages converted to batch Bundles: one Appointment each.
	"fhir-converter-hl7v2-siu/SIU-S12-01-expected.json": bareFocus(apptWant(siuAppointmentID, "booked", siuPatientID)),
	"fhir-converter-hl7v2-siu/SIU-S15-01-expected.json": bareFocus(apptWant(siuAppointmentID, "cancelled", siuPatientID)),
	"fhir-converter-hl7v2-siu/SIU-S26-01-expected.json": bareFocus(apptWant(siuAppointmentID, "noshow", siuPatientID)),

	// HL7 FHIR R4 core examples.
	"hl7-fhir-r4-spec/appointment-example.json":          bareFocus(apptWant("example", "booked", "example")),
	"hl7-fhir-r4-spec/appointment-example-request.json":  bareFocus(apptWant("examplereq", "proposed", "example")),
	"hl7-fhir-r4-spec/explanationofbenefit-example.json": bareFocus(eobWant("EB3500", "claim", "pat1")),
	"hl7-fhir-r4-spec/coverage-example.json":             notNotification,
	"hl7-fhir-r4-spec/organization-example-insurer.json": notNotification,
	"hl7-fhir-r4-spec/patient-example.json":              notNotification,
	"hl7-fhir-r4-spec/patient-example-f001-pieter.json":  notNotification,
	"hl7-fhir-r4-spec/practitioner-example.json":         notNotification,
	"hl7-fhir-r4-spec/subscription-example.json":         notNotification,

	// Subscriptions Backport IG (via Inferno).
	"subscriptions-backport-ig/handshake_bundle_example.json":                  notification(TypeHandshake, ContentEmpty, 0, ""),
	"subscriptions-backport-ig/heartbeat_bundle_example.json":                  notification(TypeHeartbeat, ContentEmpty, 0, ""),
	"subscriptions-backport-ig/empty_notification_bundle_example.json":         notification(TypeEventNotification, ContentEmpty, 1, ""),
	"subscriptions-backport-ig/id_only_notification_bundle_example.json":       notification(TypeEventNotification, ContentIDOnly, 1, subscriptionEncounter),
	"subscriptions-backport-ig/full_resource_notification_bundle_example.json": notification(TypeEventNotification, ContentFullResource, 1, subscriptionEncounter),
	// Declares the backport notification profile, yet its status entry has
	// no request/response. It is still a notification Bundle, so
	// WrapResources will not wrap it either.
	"subscriptions-backport-ig/empty_notification_bundle_non_conformant_example.json": {
		parseErr: ErrMalformed, errSays: "entry[0] has no request", wrapErr: ErrAlreadyNotification,
	},
	// A $status searchset: no notification, nothing to wrap.
	"subscriptions-backport-ig/subscription_status_example.json":   notNotification,
	"subscriptions-backport-ig/subscription_resource_example.json": notNotification,
	"subscriptions-backport-ig/Subscription_id-only.json":          notNotification,

	// Synthea transaction Bundle: three EOBs, in Bundle order.
	"synthea/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json": bareFocus([]wantFocus{
		{focus: "ExplanationOfBenefit/5ca5a87f-be11-41dd-9c36-2de39282f8ff", use: "claim", patientID: syntheaPatient},
		{focus: "ExplanationOfBenefit/ad544db1-f947-492e-b25e-d17a7d753ba1", use: "claim", patientID: syntheaPatient},
		{focus: "ExplanationOfBenefit/e9729d25-e5f3-40d4-b3a5-87b795189ece", use: "claim", patientID: syntheaPatient},
	}),
}

// testdataJSON lists every .json file under testdata, relative to it.
func testdataJSON(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".json") {
			rel, err := filepath.Rel("testdata", path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk testdata: %v", err)
	}
	sort.Strings(files)
	return files
}

func TestEveryFixture(t *testing.T) {
	files := testdataJSON(t)
	present := make(map[string]bool, len(files))
	for _, f := range files {
		present[f] = true
		if _, ok := fixtureTable[f]; !ok {
			t.Errorf("testdata/%s has no row in fixtureTable", f)
		}
	}
	for f := range fixtureTable {
		if !present[f] {
			t.Errorf("fixtureTable names testdata/%s, which does not exist", f)
		}
	}
	for _, file := range files {
		want, ok := fixtureTable[file]
		if !ok {
			continue
		}
		t.Run(file, func(t *testing.T) {
			body := mustRead(t, file)
			checkParseOutcome(t, body, want)
			checkWrapOutcome(t, body, want)
		})
	}
}

func checkParseOutcome(t *testing.T, body []byte, want fixtureOutcome) {
	t.Helper()
	n, err := ParseNotification(body)
	if want.parseErr != nil {
		if !errors.Is(err, want.parseErr) || n != nil {
			t.Errorf("ParseNotification: err = %v, want %v", err, want.parseErr)
		} else if !strings.Contains(err.Error(), want.errSays) {
			t.Errorf("ParseNotification: err = %q, want it to say %q", err, want.errSays)
		}
		return
	}
	if err != nil {
		t.Errorf("ParseNotification: %v", err)
		return
	}
	w := want.notification
	if n.Type != w.typ || n.Content != w.content || len(n.Events) != w.events {
		t.Errorf("notification = %s/%s with %d events, want %s/%s with %d", n.Type, n.Content, len(n.Events), w.typ, w.content, w.events)
		return
	}
	focus := ""
	if len(n.Events) > 0 && n.Events[0].ResourceType != "" {
		focus = n.Events[0].ResourceType + "/" + n.Events[0].ID
	}
	if focus != w.focus {
		t.Errorf("first focus = %q, want %q", focus, w.focus)
	}
}

func checkWrapOutcome(t *testing.T, body []byte, want fixtureOutcome) {
	t.Helper()
	out, err := WrapResources(body, testSubscription, testTopic, testNow)
	if want.wrapErr != nil {
		if !errors.Is(err, want.wrapErr) || out != nil {
			t.Errorf("WrapResources: err = %v, want %v", err, want.wrapErr)
		}
		return
	}
	if err != nil {
		t.Errorf("WrapResources: %v", err)
		return
	}
	assertHistoryEntries(t, out)
	n, err := ParseNotification(out)
	if err != nil {
		t.Errorf("ParseNotification(wrapped): %v", err)
		return
	}
	if len(n.Events) != len(want.events) {
		t.Errorf("wrapped %d events, want %d", len(n.Events), len(want.events))
		return
	}
	for i, ev := range n.Events {
		w := want.events[i]
		if got := ev.ResourceType + "/" + ev.ID; got != w.focus {
			t.Errorf("event %d focus = %s, want %s", i, got, w.focus)
			continue
		}
		switch ev.ResourceType {
		case "ExplanationOfBenefit":
			f, err := ev.EOBFacts()
			if err != nil {
				t.Errorf("event %d EOBFacts: %v", i, err)
			} else if f.ID != ev.ID || f.Use != w.use || f.PatientID != w.patientID {
				t.Errorf("event %d EOB facts id=%q use=%q patient=%q, want %q %q %q", i, f.ID, f.Use, f.PatientID, ev.ID, w.use, w.patientID)
			}
		case "Appointment":
			f, err := ev.AppointmentFacts()
			if err != nil {
				t.Errorf("event %d AppointmentFacts: %v", i, err)
			} else if f.ID != ev.ID || f.Status != w.status || f.PatientID != w.patientID {
				t.Errorf("event %d appointment facts id=%q status=%q patient=%q, want %q %q %q", i, f.ID, f.Status, f.PatientID, ev.ID, w.status, w.patientID)
			}
		default:
			t.Errorf("event %d has a %s focus", i, ev.ResourceType)
		}
	}
}

// assertHistoryEntries checks that a wrapped Bundle is a conformant history
// Bundle: every entry carries request {method, url} and response {status}.
func assertHistoryEntries(t *testing.T, bundle []byte) {
	t.Helper()
	env, entries, err := decodeBundle(bundle)
	if err != nil || env.Type != "history" || !env.claimsProfile(backportNotificationProfile) {
		t.Errorf("wrapped output is not a profiled history Bundle (%v)", err)
		return
	}
	for i, e := range entries {
		var req struct {
			Method string `json:"method"`
			URL    string `json:"url"`
		}
		var resp struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(e.Request, &req) != nil || req.Method == "" || req.URL == "" ||
			json.Unmarshal(e.Response, &resp) != nil || resp.Status == "" {
			t.Errorf("wrapped entry[%d] lacks request or response", i)
		}
	}
}

// TestFixturesMatchShared checks that testdata holds every file of the
// project's shared fixture set, byte for byte, so the table above covers
// all of them. It is skipped where the shared set is not checked out.
func TestFixturesMatchShared(t *testing.T) {
	const shared = "../../shared/fixtures/fhir"
	if _, err := os.Stat(shared); err != nil {
		t.Skipf("shared fixtures not present: %v", err)
	}
	err := filepath.WalkDir(shared, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".json") {
			return nil
		}
		rel, _ := filepath.Rel(shared, path)
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join("testdata", rel))
		if err != nil {
			t.Errorf("shared fixture %s is not in testdata", rel)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("testdata/%s differs from the shared fixture", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
