package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/workflow"
)

// swap copies one row's sealed value onto another row, as someone with
// write access to the database (and none to the keys) could.
func swap(t *testing.T, s *Store, table, dstColumn, srcColumn, dstWhere, srcWhere string, args ...any) {
	t.Helper()
	// args hold dstWhere's parameters, then srcWhere's; the statement names src first.
	nDst := strings.Count(dstWhere, "?")
	args = append(append([]any{}, args[nDst:]...), args[:nDst]...)
	res := s.q(context.Background()).Exec(`UPDATE `+table+` SET `+dstColumn+` = (SELECT `+srcColumn+` FROM `+table+` WHERE `+srcWhere+`) WHERE `+dstWhere, args...)
	if res.Error != nil || res.RowsAffected != 1 {
		t.Fatalf("swap %s.%s: %v (%d rows)", table, dstColumn, res.Error, res.RowsAffected)
	}
}

// swapByID copies a column of row from onto row to (by text id) and reads row to.
func swapByID(t *testing.T, s *Store, table, column, to, from string, read func(id string) error) {
	t.Helper()
	swap(t, s, table, column, column, "id = ?", "id = ?", to, from)
	wantCorrupt(t, table+"."+column+" of "+from+" copied to "+to, read(to))
}

func wantCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, seal.ErrCorrupt) {
		t.Errorf("%s: a value copied from another place: err = %v, want seal.ErrCorrupt", what, err)
	}
}

// A sealed value is bound to its tenant, table, column and row: copied
// anywhere else with SQL, it no longer opens. One attack per sealed column.
func TestSealedValuesCopiedElsewhereDoNotOpen(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")

	t.Run("events.resource_sealed", func(t *testing.T) {
		a := mustEvent(t, s, "t1", "sub1", "Appointment", "a", "1")
		b := mustEvent(t, s, "t2", "sub2", "Appointment", "a", "1")
		c := mustEvent(t, s, "t1", "sub1", "Appointment", "c", "1")
		swap(t, s, "events", "resource_sealed", "resource_sealed", "id = ?", "id = ?", c, a)
		_, err := s.LoadEvent(ctx, c)
		wantCorrupt(t, "event of another row", err)
		swap(t, s, "events", "resource_sealed", "resource_sealed", "id = ?", "id = ?", a, b)
		_, err = s.LoadEvent(ctx, a)
		wantCorrupt(t, "event from another tenant", err)
	})

	t.Run("contacts", func(t *testing.T) {
		for _, c := range []struct{ tenant, patient, email string }{
			{"t1", "Patient/p1", "p1@example.org"}, {"t2", "Patient/p1", "attacker@example.org"}, {"t1", "Patient/p2", "p2@example.org"},
		} {
			if err := s.UpsertContact(ctx, c.tenant, c.patient, delivery.Contact{Email: c.email, ConfidentialEmail: "c-" + c.email, EncryptionKey: "k-" + c.email, Source: "api"}); err != nil {
				t.Fatal(err)
			}
		}
		idx1, idx2 := s.PatientIndex("t1", "Patient/p1"), s.PatientIndex("t1", "Patient/p2")
		other1 := s.PatientIndex("t2", "Patient/p1") // the same patient in another tenant
		// Tenant: the same patient in another tenant.
		swap(t, s, "contacts", "email_sealed", "email_sealed", "tenant_id = 't1' AND patient_index = ?", "tenant_id = 't2' AND patient_index = ?", idx1, other1)
		_, err := s.ContactFor(ctx, "t1", "", "Patient/p1")
		wantCorrupt(t, "contacts.email_sealed from another tenant", err)
		// Row: another patient of the same tenant.
		swap(t, s, "contacts", "email_sealed", "email_sealed", "tenant_id = 't1' AND patient_index = ?", "tenant_id = 't1' AND patient_index = ?", idx1, idx2)
		_, err = s.ContactFor(ctx, "t1", "", "Patient/p1")
		wantCorrupt(t, "contacts.email_sealed from another patient", err)
		// Column: the row's own email as its confidential email.
		swap(t, s, "contacts", "confidential_email_sealed", "email_sealed", "tenant_id = 't1' AND patient_index = ?", "tenant_id = 't1' AND patient_index = ?", idx2, idx2)
		_, err = s.ContactFor(ctx, "t1", "", "Patient/p2")
		wantCorrupt(t, "contacts.confidential_email_sealed from email_sealed", err)
		swap(t, s, "contacts", "confidential_email_sealed", "confidential_email_sealed", "tenant_id = 't2' AND patient_index = ?", "tenant_id = 't1' AND patient_index = ?", other1, idx1)
		_, err = s.ContactFor(ctx, "t2", "", "Patient/p1")
		wantCorrupt(t, "contacts.confidential_email_sealed from another tenant", err)
		// The key sealed for another patient's row does not open for this one.
		swap(t, s, "contacts", "encryption_key_sealed", "encryption_key_sealed", "tenant_id = 't1' AND patient_index = ?", "tenant_id = 't1' AND patient_index = ?", idx2, idx1)
		_, err = s.ContactFor(ctx, "t1", "", "Patient/p2")
		wantCorrupt(t, "contacts.encryption_key_sealed from another patient", err)
	})

	t.Run("subscriptions.hmac_key_sealed", func(t *testing.T) {
		for _, sub := range []intake.Subscription{{ID: "signed1", TenantID: "t1"}, {ID: "signed2", TenantID: "t2"}, {ID: "signed3", TenantID: "t1"}} {
			sub.SigningKey = []byte("key of " + sub.ID)
			if err := s.CreateSubscription(ctx, sub, "s3cret-s3cret"); err != nil {
				t.Fatal(err)
			}
		}
		read := func(id string) error { _, _, err := s.SubscriptionSecret(ctx, "", id); return err } // ids unique here
		swapByID(t, s, "subscriptions", "hmac_key_sealed", "signed3", "signed1", read)
		swapByID(t, s, "subscriptions", "hmac_key_sealed", "signed1", "signed2", read)
	})

	t.Run("fhir_sources.credential_sealed", func(t *testing.T) {
		for _, src := range []intake.Source{{ID: "ehr1", TenantID: "t1"}, {ID: "ehr2", TenantID: "t2"}, {ID: "ehr3", TenantID: "t1"}} {
			src.BaseURL, src.AuthType = "https://fhir.example.org/"+src.ID, "bearer"
			if err := s.CreateSource(ctx, src, []byte("token of "+src.ID)); err != nil {
				t.Fatal(err)
			}
		}
		tenantOf := map[string]string{"ehr1": "t1", "ehr2": "t2", "ehr3": "t1"}
		read := func(id string) error { _, _, err := s.SourceWithCredential(ctx, tenantOf[id], id); return err }
		swapByID(t, s, "fhir_sources", "credential_sealed", "ehr3", "ehr1", read) // same tenant
		swapByID(t, s, "fhir_sources", "credential_sealed", "ehr1", "ehr2", read) // another tenant
	})

	var runs []journey.Wake
	t.Run("runs.facts_sealed", func(t *testing.T) {
		now := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
		for _, tenant := range []string{"t1", "t2"} {
			mustWorkflow(t, s, tenant, remindersDef("reminders", "appointment.booked"), journey.WorkflowActive)
		}
		for _, r := range []journey.NewRun{
			{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a1", Facts: workflow.Facts{"patient": "Patient/p1"}},
			{TenantID: "t2", WorkflowID: "reminders", Subject: "Appointment/a1", Facts: workflow.Facts{"patient": "Patient/x"}},
			{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a2", Facts: workflow.Facts{"patient": "Patient/p2"}},
		} {
			runs = append(runs, mustStart(t, s, r, now))
		}
		swap(t, s, "runs", "facts_sealed", "facts_sealed", "id = ?", "id = ?", runs[2].ID, runs[0].ID)
		_, err := s.LoadRun(ctx, runs[2].ID)
		wantCorrupt(t, "facts from another subject's run", err)
		swap(t, s, "runs", "facts_sealed", "facts_sealed", "id = ?", "id = ?", runs[0].ID, runs[1].ID)
		_, err = s.LoadRun(ctx, runs[0].ID)
		wantCorrupt(t, "facts from another tenant's run", err)
	})

	t.Run("notices.payload_sealed", func(t *testing.T) {
		if len(runs) < 3 {
			t.Skip("needs the runs of runs.facts_sealed")
		}
		ev1 := mustEvent(t, s, "t1", "sub1", "Appointment", "n1", "1")
		ev2 := mustEvent(t, s, "t2", "sub2", "Appointment", "n1", "1")
		var ids []int64
		for i, ev := range []int64{ev1, ev2, ev1} {
			r := journey.Run{ID: runs[i].ID, TenantID: runs[i].TenantID}
			n, err := s.EnsureRunNotice(ctx, r, "confirm", "appointment.confirmation", "appointment", ev)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SealNoticePayload(ctx, n.ID, []byte(`{"n":`+itoa(n.ID)+`}`), nil, nil); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, n.ID)
		}
		if p, err := s.NoticePayload(ctx, ids[0]); err != nil || string(p) != `{"n":`+itoa(ids[0])+`}` {
			t.Fatalf("payload at home: %s, %v", p, err)
		}
		swap(t, s, "notices", "payload_sealed", "payload_sealed", "id = ?", "id = ?", ids[2], ids[0])
		_, err := s.NoticePayload(ctx, ids[2])
		wantCorrupt(t, "notice payload from another notice", err)
		swap(t, s, "notices", "payload_sealed", "payload_sealed", "id = ?", "id = ?", ids[0], ids[1])
		_, err = s.NoticePayload(ctx, ids[0])
		wantCorrupt(t, "notice payload from another tenant", err)
	})

	t.Run("segment_members.patient_sealed", func(t *testing.T) {
		for _, m := range []struct{ tenant, segment, patient string }{
			{"t1", "diabetes", "Patient/p1"}, {"t2", "diabetes", "Patient/p1"}, {"t1", "diabetes", "Patient/p2"}, {"t1", "asthma", "Patient/p2"},
		} {
			if _, err := s.AddSegmentMember(ctx, m.tenant, m.segment, m.patient); err != nil {
				t.Fatal(err)
			}
		}
		idx1, idx2 := s.PatientIndex("t1", "Patient/p1"), s.PatientIndex("t1", "Patient/p2")
		swap(t, s, "segment_members", "patient_sealed", "patient_sealed",
			"tenant_id = 't2' AND segment = 'diabetes' AND patient_index = ?", "tenant_id = 't1' AND segment = 'diabetes' AND patient_index = ?", s.PatientIndex("t2", "Patient/p1"), idx1)
		_, err := s.SegmentMembers(ctx, "t2", "diabetes")
		wantCorrupt(t, "segment member from another tenant", err)
		// Another segment's member: a patient moved into a segment it never joined.
		swap(t, s, "segment_members", "patient_sealed", "patient_sealed",
			"tenant_id = 't1' AND segment = 'asthma' AND patient_index = ?", "tenant_id = 't1' AND segment = 'diabetes' AND patient_index = ?", idx2, idx2)
		_, err = s.SegmentMembers(ctx, "t1", "asthma")
		wantCorrupt(t, "segment member from another segment", err)
	})
}
