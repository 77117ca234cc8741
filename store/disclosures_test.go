package store

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/testenv"
)

// testDisclosure is what a notice of noticeType to p1@example.org
// discloses, before its delivery's outcome completes it; its patient is
// not set.
func testDisclosure(noticeType string) delivery.Disclosure {
	return delivery.Disclosure{Channel: "email", Recipient: "p1@example.org", NoticeType: noticeType,
		Detail: delivery.DetailFull, Purpose: delivery.PurposeOf("", noticeType)}
}

func mustDisclosures(t *testing.T, s *Store, q delivery.DisclosureQuery) ([]delivery.Disclosure, delivery.DisclosureCursor) {
	t.Helper()
	if q.TenantID == "" {
		q.TenantID = "t1"
	}
	out, next, err := s.Disclosures(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return out, next
}

// A delivery the relay took, and one whose outcome is unknown, each add
// an entry to the patient's accounting with the outcome that records
// them; a failed one adds none. The entry names the patient by its blind
// index only and keeps the recipient sealed; it reads back opened, by the
// patient's reference, in this tenant only.
func TestDeliveryOutcomesRecordDisclosures(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	idx := s.PatientIndex("t1", "Patient/p1")
	outcomes := []string{delivery.DeliverySent, delivery.DeliveryFailed, delivery.DeliveryUnknown}
	var sent, unknown delivery.Delivery
	for i, status := range outcomes {
		_, dl := claimedNotice(t, s, "a"+string(rune('1'+i)))
		d := testDisclosure("appointment")
		d.PatientIndex = idx
		if status == delivery.DeliveryUnknown {
			d.Detail, d.Redacted = delivery.DetailRedacted, []string{"provider_name", "location_name"}
		}
		if err := s.FinishDelivery(ctx, dl, status, true, "<m@x>", "", d); err != nil {
			t.Fatal(err)
		}
		switch status {
		case delivery.DeliverySent:
			sent = dl
		case delivery.DeliveryUnknown:
			unknown = dl
		}
	}
	got, next := mustDisclosures(t, s, delivery.DisclosureQuery{PatientRef: "Patient/p1"})
	if len(got) != 2 || next.ID != 0 {
		t.Fatalf("%d disclosures (next %+v), want the sent and the unknown delivery's", len(got), next)
	}
	if g := got[0]; g.DeliveryID != sent.ID || g.NoticeID != sent.NoticeID || g.Attempt != 1 || g.Status != delivery.DeliverySent ||
		g.Recipient != "p1@example.org" || g.Channel != "email" || g.NoticeType != "appointment" || g.Purpose != delivery.PurposeTreatment ||
		g.Detail != delivery.DetailFull || len(g.Redacted) != 0 || time.Since(g.At) > time.Minute {
		t.Errorf("sent delivery's disclosure: %+v", g)
	}
	if g := got[1]; g.DeliveryID != unknown.ID || g.Status != delivery.DeliveryUnknown || g.Detail != delivery.DetailRedacted ||
		!slices.Equal(g.Redacted, []string{"provider_name", "location_name"}) {
		t.Errorf("unknown delivery's disclosure: %+v", g)
	}
	// Stored: the index, never the reference; the address sealed.
	var raw []struct {
		PatientIndex    string
		RecipientSealed []byte
	}
	if err := s.RawScan(ctx, &raw, `SELECT patient_index, recipient_sealed FROM disclosures`); err != nil || len(raw) != 2 {
		t.Fatal(raw, err)
	}
	for _, r := range raw {
		if r.PatientIndex != idx || strings.Contains(r.PatientIndex, "p1") || bytes.Contains(r.RecipientSealed, []byte("example.org")) {
			t.Errorf("stored %q / %q", r.PatientIndex, r.RecipientSealed)
		}
	}
	if other, _ := mustDisclosures(t, s, delivery.DisclosureQuery{TenantID: "t2", PatientRef: "Patient/p1"}); len(other) != 0 {
		t.Errorf("another tenant sees %d disclosures", len(other))
	}
	if other, _ := mustDisclosures(t, s, delivery.DisclosureQuery{PatientRef: "Patient/p2"}); len(other) != 0 {
		t.Errorf("another patient sees %d disclosures", len(other))
	}
	// A recipient copied onto another patient's entry does not open there.
	if err := s.RecordDisclosure(ctx, delivery.Disclosure{TenantID: "t1", PatientIndex: s.PatientIndex("t1", "Patient/p2"), Status: delivery.DisclosureViewed,
		Channel: "portal", Recipient: "p2@example.org", NoticeType: "eob", Detail: delivery.DetailFull, Purpose: delivery.PurposePayment}); err != nil {
		t.Fatal(err)
	}
	if err := s.q(ctx).Exec(`UPDATE disclosures SET recipient_sealed = (SELECT recipient_sealed FROM disclosures WHERE delivery_id = ?)
		WHERE delivery_id IS NULL`, sent.ID).Error; err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Disclosures(ctx, delivery.DisclosureQuery{TenantID: "t1", PatientRef: "Patient/p2"}); err == nil {
		t.Error("a recipient sealed for another row opened")
	}
}

// The batch path records the disclosures of a batch's sent and unknown
// deliveries in the transaction that finishes them, once: a batch
// recorded again adds none.
func TestFinishStartsRecordsDisclosures(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	idx := s.PatientIndex("t1", "Patient/p1")
	var finishes []delivery.RunFinish
	for i, r := range []delivery.SendResult{{Sent: true}, {Temporary: true, Err: "try later"}, {Unknown: true}, {Err: "refused"}} {
		n, dl := claimedNotice(t, s, "b"+string(rune('1'+i)))
		r.Notice, r.Delivery, r.Disclosure = n, dl, testDisclosure("appointment")
		r.Disclosure.PatientIndex = idx
		finishes = append(finishes, delivery.RunFinish{Run: mustLoad(t, s, *n.RunID), Results: []delivery.SendResult{r}})
	}
	for range 2 {
		if _, err := s.FinishStarts(ctx, finishes); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := mustDisclosures(t, s, delivery.DisclosureQuery{PatientRef: "Patient/p1"})
	if len(got) != 2 || got[0].DeliveryID != finishes[0].Results[0].Delivery.ID || got[0].Status != delivery.DeliverySent ||
		got[1].DeliveryID != finishes[2].Results[0].Delivery.ID || got[1].Status != delivery.DeliveryUnknown {
		t.Fatalf("disclosures %+v, want the sent one's and the unknown one's, once each", got)
	}
}

// A patient's accounting reads in time order, a page at a time, within
// from (inclusive) and to (exclusive); what RecordDisclosure refuses, it
// refuses before writing, naming no value.
func TestDisclosuresPageAndRange(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	idx := s.PatientIndex("t1", "Patient/p1")
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 5 {
		d := testDisclosure("eob")
		d.TenantID, d.PatientIndex, d.Status, d.Channel, d.At = "t1", idx, delivery.DisclosureViewed, "portal", base.Add(time.Duration(4-i)*24*time.Hour)
		if err := s.RecordDisclosure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	var days []int
	q := delivery.DisclosureQuery{PatientRef: "Patient/p1", Limit: 2}
	for page := 0; ; page++ {
		got, next := mustDisclosures(t, s, q)
		for _, d := range got {
			days = append(days, d.At.Day())
		}
		if next.ID == 0 {
			break
		}
		if page > 3 {
			t.Fatal("paging does not end")
		}
		q.After = next
	}
	if !slices.Equal(days, []int{1, 2, 3, 4, 5}) {
		t.Errorf("days in order, paged: %v", days)
	}
	got, _ := mustDisclosures(t, s, delivery.DisclosureQuery{PatientRef: "Patient/p1", From: base.Add(24 * time.Hour), To: base.Add(3 * 24 * time.Hour)})
	if len(got) != 2 || got[0].At.Day() != 2 || got[1].At.Day() != 3 {
		t.Errorf("from day 2 to day 4: %v", got)
	}
	for _, bad := range []delivery.Disclosure{
		{TenantID: "t1", PatientIndex: idx, Status: "sent", Channel: "email", NoticeType: "eob", Detail: "full", Purpose: "payment"},
		{TenantID: "t1", PatientIndex: idx, Status: "sent", Channel: "email", Recipient: "secret@example.org", NoticeType: "eob", Detail: "full", Purpose: "advertising"},
		{TenantID: "t1", Status: "sent", Channel: "email", Recipient: "secret@example.org", NoticeType: "eob", Detail: "full", Purpose: "payment"},
	} {
		err := s.RecordDisclosure(ctx, bad)
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("RecordDisclosure(%s): %v", bad.Purpose, err)
		}
	}
}

// The purge removes what is older than its date, of every tenant, and
// audits per tenant how many it removed, in the same transaction; the
// service's role may not purge.
func TestPurgeDisclosures(t *testing.T) {
	s, dbURL, keys := mustStoreAt(t)
	ctx := context.Background()
	if err := s.EnsureTenant(ctx, "t2", "Other"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, r := range []struct {
		tenant string
		age    time.Duration
	}{{"t1", 7 * 365 * 24 * time.Hour}, {"t1", 7 * 365 * 24 * time.Hour}, {"t1", time.Hour}, {"t2", 10 * 365 * 24 * time.Hour}} {
		d := testDisclosure("eob")
		d.TenantID, d.PatientIndex, d.Status, d.At = r.tenant, s.PatientIndex(r.tenant, "Patient/p1"), delivery.DeliverySent, now.Add(-r.age)
		if err := s.RecordDisclosure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	before := now.AddDate(-6, 0, 0)

	app, err := Open(ctx, testenv.AppRoleURL(t, dbURL), keys, Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.PurgeDisclosures(ctx, "", before, "cli"); !errors.Is(err, ErrPurgeNeedsOwner) {
		t.Errorf("purge as the service: %v, want ErrPurgeNeedsOwner", err)
	}
	app.Close()

	removed, err := s.PurgeDisclosures(ctx, "", before, "cli")
	if err != nil || removed["t1"] != 2 || removed["t2"] != 1 {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if left, _ := mustDisclosures(t, s, delivery.DisclosureQuery{PatientRef: "Patient/p1"}); len(left) != 1 {
		t.Errorf("%d of t1's disclosures left, want the recent one", len(left))
	}
	for tenant, want := range map[string]string{"t1": `"removed": 2`, "t2": `"removed": 1`} {
		rows := auditRows(t, s, tenant, "disclosures.purged")
		if len(rows) != 1 || !strings.Contains(string(rows[0].Detail), want) {
			t.Errorf("%s's purge audit: %+v", tenant, rows)
		}
	}
	if removed, err := s.PurgeDisclosures(ctx, "t1", before, "cli"); err != nil || removed["t1"] != 0 || len(auditRows(t, s, "t1", "disclosures.purged")) != 2 {
		t.Errorf("a purge with nothing to remove: %v, %v, and audits it", removed, err)
	}
	if _, err := s.PurgeDisclosures(ctx, "nope", before, "cli"); !errors.Is(err, ErrNotFound) {
		t.Errorf("purge of an unknown tenant: %v", err)
	}
}

// A delivery whose attempt never recorded the relay's answer is marked
// unknown (by the reconciler, or by the next attempt) and accounted for as
// its attempt described it when it claimed the delivery; one whose sealed
// description was altered is marked all the same, and its audit row says
// the disclosure was not recorded.
func TestUnfinishedDeliveriesAreAccountedFor(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	claim := func(resourceID, recipient string) delivery.Delivery {
		t.Helper()
		d := testDisclosure("appointment")
		d.PatientIndex, d.Recipient = s.PatientIndex("t1", "Patient/p1"), recipient
		_, dl := claimedNotice(t, s, resourceID) // claimed without a description
		n := delivery.Notice{ID: dl.NoticeID, TenantID: "t1"}
		// A resend claims it again, with what this attempt discloses.
		if err := s.q(ctx).Exec(`UPDATE deliveries SET status = 'unknown' WHERE id = ?`, dl.ID).Error; err != nil {
			t.Fatal(err)
		}
		got, proceed, err := s.BeginDelivery(ctx, n, "email", "", true, d)
		if err != nil || !proceed || got.Attempts != 2 {
			t.Fatalf("resend claim: %+v %v %v", got, proceed, err)
		}
		return got
	}
	reconciled, altered := claim("u1", "p1@example.org"), claim("u2", "p1-other@example.org")
	if err := s.q(ctx).Exec(`UPDATE deliveries SET disclosure_sealed = (SELECT disclosure_sealed FROM deliveries WHERE id = ?) WHERE id = ?`,
		reconciled.ID, altered.ID).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.q(ctx).Exec(`UPDATE deliveries SET updated_at = now() - interval '11 minutes'`).Error; err != nil {
		t.Fatal(err)
	}
	if n, err := s.MarkUnfinishedUnknown(ctx, 10*time.Minute, 10); err != nil || n != 2 {
		t.Fatalf("marked %d, %v", n, err)
	}
	got, _ := mustDisclosures(t, s, delivery.DisclosureQuery{PatientRef: "Patient/p1"})
	if len(got) != 1 || got[0].DeliveryID != reconciled.ID || got[0].Attempt != 2 || got[0].Status != delivery.DeliveryUnknown ||
		got[0].Recipient != "p1@example.org" || time.Since(got[0].At) < 10*time.Minute {
		t.Fatalf("disclosures %+v, want the reconciled delivery's, unknown, from its second attempt", got)
	}
	for _, r := range auditRows(t, s, "t1", "delivery.unknown") {
		if notRecorded := strings.Contains(string(r.Detail), "not recorded"); notRecorded != (r.SubjectID == itoa(altered.ID)) {
			t.Errorf("delivery %s's unknown audit row: %s", r.SubjectID, r.Detail)
		}
	}
	if d, _ := deliveryStatus(t, s, altered.ID); d != delivery.DeliveryUnknown {
		t.Errorf("the altered delivery is %s, want unknown", d)
	}
}
