package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

// The audit page searches the tenant's rows (newest first, with their
// chain positions) and verifies the chain with its signed checkpoints;
// after a row is tampered with, the verification fails at that row.
func TestAuditSearchAndVerify(t *testing.T) {
	keys, err := audit.ParseKeys("c1:"+seal.NewRandomKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.ParseSigningKey("s1:" + seal.NewRandomKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.ParsePublicKeys(signer.PublicKeyLine())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var st *store.Store
	e := newEnv(t, func(c *Config, s *store.Store) {
		st = s
		c.Chain = &audit.Verifier{Store: s, Keys: keys, PublicKeys: pub, CheckpointDir: dir}
	})
	ctx := context.Background()
	for _, r := range []store.AuditRecord{
		{TenantID: "t1", Actor: "key:a", Action: "policy.activated", SubjectType: "policy", SubjectID: "rev1"},
		{TenantID: "t1", Actor: "key:a", Action: "policy.rejected", SubjectType: "policy", SubjectID: "rev2"},
		{TenantID: "t1", Actor: "key:b", Action: "key.created", SubjectType: "key", SubjectID: "k9"},
		{TenantID: "t2", Actor: "key:c", Action: "policy.activated", SubjectType: "policy", SubjectID: "theirs"},
	} {
		if err := st.Audit(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	chainer := &audit.Chainer{Store: st, Keys: keys, Signer: signer, CheckpointDir: dir, CheckpointEvery: time.Nanosecond}
	if _, err := chainer.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn(e.key("t1", access.Compliance))
	r := b.get("/console/audit")
	if r.status != http.StatusOK || !strings.Contains(r.body, "rev1") || !strings.Contains(r.body, "k9") || strings.Contains(r.body, "theirs") {
		t.Fatalf("the audit page: %d %s", r.status, r.body)
	}
	r = b.post("/console/audit", url.Values{"do": {"search"}, "action_prefix": {"policy."}})
	if !strings.Contains(r.body, "rev1") || !strings.Contains(r.body, "rev2") || strings.Contains(r.body, "k9") ||
		strings.Index(r.body, "rev2") > strings.Index(r.body, "rev1") {
		t.Errorf("searching policy.: %s", r.body)
	}
	if r = b.post("/console/audit", url.Values{"do": {"search"}, "from": {"yesterday"}}); r.status != http.StatusBadRequest {
		t.Errorf("a bad date: %d", r.status)
	}
	r = b.post("/console/audit", url.Values{"do": {"verify"}})
	if r.status != http.StatusOK || !strings.Contains(r.body, `<span class="ok">OK</span>`) {
		t.Fatalf("verifying: %d %s", r.status, r.body)
	}
	// Tamper with a chained row: the verification names it.
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE audit_log SET subject_id = 'forged' WHERE subject_id = 'rev2'`); err != nil {
		t.Fatal(err)
	}
	r = b.post("/console/audit", url.Values{"do": {"verify"}})
	if !strings.Contains(r.body, `<span class="bad">FAIL</span>`) {
		t.Errorf("a tampered chain verifies: %s", r.body)
	}
}

// The disclosures page lists one patient's disclosures of the tenant as
// POST /v1/disclosures/search does; the patient goes in the posted form,
// never in the URL or the log, and a malformed one is refused.
func TestDisclosuresReport(t *testing.T) {
	var st *store.Store
	e := newEnv(t, func(_ *Config, s *store.Store) { st = s })
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, tenant := range []string{"t1", "t1", "t2"} {
		d := delivery.Disclosure{TenantID: tenant, PatientIndex: st.PatientIndex(tenant, "Patient/canary7"), PatientRef: "Patient/canary7", At: base.Add(time.Duration(i) * 24 * time.Hour),
			Status: delivery.DeliverySent, Channel: "email", Recipient: tenant + "-canary7@example.org", NoticeType: "eob",
			Detail: delivery.DetailRedacted, Redacted: []string{"patient_share"}, Purpose: delivery.PurposePayment, NoticeID: int64(10 + i), DeliveryID: int64(20 + i), Attempt: 1}
		if err := st.RecordDisclosure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	b.signIn(e.key("t1", access.Compliance))
	if r := b.get("/console/disclosures"); r.status != http.StatusOK || !strings.Contains(r.body, `name="patient"`) {
		t.Fatalf("the disclosures page: %d", r.status)
	}
	r := b.post("/console/disclosures", url.Values{"patient": {"Patient/canary7"}})
	if r.status != http.StatusOK || strings.Count(r.body, "t1-canary7@example.org") != 2 || strings.Contains(r.body, "t2-canary7") ||
		!strings.Contains(r.body, "left out: patient_share") || !strings.Contains(r.body, "payment") {
		t.Errorf("the report: %d %s", r.status, r.body)
	}
	r = b.post("/console/disclosures", url.Values{"patient": {"Patient/canary7"}, "from": {"2026-03-02"}})
	if strings.Count(r.body, "t1-canary7@example.org") != 1 {
		t.Errorf("from the second day: %s", r.body)
	}
	if r = b.post("/console/disclosures", url.Values{"patient": {"canary7"}}); r.status != http.StatusBadRequest {
		t.Errorf("a patient without Patient/: %d", r.status)
	}
	if strings.Contains(e.logs.String(), "canary7") {
		t.Errorf("the patient reached the log:\n%s", e.logs)
	}
	op := e.browser()
	op.signIn(e.key("t1", access.Operator))
	if r := op.post("/console/disclosures", url.Values{"patient": {"Patient/canary7"}}); r.status != http.StatusForbidden || strings.Contains(r.body, "canary7@") {
		t.Errorf("an operator asks for the report: %d", r.status)
	}
}
