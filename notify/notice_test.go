package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/fhir"
)

const portal = "https://portal.example.org/eob"

func TestToEOBNotice(t *testing.T) {
	tests := []struct {
		name  string
		facts fhir.EOBFacts
		want  EOBNotice
	}{
		{
			name: "all fields",
			facts: fhir.EOBFacts{
				PayerName: "Acme Health Plan", ProviderName: "Dr. Ada Lovelace",
				ServiceDate: "2024-03-05", PatientShare: &fhir.Money{Value: "45.2", Currency: "USD"},
			},
			want: EOBNotice{
				PayerName: "Acme Health Plan", ProviderName: "Dr. Ada Lovelace",
				ServiceDate: "2024-03-05", PatientShare: "$45.20", PortalURL: portal,
			},
		},
		{
			name:  "nil share stays empty",
			facts: fhir.EOBFacts{PayerName: "Acme", ServiceDate: "2024-03-05"},
			want:  EOBNotice{PayerName: "Acme", ServiceDate: "2024-03-05", PortalURL: portal},
		},
		{
			name:  "thousands and other currency",
			facts: fhir.EOBFacts{PatientShare: &fhir.Money{Value: "1234.5", Currency: "EUR"}},
			want:  EOBNotice{PatientShare: "1234.50 EUR", PortalURL: portal},
		},
		{
			name:  "malformed share is unknown, not wrong",
			facts: fhir.EOBFacts{PatientShare: &fhir.Money{Value: "12,50", Currency: "USD"}},
			want:  EOBNotice{PortalURL: portal},
		},
		{
			name:  "dateTime keeps its date, partial dates are dropped",
			facts: fhir.EOBFacts{ServiceDate: "2024-03-05T10:00:00-05:00", PayerName: "  Acme \n\t Plan\r\n"},
			want:  EOBNotice{ServiceDate: "2024-03-05", PayerName: "Acme Plan", PortalURL: portal},
		},
		{
			name:  "year-month only",
			facts: fhir.EOBFacts{ServiceDate: "2024-03"},
			want:  EOBNotice{PortalURL: portal},
		},
		{
			name:  "impossible date",
			facts: fhir.EOBFacts{ServiceDate: "2024-02-30"},
			want:  EOBNotice{PortalURL: portal},
		},
		{
			name: "facts outside the notice are not carried over",
			facts: fhir.EOBFacts{
				ID: "EB3500", VersionID: "7", PatientRef: "Patient/pat1", PatientID: "pat1",
				Use: "claim", Outcome: "complete", IsPreauthorization: true,
			},
			want: EOBNotice{PortalURL: portal},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ToEOBNotice(tt.facts, "  "+portal+" ")
			if got != tt.want {
				t.Errorf("ToEOBNotice = %#v\nwant %#v", got, tt.want)
			}
			assertFieldsMatchJSON(t, got)
		})
	}
}

func TestToEOBNoticeCutsLongNames(t *testing.T) {
	n := ToEOBNotice(fhir.EOBFacts{PayerName: strings.Repeat("ñ", 500)}, portal)
	if got := len([]rune(n.PayerName)); got != maxNameRunes {
		t.Errorf("payer name has %d runes, want %d", got, maxNameRunes)
	}
}

// policyNotice is what every notice payload offers the policy.
type policyNotice interface{ Fields() map[string]any }

// jsonFieldNames lists a notice type's JSON field names in order.
func jsonFieldNames[N policyNotice]() []string {
	var names []string
	typ := reflect.TypeFor[N]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}

// assertFieldsMatchJSON checks that Fields is exactly the JSON object, and
// that both use only the struct's own fields.
func assertFieldsMatchJSON[N policyNotice](t *testing.T, n N) {
	t.Helper()
	raw, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON map[string]any
	if err := json.Unmarshal(raw, &fromJSON); err != nil {
		t.Fatal(err)
	}
	fields := n.Fields()
	if !reflect.DeepEqual(fields, fromJSON) {
		t.Errorf("Fields() = %v\nJSON     = %v", fields, fromJSON)
	}
	allowed := map[string]bool{}
	for _, name := range jsonFieldNames[N]() {
		allowed[name] = true
	}
	for k, v := range fields {
		if !allowed[k] {
			t.Errorf("field %q is not a %T field", k, n)
		}
		if v == "" && k != "portal_url" {
			t.Errorf("empty field %q in Fields()", k)
		}
	}
}

func TestEOBNoticeFieldSet(t *testing.T) {
	// The policy checks this exact set; a new field must be a deliberate
	// change here, in the policy and in its tests.
	want := []string{"payer_name", "service_date", "provider_name", "patient_share", "portal_url"}
	if got := jsonFieldNames[EOBNotice](); !reflect.DeepEqual(got, want) {
		t.Errorf("EOBNotice JSON fields = %v, want %v", got, want)
	}
	full := EOBNotice{PayerName: "a", ServiceDate: "2024-01-02", ProviderName: "b", PatientShare: "$1.00", PortalURL: portal}
	if len(full.Fields()) != len(want) {
		t.Errorf("Fields() of a full notice has %d keys, want %d", len(full.Fields()), len(want))
	}
	if f := (EOBNotice{}).Fields(); len(f) != 1 || f["portal_url"] != "" {
		t.Errorf("Fields() of an empty notice = %v, want only portal_url", f)
	}
}

func TestPHITypesLogRedacted(t *testing.T) {
	const canary = "Canary Q7Z Plan"
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	n := EOBNotice{PayerName: canary, PatientShare: "$45.20", PortalURL: portal}
	e := Email{To: "canary.q7z@example.net", Subject: "s", Text: canary, HTML: canary}
	log.Info("notice", "notice", n, "email", e)
	log.Info("pointers", "notice", &n, "email", &e)
	out := buf.String()
	for _, leak := range []string{canary, "canary.q7z", "45.20"} {
		if strings.Contains(out, leak) {
			t.Errorf("log output contains %q:\n%s", leak, out)
		}
	}
	if strings.Count(out, "[REDACTED]") != 4 {
		t.Errorf("want 4 redacted values in:\n%s", out)
	}
}

// The whole path from a published EOB to the email a patient reads.
func TestFixtureEOBToEmail(t *testing.T) {
	var related []json.RawMessage
	for _, name := range []string{"Organization-Payer1.json", "Organization-ProviderOrganization1.json", "Practitioner-Practitioner1.json"} {
		related = append(related, readFixture(t, filepath.Join("carin-bb-2.0.0", name)))
	}
	tests := []struct {
		file string
		want EOBNotice
	}{
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json", EOBNotice{
			PayerName: "XXX Health Plan", ServiceDate: "2019-10-30", ProviderName: "XXX Health Plan",
			PatientShare: "$80.00", PortalURL: portal}},
		{"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json", EOBNotice{
			PayerName: "Organization Payer 1", ServiceDate: "2019-01-01", ProviderName: "Orange Medical Group",
			PatientShare: "$0.00", PortalURL: portal}},
		{"carin-bb-2.0.0-nonfinancial/ExplanationOfBenefit-EOBProfessionalNonFinancial1.json", EOBNotice{
			PayerName: "XXX Health Plan", ServiceDate: "2019-01-01", ProviderName: "XXX Health Plan",
			PortalURL: portal}},
		{"hl7-fhir-r4-spec/explanationofbenefit-example.json", EOBNotice{
			ServiceDate: "2014-08-16", PortalURL: portal}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			facts, err := fhir.EOBFactsFrom(readFixture(t, tt.file), related)
			if err != nil {
				t.Fatalf("EOBFactsFrom: %v", err)
			}
			n := ToEOBNotice(facts, portal)
			if n != tt.want {
				t.Errorf("notice = %#v\nwant %#v", n, tt.want)
			}
			e, err := RenderEOBEmail(n, "en")
			if err != nil {
				t.Fatalf("RenderEOBEmail: %v", err)
			}
			if n.PatientShare != "" && !strings.Contains(e.Text, "Your share: "+n.PatientShare) {
				t.Errorf("text body lacks the share:\n%s", e.Text)
			}
			if n.PatientShare == "" && strings.Contains(e.Text, "Your share") {
				t.Errorf("text body has a share line without a share:\n%s", e.Text)
			}
		})
	}
}

func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRedact(t *testing.T) {
	n := EOBNotice{PayerName: "Plan", ServiceDate: "2024-01-02", ProviderName: "Clinic", PatientShare: "$1.00", PortalURL: "https://p.example.org/x"}
	got, err := n.Redact("provider_name", "patient_share")
	if err != nil {
		t.Fatal(err)
	}
	if got.ProviderName != "" || got.PatientShare != "" || got.PayerName != "Plan" || got.PortalURL == "" {
		t.Fatalf("redacted = %+v", got)
	}
	if _, ok := got.Fields()["provider_name"]; ok {
		t.Error("a redacted field is still in Fields()")
	}
	for _, bad := range []string{"portal_url", "diagnosis", ""} {
		if _, err := n.Redact(bad); !errors.Is(err, ErrUnknownField) {
			t.Errorf("Redact(%q) = %v, want ErrUnknownField", bad, err)
		}
	}
}
