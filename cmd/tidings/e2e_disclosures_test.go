package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
)

// An EOB goes out through the worker twice (the notice from the batch
// path, the reminder from a woken run's send): each mail the relay took
// is in the patient's accounting of disclosures, with the workflow's
// purpose, read back through POST /v1/disclosures/search and tidings
// disclosures (JSON and CSV); tidings disclosures purge removes what is
// past the retention, refuses a date inside it, and audits itself.
func TestDisclosuresEndToEnd(t *testing.T) {
	ts := newTestStack(t, testOpts{NoWorkflows: true, NoPlaceholder: true, ScheduleEvery: 100 * time.Millisecond})
	ctx := context.Background()
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	operator := ts.apiKey(t, devTenant, access.Operator)
	def := `{"id": "eob-ops", "trigger": {"event": "eob.received"}, "purpose": "operations", "sender": {"name": "Plan"},
		"steps": [
			{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"},
			{"id": "pause", "type": "wait", "duration": "2s"},
			{"id": "reminder", "type": "send", "channel": "email", "template": "eob.reminder"},
			{"id": "done", "type": "end"}]}`
	saveAndActivate(t, h, operator, "eob-ops", def)
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	if r := ts.notify(t, ts.wrap(t, fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"))); r.Status != 202 {
		t.Fatalf("EOB: %d", r.Status)
	}
	msgs, err := ts.Mail.WaitFor(ctxT(t, 60*time.Second), 2)
	if err != nil {
		t.Fatalf("waiting for the notice and its reminder: %v", err)
	}
	ts.waitRun(t, "ExplanationOfBenefit/EOBPharmacy1", "eob-ops", "completed", ended("completed"))
	for _, m := range msgs {
		if strings.Join(m.To, ",") != "member@example.org" {
			t.Fatalf("mail to %v", m.To)
		}
	}
	var deliveries []int64
	ts.app.store.RawScan(ctx, &deliveries, `SELECT id FROM deliveries WHERE status = 'sent' ORDER BY id`)
	if len(deliveries) != 2 {
		t.Fatalf("sent deliveries %v, want 2", deliveries)
	}

	// Through the API, as compliance.
	compliance := ts.apiKey(t, devTenant, access.Compliance)
	list := func() api.DisclosuresResponse {
		t.Helper()
		r := doRequest(h, "POST", "/v1/disclosures/search", "application/json", compliance, `{"patient":"Patient/Patient2","from":"2020-01-01"}`)
		var out api.DisclosuresResponse
		if r.Code != http.StatusOK || json.Unmarshal(r.Body.Bytes(), &out) != nil {
			t.Fatalf("POST /v1/disclosures/search: %d %s", r.Code, r.Body)
		}
		return out
	}
	got := list().Disclosures
	if len(got) != 2 {
		t.Fatalf("disclosures %+v, want the notice's and the reminder's", got)
	}
	for i, d := range got {
		if d.DeliveryID != deliveries[i] || d.Status != "sent" || d.Channel != "email" || d.Recipient != "member@example.org" ||
			d.NoticeType != "eob" || d.Purpose != "operations" || d.Detail == "" || d.NoticeID == 0 || time.Since(d.At) > 5*time.Minute {
			t.Errorf("disclosure %d: %+v", i, d)
		}
	}
	if r := doRequest(h, "POST", "/v1/disclosures/search", "application/json", operator, `{"patient":"Patient/Patient2"}`); r.Code != http.StatusForbidden {
		t.Errorf("an operator key: %d", r.Code)
	}

	// Through the CLI, with the stack's keys.
	t.Setenv("TIDINGS_DATABASE_URL", ts.DBURL)
	t.Setenv("TIDINGS_SEAL_KEYS", ts.app.cfg.SealKeys)
	t.Setenv("TIDINGS_SEAL_PRIMARY", "")
	t.Setenv("TIDINGS_BLIND_INDEX_KEY", ts.app.cfg.BlindIndexKey)
	cli := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := realMain(ctx, args, &out, io.Discard)
		return out.String(), err
	}
	out, err := cli("disclosures", "--tenant", devTenant, "--patient", "Patient/Patient2", "--format", "json")
	var fromCLI []api.DisclosureBody
	if err != nil || json.Unmarshal([]byte(out), &fromCLI) != nil || len(fromCLI) != 2 || fromCLI[0].DeliveryID != deliveries[0] ||
		fromCLI[1].Recipient != "member@example.org" || fromCLI[1].Purpose != "operations" {
		t.Fatalf("disclosures --format json: %v\n%s", err, out)
	}
	out, err = cli("disclosures", "--tenant", devTenant, "--patient", "Patient/Patient2", "--from", "2020-01-01", "--format", "csv")
	rows, cerr := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || cerr != nil || len(rows) != 3 || rows[0][4] != "recipient" || rows[1][4] != "member@example.org" || rows[2][8] != "operations" {
		t.Fatalf("disclosures --format csv: %v %v\n%s", err, cerr, out)
	}
	if out, err := cli("disclosures", "--tenant", devTenant, "--patient", "Patient/Nobody", "--format", "json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("another patient: %v %q", err, out)
	}
	var ue usageError
	if _, err := cli("disclosures", "--tenant", devTenant, "--patient", "Patient2"); !errors.As(err, &ue) {
		t.Errorf("a patient that is not a reference: %v, want a usage error", err)
	}

	// Purge: the first entry is made seven years old (as the owner may).
	ts.app.store.RawScan(ctx, &[]int64{}, `UPDATE disclosures SET disclosed_at = now() - interval '7 years' WHERE delivery_id = ? RETURNING id`, deliveries[0])
	if _, err := cli("disclosures", "purge", "--before", time.Now().UTC().Format(time.RFC3339)); !errors.As(err, &ue) {
		t.Errorf("purge inside the retention: %v, want a usage error", err)
	}
	if out, err := cli("disclosures", "purge"); err != nil || !strings.Contains(out, devTenant+": 1 removed") {
		t.Fatalf("purge: %v %q", err, out)
	}
	if got := list().Disclosures; len(got) != 1 || got[0].DeliveryID != deliveries[1] {
		t.Errorf("after the purge: %+v", got)
	}
	var purged []string
	ts.app.store.RawScan(ctx, &purged, `SELECT actor || ' ' || (detail->>'removed') FROM audit_log WHERE action = 'disclosures.purged' AND tenant_id = ?`, devTenant)
	if len(purged) != 1 || purged[0] != "cli 1" {
		t.Errorf("purge audit rows %q, want one by cli removing 1", purged)
	}
}
