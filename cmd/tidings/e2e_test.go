package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/rego"
)

// Every EOB example goes through HTTP, Postgres, Redis, the worker and a real
// SMTP server with STARTTLS: exactly one message per EOB, with the patient's
// share when the EOB has one and none of its codes.
func TestEOBFixturesEndToEnd(t *testing.T) {
	files := []string{
		"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json",
		"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json",
		"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json",
		"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json",
		"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json",
		"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json",
		"hl7-fhir-r4-spec/explanationofbenefit-example.json",
		"synthea/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
	}
	for _, f := range files {
		t.Run(f[strings.LastIndexByte(f, '/')+1:], func(t *testing.T) {
			t.Parallel()
			ts := newTestStack(t, testOpts{})
			body := ts.wrap(t, fixture(t, f))
			n, err := fhir.ParseNotification(body)
			if err != nil {
				t.Fatal(err)
			}
			res := ts.notify(t, body)
			if res.Status != 202 {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
			want := len(n.Events)
			msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), want)
			if err != nil {
				t.Fatalf("waiting for %d message(s): %v (got %d)", want, err, len(ts.Mail.Messages()))
			}
			c := ts.waitNotices(t, int64(want))
			if c.ByStatus[delivery.NoticeSent] != int64(want) {
				t.Fatalf("notices %+v, want %d sent", c.ByStatus, want)
			}
			time.Sleep(300 * time.Millisecond) // a second message would be a double send
			if got := len(ts.Mail.Messages()); got != want {
				t.Fatalf("SMTP server received %d messages, want exactly %d", got, want)
			}
			texts := make([]string, len(msgs))
			for i, m := range msgs {
				if !m.TLS {
					t.Errorf("message %d was not sent under TLS", i)
				}
				// The portal link is a random token; strip it so a code cannot match it by chance.
				texts[i] = regexp.MustCompile(`https?://\S+/portal/[^/\s]+/notices/[A-Za-z0-9_-]+`).ReplaceAllString(decodedText(t, m.Data), "[link]")
				if !strings.Contains(texts[i], "[link]") {
					t.Errorf("message %d has no portal link:\n%s", i, texts[i])
				}
			}
			all := strings.Join(texts, "\n----\n")
			for _, ev := range n.Events {
				if share, ok := shareOf(t, ev.Focus); ok {
					if !strings.Contains(all, share) {
						t.Errorf("EOB %s: no message contains the patient's share %s", ev.ID, share)
					}
				} else if len(n.Events) == 1 && strings.Contains(all, "Your share") {
					t.Errorf("EOB %s has no patient share, but the notice shows one", ev.ID)
				}
				codes := codesOf(t, ev.Focus)
				if len(codes) == 0 {
					t.Fatalf("EOB %s: no codes read from the fixture; the check below would prove nothing", ev.ID)
				}
				for _, code := range codes {
					if len(code) < 3 {
						continue // one- and two-character codes are indistinguishable from text
					}
					re := regexp.MustCompile(`(^|[^A-Za-z0-9])` + regexp.QuoteMeta(code) + `([^A-Za-z0-9]|$)`)
					if re.MatchString(all) {
						t.Errorf("EOB %s: code %q reached a notice", ev.ID, code)
					}
				}
			}
			if rep := ts.verifyAudit(t); !rep.OK() || rep.Rows == 0 {
				t.Errorf("audit chain: %s", rep)
			}
		})
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The same bundle posted five times, concurrently and again in sequence,
// gives one event, one notice and one message.
func TestSameBundleFiveTimesGivesOneNotice(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	body := ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json"))
	statuses := make(chan int, 5)
	for i := 0; i < 5; i++ {
		go func() { statuses <- ts.notify(t, body).Status }()
	}
	accepted := 0
	for i := 0; i < 5; i++ {
		switch s := <-statuses; s {
		case 202:
			accepted++
		case 200:
		default:
			t.Fatalf("status %d", s)
		}
	}
	if accepted != 1 {
		t.Errorf("%d of 5 concurrent posts were accepted as new, want 1", accepted)
	}
	for i := 0; i < 5; i++ {
		if r := ts.notify(t, body); r.Status != 200 || r.Header.Get("X-Tidings-Duplicates") != "1" {
			t.Fatalf("repeat %d: status %d duplicates %q", i, r.Status, r.Header.Get("X-Tidings-Duplicates"))
		}
	}
	ts.waitNotices(t, 1)
	time.Sleep(500 * time.Millisecond)
	c, _ := ts.app.store.CountAll(context.Background(), devTenant)
	if c.Events != 1 || c.Notices != 1 || c.Deliveries != 1 {
		t.Errorf("events %d notices %d deliveries %d, want 1 each", c.Events, c.Notices, c.Deliveries)
	}
	var attempts, auditSent int
	ts.app.store.RawScan(context.Background(), &attempts, `SELECT attempts FROM deliveries`)
	ts.app.store.RawScan(context.Background(), &auditSent, `SELECT count(*) FROM audit_log WHERE action = 'delivery.sent'`)
	if attempts != 1 || auditSent != 1 {
		t.Errorf("delivery attempts %d, delivery.sent audit rows %d; want 1 and 1", attempts, auditSent)
	}
	if got := len(ts.Mail.Messages()); got != 1 {
		t.Errorf("%d messages, want 1", got)
	}
}

// A relay without STARTTLS gets no PHI: the delivery fails closed.
func TestRelayWithoutSTARTTLSFailsClosed(t *testing.T) {
	ts := newTestStack(t, testOpts{NoSTARTTLS: true})
	res := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")))
	if res.Status != 202 {
		t.Fatalf("status %d", res.Status)
	}
	c := ts.waitNotices(t, 1)
	if c.ByStatus[delivery.NoticeFailed] != 1 {
		t.Fatalf("notices %+v, want 1 failed", c.ByStatus)
	}
	if got := len(ts.Mail.Messages()); got != 0 {
		t.Fatalf("relay without STARTTLS received %d message(s)", got)
	}
	outs, _ := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	if len(outs) != 1 || outs[0].Delivery != delivery.DeliveryFailed || !strings.Contains(strings.Join(outs[0].Reasons, " "), "TLS") {
		t.Fatalf("outcome %+v: want a failed delivery whose reason names TLS", outs)
	}
	// The failure is the send step's outcome, not the run's: the journey
	// goes on to wait for the portal view, and its task is not retried.
	ts.waitRun(t, "ExplanationOfBenefit/EOBOral1", "eob-notice", "waiting for a portal view",
		func(r journey.RunView) bool { return r.Status == "waiting" && r.Step == "wait-viewed" })
	dump := redisDump(t, ts)
	if strings.Contains(dump, "state=archived") || strings.Contains(dump, "state=retry") {
		t.Fatalf("a permanent failure left a task to retry or in the archive:\n%.2000s", dump)
	}
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")
	for _, c := range append(codesOf(t, eob), "patients.invalid") {
		if len(c) >= 3 && strings.Contains(dump, c) {
			t.Errorf("Redis holds %q in clear after a failed delivery", c)
		}
	}
}

// With TLS only opportunistic, the channel is not TLS-enforced: the policy
// obliges a portal-only notice, which carries nothing but the portal link.
func TestUnenforcedChannelGetsAPortalOnlyNotice(t *testing.T) {
	ts := newTestStack(t, testOpts{NoSTARTTLS: true, Opportunistic: true})
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	ts.notify(t, ts.wrap(t, eob))
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	text := decodedText(t, msgs[0].Data)
	if msgs[0].TLS || !strings.Contains(text, "/portal/dev/notices/") {
		t.Fatalf("TLS %v, message:\n%s", msgs[0].TLS, text)
	}
	share, _ := shareOf(t, eob)
	for _, phi := range []string{share, "XXX Health Plan", "Explanation of Benefits", "Provider"} {
		if strings.Contains(text, phi) {
			t.Errorf("a message sent without TLS carries %q:\n%s", phi, text)
		}
	}
}

// The patient's rights decide: an opted-out channel gets nothing (a recorded
// denial); a confidential-communication address receives the notice and the
// home address does not.
func TestPatientRights(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	token := ts.apiKey(t, "dev", access.Contacts)
	h, _ := ts.app.handler(nil)
	put := func(id, body string) {
		t.Helper()
		if r := doRequest(h, "PUT", "/v1/contacts/Patient/"+id, "application/json", token, body); r.Code != 200 {
			t.Fatalf("PUT %s: %d %s", id, r.Code, r.Body)
		}
	}
	// EOBPharmacy1 is about Patient2, EOBProfessionalTransportation1 about Patient1 (CARIN examples).
	put("Patient2", `{"email":"home@example.org","confidential_email":"private@example.org"}`)
	put("Patient1", `{"email":"patient1@example.org","opted_out_channels":["email"]}`)
	if r := doRequest(h, "PUT", "/v1/contacts/Patient/Patient1", "application/json", token, `{"email":"a@example.org","opted_out_channels":["fax"]}`); r.Code != 400 {
		t.Errorf("unknown channel accepted: %d", r.Code)
	}
	ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")))
	ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json")))
	ts.waitNotices(t, 2)
	time.Sleep(200 * time.Millisecond)
	msgs := ts.Mail.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "private@example.org" {
		t.Fatalf("messages to %v; want one, to the confidential address only", recipients(msgs))
	}
	outs, _ := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	denied := 0
	for _, o := range outs {
		if o.ResourceID == "EOBProfessionalTransportation1" && o.Status == delivery.NoticeDenied && strings.Contains(strings.Join(o.Reasons, " "), "opted out") {
			denied++
		}
	}
	if denied != 1 {
		t.Fatalf("outcomes %+v: want EOBProfessionalTransportation1 denied because the patient opted out of email", outs)
	}
}

// Three policy rules that deny, each driven through the worker by the input
// that triggers it: a patient's agreed restriction on EOB notices, a
// marketing notice to a patient who gave no authorization (while the
// required notice of the same EOB goes out), and an EOB whose outcome is
// "error" (the published example with its outcome changed in memory: no
// published one has it). Each denial is recorded with the rule's reason,
// and only the one notice no rule denies reaches the relay.
func TestRestrictionConsentAndErrorOutcomeDeny(t *testing.T) {
	ts := newTestStack(t, testOpts{NoWorkflows: true, NoPlaceholder: true})
	token := ts.apiKey(t, "dev", access.Operator)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	offerAndRequiredEOBWorkflows(t, h, token)
	// EOBPharmacy1 is about Patient2, EOBProfessionalTransportation1 about Patient1.
	ts.putContact(t, "Patient2", `{"email":"member2@example.org","marketing_authorized":true,"restrictions":["eob"]}`)
	ts.putContact(t, "Patient1", `{"email":"member1@example.org"}`)
	transport := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json")
	failed := editJSON(t, transport, func(e map[string]any) { e["id"], e["outcome"] = "EOBTransportOutcomeError", "error" })
	for _, eob := range [][]byte{fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"), transport, failed} {
		if r := ts.notify(t, ts.wrap(t, eob)); r.Status != 202 {
			t.Fatalf("notification: %d %s", r.Status, r.Body)
		}
	}
	ts.waitNotices(t, 6)
	time.Sleep(200 * time.Millisecond)

	outs, err := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{} // "resource: outcome" → notices
	for _, o := range outs {
		reasons := strings.Join(o.Reasons, "; ")
		outcome := ""
		switch {
		case o.Status == delivery.NoticeSent:
			outcome = "sent"
		case o.Status != delivery.NoticeDenied:
			t.Errorf("%s: %s %v", o.ResourceID, o.Status, o.Reasons)
		case strings.Contains(reasons, `the patient's restriction "eob" covers this notice`):
			outcome = "denied by the restriction"
		case strings.Contains(reasons, `an EOB whose outcome is "error" is not notified`):
			outcome = "denied for the outcome"
		case strings.Contains(reasons, `purpose "marketing" needs the patient's authorization`):
			outcome = "denied without authorization"
		default:
			t.Errorf("%s denied for %v", o.ResourceID, o.Reasons)
		}
		got[o.ResourceID+": "+outcome]++
	}
	want := map[string]int{
		"EOBPharmacy1: denied by the restriction":                      2, // both purposes
		"EOBProfessionalTransportation1: sent":                         1, // payment
		"EOBProfessionalTransportation1: denied without authorization": 1, // marketing
		"EOBTransportOutcomeError: denied for the outcome":             2, // both purposes
	}
	if !maps.Equal(got, want) {
		t.Fatalf("notices by EOB and outcome %v, want %v\n%+v", got, want, outs)
	}
	msgs := ts.Mail.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "member1@example.org" {
		t.Fatalf("mail to %v, want one to member1@example.org", recipients(msgs))
	}
	mailFrom(t, msgs, "eob@plan.example")
}

func recipients(msgs []mailcatch.Message) [][]string {
	var out [][]string
	for _, m := range msgs {
		out = append(out, m.To)
	}
	return out
}

// An EOB with a mental-health diagnosis (the published inpatient example with
// its diagnosis changed in memory to ICD-10-CM F32.9: no published example
// carries one) goes portal-only: no provider name, no amounts, no payer.
func TestSensitiveDiagnosisGoesPortalOnly(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	eob := bytes.Replace(fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json"), []byte(`"S06.0X1A"`), []byte(`"F32.9"`), -1)
	if !bytes.Contains(eob, []byte(`"F32.9"`)) {
		t.Fatal("the diagnosis was not replaced")
	}
	ts.notify(t, ts.wrap(t, eob))
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	text := decodedText(t, msgs[0].Data)
	for _, phi := range []string{"XXX Health Plan", "Explanation of Benefits", "Provider", "$", "F32"} {
		if strings.Contains(text, phi) {
			t.Errorf("a sensitive notice carries %q:\n%s", phi, text)
		}
	}
	if !strings.Contains(text, "/portal/dev/notices/") {
		t.Errorf("no portal link:\n%s", text)
	}
}

// A contact registered through the API wins over the bundle's Patient.
func TestRegisteredContactReceivesTheNotice(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	var doc struct {
		Patient struct{ Reference string } `json:"patient"`
	}
	json.Unmarshal(eob, &doc)
	id := strings.TrimPrefix(doc.Patient.Reference, "Patient/")
	token := ts.apiKey(t, "dev", access.Contacts)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := doRequest(h, "PUT", "/v1/contacts/Patient/"+id, "application/json", token, `{"email":"member@example.org","language":"es"}`)
	if rec.Code != 200 {
		t.Fatalf("PUT contact: %d %s", rec.Code, rec.Body)
	}
	for _, bad := range []struct {
		token, body string
		want        int
	}{
		{"", `{"email":"member@example.org"}`, 401},
		{token, `{"email":"not an address"}`, 400},
		{token, `{"email":"a@example.org","extra":1}`, 400},
		{token, `{"email":"a@example.org","time_zone":"Mars/Olympus"}`, 400},
	} {
		if r := doRequest(h, "PUT", "/v1/contacts/Patient/"+id, "application/json", bad.token, bad.body); r.Code != bad.want || !strings.Contains(r.Body.String(), `"error"`) {
			t.Errorf("PUT %s: %d %s, want %d with a JSON error", bad.body, r.Code, r.Body, bad.want)
		}
	}
	ts.notify(t, ts.wrap(t, eob))
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs[0].To) != 1 || msgs[0].To[0] != "member@example.org" {
		t.Errorf("sent to %v, want the registered address", msgs[0].To)
	}
}

// Without any address for the patient (and no dev placeholder) the notice
// fails with a reason rather than vanishing.
func TestNoContactFailsWithReason(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")))
	ts.waitNotices(t, 1)
	outs, _ := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	if outs[0].Status != delivery.NoticeFailed || !strings.Contains(strings.Join(outs[0].Reasons, ""), "no email address") {
		t.Fatalf("outcome %+v", outs[0])
	}
}

// shareOf reads the patient's share straight from the EOB, independently of
// package fhir: the memberliability total, else item-level memberliability
// summed, else the paidbypatient total; formatted as the notice shows USD.
func shareOf(t *testing.T, eob json.RawMessage) (string, bool) {
	t.Helper()
	type amount struct {
		Category struct{ Coding []struct{ Code string } }
		Amount   *struct {
			Value    float64
			Currency string
		}
	}
	var doc struct {
		Total []amount
		Item  []struct{ Adjudication []amount }
	}
	if err := json.Unmarshal(eob, &doc); err != nil {
		t.Fatal(err)
	}
	find := func(list []amount, code string) (float64, bool) {
		sum, found := 0.0, false
		for _, a := range list {
			for _, c := range a.Category.Coding {
				if c.Code == code && a.Amount != nil {
					sum += a.Amount.Value
					found = true
				}
			}
		}
		return sum, found
	}
	format := func(v float64) string {
		s := fmt.Sprintf("%.2f", v)
		if v >= 1000 {
			s = fmt.Sprintf("%d,%06.2f", int(v)/1000, v-float64(int(v)/1000*1000))
		}
		return "$" + s
	}
	if v, ok := find(doc.Total, "memberliability"); ok {
		return format(v), true
	}
	var items []amount
	for _, it := range doc.Item {
		items = append(items, it.Adjudication...)
	}
	if v, ok := find(items, "memberliability"); ok {
		return format(v), true
	}
	if v, ok := find(doc.Total, "paidbypatient"); ok {
		return format(v), true
	}
	return "", false
}

// A patient whose address changed gets the notice at the new one: the
// bundle's Patient wins over a contact stored from an earlier bundle (an
// API-registered contact still wins over both).
func TestNewBundleAddressWinsOverStoredOne(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	ctx := context.Background()
	patient := fixture(t, "carin-bb-2.0.0/Patient-Patient2.json")
	var p struct {
		Telecom []struct{ System, Value string }
	}
	json.Unmarshal(patient, &p)
	bundleEmail := ""
	for _, tc := range p.Telecom {
		if tc.System == "email" && bundleEmail == "" {
			bundleEmail = tc.Value
		}
	}
	if bundleEmail == "" {
		t.Fatal("fixture Patient2 has no email")
	}
	if err := ts.app.store.UpsertContact(ctx, devTenant, "Patient/Patient2", delivery.Contact{Email: "old-address@example.org", Source: "fhir", FHIRSource: "subscription/" + devSubscription}); err != nil {
		t.Fatal(err)
	}
	eob := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	collection := withPatient2(patient, eob)
	ts.notify(t, ts.wrap(t, collection))
	msgs, err := ts.Mail.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs[0].To) != 1 || !strings.EqualFold(msgs[0].To[0], bundleEmail) {
		t.Fatalf("sent to %v, want the bundle's current address", msgs[0].To)
	}
	if c, err := ts.app.store.ContactFor(ctx, devTenant, "subscription/"+devSubscription, "Patient/Patient2"); err != nil || !strings.EqualFold(c.Email, bundleEmail) {
		t.Fatalf("stored contact not refreshed: %v", err)
	}
}

// A delivery claimed by an attempt that never recorded its outcome (the
// process died mid-send, after the relay may have taken it) is not sent
// again and not failed: the delivery becomes unknown, the notice waits for
// an operator (tidings deliveries resolve), and the relay sees nothing;
// the patient's accounting lists it as a disclosure that may have happened.
func TestUnknownDeliveryOutcomeIsNotResent(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))); r.Status != 202 {
		t.Fatalf("status %d", r.Status)
	}
	var eventID int64
	if err := ts.app.store.RawScan(ctx, &eventID, `SELECT id FROM events`); err != nil || eventID == 0 {
		t.Fatalf("event: %v", err)
	}
	// The EOB workflow's run (the event's source's), and its first send,
	// claimed by an attempt that died before recording how it ended.
	w, _, err := ts.app.store.StartRun(ctx, journey.NewRun{TenantID: devTenant, WorkflowID: "eob-notice", WorkflowVersion: 1,
		Priority: "normal", Source: "subscription/" + devSubscription, Subject: "ExplanationOfBenefit/EOBOral1", PatientIndex: ts.app.store.PatientIndex(devTenant, "Patient/Patient1"),
		EventID: &eventID}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	run, err := ts.app.store.LoadRun(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	n, err := ts.app.store.EnsureRunNotice(ctx, run, "notice", "eob.notice", "eob", eventID)
	if err != nil {
		t.Fatal(err)
	}
	claimed := delivery.Disclosure{PatientIndex: run.PatientIndex, Channel: "email", Recipient: "member@example.org", NoticeType: "eob",
		Detail: delivery.DetailFull, Purpose: delivery.PurposePayment}
	if _, proceed, err := ts.app.store.BeginDelivery(ctx, n, "email", "", false, claimed); err != nil || !proceed {
		t.Fatalf("first claim: %v %v", proceed, err)
	}
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	ts.waitDeliveries(t, delivery.DeliveryUnknown, 1)
	// Past the first retry's backoff, nothing more happened.
	time.Sleep(journey.RetryDelay(1) + time.Second)
	outs, _ := ts.app.store.NoticeOutcomes(ctx, devTenant)
	if len(outs) != 1 || outs[0].Status != delivery.NoticePending || outs[0].Delivery != delivery.DeliveryUnknown {
		t.Fatalf("outcome %+v, want the notice pending and its delivery unknown", outs)
	}
	if got := len(ts.Mail.Messages()); got != 0 {
		t.Fatalf("resent: %d message(s)", got)
	}
	// It may have gone out: the patient's accounting says so, as the
	// attempt described it.
	ds, _, err := ts.app.store.Disclosures(ctx, delivery.DisclosureQuery{TenantID: devTenant, PatientRef: "Patient/Patient1"})
	if err != nil || len(ds) != 1 || ds[0].Status != delivery.DeliveryUnknown || ds[0].Recipient != "member@example.org" || ds[0].NoticeID != n.ID {
		t.Fatalf("disclosures %+v, %v; want the unknown delivery's", ds, err)
	}
}

// The decision log: every decision has its policy revision, a hash of its
// input (never the input), its outcome and latency, and names the notice and
// the delivery it governed.
func TestDecisionLog(t *testing.T) {
	ts := newTestStack(t, testOpts{})
	ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")))
	ts.waitNotices(t, 1)
	var rows []struct {
		PolicyRevision string
		InputHash      string
		Allow          bool
		LatencyUS      int64 `gorm:"column:latency_us"`
		NoticeID       int64
		DeliveryID     *int64
		Channel        string
	}
	ts.app.store.RawScan(context.Background(), &rows, `SELECT policy_revision, input_hash, allow, latency_us, notice_id, delivery_id, channel FROM policy_decisions ORDER BY channel`)
	pol, _ := ts.app.policyEngine(context.Background())
	// The email's decision governs the delivery; the portal's, decided with
	// it, governs what the portal page shows.
	if len(rows) != 2 || rows[0].Channel != "email" || rows[1].Channel != "portal" || rows[1].DeliveryID != nil || rows[1].NoticeID != rows[0].NoticeID {
		t.Fatalf("decision log %+v, want the email's and the portal's", rows)
	}
	if rows[0].PolicyRevision != pol.Revision() || len(rows[0].InputHash) != 64 || !rows[0].Allow ||
		rows[0].LatencyUS <= 0 || rows[0].NoticeID == 0 || rows[0].DeliveryID == nil {
		t.Fatalf("decision log %+v", rows)
	}
}

// Compliance endpoints: the active policy's status, and dry runs with the
// active policy or a candidate that never becomes active.
func TestPolicyEndpoints(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	token := ts.apiKey(t, "dev", access.Compliance)
	tenants, err := ts.app.tenantPolicies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pol := tenants.Default
	h, _ := ts.app.handler(tenants)
	r := doRequest(h, "GET", "/v1/policy", "", token, "")
	if r.Code != 200 || !strings.Contains(r.Body.String(), pol.Revision()) || !strings.Contains(r.Body.String(), `"default":true`) ||
		strings.Contains(r.Body.String(), "embedded") {
		t.Fatalf("GET /v1/policy: %d %s", r.Code, r.Body)
	}
	input := `{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"payer_name":"Plan","diagnosis":"x","portal_url":"https://p.example.org/n/1"}}`
	r = doRequest(h, "POST", "/v1/policy/evaluate", "application/json", token, `{"input":`+input+`}`)
	if r.Code != 200 || !strings.Contains(r.Body.String(), `"allow":false`) || !strings.Contains(r.Body.String(), `diagnosis`) || !strings.Contains(r.Body.String(), "notice.rego:") {
		t.Fatalf("evaluate: %d %s", r.Code, r.Body)
	}
	candidate := `{"input":` + input + `,"policy":{"p.rego":"package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": [], \"obligations\": {}}\n"}}`
	r = doRequest(h, "POST", "/v1/policy/evaluate", "application/json", token, candidate)
	if r.Code != 200 || !strings.Contains(r.Body.String(), `"allow":true`) || !strings.Contains(r.Body.String(), `"candidate":true`) {
		t.Fatalf("evaluate candidate: %d %s", r.Code, r.Body)
	}
	broken := `{"input":` + input + `,"policy":{"p.rego":"package tidings.notice\n\ndecision := {"}}`
	if r = doRequest(h, "POST", "/v1/policy/evaluate", "application/json", token, broken); r.Code != 422 || !strings.Contains(r.Body.String(), "p.rego") {
		t.Fatalf("broken candidate: %d %s", r.Code, r.Body)
	}
	if pol.Status().Revision != ts.app.pol.Revision() || pol.Status().LastError != "" {
		t.Fatal("a candidate changed the active policy")
	}
	if r = doRequest(h, "POST", "/v1/policy/evaluate", "application/json", token, `{"input":`+input+`,"policy":{"../etc/x.rego":"x"}}`); r.Code != 400 {
		t.Fatalf("path escape: %d", r.Code)
	}
}

// A policy whose decision the worker cannot honour fails the notice,
// visibly, and nothing is sent: no decision at all, one of the wrong shape,
// one that allows and denies at once, an obligation this version does not
// know, a redaction the notice cannot make, and a route to a confidential
// address the patient does not have. Each is the tenant's active policy
// while the worker turns a published EOB into a notice.
func TestBrokenPolicyDecisionsFailClosed(t *testing.T) {
	const allow = `"allow": true, "deny": []`
	for _, c := range []struct{ name, rego, reason string }{
		{"no decision", "x := 1", "no policy decision (not sent)"},
		{"allow is not a boolean", `decision := {"allow": "yes", "deny": [], "redact": [], "obligations": {}}`, "decision.allow is a string, want a boolean"},
		{"allows and denies", `decision := {"allow": true, "deny": ["x"], "redact": [], "obligations": {}}`, "decision allows and denies at once"},
		{"an unknown obligation", `decision := {` + allow + `, "redact": [], "obligations": {"notify_the_press": true}}`,
			"obligation notify_the_press, which this version cannot meet"},
		{"a redaction the notice cannot make", `decision := {` + allow + `, "redact": ["no_such_field"], "obligations": {}}`,
			"the policy asked for a redaction the notice cannot make"},
		{"a confidential address the patient lacks", `decision := {` + allow + `, "redact": [], "obligations": {"route_to_confidential_address": true}}`,
			"routes this notice to a confidential address, and none is on file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			broken, err := policy.New(context.Background(), fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\n" + c.rego + "\n")}})
			if err != nil {
				t.Fatal(err)
			}
			ts := stackDecidingWith(t, broken)
			ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
			ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")))
			ts.soleNoticeUnsent(t, delivery.NoticeFailed, c.reason)
		})
	}
}

// The minimum-necessary rules read the payload the worker builds: a
// tenant's allowlist narrower than the shipped one denies the EOB notice
// the shipped one allows. The shipped rules and data, with only
// data/allowlist.json changed: one tenant lists no provider_name for EOB
// email (the field the notice carries is refused), another no email at
// all for an EOB (the channel is refused).
func TestNarrowerAllowlistDeniesThroughTheWorker(t *testing.T) {
	for _, c := range []struct {
		name   string
		narrow func(eob map[string]any)
		reason string
	}{
		{"a field it does not list", func(eob map[string]any) {
			var kept []any
			for _, f := range eob["email"].([]any) {
				if f != "provider_name" {
					kept = append(kept, f)
				}
			}
			eob["email"] = kept
		}, `field "provider_name" is not allowed in a eob notice on email`},
		{"a channel it does not list", func(eob map[string]any) { delete(eob, "email") }, `channel "email" is not allowed for a eob notice`},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := fstest.MapFS{}
			err := fs.WalkDir(rego.FS, ".", func(name string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || strings.HasSuffix(name, "_test.rego") {
					return err
				}
				b, err := fs.ReadFile(rego.FS, name)
				if name == "data/allowlist.json" {
					b = editJSON(t, b, func(doc map[string]any) { c.narrow(doc["allowlist"].(map[string]any)["eob"].(map[string]any)) })
				}
				files[name] = &fstest.MapFile{Data: b}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			narrow, err := policy.New(context.Background(), files)
			if err != nil {
				t.Fatal(err)
			}
			ts := stackDecidingWith(t, narrow)
			ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
			ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")))
			ts.soleNoticeUnsent(t, delivery.NoticeDenied, c.reason)
		})
	}
}

// stackDecidingWith is a stack without placeholder contacts whose worker
// decides every tenant's notices with pol.
func stackDecidingWith(t *testing.T, pol *policy.Engine) *testStack {
	t.Helper()
	ts := newTestStack(t, testOpts{NoPlaceholder: true, DeferWorker: true})
	ts.app.pol, ts.app.tenants.Default = pol, pol // the stack's API already made the tenants' set
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	return ts
}

// soleNoticeUnsent waits for the stack's one notice and checks it ended in
// status with a reason that contains reason, and that no mail went out.
func (ts *testStack) soleNoticeUnsent(t *testing.T, status, reason string) {
	t.Helper()
	ts.waitNotices(t, 1)
	outs, err := ts.app.store.NoticeOutcomes(context.Background(), devTenant)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Status != status || !strings.Contains(strings.Join(outs[0].Reasons, "\n"), reason) {
		t.Fatalf("outcomes %+v, want the one notice %s: %s", outs, status, reason)
	}
	time.Sleep(200 * time.Millisecond)
	if msgs := ts.Mail.Messages(); len(msgs) != 0 {
		t.Fatalf("mail sent to %v", recipients(msgs))
	}
}

// A confidential address and an email opt-out hold even under a policy that
// forgets them (here: one that allows everything with no obligations).
func TestPatientRequestsHoldWhateverThePolicySays(t *testing.T) {
	lax, err := policy.New(context.Background(), fstest.MapFS{"p.rego": {Data: []byte(
		"package tidings.notice\n\ndecision := {\"allow\": true, \"deny\": [], \"redact\": [], \"obligations\": {}}\n")}})
	if err != nil {
		t.Fatal(err)
	}
	ts := stackDecidingWith(t, lax)
	ctx := context.Background()
	ts.app.store.UpsertContact(ctx, devTenant, "Patient/Patient2", delivery.Contact{Email: "home@example.org", ConfidentialEmail: "private@example.org", Source: "api"})
	ts.app.store.UpsertContact(ctx, devTenant, "Patient/Patient1", delivery.Contact{Email: "p1@example.org", OptedOutChannels: []string{"email"}, Source: "api"})
	ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")))
	ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessionalTransportation1.json")))
	ts.waitNotices(t, 2)
	var revisions []string
	ts.app.store.RawScan(ctx, &revisions, `SELECT DISTINCT policy_revision FROM policy_decisions`)
	if len(revisions) != 1 || revisions[0] != lax.Revision() {
		t.Fatalf("decided by %q, not the lax policy %s", revisions, lax.Revision())
	}
	time.Sleep(200 * time.Millisecond)
	msgs := ts.Mail.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "private@example.org" {
		t.Fatalf("messages to %v; want one, to the confidential address", recipients(msgs))
	}
}
