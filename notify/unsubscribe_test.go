package notify

import (
	"errors"
	"strings"
	"testing"

	mail "github.com/wneessen/go-mail"
)

// The signed header list must fit one folded line of the DKIM-Signature
// (see unsubscribeSignedHeaders): a longer one is wrapped mid-name by
// go-mail and never verifies.
func TestUnsubscribeSignedHeadersFitOneLine(t *testing.T) {
	tag := "h=" + strings.Join(unsubscribeSignedHeaders, ":") + "; "
	if len(tag) > 75 {
		t.Fatalf("%q is %d characters; at most 75 fit a folded line", tag, len(tag))
	}
}

func TestListUnsubscribeRefusesWhatCouldBreakTheHeader(t *testing.T) {
	for _, v := range []string{"https://x.example/u/t", "<mailto:u@x.example>", "<https://x.example/u/t>\r\nBcc: a@b.example", "<ftp://x.example/u>"} {
		if err := setListUnsubscribe(mail.NewMsg(), v); !errors.Is(err, ErrInvalidEmail) {
			t.Errorf("%q: %v, want ErrInvalidEmail", v, err)
		}
	}
	if err := setListUnsubscribe(mail.NewMsg(), "<https://x.example/u/t>"); err != nil {
		t.Fatal(err)
	}
}
