package delivery

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/rego"
	"github.com/tidings-health/tidings/valueset"
)

// An appointment's reasons reach the policy as categories, as an EOB's
// diagnoses do; a reason that could not be read counts as sensitive; the
// facts are the ones decision.schema.json documents, and carry no code.
func TestAppointmentFactsForThePolicy(t *testing.T) {
	sets, err := valueset.Load(rego.FS)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../rego/decision.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs struct {
			Input struct {
				Properties struct {
					Facts struct {
						Properties map[string]any `json:"properties"`
					} `json:"facts"`
				} `json:"properties"`
			} `json:"input"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	documented := schema.Defs.Input.Properties.Facts.Properties
	if len(documented) == 0 {
		t.Fatal("no facts documented in decision.schema.json")
	}
	const icd = "http://hl7.org/fhir/sid/icd-10-cm"
	for _, tc := range []struct {
		name      string
		sets      *valueset.Sets
		appt      fhir.AppointmentFacts
		cats      []string // nil: no sensitive_categories fact
		sensitive any      // nil: no has_sensitive_diagnosis fact
	}{
		{"a sensitive reason", sets, fhir.AppointmentFacts{Status: "booked",
			Reasons: []fhir.Coding{{System: icd, Code: "Z00.00"}, {System: icd, Code: "F32.9"}}}, []string{"mental_health"}, true},
		{"a sensitive specialty", sets, fhir.AppointmentFacts{Status: "booked",
			Reasons: []fhir.Coding{{System: "http://snomed.info/sct", Code: "394580004"}}}, []string{"genetic"}, true},
		{"an ordinary reason", sets, fhir.AppointmentFacts{Status: "booked",
			Reasons: []fhir.Coding{{System: icd, Code: "Z00.00"}}}, []string{}, false},
		{"no reason", sets, fhir.AppointmentFacts{Status: "booked"}, []string{}, false},
		{"a reason that could not be read", sets, fhir.AppointmentFacts{Status: "booked",
			UnreadReasons: []string{"Condition/c1"}}, []string{}, true},
		{"no value sets, a reason that could not be read", nil, fhir.AppointmentFacts{Status: "booked",
			UnreadReasons: []string{"Condition/c1"}}, nil, true},
		{"no value sets", nil, fhir.AppointmentFacts{Status: "booked",
			Reasons: []fhir.Coding{{System: icd, Code: "F32.9"}}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{ValueSets: tc.sets, PublicBaseURL: "https://portal.example.org"}
			in, _ := s.draftFor(subject{noticeType: notify.NoticeTypeAppointment, appt: tc.appt}, Contact{}, "tok", "")
			for k := range in.Facts {
				if _, ok := documented[k]; !ok {
					t.Errorf("fact %q is not in decision.schema.json", k)
				}
			}
			cats, hasCats := in.Facts["sensitive_categories"]
			switch {
			case tc.cats == nil && hasCats:
				t.Errorf("sensitive_categories %v, want none", cats)
			case tc.cats != nil && (!hasCats || !slices.Equal(cats.([]string), tc.cats)):
				t.Errorf("sensitive_categories %v, want %v", cats, tc.cats)
			}
			if got := in.Facts["has_sensitive_diagnosis"]; got != tc.sensitive {
				t.Errorf("has_sensitive_diagnosis %v, want %v", got, tc.sensitive)
			}
			b, err := json.Marshal(in.Facts)
			if err != nil {
				t.Fatal(err)
			}
			for _, code := range []string{"F32", "Z00", "394580004", "Condition/c1"} {
				if strings.Contains(string(b), code) {
					t.Errorf("facts carry %q: %s", code, b)
				}
			}
		})
	}
}
