package links

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/notify"
)

const portalLink = "https://portal.example.org/portal/dev/notices/tok123"

func testMail() notify.Email {
	return notify.Email{To: "member@example.org", Subject: "Hello",
		Text: "Read it here:\n" + portalLink + "\nor " + portalLink + "\nhttps://help.example.org/faq?a=1&b=2\n",
		HTML: `<html><body><p><a href="` + portalLink + `">Read</a> <a href="https://help.example.org/faq?a=1&amp;b=2">FAQ</a></p></body></html>`}
}

func TestStampTracksOnlyTheMailsLinks(t *testing.T) {
	s := testSigner(t, 1)
	m := &Mailer{Signer: s, BaseURL: "https://tidings.example.org/", Now: func() time.Time { return t0 }}
	e, err := m.Stamp(testMail(), delivery.MailLinks{TenantID: "dev", NoticeID: 9, Tracking: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.ListUnsubscribe != "" {
		t.Fatalf("an untracked purpose got List-Unsubscribe %q", e.ListUnsubscribe)
	}
	if strings.Contains(e.Text, portalLink) || strings.Contains(e.HTML, portalLink) {
		t.Fatal("a link was left as it was")
	}
	targets := map[string]int{}
	for _, body := range []string{e.Text, e.HTML} {
		for _, u := range urlRE.FindAllString(body, -1) {
			p, _ := url.Parse(u)
			kind := byte(KindClick)
			if strings.HasPrefix(p.Path, openPath) {
				kind = KindOpen
			}
			tok, err := s.Verify(p.Path[len(clickPath):], kind, t0)
			if err != nil {
				t.Fatalf("%s: %v", u, err)
			}
			if tok.NoticeID != 9 || tok.TenantID != "dev" {
				t.Fatalf("token %+v", tok)
			}
			if kind == KindClick {
				targets[tok.Target] = tok.Index
			}
		}
	}
	want := map[string]int{portalLink: 0, "https://help.example.org/faq?a=1&b=2": 1}
	if len(targets) != len(want) || targets[portalLink] != 0 || targets["https://help.example.org/faq?a=1&b=2"] != 1 {
		t.Fatalf("click targets %v, want %v", targets, want)
	}
	if !strings.Contains(e.HTML, `<img src="https://tidings.example.org/t/o/`) || !strings.HasSuffix(e.HTML, "</body></html>") {
		t.Fatalf("no pixel inside the body: %s", e.HTML)
	}
}

func TestStampUnsubscribe(t *testing.T) {
	s := testSigner(t, 1)
	m := &Mailer{Signer: s, BaseURL: "https://tidings.example.org", Now: func() time.Time { return t0 }}
	in := testMail()
	e, err := m.Stamp(in, delivery.MailLinks{TenantID: "dev", NoticeID: 9, Unsubscribe: "marketing"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Text != in.Text || e.HTML != in.HTML {
		t.Fatal("an untracked mail's body changed")
	}
	raw, ok := strings.CutPrefix(e.ListUnsubscribe, "<https://tidings.example.org/u/")
	if !ok || !strings.HasSuffix(raw, ">") {
		t.Fatalf("List-Unsubscribe %q", e.ListUnsubscribe)
	}
	tok, err := s.Verify(strings.TrimSuffix(raw, ">"), KindUnsubscribe, t0.Add(DefaultUnsubscribeTTL-time.Second))
	if err != nil || tok.Purpose != "marketing" || tok.NoticeID != 9 {
		t.Fatalf("token %+v, %v", tok, err)
	}
	if _, err := (&Mailer{BaseURL: "https://x.example"}).Stamp(in, delivery.MailLinks{Unsubscribe: "marketing"}); err == nil {
		t.Fatal("stamped without a key")
	}
}
