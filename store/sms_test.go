package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
)

// A phone is sealed like the email; a STOP from it opts every contact with
// that number out of SMS, once, audited, and START opts them back in,
// leaving their other opt-outs alone.
func TestPhoneIsSealedAndSTOPOptsOut(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	if err := s.EnsureTenant(ctx, "t2", "Tenant 2"); err != nil {
		t.Fatal(err)
	}
	const phone = "+15557654321"
	for _, c := range []struct{ tenant, ref string }{{"t1", "Patient/p1"}, {"t2", "Patient/p9"}} {
		if err := s.UpsertContact(ctx, c.tenant, c.ref, delivery.Contact{Phone: phone, OptedOutChannels: []string{"email"}, Source: "api"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpsertContact(ctx, "t1", "Patient/other", delivery.Contact{Phone: "+15550000000", Source: "api"}); err != nil {
		t.Fatal(err)
	}
	var raw [][]byte
	s.db.Raw(`SELECT phone_sealed FROM contacts`).Scan(&raw)
	for _, r := range raw {
		if strings.Contains(string(r), "555") {
			t.Fatal("phone stored in clear")
		}
	}
	optedOut := func(tenant, ref string) []string {
		c, err := s.ContactFor(ctx, tenant, "", ref)
		if err != nil || c.Phone == "" {
			t.Fatalf("contact %s: %v %q", ref, err, c.Phone)
		}
		return c.OptedOutChannels
	}
	for range 2 { // a second STOP changes nothing
		if n, err := s.SetSMSOptOut(ctx, phone, true); n != 2 || err != nil {
			t.Fatalf("STOP: %d %v", n, err)
		}
	}
	if got := optedOut("t1", "Patient/p1"); !slices.Equal(got, []string{"email", "sms"}) {
		t.Errorf("after STOP: %v", got)
	}
	if got := optedOut("t1", "Patient/other"); len(got) != 0 {
		t.Errorf("another number was opted out: %v", got)
	}
	var audits int64
	s.db.Raw(`SELECT count(*) FROM audit_log WHERE action = 'contact.sms_opt_out'`).Scan(&audits)
	if audits != 4 {
		t.Errorf("%d opt-out audit rows, want 4 (two contacts, two replies)", audits)
	}
	if n, err := s.SetSMSOptOut(ctx, phone, false); n != 2 || err != nil {
		t.Fatalf("START: %d %v", n, err)
	}
	if got := optedOut("t2", "Patient/p9"); !slices.Equal(got, []string{"email"}) {
		t.Errorf("after START: %v", got)
	}
	if err := s.RecordSMSStatus(ctx, "0123456789abcdef0123456789abcdef", "SM1", "delivered"); !errors.Is(err, fault.NotFound) {
		t.Errorf("a status for no delivery: %v", err)
	}
}
