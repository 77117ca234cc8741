package console

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/store"
)

// The subscriptions page shows the tenant's subscriptions as GET
// /v1/subscriptions/{id} reports them (status, last heartbeat, open gaps)
// and its sources without their credentials, and nothing of another
// tenant.
func TestSubscriptionsPage(t *testing.T) {
	var st *store.Store
	e := newEnv(t, func(_ *Config, s *store.Store) { st = s })
	ctx := context.Background()
	if err := st.CreateSource(ctx, intake.Source{ID: "ehr", TenantID: "t1", BaseURL: "https://ehr.example/fhir", AuthType: "bearer"}, []byte("sekret-bearer-token")); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []intake.Subscription{
		{ID: "eobs", TenantID: "t1", Topic: "http://example.org/topic/eob", SourceID: "ehr", HeartbeatPeriod: time.Minute},
		{ID: "theirs", TenantID: "t2", Topic: "http://example.org/topic/other"},
	} {
		if err := st.CreateSubscription(ctx, sub, "secret-"+sub.ID); err != nil {
			t.Fatal(err)
		}
	}
	beat := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	if err := st.RecordStatus(ctx, "t1", "eobs", "heartbeat", "active", 5, beat); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordEventNumbers(ctx, "t1", "eobs", "", []int64{1, 2, 5}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.DetectGaps(ctx, -time.Hour); err != nil || n != 1 {
		t.Fatalf("gaps: %d %v", n, err)
	}
	b := e.browser()
	b.signIn(e.key("t1", access.Integration))
	r := b.get("/console/subscriptions")
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	row := r.body[strings.Index(r.body, "<code>eobs</code>"):]
	row = row[:strings.Index(row, "</tr>")]
	for _, want := range []string{"active", "ehr", "2026-03-01 12:30:00Z", "1 (60 s)", `<span class="bad">1</span>`} {
		if !strings.Contains(row, want) {
			t.Errorf("the subscription's row lacks %q:\n%s", want, row)
		}
	}
	if !strings.Contains(r.body, "https://ehr.example/fhir") || strings.Contains(r.body, "sekret") || strings.Contains(r.body, "theirs") {
		t.Errorf("sources, credentials or another tenant's subscription:\n%s", r.body)
	}
}
