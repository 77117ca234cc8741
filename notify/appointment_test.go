package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones below, whatever the machine has installed

	"github.com/tidings-health/tidings/fhir"
)

const (
	siuS12       = "fhir-converter-hl7v2-siu/SIU-S12-01-expected.json"
	apptPortal   = "https://portal.example.org/appointments/view?n=f0e1d2c3b4a5&lang=x"
	apptPortalEn = "https://portal.example.org/appointments/view?n=f0e1d2c3b4a5&amp;lang=x"
)

// siuBundle is the S12 fixture split into its Appointment and the other
// resources, with the Patient the notice must never reveal.
type siuBundle struct {
	appointment json.RawMessage
	related     []json.RawMessage
	patient     struct {
		Name []struct {
			Family string   `json:"family"`
			Given  []string `json:"given"`
		} `json:"name"`
		Telecom []struct {
			Value string `json:"value"`
		} `json:"telecom"`
	}
	// what the Appointment says about the visit's purpose
	purpose struct {
		Comment         string `json:"comment"`
		Description     string `json:"description"`
		AppointmentType struct {
			Coding []struct {
				Code, Display string
			} `json:"coding"`
		} `json:"appointmentType"`
		Participant []struct {
			Type []struct {
				Coding []struct {
					Code, Display string
				} `json:"coding"`
			} `json:"type"`
		} `json:"participant"`
	}
}

func readSIU(t testing.TB) siuBundle {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(readFixture(t, siuS12), &b); err != nil {
		t.Fatal(err)
	}
	var s siuBundle
	for _, e := range b.Entry {
		var head struct{ ResourceType string }
		if err := json.Unmarshal(e.Resource, &head); err != nil {
			t.Fatal(err)
		}
		switch head.ResourceType {
		case "Appointment":
			s.appointment = e.Resource
			if err := json.Unmarshal(e.Resource, &s.purpose); err != nil {
				t.Fatal(err)
			}
			continue
		case "Patient":
			if err := json.Unmarshal(e.Resource, &s.patient); err != nil {
				t.Fatal(err)
			}
		}
		s.related = append(s.related, e.Resource)
	}
	if s.appointment == nil || len(s.patient.Telecom) == 0 {
		t.Fatal("the SIU fixture has no Appointment or no patient telecom")
	}
	return s
}

func (s siuBundle) facts(t testing.TB) fhir.AppointmentFacts {
	t.Helper()
	f, err := fhir.AppointmentFactsFrom(s.appointment, s.related)
	if err != nil {
		t.Fatalf("AppointmentFactsFrom: %v", err)
	}
	return f
}

// secrets lists what no message may show: the patient's names and
// telecom values, and every word the Appointment says about why it
// takes place.
func (s siuBundle) secrets() []string {
	var out []string
	for _, n := range s.patient.Name {
		for _, part := range append([]string{n.Family}, n.Given...) {
			if len(part) >= 3 { // initials would match ordinary words
				out = append(out, part)
			}
		}
	}
	for _, tc := range s.patient.Telecom {
		out = append(out, tc.Value)
	}
	out = append(out, s.purpose.Comment, s.purpose.Description)
	for _, c := range s.purpose.AppointmentType.Coding {
		out = append(out, c.Code, c.Display)
	}
	for _, p := range s.purpose.Participant {
		for _, ty := range p.Type {
			for _, c := range ty.Coding {
				out = append(out, c.Display)
			}
		}
	}
	// And the words of the order and diagnosis in the same Bundle.
	out = append(out, "emergency", "procedure", "Gastroenterolog", "Biopsy", "Colonoscop", "Colitis", "bowel")
	return slices.DeleteFunc(out, func(s string) bool { return strings.TrimSpace(s) == "" })
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestToAppointmentNoticeFromSIU(t *testing.T) {
	siu := readSIU(t)
	facts := siu.facts(t)
	tests := []struct {
		zone       string
		date, time string
	}{
		{"Asia/Kolkata", "2021-09-24", "12:45"},
		{"America/Chicago", "2021-09-24", "02:15"}, // CDT, UTC-5
		{"Pacific/Kiritimati", "2021-09-24", "21:15"},
		{"Pacific/Pago_Pago", "2021-09-23", "20:15"}, // the day before
		{"", "2021-09-24", "12:45"},                  // nil: the +05:30 written in the resource
	}
	for _, tt := range tests {
		t.Run(tt.zone, func(t *testing.T) {
			var loc *time.Location
			if tt.zone != "" {
				loc = mustZone(t, tt.zone)
			}
			got := ToAppointmentNotice(facts, loc, " "+apptPortal+"\n")
			want := AppointmentNotice{
				AppointmentDate: tt.date, AppointmentTime: tt.time,
				LocationName: "055", ProviderName: "Robert C GE", PortalURL: apptPortal,
			}
			if got != want {
				t.Errorf("notice = %#v\nwant %#v", got, want)
			}
			assertFieldsMatchJSON(t, got)
		})
	}
}

func TestToAppointmentNotice(t *testing.T) {
	utc := time.Date(2024, 3, 10, 7, 30, 0, 0, time.UTC) // 03:30 EDT, the night the clocks change
	tests := []struct {
		name  string
		facts fhir.AppointmentFacts
		loc   *time.Location
		want  AppointmentNotice
	}{
		{
			name:  "zone given",
			facts: fhir.AppointmentFacts{Start: "2024-03-10T07:30:00Z", StartTime: utc},
			loc:   mustZone(t, "America/New_York"),
			want:  AppointmentNotice{AppointmentDate: "2024-03-10", AppointmentTime: "03:30", PortalURL: portal},
		},
		{
			name:  "no zone keeps the written offset, fractional seconds too",
			facts: fhir.AppointmentFacts{Start: "2024-03-10T02:30:00.250-05:00", StartTime: utc.Add(250 * time.Millisecond)},
			want:  AppointmentNotice{AppointmentDate: "2024-03-10", AppointmentTime: "02:30", PortalURL: portal},
		},
		{
			name:  "no zone and no written start: the time's own location",
			facts: fhir.AppointmentFacts{StartTime: utc},
			want:  AppointmentNotice{AppointmentDate: "2024-03-10", AppointmentTime: "07:30", PortalURL: portal},
		},
		{
			name:  "written start only",
			facts: fhir.AppointmentFacts{Start: "2024-03-10T07:30:00Z"},
			loc:   mustZone(t, "Asia/Kolkata"),
			want:  AppointmentNotice{AppointmentDate: "2024-03-10", AppointmentTime: "13:00", PortalURL: portal},
		},
		{
			name:  "no start: no date or time",
			facts: fhir.AppointmentFacts{Status: "proposed", LocationName: "South Wing"},
			loc:   mustZone(t, "Asia/Kolkata"),
			want:  AppointmentNotice{LocationName: "South Wing", PortalURL: portal},
		},
		{
			name:  "names are cleaned",
			facts: fhir.AppointmentFacts{LocationName: " Clinic\r\n\tB ", PractitionerName: "Dr\x00 Ann\u2028Lee"},
			want:  AppointmentNotice{LocationName: "Clinic B", ProviderName: "Dr Ann Lee", PortalURL: portal},
		},
		{
			name: "facts outside the notice are not carried over",
			facts: fhir.AppointmentFacts{
				ID: "a1", VersionID: "3", Status: "cancelled", End: "2024-03-10T08:00:00Z", EndTime: utc.Add(30 * time.Minute),
				MinutesDuration: 30, PatientRef: "Patient/p1", PatientID: "p1", CancelledBy: "provider",
				Reasons: []fhir.Coding{{System: "http://hl7.org/fhir/sid/icd-10-cm", Code: "F32.9"}}, UnreadReasons: []string{"Condition/c1"},
			},
			want: AppointmentNotice{PortalURL: portal},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ToAppointmentNotice(tt.facts, tt.loc, portal)
			if got != tt.want {
				t.Errorf("ToAppointmentNotice = %#v\nwant %#v", got, tt.want)
			}
			assertFieldsMatchJSON(t, got)
		})
	}
	long := ToAppointmentNotice(fhir.AppointmentFacts{LocationName: strings.Repeat("ñ", 500)}, nil, portal)
	if got := len([]rune(long.LocationName)); got != maxNameRunes {
		t.Errorf("location name has %d runes, want %d", got, maxNameRunes)
	}
}

var fullAppointment = AppointmentNotice{
	AppointmentDate: "2021-09-24", AppointmentTime: "14:05",
	LocationName: "Clinic B", ProviderName: "Ann Lee", PortalURL: apptPortal,
}

func TestAppointmentNoticeFieldSet(t *testing.T) {
	// The policy checks this exact set; a new field must be a deliberate
	// change here, in the policy and in its tests.
	want := []string{"appointment_date", "appointment_time", "location_name", "provider_name", "portal_url"}
	if got := jsonFieldNames[AppointmentNotice](); !reflect.DeepEqual(got, want) {
		t.Errorf("AppointmentNotice JSON fields = %v, want %v", got, want)
	}
	if f := fullAppointment.Fields(); len(f) != len(want) {
		t.Errorf("Fields() of a full notice = %v", f)
	}
	if f := (AppointmentNotice{}).Fields(); len(f) != 1 || f["portal_url"] != "" {
		t.Errorf("Fields() of an empty notice = %v, want only portal_url", f)
	}
}

// The policy's own allow-list, as compliance ships it, admits every field
// an appointment email can carry.
func TestAppointmentNoticeFieldsWithinAllowlist(t *testing.T) {
	raw, err := os.ReadFile("../rego/data/allowlist.json")
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Allowlist map[string]map[string][]string `json:"allowlist"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	allowed := data.Allowlist[NoticeTypeAppointment]["email"]
	if len(allowed) == 0 {
		t.Fatalf("allow-list has no %s/email entry", NoticeTypeAppointment)
	}
	n := ToAppointmentNotice(readSIU(t).facts(t), mustZone(t, "America/Chicago"), apptPortal)
	fields := n.Fields()
	if len(fields) != 5 {
		t.Fatalf("the SIU notice has %d fields, want all 5: %v", len(fields), fields)
	}
	for k := range fields {
		if !slices.Contains(allowed, k) {
			t.Errorf("field %q is not in the allow-list %v", k, allowed)
		}
	}
}

func TestAppointmentNoticeRedact(t *testing.T) {
	got, err := fullAppointment.Redact("provider_name", "location_name")
	if err != nil {
		t.Fatal(err)
	}
	want := AppointmentNotice{AppointmentDate: "2021-09-24", AppointmentTime: "14:05", PortalURL: apptPortal}
	if got != want {
		t.Fatalf("redacted = %#v", got)
	}
	for _, k := range []string{"provider_name", "location_name"} {
		if _, ok := got.Fields()[k]; ok {
			t.Errorf("redacted field %q is still in Fields()", k)
		}
	}
	e, err := RenderAppointmentEmail("appointment.reminder", got, "en")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(e.Text+e.HTML, "Clinic B") || strings.Contains(e.Text+e.HTML, "Ann Lee") {
		t.Errorf("a redacted field was rendered:\n%s", e.Text)
	}
	all, err := fullAppointment.Redact("appointment_date", "appointment_time", "location_name", "provider_name")
	if err != nil || all != (AppointmentNotice{PortalURL: apptPortal}) {
		t.Errorf("Redact(all) = %#v, %v", all, err)
	}
	for _, bad := range []string{"portal_url", "reason", "payer_name", ""} {
		if _, err := fullAppointment.Redact("location_name", bad); !errors.Is(err, ErrUnknownField) {
			t.Errorf("Redact(%q) = %v, want ErrUnknownField", bad, err)
		}
	}
}

func TestAppointmentNoticeLogsRedacted(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	n := fullAppointment
	log.Info("notice", "notice", n, "ptr", &n)
	out := buf.String()
	for _, leak := range []string{"Clinic B", "Ann Lee", "2021-09-24", "14:05", "portal.example.org"} {
		if strings.Contains(out, leak) {
			t.Errorf("log output contains %q:\n%s", leak, out)
		}
	}
	if strings.Count(out, "[REDACTED]") != 2 {
		t.Errorf("want 2 redacted values in:\n%s", out)
	}
}

func TestNoticeTypeOf(t *testing.T) {
	for tmpl, want := range map[string]string{
		"eob.notice": "eob", "eob.reminder": "eob",
		"appointment.confirmation": "appointment", "appointment.reminder": "appointment",
		"appointment.cancelled": "appointment", "appointment.survey": "appointment", "appointment.noshow": "appointment",
		"": "", "eob": "", "appointment": "", "appointment.rescheduled": "", "eob.parts": "", "layout": "",
		"Appointment.reminder": "", " appointment.reminder": "",
	} {
		if got := NoticeTypeOf(tmpl); got != want {
			t.Errorf("NoticeTypeOf(%q) = %q, want %q", tmpl, got, want)
		}
	}
	for _, tmpl := range Templates {
		if NoticeTypeOf(tmpl) == "" {
			t.Errorf("template %q has no notice type", tmpl)
		}
	}
}

// renderAny renders any template the way the worker will: by its notice
// type.
func renderAny(t *testing.T, tmpl string, eob EOBNotice, appt AppointmentNotice, lang string) Email {
	t.Helper()
	var (
		e   Email
		err error
	)
	switch {
	case tmpl == "eob.notice":
		e, err = RenderEOBEmail(eob, lang)
	case tmpl == "eob.reminder":
		e, err = RenderEOBReminderEmail(eob, lang)
	case NoticeTypeOf(tmpl) == NoticeTypeAppointment:
		e, err = RenderAppointmentEmail(tmpl, appt, lang)
	default:
		t.Fatalf("no renderer for %q", tmpl)
	}
	if err != nil {
		t.Fatalf("render %s %s: %v", tmpl, lang, err)
	}
	return e
}

var subjects = map[string][3]string{ // en, es, vi
	"eob.notice":               {"You have a new Explanation of Benefits", "Tiene una nueva Explicación de Beneficios", "Quý vị có một Bản Giải thích Quyền lợi mới"},
	"eob.reminder":             {"Reminder: you have an Explanation of Benefits to view", "Recordatorio: tiene una Explicación de Beneficios por ver", "Nhắc nhở: quý vị có một Bản Giải thích Quyền lợi chưa xem"},
	"appointment.confirmation": {"Your appointment is confirmed", "Su cita está confirmada", "Cuộc hẹn của quý vị đã được xác nhận"},
	"appointment.reminder":     {"Reminder: upcoming appointment", "Recordatorio: cita próxima", "Nhắc nhở: cuộc hẹn sắp tới"},
	"appointment.cancelled":    {"Your appointment was cancelled", "Su cita fue cancelada", "Cuộc hẹn của quý vị đã bị hủy"},
	"appointment.survey":       {"How was your visit?", "¿Cómo fue su visita?", "Lần khám của quý vị thế nào?"},
	"appointment.noshow":       {"We missed you", "Le extrañamos", "Chúng tôi đã không gặp được quý vị"},
}

// Every template, in every language, from the published SIU fixture: the
// link is there, the subject is the fixed one and carries no field, and
// nothing about the patient or the visit's purpose gets in.
func TestRenderEveryTemplateFromSIU(t *testing.T) {
	if len(subjects) != len(Templates) {
		t.Fatalf("subjects table has %d templates, Templates %d", len(subjects), len(Templates))
	}
	siu := readSIU(t)
	appt := ToAppointmentNotice(siu.facts(t), mustZone(t, "Asia/Kolkata"), apptPortal)
	eob := EOBNotice{PayerName: "Acme Health Plan", ServiceDate: "2021-09-24", ProviderName: "Robert C GE",
		PatientShare: "$45.20", PortalURL: apptPortal}
	fieldValues := []string{"2021", "09-24", "September", "septiembre", "tháng 9", "12:45", "PM", "055", "Robert", "GE ", "Acme", "45.20", "portal.example.org", "f0e1d2c3b4a5"}
	for _, tmpl := range Templates {
		for i, lang := range []string{"en", "es", "vi"} {
			t.Run(tmpl+"/"+lang, func(t *testing.T) {
				e := renderAny(t, tmpl, eob, appt, lang)
				if want := subjects[tmpl][i]; e.Subject != want {
					t.Errorf("Subject = %q, want %q", e.Subject, want)
				}
				for _, v := range fieldValues {
					if strings.Contains(e.Subject, v) {
						t.Errorf("Subject %q contains the field value %q", e.Subject, v)
					}
				}
				if !strings.Contains(e.Text, "\n"+apptPortal+"\n") {
					t.Errorf("text body lacks the portal link on a line of its own:\n%s", e.Text)
				}
				if !strings.Contains(e.HTML, `<a href="`+apptPortalEn+`">`) || strings.Count(e.HTML, "<a ") != 1 {
					t.Errorf("html body lacks the one portal link:\n%s", e.HTML)
				}
				if !strings.Contains(e.HTML, `<html lang="`+lang+`">`) || !strings.Contains(e.HTML, "<title>"+e.Subject+"</title>") {
					t.Errorf("html head is not %s with the subject as title:\n%s", lang, e.HTML)
				}
				for _, secret := range siu.secrets() {
					if strings.Contains(strings.ToLower(e.Text+e.HTML), strings.ToLower(secret)) {
						t.Errorf("message contains %q from the fixture", secret)
					}
				}
				if e.To != "" || e.MessageID != "" {
					t.Errorf("To/MessageID set by the renderer: %q %q", e.To, e.MessageID)
				}
			})
		}
	}
}

func TestRenderAppointmentEmailContent(t *testing.T) {
	date := map[string]string{"en": "Date: September 24, 2021\n", "es": "Fecha: 24 de septiembre de 2021\n", "vi": "Ngày: ngày 24 tháng 9 năm 2021\n"}
	clock := map[string]string{"en": "Time: 2:05 PM\n", "es": "Hora: 14:05\n", "vi": "Giờ: 14:05\n"}
	location := map[string]string{"en": "Location: Clinic B\n", "es": "Lugar: Clinic B\n", "vi": "Địa điểm: Clinic B\n"}
	provider := map[string]string{"en": "Provider: Ann Lee\n", "es": "Proveedor: Ann Lee\n", "vi": "Nhà cung cấp dịch vụ: Ann Lee\n"}
	tests := []struct {
		tmpl           string
		lead           map[string]string
		shows, absent  []map[string]string
		htmlLink       map[string]string
		htmlRowsWanted int
	}{
		{"appointment.confirmation", map[string]string{"en": "Your appointment is confirmed.", "es": "Su cita está confirmada.", "vi": "Cuộc hẹn của quý vị đã được xác nhận."},
			[]map[string]string{date, clock, location, provider}, nil,
			map[string]string{"en": "View or change your appointment", "es": "Vea o cambie su cita", "vi": "Xem hoặc thay đổi cuộc hẹn"}, 4},
		{"appointment.reminder", map[string]string{"en": "Reminder: you have an upcoming appointment.", "es": "Recordatorio: tiene una cita próxima.", "vi": "Nhắc nhở: quý vị có một cuộc hẹn sắp tới."},
			[]map[string]string{date, clock, location, provider}, nil,
			map[string]string{"en": "View or change your appointment", "es": "Vea o cambie su cita", "vi": "Xem hoặc thay đổi cuộc hẹn"}, 4},
		{"appointment.cancelled", map[string]string{"en": "Your appointment was cancelled.", "es": "Su cita fue cancelada.", "vi": "Cuộc hẹn của quý vị đã bị hủy."},
			[]map[string]string{date, clock}, []map[string]string{location, provider},
			map[string]string{"en": "Book a new appointment", "es": "Programe una nueva cita", "vi": "Đặt cuộc hẹn mới"}, 2},
		{"appointment.survey", map[string]string{"en": "How was your visit?", "es": "¿Cómo fue su visita?", "vi": "Lần khám của quý vị thế nào?"},
			nil, []map[string]string{date, clock, location, provider},
			map[string]string{"en": "Take the survey", "es": "Responda la encuesta", "vi": "Trả lời khảo sát"}, 0},
		{"appointment.noshow", map[string]string{"en": "We missed you", "es": "Le extrañamos", "vi": "Chúng tôi đã không gặp được quý vị"},
			nil, []map[string]string{date, clock, location, provider},
			map[string]string{"en": "Book a new appointment", "es": "Programe una nueva cita", "vi": "Đặt cuộc hẹn mới"}, 0},
	}
	for _, tt := range tests {
		for _, lang := range []string{"en", "es", "vi"} {
			t.Run(tt.tmpl+"/"+lang, func(t *testing.T) {
				e, err := RenderAppointmentEmail(tt.tmpl, fullAppointment, lang)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(e.Text, "\n\n"+tt.lead[lang]) {
					t.Errorf("text body lacks %q:\n%s", tt.lead[lang], e.Text)
				}
				for _, want := range tt.shows {
					if !strings.Contains(e.Text, want[lang]) {
						t.Errorf("text body lacks %q:\n%s", want[lang], e.Text)
					}
				}
				for _, unwanted := range tt.absent {
					value := unwanted[lang][strings.Index(unwanted[lang], ": ")+2 : len(unwanted[lang])-1]
					if strings.Contains(e.Text, unwanted[lang]) || strings.Contains(e.HTML, value) {
						t.Errorf("message shows %q:\n%s", value, e.Text)
					}
				}
				if got := strings.Count(e.HTML, "<tr>"); got != tt.htmlRowsWanted {
					t.Errorf("html body has %d detail rows, want %d:\n%s", got, tt.htmlRowsWanted, e.HTML)
				}
				if !strings.Contains(e.HTML, `">`+tt.htmlLink[lang]) {
					t.Errorf("html link text is not %q:\n%s", tt.htmlLink[lang], e.HTML)
				}
			})
		}
	}
}

func TestRenderAppointmentEmailTextLayout(t *testing.T) {
	e, err := RenderAppointmentEmail("appointment.confirmation", fullAppointment, "en-US")
	if err != nil {
		t.Fatal(err)
	}
	want := "Hello,\n\n" +
		"Your appointment is confirmed.\n\n" +
		"Date: September 24, 2021\n" +
		"Time: 2:05 PM\n" +
		"Location: Clinic B\n" +
		"Provider: Ann Lee\n\n" +
		"To view or change it, visit your patient portal:\n" +
		apptPortal + "\n\n" +
		"Please do not reply to this email.\n"
	if e.Text != want {
		t.Errorf("text body:\n%s\nwant:\n%s", e.Text, want)
	}
}

func TestRenderAppointmentEmailOmitsMissingFields(t *testing.T) {
	for _, tmpl := range []string{"appointment.confirmation", "appointment.reminder", "appointment.cancelled"} {
		e, err := RenderAppointmentEmail(tmpl, AppointmentNotice{PortalURL: apptPortal}, "en")
		if err != nil {
			t.Fatal(err)
		}
		for _, absent := range []string{"Date", "Time", "Location", "Provider", "<table"} {
			if strings.Contains(e.Text+e.HTML, absent) {
				t.Errorf("%s has %q for an absent field:\n%s\n%s", tmpl, absent, e.Text, e.HTML)
			}
		}
		if strings.Contains(e.Text, "\n\n\n") {
			t.Errorf("%s text body has an empty block:\n%s", tmpl, e.Text)
		}
	}
	// Only a time: its row and nothing else.
	e, err := RenderAppointmentEmail("appointment.reminder", AppointmentNotice{AppointmentTime: "09:00", PortalURL: apptPortal}, "es")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.Text, "próxima.\n\nHora: 09:00\n\nPara verla") || strings.Count(e.HTML, "<tr>") != 1 {
		t.Errorf("text body:\n%s\nhtml:\n%s", e.Text, e.HTML)
	}
}

func TestRenderAppointmentEmailShowsMalformedDateAndTimeAsGiven(t *testing.T) {
	n := fullAppointment
	n.AppointmentDate, n.AppointmentTime = "2021-09", "25:61\nBcc: x@example.com"
	e, err := RenderAppointmentEmail("appointment.confirmation", n, "en")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.Text, "Date: 2021-09\nTime: 25:61 Bcc: x@example.com\n") {
		t.Errorf("text body:\n%s", e.Text)
	}
}

func TestRenderAppointmentEmailEscapesHTML(t *testing.T) {
	n := fullAppointment
	n.LocationName = `<script>alert("x")</script> & Annex`
	n.ProviderName = `<img src=x onerror=alert(1)>`
	for _, tmpl := range []string{"appointment.confirmation", "appointment.reminder"} {
		e, err := RenderAppointmentEmail(tmpl, n, "en")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(e.HTML, "<script") || strings.Contains(e.HTML, "<img") {
			t.Errorf("%s html body has unescaped markup:\n%s", tmpl, e.HTML)
		}
		if !strings.Contains(e.HTML, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Annex") {
			t.Errorf("%s html body lacks the escaped location:\n%s", tmpl, e.HTML)
		}
		// Plain text is not HTML: the name stays as written.
		if !strings.Contains(e.Text, `Location: <script>alert("x")</script> & Annex`+"\n") {
			t.Errorf("%s text body:\n%s", tmpl, e.Text)
		}
	}
}

func TestRenderAppointmentEmailUnknownTemplate(t *testing.T) {
	for _, tmpl := range []string{"", "appointment", "appointment.rescheduled", "eob.notice", "eob.reminder", "Appointment.Reminder", "appointment.parts", "layout"} {
		_, err := RenderAppointmentEmail(tmpl, fullAppointment, "en")
		if !errors.Is(err, ErrInvalidNotice) {
			t.Errorf("template %q: err = %v, want ErrInvalidNotice", tmpl, err)
			continue
		}
		if !strings.Contains(err.Error(), `"`+tmpl+`"`) {
			t.Errorf("error %q does not name the template %q", err, tmpl)
		}
		if strings.Contains(err.Error(), "Clinic B") || strings.Contains(err.Error(), "portal.example.org") {
			t.Errorf("error %q carries notice content", err)
		}
	}
}

func TestRenderAppointmentEmailRejectsBadPortalURL(t *testing.T) {
	for _, u := range []string{"", "  ", "javascript:alert(1)", "https://user:pw@example.org/x", "/relative"} {
		n := fullAppointment
		n.PortalURL = u
		_, err := RenderAppointmentEmail("appointment.survey", n, "en")
		if !errors.Is(err, ErrInvalidNotice) {
			t.Errorf("portal URL %q: err = %v, want ErrInvalidNotice", u, err)
		}
		if strings.TrimSpace(u) != "" && strings.Contains(err.Error(), u) {
			t.Errorf("error %q quotes the URL", err)
		}
	}
}

// The reminder's full layout is in TestRenderEOBEmailTextLayout.
func TestRenderEOBReminderEmail(t *testing.T) {
	es, err := RenderEOBReminderEmail(EOBNotice{PortalURL: "https://portal.example.org/"}, "es-MX")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(es.Text, "Tiene una Explicación de Beneficios que aún no ha visto.\n\nVéala") || strings.Contains(es.HTML, "<table") {
		t.Errorf("es reminder without fields:\n%s\n%s", es.Text, es.HTML)
	}
	bad := fullNotice
	bad.PortalURL = "ftp://example.org/"
	if _, err := RenderEOBReminderEmail(bad, "en"); !errors.Is(err, ErrInvalidNotice) {
		t.Errorf("bad portal URL: %v", err)
	}
}

// Every file under templates/ is part of some template, and every
// template loads.
func TestTemplateFilesAllUsed(t *testing.T) {
	sets, err := loadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != len(Templates)*len(languages) {
		t.Errorf("%d template sets, want %d", len(sets), len(Templates)*len(languages))
	}
	used := map[string]bool{}
	for _, set := range sets {
		for _, tm := range set.text.Templates() {
			used[tm.Name()] = true
		}
		for _, tm := range set.html.Templates() {
			used[tm.Name()] = true
		}
	}
	files, err := templateFS.ReadDir("templates")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !used[f.Name()] {
			t.Errorf("templates/%s is not used by any template", f.Name())
		}
	}
}
