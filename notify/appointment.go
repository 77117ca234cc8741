package notify

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fhir"
)

// NoticeTypeAppointment names the appointment notice for policy input and
// templates.
const NoticeTypeAppointment = "appointment"

// clockTime is the layout of AppointmentNotice.AppointmentTime.
const clockTime = "15:04"

// AppointmentNotice is the minimum-necessary payload of an appointment
// notice, built field by field. Nothing else may be added: the policy
// checks the field set. What the visit is for, its status, who cancelled
// and every id stay out.
type AppointmentNotice struct {
	AppointmentDate string `json:"appointment_date,omitempty"` // YYYY-MM-DD, local
	AppointmentTime string `json:"appointment_time,omitempty"` // HH:MM, 24 h, local
	LocationName    string `json:"location_name,omitempty"`
	ProviderName    string `json:"provider_name,omitempty"`
	PortalURL       string `json:"portal_url"`
}

// LogValue keeps the notice out of logs: it is PHI.
func (AppointmentNotice) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// ToAppointmentNotice builds the notice from Appointment facts, field by
// field. The start's date and time are shown in loc (the patient's time
// zone); with a nil loc, in the offset written in f.Start, and failing
// that in f.StartTime's own location. With no start both stay empty.
// Location and provider names are cleaned as in ToEOBNotice. Status,
// cancellation, reason, patient and resource ids are deliberately not
// carried over.
func ToAppointmentNotice(f fhir.AppointmentFacts, loc *time.Location, portalURL string) AppointmentNotice {
	n := AppointmentNotice{
		LocationName: cleanName(f.LocationName),
		ProviderName: cleanName(f.PractitionerName),
		PortalURL:    strings.ToValidUTF8(strings.TrimSpace(portalURL), "\uFFFD"),
	}
	if start, ok := localStart(f, loc); ok {
		n.AppointmentDate = start.Format(time.DateOnly)
		n.AppointmentTime = start.Format(clockTime)
	}
	return n
}

// localStart is the appointment's start as the patient should read it.
func localStart(f fhir.AppointmentFacts, loc *time.Location) (time.Time, bool) {
	start := f.StartTime
	written, err := time.Parse(time.RFC3339, strings.TrimSpace(f.Start))
	if err == nil && (start.IsZero() || loc == nil) {
		start = written
	}
	if start.IsZero() {
		return time.Time{}, false
	}
	if loc != nil {
		start = start.In(loc)
	}
	return start, true
}

// Fields returns the notice as the policy sees it, as EOBNotice.Fields
// does: every non-empty field plus portal_url, always.
func (n AppointmentNotice) Fields() map[string]any { return fieldsOf(n.PortalURL, n.optional()) }

// optional lists the fields a policy may redact, by JSON name.
func (n *AppointmentNotice) optional() []noticeField {
	return []noticeField{
		{"appointment_date", &n.AppointmentDate},
		{"appointment_time", &n.AppointmentTime},
		{"location_name", &n.LocationName},
		{"provider_name", &n.ProviderName},
	}
}

// Redact returns the notice without the named fields, as a policy asks. The
// portal link cannot be redacted: a notice without it has no purpose.
func (n AppointmentNotice) Redact(fields ...string) (AppointmentNotice, error) {
	if err := redact(n.optional(), fields); err != nil {
		return AppointmentNotice{}, err
	}
	return n, nil
}

// RenderAppointmentEmail renders one appointment template
// ("appointment.confirmation", "appointment.reminder",
// "appointment.cancelled", "appointment.survey", "appointment.noshow"):
// the subject, fixed per template and language and carrying no PHI, and
// the plain-text and HTML bodies. Languages and the portal URL are handled
// as in RenderEOBEmail. A name that is not an appointment template gives
// an error wrapping ErrInvalidNotice.
func RenderAppointmentEmail(template string, n AppointmentNotice, lang string, opts ...Option) (Email, error) {
	if NoticeTypeOf(template) != NoticeTypeAppointment {
		return Email{}, fmt.Errorf("%w: %q is not an appointment template", ErrInvalidNotice, template)
	}
	return renderEmail(template, lang, n.PortalURL, applyOptions(opts), func(v *view, lang string) {
		v.Date = longDate(lang, n.AppointmentDate)
		v.Time = longTime(lang, n.AppointmentTime)
		v.LocationName = cleanName(n.LocationName)
		v.ProviderName = cleanName(n.ProviderName)
	})
}

// longTime writes an HH:MM time the way the language does ("2:15 PM",
// "14:15"); anything else is shown as given, cleaned.
func longTime(lang, hhmm string) string {
	t, err := time.Parse(clockTime, strings.TrimSpace(hhmm))
	if err != nil {
		return cleanName(hhmm)
	}
	if lang == "en" {
		return t.Format("3:04 PM")
	}
	return t.Format(clockTime)
}
