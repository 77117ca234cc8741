package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"
)

// ErrInvalidNotice reports a notice that cannot be rendered; the message
// names the field, never its value.
var ErrInvalidNotice = errors.New("notify: invalid notice")

// Email is a rendered message ready for a channel.
type Email struct {
	To        string // recipient address, set by the caller
	Subject   string
	Text      string // plain-text body
	HTML      string // HTML body; optional
	MessageID string // optional; sent as the Message-ID header when set
}

// LogValue keeps the message out of logs: recipient and bodies are PHI.
func (Email) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// DefaultLanguage is used for any language without templates.
const DefaultLanguage = "en"

// languages with EOB templates in templates/.
var languages = []string{"en", "es"}

//go:embed templates/*.txt templates/*.html
var templateFS embed.FS

type templateSet struct {
	text *texttemplate.Template // defines "subject" and "body"
	html *htmltemplate.Template
}

var loadTemplates = sync.OnceValues(func() (map[string]templateSet, error) {
	sets := make(map[string]templateSet, len(languages))
	for _, lang := range languages {
		text, err := texttemplate.ParseFS(templateFS, "templates/eob."+lang+".txt")
		if err != nil {
			return nil, fmt.Errorf("notify: parse %s text template: %w", lang, err)
		}
		html, err := htmltemplate.ParseFS(templateFS, "templates/eob."+lang+".html")
		if err != nil {
			return nil, fmt.Errorf("notify: parse %s html template: %w", lang, err)
		}
		sets[lang] = templateSet{text: text, html: html}
	}
	return sets, nil
})

// eobView is what the EOB templates see.
type eobView struct {
	Subject      string
	PayerName    string
	ServiceDate  string // long form in the message's language
	ProviderName string
	PatientShare string
	PortalURL    string
}

// RenderEOBEmail renders the subject and the plain-text and HTML bodies of
// an EOB notice. The subject is fixed per language and carries no PHI.
// lang is a language tag ("es", "es-MX"); languages without templates fall
// back to English. The portal URL must be an absolute http(s) URL without
// credentials. The result's To is left for the caller to set.
func RenderEOBEmail(n EOBNotice, lang string) (Email, error) {
	portal, err := checkPortalURL(n.PortalURL)
	if err != nil {
		return Email{}, err
	}
	sets, err := loadTemplates()
	if err != nil {
		return Email{}, err
	}
	lang = pickLanguage(lang)
	set := sets[lang]

	var subject bytes.Buffer
	// The subject template gets no data, so no notice field can reach it.
	if err := set.text.ExecuteTemplate(&subject, "subject", nil); err != nil {
		return Email{}, fmt.Errorf("notify: render eob subject: %w", err)
	}
	v := eobView{
		Subject:      strings.TrimSpace(subject.String()),
		PayerName:    cleanName(n.PayerName),
		ServiceDate:  longDate(lang, n.ServiceDate),
		ProviderName: cleanName(n.ProviderName),
		PatientShare: cleanName(n.PatientShare),
		PortalURL:    portal,
	}
	var text, html bytes.Buffer
	if err := set.text.ExecuteTemplate(&text, "body", v); err != nil {
		return Email{}, fmt.Errorf("notify: render eob text body: %w", err)
	}
	if err := set.html.Execute(&html, v); err != nil {
		return Email{}, fmt.Errorf("notify: render eob html body: %w", err)
	}
	return Email{Subject: v.Subject, Text: text.String(), HTML: html.String()}, nil
}

// pickLanguage maps a language tag to one we have templates for.
func pickLanguage(tag string) string {
	primary, _, _ := strings.Cut(strings.TrimSpace(tag), "-")
	primary, _, _ = strings.Cut(primary, "_")
	primary = strings.ToLower(primary)
	for _, l := range languages {
		if l == primary {
			return l
		}
	}
	return DefaultLanguage
}

func checkPortalURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", fmt.Errorf("%w: portal_url is empty", ErrInvalidNotice)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%w: portal_url is not an absolute http(s) URL without credentials", ErrInvalidNotice)
	}
	return raw, nil
}

var monthNames = map[string][12]string{
	"en": {"January", "February", "March", "April", "May", "June", "July",
		"August", "September", "October", "November", "December"},
	"es": {"enero", "febrero", "marzo", "abril", "mayo", "junio", "julio",
		"agosto", "septiembre", "octubre", "noviembre", "diciembre"},
}

// longDate writes a YYYY-MM-DD date the way the language does
// ("August 16, 2014", "16 de agosto de 2014"); anything else is shown as
// given, cleaned.
func longDate(lang, iso string) string {
	d, err := time.Parse(time.DateOnly, strings.TrimSpace(iso))
	if err != nil {
		return cleanName(iso)
	}
	month := monthNames[lang][d.Month()-1]
	if lang == "es" {
		return fmt.Sprintf("%d de %s de %d", d.Day(), month, d.Year())
	}
	return fmt.Sprintf("%s %d, %d", month, d.Day(), d.Year())
}
