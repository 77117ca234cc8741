package notify

import (
	"fmt"
	"strings"

	mail "github.com/wneessen/go-mail"
)

// unsubscribeSignedHeaders are the headers DKIM signs on a mail that
// offers one-click unsubscribe: RFC 8058 section 4 asks that both
// List-Unsubscribe headers be covered, so a relay cannot swap the link.
//
// go-mail (v0.8.1) hard-wraps a DKIM-Signature tag longer than a line in
// the middle of a name, yet signs the unwrapped value, so a longer h= list
// never verifies: the list must fit one folded line (h= and it at most 72
// characters). Content-Type and MIME-Version give way to the two headers;
// the body hash still covers the whole body.
var unsubscribeSignedHeaders = []string{
	"From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// setListUnsubscribe adds the RFC 8058 headers for value (see
// Email.ListUnsubscribe); "" adds none. The value must start with an
// HTTP(S) URI in angle brackets (RFC 8058 wants https: the public base URL
// is https in production, http only on a developer's machine) and hold
// nothing that could break the header.
func setListUnsubscribe(m *mail.Msg, value string) error {
	if value == "" {
		return nil
	}
	if strings.ContainsAny(value, "\r\n") || (!strings.HasPrefix(value, "<https://") && !strings.HasPrefix(value, "<http://")) || !strings.Contains(value, ">") {
		return fmt.Errorf("%w: List-Unsubscribe must start with an HTTP(S) URI in angle brackets", ErrInvalidEmail)
	}
	m.SetGenHeader("List-Unsubscribe", value)
	m.SetGenHeader("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	return nil
}
