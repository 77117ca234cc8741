package main

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/notify"
)

// A relay that takes the message and whose reply to DATA is lost: each
// notice goes out once, its delivery is unknown and nothing retries it,
// however long we wait. An operator lists them; resolve --resend sends
// one again (policy asked again): unknown again while the relay still
// drops its reply, then sent; resolve --sent
// records the other sent without sending. Both are audited as "cli".
func TestReplyLostAfterDataIsUnknownAndResolved(t *testing.T) {
	var hangUp atomic.Bool
	hangUp.Store(true)
	ts := newTestStack(t, testOpts{HangUpAfterData: func([]string) bool { return hangUp.Load() }})
	ctx := context.Background()
	for _, f := range []string{"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json", "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"} {
		if r := ts.notify(t, ts.wrap(t, fixture(t, f))); r.Status != 202 {
			t.Fatalf("notify %s: status %d", f, r.Status)
		}
	}
	ids := ts.waitDeliveries(t, delivery.DeliveryUnknown, 2)
	// Past the first retry's backoff: a retry would have sent a second copy.
	time.Sleep(journey.RetryDelay(1) + 2*time.Second)
	if n := len(ts.Mail.Messages()); n != 2 {
		t.Fatalf("the catcher has %d messages, want each notice exactly once", n)
	}
	if got := ts.waitDeliveries(t, delivery.DeliveryUnknown, 2); len(got) != 2 {
		t.Fatalf("unknown deliveries %v, want %v", got, ids)
	}
	var msgIDs []string
	ts.app.store.RawScan(ctx, &msgIDs, `SELECT message_id FROM deliveries ORDER BY id`)
	if len(msgIDs) != 2 || msgIDs[0] == "" || msgIDs[1] == "" {
		t.Errorf("unknown deliveries record the Message-ID sent (for the relay's logs): %q", msgIDs)
	}
	// The recorded Message-ID is the one the relay got: an operator can
	// look each unknown delivery up in its log.
	for _, id := range msgIDs {
		found := false
		for _, m := range ts.Mail.Messages() {
			if strings.Contains(string(m.Data), "\r\nMessage-ID: "+id+"\r\n") {
				found = true
			}
		}
		if !found {
			t.Errorf("unknown delivery's Message-ID %q is on no captured mail", id)
		}
	}

	t.Setenv("TIDINGS_DATABASE_URL", ts.DBURL)
	var out bytes.Buffer
	if err := realMain(ctx, []string{"deliveries", "unknown", "--tenant", devTenant}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !strings.Contains(out.String(), "\n"+strconv.FormatInt(id, 10)+" ") {
			t.Errorf("deliveries unknown does not list %d:\n%s", id, out.String())
		}
	}
	if err := realMain(ctx, []string{"deliveries", "resolve", strconv.FormatInt(ids[0], 10), "--sent", "--resend"}, io.Discard, io.Discard); err == nil {
		t.Error("resolve with both --sent and --resend was accepted")
	}

	email, err := notify.NewEmailChannel(notify.SMTPConfig{Host: ts.app.cfg.SMTPHost, Port: ts.app.cfg.SMTPPort,
		From: ts.app.cfg.SMTPFrom, RequireTLS: true, RootCAs: ts.Mail.CertPool(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer email.Close()
	// --resend while the relay still drops its reply: one more copy, and
	// the delivery is unknown again.
	out.Reset()
	if err := ts.app.resendDelivery(ctx, email, devPlaceholderDomain, ids[0], &out); err == nil ||
		!strings.Contains(out.String(), "unknown") {
		t.Fatalf("resend into a lost reply: %v\n%s", err, out.String())
	}
	if n := len(ts.Mail.Messages()); n != 3 {
		t.Fatalf("after a resend the catcher has %d messages, want 3", n)
	}
	// --resend, with the relay answering again.
	hangUp.Store(false)
	out.Reset()
	if err := ts.app.resendDelivery(ctx, email, devPlaceholderDomain, ids[0], &out); err != nil {
		t.Fatalf("resend: %v\n%s", err, out.String())
	}
	if n := len(ts.Mail.Messages()); n != 4 {
		t.Fatalf("after the second resend the catcher has %d messages, want 4", n)
	}
	if err := ts.app.resendDelivery(ctx, email, devPlaceholderDomain, ids[0], io.Discard); err == nil {
		t.Error("a second resend of a delivery now sent was accepted")
	}

	// --sent: recorded, nothing sent.
	if err := realMain(ctx, []string{"deliveries", "resolve", strconv.FormatInt(ids[1], 10), "--sent"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := len(ts.Mail.Messages()); n != 4 {
		t.Fatalf("resolve --sent sent something: %d messages", n)
	}
	outs, _ := ts.app.store.NoticeOutcomes(ctx, devTenant)
	for _, o := range outs {
		if o.Status != delivery.NoticeSent || o.Delivery != delivery.DeliverySent {
			t.Errorf("notice %d: %s, delivery %s; want both sent", o.NoticeID, o.Status, o.Delivery)
		}
	}
	var resolutions []struct{ Actor, Resolution string }
	ts.app.store.RawScan(ctx, &resolutions, `SELECT actor, detail->>'resolution' AS resolution FROM audit_log
		WHERE action = 'delivery.resolved' ORDER BY id`)
	if len(resolutions) != 3 || resolutions[0] != (struct{ Actor, Resolution string }{"cli", "resend"}) ||
		resolutions[2] != (struct{ Actor, Resolution string }{"cli", "sent"}) {
		t.Errorf("resolutions audited: %+v", resolutions)
	}
	out.Reset()
	if err := realMain(ctx, []string{"deliveries", "unknown"}, &out, io.Discard); err != nil || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("deliveries unknown after resolving both: %v\n%s", err, out.String())
	}
}
