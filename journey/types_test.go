package journey

import (
	"slices"
	"testing"

	"github.com/tidings-health/tidings/workflow"
)

func TestTriggerKey(t *testing.T) {
	for _, tc := range []struct {
		trigger workflow.Trigger
		want    string
	}{
		{workflow.Trigger{Event: "appointment.booked"}, "event:appointment.booked"},
		{workflow.Trigger{APIEvent: "portal.login"}, "api:portal.login"},
		{workflow.Trigger{Segment: "diabetes"}, "segment:diabetes"},
		{workflow.Trigger{}, ""},
	} {
		if got := TriggerKey(tc.trigger); got != tc.want {
			t.Errorf("TriggerKey(%+v) = %q, want %q", tc.trigger, got, tc.want)
		}
	}
}

func TestPatientRefs(t *testing.T) {
	for _, tc := range []struct {
		id, ref string
		want    []string
	}{
		{"p1", "Patient/p1", []string{"Patient/p1"}},
		{"p1", "https://ehr.example/fhir/Patient/p1", []string{"Patient/p1", "https://ehr.example/fhir/Patient/p1"}},
		{"", "urn:uuid:1234", []string{"urn:uuid:1234"}},
		{"", "", nil},
	} {
		if got := PatientRefs(tc.id, tc.ref); !slices.Equal(got, tc.want) {
			t.Errorf("PatientRefs(%q, %q) = %v, want %v", tc.id, tc.ref, got, tc.want)
		}
	}
}
