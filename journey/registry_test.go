package journey

import (
	"testing"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// Validation and rendering read one list of templates: every template the
// registry accepts renders, in every language, and every built-in workflow
// is valid against the registry, so a send step that saves is a send step
// that can be rendered.
func TestRegistryTemplatesAllRender(t *testing.T) {
	reg := Registry(nil)
	if len(reg.Templates) != len(notify.Templates) {
		t.Fatalf("registry templates %v, notify renders %v", reg.Templates, notify.Templates)
	}
	eob := notify.EOBNotice{PayerName: "Acme", PortalURL: "https://portal.example.org/portal/notices/t"}
	appt := notify.AppointmentNotice{AppointmentDate: "2026-05-12", AppointmentTime: "09:30", PortalURL: eob.PortalURL}
	for template := range reg.Templates {
		if !reg.NeedsSubject(template) {
			t.Errorf("%s: every template describes the run's EOB or appointment", template)
		}
		for _, lang := range []string{"en", "es"} {
			var err error
			switch notify.NoticeTypeOf(template) {
			case notify.NoticeTypeEOB:
				if template == "eob.reminder" {
					_, err = notify.RenderEOBReminderEmail(eob, lang)
				} else {
					_, err = notify.RenderEOBEmail(eob, lang)
				}
			case notify.NoticeTypeAppointment:
				_, err = notify.RenderAppointmentEmail(template, appt, lang)
			default:
				t.Fatalf("%s: no notice type", template)
			}
			if err != nil {
				t.Errorf("%s (%s) does not render: %v", template, lang, err)
			}
		}
	}
	used := map[string]bool{}
	for _, d := range workflow.Builtins() {
		if ps := workflow.Validate(d, reg); len(ps) > 0 {
			t.Errorf("built-in %s is invalid against the registry: %v", d.ID, ps)
		}
		for _, s := range d.Steps {
			if s.Type == workflow.StepSend {
				used[s.Template] = true
			}
		}
	}
	for template := range reg.Templates {
		if !used[template] {
			t.Errorf("template %s renders but no built-in workflow sends it", template)
		}
	}
	// A template the registry does not know is refused when a workflow is saved.
	bad := workflow.Builtins()[0]
	for i := range bad.Steps {
		if bad.Steps[i].Type == workflow.StepSend {
			bad.Steps[i].Template = "eob.unknown"
		}
	}
	if len(workflow.Validate(bad, reg)) == 0 {
		t.Error("a send step naming an unknown template was accepted")
	}
}
