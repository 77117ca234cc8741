package notify

import (
	"encoding/json"
	"fmt"
)

// Field is one labelled line of a notice as a page shows it.
type Field struct{ Label, Value string }

// displayWords are the portal page's labels per language.
var displayWords = map[string]map[string]string{
	"en": {"eob": "Explanation of Benefits", "appointment": "Your appointment", "payer": "Health plan", "service_date": "Date of service",
		"provider": "Provider", "share": "Your share", "date": "Date", "time": "Time", "location": "Location"},
	"es": {"eob": "Explicación de Beneficios", "appointment": "Su cita", "payer": "Plan de salud", "service_date": "Fecha del servicio",
		"provider": "Proveedor", "share": "Su parte", "date": "Fecha", "time": "Hora", "location": "Lugar"},
	"vi": {"eob": "Bản Giải thích Quyền lợi", "appointment": "Cuộc hẹn của quý vị", "payer": "Chương trình bảo hiểm sức khỏe", "service_date": "Ngày dịch vụ",
		"provider": "Nhà cung cấp dịch vụ", "share": "Phần quý vị phải trả", "date": "Ngày", "time": "Giờ", "location": "Địa điểm"},
}

// Language is the language, of those with templates, that tag picks
// (English when none fits).
func Language(tag string) string { return pickLanguage(tag) }

// NoticeFields are a stored notice payload (EOBNotice or
// AppointmentNotice JSON, by noticeType) as a page shows it in lang (in
// English when the page has no words in it): a title and the non-empty
// fields, labelled, cleaned and written as the emails write them. The
// portal link is not among them.
func NoticeFields(noticeType string, payload []byte, lang string) (string, []Field, error) {
	lang = pickLanguage(lang)
	w, ok := displayWords[lang]
	if !ok {
		lang, w = "en", displayWords["en"]
	}
	var fields []Field
	add := func(label, value string) {
		if value != "" {
			fields = append(fields, Field{Label: w[label], Value: value})
		}
	}
	switch noticeType {
	case NoticeTypeEOB:
		var n EOBNotice
		if err := json.Unmarshal(payload, &n); err != nil {
			return "", nil, fmt.Errorf("%w: the EOB payload does not decode", ErrInvalidNotice)
		}
		add("payer", cleanName(n.PayerName))
		add("service_date", longDate(lang, n.ServiceDate))
		add("provider", cleanName(n.ProviderName))
		add("share", cleanName(n.PatientShare))
	case NoticeTypeAppointment:
		var n AppointmentNotice
		if err := json.Unmarshal(payload, &n); err != nil {
			return "", nil, fmt.Errorf("%w: the appointment payload does not decode", ErrInvalidNotice)
		}
		add("date", longDate(lang, n.AppointmentDate))
		add("time", longTime(lang, n.AppointmentTime))
		add("location", cleanName(n.LocationName))
		add("provider", cleanName(n.ProviderName))
	default:
		return "", nil, fmt.Errorf("%w: notice type %q", ErrInvalidNotice, noticeType)
	}
	return w[noticeType], fields, nil
}
