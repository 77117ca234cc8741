package main

import (
	"context"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/links"
)

// A workflow with tracking: its mail's portal link becomes a signed click
// redirect and its HTML gets an open pixel; a workflow without it sends
// the link as it is. Loading the pixel records "opened" and clicking
// "clicked", each waking the run that waits for it; the click leads to
// the notice's own portal link and nowhere else. Tampered and expired
// tokens get 4xx and record nothing.
func TestTrackedMailRecordsOpensAndClicks(t *testing.T) {
	ts := newTestStack(t, testOpts{NoWorkflows: true, NoPlaceholder: true})
	token := ts.apiKey(t, "dev", access.Operator)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	saveAndActivate(t, h, token, "eob-tracked", `{"id": "eob-tracked", "tracking": true, "trigger": {"event": "eob.received"},
		"sender": {"name": "Plan", "from": "tracked@plan.example"},
		"steps": [{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"},
			{"id": "wait-open", "type": "wait_event", "events": ["opened"], "timeout": "7d", "on_timeout": "done"},
			{"id": "wait-click", "type": "wait_event", "events": ["clicked"], "timeout": "7d", "next": "engaged", "on_timeout": "done"},
			{"id": "engaged", "type": "end", "reason": "clicked"},
			{"id": "done", "type": "end"}]}`)
	saveAndActivate(t, h, token, "eob-plain", `{"id": "eob-plain", "trigger": {"event": "eob.received"},
		"sender": {"name": "Plan", "from": "plain@plan.example"},
		"steps": [{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`)
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 2)
	msgs := ts.Mail.Messages()
	tracked := decodedText(t, mailFrom(t, msgs, "tracked@plan.example").Data)
	plain := decodedText(t, mailFrom(t, msgs, "plain@plan.example").Data)

	portalRE := regexp.MustCompile(regexp.QuoteMeta(ts.BaseURL) + `/portal/dev/notices/[A-Za-z0-9_-]+`)
	if !portalRE.MatchString(plain) || strings.Contains(plain, "/t/") {
		t.Fatalf("the untracked mail's links changed:\n%s", plain)
	}
	if portalRE.MatchString(tracked) {
		t.Fatalf("the tracked mail still links to the portal directly:\n%s", tracked)
	}
	clickURLs := regexp.MustCompile(regexp.QuoteMeta(ts.BaseURL)+`/t/c/[A-Za-z0-9_-]+`).FindAllString(tracked, -1)
	openURLs := regexp.MustCompile(regexp.QuoteMeta(ts.BaseURL)+`/t/o/[A-Za-z0-9_-]+`).FindAllString(tracked, -1)
	if len(clickURLs) < 2 || len(openURLs) != 1 {
		t.Fatalf("%d click links (text and HTML) and %d pixels, want ≥2 and 1:\n%s", len(clickURLs), len(openURLs), tracked)
	}
	var portalToken string
	if err := ts.app.store.RawScan(context.Background(), &portalToken, `SELECT n.portal_token FROM notices n JOIN runs r ON r.id = n.run_id WHERE r.workflow_id = 'eob-tracked'`); err != nil {
		t.Fatal(err)
	}
	wantTarget := ts.BaseURL + "/portal/dev/notices/" + portalToken

	var subject string
	ts.app.store.RawScan(context.Background(), &subject, `SELECT subject FROM runs WHERE workflow_id = 'eob-tracked'`)
	at := func(step string) func(journey.RunView) bool {
		return func(r journey.RunView) bool { return r.Status == "waiting" && r.Step == step }
	}
	ts.waitRun(t, subject, "eob-tracked", "waiting for an open", at("wait-open"))
	engagements := func(kind string) int {
		return ts.count(t, `SELECT count(*) FROM engagements WHERE type = $1`, kind)
	}

	// Refusals first: they record nothing.
	signer, err := ts.app.linkSigner()
	if err != nil {
		t.Fatal(err)
	}
	raw := clickURLs[0][len(ts.BaseURL+"/t/c/"):]
	tok, err := signer.Verify(raw, links.KindClick, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if tok.Target != wantTarget {
		t.Fatalf("the click leads to %q, want the notice's portal link", tok.Target)
	}
	expiredTok := tok
	expiredTok.Expires = time.Now().Add(-time.Minute).Truncate(time.Second)
	elsewhere := tok
	elsewhere.Target = "https://attacker.example/phish"
	otherKey, _ := links.NewSigner([]byte(strings.Repeat("k", 32)))
	b, _ := base64.RawURLEncoding.DecodeString(raw)
	b[len(b)-1] ^= 1
	for _, c := range []struct {
		name, path string
		want       int
	}{
		{"tampered", "/t/c/" + base64.RawURLEncoding.EncodeToString(b), 404},
		{"expired", "/t/c/" + signer.Sign(expiredTok), 410},
		{"another target, another key", "/t/c/" + otherKey.Sign(elsewhere), 404},
		{"a click token as pixel", "/t/o/" + raw, 404},
		{"garbage", "/t/o/%00%ff", 404},
	} {
		if code, body := httpDo(t, "GET", ts.BaseURL+c.path, "", ""); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	if n, m := engagements("opened"), engagements("clicked"); n+m != 0 {
		t.Fatalf("refused links recorded %d opens and %d clicks", n, m)
	}

	// The pixel: the run that waits for an open goes on.
	if code, body := httpDo(t, "GET", openURLs[0], "", ""); code != 200 || !strings.HasPrefix(body, "GIF89a") {
		t.Fatalf("pixel: %d %q", code, body)
	}
	ts.waitRun(t, subject, "eob-tracked", "waiting for a click", at("wait-click"))
	// The click: to the portal link the notice carried, and the run ends.
	if code, loc := httpDo(t, "GET", clickURLs[0], "", ""); code != 302 || loc != wantTarget {
		t.Fatalf("click: %d %q, want 302 to the notice's portal link", code, loc)
	}
	run := ts.waitRun(t, subject, "eob-tracked", "ended as clicked", ended("clicked"))
	if p := pathOf(run); p != "notice wait-open(opened) wait-click(clicked) engaged" {
		t.Errorf("path %s", p)
	}
	if n, m := engagements("opened"), engagements("clicked"); n != 1 || m != 1 {
		t.Fatalf("%d opens and %d clicks recorded, want 1 and 1", n, m)
	}
	if n := ts.count(t, `SELECT count(*) FROM audit_log WHERE action = 'engagement.recorded' AND detail->>'type' IN ('opened', 'clicked')`); n != 2 {
		t.Fatalf("%d audit rows for the engagements, want 2", n)
	}

	// No PHI in the tracking URLs or the logs, and no token in the logs.
	logs := ts.Logs.String()
	for _, u := range append(clickURLs, openURLs...) {
		tokRaw := u[strings.LastIndexByte(u, '/')+1:]
		dec, _ := base64.RawURLEncoding.DecodeString(tokRaw)
		for _, phi := range []string{"member@example.org", "Patient2"} {
			if strings.Contains(u, phi) || strings.Contains(string(dec), phi) {
				t.Errorf("%s carries %q", u, phi)
			}
		}
		if strings.Contains(logs, tokRaw) {
			t.Error("the logs carry a tracking token")
		}
	}
	for _, phi := range []string{"member@example.org", "Patient2"} {
		if strings.Contains(logs, phi) {
			t.Errorf("the logs carry %q", phi)
		}
	}
}

// The links of a send step after a wait (the worker's single-send path,
// not the first steps' batch): a tracked reminder is tracked, and a
// marketing reminder whose patient unsubscribed from the first mail is
// denied by the policy.
func TestRemindersCarryLinksAndHonourUnsubscribe(t *testing.T) {
	ts := newTestStack(t, testOpts{NoWorkflows: true, NoPlaceholder: true, ScheduleEvery: 100 * time.Millisecond, WakeSlack: 500 * time.Millisecond})
	token := ts.apiKey(t, "dev", access.Operator)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := `"steps": [{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"},
		{"id": "pause", "type": "wait", "duration": "3s"},
		{"id": "reminder", "type": "send", "channel": "email", "template": "eob.reminder"}, {"id": "done", "type": "end"}]}`
	saveAndActivate(t, h, token, "offers", `{"id": "offers", "purpose": "marketing", "trigger": {"event": "eob.received"},
		"sender": {"name": "Plan", "from": "offers@plan.example"}, `+steps)
	saveAndActivate(t, h, token, "tracked", `{"id": "tracked", "tracking": true, "trigger": {"event": "eob.received"},
		"sender": {"name": "Plan", "from": "tracked@plan.example"}, `+steps)
	ts.putContact(t, "Patient2", `{"email":"member@example.org","marketing_authorized":true}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 2)
	offer := headerOf(t, mailFrom(t, ts.Mail.Messages(), "offers@plan.example"))
	unsubURL := strings.TrimSuffix(strings.TrimPrefix(offer.Get("List-Unsubscribe"), "<"), ">")
	if code, body := httpDo(t, "POST", unsubURL, oneClick, "List-Unsubscribe=One-Click"); code != 200 {
		t.Fatalf("POST %d %s", code, body)
	}
	ts.waitNotices(t, 4)
	var reasons []string
	if err := ts.app.store.RawScan(context.Background(), &reasons, `SELECT n.reasons::text FROM notices n JOIN runs r ON r.id = n.run_id
		WHERE r.workflow_id = 'offers' AND n.step = 'reminder' AND n.status = 'denied'`); err != nil {
		t.Fatal(err)
	}
	if len(reasons) != 1 || !strings.Contains(reasons[0], "the patient unsubscribed from marketing notices") {
		t.Fatalf("the marketing reminder after the unsubscribe: denied with %q", reasons)
	}
	var reminder []string
	for _, m := range ts.Mail.Messages() {
		if text := decodedText(t, m.Data); strings.HasPrefix(text, "Reminder") {
			reminder = append(reminder, text)
			if !strings.Contains(headerOf(t, m).Get("From"), "tracked@plan.example") {
				t.Fatalf("a reminder from %s went out", headerOf(t, m).Get("From"))
			}
		}
	}
	if len(reminder) != 1 || !strings.Contains(reminder[0], ts.BaseURL+"/t/o/") || !strings.Contains(reminder[0], ts.BaseURL+"/t/c/") ||
		strings.Contains(reminder[0], "/portal/dev/notices/") {
		t.Fatalf("tracked reminders: %q", reminder)
	}
}
