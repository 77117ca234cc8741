package notify

import (
	"strings"
	"testing"
)

func TestPortalOnlyEmailCarriesNothingButTheLink(t *testing.T) {
	for _, lang := range []string{"en", "es", "vi", "fr"} {
		e, err := RenderPortalOnlyEmail("https://portal.example.org/portal/notices/tok123", lang)
		if err != nil {
			t.Fatal(err)
		}
		all := e.Subject + e.Text + e.HTML
		if !strings.Contains(e.Text, "https://portal.example.org/portal/notices/tok123") || !strings.Contains(e.HTML, `href="https://portal.example.org/portal/notices/tok123"`) {
			t.Errorf("%s: no link:\n%s", lang, all)
		}
		for _, word := range []string{"Explanation", "Benefits", "Beneficios", "share", "Provider", "$"} {
			if strings.Contains(all, word) {
				t.Errorf("%s: portal-only message says %q", lang, word)
			}
		}
	}
	if _, err := RenderPortalOnlyEmail("javascript:alert(1)", "en"); err == nil {
		t.Error("a non-http portal URL was accepted")
	}
}
