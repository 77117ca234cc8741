package notify

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

var fullNotice = EOBNotice{
	PayerName:    "Acme Health Plan",
	ServiceDate:  "2024-03-05",
	ProviderName: "Dr. Ada Lovelace",
	PatientShare: "$45.20",
	PortalURL:    "https://portal.example.org/eob?id=abc&lang=x",
}

func TestRenderEOBEmailLanguages(t *testing.T) {
	tests := []struct {
		lang, subject string
		text          []string // lines the text body must contain
		html          []string
	}{
		{"en", "You have a new Explanation of Benefits",
			[]string{"You have a new Explanation of Benefits from Acme Health Plan.", "Date of service: March 5, 2024",
				"Provider: Dr. Ada Lovelace", "Your share: $45.20", "https://portal.example.org/eob?id=abc&lang=x"},
			[]string{`<html lang="en">`, "Your share</td><td><strong>$45.20</strong>", `href="https://portal.example.org/eob?id=abc&amp;lang=x"`}},
		{"es", "Tiene una nueva Explicación de Beneficios",
			[]string{"Tiene una nueva Explicación de Beneficios de Acme Health Plan.", "Fecha del servicio: 5 de marzo de 2024",
				"Proveedor: Dr. Ada Lovelace", "Su parte: $45.20", "https://portal.example.org/eob?id=abc&lang=x"},
			[]string{`<html lang="es">`, "Su parte</td><td><strong>$45.20</strong>", "Véala en su portal"}},
		{"vi", "Quý vị có một Bản Giải thích Quyền lợi mới",
			[]string{"Quý vị có một Bản Giải thích Quyền lợi mới từ Acme Health Plan.", "Ngày dịch vụ: ngày 5 tháng 3 năm 2024",
				"Nhà cung cấp dịch vụ: Dr. Ada Lovelace", "Phần quý vị phải trả: $45.20", "https://portal.example.org/eob?id=abc&lang=x"},
			[]string{`<html lang="vi">`, "Phần quý vị phải trả</td><td><strong>$45.20</strong>", "Xem trong cổng thông tin hội viên"}},
		{"vi-VN", "Quý vị có một Bản Giải thích Quyền lợi mới", []string{"Phần quý vị phải trả: $45.20"}, []string{`lang="vi"`}},
		{"es-MX", "Tiene una nueva Explicación de Beneficios", []string{"Su parte: $45.20"}, []string{`lang="es"`}},
		{"ES_us", "Tiene una nueva Explicación de Beneficios", []string{"Su parte: $45.20"}, []string{`lang="es"`}},
		{"", "You have a new Explanation of Benefits", []string{"Your share: $45.20"}, []string{`lang="en"`}},
		{"fr", "You have a new Explanation of Benefits", []string{"Your share: $45.20"}, []string{`lang="en"`}},
		{"zh-Hans-CN", "You have a new Explanation of Benefits", []string{"Your share: $45.20"}, []string{`lang="en"`}},
	}
	for _, tt := range tests {
		t.Run(tt.lang, func(t *testing.T) {
			e, err := RenderEOBEmail(fullNotice, tt.lang)
			if err != nil {
				t.Fatal(err)
			}
			if e.Subject != tt.subject {
				t.Errorf("Subject = %q, want %q", e.Subject, tt.subject)
			}
			for _, want := range tt.text {
				if !strings.Contains(e.Text, want) {
					t.Errorf("text body lacks %q:\n%s", want, e.Text)
				}
			}
			for _, want := range tt.html {
				if !strings.Contains(e.HTML, want) {
					t.Errorf("html body lacks %q:\n%s", want, e.HTML)
				}
			}
			if e.To != "" || e.MessageID != "" {
				t.Errorf("To/MessageID set by the renderer: %q %q", e.To, e.MessageID)
			}
		})
	}
}

func TestRenderEOBEmailTextLayout(t *testing.T) {
	for _, tt := range []struct {
		render func(EOBNotice, string, ...Option) (Email, error)
		lead   string
	}{
		{RenderEOBEmail, "You have a new Explanation of Benefits"},
		{RenderEOBReminderEmail, "You have an Explanation of Benefits you have not viewed yet"},
	} {
		e, err := tt.render(fullNotice, "en")
		if err != nil {
			t.Fatal(err)
		}
		want := "Hello,\n\n" +
			tt.lead + " from Acme Health Plan.\n\n" +
			"Date of service: March 5, 2024\n" +
			"Provider: Dr. Ada Lovelace\n" +
			"Your share: $45.20\n\n" +
			"View it in your member portal:\n" +
			"https://portal.example.org/eob?id=abc&lang=x\n\n" +
			"This is not a bill. If you have questions, contact your health plan.\n"
		if e.Text != want {
			t.Errorf("text body:\n%s\nwant:\n%s", e.Text, want)
		}
	}
}

func TestRenderEOBEmailSubjectCarriesNoPHI(t *testing.T) {
	n := EOBNotice{PayerName: "Canary Payer", ProviderName: "Canary Doc", PatientShare: "$99.99",
		ServiceDate: "2024-03-05", PortalURL: "https://portal.example.org/canary"}
	for _, lang := range []string{"en", "es"} {
		e, err := RenderEOBEmail(n, lang)
		if err != nil {
			t.Fatal(err)
		}
		for _, phi := range []string{"Canary", "99.99", "2024", "marzo", "March", "portal.example.org"} {
			if strings.Contains(e.Subject, phi) {
				t.Errorf("%s subject %q contains %q", lang, e.Subject, phi)
			}
		}
	}
}

func TestRenderEOBEmailOmitsMissingFields(t *testing.T) {
	e, err := RenderEOBEmail(EOBNotice{PortalURL: "https://portal.example.org/"}, "en")
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{" from ", "Date of service", "Provider", "Your share"} {
		if strings.Contains(e.Text, absent) {
			t.Errorf("text body has %q for an absent field:\n%s", absent, e.Text)
		}
	}
	for _, absent := range []string{"<table", "Your share"} {
		if strings.Contains(e.HTML, absent) {
			t.Errorf("html body has %q for absent fields:\n%s", absent, e.HTML)
		}
	}
	if !strings.Contains(e.Text, "You have a new Explanation of Benefits.\n\nView it in your member portal:\n") {
		t.Errorf("text body:\n%s", e.Text)
	}
}

func TestRenderEOBEmailEscapesHTML(t *testing.T) {
	n := fullNotice
	n.PayerName = `<script>alert("x")</script> & Co`
	n.ProviderName = "Line one\r\nBcc: evil@example.com"
	e, err := RenderEOBEmail(n, "en")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(e.HTML, "<script>") {
		t.Errorf("html body has an unescaped script tag:\n%s", e.HTML)
	}
	if !strings.Contains(e.HTML, "&lt;script&gt;") {
		t.Errorf("html body lacks the escaped name:\n%s", e.HTML)
	}
	if !strings.Contains(e.Text, "Provider: Line one Bcc: evil@example.com\n") {
		t.Errorf("line break in a name survived into the text body:\n%s", e.Text)
	}
}

func TestRenderEOBEmailRejectsBadPortalURL(t *testing.T) {
	for _, u := range []string{"", "   ", "portal.example.org/eob", "javascript:alert(1)", "ftp://example.org/x",
		"https://user:pass@example.org/x", "https://", "/relative/path", "https://exa mple.org/"} {
		n := fullNotice
		n.PortalURL = u
		_, err := RenderEOBEmail(n, "en")
		if !errors.Is(err, ErrInvalidNotice) {
			t.Errorf("portal URL %q: err = %v, want ErrInvalidNotice", u, err)
			continue
		}
		if u != "" && strings.TrimSpace(u) != "" && strings.Contains(err.Error(), strings.TrimSpace(u)) {
			t.Errorf("error %q quotes the URL", err)
		}
	}
	n := fullNotice
	n.PortalURL = "http://localhost:8080/eob"
	if _, err := RenderEOBEmail(n, "en"); err != nil {
		t.Errorf("http localhost URL refused: %v", err)
	}
}

func TestRenderEOBEmailUnparseableDateShownAsGiven(t *testing.T) {
	n := fullNotice
	n.ServiceDate = "2024-03"
	e, err := RenderEOBEmail(n, "es")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.Text, "Fecha del servicio: 2024-03\n") {
		t.Errorf("text body:\n%s", e.Text)
	}
}

// A contact's large-print format sets every HTML body in large type, the
// portal-only one too; the standard format, and formats this version
// cannot produce, do not.
func TestLargePrint(t *testing.T) {
	const large = "font-size: 22px"
	render := map[string]func(...Option) (Email, error){
		"eob.notice": func(o ...Option) (Email, error) { return RenderEOBEmail(fullNotice, "vi", o...) },
		"eob.reminder": func(o ...Option) (Email, error) {
			return RenderEOBReminderEmail(fullNotice, "es", o...)
		},
		"appointment.reminder": func(o ...Option) (Email, error) {
			return RenderAppointmentEmail("appointment.reminder", fullAppointment, "en", o...)
		},
		"portal-only": func(o ...Option) (Email, error) {
			return RenderPortalOnlyEmail("https://portal.example.org/portal/notices/tok", "vi", o...)
		},
	}
	for name, r := range render {
		for format, want := range map[string]bool{FormatLargePrint: true, "": false, "braille": false} {
			e, err := r(Format(format))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(e.HTML, large); got != want {
				t.Errorf("%s in format %q: large type %v, want %v:\n%s", name, format, got, want, e.HTML)
			}
			if strings.Contains(e.Text, large) {
				t.Errorf("%s: the text body carries HTML style", name)
			}
		}
	}
	e, _ := RenderPortalOnlyEmail("https://portal.example.org/portal/notices/tok", "vi")
	if !strings.Contains(e.HTML, `<html lang="vi">`) || e.Subject != "Quý vị có tin nhắn mới" {
		t.Errorf("portal-only message in vi: %q\n%s", e.Subject, e.HTML)
	}
}

// The portal page shows a stored payload labelled, in the patient's
// language, without the link, and only the fields the payload has.
func TestNoticeFields(t *testing.T) {
	title, fields, err := NoticeFields(NoticeTypeEOB, []byte(`{"payer_name":"Acme Health","service_date":"2024-03-05","patient_share":"$80.00","portal_url":"https://x.example/p"}`), "es-MX")
	if err != nil {
		t.Fatal(err)
	}
	want := []Field{{"Plan de salud", "Acme Health"}, {"Fecha del servicio", longDate("es", "2024-03-05")}, {"Su parte", "$80.00"}}
	if title != "Explicación de Beneficios" || fmt.Sprint(fields) != fmt.Sprint(want) {
		t.Errorf("got %q %v, want %v", title, fields, want)
	}
	_, fields, err = NoticeFields(NoticeTypeAppointment, []byte(`{"appointment_date":"2024-03-05","appointment_time":"14:15","portal_url":"u"}`), "en")
	if err != nil || len(fields) != 2 || fields[1] != (Field{"Time", "2:15 PM"}) {
		t.Errorf("appointment: %v %v", fields, err)
	}
	if _, _, err := NoticeFields("claim", []byte(`{}`), "en"); err == nil {
		t.Error("an unknown notice type was shown")
	}
	if _, _, err := NoticeFields(NoticeTypeEOB, []byte(`[`), "en"); err == nil {
		t.Error("a payload that does not decode was shown")
	}
}

// A language the portal page has no words in is shown in English, dates too.
func TestNoticeFieldsFallBackToEnglish(t *testing.T) {
	title, fields, err := NoticeFields(NoticeTypeEOB, []byte(`{"service_date":"2024-03-05","portal_url":"u"}`), "fr")
	if err != nil || title != "Explanation of Benefits" || len(fields) != 1 || fields[0] != (Field{"Date of service", longDate("en", "2024-03-05")}) {
		t.Errorf("got %q %v %v", title, fields, err)
	}
	// Vietnamese has its words, as its templates do.
	title, fields, err = NoticeFields(NoticeTypeEOB, []byte(`{"service_date":"2024-03-05","portal_url":"u"}`), "vi")
	if err != nil || title != "Bản Giải thích Quyền lợi" || len(fields) != 1 || fields[0] != (Field{"Ngày dịch vụ", "ngày 5 tháng 3 năm 2024"}) {
		t.Errorf("vi: got %q %v %v", title, fields, err)
	}
}
