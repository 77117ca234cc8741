package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/delivery"
)

// A contact's sealed email copied with SQL from another tenant's contact
// (an attacker redirecting a patient's notices to an address they control)
// does not open: the notice fails for good and the relay sees no mail.
func TestSwappedContactEmailFailsTheNoticeWithoutSending(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true, NoPlaceholder: true})
	ctx := context.Background()
	if err := ts.app.store.EnsureTenant(ctx, "attacker", "Attacker"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tenant, email string }{{devTenant, "member@example.org"}, {"attacker", "attacker@evil.example"}} {
		if err := ts.app.store.UpsertContact(ctx, c.tenant, "Patient/Patient2", delivery.Contact{Email: c.email, Source: "api"}); err != nil {
			t.Fatal(err)
		}
	}
	db, err := pgx.Connect(ctx, ts.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	tag, err := db.Exec(ctx, `UPDATE contacts SET email_sealed = (SELECT email_sealed FROM contacts WHERE tenant_id = 'attacker')
		WHERE tenant_id = $1`, devTenant)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("swap: %v (%d rows)", err, tag.RowsAffected())
	}
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json"))); r.Status != 202 {
		t.Fatalf("status %d", r.Status)
	}
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	ts.waitNotices(t, 1)
	outs, err := ts.app.store.NoticeOutcomes(ctx, devTenant)
	if err != nil || len(outs) != 1 {
		t.Fatalf("outcomes %+v, %v", outs, err)
	}
	if outs[0].Status != delivery.NoticeFailed || !strings.Contains(strings.Join(outs[0].Reasons, ""), "does not open") {
		t.Fatalf("outcome %+v, want failed because the address does not open; mail %+v", outs[0], ts.Mail.Messages())
	}
	time.Sleep(300 * time.Millisecond)
	if got := ts.Mail.Messages(); len(got) != 0 {
		t.Fatalf("%d message(s) sent, the first to %v", len(got), got[0].To)
	}
	if strings.Contains(ts.Logs.String(), "attacker@evil.example") || strings.Contains(ts.Logs.String(), "member@example.org") {
		t.Fatal("an address reached the logs")
	}
}
