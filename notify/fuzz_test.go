package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/fhir"
)

// fixtureAmounts collects every {"value": n, "currency": c} pair in the
// fixture EOBs, numbers exactly as written.
func fixtureAmounts(t testing.TB) [][2]string {
	t.Helper()
	files, err := filepath.Glob("testdata/*/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var out [][2]string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if n, ok := v["value"].(json.Number); ok {
				cur, _ := v["currency"].(string)
				out = append(out, [2]string{n.String(), cur})
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	for _, f := range files {
		dec := json.NewDecoder(bytes.NewReader(readFixture(t, strings.TrimPrefix(f, "testdata/"))))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		walk(v)
	}
	if len(out) == 0 {
		t.Fatal("no amounts in the fixtures")
	}
	return out
}

var formattedRE = regexp.MustCompile(`^(-?)(\$?)([0-9,]+)(?:\.([0-9]+))?(?: ([A-Z]{3}))?$`)

func FuzzFormatMoney(f *testing.F) {
	for _, a := range fixtureAmounts(f) {
		f.Add(a[0], a[1])
	}
	for _, s := range [][2]string{{"1.005", "USD"}, {"-0.004", "USD"}, {"1e30", "EUR"}, {"1500.5", "JPY"}, {"1.2345", "KWD"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, value, currency string) {
		got := FormatMoney(value, currency)
		if got == "" {
			return
		}
		m := formattedRE.FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("FormatMoney(%q, %q) = %q: not an amount", value, currency, got)
		}
		cur := strings.ToUpper(strings.TrimSpace(currency))
		if (m[2] == "$") != (cur == "USD") || (m[5] != "" && m[5] != cur) {
			t.Fatalf("FormatMoney(%q, %q) = %q: wrong currency form", value, currency, got)
		}
		digits := 2
		if d, ok := minorUnits[cur]; ok {
			digits = d
		}
		if len(m[4]) != digits {
			t.Fatalf("FormatMoney(%q, %q) = %q: %d decimals, want %d", value, currency, got, len(m[4]), digits)
		}
		// The shown amount is within half a minor unit of the input.
		in, ok := new(big.Rat).SetString(strings.TrimSpace(value))
		if !ok {
			t.Fatalf("FormatMoney accepted %q, which is not a number", value)
		}
		shown, ok := new(big.Rat).SetString(m[1] + strings.ReplaceAll(m[3], ",", "") + "." + m[4] + "0")
		if !ok {
			t.Fatalf("cannot read back %q", got)
		}
		diff := new(big.Rat).Abs(new(big.Rat).Sub(in, shown))
		half := new(big.Rat).SetFrac(big.NewInt(1), new(big.Int).Mul(big.NewInt(2), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil)))
		if diff.Cmp(half) > 0 {
			t.Fatalf("FormatMoney(%q, %q) = %q: off by %s", value, currency, got, diff.FloatString(6))
		}
		if m[1] == "-" && shown.Sign() == 0 {
			t.Fatalf("FormatMoney(%q, %q) = %q: negative zero", value, currency, got)
		}
	})
}

// FuzzEOBNoticeEmail runs outside strings through ToEOBNotice and
// RenderEOBEmail: the notice never grows fields, the subject never carries
// them, and no name can add a line or markup to the message.
func FuzzEOBNoticeEmail(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/ExplanationOfBenefit-*.json")
	files = append(files, "testdata/hl7-fhir-r4-spec/explanationofbenefit-example.json")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		facts, err := fhir.EOBFactsFrom(b, nil)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		value, currency := "", ""
		if facts.PatientShare != nil {
			value, currency = facts.PatientShare.Value, facts.PatientShare.Currency
		}
		f.Add(facts.PayerName, facts.ProviderName, facts.ServiceDate, value, currency, "https://portal.example.org/eob", "en")
	}
	f.Add("<b>Acme</b>\r\nBcc: x@y", "Dr. \x00Who", "2024-02-29T25:00", "1e2", "eur", "http://localhost:8080/x?a=1&b=2", "es-MX")
	f.Fuzz(func(t *testing.T, payer, provider, date, value, currency, portalURL, lang string) {
		facts := fhir.EOBFacts{PayerName: payer, ProviderName: provider, ServiceDate: date}
		if value != "" || currency != "" {
			facts.PatientShare = &fhir.Money{Value: value, Currency: currency}
		}
		n := ToEOBNotice(facts, portalURL)
		assertFieldsMatchJSON(t, n)
		for _, name := range []string{n.PayerName, n.ProviderName} {
			if strings.ContainsAny(name, "\r\n\t\x00") || len([]rune(name)) > maxNameRunes {
				t.Fatalf("unclean name %q", name)
			}
		}
		e, err := RenderEOBEmail(n, lang)
		if err != nil {
			if !errors.Is(err, ErrInvalidNotice) {
				t.Fatalf("RenderEOBEmail: %v", err)
			}
			return
		}
		if e.Subject != "You have a new Explanation of Benefits" && e.Subject != "Tiene una nueva Explicación de Beneficios" {
			t.Fatalf("subject %q", e.Subject)
		}
		// The longest template renders 13 lines; names cannot add any.
		if lines := strings.Count(e.Text, "\n"); lines > 13 {
			t.Fatalf("text body has %d lines:\n%s", lines, e.Text)
		}
		if strings.Count(e.HTML, "<a ") != 1 || strings.Contains(e.HTML, "<script") || strings.Contains(strings.ToLower(e.HTML), "<b>") {
			t.Fatalf("markup from input in the html body:\n%s", e.HTML)
		}
	})
}

// FuzzRenderAppointmentEmail renders outside strings, unchecked, through
// any template name: it never panics, refuses only with ErrInvalidNotice,
// keeps the subject fixed, and no field adds a line, a link or markup.
func FuzzRenderAppointmentEmail(f *testing.F) {
	siu := readSIU(f)
	facts := siu.facts(f)
	var maxLines int
	for _, zone := range []string{"Asia/Kolkata", "America/Chicago", ""} {
		var loc *time.Location
		if zone != "" {
			loc = mustZone(f, zone)
		}
		n := ToAppointmentNotice(facts, loc, apptPortal)
		for _, tmpl := range Templates {
			f.Add(tmpl, n.AppointmentDate, n.AppointmentTime, n.LocationName, n.ProviderName, n.PortalURL, "es")
			if e, err := RenderAppointmentEmail(tmpl, fullAppointment, "en"); err == nil {
				maxLines = max(maxLines, strings.Count(e.Text, "\n"))
			}
		}
	}
	f.Add("appointment.confirmation", "2021-02-29", "24:00", `<script>alert(1)</script>`, "<SCRIPT\r\nBcc: x@y", "http://localhost:8080/x?a=1&b=2", "en-US")
	f.Add("appointment.reminder", "<scr\x00ipt>", "\u2028<script", "</td><script>", "Dr. \xff<Script>", "https://p.example.org/\"><script>", "es")
	f.Add("appointment.", "", "", "", "", "", "")
	known := map[string]bool{}
	for _, s := range subjects {
		known[s[0]], known[s[1]] = true, true
	}
	f.Fuzz(func(t *testing.T, tmpl, date, clock, location, provider, portalURL, lang string) {
		n := AppointmentNotice{AppointmentDate: date, AppointmentTime: clock, LocationName: location, ProviderName: provider, PortalURL: portalURL}
		e, err := RenderAppointmentEmail(tmpl, n, lang)
		if err != nil {
			if !errors.Is(err, ErrInvalidNotice) {
				t.Fatalf("RenderAppointmentEmail: %v", err)
			}
			return
		}
		if NoticeTypeOf(tmpl) != NoticeTypeAppointment || !known[e.Subject] {
			t.Fatalf("template %q rendered with subject %q", tmpl, e.Subject)
		}
		if lines := strings.Count(e.Text, "\n"); lines > maxLines {
			t.Fatalf("text body has %d lines, the templates at most %d:\n%s", lines, maxLines, e.Text)
		}
		html := strings.ToLower(e.HTML)
		if strings.Contains(html, "<script") || strings.Count(html, "<a ") != 1 || strings.Count(html, "<tr>") > 4 {
			t.Fatalf("markup from input in the html body:\n%s", e.HTML)
		}
	})
}
