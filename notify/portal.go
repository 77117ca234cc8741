package notify

import (
	"fmt"
	"html"
)

// portalOnly holds, per language, the message sent when a policy obliges a
// notice to carry no PHI: it says only that something waits in the portal.
var portalOnly = map[string]struct{ subject, body, link string }{
	"en": {"You have a new message", "Hello,\n\nYou have a new message in your member portal. Sign in to read it:\n%s\n", "Sign in to read it"},
	"es": {"Tiene un mensaje nuevo", "Hola:\n\nTiene un mensaje nuevo en su portal de miembros. Inicie sesión para leerlo:\n%s\n", "Inicie sesión para leerlo"},
	"vi": {"Quý vị có tin nhắn mới", "Xin chào,\n\nQuý vị có một tin nhắn mới trong cổng thông tin hội viên. Đăng nhập để đọc:\n%s\n", "Đăng nhập để đọc"},
}

// RenderPortalOnlyEmail renders a notice that carries no PHI: no payer, no
// provider, no date, no amount, not even what kind of notice waits; only the
// portal link (an opaque token). It is what goes out when a policy sets
// portal_only (sensitive care, or a channel that is not secure).
func RenderPortalOnlyEmail(portalURL, lang string, opts ...Option) (Email, error) {
	portal, err := checkPortalURL(portalURL)
	if err != nil {
		return Email{}, err
	}
	lang = pickLanguage(lang)
	t := portalOnly[lang]
	escaped := html.EscapeString(portal)
	style := ""
	if applyOptions(opts).largePrint {
		style = ` style="font-size: 22px; line-height: 1.5;"`
	}
	return Email{
		Subject: t.subject,
		Text:    fmt.Sprintf(t.body, portal),
		HTML: fmt.Sprintf(`<!DOCTYPE html><html lang="%s"><body%s><p>%s</p><p><a href="%s">%s</a></p></body></html>`,
			lang, style, html.EscapeString(firstLine(t.body)), escaped, html.EscapeString(t.link)),
	}, nil
}

func firstLine(body string) string {
	for i := 0; i+1 < len(body); i++ {
		if body[i] == '\n' && body[i+1] == '\n' {
			rest := body[i+2:]
			for j := 0; j < len(rest); j++ {
				if rest[j] == ':' || rest[j] == '\n' {
					return rest[:j] + "."
				}
			}
		}
	}
	return body
}
