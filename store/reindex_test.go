package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/workflow"
)

// Index key versions 1 and 2 of these tests.
var (
	rawIndex1 = bytes.Repeat([]byte{3}, 32)
	rawIndex2 = bytes.Repeat([]byte{4}, 32)
)

// storeIndexed opens the database with seal key k1 and the given index
// key versions, primary the newest.
func storeIndexed(t *testing.T, url string, versions ...int) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, keyringIndexed(t, versions...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func keyringIndexed(t *testing.T, versions ...int) *seal.Keyring {
	t.Helper()
	keys := map[int][]byte{}
	for _, v := range versions {
		keys[v] = map[int][]byte{1: rawIndex1, 2: rawIndex2}[v]
	}
	ix, err := seal.NewIndexKeys(keys, slices.Max(versions), nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := seal.NewKeyring(map[string][]byte{"k1": rawK1}, "", rawIndex1)
	if err != nil {
		t.Fatal(err)
	}
	return kr.WithIndexKeys(ix)
}

// seededStore is a database whose tenant t1 holds the rows of these
// patients, indexed with version 1.
func seededStore(t *testing.T, refs ...string) (*Store, string, []indexedPatient) {
	t.Helper()
	url := testenv.NewDB(t)
	s := storeIndexed(t, url, 1)
	mustTenant(t, s, "t1", "sub-t1")
	mustWorkflow(t, s, "t1", waitView, journey.WorkflowActive)
	var out []indexedPatient
	for _, ref := range refs {
		out = append(out, seedPatient(t, s, "t1", ref))
	}
	return s, url, out
}

// A patient's rows in one tenant, found only through their indexes.
type indexedPatient struct {
	tenant, ref         string
	patientRun, apptRun int64
}

// waitView waits for a portal view, so RecordEngagement wakes its runs.
var waitView = workflow.Definition{ID: "viewed", Trigger: workflow.Trigger{Event: "eob.received"}, Steps: []workflow.Step{
	{ID: "notice", Type: workflow.StepSend, Channel: "email", Template: "eob.notice"},
	{ID: "wait-view", Type: workflow.StepWaitEvent, Events: []string{"portal.viewed"}, Timeout: "7d", OnTimeout: "done"},
	{ID: "done", Type: workflow.StepEnd},
}}

// seedPatient writes a patient's contacts (the API's and a source's), a
// run of the patient as a whole and one of an appointment (both waiting
// for a portal view), an engagement, a disclosure and a segment membership.
func seedPatient(t *testing.T, s *Store, tenant, ref string) indexedPatient {
	t.Helper()
	ctx := context.Background()
	p := indexedPatient{tenant: tenant, ref: ref}
	if err := s.UpsertContact(ctx, tenant, ref, delivery.Contact{Email: tenant + "-api@example.org", Source: "api", EncryptionKey: seededKey(tenant), Phone: seededPhone(tenant)}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertContact(ctx, tenant, ref, delivery.Contact{Email: tenant + "-ehr@example.org", Source: "fhir", FHIRSource: "ehr"}); err != nil {
		t.Fatal(err)
	}
	idx := s.PatientIndex(tenant, ref)
	start := func(subject string) int64 {
		w := mustStart(t, s, journey.NewRun{TenantID: tenant, WorkflowID: waitView.ID, Subject: subject, PatientIndex: idx,
			Facts: workflow.Facts{"patient": ref}}, t0)
		mustAdvance(t, s, waitView, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
		return w.ID
	}
	p.patientRun, p.apptRun = start(patientSubject(idx)), start("Appointment/of-"+strings.TrimPrefix(ref, "Patient/"))
	if _, _, err := s.RecordEngagement(ctx, tenant, ref, "", "clicked", nil, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordDisclosure(ctx, delivery.Disclosure{TenantID: tenant, PatientIndex: idx, PatientRef: ref, Status: delivery.DeliverySent,
		Channel: "email", Recipient: tenant + "-api@example.org", NoticeType: "eob", Detail: delivery.DetailFull,
		Purpose: delivery.PurposePayment, At: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddSegmentMember(ctx, tenant, "vip", ref); err != nil {
		t.Fatal(err)
	}
	// A marketing opt-out, as the one-click link writes it (Unsubscribe).
	if err := s.q(ctx).Exec(`INSERT INTO purpose_opt_outs (tenant_id, patient_index, purpose, created_at, patient_sealed) VALUES (?, ?, 'marketing', ?, ?)`,
		tenant, idx, t0, s.seal([]byte(ref), colOptOutPatient, tenant, "marketing", idx)).Error; err != nil {
		t.Fatal(err)
	}
	return p
}

// seededKey stands for a patient's encryption key: sealed for the
// contact's row like its email, so re-keyed with it.
func seededKey(tenant string) string {
	return "-----BEGIN CERTIFICATE-----\nkey of a patient of " + tenant + "\n-----END CERTIFICATE-----\n"
}

// seededPhone is a patient's phone, one per tenant: sealed for the
// contact's row and indexed per tenant, so re-keyed with it.
func seededPhone(tenant string) string {
	return fmt.Sprintf("+1555%07d", crc32.ChecksumIEEE([]byte(tenant))%10000000)
}

// findAll checks that every lookup of the patient finds its rows.
func findAll(t *testing.T, s *Store, p indexedPatient, when string) {
	t.Helper()
	ctx := context.Background()
	for source, want := range map[string]string{"": "-api@example.org", "ehr": "-api@example.org"} {
		c, err := s.ContactFor(ctx, p.tenant, source, p.ref)
		if err != nil || c.Email != p.tenant+want || c.EncryptionKey != seededKey(p.tenant) || c.Phone != seededPhone(p.tenant) {
			t.Errorf("%s: contact for source %q: %v (encryption key kept: %v)", when, source, err, c.EncryptionKey == seededKey(p.tenant))
		}
	}
	// A STOP from the phone finds the contact by the phone's index.
	if n, err := s.SetSMSOptOut(ctx, seededPhone(p.tenant), true); err != nil || n != 1 {
		t.Errorf("%s: a STOP from the patient's phone reached %d contacts, %v", when, n, err)
	}
	if cs, err := s.ContactsOf(ctx, p.tenant, "ehr", []string{p.ref}); err != nil || cs[p.ref].Email != p.tenant+"-api@example.org" {
		t.Errorf("%s: contacts of the batch: %d found, %v", when, len(cs), err)
	}
	if prefs, err := s.ContactPreferencesOf(ctx, p.tenant, "ehr", []string{p.ref}); err != nil || prefs[p.ref].Language != "" || len(prefs) != 1 {
		t.Errorf("%s: contact preferences: %d found, %v", when, len(prefs), err)
	}
	ds, _, err := s.Disclosures(ctx, delivery.DisclosureQuery{TenantID: p.tenant, PatientRef: p.ref})
	if err != nil || len(ds) != 1 || ds[0].Recipient != p.tenant+"-api@example.org" {
		t.Errorf("%s: disclosures: %d, %v", when, len(ds), err)
	}
	if ps, err := s.OptedOutPurposes(ctx, p.tenant, p.ref); err != nil || len(ps) != 1 || ps[0] != "marketing" {
		t.Errorf("%s: opted-out purposes %v, %v", when, ps, err)
	}
	if joined, err := s.AddSegmentMember(ctx, p.tenant, "vip", p.ref); err != nil || joined {
		t.Errorf("%s: the member joined the segment again (%v)", when, err)
	}
	members, err := s.SegmentMembers(ctx, p.tenant, "vip")
	if err != nil || !slices.Contains(members, p.ref) {
		t.Errorf("%s: segment members: %d, %v", when, len(members), err)
	}
	// Nobody re-enters: the patient's run is found under any version.
	r := mustLoad(t, s, p.patientRun)
	if w, created, err := s.StartRun(ctx, journey.NewRun{TenantID: p.tenant, WorkflowID: waitView.ID, WorkflowVersion: 1, Priority: workflow.PriorityNormal,
		Subject: patientSubject(s.PatientIndex(p.tenant, p.ref)), PatientIndex: s.PatientIndex(p.tenant, p.ref),
		Facts: workflow.Facts{"patient": p.ref}}, t0); err != nil || created || w.ID != p.patientRun {
		t.Errorf("%s: starting the patient's run again: created %v, run %d, want %d (%v)", when, created, w.ID, p.patientRun, err)
	}
	// The engagements a run sees, and the runs an engagement wakes.
	events, err := s.EngagementsSince(ctx, r, t0)
	if err != nil || len(events) == 0 || events[0].Type != "clicked" {
		t.Errorf("%s: engagements of the patient's run: %v, %v", when, events, err)
	}
	_, wakes, err := s.RecordEngagement(ctx, p.tenant, p.ref, "", "portal.viewed", nil, t0.Add(time.Hour))
	if woken := runIDs(wakes); err != nil || !slices.Contains(woken, p.patientRun) || !slices.Contains(woken, p.apptRun) {
		t.Errorf("%s: a portal view woke %v, want runs %d and %d (%v)", when, woken, p.patientRun, p.apptRun, err)
	}
}

// indexVersions counts a tenant's rows by table and index version.
func indexVersions(t *testing.T, s *Store, tenant string) map[string]map[int]int64 {
	t.Helper()
	uses, err := s.IndexUses(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[int]int64{}
	for _, u := range uses {
		if out[u.Table] == nil {
			out[u.Table] = map[int]int64{}
		}
		out[u.Table][u.Version] += u.Rows
	}
	return out
}

// One patient indexes differently in two tenants.
func TestPatientIndexesArePerTenant(t *testing.T) {
	url := testenv.NewDB(t)
	s := storeIndexed(t, url, 1)
	for _, tenant := range []string{"t1", "t2"} {
		mustTenant(t, s, tenant, "sub-"+tenant)
		mustWorkflow(t, s, tenant, waitView, journey.WorkflowActive)
		seedPatient(t, s, tenant, "Patient/p1")
	}
	for _, table := range []string{"contacts", "runs", "engagements", "disclosures", "segment_members"} {
		var rows []struct{ TenantID, PatientIndex string }
		if err := s.RawScan(context.Background(), &rows, `SELECT DISTINCT tenant_id, patient_index FROM `+table); err != nil {
			t.Fatal(err)
		}
		byTenant := map[string]string{}
		for _, r := range rows {
			byTenant[r.TenantID] = r.PatientIndex
		}
		if len(rows) != 2 || byTenant["t1"] == byTenant["t2"] || !strings.HasPrefix(byTenant["t1"], "v1:") {
			t.Errorf("%s: indexes %v, want one per tenant, different, of version 1", table, byTenant)
		}
	}
}

// After a rotation every lookup still finds the rows of the old version
// (and of the format before versions); reindex, interrupted and run
// again, moves all it can to the new version, after which the old
// version's key can go.
func TestReindexAfterRotation(t *testing.T) {
	ctx := context.Background()
	url := testenv.NewDB(t)
	old := storeIndexed(t, url, 1)
	var patients []indexedPatient
	for _, tenant := range []string{"t1", "t2"} {
		mustTenant(t, old, tenant, "sub-"+tenant)
		mustWorkflow(t, old, tenant, waitView, journey.WorkflowActive)
		patients = append(patients, seedPatient(t, old, tenant, "Patient/p1"))
	}
	// Rows written before versions: p2's contact, known from its segment
	// membership; p3's engagement, known from nowhere.
	for _, ref := range []string{"Patient/p2", "Patient/p3"} {
		legacy := old.keys.Index().At("t1", 0, indexPatient, ref)
		if ref == "Patient/p2" {
			if _, err := old.AddSegmentMember(ctx, "t1", "vip", ref); err != nil {
				t.Fatal(err)
			}
			if err := old.UpsertContact(ctx, "t1", ref, delivery.Contact{Email: "p2@example.org", Source: "api"}); err != nil {
				t.Fatal(err)
			}
			if _, err := old.exec(ctx, `UPDATE contacts SET patient_index = $1, email_sealed = $2, patient_sealed = NULL WHERE patient_index = $3`,
				legacy, old.seal([]byte("p2@example.org"), colContactEmail, "t1", legacy), old.PatientIndex("t1", ref)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := old.exec(ctx, `INSERT INTO engagements (tenant_id, patient_index, type, received_at) VALUES ('t1', $1, 'clicked', now())`, legacy); err != nil {
			t.Fatal(err)
		}
	}

	rotated := storeIndexed(t, url, 1, 2)
	for _, p := range patients {
		findAll(t, rotated, p, "after the rotation, "+p.tenant)
	}
	if c, err := rotated.ContactFor(ctx, "t1", "", "Patient/p2"); err != nil || c.Email != "p2@example.org" {
		t.Errorf("the contact written before versions: %v", err)
	}

	// Interrupted after two pages of one row, then run again.
	stop := errors.New("interrupted")
	var lines []string
	pages := 0
	_, err := rotated.Reindex(ctx, "t1", ReindexOptions{PageSize: 1, Progress: func(p ReindexProgress) error {
		pages++
		lines = append(lines, fmt.Sprintf("%+v", p))
		if pages == 2 {
			return stop
		}
		return nil
	}})
	if !errors.Is(err, stop) {
		t.Fatalf("interrupted reindex: %v", err)
	}
	if v := indexVersions(t, rotated, "t1"); v["contacts"][2] != 2 || v["contacts"][0] != 1 {
		t.Fatalf("after the interruption contacts are on %v, want p1's two re-keyed and p2's left", v["contacts"])
	}
	findAll(t, rotated, patients[0], "midway")
	progress, err := rotated.Reindex(ctx, "t1", ReindexOptions{PageSize: 2, Progress: func(p ReindexProgress) error {
		lines = append(lines, fmt.Sprintf("%+v", p))
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rekeyed, unresolved := 0, 0
	for _, p := range progress {
		rekeyed, unresolved = rekeyed+p.Rekeyed, unresolved+p.Unresolved
	}
	if unresolved != 1 || rekeyed == 0 {
		t.Errorf("the rerun re-keyed %d rows and left %d unresolved, want p3's engagement alone left", rekeyed, unresolved)
	}
	for table, byVersion := range indexVersions(t, rotated, "t1") {
		want := map[int]int64{2: byVersion[2]}
		if table == "engagements" {
			want[0] = 1 // p3's, whose patient nothing names
		}
		if !maps.Equal(byVersion, want) {
			t.Errorf("t1's %s after reindex: %v, want all on version 2", table, byVersion)
		}
	}
	if v := indexVersions(t, rotated, "t2"); v["contacts"][1] != 2 || v["contacts"][2] != 0 {
		t.Errorf("t2, not reindexed, has contacts %v", v["contacts"])
	}
	if err := rotated.AuditReindex(ctx, "t1", rekeyed, unresolved); err != nil {
		t.Fatal(err)
	}
	if rows := auditRows(t, rotated, "t1", "index.reindexed"); len(rows) != 1 || rows[0].SubjectID != "v2" {
		t.Errorf("audit rows %+v", rows)
	}
	for _, l := range lines {
		if strings.Contains(l, "Patient/") || strings.Contains(l, "@example.org") {
			t.Errorf("a progress line names a patient: %s", l)
		}
	}

	// Without version 1, t1's rows are all still found.
	current := storeIndexed(t, url, 2)
	findAll(t, current, patients[0], "with version 2 alone")
	if c, err := current.ContactFor(ctx, "t1", "", "Patient/p2"); err != nil || c.Email != "p2@example.org" {
		t.Errorf("the contact written before versions, re-keyed: %v", err)
	}
	if members, err := current.SegmentMembers(ctx, "t1", "vip"); err != nil || len(members) != 2 {
		t.Errorf("segment members: %d, %v", len(members), err)
	}
}

// A reindex that meets a value that does not open for its row (copied
// from another patient's) leaves the row, counts it, and names no value.
func TestReindexLeavesSwappedValues(t *testing.T) {
	ctx := context.Background()
	old, url, _ := seededStore(t, "Patient/p1", "Patient/p2")
	swap(t, old, "disclosures", "patient_sealed", "patient_sealed", "patient_index = ?", "patient_index = ?",
		old.PatientIndex("t1", "Patient/p1"), old.PatientIndex("t1", "Patient/p2"))
	rotated := storeIndexed(t, url, 1, 2)
	progress, err := rotated.Reindex(ctx, "t1", ReindexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range progress {
		want := 0
		if p.Table == "disclosures" {
			want = 1
		}
		if p.Unresolved != want {
			t.Errorf("%s: %d unresolved, want %d", p.Table, p.Unresolved, want)
		}
	}
}

// Reindex run as the service's role cannot rewrite disclosures: it fails
// there, after committing the tables before, with an error that names no
// patient nor index; run again as the owner, it completes.
func TestReindexErrorsNamePatientsNowhere(t *testing.T) {
	ctx := context.Background()
	old, url, seeded := seededStore(t, "Patient/canary-4711")
	p := seeded[0]
	app, err := Open(ctx, testenv.AppRoleURL(t, url), keyringIndexed(t, 1, 2), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	progress, err := app.Reindex(ctx, "t1", ReindexOptions{})
	if err == nil || !strings.Contains(err.Error(), "reindex disclosures") {
		t.Fatalf("reindex as the service: %v, want disclosures refused", err)
	}
	t.Logf("refused: %v", err)
	for _, secret := range append(old.patientProbes("t1", p.ref), "canary", "@example.org") {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error names %q: %v", secret, err)
		}
	}
	if len(progress) != 5 || progress[0].Table != "contacts" || progress[0].Rekeyed != 2 {
		t.Errorf("progress before the failure: %+v", progress)
	}
	owner := storeIndexed(t, url, 1, 2)
	if _, err := owner.Reindex(ctx, "t1", ReindexOptions{}); err != nil {
		t.Fatal(err)
	}
	for table, byVersion := range indexVersions(t, owner, "t1") {
		if len(byVersion) != 1 || byVersion[2] == 0 {
			t.Errorf("%s after the owner's reindex: %v", table, byVersion)
		}
	}
	findAll(t, storeIndexed(t, url, 2), p, "after the owner's reindex")
}
