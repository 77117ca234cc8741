package notify

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// fakeSMSProvider answers the Messages API as the provider does, after
// checking the request's shape and its basic auth; it keeps each form.
type fakeSMSProvider struct {
	t        *testing.T
	sid, tok string
	status   int // answer with this status instead of 201
	mu       sync.Mutex
	forms    []url.Values
}

func (f *fakeSMSProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/"+f.sid+"/Messages.json":
		f.t.Errorf("request %s %s, want POST to the account's Messages.json", r.Method, r.URL.Path)
		http.Error(w, "not found", http.StatusNotFound)
		return
	case !ok || user != f.sid || pass != f.tok:
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"code": 20003, "message": "Authenticate"}`)
		return
	case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
		f.t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
	}
	if err := r.ParseForm(); err != nil {
		f.t.Errorf("form: %v", err)
	}
	f.mu.Lock()
	f.forms = append(f.forms, r.PostForm)
	f.mu.Unlock()
	if f.status != 0 {
		w.WriteHeader(f.status)
		io.WriteString(w, `{"code": 21211, "message": "The 'To' number `+r.PostForm.Get("To")+` is not valid"}`)
		return
	}
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"sid": "SM0123456789abcdef", "status": "queued"}`)
}

const testPortal = "https://portal.example.org/portal/acme/notices/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func newTestSMS(t *testing.T, f *fakeSMSProvider, token string) *SMSChannel {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	ch, err := NewSMSChannel(SMSConfig{BaseURL: srv.URL, AccountSID: f.sid, AuthToken: token, From: "+15550100000",
		StatusCallback: "https://portal.example.org/sms/status", PortalBaseURL: "https://portal.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestSMSChannelPostsTheTwilioShapeWithBasicAuth(t *testing.T) {
	f := &fakeSMSProvider{t: t, sid: "AC123", tok: "secret-token"}
	ch := newTestSMS(t, f, f.tok)
	msg, err := RenderSMS("Acme Health", testPortal, "en")
	if err != nil {
		t.Fatal(err)
	}
	msg.To = "+15551234567"
	r, err := ch.Send(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if r.MessageID != "SM0123456789abcdef" { // no reference given: the SID
		t.Errorf("receipt %+v, want the provider's SID", r)
	}
	got := f.forms[0]
	want := url.Values{"To": {"+15551234567"}, "From": {"+15550100000"},
		"Body":           {"You have a new message from Acme Health. Read it securely: " + testPortal + " Reply STOP to opt out."},
		"StatusCallback": {"https://portal.example.org/sms/status"}}
	if got.Encode() != want.Encode() {
		t.Errorf("form\n%v\nwant\n%v", got, want)
	}
	if sec := ch.Security(); sec.TLSEnforced || sec.MessageEncrypted {
		t.Errorf("Security() = %+v: an SMS is never protected end to end", sec)
	}
}

func TestSMSChannelWrongTokenIsRejectedWithoutTheNumber(t *testing.T) {
	f := &fakeSMSProvider{t: t, sid: "AC123", tok: "secret-token"}
	ch := newTestSMS(t, f, "wrong-token")
	msg, _ := RenderSMS("", testPortal, "es")
	msg.To = "+15551234567"
	_, err := ch.Send(context.Background(), msg)
	if !errors.Is(err, ErrRejected) || strings.Contains(err.Error(), "5551234567") || strings.Contains(err.Error(), "secret") {
		t.Errorf("err = %v, want ErrRejected naming no number or token", err)
	}
	f.status = http.StatusBadRequest
	_, err = newTestSMS(t, f, f.tok).Send(context.Background(), msg)
	if !errors.Is(err, ErrRejected) || strings.Contains(err.Error(), "5551234567") || !strings.Contains(err.Error(), "21211") {
		t.Errorf("err = %v, want ErrRejected with the provider code and no number", err)
	}
	f.status = http.StatusServiceUnavailable
	if _, err = newTestSMS(t, f, f.tok).Send(context.Background(), msg); !errors.Is(err, ErrTemporary) {
		t.Errorf("503: err = %v, want ErrTemporary", err)
	}
}

// The channel's own lock: whatever reaches it, only the fixed template
// with this deployment's portal link leaves.
func TestSMSChannelRefusesAnythingButTheTemplate(t *testing.T) {
	f := &fakeSMSProvider{t: t, sid: "AC123", tok: "tok"}
	ch := newTestSMS(t, f, f.tok)
	good, _ := RenderSMS("Acme Health", testPortal, "vi")
	good.To = "+15551234567"
	if err := ch.Check(good); err != nil {
		t.Fatalf("the template itself: %v", err)
	}
	canary := "Zqxwvbnm Canary"
	for name, mutate := range map[string]func(e *Email){
		"PHI appended":       func(e *Email) { e.Text += " Your share is $45.20 for " + canary },
		"PHI as sender":      func(e *Email) { e.FromName = "Dr " + canary + " Oncology: F32.9 $45" },
		"PHI in the link":    func(e *Email) { e.Text = strings.Replace(e.Text, testPortal, testPortal+"?name="+canary, 1) },
		"another site":       func(e *Email) { e.Text = strings.Replace(e.Text, "portal.example.org", "evil.example", 1) },
		"a subject":          func(e *Email) { e.Subject = canary },
		"an HTML body":       func(e *Email) { e.HTML = "<p>" + canary + "</p>" },
		"not E.164":          func(e *Email) { e.To = "555-123-4567" },
		"an email recipient": func(e *Email) { e.To = "patient@example.org" },
		"free text":          func(e *Email) { e.Text = "Hello " + canary },
		"too long": func(e *Email) {
			e.Text = strings.Replace(e.Text, testPortal, testPortal+strings.Repeat("A", 400), 1)
		},
	} {
		e := good
		mutate(&e)
		if _, err := ch.Send(context.Background(), e); !errors.Is(err, ErrInvalidSMS) || strings.Contains(err.Error(), canary) {
			t.Errorf("%s: err = %v, want ErrInvalidSMS without the content", name, err)
		}
	}
	if len(f.forms) != 0 {
		t.Errorf("the provider got %d requests for refused texts", len(f.forms))
	}
	if _, err := RenderSMS("Dr "+canary+": $45", testPortal, "en"); !errors.Is(err, ErrInvalidSMS) {
		t.Errorf("RenderSMS with a sender that is not a plain name: %v", err)
	}
}

func TestSMSSignatureIsTwilios(t *testing.T) {
	// Twilio's documented example (webhooks security): this URL, these
	// parameters and token 12345 sign as below.
	u := "https://mycompany.com/myapp.php?foo=1&bar=2"
	form := url.Values{"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+12349013030"}, "Digits": {"1234"},
		"From": {"+12349013030"}, "To": {"+18005551212"}}
	const want = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
	if got := SMSSignature("12345", u, form); got != want {
		t.Errorf("SMSSignature = %s, want %s", got, want)
	}
	if !ValidSMSSignature("12345", u, form, want) || ValidSMSSignature("12346", u, form, want) ||
		ValidSMSSignature("12345", u+"&x=1", form, want) || ValidSMSSignature("", u, form, "") {
		t.Error("ValidSMSSignature accepts what it should not, or refuses the right one")
	}
}

func TestSMSKeywords(t *testing.T) {
	for body, want := range map[string]string{
		"STOP": SMSKeywordStop, " stop ": SMSKeywordStop, "Stop.": SMSKeywordStop, "STOPALL": SMSKeywordStop,
		"unsubscribe": SMSKeywordStop, "CANCEL": SMSKeywordStop, "end": SMSKeywordStop, "QUIT!": SMSKeywordStop,
		"START": SMSKeywordStart, "yes": SMSKeywordStart, "UNSTOP": SMSKeywordStart,
		"please stop": SMSKeywordNone, "": SMSKeywordNone, "STOPPED": SMSKeywordNone,
	} {
		if got := SMSKeyword(body); got != want {
			t.Errorf("SMSKeyword(%q) = %q, want %q", body, got, want)
		}
	}
}

func TestValidE164(t *testing.T) {
	for s, want := range map[string]bool{"+15551234567": true, "+442071838750": true, "15551234567": false,
		"+0123456789": false, "+1 555 123 4567": false, "+1234567890123456": false, "": false} {
		if ValidE164(s) != want {
			t.Errorf("ValidE164(%q) = %v", s, !want)
		}
	}
}
