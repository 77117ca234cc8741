package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
)

// GET /v1/disclosures lists one patient's disclosures of the key's tenant,
// oldest first, a page at a time, with the recipients opened; it answers
// a bad query with a 400 that does not repeat the patient, and an
// operator key with 403.
func TestListDisclosures(t *testing.T) {
	e := newWorkflowEnv(t)
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, r := range []struct{ tenant, patient string }{{"t1", "Patient/p1"}, {"t1", "Patient/p1"}, {"t1", "Patient/p1"}, {"t1", "Patient/p2"}, {"t2", "Patient/p1"}} {
		d := delivery.Disclosure{TenantID: r.tenant, PatientIndex: e.st.PatientIndex(r.tenant, r.patient), PatientRef: r.patient, At: base.Add(time.Duration(i) * 24 * time.Hour),
			Status: delivery.DeliverySent, Channel: "email", Recipient: r.tenant + strings.ToLower(r.patient[8:]) + "@example.org",
			NoticeType: "eob", Detail: delivery.DetailRedacted, Redacted: []string{"patient_share"}, Purpose: delivery.PurposePayment,
			NoticeID: int64(10 + i), DeliveryID: int64(20 + i), Attempt: 1}
		if err := e.st.RecordDisclosure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	list := func(token, query string) DisclosuresResponse {
		t.Helper()
		var out DisclosuresResponse
		want(t, e.do(token, "GET", "/v1/disclosures?"+query, "", nil), http.StatusOK, &out)
		return out
	}
	p1 := "patient=" + url.QueryEscape("Patient/p1")
	var got []DisclosureBody
	page := list(complianceOne, p1+"&limit=2")
	got = append(got, page.Disclosures...)
	if page.NextCursor == "" {
		t.Fatalf("a first page of 2 of 3 has no next cursor: %+v", page)
	}
	page = list(complianceOne, p1+"&limit=2&cursor="+page.NextCursor)
	got = append(got, page.Disclosures...)
	if len(got) != 3 || page.NextCursor != "" {
		t.Fatalf("t1's Patient/p1: %+v (next %q)", got, page.NextCursor)
	}
	for i, d := range got {
		if !d.At.Equal(base.Add(time.Duration(i)*24*time.Hour)) || d.Recipient != "t1p1@example.org" || d.Status != "sent" || d.Channel != "email" ||
			d.NoticeType != "eob" || d.Detail != "redacted" || len(d.Redacted) != 1 || d.Purpose != "payment" || d.NoticeID != int64(10+i) || d.DeliveryID != int64(20+i) {
			t.Errorf("entry %d: %+v", i, d)
		}
	}
	if r := list(complianceOne, p1+"&from=2026-03-02&to=2026-03-03T00:00:00Z"); len(r.Disclosures) != 1 || r.Disclosures[0].NoticeID != 11 {
		t.Errorf("one day's: %+v", r)
	}
	if r := list(complianceTwo, p1); len(r.Disclosures) != 1 || r.Disclosures[0].Recipient != "t2p1@example.org" {
		t.Errorf("t2's key sees %+v", r)
	}
	for _, q := range []string{"", "patient=p1", "patient=Patient%2Fx%20y", p1 + "&from=yesterday", p1 + "&from=2026-03-02&to=2026-03-01",
		p1 + "&limit=0", p1 + "&limit=501", p1 + "&cursor=nope", p1 + "&cursor=" + encodeCursor(delivery.DisclosureCursor{})} {
		rec := e.do(complianceOne, "GET", "/v1/disclosures?"+q, "", nil)
		if rec.Code != http.StatusBadRequest || strings.Contains(rec.Body.String(), "p1") {
			t.Errorf("%s: %d %s, want a 400 that does not repeat the patient", q, rec.Code, rec.Body)
		}
	}
	if rec := e.do(tokenOne, "GET", "/v1/disclosures?"+p1, "", nil); rec.Code != http.StatusForbidden {
		t.Errorf("an operator key: %d", rec.Code)
	}
}
