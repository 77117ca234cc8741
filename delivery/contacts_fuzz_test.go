package delivery

import (
	"strings"
	"testing"
)

// FuzzContactProblems feeds PUT /v1/contacts bodies' fields to the checks
// that refuse them: they never panic, and no problem repeats a value sent
// (an address, a phone number), only what is wrong with it.
func FuzzContactProblems(f *testing.F) {
	f.Add("member@example.org", "+15551234567", "es-MX", "America/Chicago", "email", "private@example.org", "eob", "large-print")
	f.Add("Jane Doe <jane@example.org>", "555-1234", "english", "Local", "fax", "not an address", "EOB", "Large Print")
	f.Add("", "", "", "../../etc/passwd", "", "", "", "")
	// Every fixed message, so that a value that happens to be part of one
	// is not taken for an echo.
	var fixed []string
	for _, c := range []Contact{{}, {Email: "x", Phone: "x", Language: "_", TimeZone: "x/y", OptedOutChannels: []string{"x"},
		ConfidentialEmail: "x", Restrictions: []string{"X"}, AlternateFormat: "X"},
		{Email: "a@example.org", OptedOutChannels: []string{"email", "sms", "push", "portal", "email"}}} {
		fixed = append(fixed, c.problems()...)
	}
	if len(fixed) < 9 {
		f.Fatalf("fixed messages %q", fixed)
	}
	fixedText := strings.Join(fixed, "\n")
	f.Fuzz(func(t *testing.T, email, phone, lang, zone, channel, confidential, restriction, format string) {
		c := Contact{Email: email, Phone: phone, Language: lang, TimeZone: zone, OptedOutChannels: []string{channel},
			ConfidentialEmail: confidential, Restrictions: []string{restriction}, AlternateFormat: format}
		for _, p := range c.problems() {
			for _, v := range []string{email, phone, lang, zone, channel, confidential, restriction, format} {
				if len(v) >= 4 && strings.Contains(p, v) && !strings.Contains(fixedText, v) {
					t.Fatalf("problem %q repeats the value %q", p, v)
				}
			}
		}
	})
}
