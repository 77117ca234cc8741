package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/worker"
	"github.com/tidings-health/tidings/workflow"
)

// batchEOBs are published EOBs of different patients and shapes.
var batchEOBs = []string{
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOutpatient1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json",
	"carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json",
	"hl7-fhir-r4-spec/explanationofbenefit-example.json",
	"davinci-pdex/ExplanationOfBenefit-PDexPriorAuth1.json", // denied by the policy
}

// records is what a stack wrote for its EOBs, in a form two stacks can be
// compared by: per resource id, the notice's status and reasons, its
// delivery, whether its decision is logged (and linked to the delivery),
// the run's state and path, its disclosures, and the audit actions about
// all of them.
func (ts *testStack) records(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	var rows []struct {
		ResourceID, Status, Reasons, Delivery, RunStatus, Step, Path, Actions, Disclosed string
		Decisions, Linked, Delivered                                                     int
		Due                                                                              bool
	}
	if err := ts.app.store.RawScan(ctx, &rows, `
		SELECT e.resource_id, n.status, n.reasons::text AS reasons,
			coalesce((SELECT d.status || '/' || d.attempts || '/' || d.tls FROM deliveries d WHERE d.notice_id = n.id), '') AS delivery,
			(SELECT count(*) FROM policy_decisions p WHERE p.notice_id = n.id) AS decisions,
			(SELECT count(*) FROM policy_decisions p JOIN deliveries d ON d.id = p.delivery_id WHERE p.notice_id = n.id) AS linked,
			r.status AS run_status, r.step, r.due_at IS NOT NULL AS due,
			(SELECT string_agg(step || ':' || happened, ',' ORDER BY seq) FROM run_steps s WHERE s.run_id = r.id) AS path,
			(SELECT count(*) FROM engagements g WHERE g.subject = r.subject AND g.type = 'delivered') AS delivered,
			coalesce((SELECT string_agg(x.status || '/' || x.channel || '/' || x.notice_type || '/' || x.detail || x.redacted::text || '/' || x.purpose
				|| '/' || x.attempt || '/' || (x.delivery_id = (SELECT d.id FROM deliveries d WHERE d.notice_id = n.id)), ',')
				FROM disclosures x WHERE x.notice_id = n.id AND x.patient_index = r.patient_index), '') AS disclosed,
			(SELECT string_agg(action, ',' ORDER BY action) FROM audit_log a WHERE
				(a.subject_type = 'event' AND a.subject_id = e.id::text) OR (a.subject_type = 'run' AND a.subject_id = r.id::text)
				OR (a.subject_type = 'notice' AND a.subject_id = n.id::text)
				OR (a.subject_type = 'delivery' AND a.subject_id IN (SELECT d.id::text FROM deliveries d WHERE d.notice_id = n.id))) AS actions
		FROM events e JOIN notices n ON n.event_id = e.id LEFT JOIN runs r ON r.id = n.run_id
		WHERE e.tenant_id = ?`, devTenant); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows {
		out[r.ResourceID] = fmt.Sprintf("%+v", r)
	}
	return out
}

// A batch of new EOBs claimed at once (the batch path) leaves exactly the
// records, audit rows and mail that the same EOBs leave one at a time.
func TestBatchStartsWriteWhatOneAtATimeWrites(t *testing.T) {
	batch := newTestStack(t, testOpts{DeferWorker: true})
	single := newTestStack(t, testOpts{})
	for _, f := range batchEOBs {
		body := fixture(t, f)
		if r := batch.notify(t, batch.wrap(t, body)); r.Status != 202 {
			t.Fatalf("%s: %d %s", f, r.Status, r.Body)
		}
		// One at a time: the next is posted once this one has its outcome.
		if r := single.notify(t, single.wrap(t, body)); r.Status != 202 {
			t.Fatalf("%s: %d %s", f, r.Status, r.Body)
		}
		single.waitSettled(t)
	}
	if err := batch.StartWorker(); err != nil {
		t.Fatal(err)
	}
	batch.waitSettled(t)
	want := len(batchEOBs) - 1 // the preauthorization is denied
	for _, ts := range []*testStack{batch, single} {
		if n := len(ts.Mail.Messages()); n != want {
			t.Fatalf("%d messages, want %d", n, want)
		}
	}
	// The batch path did the work: its runs were started in one
	// transaction per claimed batch, the single stack's in one each. The
	// claim workers start together and may split the stored EOBs between
	// their first batches (SKIP LOCKED), so the batch stack may have used
	// up to one transaction per claim worker.
	for _, c := range []struct {
		ts       *testStack
		min, max int
	}{{batch, 1, worker.DefaultClaimWorkers}, {single, len(batchEOBs), len(batchEOBs)}} {
		var xids int
		if err := c.ts.app.store.RawScan(context.Background(), &xids, `SELECT count(DISTINCT xid) FROM audit_log WHERE action = 'run.started'`); err != nil {
			t.Fatal(err)
		}
		if xids < c.min || xids > c.max {
			t.Fatalf("runs started in %d transactions, want %d to %d", xids, c.min, c.max)
		}
	}
	b, s := batch.records(t), single.records(t)
	if len(b) != len(batchEOBs) {
		t.Fatalf("batch wrote records for %d EOBs, want %d: %v", len(b), len(batchEOBs), b)
	}
	for id, want := range s {
		if got := b[id]; got != want {
			t.Errorf("%s:\nbatch  %s\nsingle %s", id, got, want)
		}
		// A sent notice is in its patient's accounting, for its delivery.
		if sent := strings.Contains(want, "Status:sent "); sent != strings.Contains(want, "Disclosed:sent/email/eob/") || sent && !strings.Contains(want, "/1/true ") {
			t.Errorf("%s: a notice sent is disclosed once, for its delivery: %s", id, want)
		}
	}
	// Both audit chains verify.
	for _, ts := range []*testStack{batch, single} {
		if rep := ts.verifyAudit(t); !rep.OK() {
			t.Fatalf("audit: %s", rep)
		}
	}
}

// A relay that defers one recipient (4xx) within a batch: the others are
// sent and done, that notice stays pending and its run is retried later,
// through the one-at-a-time path, and sent exactly once.
func TestBatchTemporaryFailureIsRetriedOnce(t *testing.T) {
	var refused atomic.Int32
	ts := newTestStack(t, testOpts{DeferWorker: true, ScheduleEvery: 200 * time.Millisecond,
		RejectRcpt: func(rcpt string) *mailcatch.Reply {
			if refused.Add(1) == 1 { // the first recipient the relay sees
				return &mailcatch.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "try again later"}
			}
			return nil
		}})
	for _, f := range batchEOBs[:5] {
		if r := ts.notify(t, ts.wrap(t, fixture(t, f))); r.Status != 202 {
			t.Fatalf("%s: %d", f, r.Status)
		}
	}
	if err := ts.StartWorker(); err != nil {
		t.Fatal(err)
	}
	ts.waitSettled(t)
	if refused.Load() < 1 {
		var to []string
		for _, m := range ts.Mail.Messages() {
			to = append(to, m.To...)
		}
		t.Fatalf("the relay never deferred the recipient; the test proves nothing (messages to %v)", to)
	}
	var rows []struct {
		Status   string
		Attempts int
	}
	ts.app.store.RawScan(context.Background(), &rows, `SELECT n.status, d.attempts FROM notices n JOIN deliveries d ON d.notice_id = n.id ORDER BY n.id`)
	statuses := map[string]int{}
	retried := 0
	for _, r := range rows {
		statuses[r.Status]++
		if r.Attempts == 2 {
			retried++
		}
	}
	var deferred int
	ts.app.store.RawScan(context.Background(), &deferred, `SELECT count(*) FROM audit_log WHERE action = 'delivery.failed'`)
	msgs := ts.Mail.Messages()
	var ids []string // one Message-ID per notice: a second send would repeat one
	for _, m := range msgs {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, msg.Header.Get("Message-Id"))
	}
	slices.Sort(ids)
	if statuses[delivery.NoticeSent] != 5 || len(statuses) != 1 || retried != 1 || deferred != 1 || len(msgs) != 5 || len(slices.Compact(ids)) != 5 {
		t.Fatalf("notices %v, retried %d, failed attempts %d, message ids %v: want 5 sent once each, one after a second attempt", statuses, retried, deferred, ids)
	}
}

// waitSettled waits until every event is processed and nothing is due.
func (ts *testStack) waitSettled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := ts.app.store.Unsettled(context.Background(), devTenant, time.Now())
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after 30 s: %d unsettled (%v)", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// racingStore is the stack's store with a hook that runs once, after the
// batch path has refreshed its subjects' runs and before it starts them.
type racingStore struct {
	*store.Store
	once   sync.Once
	before func()
}

func (r *racingStore) ContactPreferencesOf(ctx context.Context, tenantID, source string, patientRefs []string) (map[string]workflow.Contact, error) {
	r.once.Do(r.before)
	return r.Store.ContactPreferencesOf(ctx, tenantID, source, patientRefs)
}

// Two versions of one EOB in two batches at once, as a worker's two claim
// batches (or two replicas) hold them: the newer version's batch refreshes
// the subject's runs before the older version's run is written, and its
// start then finds that run. The run still ends on the newer version.
func TestNewerVersionInAnotherBatchRefreshesTheRun(t *testing.T) {
	ts := newTestStack(t, testOpts{DeferWorker: true})
	ctx := context.Background()
	v1 := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBOral1.json")
	var res map[string]any
	if err := json.Unmarshal(v1, &res); err != nil {
		t.Fatal(err)
	}
	res["meta"].(map[string]any)["versionId"] = "2"
	res["outcome"] = "partial"
	v2, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	other := fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	for _, body := range [][]byte{v1, v2, other} {
		if r := ts.notify(t, ts.wrap(t, body)); r.Status != 202 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	evs, err := ts.app.store.ClaimEvents(ctx, 10, time.Minute)
	if err != nil || len(evs) != 3 || evs[0].ResourceID != "EOBOral1" || evs[1].ResourceID != "EOBOral1" {
		t.Fatalf("claimed %d events (%v)", len(evs), err)
	}
	pol, err := ts.app.tenantPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	email, err := emailChannel(ts.app.cfg, ts.app.metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer email.Close()
	sender, err := ts.app.sender(pol, email, ts.app.fetcher(), devPlaceholderDomain)
	if err != nil {
		t.Fatal(err)
	}
	engine := func(st journey.Store) *journey.Engine {
		e := ts.app.journeys()
		e.Store, e.Sender, e.Parallel = st, sender, 1
		return e
	}
	// The older version's batch runs (and writes its run) in between.
	older := engine(ts.app.store)
	racing := &racingStore{Store: ts.app.store, before: func() {
		if errs := older.ProcessEvents(ctx, evs[:1]); errs[0] != nil {
			t.Errorf("version 1: %v", errs[0])
		}
	}}
	for i, err := range engine(racing).ProcessEvents(ctx, evs[1:]) {
		if err != nil {
			t.Fatalf("event %d: %v", evs[1+i].ID, err)
		}
	}
	var runs []struct{ EventID int64 }
	if err := ts.app.store.RawScan(ctx, &runs, `SELECT event_id FROM runs WHERE subject = 'ExplanationOfBenefit/EOBOral1'`); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].EventID != evs[1].ID {
		t.Fatalf("runs of EOBOral1 %+v, want one on version 2's event %d (version 1's is %d)", runs, evs[1].ID, evs[0].ID)
	}
}
