package links

import (
	"errors"
	"html"
	"regexp"
	"strings"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/notify"
)

// Default lifetimes of the links in a mail.
const (
	// DefaultUnsubscribeTTL: a mail's unsubscribe link keeps working for 90
	// days (CAN-SPAM asks for at least 30 after sending).
	DefaultUnsubscribeTTL = 90 * 24 * time.Hour
	// DefaultTrackingTTL: the pixel and click redirects for 30 days.
	DefaultTrackingTTL = 30 * 24 * time.Hour
)

// Paths the Server answers under the public base URL.
const (
	unsubscribePath = "/u/"
	openPath        = "/t/o/"
	clickPath       = "/t/c/"
)

// Mailer puts a notice's own links in its mail (delivery.Links).
type Mailer struct {
	Signer *Signer
	// BaseURL is the public base URL the links point at (as the portal's).
	BaseURL                     string
	UnsubscribeTTL, TrackingTTL time.Duration // defaults above
	Now                         func() time.Time
}

var _ delivery.Links = (*Mailer)(nil)

// urlRE finds the links of a rendered mail: in the text, a URL runs to the
// next space; in the HTML, to the attribute's closing quote.
var urlRE = regexp.MustCompile(`https?://[^\s<>"']+`)

// Stamp adds the List-Unsubscribe headers (l.Unsubscribe) and tracking
// (l.Tracking) to e.
func (m *Mailer) Stamp(e notify.Email, l delivery.MailLinks) (notify.Email, error) {
	if m.Signer == nil || m.BaseURL == "" {
		return e, errors.New("links: no signing key or base URL")
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	base := strings.TrimRight(m.BaseURL, "/")
	if l.Unsubscribe != "" {
		tok := m.Signer.Sign(Token{Kind: KindUnsubscribe, TenantID: l.TenantID, NoticeID: l.NoticeID,
			Expires: now().Add(orDefault(m.UnsubscribeTTL, DefaultUnsubscribeTTL)), Purpose: l.Unsubscribe})
		e.ListUnsubscribe = "<" + base + unsubscribePath + tok + ">"
	}
	if !l.Tracking {
		return e, nil
	}
	exp := now().Add(orDefault(m.TrackingTTL, DefaultTrackingTTL))
	// Each distinct URL of the mail is a link, numbered in order of first
	// appearance (text first), and its redirect carries the URL signed: it
	// leads only where the notice itself did.
	clicks := map[string]string{}
	rewrite := func(body string, escaped bool) string {
		return urlRE.ReplaceAllStringFunc(body, func(u string) string {
			target := u
			if escaped {
				target = html.UnescapeString(u)
			}
			c, ok := clicks[target]
			if !ok {
				c = base + clickPath + m.Signer.Sign(Token{Kind: KindClick, TenantID: l.TenantID, NoticeID: l.NoticeID,
					Expires: exp, Index: len(clicks), Target: target})
				clicks[target] = c
			}
			return c
		})
	}
	e.Text = rewrite(e.Text, false)
	if e.HTML != "" {
		e.HTML = rewrite(e.HTML, true)
		pixel := `<img src="` + base + openPath + m.Signer.Sign(Token{Kind: KindOpen, TenantID: l.TenantID, NoticeID: l.NoticeID, Expires: exp}) +
			`" width="1" height="1" alt="" style="display:block;border:0">`
		if i := strings.LastIndex(e.HTML, "</body>"); i >= 0 {
			e.HTML = e.HTML[:i] + pixel + e.HTML[i:]
		} else {
			e.HTML += pixel
		}
	}
	return e, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
