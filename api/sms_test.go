package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// Channel steps, fallbacks and the SMS window are checked on save: a
// channel step that names another channel does not parse (400); a bad
// fallback or window is listed with the other problems (422).
func TestWorkflowChannelStepsAreValidatedOnSave(t *testing.T) {
	e := newWorkflowEnv(t)
	const ok = `{"id": "nudge", "trigger": {"event": "eob.received"},
		"sms_window": {"from": "08:00", "to": "21:00"},
		"steps": [{"id": "mail", "type": "email", "template": "eob.notice", "fallback": {"channel": "sms"}},
			{"id": "shelf", "type": "portal", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(ok)), http.StatusCreated, nil)

	conflict := strings.Replace(ok, `"type": "portal", `, `"type": "portal", "channel": "sms", `, 1)
	rec := e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(strings.Replace(conflict, `"nudge"`, `"nudge2"`, 1)))
	want(t, rec, http.StatusBadRequest, nil)
	if !strings.Contains(rec.Body.String(), "a portal step takes no channel") {
		t.Errorf("400 body %s", rec.Body)
	}

	bad := `{"id": "nudge3", "trigger": {"event": "eob.received"}, "sender": {"name": "Oncology Clinic: $45 due"},
		"sms_window": {"from": "25:00", "to": "21:00"},
		"steps": [{"id": "mail", "type": "email", "template": "eob.notice", "fallback": {"channel": "fax"}},
			{"id": "text", "type": "sms", "template": "eob.notice"},
			{"id": "shelf", "type": "portal", "template": "eob.notice", "fallback": {"channel": "email"}}, {"id": "done", "type": "end"}]}`
	var body ProblemsError
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(bad)), http.StatusUnprocessableEntity, &body)
	for _, w := range []struct{ step, field, msg string }{
		{"", "sms_window", "from"},
		{"", "sender.name", "goes in every SMS"},
		{"mail", "fallback.channel", "unknown channel"},
		{"shelf", "fallback", "cannot fall back"},
	} {
		if !slices.ContainsFunc(body.Problems, func(p workflow.Problem) bool {
			return p.Step == w.step && p.Field == w.field && strings.Contains(p.Message, w.msg)
		}) {
			t.Errorf("problems lack %+v: %+v", w, body.Problems)
		}
	}
}

// recordedReplies keeps what the SMS callbacks passed on.
type recordedReplies struct{ statuses, inbound []string }

func (r *recordedReplies) Status(_ context.Context, ref, sid, status string) error {
	if !notify.ValidSMSRef(ref) {
		return fault.New(fault.Invalid, "bad ref")
	}
	r.statuses = append(r.statuses, ref+" "+sid+" "+status)
	return nil
}

func (r *recordedReplies) Inbound(ctx context.Context, phone, body string) (string, error) {
	return delivery.SMSReplies{Store: noOptOuts{}}.Inbound(ctx, phone, body)
}

type noOptOuts struct{}

func (noOptOuts) RecordSMSStatus(context.Context, string, string, string) error { return nil }
func (noOptOuts) SetSMSOptOut(context.Context, string, bool) (int, error)       { return 1, nil }

const smsToken = "sms-auth-token"

func smsServer(r *recordedReplies) http.Handler {
	return New(Config{SMS: &SMSCallbacks{Replies: r, AuthToken: smsToken, PublicBaseURL: "https://tidings.example.org"}})
}

func postSMS(h http.Handler, path, body, sig, ctype string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	if sig != "" {
		req.Header.Set("X-Twilio-Signature", sig)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestSMSCallbacksNeedTheProvidersSignature(t *testing.T) {
	r := &recordedReplies{}
	h := smsServer(r)
	const ref = "0123456789abcdef0123456789abcdef"
	path := "/sms/status?ref=" + ref
	form := url.Values{"MessageSid": {"SM1"}, "MessageStatus": {"delivered"}}
	sig := notify.SMSSignature(smsToken, "https://tidings.example.org"+path, form)
	const formType = "application/x-www-form-urlencoded"
	for name, c := range map[string]struct {
		path, body, sig, ctype string
		status                 int
	}{
		"signed":              {path, form.Encode(), sig, formType, http.StatusNoContent},
		"unsigned":            {path, form.Encode(), "", formType, http.StatusForbidden},
		"another URL":         {"/sms/status?ref=" + strings.Repeat("f", 32), form.Encode(), sig, formType, http.StatusForbidden},
		"a changed form":      {path, form.Encode() + "&x=1", sig, formType, http.StatusForbidden},
		"JSON":                {path, `{"MessageSid": "SM1"}`, sig, "application/json", http.StatusUnsupportedMediaType},
		"too large":           {path, "Body=" + strings.Repeat("a", maxSMSCallbackBytes), sig, formType, http.StatusRequestEntityTooLarge},
		"inbound, unsigned":   {"/sms/inbound", "From=%2B15551234567&Body=STOP", "", formType, http.StatusForbidden},
		"inbound, wrong sign": {"/sms/inbound", "From=%2B15551234567&Body=STOP", sig, formType, http.StatusForbidden},
	} {
		if rec := postSMS(h, c.path, c.body, c.sig, c.ctype); rec.Code != c.status {
			t.Errorf("%s: %d %s, want %d", name, rec.Code, rec.Body, c.status)
		}
	}
	if len(r.statuses) != 1 || r.statuses[0] != ref+" SM1 delivered" {
		t.Errorf("statuses recorded %v, want the signed one only", r.statuses)
	}
	in := url.Values{"From": {"not a number"}, "Body": {"STOP"}}
	if rec := postSMS(h, "/sms/inbound", in.Encode(), notify.SMSSignature(smsToken, "https://tidings.example.org/sms/inbound", in), formType); rec.Code != http.StatusBadRequest {
		t.Errorf("a reply from a malformed number: %d, want 400", rec.Code)
	}
}

// FuzzSMSCallbacks: whatever is posted, the callbacks answer 2xx only for
// a valid signature and never fail with a 5xx.
func FuzzSMSCallbacks(f *testing.F) {
	f.Add("/sms/status?ref=0123456789abcdef0123456789abcdef", "MessageSid=SM1&MessageStatus=delivered", true)
	f.Add("/sms/inbound", "From=%2B15551234567&Body=STOP", true)
	f.Add("/sms/inbound", "From=%2B1&Body=%ff%fe&Body=START", false)
	f.Add("/sms/status?ref=%zz", "a=%zz;b", true)
	r := &recordedReplies{}
	h := smsServer(r)
	f.Fuzz(func(t *testing.T, path, body string, sign bool) {
		if _, err := url.ParseRequestURI(path); err != nil || !strings.HasPrefix(path, "/sms/") || strings.ContainsAny(path, " \r\n#") {
			return // not a request line a client can send
		}
		var sig string
		if form, err := url.ParseQuery(body); sign && err == nil {
			sig = notify.SMSSignature(smsToken, "https://tidings.example.org"+path, form)
		}
		rec := postSMS(h, path, body, sig, "application/x-www-form-urlencoded")
		if rec.Code >= 500 || (rec.Code < 300 && sig == "") {
			t.Fatalf("%s %q: %d %s", path, body, rec.Code, rec.Body)
		}
	})
}
