package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// smsProvider is a fake Twilio-compatible provider: it checks each
// request's path, basic auth and form, and keeps the forms it accepted.
type smsProvider struct {
	t     *testing.T
	sid   string
	token string
	mu    sync.Mutex
	forms []url.Values
}

func (p *smsProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/"+p.sid+"/Messages.json" || !ok || user != p.sid || pass != p.token {
		p.t.Errorf("provider got %s %s (auth %v)", r.Method, r.URL.Path, ok && user == p.sid && pass == p.token)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if err := r.ParseForm(); err != nil {
		p.t.Errorf("provider: %v", err)
	}
	for _, f := range []string{"To", "From", "Body", "StatusCallback"} {
		if r.PostForm.Get(f) == "" {
			p.t.Errorf("provider: form field %s is missing", f)
		}
	}
	p.mu.Lock()
	p.forms = append(p.forms, r.PostForm)
	n := len(p.forms)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"sid": "SM`+strings.Repeat("0", 31)+string(rune('0'+n))+`", "status": "queued"}`)
}

func (p *smsProvider) received() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]url.Values(nil), p.forms...)
}

// smsStack is a stack without workflows or placeholder contacts whose SMS
// channel texts through a fake provider, and its API handler.
func smsStack(t *testing.T) (*testStack, *smsProvider, http.Handler) {
	t.Helper()
	prov := &smsProvider{t: t, sid: "AC0123456789", token: "fake-provider-token"}
	srv := httptest.NewServer(prov)
	t.Cleanup(srv.Close)
	ts := newTestStack(t, testOpts{NoPlaceholder: true, NoWorkflows: true,
		SMS: config.SMS{BaseURL: srv.URL, AccountSID: prov.sid, AuthToken: prov.token, From: "+15550100000"}})
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	return ts, prov, h
}

// smsWorkflow mails the EOB notice and, when the patient has no email,
// texts the portal link instead, between 08:00 and 21:00 in the patient's
// zone.
const smsWorkflow = `{"id": "eob-sms", "trigger": {"event": "eob.received"}, "sender": {"name": "Acme Health"},
	"sms_window": {"days": ["all"], "from": "08:00", "to": "21:00"},
	"steps": [
		{"id": "mail", "type": "email", "template": "eob.notice", "fallback": {"channel": "sms"}},
		{"id": "done", "type": "end"}]}`

// The real path: a notification becomes a run whose email step finds no
// address and falls back to SMS; the SMS waits out the quiet hours, then
// reaches the fake provider carrying only the fixed text and the portal
// link, never the EOB's PHI. Its signed status is recorded (a wrong
// signature is refused); a STOP reply opts the patient out, audited, and
// the next EOB sends no SMS.
func TestSMSFallbackEndToEnd(t *testing.T) {
	const phone = "+15557654321"
	prov := &smsProvider{t: t, sid: "AC0123456789", token: "fake-provider-token"}
	srv := httptest.NewServer(prov)
	defer srv.Close()

	clock := &movableClock{}
	quiet := time.Date(2026, 1, 6, 4, 30, 0, 0, time.UTC) // 22:30 in Chicago
	clock.Set(quiet)
	ts := newTestStack(t, testOpts{Clock: clock, WakeHorizon: -1, ScheduleEvery: 50 * time.Millisecond, NoPlaceholder: true,
		NoWorkflows: true, SMS: config.SMS{BaseURL: srv.URL, AccountSID: prov.sid, AuthToken: prov.token, From: "+15550100000"}})
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	saveAndActivate(t, h, ts.apiKey(t, devTenant, access.Operator), "eob-sms", smsWorkflow)

	c := newCanary(t)
	// A phone and no email, registered through the API: it wins over the
	// email the bundle's Patient carries.
	ts.putContact(t, c.patientContact, `{"phone": "`+phone+`", "time_zone": "America/Chicago"}`)
	first := c.collection(t, c.patient(t, c.patientContact, c.emailContact), c.eob(t, "EOBsmsone"+c.ids, c.patientContact, c.code))
	if r := ts.notify(t, ts.wrap(t, first)); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}

	// Quiet time: the SMS is deferred to 08:00 in Chicago, nothing sent.
	opening := time.Date(2026, 1, 6, 14, 0, 0, 0, time.UTC)
	subject := "ExplanationOfBenefit/EOBsmsone" + c.ids
	ts.waitRun(t, subject, "eob-sms", "deferred to the SMS window", func(r journey.RunView) bool {
		return r.DueAt != nil && r.DueAt.Equal(opening)
	})
	if got := prov.received(); len(got) != 0 {
		t.Fatalf("%d SMS sent in quiet time", len(got))
	}
	clock.Set(opening.Add(time.Second))
	ts.waitNotices(t, 1)
	got := prov.received()
	if len(got) != 1 {
		t.Fatalf("the provider got %d SMS, want 1", len(got))
	}
	sms := got[0]
	link := ts.BaseURL + "/portal/" + devTenant + "/notices/"
	body := sms.Get("Body")
	if sms.Get("To") != phone || sms.Get("From") != "+15550100000" ||
		!strings.HasPrefix(body, "You have a new message from Acme Health. Read it securely: "+link) ||
		!strings.HasSuffix(body, " Reply STOP to opt out.") {
		t.Errorf("SMS form %v", sms)
	}
	c.assertAbsent(t, "the SMS", []byte(sms.Encode()))
	if len(ts.Mail.Messages()) != 0 {
		t.Errorf("%d mails sent to a patient without an email", len(ts.Mail.Messages()))
	}

	// The provider's status callback, signed with the auth token over the
	// URL it was given and the form.
	callback := sms.Get("StatusCallback")
	ref := strings.TrimPrefix(callback, ts.BaseURL+"/sms/status?ref=")
	if !notify.ValidSMSRef(ref) {
		t.Fatalf("StatusCallback %q carries no delivery reference", callback)
	}
	status := url.Values{"MessageSid": {"SM0123"}, "MessageStatus": {"delivered"}, "To": {phone}}
	if code := postSigned(t, callback, status, notify.SMSSignature("not-the-token", callback, status)); code != http.StatusForbidden {
		t.Errorf("a status signed with another token: %d, want 403", code)
	}
	if code := postSigned(t, callback, status, ""); code != http.StatusForbidden {
		t.Errorf("an unsigned status: %d, want 403", code)
	}
	if st, _, _ := ts.app.store.SMSStatus(context.Background(), ref); st != "" {
		t.Fatalf("a refused callback recorded status %q", st)
	}
	if code := postSigned(t, callback, status, notify.SMSSignature(prov.token, callback, status)); code != http.StatusNoContent {
		t.Fatalf("the signed status: %d, want 204", code)
	}
	if st, sid, err := ts.app.store.SMSStatus(context.Background(), ref); err != nil || st != "delivered" || sid != "SM0123" {
		t.Errorf("recorded status %q %q %v, want delivered SM0123", st, sid, err)
	}

	// STOP from the patient's phone: opted out of SMS, audited.
	inbound := ts.BaseURL + "/sms/inbound"
	stop := url.Values{"From": {phone}, "To": {"+15550100000"}, "Body": {"Stop"}, "MessageSid": {"SM9"}}
	if code := postSigned(t, inbound, stop, notify.SMSSignature("wrong", inbound, stop)); code != http.StatusForbidden {
		t.Errorf("an inbound STOP with a wrong signature: %d, want 403", code)
	}
	if code := postSigned(t, inbound, stop, notify.SMSSignature(prov.token, inbound, stop)); code != http.StatusOK {
		t.Fatalf("the signed STOP: %d, want 200", code)
	}
	if n := countRows(t, ts, `SELECT count(*) FROM audit_log WHERE tenant_id = 'dev' AND action = 'contact.sms_opt_out'`); n != 1 {
		t.Errorf("%d opt-out audit rows, want 1", n)
	}

	// The next EOB: the fallback SMS is denied, nothing reaches the provider.
	second := c.collection(t, c.patient(t, c.patientContact, c.emailContact), c.eob(t, "EOBsmstwo"+c.ids, c.patientContact, c.code))
	if r := ts.notify(t, ts.wrap(t, second)); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	counts := ts.waitNotices(t, 2)
	if counts.ByStatus[delivery.NoticeDenied] != 1 || counts.ByStatus[delivery.NoticeSent] != 1 {
		t.Errorf("notices %v, want one sent and one denied", counts.ByStatus)
	}
	if n := len(prov.received()); n != 1 {
		t.Errorf("the provider got %d SMS after STOP, want still 1", n)
	}
	c.assertAbsent(t, "the logs", []byte(ts.Logs.String()))
	if strings.Contains(ts.Logs.String(), prov.token) || strings.Contains(ts.Logs.String(), phone[2:]) {
		t.Error("the logs hold the provider's token or the phone number")
	}
}

// postSigned posts form to u with the X-Twilio-Signature sig ("" for
// none) and returns the status.
func postSigned(t *testing.T, u string, form url.Values, sig string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sig != "" {
		req.Header.Set("X-Twilio-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func countRows(t *testing.T, ts *testStack, q string) int64 {
	t.Helper()
	ctx := context.Background()
	db, err := pgx.Connect(ctx, ts.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	var n int64
	if err := db.QueryRow(ctx, q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A portal step puts the notice in the portal and sends nothing; an email
// the relay refuses for good falls back to SMS on the same notice.
func TestPortalStepAndRefusedEmailFallBackToSMS(t *testing.T) {
	prov := &smsProvider{t: t, sid: "AC0123456789", token: "fake-provider-token"}
	srv := httptest.NewServer(prov)
	defer srv.Close()
	c := newCanary(t)
	ts := newTestStack(t, testOpts{NoPlaceholder: true, NoWorkflows: true,
		SMS: config.SMS{BaseURL: srv.URL, AccountSID: prov.sid, AuthToken: prov.token, From: "+15550100000"},
		RejectRcpt: func(rcpt string) *mailcatch.Reply {
			if strings.EqualFold(rcpt, c.emailRefused) {
				return &mailcatch.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "User unknown"}
			}
			return nil
		}})
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Tracked: the mail's links would go through click redirects, but the
	// SMS fallback must carry the plain portal link its template allows.
	saveAndActivate(t, h, ts.apiKey(t, devTenant, access.Operator), "shelf-then-mail", `{"id": "shelf-then-mail",
		"trigger": {"event": "eob.received"}, "sender": {"name": "Acme Health"}, "tracking": true,
		"steps": [{"id": "shelf", "type": "portal", "template": "eob.notice"},
			{"id": "mail", "type": "email", "template": "eob.notice", "fallback": {"channel": "sms"}},
			{"id": "done", "type": "end"}]}`)
	ts.putContact(t, c.patientRefused, `{"email": "`+c.emailRefused+`", "phone": "+15557654321"}`)
	eob := c.collection(t, c.patient(t, c.patientRefused, c.emailRefused), c.eob(t, "EOBshelf"+c.ids, c.patientRefused, c.code))
	if r := ts.notify(t, ts.wrap(t, eob)); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	counts := ts.waitNotices(t, 2)
	if counts.ByStatus[delivery.NoticeSent] != 2 {
		t.Fatalf("notices %v, want both sent", counts.ByStatus)
	}
	for q, want := range map[string]int64{
		// The portal step: a portal delivery and its sealed view, no disclosure until viewed.
		`SELECT count(*) FROM notices n JOIN deliveries d ON d.notice_id = n.id
			WHERE n.step = 'shelf' AND d.channel = 'portal' AND d.status = 'sent' AND n.portal_sealed IS NOT NULL`: 1,
		`SELECT count(*) FROM disclosures WHERE channel = 'portal'`: 0,
		// The mail step: the refused email, then the SMS, on one notice.
		`SELECT count(*) FROM notices n JOIN deliveries d ON d.notice_id = n.id WHERE n.step = 'mail' AND d.channel = 'email' AND d.status = 'failed'`: 1,
		`SELECT count(*) FROM notices n JOIN deliveries d ON d.notice_id = n.id WHERE n.step = 'mail' AND d.channel = 'sms' AND d.status = 'sent'`:     1,
		`SELECT count(*) FROM disclosures WHERE channel = 'sms' AND detail = 'portal-only'`:                                                            1,
	} {
		if n := countRows(t, ts, q); n != want {
			t.Errorf("%d rows, want %d: %s", n, want, q)
		}
	}
	if got := prov.received(); len(got) != 1 || got[0].Get("To") != "+15557654321" || !strings.Contains(got[0].Get("Body"), "/portal/") || strings.Contains(got[0].Get("Body"), "/t/c/") {
		t.Fatalf("the provider got %v, want one SMS to the patient with the plain portal link", got)
	}
	c.assertAbsent(t, "the SMS", []byte(prov.received()[0].Encode()))
}

// A patient who asked to be reached only at a confidential address
// (HIPAA 164.522(b)) gets no SMS: the text would reach their phone, which is
// not that address. Through the worker, with a workflow that texts: the
// patient with a confidential address gets a recorded denial and nothing
// reaches the provider; another patient with only a phone gets the SMS.
func TestSMSIsDeniedToAPatientWithAConfidentialAddress(t *testing.T) {
	ts, prov, h := smsStack(t)
	saveAndActivate(t, h, ts.apiKey(t, devTenant, access.Operator), "eob-text", `{"id": "eob-text", "trigger": {"event": "eob.received"},
		"sender": {"name": "Acme Health"},
		"steps": [{"id": "text", "type": "send", "channel": "sms", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`)
	// EOBPharmacy1 is about Patient2, EOBProfessionalTransportation1 about Patient1.
	ts.putContact(t, "Patient2", `{"phone": "+15557654321", "confidential_email": "private@example.org"}`)
	ts.putContact(t, "Patient1", `{"phone": "+15557650001"}`)
	for _, f := range []string{"EOBPharmacy1", "EOBProfessionalTransportation1"} {
		if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-"+f+".json"))); r.Status != 202 {
			t.Fatalf("%s: %d %s", f, r.Status, r.Body)
		}
	}
	ts.waitNotices(t, 2)
	time.Sleep(200 * time.Millisecond)
	outs, err := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range outs {
		got[o.ResourceID] = o.Status
		// The policy's rule, from the fact the worker gives it
		// (contact.has_confidential_address); the worker's own guard would
		// word it otherwise.
		if o.ResourceID == "EOBPharmacy1" && !strings.Contains(strings.Join(o.Reasons, " "), "confidential address, which sms does not reach") {
			t.Errorf("EOBPharmacy1 %s for %v, want denied by the policy for the confidential address", o.Status, o.Reasons)
		}
	}
	if got["EOBPharmacy1"] != delivery.NoticeDenied || got["EOBProfessionalTransportation1"] != delivery.NoticeSent {
		t.Fatalf("outcomes %v: want EOBPharmacy1 denied, EOBProfessionalTransportation1 sent", got)
	}
	sent := prov.received()
	if len(sent) != 1 || sent[0].Get("To") != "+15557650001" {
		t.Fatalf("the provider got %v, want one SMS, to Patient1's phone", sent)
	}
	if n := len(ts.Mail.Messages()); n != 0 {
		t.Errorf("%d mails sent by a workflow that only texts", n)
	}
}

// A workflow that texts is refused where no SMS provider is configured
// (422 naming the channel); one saved while the deployment could text and
// run after SMS was turned off (installed here as it was stored then)
// fails its send, visibly, rather than go by another channel or vanish.
func TestASendOnAChannelTheDeploymentLacksFails(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true, NoWorkflows: true})
	text := `{"id": "eob-text", "trigger": {"event": "eob.received"}, "sender": {"name": "Acme Health"},
		"steps": [{"id": "text", "type": "send", "channel": "sms", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := doRequest(h, "POST", "/v1/workflows", "application/json", ts.apiKey(t, devTenant, access.Operator), text); r.Code != 422 ||
		!strings.Contains(r.Body.String(), "channel sms is not configured in this deployment") {
		t.Fatalf("saving a workflow that texts where SMS is off: %d %s", r.Code, r.Body)
	}
	def, err := workflow.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.app.store.InstallWorkflows(context.Background(), devTenant, []workflow.Definition{def}); err != nil {
		t.Fatal(err)
	}
	ts.putContact(t, "Patient2", `{"phone": "+15557654321", "email": "member@example.org"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	ts.soleNoticeUnsent(t, delivery.NoticeFailed, "channel sms is not configured in this deployment; not sent")
}
