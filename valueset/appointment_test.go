package valueset

import (
	"encoding/json"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/rego"
)

const publishedAppointment = "testdata/hl7-fhir-r4-spec/appointment-example-request.json"

// A code of each category, in each code system the category lists.
var categoryCodes = map[string][]fhir.Coding{
	"mental_health":       {{System: icd, Code: "F32.9"}, {System: sct, Code: "74732009"}},
	"substance_use":       {{System: icd, Code: "F10.20"}, {System: sct, Code: "66214007"}},
	"hiv_sti":             {{System: icd, Code: "B20"}, {System: "http://hl7.org/fhir/sid/icd-10", Code: "A54.00"}, {System: sct, Code: "86406008"}},
	"reproductive_health": {{System: icd, Code: "Z30.09"}, {System: sct, Code: "386639001"}},
	"genetic":             {{System: icd, Code: "Z15.01"}, {System: sct, Code: "394580004"}},
}

// withReasonCoding is the published Appointment with its reasonCode
// coding replaced.
func withReasonCoding(t *testing.T, c fhir.Coding) []byte {
	t.Helper()
	raw, err := os.ReadFile(publishedAppointment)
	if err != nil {
		t.Fatal(err)
	}
	var appt map[string]any
	if err := json.Unmarshal(raw, &appt); err != nil {
		t.Fatal(err)
	}
	reason := appt["reasonCode"].([]any)[0].(map[string]any)
	reason["coding"] = []any{map[string]any{"system": c.System, "code": c.Code}}
	out, err := json.Marshal(appt)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The published Appointment, its reasonCode set to a code of each
// category, is classified in that category through its facts, as the
// worker does it; unchanged, it is in none.
func TestPublishedAppointmentPerCategory(t *testing.T) {
	s, err := Load(rego.FS)
	if err != nil {
		t.Fatal(err)
	}
	listed, tested := slices.Sorted(maps.Keys(s.categories)), slices.Sorted(maps.Keys(categoryCodes))
	if !slices.Equal(listed, tested) {
		t.Fatalf("sensitive.json lists %v, the test has codes for %v", listed, tested)
	}
	raw, err := os.ReadFile(publishedAppointment)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fhir.AppointmentFactsFrom(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.Reasons, fhir.Coding{System: sct, Code: "413095006"}) {
		t.Fatalf("the published reason is not read: %v", f.Reasons)
	}
	if got := s.Categories(f.Reasons); len(got) != 0 {
		t.Fatalf("the published Appointment (Clinical Review, general practice) is classified %v", got)
	}
	for name, codings := range categoryCodes {
		for _, c := range codings {
			f, err := fhir.AppointmentFactsFrom(withReasonCoding(t, c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(s.Categories(f.Reasons), ","); got != name {
				t.Errorf("reasonCode %s|%s: %q, want %q", c.System, c.Code, got, name)
			}
		}
	}
}

// The other places an Appointment says what it is for: a specialty, a
// service type, and a Condition its reasonReference names in the
// notification.
func TestPublishedAppointmentOtherReasons(t *testing.T) {
	s, err := Load(rego.FS)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(publishedAppointment)
	if err != nil {
		t.Fatal(err)
	}
	change := func(edit func(appt map[string]any)) []byte {
		var appt map[string]any
		if err := json.Unmarshal(raw, &appt); err != nil {
			t.Fatal(err)
		}
		edit(appt)
		b, _ := json.Marshal(appt)
		return b
	}
	concept := func(system, code string) []any {
		return []any{map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}}
	}
	condition := json.RawMessage(`{"resourceType":"Condition","id":"c9","code":{"coding":[{"system":"` + icd + `","code":"F11.20"}]}}`)
	for _, tc := range []struct {
		name    string
		appt    []byte
		related []json.RawMessage
		want    string
	}{
		{"specialty psychiatry", change(func(a map[string]any) { a["specialty"] = concept(sct, "394587001") }), nil, "mental_health"},
		{"service type clinical genetics", change(func(a map[string]any) { a["serviceType"] = concept(sct, "394580004") }), nil, "genetic"},
		{"reasonReference to a Condition in the notification", change(func(a map[string]any) {
			a["reasonReference"] = []any{map[string]any{"reference": "Condition/c9"}}
		}), []json.RawMessage{condition}, "substance_use"},
		{"reasonReference to a Condition not at hand", change(func(a map[string]any) {
			a["reasonReference"] = []any{map[string]any{"reference": "Condition/c9"}}
		}), nil, ""},
	} {
		f, err := fhir.AppointmentFactsFrom(tc.appt, tc.related)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(s.Categories(f.Reasons), ","); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if unread := len(f.UnreadReasons) > 0; unread != (tc.related == nil && strings.Contains(tc.name, "reasonReference")) {
			t.Errorf("%s: unread reasons %v", tc.name, f.UnreadReasons)
		}
	}
}
