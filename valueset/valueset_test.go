package valueset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/rego"
)

const (
	icd = "http://hl7.org/fhir/sid/icd-10-cm"
	sct = "http://snomed.info/sct"
)

func TestCategories(t *testing.T) {
	s, err := Load(rego.FS)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		codes []string
		want  string
	}{
		{[]string{"F32.9"}, "mental_health"},       // major depressive disorder
		{[]string{"F10.20"}, "substance_use"},      // alcohol dependence
		{[]string{"Z71.41"}, "substance_use"},      // alcohol abuse counseling
		{[]string{"B20"}, "hiv_sti"},               // HIV disease
		{[]string{"A54.00"}, "hiv_sti"},            // gonococcal infection
		{[]string{"O03.9"}, "reproductive_health"}, // spontaneous abortion
		{[]string{"Z33.2"}, "reproductive_health"},
		{[]string{"Z15.01"}, "genetic"},
		{[]string{"F41.1", "F11.20"}, "mental_health,substance_use"},
		{[]string{"S06.0X1A", "I70.249", "G89.4", "Z01.21"}, ""}, // the published fixtures' diagnoses
		{[]string{"Z33.1"}, ""},                                  // pregnant state, incidental: not listed
		{[]string{"f32.9"}, "mental_health"},                     // case and dots do not matter
	} {
		var codings []fhir.Coding
		for _, code := range c.codes {
			codings = append(codings, fhir.Coding{System: icd, Code: code})
		}
		if got := strings.Join(s.Categories(codings), ","); got != c.want {
			t.Errorf("%v: %q, want %q", c.codes, got, c.want)
		}
	}
	if got := s.Categories([]fhir.Coding{{System: "http://snomed.info/sct", Code: "F32"}}); len(got) != 0 {
		t.Errorf("a SNOMED code was judged as ICD-10-CM: %v", got)
	}
}

// SNOMED CT concepts match by exact id, and only under the SNOMED CT system.
func TestSNOMEDCategories(t *testing.T) {
	s, err := Load(rego.FS)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		system, code, want string
	}{
		{sct, "74732009", "mental_health"},        // mental disorder
		{sct, "394587001", "mental_health"},       // psychiatry (a specialty)
		{sct, "66214007", "substance_use"},        // substance abuse
		{sct, "86406008", "hiv_sti"},              // HIV infection
		{sct, "386639001", "reproductive_health"}, // termination of pregnancy
		{sct, "394580004", "genetic"},             // clinical genetics (a specialty)
		{sct, " 86406008 ", "hiv_sti"},
		{sct, "394814009", ""}, // general practice: the published examples' specialty
		{sct, "413095006", ""}, // clinical review: appointment-example-request's reason
		{sct, "864060080", ""}, // no prefix matching for SNOMED CT
		{icd, "86406008", ""},  // the id under another system
		{"", "74732009", ""},   // or under none
	} {
		if got := strings.Join(s.Categories([]fhir.Coding{{System: c.system, Code: c.code}}), ","); got != c.want {
			t.Errorf("%s|%s: %q, want %q", c.system, c.code, got, c.want)
		}
	}
}

// Every published EOB's diagnoses, read by fhir.DiagnosisCodes, are classified.
func TestFixtureDiagnosesAreNotSensitive(t *testing.T) {
	s, err := Load(rego.FS)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../fhir/testdata/carin-bb-2.0.0/ExplanationOfBenefit-*.json")
	if len(files) == 0 {
		t.Fatal("no fixtures found")
	}
	read := 0
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		codes := fhir.DiagnosisCodes(raw)
		read += len(codes)
		if got := s.Categories(codes); len(got) != 0 {
			t.Errorf("%s: %v", filepath.Base(f), got)
		}
	}
	if read == 0 {
		t.Fatal("no diagnosis codes read from the fixtures")
	}
}

func TestLoadRejectsBadData(t *testing.T) {
	bad := fstest.MapFS{Path: {Data: []byte(`{"sensitive":{"categories":{"x":{"ranges":[["F99","F01"]],"codes":["F3.2"],"snomed":["F32", "0123456"]}}}}`)}}
	_, err := Load(bad)
	for _, want := range []string{"no source", "range", "code prefix", "without a snomed_source", `"F32" is not a SNOMED CT concept id`, `"0123456" is not`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
}
