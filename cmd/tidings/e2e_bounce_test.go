package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/journey"
)

// relayDSN is a delivery status notification as a relay mails it to the
// envelope sender about the message messageID sent to rcpt: status 5.x.x
// with action failed is a permanent failure, 4.x.x with delayed a
// temporary one. It returns the message's headers, as most relays do.
func relayDSN(messageID, rcpt, action, status string) string {
	return "From: MAILER-DAEMON@relay.plan.example.org\r\n" +
		"To: notices@tidings.invalid\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n" +
		"--R\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver your message.\r\n" +
		"--R\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; relay.plan.example.org\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\n" +
		"Action: " + action + "\r\n" +
		"Status: " + status + "\r\n" +
		"Diagnostic-Code: smtp; 550 " + status + " mailbox unavailable\r\n\r\n" +
		"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n" +
		"Message-ID: " + messageID + "\r\n" +
		"To: " + rcpt + "\r\n" +
		"Subject: Your claim was processed\r\n\r\n" +
		"--R--\r\n"
}

// Bounces end to end: a notice's mail comes back from the relay as a
// delivery status notification, posted to /v1/bounces. A permanent failure
// marks the delivery bounced and records an email.bounced engagement; a
// second one suppresses the address, so the policy denies the next email;
// registering the contact again lifts it. Temporary failures and repeats
// change nothing, and nothing in the answers names the address.
func TestBouncesSuppressTheAddress(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	const address = "member-bounces@plan.example.org"
	ts.putContact(t, "Patient2", `{"email":"`+address+`"}`)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	integration := ts.apiKey(t, devTenant, access.Integration)
	bounce := func(raw string, want int) BounceResult {
		t.Helper()
		r := doRequest(h, "POST", "/v1/bounces", "message/rfc822", integration, raw)
		if r.Code != want {
			t.Fatalf("POST /v1/bounces: %d %s, want %d", r.Code, r.Body, want)
		}
		if strings.Contains(r.Body.String(), address) {
			t.Fatalf("the answer names the address: %s", r.Body)
		}
		var out BounceResult
		if want == 200 {
			if err := json.Unmarshal(r.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	sendOne := func(fixturePath string, n int64) string {
		t.Helper()
		if r := ts.notify(t, ts.wrap(t, fixture(t, fixturePath))); r.Status != 202 {
			t.Fatalf("notification: %d %s", r.Status, r.Body)
		}
		msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), int(n))
		if err != nil {
			t.Fatal(err)
		}
		ts.waitNotices(t, n)
		m, err := mail.ReadMessage(bytes.NewReader(msgs[n-1].Data))
		if err != nil {
			t.Fatal(err)
		}
		return m.Header.Get("Message-Id")
	}

	first := sendOne("carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json", 1)
	// A delay is not a bounce.
	if got := bounce(relayDSN(first, address, "delayed", "4.2.2"), 200); got.Hard || got.Counted {
		t.Fatalf("a delay was counted: %+v", got)
	}
	got := bounce(relayDSN(first, address, "failed", "5.1.1"), 200)
	if !got.Hard || !got.Counted || got.SuppressedContacts != 0 || got.Status != "5.1.1" {
		t.Fatalf("first hard bounce: %+v", got)
	}
	if again := bounce(relayDSN(first, address, "failed", "5.1.1"), 200); again.Counted {
		t.Fatalf("the same report counted twice: %+v", again)
	}
	ts.waitDeliveries(t, "bounced", 1)
	var engagements int64
	if err := ts.app.store.RawScan(context.Background(), &engagements,
		`SELECT count(*) FROM engagements WHERE tenant_id = ? AND type = 'email.bounced'`, devTenant); err != nil || engagements != 1 {
		t.Fatalf("email.bounced engagements: %d (%v), want one: for the new permanent failure only", engagements, err)
	}

	second := sendOne("carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json", 2)
	if got := bounce(relayDSN(second, address, "failed", "5.1.1"), 200); !got.Counted || got.SuppressedContacts != 1 {
		t.Fatalf("second hard bounce did not suppress the address: %+v", got)
	}
	// The next notice to the suppressed address is denied by the policy.
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json"))); r.Status != 202 {
		t.Fatalf("notification: %d", r.Status)
	}
	ts.waitNotices(t, 3)
	var last []string
	if err := ts.app.store.RawScan(context.Background(), &last, `SELECT status || ' ' || reasons::text FROM notices ORDER BY id DESC LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if len(last) != 1 || !strings.HasPrefix(last[0], "denied ") || !strings.Contains(last[0], "suppressed after repeated permanent bounces") {
		t.Fatalf("the notice after suppression: %q", last)
	}
	if n := len(ts.Mail.Messages()); n != 2 {
		t.Fatalf("%d mails caught, want 2: nothing to the suppressed address", n)
	}
	// Registering the contact again lifts the suppression.
	ts.putContact(t, "Patient2", `{"email":"`+address+`"}`)
	sendOne("carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json", 3)

	// Refusals.
	bounce("From: a@example.org\r\n\r\nnot a report\r\n", 400)
	bounce(relayDSN("<00000000000000000000000000000000@tidings.invalid>", address, "failed", "5.1.1"), 404)
	if r := doRequest(h, "POST", "/v1/bounces", "text/plain", integration, relayDSN(first, address, "failed", "5.1.1")); r.Code != 415 {
		t.Fatalf("text/plain: %d, want 415", r.Code)
	}
	if r := doRequest(h, "POST", "/v1/bounces", "message/rfc822", ts.apiKey(t, devTenant, access.Contacts), relayDSN(first, address, "failed", "5.1.1")); r.Code != 403 {
		t.Fatalf("a contacts key: %d, want 403", r.Code)
	}
	// Another tenant's key does not find this tenant's message.
	if err := ts.app.store.EnsureTenant(context.Background(), "other", "Other"); err != nil {
		t.Fatal(err)
	}
	if r := doRequest(h, "POST", "/v1/bounces", "message/rfc822", ts.apiKey(t, "other", access.Integration), relayDSN(second, address, "failed", "5.1.1")); r.Code != 404 {
		t.Fatalf("another tenant's key: %d, want 404", r.Code)
	}
	var audited int64
	if err := ts.app.store.RawScan(context.Background(), &audited,
		`SELECT count(*) FROM audit_log WHERE tenant_id = ? AND action = 'delivery.bounced'`, devTenant); err != nil || audited != 4 {
		t.Fatalf("delivery.bounced audit rows: %d (%v), want 4 (every report on a known message)", audited, err)
	}
	if rep := ts.verifyAudit(t); !rep.OK() {
		t.Errorf("audit chain: %s", rep)
	}
	if logs := ts.Logs.String(); strings.Contains(logs, address) {
		t.Error("the address is in the logs")
	}
}

// BounceResult is api.BounceResponse as a test reads it.
type BounceResult struct {
	DeliveryID         int64  `json:"delivery_id"`
	Action             string `json:"action"`
	Status             string `json:"status"`
	Hard               bool   `json:"hard"`
	Counted            bool   `json:"counted"`
	SuppressedContacts int    `json:"suppressed_contacts"`
}

// A bounce feeds a workflow's fallback end to end: the EOB notice is
// mailed, the workflow waits for email.bounced, the relay's DSN is posted,
// and the waiting run goes on to text the patient the portal link instead.
// Without the bounce nothing is texted.
func TestABounceSendsTheWorkflowsSMSInstead(t *testing.T) {
	const phone = "+15557654321"
	ts, prov, h := smsStack(t)
	saveAndActivate(t, h, ts.apiKey(t, devTenant, access.Operator), "eob-bounce", `{"id": "eob-bounce",
		"trigger": {"event": "eob.received"}, "sender": {"name": "Acme Health"},
		"steps": [
			{"id": "mail", "type": "email", "template": "eob.notice"},
			{"id": "wait-bounce", "type": "wait_event", "events": ["email.bounced"], "timeout": "2d", "on_timeout": "done"},
			{"id": "text", "type": "sms", "template": "eob.notice"},
			{"id": "done", "type": "end"}]}`)
	c := newCanary(t)
	ts.putContact(t, c.patientContact, `{"email": "`+c.emailContact+`", "phone": "`+phone+`"}`)
	eob := c.collection(t, c.patient(t, c.patientContact, c.emailContact), c.eob(t, "EOBbounce"+c.ids, c.patientContact, c.code))
	if r := ts.notify(t, ts.wrap(t, eob)); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(msgs[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	subject := "ExplanationOfBenefit/EOBbounce" + c.ids
	ts.waitRun(t, subject, "eob-bounce", "waiting for a bounce", func(r journey.RunView) bool { return r.Step == "wait-bounce" && r.Status == "waiting" })
	if got := prov.received(); len(got) != 0 {
		t.Fatalf("%d SMS before any bounce", len(got))
	}
	r := doRequest(h, "POST", "/v1/bounces", "message/rfc822", ts.apiKey(t, devTenant, access.Integration),
		relayDSN(m.Header.Get("Message-Id"), c.emailContact, "failed", "5.1.1"))
	if r.Code != 200 {
		t.Fatalf("POST /v1/bounces: %d %s", r.Code, r.Body)
	}
	ts.waitRun(t, subject, "eob-bounce", "ended after the SMS", func(r journey.RunView) bool { return r.Status == "ended" })
	got := prov.received()
	if len(got) != 1 || got[0].Get("To") != phone || !strings.Contains(got[0].Get("Body"), ts.BaseURL+"/portal/"+devTenant+"/notices/") {
		t.Fatalf("the provider got %v, want one SMS with the portal link", got)
	}
	c.assertAbsent(t, "the SMS", []byte(got[0].Encode()))
	if n := len(ts.Mail.Messages()); n != 1 {
		t.Errorf("%d mails, want only the one that bounced", n)
	}
}
