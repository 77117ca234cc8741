package store

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/seal/sealtest"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/webhook"
	"github.com/tidings-health/tidings/workflow"
)

var (
	rawK1 = bytes.Repeat([]byte{0x11}, 32)
	rawK2 = bytes.Repeat([]byte{0x22}, 32)
)

// storeWith opens the database with a keyring of the given keys.
func storeWith(t *testing.T, url, primary string, keys map[string][]byte) *Store {
	t.Helper()
	kr, err := seal.NewKeyring(keys, primary, bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), url, kr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sealedWorld is one row with a sealed value in every sealed column, in two tenants.
type sealedWorld struct {
	events  []int64
	runs    []int64
	notices []int64
}

func populate(t *testing.T, s *Store) sealedWorld {
	t.Helper()
	ctx := context.Background()
	var w sealedWorld
	now := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, tenant := range []string{"t1", "t2"} {
		sub := "sub-" + tenant
		if err := s.EnsureTenant(ctx, tenant, tenant); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSource(ctx, intake.Source{ID: "ehr-" + tenant, TenantID: tenant, BaseURL: "https://fhir.example.org/", AuthType: "bearer"},
			[]byte("token-"+tenant)); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSubscription(ctx, intake.Subscription{ID: sub, TenantID: tenant, SigningKey: []byte("hmac-" + tenant)}, "s3cret-s3cret"); err != nil {
			t.Fatal(err)
		}
		mustWorkflow(t, s, tenant, remindersDef("reminders", "appointment.booked"), journey.WorkflowActive)
		if err := s.CreateWebhookEndpoint(ctx, webhook.Endpoint{TenantID: tenant, ID: "hooks", URL: "https://hooks.example/" + tenant},
			[]byte("whsecret-"+tenant)); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"Patient/p1", "Patient/p2"} {
			if err := s.UpsertContact(ctx, tenant, p, delivery.Contact{Email: tenant + p + "@example.org", ConfidentialEmail: "c" + tenant + p, EncryptionKey: "k" + tenant + p, Phone: "+1555" + tenant + p, Source: "api"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AddSegmentMember(ctx, tenant, "diabetes", p); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.RecordEngagement(ctx, tenant, p, "", "page.viewed", []byte(`{"page":"`+tenant+p+`"}`), now); err != nil {
				t.Fatal(err)
			}
			ev := mustEvent(t, s, tenant, sub, "Appointment", tenant+p, "1")
			wake := mustStart(t, s, journey.NewRun{TenantID: tenant, WorkflowID: "reminders", Subject: "Appointment/" + p,
				PatientIndex: s.PatientIndex(tenant, p), Facts: workflow.Facts{"patient": p}}, now)
			n, err := s.EnsureRunNotice(ctx, journey.Run{ID: wake.ID, TenantID: tenant}, "confirm", "appointment.confirmation", "appointment", ev)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SealNoticePayload(ctx, n.ID, []byte(tenant+p), []byte("portal"+tenant+p), nil); err != nil {
				t.Fatal(err)
			}
			if added, _, err := s.Unsubscribe(ctx, tenant, n.ID, "marketing", now); err != nil || !added {
				t.Fatalf("unsubscribe: %v, %v", added, err)
			}
			if err := s.RecordDisclosure(ctx, delivery.Disclosure{TenantID: tenant, PatientIndex: s.PatientIndex(tenant, p), PatientRef: p, Status: delivery.DeliverySent,
				Channel: "email", Recipient: tenant + p + "@example.org", NoticeType: "appointment", Detail: delivery.DetailFull,
				Purpose: delivery.PurposeTreatment, NoticeID: n.ID}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{PatientIndex: s.PatientIndex(tenant, p), PatientRef: p, Channel: "email",
				Recipient: tenant + p + "@example.org", NoticeType: "appointment", Detail: delivery.DetailFull, Purpose: delivery.PurposeTreatment}); err != nil {
				t.Fatal(err)
			}
			w.events, w.runs, w.notices = append(w.events, ev), append(w.runs, wake.ID), append(w.notices, n.ID)
		}
	}
	return w
}

// downgrade rewrites the first value of every sealed column in format
// version 1 (as releases before places sealed it), under kid.
func downgrade(t *testing.T, s *Store, kid string, raw []byte) {
	t.Helper()
	ctx := context.Background()
	for _, tb := range sealedTables {
		for _, c := range tb.cols {
			var rows []struct {
				TenantID string
				Row      string
				Value    []byte
			}
			if err := s.RawScan(ctx, &rows, `SELECT tenant_id, concat_ws(chr(31), `+strings.Join(tb.row, ", ")+`) AS row, `+c.column+` AS value FROM `+tb.name+
				` WHERE `+c.column+` IS NOT NULL ORDER BY `+tb.key[0]+` LIMIT 1`); err != nil || len(rows) != 1 {
				t.Fatalf("%s.%s: %v", tb.name, c.column, err)
			}
			r := rows[0]
			rowKey := strings.Split(r.Row, "\x1f")
			plain, err := s.open(r.Value, c, r.TenantID, rowKey...)
			if err != nil {
				t.Fatal(err)
			}
			legacy := c.at("").Legacy
			if legacy == "" {
				legacy = c.table + "." + c.column
			}
			old := sealtest.SealV1(raw, kid, legacy, plain)
			if err := s.q(ctx).Exec(`UPDATE `+tb.name+` SET `+c.column+` = ? WHERE `+c.column+` = ?`, old, r.Value).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
}

var errStop = errors.New("stopped after one page")

// Rows sealed the old way (format 1) and rows under an old key are all
// re-sealed with the primary key; a rotation stopped after one page and
// run again finishes the job; then the old key can be removed from the
// configuration and everything still opens.
func TestRotateReSealsEverythingResumably(t *testing.T) {
	ctx := context.Background()
	url := testenv.NewDB(t)
	old := storeWith(t, url, "", map[string][]byte{"k1": rawK1})
	w := populate(t, old)
	downgrade(t, old, "k1", rawK1)
	uses, err := old.SealedUses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v1, columnCount := 0, 0
	for _, u := range uses {
		if u.Version == 1 {
			v1++
		}
	}
	for _, tb := range sealedTables {
		columnCount += len(tb.cols)
	}
	if v1 != columnCount {
		t.Fatalf("%d columns hold a format-1 value, want all %d: %+v", v1, columnCount, uses)
	}

	both := storeWith(t, url, "k2", map[string][]byte{"k1": rawK1, "k2": rawK2})
	pages := 0
	_, err = both.Rotate(ctx, RotateOptions{PageSize: 2, Progress: func(p RotateProgress) error {
		if pages++; pages == 1 {
			return errStop
		}
		return nil
	}})
	if !errors.Is(err, errStop) {
		t.Fatalf("stopped rotation: %v", err)
	}
	if n := usesOf(t, both, "k1"); n == 0 {
		t.Fatal("a rotation stopped after one page left no k1 values: the test proves nothing")
	}
	progress, err := both.Rotate(ctx, RotateOptions{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	resealed := 0
	for _, p := range progress {
		if p.Unopenable != 0 || !p.Done {
			t.Errorf("%+v", p)
		}
		resealed += p.Resealed
	}
	if resealed == 0 {
		t.Fatal("the rerun re-sealed nothing")
	}
	uses, err = both.SealedUses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	columns := map[string]bool{}
	for _, u := range uses {
		columns[u.Table+"."+u.Column] = true
		if u.Version != 2 || u.KeyID != "k2" {
			t.Errorf("after rotation: %+v", u)
		}
	}
	for _, tb := range sealedTables {
		for _, c := range tb.cols {
			if !columns[tb.name+"."+c.column] {
				t.Errorf("%s.%s holds no sealed values: the test does not cover it", tb.name, c.column)
			}
		}
	}
	again, err := both.Rotate(ctx, RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range again {
		if p.Resealed != 0 || p.Pages != 0 {
			t.Errorf("a second rotation did work: %+v", p)
		}
	}

	// k1 removed: everything still opens.
	s := storeWith(t, url, "", map[string][]byte{"k2": rawK2})
	for _, tenant := range []string{"t1", "t2"} {
		for _, p := range []string{"Patient/p1", "Patient/p2"} {
			c, err := s.ContactFor(ctx, tenant, "", p)
			if err != nil || c.Email != tenant+p+"@example.org" || c.ConfidentialEmail != "c"+tenant+p || c.EncryptionKey != "k"+tenant+p {
				t.Errorf("contact %s %s: %+v, %v", tenant, p, c, err)
			}
		}
		if _, key, err := s.SubscriptionSecret(ctx, tenant, "sub-"+tenant); err != nil || len(key) == 0 {
			t.Errorf("subscription of %s: %v", tenant, err)
		}
		if _, cred, err := s.SourceWithCredential(ctx, tenant, "ehr-"+tenant); err != nil || string(cred) != "token-"+tenant {
			t.Errorf("source of %s: %q, %v", tenant, cred, err)
		}
		if m, err := s.SegmentMembers(ctx, tenant, "diabetes"); err != nil || len(m) != 2 {
			t.Errorf("segment of %s: %v, %v", tenant, m, err)
		}
		if ps, err := s.OptedOutPurposes(ctx, tenant, "Patient/p1"); err != nil || len(ps) != 1 {
			t.Errorf("opt-outs of %s: %v, %v", tenant, ps, err)
		}
	}
	for i := range w.events {
		if _, err := s.LoadEvent(ctx, w.events[i]); err != nil {
			t.Errorf("event %d: %v", w.events[i], err)
		}
		if r, err := s.LoadRun(ctx, w.runs[i]); err != nil || r.Facts["patient"] == "" {
			t.Errorf("run %d: %v, %v", w.runs[i], r.Facts, err)
		}
		if _, err := s.NoticePayload(ctx, w.notices[i]); err != nil {
			t.Errorf("notice %d: %v", w.notices[i], err)
		}
	}
	var eng []struct {
		ID         int64
		TenantID   string
		DataSealed []byte
	}
	// The four with data; the unsubscribes' engagements carry none.
	if err := s.RawScan(ctx, &eng, `SELECT id, tenant_id, data_sealed FROM engagements WHERE data_sealed IS NOT NULL`); err != nil || len(eng) != 4 {
		t.Fatalf("engagements: %d, %v", len(eng), err)
	}
	for _, e := range eng {
		if _, err := s.open(e.DataSealed, colEngagementData, e.TenantID, itoa(e.ID)); err != nil {
			t.Errorf("engagement %d: %v", e.ID, err)
		}
	}
}

func usesOf(t *testing.T, s *Store, kid string) int64 {
	t.Helper()
	uses, err := s.SealedUses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, u := range uses {
		if u.KeyID == kid {
			n += u.Values
		}
	}
	return n
}

// A value swapped onto another row before rotation is not laundered by
// it: rotation cannot open it, leaves it, and counts it.
func TestRotateLeavesSwappedValuesUnopenable(t *testing.T) {
	ctx := context.Background()
	url := testenv.NewDB(t)
	old := storeWith(t, url, "", map[string][]byte{"k1": rawK1})
	populate(t, old)
	swap(t, old, "engagements", "data_sealed", "data_sealed", "id = (SELECT max(id) FROM engagements)", "id = (SELECT min(id) FROM engagements)")
	both := storeWith(t, url, "k2", map[string][]byte{"k1": rawK1, "k2": rawK2})
	progress, err := both.Rotate(ctx, RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unopenable := map[string]int{} // a table's columns bound to different row keys are walked apart
	for _, p := range progress {
		unopenable[p.Table] += p.Unopenable
	}
	for table, n := range unopenable {
		want := 0
		if table == "engagements" {
			want = 1
		}
		if n != want {
			t.Errorf("%s: %d unopenable, want %d", table, n, want)
		}
	}
	if n := usesOf(t, both, "k1"); n != 1 {
		t.Errorf("%d values left under k1, want the 1 swapped", n)
	}
}
