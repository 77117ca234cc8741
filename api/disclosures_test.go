package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
)

// POST /v1/disclosures/search lists one patient's disclosures of the key's
// tenant, oldest first, a page at a time, with the recipients opened; it
// answers a bad query with a 400 that does not repeat the patient, and an
// operator key with 403. The old GET, which took the patient in its URL,
// answers 400 and says where the query went.
func TestSearchDisclosures(t *testing.T) {
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
	search := func(token string, q DisclosureSearch) *httptest.ResponseRecorder {
		t.Helper()
		b, _ := json.Marshal(q)
		return e.do(token, "POST", "/v1/disclosures/search", "application/json", b)
	}
	list := func(token string, q DisclosureSearch) DisclosuresResponse {
		t.Helper()
		var out DisclosuresResponse
		want(t, search(token, q), http.StatusOK, &out)
		return out
	}
	p1 := DisclosureSearch{Patient: "Patient/p1"}
	with := func(f func(*DisclosureSearch)) DisclosureSearch { q := p1; f(&q); return q }
	var got []DisclosureBody
	page := list(complianceOne, with(func(q *DisclosureSearch) { q.Limit = 2 }))
	got = append(got, page.Disclosures...)
	if page.NextCursor == "" {
		t.Fatalf("a first page of 2 of 3 has no next cursor: %+v", page)
	}
	page = list(complianceOne, with(func(q *DisclosureSearch) { q.Limit, q.Cursor = 2, page.NextCursor }))
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
	if r := list(complianceOne, with(func(q *DisclosureSearch) { q.From, q.To = "2026-03-02", "2026-03-03T00:00:00Z" })); len(r.Disclosures) != 1 || r.Disclosures[0].NoticeID != 11 {
		t.Errorf("one day's: %+v", r)
	}
	if r := list(complianceTwo, p1); len(r.Disclosures) != 1 || r.Disclosures[0].Recipient != "t2p1@example.org" {
		t.Errorf("t2's key sees %+v", r)
	}
	for name, body := range map[string]string{
		"no patient":                 `{}`,
		"not a reference":            `{"patient":"p1"}`,
		"a space":                    `{"patient":"Patient/x y"}`,
		"a bad time":                 `{"patient":"Patient/p1","from":"yesterday"}`,
		"to before from":             `{"patient":"Patient/p1","from":"2026-03-02","to":"2026-03-01"}`,
		"limit below 1":              `{"patient":"Patient/p1","limit":-1}`,
		"limit over 500":             `{"patient":"Patient/p1","limit":501}`,
		"a cursor not ours":          `{"patient":"Patient/p1","cursor":"nope"}`,
		"a zero cursor":              `{"patient":"Patient/p1","cursor":"` + encodeCursor(delivery.DisclosureCursor{}) + `"}`,
		"an unknown field":           `{"patient":"Patient/p1","patient_name":"p1"}`,
		"a limit that is no integer": `{"patient":"Patient/p1","limit":1.5}`,
	} {
		rec := e.do(complianceOne, "POST", "/v1/disclosures/search", "application/json", []byte(body))
		if rec.Code != http.StatusBadRequest || strings.Contains(rec.Body.String(), "p1") {
			t.Errorf("%s: %d %s, want a 400 that does not repeat the patient", name, rec.Code, rec.Body)
		}
	}
	if rec := search(tokenOne, p1); rec.Code != http.StatusForbidden {
		t.Errorf("an operator key: %d", rec.Code)
	}
	rec := e.do(complianceOne, "GET", "/v1/disclosures?patient="+url.QueryEscape("Patient/p1"), "", nil)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "/v1/disclosures/search") || strings.Contains(rec.Body.String(), "p1") {
		t.Errorf("the old GET: %d %s", rec.Code, rec.Body)
	}
}
