package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"log/slog"
	"net/url"
	"slices"
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
	To      string // recipient address, set by the caller
	Subject string
	Text    string // plain-text body
	HTML    string // HTML body; optional
	// MessageID is sent as the Message-ID header when set; when empty the
	// channel makes one of 128 random bits at the sender's domain. Every
	// relay logs it: never derive it from a portal token, a notice id or
	// anything about the patient.
	MessageID string
	// A workflow's sender identity, each optional: the display name, the
	// header From address and Reply-To. The envelope sender stays the
	// channel's configured one.
	FromName, From, ReplyTo string
	// TenantID is whose notice this is: it picks the DKIM key and the
	// message signer.
	TenantID string
	// EncryptFor, when set, has the channel send the message signed with
	// the tenant's key and encrypted for this key (see SecurityFor).
	EncryptFor *RecipientKey
	// ListUnsubscribe, when set, is sent as List-Unsubscribe with
	// List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058): the
	// one-click opt-out a marketing notice offers ("<https://…/u/token>",
	// optionally followed by ", <mailto:…>"). DKIM signs both headers.
	ListUnsubscribe string
}

// LogValue keeps the message out of logs: recipient and bodies are PHI.
func (Email) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// DefaultLanguage is used for any language without templates.
const DefaultLanguage = "en"

// languages with templates in templates/.
var languages = []string{"en", "es", "vi"}

// Channels are the channels this version delivers on: email
// (EmailChannel), sms (SMSChannel) and portal (nothing is sent; the
// notice waits in the portal).
var Channels = []string{"email", "sms", "portal"}

// Templates lists every template name this package renders. A name is
// "<notice type>.<kind>"; NoticeTypeOf reads the notice type off it.
var Templates = []string{"eob.notice", "eob.reminder", "appointment.confirmation", "appointment.reminder", "appointment.cancelled", "appointment.survey", "appointment.noshow"}

// NoticeTypeOf maps a template name to its policy notice type
// (NoticeTypeEOB or NoticeTypeAppointment); "" when unknown.
func NoticeTypeOf(template string) string {
	if !slices.Contains(Templates, template) {
		return ""
	}
	switch group, _, _ := strings.Cut(template, "."); group {
	case NoticeTypeEOB:
		return NoticeTypeEOB
	case NoticeTypeAppointment:
		return NoticeTypeAppointment
	}
	return ""
}

//go:embed templates/*.txt templates/*.html
var templateFS embed.FS

// templateSet is one template in one language. Both define "body"; the
// text one defines "subject" too.
type templateSet struct {
	text *texttemplate.Template
	html *htmltemplate.Template
}

type templateKey struct{ name, lang string }

// loadTemplates parses every template in every language. A template
// "<type>.<kind>" in language lang is, per format (txt, html), four files:
//
//	templates/<type>.<kind>.<lang>.<ext>  its subject (txt) and "content"
//	templates/<type>.words.<lang>.txt     greeting, footer and labels in lang
//	templates/<type>.parts.<ext>          blocks the notice type shares
//	templates/layout.<ext>                the "body" around all of them
var loadTemplates = sync.OnceValues(func() (map[templateKey]templateSet, error) {
	sets := make(map[templateKey]templateSet, len(Templates)*len(languages))
	for _, name := range Templates {
		group, _, _ := strings.Cut(name, ".")
		for _, lang := range languages {
			files := func(ext string) []string {
				return []string{
					"templates/" + name + "." + lang + ext,
					"templates/" + group + ".words." + lang + ".txt",
					"templates/" + group + ".parts" + ext,
					"templates/layout" + ext,
				}
			}
			text, err := texttemplate.ParseFS(templateFS, files(".txt")...)
			if err != nil {
				return nil, fmt.Errorf("notify: parse %s %s text template: %w", name, lang, err)
			}
			html, err := htmltemplate.ParseFS(templateFS, files(".html")...)
			if err != nil {
				return nil, fmt.Errorf("notify: parse %s %s html template: %w", name, lang, err)
			}
			sets[templateKey{name, lang}] = templateSet{text: text, html: html}
		}
	}
	return sets, nil
})

// view is what the templates see: the subject and portal link, and the
// fields of one notice type, cleaned and written in the message's
// language.
type view struct {
	Subject   string
	PortalURL string
	// EOB
	PayerName    string
	ServiceDate  string // long form
	PatientShare string
	// appointment
	Date         string // long form
	Time         string // as the language writes a time of day
	LocationName string
	// both
	ProviderName string
	// LargePrint: the contact asked for large print (alternate_format).
	LargePrint bool
}

// Option changes how a message is rendered.
type Option func(*options)

type options struct{ largePrint bool }

// FormatLargePrint is the alternate format whose HTML body is set in large
// type (22 px, one and a half line spacing); the plain-text body is as
// large as the reader's mail program shows it.
const FormatLargePrint = "large-print"

// Format renders in a contact's alternate format (alternate_format):
// FormatLargePrint; any other is rendered as standard print (the policy
// sees the format and may decide otherwise).
func Format(format string) Option {
	return func(o *options) { o.largePrint = o.largePrint || format == FormatLargePrint }
}

func applyOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// renderEmail renders template name in the language picked for lang. The
// subject template gets no data, so no notice field can reach it; fill
// sets the notice's fields on the view the bodies get.
func renderEmail(name, lang, portalURL string, o options, fill func(v *view, lang string)) (Email, error) {
	sets, err := loadTemplates()
	if err != nil {
		return Email{}, err
	}
	lang = pickLanguage(lang)
	set, ok := sets[templateKey{name, lang}]
	if !ok {
		return Email{}, fmt.Errorf("%w: unknown template %q", ErrInvalidNotice, name)
	}
	portal, err := checkPortalURL(portalURL)
	if err != nil {
		return Email{}, err
	}
	var subject bytes.Buffer
	if err := set.text.ExecuteTemplate(&subject, "subject", nil); err != nil {
		return Email{}, fmt.Errorf("notify: render %s subject: %w", name, err)
	}
	v := view{Subject: strings.TrimSpace(subject.String()), PortalURL: portal, LargePrint: o.largePrint}
	fill(&v, lang)
	var text, html bytes.Buffer
	if err := set.text.ExecuteTemplate(&text, "body", v); err != nil {
		return Email{}, fmt.Errorf("notify: render %s text body: %w", name, err)
	}
	if err := set.html.ExecuteTemplate(&html, "body", v); err != nil {
		return Email{}, fmt.Errorf("notify: render %s html body: %w", name, err)
	}
	return Email{Subject: v.Subject, Text: text.String(), HTML: html.String()}, nil
}

// RenderEOBEmail renders the subject and the plain-text and HTML bodies of
// an EOB notice (the "eob.notice" template). The subject is fixed per
// language and carries no PHI. lang is a language tag ("es", "es-MX");
// languages without templates fall back to English. The portal URL must be
// an absolute http(s) URL without credentials. The result's To is left for
// the caller to set.
func RenderEOBEmail(n EOBNotice, lang string, opts ...Option) (Email, error) {
	return renderEOB("eob.notice", n, lang, opts)
}

// RenderEOBReminderEmail renders the "eob.reminder" template: the EOB
// notice has not been viewed yet. It shows the same fields as
// RenderEOBEmail, under the same rules.
func RenderEOBReminderEmail(n EOBNotice, lang string, opts ...Option) (Email, error) {
	return renderEOB("eob.reminder", n, lang, opts)
}

func renderEOB(name string, n EOBNotice, lang string, opts []Option) (Email, error) {
	return renderEmail(name, lang, n.PortalURL, applyOptions(opts), func(v *view, lang string) {
		v.PayerName = cleanName(n.PayerName)
		v.ServiceDate = longDate(lang, n.ServiceDate)
		v.ProviderName = cleanName(n.ProviderName)
		v.PatientShare = cleanName(n.PatientShare)
	})
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
// ("August 16, 2014", "16 de agosto de 2014", "ngày 16 tháng 8 năm 2014");
// anything else is shown as given, cleaned.
func longDate(lang, iso string) string {
	d, err := time.Parse(time.DateOnly, strings.TrimSpace(iso))
	if err != nil {
		return cleanName(iso)
	}
	switch lang {
	case "es":
		return fmt.Sprintf("%d de %s de %d", d.Day(), monthNames[lang][d.Month()-1], d.Year())
	case "vi":
		return fmt.Sprintf("ngày %d tháng %d năm %d", d.Day(), d.Month(), d.Year())
	}
	return fmt.Sprintf("%s %d, %d", monthNames["en"][d.Month()-1], d.Day(), d.Year())
}
