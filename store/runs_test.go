package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

// t0 is a Monday morning; every time in these tests is relative to it, and
// the store is always told the time, so nothing here reads the clock.
var t0 = time.Date(2030, 1, 7, 8, 0, 0, 0, time.UTC)

const canaryFact = "Canary-Quill-4711"

// remindersDef is a small valid workflow: confirm, wait 48h, remind, wait
// 24h, remind again, end.
func remindersDef(id, event string) workflow.Definition {
	return workflow.Definition{ID: id, Trigger: workflow.Trigger{Event: event}, Steps: []workflow.Step{
		{ID: "confirm", Type: workflow.StepSend, Channel: "email", Template: "appointment.confirmation"},
		{ID: "wait-1", Type: workflow.StepWait, Duration: "48h"},
		{ID: "remind-1", Type: workflow.StepSend, Channel: "email", Template: "appointment.reminder"},
		{ID: "wait-2", Type: workflow.StepWait, Duration: "24h"},
		{ID: "remind-2", Type: workflow.StepSend, Channel: "email", Template: "appointment.reminder"},
		{ID: "done", Type: workflow.StepEnd},
	}}
}

// mustWorkflow validates, saves and (unless status is draft) sets the status
// of a definition.
func mustWorkflow(t *testing.T, s *Store, tenantID string, d workflow.Definition, status string) int {
	t.Helper()
	if p := workflow.Validate(d, journey.Registry(nil)); len(p) > 0 {
		t.Fatalf("test definition %s is invalid: %v", d.ID, p)
	}
	ctx := context.Background()
	exists, err := s.WorkflowExists(ctx, tenantID, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.SaveWorkflow(ctx, tenantID, d, !exists)
	if err != nil {
		t.Fatalf("save %s: %v", d.ID, err)
	}
	if status != journey.WorkflowDraft {
		if err := s.SetWorkflowStatus(ctx, tenantID, d.ID, status); err != nil {
			t.Fatalf("set %s %s: %v", d.ID, status, err)
		}
	}
	return v
}

func mustTenant(t *testing.T, s *Store, tenantID, subscriptionID string) {
	t.Helper()
	ctx := context.Background()
	if err := s.EnsureTenant(ctx, tenantID, "Tenant "+tenantID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSubscription(ctx, intake.Subscription{ID: subscriptionID, TenantID: tenantID}, "s3cret-s3cret"); err != nil {
		t.Fatal(err)
	}
}

func mustEvent(t *testing.T, s *Store, tenantID, subscriptionID, resourceType, resourceID, version string) int64 {
	t.Helper()
	st, err := s.InsertEvents(context.Background(), []intake.NewEvent{{TenantID: tenantID, SubscriptionID: subscriptionID,
		ResourceType: resourceType, ResourceID: resourceID, VersionID: version,
		DedupeKey: subscriptionID + "|" + resourceType + "|" + resourceID + "|v:" + version, Record: fhir.Event{Focus: json.RawMessage(`{}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	return st[0].EventID
}

func mustStart(t *testing.T, s *Store, r journey.NewRun, now time.Time) journey.Wake {
	t.Helper()
	if r.PatientIndex == "" {
		r.PatientIndex = s.PatientIndex("t1", "Patient/p1")
	}
	if r.Priority == "" {
		r.Priority = workflow.PriorityNormal
	}
	if r.WorkflowVersion == 0 {
		r.WorkflowVersion = 1
	}
	w, created, err := s.StartRun(context.Background(), r, now)
	if err != nil {
		t.Fatalf("start %s %s: %v", r.WorkflowID, r.Subject, err)
	}
	if !created {
		t.Fatalf("start %s %s: run already existed", r.WorkflowID, r.Subject)
	}
	return w
}

func mustLoad(t *testing.T, s *Store, id int64) journey.Run {
	t.Helper()
	r, err := s.LoadRun(context.Background(), id)
	if err != nil {
		t.Fatalf("load run %d: %v", id, err)
	}
	return r
}

// saveStep loads the run, applies one input with the step machine (the
// run's own facts) and saves the state with the actions it decided, which
// stay pending.
func saveStep(t *testing.T, s *Store, d workflow.Definition, runID int64, in workflow.Input) (journey.Wake, []workflow.Action) {
	t.Helper()
	r := mustLoad(t, s, runID)
	in.Facts = r.Facts
	st, actions, err := workflow.Advance(d, r.State, in)
	if err != nil {
		t.Fatalf("advance run %d: %v", runID, err)
	}
	w, err := s.SaveRun(context.Background(), r, st, actions, r.EngagementCursor, in.Now)
	if err != nil {
		t.Fatalf("save run %d: %v", runID, err)
	}
	return w, actions
}

// mustAdvance is one wake-up as the worker handles it: the step saved with
// its actions, the actions carried out, and then cleared.
func mustAdvance(t *testing.T, s *Store, d workflow.Definition, runID int64, in workflow.Input) journey.Wake {
	t.Helper()
	w, actions := saveStep(t, s, d, runID, in)
	if len(actions) == 0 {
		return w
	}
	w, err := s.ClearPending(context.Background(), mustLoad(t, s, runID), in.Now)
	if err != nil {
		t.Fatalf("clear run %d: %v", runID, err)
	}
	return w
}

type auditRow struct {
	Action    string
	SubjectID string
	Detail    json.RawMessage
}

func auditRows(t *testing.T, s *Store, tenantID, action string) []auditRow {
	t.Helper()
	var rows []auditRow
	if err := s.RawScan(context.Background(), &rows, `SELECT action, subject_id, detail FROM audit_log
		WHERE tenant_id = ? AND action = ? ORDER BY id`, tenantID, action); err != nil {
		t.Fatal(err)
	}
	return rows
}

func runIDs(ws []journey.Wake) []int64 {
	out := make([]int64, len(ws))
	for i, w := range ws {
		out[i] = w.ID
	}
	slices.Sort(out)
	return out
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func ptr[T any](v T) *T { return &v }

func TestSaveWorkflowKeepsEveryVersion(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")

	v1 := remindersDef("reminders", "appointment.booked")
	v1.Name = "first"
	v2 := remindersDef("reminders", "appointment.booked")
	v2.Name = "second"
	v2.Priority = workflow.PriorityHigh
	v2.Steps = v2.Steps[:3]
	v2.Steps = append(v2.Steps, workflow.Step{ID: "done", Type: workflow.StepEnd})
	if got := mustWorkflow(t, s, "t1", v1, journey.WorkflowDraft); got != 1 {
		t.Fatalf("first save: version %d, want 1", got)
	}
	if got := mustWorkflow(t, s, "t1", v2, journey.WorkflowDraft); got != 2 {
		t.Fatalf("second save: version %d, want 2", got)
	}

	wi, err := s.Workflow(ctx, "t1", "reminders")
	if err != nil {
		t.Fatal(err)
	}
	if wi.Version != 2 || wi.Definition.Version != 2 || wi.Definition.Name != "second" || len(wi.Definition.Steps) != 4 ||
		wi.Status != journey.WorkflowDraft || wi.Trigger != "event:appointment.booked" || wi.Priority != workflow.PriorityHigh {
		t.Fatalf("latest: version %d (definition %d) name %q steps %d status %q trigger %q priority %q",
			wi.Version, wi.Definition.Version, wi.Definition.Name, len(wi.Definition.Steps), wi.Status, wi.Trigger, wi.Priority)
	}
	old, err := s.WorkflowVersion(ctx, "t1", "reminders", 1)
	if err != nil {
		t.Fatal(err)
	}
	if old.Version != 1 || old.Name != "first" || len(old.Steps) != 6 || old.Steps[3].ID != "wait-2" {
		t.Fatalf("version 1 as stored: version %d name %q steps %d", old.Version, old.Name, len(old.Steps))
	}

	for name, err := range map[string]error{
		"missing version":        func() error { _, err := s.WorkflowVersion(ctx, "t1", "reminders", 3); return err }(),
		"missing workflow":       func() error { _, err := s.Workflow(ctx, "t1", "nope"); return err }(),
		"other tenant's":         func() error { _, err := s.Workflow(ctx, "t2", "reminders"); return err }(),
		"other tenant's version": func() error { _, err := s.WorkflowVersion(ctx, "t2", "reminders", 1); return err }(),
		"status of unknown":      s.SetWorkflowStatus(ctx, "t1", "nope", journey.WorkflowActive),
		"status of other's":      s.SetWorkflowStatus(ctx, "t2", "reminders", journey.WorkflowActive),
	} {
		if !errors.Is(err, fault.NotFound) {
			t.Errorf("%s: %v, want a not-found error", name, err)
		}
	}
	for _, tc := range []struct {
		tenant, id string
		want       bool
	}{{"t1", "reminders", true}, {"t1", "nope", false}, {"t2", "reminders", false}} {
		got, err := s.WorkflowExists(ctx, tc.tenant, tc.id)
		if err != nil || got != tc.want {
			t.Errorf("WorkflowExists(%s, %s) = %v, %v; want %v", tc.tenant, tc.id, got, err, tc.want)
		}
	}

	// Every save and status change is audited, in a chain that verifies.
	saved := auditRows(t, s, "t1", "workflow.saved")
	if len(saved) != 2 || saved[0].SubjectID != "reminders" ||
		!bytes.Contains(saved[0].Detail, []byte(`"version": 1`)) || !bytes.Contains(saved[1].Detail, []byte(`"version": 2`)) {
		t.Fatalf("workflow.saved audit rows: %+v", saved)
	}
	if err := s.SetWorkflowStatus(ctx, "t1", "reminders", journey.WorkflowPaused); err != nil {
		t.Fatal(err)
	}
	if rows := auditRows(t, s, "t1", "workflow.paused"); len(rows) != 1 || rows[0].SubjectID != "reminders" {
		t.Fatalf("workflow.paused audit rows: %+v", rows)
	}
	if rep := chainAndVerify(t, s, "t1"); !rep.OK() || rep.Rows != 3 {
		t.Fatalf("audit chain: %s", rep)
	}
	// A new version keeps the status.
	mustWorkflow(t, s, "t1", v1, journey.WorkflowDraft)
	if wi, _ := s.Workflow(ctx, "t1", "reminders"); wi.Version != 3 || wi.Status != journey.WorkflowPaused || wi.Priority != workflow.PriorityNormal {
		t.Fatalf("after a third save: version %d status %q priority %q", wi.Version, wi.Status, wi.Priority)
	}
}

func TestActiveWorkflowsListsOnlyActiveOnesOfTheTrigger(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	for _, w := range []struct {
		tenant, id, event, status string
	}{
		{"t1", "b-active", "appointment.booked", journey.WorkflowActive},
		{"t1", "a-active", "appointment.booked", journey.WorkflowActive},
		{"t1", "draft", "appointment.booked", journey.WorkflowDraft},
		{"t1", "paused", "appointment.booked", journey.WorkflowPaused},
		{"t1", "other-trigger", "appointment.cancelled", journey.WorkflowActive},
		{"t2", "other-tenant", "appointment.booked", journey.WorkflowActive},
	} {
		mustWorkflow(t, s, w.tenant, remindersDef(w.id, w.event), w.status)
	}
	ids := func(ws []journey.Workflow) []string {
		out := []string{}
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return out
	}
	for _, tc := range []struct {
		tenant, key string
		want        []string
	}{
		{"t1", "event:appointment.booked", []string{"a-active", "b-active"}},
		{"t1", "event:appointment.cancelled", []string{"other-trigger"}},
		{"t1", "event:eob.received", []string{}},
		{"t2", "event:appointment.booked", []string{"other-tenant"}},
	} {
		got, err := s.ActiveWorkflows(ctx, tc.tenant, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("ActiveWorkflows(%s, %s) = %v, want %v", tc.tenant, tc.key, ids(got), tc.want)
		}
		for _, w := range got {
			if w.Status != journey.WorkflowActive || w.Trigger != tc.key || len(w.Definition.Steps) == 0 {
				t.Errorf("%s: status %q trigger %q steps %d", w.ID, w.Status, w.Trigger, len(w.Definition.Steps))
			}
		}
	}
	all, err := s.Workflows(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a-active", "b-active", "draft", "other-trigger", "paused"}; !slices.Equal(ids(all), want) {
		t.Fatalf("Workflows(t1) = %v, want %v", ids(all), want)
	}
}

func TestInstallWorkflowsLeavesExistingOnesAlone(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	// The tenant already has its own appointment-noshow (neither the first
	// nor the last built-in), at version 2 and paused.
	own := remindersDef("appointment-noshow", "appointment.noshow")
	own.Name = "our own"
	mustWorkflow(t, s, "t1", own, journey.WorkflowDraft)
	mustWorkflow(t, s, "t1", own, journey.WorkflowPaused)

	builtins := workflow.Builtins()
	for round := 1; round <= 2; round++ {
		if err := s.InstallWorkflows(ctx, "t1", builtins); err != nil {
			t.Fatal(err)
		}
		all, err := s.Workflows(ctx, "t1")
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != len(builtins) {
			t.Fatalf("round %d: %d workflows, want %d", round, len(all), len(builtins))
		}
		for _, w := range all {
			want := journey.Workflow{Status: journey.WorkflowActive, Version: 1}
			if w.ID == own.ID {
				want = journey.Workflow{Status: journey.WorkflowPaused, Version: 2}
				if w.Definition.Name != "our own" {
					t.Errorf("round %d: %s definition replaced (%q)", round, w.ID, w.Definition.Name)
				}
			}
			if w.Status != want.Status || w.Version != want.Version {
				t.Errorf("round %d: %s status %q version %d, want %q %d", round, w.ID, w.Status, w.Version, want.Status, want.Version)
			}
		}
		// Two saves of our own and one per installed built-in; a second
		// install saves nothing.
		if n := len(auditRows(t, s, "t1", "workflow.saved")); n != 2+len(builtins)-1 {
			t.Errorf("round %d: %d workflow.saved rows, want %d", round, n, 2+len(builtins)-1)
		}
	}
	active, err := s.ActiveWorkflows(ctx, "t1", "event:appointment.booked")
	if err != nil || len(active) != 1 || active[0].ID != "appointment-reminders" || active[0].Priority != workflow.PriorityHigh {
		t.Fatalf("appointment.booked starts %+v (%v)", active, err)
	}
}

func TestStartRunNeverReenters(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	mustWorkflow(t, s, "t1", remindersDef("survey", "appointment.booked"), journey.WorkflowActive)
	ev := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "1")
	facts := workflow.Facts{"start": "2030-01-10T15:00:00Z", "note": canaryFact}
	nr := journey.NewRun{TenantID: "t1", WorkflowID: "reminders", WorkflowVersion: 1, Priority: workflow.PriorityHigh,
		Subject: "Appointment/a1", PatientIndex: s.PatientIndex("t1", "Patient/p1"), EventID: &ev, Facts: facts}

	w, created, err := s.StartRun(ctx, nr, t0)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	if w.ID == 0 || w.TenantID != "t1" || w.WakeSeq != 0 || !w.DueAt.Equal(t0) || w.Step != "" || w.Priority != workflow.PriorityHigh {
		t.Fatalf("first start's wake-up: %+v", w)
	}
	if rows := auditRows(t, s, "t1", "run.started"); len(rows) != 1 || rows[0].SubjectID != strconv.FormatInt(w.ID, 10) {
		t.Fatalf("run.started audit rows: %+v", rows)
	}

	// Facts are sealed in their column and open on load.
	var raw [][]byte
	if err := s.RawScan(ctx, &raw, `SELECT facts_sealed FROM runs WHERE id = ?`, w.ID); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 || len(raw[0]) == 0 || bytes.Contains(raw[0], []byte(canaryFact)) || bytes.Contains(raw[0], []byte("2030-01-10")) {
		t.Fatal("run facts are not sealed at rest")
	}
	r := mustLoad(t, s, w.ID)
	if r.Facts["note"] != canaryFact || r.Facts["start"] != facts["start"] || len(r.Facts) != 2 {
		t.Fatalf("loaded facts do not match (%d facts)", len(r.Facts))
	}
	if r.Status != workflow.StatusWaiting || r.Step != "" || r.Subject != "Appointment/a1" || r.WorkflowVersion != 1 ||
		r.EventID == nil || *r.EventID != ev || !sameTime(r.DueAt, &t0) || !r.CreatedAt.Equal(t0) || r.State.Status != "" {
		t.Fatalf("loaded run: status %q step %q subject %q version %d due %v created %v state %q",
			r.Status, r.Step, r.Subject, r.WorkflowVersion, r.DueAt, r.CreatedAt, r.State.Status)
	}

	countRuns := func() int64 {
		var n int64
		if err := s.RawScan(ctx, &n, `SELECT count(*) FROM runs WHERE tenant_id = 't1' AND workflow_id = 'reminders'`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	again := nr
	again.Facts = workflow.Facts{"start": "2031-01-01T00:00:00Z"}
	for _, phase := range []string{"while it runs", "after it ended"} {
		if phase == "after it ended" {
			mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputEnd, Now: t0.Add(time.Hour)})
			if r := mustLoad(t, s, w.ID); r.Status != workflow.StatusEnded {
				t.Fatalf("run did not end: %q", r.Status)
			}
		}
		_, created, err := s.StartRun(ctx, again, t0.Add(2*time.Hour))
		if err != nil || created {
			t.Fatalf("start %s: created %v, %v", phase, created, err)
		}
		if n := countRuns(); n != 1 {
			t.Fatalf("start %s: %d runs", phase, n)
		}
		if r := mustLoad(t, s, w.ID); r.Facts["start"] != facts["start"] {
			t.Fatalf("start %s replaced the run's facts", phase)
		}
	}
	if n := len(auditRows(t, s, "t1", "run.started")); n != 1 {
		t.Fatalf("%d run.started rows after refused starts", n)
	}

	// The same subject in another workflow is another run.
	other := nr
	other.WorkflowID = "survey"
	if _, created, err := s.StartRun(ctx, other, t0); err != nil || !created {
		t.Fatalf("start in another workflow: created %v, %v", created, err)
	}
	// A workflow the tenant does not have cannot run.
	unknown := nr
	unknown.WorkflowID = "nope"
	if _, _, err := s.StartRun(ctx, unknown, t0); !errors.Is(err, ErrUnknownReference) {
		t.Fatalf("start of an unknown workflow: %v", err)
	}
	if _, err := s.LoadRun(ctx, 1<<40); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load of a missing run: %v", err)
	}
}

type stepRow struct {
	Seq      int
	Step     string
	Happened string
	At       time.Time
}

func runSteps(t *testing.T, s *Store, runID int64) []stepRow {
	t.Helper()
	var rows []stepRow
	if err := s.RawScan(context.Background(), &rows, `SELECT seq, step, happened, at FROM run_steps WHERE run_id = ? ORDER BY seq`, runID); err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestSaveRunIsOptimisticAndRecordsThePath(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a1"}, t0)

	loaded := mustLoad(t, s, w.ID)
	st, actions, err := workflow.Advance(d, loaded.State, workflow.Input{Kind: workflow.InputStart, Now: t0, Facts: loaded.Facts})
	if err != nil || len(actions) != 1 || st.Step != "wait-1" {
		t.Fatalf("advance: step %q, %d actions, %v", st.Step, len(actions), err)
	}
	// Saved with its send still to do: due again after the grace period,
	// in case the worker dies before it is done.
	saved, err := s.SaveRun(ctx, loaded, st, actions, 7, t0)
	if err != nil {
		t.Fatal(err)
	}
	if saved.ID != w.ID || saved.WakeSeq != w.WakeSeq+1 || !saved.DueAt.Equal(t0.Add(PendingGrace)) || saved.Step != "wait-1" {
		t.Fatalf("wake-up after save: %+v, want seq %d due %v", saved, w.WakeSeq+1, t0.Add(PendingGrace))
	}
	// The run changed since `loaded` was read: a second writer loses.
	if _, err := s.SaveRun(ctx, loaded, st, actions, 7, t0); !errors.Is(err, journey.ErrStale) {
		t.Fatalf("save with a stale run: %v, want journey.ErrStale", err)
	}
	if _, err := s.ClearPending(ctx, loaded, t0); !errors.Is(err, journey.ErrStale) {
		t.Fatalf("clear with a stale run: %v, want journey.ErrStale", err)
	}
	r := mustLoad(t, s, w.ID)
	if r.WakeSeq != saved.WakeSeq || r.Status != workflow.StatusWaiting || r.Step != "wait-1" || r.EngagementCursor != 7 ||
		!sameTime(r.DueAt, ptr(t0.Add(PendingGrace))) || !slices.Equal(r.State.Visited, []string{"confirm", "wait-1"}) ||
		!slices.Equal(r.Pending, actions) {
		t.Fatalf("stored run: seq %d status %q step %q cursor %d due %v visited %v pending %v",
			r.WakeSeq, r.Status, r.Step, r.EngagementCursor, r.DueAt, r.State.Visited, r.Pending)
	}
	// The send is done: the run waits for its wait's end.
	cleared, err := s.ClearPending(ctx, r, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if cleared.WakeSeq != saved.WakeSeq+1 || !cleared.DueAt.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("wake-up after clearing: %+v", cleared)
	}
	if _, err := s.ClearPending(ctx, r, t0.Add(time.Minute)); !errors.Is(err, journey.ErrStale) {
		t.Fatalf("second clear: %v, want journey.ErrStale", err)
	}
	if r := mustLoad(t, s, w.ID); len(r.Pending) != 0 || r.Status != workflow.StatusWaiting || !sameTime(r.DueAt, ptr(t0.Add(48*time.Hour))) {
		t.Fatalf("cleared run: pending %v status %q due %v", r.Pending, r.Status, r.DueAt)
	}

	// The wait comes due; the run reminds, waits again, and after a late
	// wake-up (the second reminder passed) ends with nothing to do.
	mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputWake, Now: t0.Add(48 * time.Hour)})
	end := t0.Add(75 * time.Hour)
	last, acts := saveStep(t, s, d, w.ID, workflow.Input{Kind: workflow.InputWake, Now: end})
	if len(acts) != 0 || !last.DueAt.IsZero() {
		t.Fatalf("wake-up of the ended run: %+v (%d actions)", last, len(acts))
	}
	type step struct{ step, happened string }
	var got []step
	rows := runSteps(t, s, w.ID)
	for i, row := range rows {
		if row.Seq != i {
			t.Fatalf("run_steps seq %d at position %d", row.Seq, i)
		}
		got = append(got, step{row.Step, row.Happened})
	}
	want := []step{{"confirm", ""}, {"wait-1", workflow.HappenedTime}, {"remind-1", ""},
		{"wait-2", workflow.HappenedPassed}, {"done", ""}}
	if !slices.Equal(got, want) {
		t.Fatalf("run_steps %v, want %v", got, want)
	}
	if !rows[0].At.Equal(t0) || !rows[2].At.Equal(t0.Add(48*time.Hour)) || !rows[4].At.Equal(end) {
		t.Fatalf("run_steps times: %v %v %v", rows[0].At, rows[2].At, rows[4].At)
	}

	r = mustLoad(t, s, w.ID)
	if r.Status != workflow.StatusEnded || r.Outcome != workflow.OutcomeCompleted || r.DueAt != nil || r.Step != "done" || len(r.Pending) != 0 {
		t.Fatalf("ended run: status %q outcome %q due %v step %q pending %v", r.Status, r.Outcome, r.DueAt, r.Step, r.Pending)
	}
	var endedAt []time.Time
	if err := s.RawScan(ctx, &endedAt, `SELECT ended_at FROM runs WHERE id = ? AND ended_at IS NOT NULL`, w.ID); err != nil {
		t.Fatal(err)
	}
	if len(endedAt) != 1 || !endedAt[0].Equal(end) {
		t.Fatalf("ended_at %v, want %v", endedAt, end)
	}
	ended := auditRows(t, s, "t1", "run.ended")
	if len(ended) != 1 || ended[0].SubjectID != strconv.FormatInt(w.ID, 10) || !bytes.Contains(ended[0].Detail, []byte(`"completed"`)) {
		t.Fatalf("run.ended audit rows: %+v", ended)
	}
	if rep := chainAndVerify(t, s, "t1"); !rep.OK() || rep.Rows == 0 {
		t.Fatalf("audit chain: %s", rep)
	}
}

// A run whose last step sends ends only once the send is done; until then it
// waits, so the scheduler re-drives it if the worker dies, and events do not
// wake it under the task carrying its actions out.
func TestRunEndingWithActionsEndsWhenTheyAreDone(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	var d workflow.Definition
	for _, b := range workflow.Builtins() {
		if b.ID == "appointment-cancelled" {
			d = b
		}
	}
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	ev := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "1")
	ev2 := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "2")
	id := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a1", EventID: &ev}, t0).ID
	w, actions := saveStep(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0})
	if len(actions) != 1 || !w.DueAt.Equal(t0.Add(PendingGrace)) {
		t.Fatalf("saved: %+v with %d actions", w, len(actions))
	}
	r := mustLoad(t, s, id)
	if r.Status != workflow.StatusWaiting || r.State.Status != workflow.StatusEnded || len(r.Pending) != 1 {
		t.Fatalf("run with its last send pending: status %q state %q pending %d", r.Status, r.State.Status, len(r.Pending))
	}
	if n := len(auditRows(t, s, "t1", "run.ended")); n != 0 {
		t.Fatalf("%d run.ended rows before the send was done", n)
	}

	// journey.Engagement and a changed subject leave its wake-up to the task.
	now := t0.Add(time.Minute)
	if _, _, err := s.RecordEngagement(ctx, "t1", "Patient/p1", "", "portal.login", nil, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RefreshSubject(ctx, "t1", "", "Appointment/a1", ev2, workflow.Facts{"status": "cancelled"}, true, now); err != nil {
		t.Fatal(err)
	}
	r = mustLoad(t, s, id)
	if r.WakeSeq != w.WakeSeq || !sameTime(r.DueAt, ptr(t0.Add(PendingGrace))) {
		t.Fatalf("a pending run was woken: seq %d due %v, want %d %v", r.WakeSeq, r.DueAt, w.WakeSeq, t0.Add(PendingGrace))
	}
	if r.Facts["status"] != "cancelled" || !r.FactsChanged || *r.EventID != ev2 {
		t.Fatalf("a pending run did not take the latest facts")
	}

	// The scheduler leaves it to its task, unless that task is overdue.
	for _, tc := range []struct {
		now  time.Time
		want int
	}{{t0, 0}, {t0.Add(PendingGrace - time.Second), 0}, {t0.Add(PendingGrace), 1}} {
		ws, err := s.PromotableRuns(ctx, tc.now, time.Hour, 10)
		if err != nil || len(ws) != tc.want || (tc.want == 1 && (ws[0].ID != id || ws[0].WakeSeq != w.WakeSeq)) {
			t.Fatalf("promotable at %v: %+v, %v; want %d", tc.now, ws, err, tc.want)
		}
	}

	done := t0.Add(2 * time.Minute)
	cleared, err := s.ClearPending(ctx, r, done)
	if err != nil {
		t.Fatal(err)
	}
	if !cleared.DueAt.IsZero() || cleared.WakeSeq != w.WakeSeq+1 {
		t.Fatalf("cleared: %+v", cleared)
	}
	r = mustLoad(t, s, id)
	if r.Status != workflow.StatusEnded || r.DueAt != nil || len(r.Pending) != 0 || r.Outcome != workflow.OutcomeCompleted {
		t.Fatalf("ended run: status %q due %v pending %v outcome %q", r.Status, r.DueAt, r.Pending, r.Outcome)
	}
	var endedAt []time.Time
	if err := s.RawScan(ctx, &endedAt, `SELECT ended_at FROM runs WHERE id = ? AND ended_at IS NOT NULL`, id); err != nil {
		t.Fatal(err)
	}
	if len(endedAt) != 1 || !endedAt[0].Equal(done) {
		t.Fatalf("ended_at %v, want %v", endedAt, done)
	}
	if rows := auditRows(t, s, "t1", "run.ended"); len(rows) != 1 || rows[0].SubjectID != strconv.FormatInt(id, 10) {
		t.Fatalf("run.ended audit rows: %+v", rows)
	}
	if ws, err := s.PromotableRuns(ctx, t0.Add(time.Hour), time.Hour, 10); err != nil || len(ws) != 0 {
		t.Fatalf("an ended run is promotable: %+v, %v", ws, err)
	}
	// An ended run is not cleared again.
	if _, err := s.ClearPending(ctx, r, done); !errors.Is(err, journey.ErrStale) {
		t.Fatalf("clear of an ended run: %v, want journey.ErrStale", err)
	}
}

func TestSaveRunRecordsWhatEndedAWaitForAnEvent(t *testing.T) {
	s := mustStore(t)
	var d workflow.Definition
	for _, b := range workflow.Builtins() {
		if b.ID == "eob-notice" {
			d = b
		}
	}
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "ExplanationOfBenefit/e1"}, t0)
	mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
	if rows := runSteps(t, s, w.ID); len(rows) != 2 || rows[1].Step != "wait-viewed" || rows[1].Happened != "" {
		t.Fatalf("before the event: %+v", rows)
	}
	mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputEvent, Event: "portal.viewed", Now: t0.Add(time.Hour)})
	rows := runSteps(t, s, w.ID)
	if len(rows) != 3 || rows[1].Happened != "portal.viewed" || rows[2].Step != "viewed" {
		t.Fatalf("after the event: %+v", rows)
	}
	if r := mustLoad(t, s, w.ID); r.Outcome != "viewed" || r.Status != workflow.StatusEnded {
		t.Fatalf("run: status %q outcome %q", r.Status, r.Outcome)
	}
}

func TestRefreshSubject(t *testing.T) {
	for _, changed := range []bool{true, false} {
		t.Run(fmt.Sprintf("changed=%v", changed), func(t *testing.T) {
			s := mustStore(t)
			ctx := context.Background()
			d := remindersDef("reminders", "appointment.booked")
			for _, id := range []string{"reminders", "survey", "finished", "sending"} {
				mustWorkflow(t, s, "t1", remindersDef(id, "appointment.booked"), journey.WorkflowActive)
			}
			e1 := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "1")
			e2 := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "2")
			old := workflow.Facts{"start": "2030-01-10T15:00:00Z"}
			start := func(wf, subject string) int64 {
				w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: wf, Subject: subject, EventID: &e1, Facts: old}, t0)
				mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
				return w.ID
			}
			waiting := []int64{start("reminders", "Appointment/a1"), start("survey", "Appointment/a1")}
			finished := start("finished", "Appointment/a1")
			mustAdvance(t, s, d, finished, workflow.Input{Kind: workflow.InputEnd, Now: t0})
			otherSubject := start("reminders", "Appointment/a2")
			// A run whose actions a task is carrying out right now.
			sending := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "sending", Subject: "Appointment/a1", EventID: &e1, Facts: old}, t0).ID
			saveStep(t, s, d, sending, workflow.Input{Kind: workflow.InputStart, Now: t0})
			before := map[int64]journey.Run{}
			for _, id := range append([]int64{finished, otherSubject, sending}, waiting...) {
				before[id] = mustLoad(t, s, id)
			}

			now := t0.Add(3 * time.Hour)
			fresh := workflow.Facts{"start": "2030-01-11T15:00:00Z", "note": canaryFact}
			wakes, err := s.RefreshSubject(ctx, "t1", "", "Appointment/a1", e2, fresh, changed, now)
			if err != nil {
				t.Fatal(err)
			}
			if !changed && len(wakes) != 0 {
				t.Fatalf("an unchanged subject woke %d runs", len(wakes))
			}
			woken := map[int64]journey.Wake{}
			for _, w := range wakes {
				woken[w.ID] = w
			}
			for _, id := range append([]int64{sending}, waiting...) {
				b, r := before[id], mustLoad(t, s, id)
				if r.EventID == nil || *r.EventID != e2 || r.Facts["note"] != canaryFact || r.Facts["start"] != fresh["start"] {
					t.Errorf("run %d: did not get the latest event and facts", id)
				}
				wantSeq, wantDue := b.WakeSeq, b.DueAt
				if changed && id != sending {
					wantSeq, wantDue = b.WakeSeq+1, &now
					if w, ok := woken[id]; !ok || w.WakeSeq != wantSeq || !w.DueAt.Equal(now) {
						t.Errorf("run %d: wake-up %+v, want seq %d due now", id, w, wantSeq)
					}
				}
				if r.FactsChanged != changed || r.WakeSeq != wantSeq || !sameTime(r.DueAt, wantDue) || r.Status != workflow.StatusWaiting {
					t.Errorf("run %d: facts_changed %v seq %d due %v; want %v %d %v", id, r.FactsChanged, r.WakeSeq, r.DueAt, changed, wantSeq, wantDue)
				}
			}
			for _, id := range []int64{finished, otherSubject} {
				b, r := before[id], mustLoad(t, s, id)
				if _, ok := woken[id]; ok || r.WakeSeq != b.WakeSeq || *r.EventID != e1 || r.Facts["start"] != old["start"] ||
					r.FactsChanged || !sameTime(r.DueAt, b.DueAt) {
					t.Errorf("run %d (%s, %s) was touched", id, r.WorkflowID, r.Subject)
				}
			}
			var raw [][]byte
			if err := s.RawScan(ctx, &raw, `SELECT facts_sealed FROM runs`); err != nil {
				t.Fatal(err)
			}
			for _, b := range raw {
				if bytes.Contains(b, []byte(canaryFact)) {
					t.Fatal("refreshed facts stored in clear")
				}
			}

			// An older event, handled late, does not overwrite the newer facts.
			late, err := s.RefreshSubject(ctx, "t1", "", "Appointment/a1", e1, old, true, now.Add(time.Minute))
			if err != nil || len(late) != 0 {
				t.Fatalf("refresh with an older event woke %d runs (%v)", len(late), err)
			}
			if r := mustLoad(t, s, waiting[0]); *r.EventID != e2 || r.Facts["start"] != fresh["start"] {
				t.Fatal("an older event overwrote the newer facts")
			}

			if changed {
				// The wake-up that recomputes the waits clears the flag.
				mustAdvance(t, s, d, waiting[0], workflow.Input{Kind: workflow.InputFactsChanged, Now: now})
				if r := mustLoad(t, s, waiting[0]); r.FactsChanged {
					t.Fatal("facts_changed survived a save")
				}
			}
		})
	}
}

func TestEndSubjectRuns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outcome string
		keep    []string
		ended   []string // workflows whose a1 runs end
	}{
		{"cancelled, keeping the cancellation workflow", workflow.OutcomeCancelled, []string{"cancelled-wf"}, []string{"reminders", "survey"}},
		{"entered in error", "entered-in-error", nil, []string{"cancelled-wf", "reminders", "survey"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustStore(t)
			ctx := context.Background()
			d := remindersDef("reminders", "appointment.booked")
			runs := map[string]int64{}
			for _, id := range []string{"reminders", "survey", "cancelled-wf", "finished"} {
				mustWorkflow(t, s, "t1", remindersDef(id, "appointment.booked"), journey.WorkflowActive)
				w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: id, Subject: "Appointment/a1"}, t0)
				mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
				runs[id] = w.ID
			}
			mustAdvance(t, s, d, runs["finished"], workflow.Input{Kind: workflow.InputEnd, Reason: "earlier", Now: t0.Add(time.Hour)})
			other := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a2"}, t0).ID
			mustAdvance(t, s, d, other, workflow.Input{Kind: workflow.InputStart, Now: t0})
			before := map[int64]journey.Run{}
			for _, id := range runs {
				before[id] = mustLoad(t, s, id)
			}
			before[other] = mustLoad(t, s, other)
			// A worker holding a run loaded before the cancellation.
			held := before[runs["reminders"]]

			now := t0.Add(5 * time.Hour)
			n, err := s.EndSubjectRuns(ctx, "t1", "", "Appointment/a1", tc.outcome, tc.keep, now)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tc.ended) {
				t.Fatalf("ended %d runs, want %d", n, len(tc.ended))
			}
			for wf, id := range runs {
				b, r := before[id], mustLoad(t, s, id)
				if slices.Contains(tc.ended, wf) {
					if r.Status != workflow.StatusEnded || r.Outcome != tc.outcome || r.State.Status != workflow.StatusEnded ||
						r.State.Outcome != tc.outcome || !r.State.WaitUntil.IsZero() || r.DueAt != nil || r.WakeSeq != b.WakeSeq+1 {
						t.Errorf("%s: status %q outcome %q state %q/%q wait %v due %v seq %d",
							wf, r.Status, r.Outcome, r.State.Status, r.State.Outcome, r.State.WaitUntil, r.DueAt, r.WakeSeq)
					}
					// The machine sees an ended run and does nothing more.
					if st, acts, err := workflow.Advance(d, r.State, workflow.Input{Kind: workflow.InputWake, Now: now.Add(72 * time.Hour)}); err != nil || len(acts) != 0 || st.Status != workflow.StatusEnded {
						t.Errorf("%s: ended state still advances: %v %d %v", wf, st.Status, len(acts), err)
					}
					continue
				}
				if r.Status != b.Status || r.Outcome != b.Outcome || r.WakeSeq != b.WakeSeq || !sameTime(r.DueAt, b.DueAt) {
					t.Errorf("%s: touched (status %q outcome %q seq %d)", wf, r.Status, r.Outcome, r.WakeSeq)
				}
			}
			if r := mustLoad(t, s, other); r.Status != workflow.StatusWaiting || r.WakeSeq != before[other].WakeSeq {
				t.Errorf("another subject's run: status %q seq %d", r.Status, r.WakeSeq)
			}
			var endedAt []time.Time
			if err := s.RawScan(ctx, &endedAt, `SELECT ended_at FROM runs WHERE id = ?`, runs["finished"]); err != nil {
				t.Fatal(err)
			}
			if len(endedAt) != 1 || !endedAt[0].Equal(t0.Add(time.Hour)) {
				t.Errorf("an already ended run's ended_at moved: %v", endedAt)
			}
			audited := 0
			for _, row := range auditRows(t, s, "t1", "run.ended") {
				if bytes.Contains(row.Detail, []byte(`"`+tc.outcome+`"`)) {
					audited++
				}
			}
			if audited != len(tc.ended) {
				t.Errorf("%d run.ended audit rows with %q, want %d", audited, tc.outcome, len(tc.ended))
			}
			// The held run cannot overwrite the cancellation.
			st, acts, _ := workflow.Advance(d, held.State, workflow.Input{Kind: workflow.InputWake, Now: t0.Add(48 * time.Hour), Facts: held.Facts})
			if len(acts) != 1 {
				t.Fatalf("the held run's wake-up decided %d actions, want its reminder", len(acts))
			}
			if _, err := s.SaveRun(ctx, held, st, acts, 0, t0.Add(48*time.Hour)); !errors.Is(err, journey.ErrStale) {
				t.Fatalf("save of a run loaded before it was ended: %v, want journey.ErrStale", err)
			}
			// Ending again ends nothing.
			if n, err := s.EndSubjectRuns(ctx, "t1", "", "Appointment/a1", tc.outcome, tc.keep, now); err != nil || n != 0 {
				t.Fatalf("second end: %d, %v", n, err)
			}
		})
	}
}

func TestRecordEngagementWakesOnlyThatPatientsWaitingRuns(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	// Runs that wait for a portal view; a run waiting for a time is not woken.
	d := workflow.Definition{ID: "viewed", Trigger: workflow.Trigger{Event: "eob.received"}, Steps: []workflow.Step{
		{ID: "notice", Type: workflow.StepSend, Channel: "email", Template: "eob.notice"},
		{ID: "wait-view", Type: workflow.StepWaitEvent, Events: []string{"portal.viewed"}, Timeout: "7d", OnTimeout: "done"},
		{ID: "done", Type: workflow.StepEnd},
	}}
	timer := remindersDef("reminders", "appointment.booked")
	for _, tenant := range []string{"t1", "t2"} {
		mustWorkflow(t, s, tenant, d, journey.WorkflowActive)
	}
	mustWorkflow(t, s, "t1", timer, journey.WorkflowActive)
	p1 := s.PatientIndex("t1", "Patient/p1")
	start := func(tenant, subject, patient string) int64 {
		w := mustStart(t, s, journey.NewRun{TenantID: tenant, WorkflowID: d.ID, Subject: subject, PatientIndex: s.PatientIndex(tenant, patient)}, t0)
		mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
		return w.ID
	}
	appointment := start("t1", "Appointment/a1", "Patient/p1")
	eob := start("t1", "ExplanationOfBenefit/e1", "Patient/p1")
	patientWide := start("t1", "patient:"+p1, "Patient/p1")
	ended := start("t1", "Appointment/a2", "Patient/p1")
	mustAdvance(t, s, d, ended, workflow.Input{Kind: workflow.InputEnd, Now: t0})
	otherPatient := start("t1", "Appointment/a3", "Patient/p2")
	otherTenant := start("t2", "Appointment/a1", "Patient/p1")
	sending := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a4", PatientIndex: p1}, t0).ID
	saveStep(t, s, d, sending, workflow.Input{Kind: workflow.InputStart, Now: t0}) // its send is being carried out
	timed := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: timer.ID, Subject: "Appointment/a1", PatientIndex: p1}, t0).ID
	mustAdvance(t, s, timer, timed, workflow.Input{Kind: workflow.InputStart, Now: t0}) // waits 48 h for a time, not an event
	all := []int64{appointment, eob, patientWide, ended, otherPatient, otherTenant, sending, timed}

	for i, tc := range []struct {
		name    string
		subject string
		want    []int64
	}{
		{"about the appointment", "Appointment/a1", []int64{appointment, patientWide}},
		{"about no subject", "", []int64{appointment, eob, patientWide}},
		{"about the EOB", "ExplanationOfBenefit/e1", []int64{eob, patientWide}},
	} {
		before := map[int64]journey.Run{}
		for _, id := range all {
			before[id] = mustLoad(t, s, id)
		}
		now := t0.Add(time.Duration(i+1) * time.Hour)
		id, wakes, err := s.RecordEngagement(ctx, "t1", " Patient/p1 ", tc.subject, "portal.viewed", []byte(`{"page":"`+canaryFact+`"}`), now)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var bumped []int64
		for _, rid := range all {
			r := mustLoad(t, s, rid)
			switch {
			case r.WakeSeq == before[rid].WakeSeq+1 && sameTime(r.DueAt, &now):
				bumped = append(bumped, rid)
			case r.WakeSeq != before[rid].WakeSeq || !sameTime(r.DueAt, before[rid].DueAt):
				t.Errorf("%s: run %d moved oddly: seq %d due %v", tc.name, rid, r.WakeSeq, r.DueAt)
			}
		}
		slices.Sort(bumped)
		want := slices.Sorted(slices.Values(tc.want))
		if !slices.Equal(bumped, want) {
			t.Errorf("%s: woke runs %v, want %v", tc.name, bumped, want)
		}
		for _, w := range wakes {
			if slices.Contains(want, w.ID) && (w.WakeSeq != before[w.ID].WakeSeq+1 || !w.DueAt.Equal(now)) {
				t.Errorf("%s: wake-up %+v", tc.name, w)
			}
		}
		for _, rid := range want {
			if !slices.ContainsFunc(wakes, func(w journey.Wake) bool { return w.ID == rid }) {
				t.Errorf("%s: run %d woken but no wake-up returned for the queue", tc.name, rid)
			}
		}
		var raw [][]byte
		if err := s.RawScan(ctx, &raw, `SELECT data_sealed FROM engagements WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		if len(raw) != 1 || len(raw[0]) == 0 || bytes.Contains(raw[0], []byte(canaryFact)) || bytes.Contains(raw[0], []byte("page")) {
			t.Fatalf("%s: engagement data is not sealed at rest", tc.name)
		}
	}
	audit := auditRows(t, s, "t1", "engagement.recorded")
	if len(audit) != 3 || bytes.Contains(audit[0].Detail, []byte(canaryFact)) {
		t.Fatalf("engagement.recorded audit rows: %+v", audit)
	}
	// A type the schema refuses records nothing and wakes nothing.
	seq := mustLoad(t, s, appointment).WakeSeq
	if _, _, err := s.RecordEngagement(ctx, "t1", "Patient/p1", "", "Not A Type", nil, t0); err == nil {
		t.Fatal("an invalid event type was recorded")
	}
	if r := mustLoad(t, s, appointment); r.WakeSeq != seq {
		t.Fatalf("a refused engagement woke the run (seq %d)", r.WakeSeq)
	}
}

func TestEngagementsSince(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	record := func(tenant, patient, subject, typ string, at time.Time) int64 {
		id, _, err := s.RecordEngagement(ctx, tenant, patient, subject, typ, nil, at)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	early := record("t1", "Patient/p1", "", "delivered", t0.Add(-time.Hour))
	opened := record("t1", "Patient/p1", "Appointment/a1", "opened", t0)
	record("t1", "Patient/p2", "", "opened", t0.Add(30*time.Minute))
	clicked := record("t2", "Patient/p1", "", "clicked", t0.Add(30*time.Minute))
	viewed := record("t1", "Patient/p1", "ExplanationOfBenefit/e1", "portal.viewed", t0.Add(time.Hour))
	login := record("t1", "Patient/p1", "", "portal.login", t0.Add(2*time.Hour))
	p1 := s.PatientIndex("t1", "Patient/p1")
	run := func(tenant, subject string, cursor int64) journey.Run {
		return journey.Run{TenantID: tenant, PatientIndex: s.PatientIndex(tenant, "Patient/p1"), Subject: subject, EngagementCursor: cursor,
			Facts: workflow.Facts{"patient": "Patient/p1"}}
	}

	for _, tc := range []struct {
		name  string
		run   journey.Run
		since time.Time
		want  []journey.Engagement
	}{
		{"the appointment's run, from the start", run("t1", "Appointment/a1", 0), t0.Add(-2 * time.Hour),
			[]journey.Engagement{{ID: early, Type: "delivered"}, {ID: opened, Type: "opened"}, {ID: login, Type: "portal.login"}}},
		{"the EOB's run", run("t1", "ExplanationOfBenefit/e1", 0), t0.Add(-2 * time.Hour),
			[]journey.Engagement{{ID: early, Type: "delivered"}, {ID: viewed, Type: "portal.viewed"}, {ID: login, Type: "portal.login"}}},
		{"a run of the patient as a whole", run("t1", "patient:"+p1, 0), t0.Add(-2 * time.Hour),
			[]journey.Engagement{{ID: early, Type: "delivered"}, {ID: opened, Type: "opened"}, {ID: viewed, Type: "portal.viewed"}, {ID: login, Type: "portal.login"}}},
		{"since the run started", run("t1", "Appointment/a1", 0), t0, []journey.Engagement{{ID: opened, Type: "opened"}, {ID: login, Type: "portal.login"}}},
		{"after the cursor", run("t1", "Appointment/a1", opened), t0, []journey.Engagement{{ID: login, Type: "portal.login"}}},
		{"since later", run("t1", "patient:"+p1, 0), t0.Add(time.Minute), []journey.Engagement{{ID: viewed, Type: "portal.viewed"}, {ID: login, Type: "portal.login"}}},
		{"all seen", run("t1", "Appointment/a1", login), t0, nil},
		{"other tenant", run("t2", "Appointment/a1", 0), t0, []journey.Engagement{{ID: clicked, Type: "clicked"}}},
	} {
		got, err := s.EngagementsSince(ctx, tc.run, tc.since)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPromotion(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	id := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a1"}, t0).ID
	w1 := mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0}) // due t0+48h
	var w2 journey.Wake

	promotable := func(now time.Time) []journey.Wake {
		t.Helper()
		ws, err := s.PromotableRuns(ctx, now, time.Hour, 10)
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	overdue := func(now time.Time) []journey.Wake {
		t.Helper()
		ws, err := s.OverdueRuns(ctx, now, 5*time.Minute, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	mark := func(w journey.Wake) {
		t.Helper()
		if err := s.MarkPromoted(ctx, []journey.Wake{w}); err != nil {
			t.Fatal(err)
		}
	}
	due := t0.Add(48 * time.Hour)
	for _, tc := range []struct {
		name        string
		do          func()
		now         time.Time
		wantPromote *journey.Wake // the wake-up expected promotable, nil for none
		wantOverdue *journey.Wake
	}{
		{"far from due", nil, t0, nil, nil},
		{"due within the horizon", nil, due.Add(-30 * time.Minute), &w1, nil},
		{"overdue but never handed over", nil, due.Add(time.Hour), &w1, nil},
		{"handed over", func() { mark(w1) }, due.Add(-30 * time.Minute), nil, nil},
		{"handed over, late within slack", nil, due.Add(4 * time.Minute), nil, nil},
		{"handed over, lost", nil, due.Add(6 * time.Minute), nil, &w1},
		{"saved again at a new seq", func() {
			w2 = mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputWake, Now: due}) // waits 24h more
		}, due.Add(24*time.Hour - 30*time.Minute), &w2, nil},
		{"a stale seq marks nothing", func() { mark(w1) }, due.Add(24*time.Hour - 30*time.Minute), &w2, nil},
		{"the current seq marks", func() { mark(w2) }, due.Add(24 * time.Hour), nil, nil},
		{"ended", func() {
			mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputEnd, Now: due.Add(time.Hour)})
		}, due.Add(30 * 24 * time.Hour), nil, nil},
	} {
		if tc.do != nil {
			tc.do()
		}
		check := func(what string, got []journey.Wake, want *journey.Wake) {
			if want == nil {
				if len(got) != 0 {
					t.Errorf("%s: %s %+v, want none", tc.name, what, got)
				}
				return
			}
			if len(got) != 1 || got[0].ID != id || got[0].WakeSeq != want.WakeSeq || got[0].TenantID != "t1" || !got[0].DueAt.Equal(want.DueAt) {
				t.Errorf("%s: %s %+v, want %+v", tc.name, what, got, *want)
			}
		}
		check("promotable", promotable(tc.now), tc.wantPromote)
		check("overdue", overdue(tc.now), tc.wantOverdue)
	}
	if w2.WakeSeq <= w1.WakeSeq || !w2.DueAt.Equal(due.Add(24*time.Hour)) {
		t.Fatalf("second wait: %+v after %+v", w2, w1)
	}

	// Earliest due first, within the limit.
	soon := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a2"}, t0)
	later := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a3"}, t0.Add(-time.Hour))
	ws, err := s.PromotableRuns(ctx, t0, 0, 1)
	if err != nil || len(ws) != 1 || ws[0].ID != later.ID {
		t.Fatalf("limit 1: %+v (%v), want run %d", ws, err, later.ID)
	}
	if err := s.MarkPromoted(ctx, []journey.Wake{soon, later}); err != nil {
		t.Fatal(err)
	}
	if ws := promotable(t0); len(ws) != 0 {
		t.Fatalf("after marking both: %+v", ws)
	}
	if err := s.MarkPromoted(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// The reconciler pages through overdue runs by (due, id), so runs due at
// the same moment are neither skipped nor repeated.
func TestOverdueRunsPages(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustWorkflow(t, s, "t1", remindersDef("reminders", "appointment.booked"), journey.WorkflowActive)
	var lost []journey.Wake
	for i, at := range []time.Time{t0, t0, t0, t0.Add(time.Minute), t0.Add(-time.Minute)} {
		lost = append(lost, mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: fmt.Sprintf("Appointment/a%d", i)}, at))
	}
	if err := s.MarkPromoted(ctx, lost); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Hour)
	var seen []int64
	var after *journey.Wake
	for page := 0; page < 5; page++ {
		ws, err := s.OverdueRuns(ctx, now, 5*time.Minute, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) == 0 {
			break
		}
		for _, w := range ws {
			seen = append(seen, w.ID)
		}
		after = &ws[len(ws)-1]
	}
	want := []int64{lost[4].ID, lost[0].ID, lost[1].ID, lost[2].ID, lost[3].ID}
	if !slices.Equal(seen, want) {
		t.Fatalf("pages gave %v, want %v", seen, want)
	}
}

func TestEnsureRunNotice(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustWorkflow(t, s, "t1", remindersDef("reminders", "appointment.booked"), journey.WorkflowActive)
	mustWorkflow(t, s, "t1", remindersDef("survey", "appointment.booked"), journey.WorkflowActive)
	ev := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "1")
	run := mustLoad(t, s, mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a1", EventID: &ev}, t0).ID)
	run2 := mustLoad(t, s, mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "survey", Subject: "Appointment/a1", EventID: &ev}, t0).ID)

	ensure := func(r journey.Run, step, template string) delivery.Notice {
		t.Helper()
		n, err := s.EnsureRunNotice(ctx, r, step, template, "appointment", ev)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := ensure(run, "confirm", "appointment.confirmation")
	if first.ID == 0 || first.RunID == nil || *first.RunID != run.ID || first.Step != "confirm" ||
		first.Template != "appointment.confirmation" || first.Status != delivery.NoticePending || first.EventID != ev || first.PortalToken == "" {
		t.Fatalf("run notice: %+v", first)
	}
	again := ensure(run, "confirm", "appointment.confirmation")
	if again.ID != first.ID || again.PortalToken != first.PortalToken {
		t.Fatalf("second ensure: notice %d token changed %v; want notice %d", again.ID, again.PortalToken != first.PortalToken, first.ID)
	}
	eventNotice, err := s.EnsureNotice(ctx, "t1", ev, "appointment")
	if err != nil {
		t.Fatal(err)
	}
	eventAgain, err := s.EnsureNotice(ctx, "t1", ev, "appointment")
	if err != nil {
		t.Fatal(err)
	}
	if eventNotice.RunID != nil || eventAgain.ID != eventNotice.ID {
		t.Fatalf("event notice %d (run %v), again %d", eventNotice.ID, eventNotice.RunID, eventAgain.ID)
	}
	distinct := map[string]delivery.Notice{
		"first":          first,
		"another step":   ensure(run, "remind-1", "appointment.reminder"),
		"another run":    ensure(run2, "confirm", "appointment.confirmation"),
		"event-level":    eventNotice,
		"after an event": ensure(run, "remind-2", "appointment.reminder"),
	}
	ids, tokens := map[int64]string{}, map[string]string{}
	for name, n := range distinct {
		if prev, dup := ids[n.ID]; dup {
			t.Errorf("%s and %s share notice %d", name, prev, n.ID)
		}
		if prev, dup := tokens[n.PortalToken]; dup {
			t.Errorf("%s and %s share a portal token", name, prev)
		}
		ids[n.ID], tokens[n.PortalToken] = name, name
	}
	if c, err := s.CountAll(ctx, "t1"); err != nil || c.Notices != int64(len(distinct)) {
		t.Fatalf("%d notices (%v), want %d", c.Notices, err, len(distinct))
	}
}

func TestWorkflowStats(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	// Version 1 waited at "wait-old"; version 2 renamed it "wait".
	v1 := workflow.Definition{ID: "flow", Trigger: workflow.Trigger{Event: "appointment.booked"}, Steps: []workflow.Step{
		{ID: "confirm", Type: workflow.StepSend, Channel: "email", Template: "appointment.confirmation"},
		{ID: "wait-old", Type: workflow.StepWait, Duration: "24h"},
		{ID: "remind", Type: workflow.StepSend, Channel: "email", Template: "appointment.reminder"},
		{ID: "done", Type: workflow.StepEnd},
	}}
	v2 := v1
	v2.Steps = slices.Clone(v1.Steps)
	v2.Steps[1] = workflow.Step{ID: "wait", Type: workflow.StepWait, Duration: "48h"}
	mustWorkflow(t, s, "t1", v1, journey.WorkflowActive)
	run := func(tenant string, d workflow.Definition, version int, subject string, inputs ...workflow.Input) int64 {
		id := mustStart(t, s, journey.NewRun{TenantID: tenant, WorkflowID: d.ID, WorkflowVersion: version, Subject: subject}, t0).ID
		for _, in := range inputs {
			mustAdvance(t, s, d, id, in)
		}
		return id
	}
	start := workflow.Input{Kind: workflow.InputStart, Now: t0}
	cancel := workflow.Input{Kind: workflow.InputEnd, Now: t0.Add(time.Hour)}
	run("t1", v1, 1, "Appointment/old", start) // waiting at wait-old
	run("t1", v1, 1, "Appointment/old-cancelled", start, cancel)
	mustWorkflow(t, s, "t1", v2, journey.WorkflowActive)
	run("t1", v2, 2, "Appointment/waiting", start)
	run("t1", v2, 2, "Appointment/waiting-too", start)
	run("t1", v2, 2, "Appointment/cancelled", start, cancel)
	run("t1", v2, 2, "Appointment/completed", start, workflow.Input{Kind: workflow.InputWake, Now: t0.Add(48 * time.Hour)})
	run("t1", v2, 2, "Appointment/new") // created, at no step yet
	// Other workflows and tenants do not count.
	other := v2
	other.ID = "other"
	mustWorkflow(t, s, "t1", other, journey.WorkflowActive)
	run("t1", other, 1, "Appointment/waiting", start)
	mustWorkflow(t, s, "t2", v2, journey.WorkflowActive)
	run("t2", v2, 1, "Appointment/waiting", start, cancel)

	latest, err := s.Workflow(ctx, "t1", "flow")
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := journey.Workflows{Store: s}.Stats(ctx, "t1", latest.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []journey.StepStats{
		{Step: "confirm", Processed: 6, Outcomes: map[string]int64{}},
		{Step: "wait", Now: 2, Processed: 4, Outcomes: map[string]int64{workflow.OutcomeCancelled: 1}, DropOff: 1.0 / 4},
		{Step: "remind", Processed: 1, Outcomes: map[string]int64{}},
		// Ending at an end step is no drop-off.
		{Step: "done", Processed: 1, Outcomes: map[string]int64{workflow.OutcomeCompleted: 1}},
		// A step only an older version has comes last.
		{Step: "wait-old", Now: 1, Processed: 2, Outcomes: map[string]int64{workflow.OutcomeCancelled: 1}, DropOff: 1.0 / 2},
	}
	if len(got) != len(want) {
		t.Fatalf("stats for %d steps, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Step != w.Step || g.Now != w.Now || g.Processed != w.Processed || fmt.Sprint(g.Outcomes) != fmt.Sprint(w.Outcomes) ||
			g.DropOff < w.DropOff-1e-9 || g.DropOff > w.DropOff+1e-9 {
			t.Errorf("step %d: %+v, want %+v", i, g, w)
		}
	}

	counts, err := s.RunCounts(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if counts[workflow.StatusWaiting] != 5 || counts[workflow.StatusEnded] != 3 || len(counts) != 2 {
		t.Fatalf("run counts %v", counts)
	}
}

func TestUnsettled(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	// Another tenant's unprocessed event and a processed one never count.
	mustEvent(t, s, "t2", "sub2", "Appointment", "u1", "1")
	processed := mustEvent(t, s, "t1", "sub1", "ExplanationOfBenefit", "e1", "1")
	if err := s.MarkEventProcessed(ctx, processed); err != nil {
		t.Fatal(err)
	}
	var id, ev, ev2 int64
	for _, tc := range []struct {
		name string
		do   func()
		now  time.Time
		want int64
	}{
		{"nothing yet", nil, t0, 0},
		{"an event the worker has not finished with", func() { ev = mustEvent(t, s, "t1", "sub1", "Appointment", "u1", "1") }, t0, 1},
		{"and its run, due now", func() {
			id = mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/u1"}, t0).ID
		}, t0, 2},
		{"the event processed, the run waiting for later", func() {
			mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0})
			if err := s.MarkEventProcessed(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}, t0, 0},
		{"the wait came due", nil, t0.Add(48 * time.Hour), 1},
		{"the run ended", func() {
			mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputEnd, Now: t0.Add(48 * time.Hour)})
		}, t0.Add(48 * time.Hour), 0},
		{"a second event of the subject", func() { ev2 = mustEvent(t, s, "t1", "sub1", "Appointment", "u1", "2") }, t0.Add(48 * time.Hour), 1},
		{"processed too", func() {
			if err := s.MarkEventProcessed(ctx, ev2); err != nil {
				t.Fatal(err)
			}
		}, t0.Add(48 * time.Hour), 0},
	} {
		if tc.do != nil {
			tc.do()
		}
		got, err := s.Unsettled(ctx, "t1", tc.now)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: unsettled %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestRunsForSubjectShowsThePath(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	mustWorkflow(t, s, "t1", remindersDef("survey", "appointment.booked"), journey.WorkflowActive)
	mustWorkflow(t, s, "t2", d, journey.WorkflowActive)
	first := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a1",
		Facts: workflow.Facts{"note": canaryFact}}, t0).ID
	mustAdvance(t, s, d, first, workflow.Input{Kind: workflow.InputStart, Now: t0})
	mustAdvance(t, s, d, first, workflow.Input{Kind: workflow.InputWake, Now: t0.Add(48 * time.Hour)})
	second := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "survey", Subject: "Appointment/a1"}, t0).ID
	mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a2"}, t0)
	mustStart(t, s, journey.NewRun{TenantID: "t2", WorkflowID: "reminders", Subject: "Appointment/a1"}, t0)

	views, err := s.RunsForSubject(ctx, "t1", "", "Appointment/a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 2 || views[0].ID != first || views[1].ID != second {
		t.Fatalf("runs %+v, want %d then %d", views, first, second)
	}
	v := views[0]
	if v.WorkflowID != "reminders" || v.WorkflowVersion != 1 || v.Status != workflow.StatusWaiting || v.Step != "wait-2" ||
		!sameTime(v.DueAt, ptr(t0.Add(72*time.Hour))) || !v.CreatedAt.Equal(t0) {
		t.Fatalf("view: %+v", v)
	}
	var path []string
	for _, p := range v.Path {
		path = append(path, p.Step+"="+p.Happened)
	}
	if want := []string{"confirm=", "wait-1=time", "remind-1=", "wait-2="}; !slices.Equal(path, want) {
		t.Fatalf("path %v, want %v", path, want)
	}
	if !v.Path[0].At.Equal(t0) || !v.Path[3].At.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("path times %v %v", v.Path[0].At, v.Path[3].At)
	}
	if views[1].Path == nil || len(views[1].Path) != 0 || views[1].Step != "" {
		t.Fatalf("a run that has not started: step %q path %v", views[1].Step, views[1].Path)
	}
	b, err := json.Marshal(views)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), canaryFact) {
		t.Fatal("the run view shows the run's facts")
	}
	if other, err := s.RunsForSubject(ctx, "t1", "", "Appointment/none"); err != nil || len(other) != 0 {
		t.Fatalf("unknown subject: %+v, %v", other, err)
	}
}

func TestSegmentMembers(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	mustTenant(t, s, "t2", "sub2")
	for _, tc := range []struct {
		tenant, segment, patient string
		joined                   bool
	}{
		{"t1", "diabetes", "Patient/" + canaryFact, true},
		{"t1", "diabetes", "Patient/p2", true},
		{"t1", "diabetes", "Patient/" + canaryFact, false},
		{"t1", "asthma", "Patient/p2", true},
		{"t2", "diabetes", "Patient/p3", true},
	} {
		joined, err := s.AddSegmentMember(ctx, tc.tenant, tc.segment, tc.patient)
		if err != nil || joined != tc.joined {
			t.Fatalf("add %s to %s/%s: joined %v (%v), want %v", tc.patient, tc.tenant, tc.segment, joined, err, tc.joined)
		}
	}
	got, err := s.SegmentMembers(ctx, "t1", "diabetes")
	if err != nil || !slices.Equal(got, []string{"Patient/" + canaryFact, "Patient/p2"}) {
		t.Fatalf("members %v (%v)", got, err)
	}
	var raw [][]byte
	if err := s.RawScan(ctx, &raw, `SELECT patient_sealed FROM segment_members`); err != nil {
		t.Fatal(err)
	}
	for _, b := range raw {
		if bytes.Contains(b, []byte("Patient/")) {
			t.Fatal("segment member stored in clear")
		}
	}
	if _, err := s.AddSegmentMember(ctx, "t1", "Bad Segment", "Patient/p1"); err == nil {
		t.Fatal("an invalid segment name was accepted")
	}
}

func TestConcurrentSavesAndStarts(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	const n = 6
	d := remindersDef("reminders", "appointment.booked")
	concurrently := func(f func(i int) error) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = f(i) }()
		}
		wg.Wait()
		return errs
	}

	// Creating a new workflow at once from several requests: one wins
	// version 1; the others learn that it exists (the API answers 409).
	versions := make([]int, n)
	var won []int
	for i, err := range concurrently(func(i int) (err error) { versions[i], err = s.SaveWorkflow(ctx, "t1", d, true); return err }) {
		switch {
		case err == nil:
			won = append(won, versions[i])
		case !errors.Is(err, journey.ErrWorkflowExists):
			t.Errorf("a losing create: %v, want ErrWorkflowExists", err)
		}
	}
	if !slices.Equal(won, []int{1}) {
		t.Fatalf("concurrent creates got versions %v, want one winner with version 1", won)
	}
	if wi, err := s.Workflow(ctx, "t1", d.ID); err != nil || wi.Version != len(won) {
		t.Fatalf("latest version %d (%v), want %d", wi.Version, err, len(won))
	}
	first := len(won)
	// New versions of an existing workflow serialise: each save gets its own.
	for _, err := range concurrently(func(i int) (err error) { versions[i], err = s.SaveWorkflow(ctx, "t1", d, false); return err }) {
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != first+1+i {
			t.Fatalf("concurrent versions %v, want %d..%d", versions, first+1, first+n)
		}
	}
	if wi, err := s.Workflow(ctx, "t1", d.ID); err != nil || wi.Version != first+n {
		t.Fatalf("latest version %d (%v), want %d", wi.Version, err, first+n)
	}

	// Duplicated triggers start one run.
	var started atomic.Int32
	for _, err := range concurrently(func(int) error {
		_, ok, err := s.StartRun(ctx, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, WorkflowVersion: first + n, Subject: "Appointment/a1",
			PatientIndex: s.PatientIndex("t1", "Patient/p1"), Priority: workflow.PriorityNormal}, t0)
		if ok {
			started.Add(1)
		}
		return err
	}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := started.Load(); n != 1 {
		t.Fatalf("%d concurrent starts created a run, want 1", n)
	}
}

func TestDeferPendingRetriesFromPostgres(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	id := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a1"}, t0).ID
	saved, actions := saveStep(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0})
	first := mustLoad(t, s, id)
	if first.Attempts != 0 || len(first.Pending) != 1 {
		t.Fatalf("fresh pending run: attempts %d pending %v", first.Attempts, first.Pending)
	}

	// Two failed attempts, each a new wake-up at its retry time.
	var last journey.Wake
	for i, retry := range []time.Time{t0.Add(5 * time.Second), t0.Add(15 * time.Second)} {
		r := mustLoad(t, s, id)
		w, err := s.DeferPending(ctx, r, retry)
		if err != nil {
			t.Fatal(err)
		}
		if w.ID != id || w.WakeSeq != r.WakeSeq+1 || !w.DueAt.Equal(retry) {
			t.Fatalf("attempt %d: wake-up %+v, want seq %d due %v", i+1, w, r.WakeSeq+1, retry)
		}
		if _, err := s.DeferPending(ctx, r, retry); !errors.Is(err, journey.ErrStale) {
			t.Fatalf("attempt %d deferred twice: %v, want journey.ErrStale", i+1, err)
		}
		got := mustLoad(t, s, id)
		if got.Attempts != i+1 || !slices.Equal(got.Pending, actions) || got.Status != workflow.StatusWaiting || !sameTime(got.DueAt, &retry) {
			t.Fatalf("after attempt %d: attempts %d pending %v status %q due %v", i+1, got.Attempts, got.Pending, got.Status, got.DueAt)
		}
		last = w
	}
	if last.WakeSeq != saved.WakeSeq+2 {
		t.Fatalf("seq %d after two deferrals of seq %d", last.WakeSeq, saved.WakeSeq)
	}
	// The scheduler hands the retry over when it is due, not before.
	for _, tc := range []struct {
		now  time.Time
		want int
	}{{t0, 0}, {t0.Add(15 * time.Second), 1}} {
		if ws, err := s.PromotableRuns(ctx, tc.now, time.Hour, 10); err != nil || len(ws) != tc.want {
			t.Fatalf("promotable at %v: %+v (%v), want %d", tc.now, ws, err, tc.want)
		}
	}
	// Done at last: the count starts again for the next actions.
	if _, err := s.ClearPending(ctx, mustLoad(t, s, id), t0.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if r := mustLoad(t, s, id); r.Attempts != 0 || len(r.Pending) != 0 || !sameTime(r.DueAt, ptr(t0.Add(48*time.Hour))) {
		t.Fatalf("cleared: attempts %d pending %v due %v", r.Attempts, r.Pending, r.DueAt)
	}
	// A run that ended (cancelled) meanwhile is not retried.
	if _, err := s.EndSubjectRuns(ctx, "t1", "", "Appointment/a1", workflow.OutcomeCancelled, nil, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeferPending(ctx, mustLoad(t, s, id), t0.Add(2*time.Hour)); !errors.Is(err, journey.ErrStale) {
		t.Fatalf("deferral of an ended run: %v, want journey.ErrStale", err)
	}
}

func TestUnsettledCountsRunsCarryingOutActions(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	id := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a1"}, t0).ID
	saveStep(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0}) // its confirmation is being sent
	if n, err := s.Unsettled(ctx, "t1", t0); err != nil || n != 1 {
		t.Fatalf("unsettled while a run's send is in flight: %d (%v), want 1", n, err)
	}
	if _, err := s.ClearPending(ctx, mustLoad(t, s, id), t0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Unsettled(ctx, "t1", t0); err != nil || n != 0 {
		t.Fatalf("unsettled once the send is done: %d (%v), want 0", n, err)
	}
}

func TestStartRunReportsTheExistingRun(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	nr := journey.NewRun{TenantID: "t1", WorkflowID: d.ID, WorkflowVersion: 1, Subject: "Appointment/a1",
		PatientIndex: s.PatientIndex("t1", "Patient/p1"), Priority: workflow.PriorityHigh}
	id := mustStart(t, s, nr, t0).ID
	saved := mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0})
	got, created, err := s.StartRun(ctx, nr, t0.Add(time.Hour))
	if err != nil || created {
		t.Fatalf("second start: created %v, %v", created, err)
	}
	if got.ID != id || got.TenantID != "t1" || got.WakeSeq != saved.WakeSeq || !got.DueAt.Equal(saved.DueAt) ||
		got.Step != "wait-1" || got.Priority != workflow.PriorityHigh {
		t.Fatalf("second start reported %+v, want the existing run's wake-up %+v", got, saved)
	}
}

func TestSaveRunLeavesAnEndedRunAlone(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	id := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: "Appointment/a1"}, t0).ID
	mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputEnd, Now: t0})
	r := mustLoad(t, s, id)
	if _, err := s.SaveRun(ctx, r, r.State, nil, r.EngagementCursor, t0.Add(time.Hour)); !errors.Is(err, journey.ErrStale) {
		t.Fatalf("save of an ended run: %v, want journey.ErrStale", err)
	}
	var endedAt []time.Time
	if err := s.RawScan(ctx, &endedAt, `SELECT ended_at FROM runs WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	if len(endedAt) != 1 || !endedAt[0].Equal(t0) {
		t.Fatalf("ended_at %v, want %v", endedAt, t0)
	}
	if n := len(auditRows(t, s, "t1", "run.ended")); n != 1 {
		t.Fatalf("%d run.ended rows for one run", n)
	}
}

// A send the relay took (delivery 'sent') whose notice is not yet marked
// sent stays a sent notice when a cancellation lands in between.
func TestCancellationDoesNotSkipASentNotice(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	ev := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", "1")
	w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Subject: "Appointment/a1", EventID: &ev}, t0)
	mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
	run := mustLoad(t, s, w.ID)
	n, err := s.EnsureRunNotice(ctx, run, "confirm", "appointment.confirmation", "appointment", ev)
	if err != nil {
		t.Fatal(err)
	}
	dl, proceed, err := s.BeginDelivery(ctx, n, "email", "", false, delivery.Disclosure{})
	if err != nil || !proceed {
		t.Fatal(err, proceed)
	}
	disclosed := testDisclosure("appointment")
	disclosed.PatientIndex = s.PatientIndex("t1", "Patient/p1")
	if err := s.FinishDelivery(ctx, dl, delivery.DeliverySent, true, "<m@x>", "", disclosed); err != nil {
		t.Fatal(err)
	}
	// cancellation processed now, before FinishNotice(sent)
	if _, err := s.EndSubjectRuns(ctx, "t1", "", "Appointment/a1", workflow.OutcomeCancelled, nil, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishNotice(ctx, n, delivery.NoticeSent, nil); err != nil {
		t.Fatal(err)
	}
	var st []string
	s.q(ctx).Raw(`SELECT status FROM notices WHERE id = ?`, n.ID).Scan(&st)
	if st[0] != delivery.NoticeSent {
		t.Fatalf("delivery was sent, notice status = %s", st[0])
	}
}

// FinishNotice holds a notice row lock while it writes its audit row;
// EndSubjectRuns waits for that notice and writes audit rows too: auditing
// must take no lock the waiting side holds, or the two deadlock.
func TestEndSubjectRunsDoesNotDeadlockWithFinishNotice(t *testing.T) {
	for lockIdx := 0; lockIdx < 2; lockIdx++ {
		s := mustStore(t)
		ctx := context.Background()
		var notices []delivery.Notice
		for _, id := range []string{"reminders", "survey"} {
			d := remindersDef(id, "appointment.booked")
			mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
			ev := mustEvent(t, s, "t1", "sub1", "Appointment", "a1", id)
			w := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: id, Subject: "Appointment/a1", EventID: &ev}, t0)
			mustAdvance(t, s, d, w.ID, workflow.Input{Kind: workflow.InputStart, Now: t0})
			n, err := s.EnsureRunNotice(ctx, mustLoad(t, s, w.ID), "confirm", "appointment.confirmation", "appointment", ev)
			if err != nil {
				t.Fatal(err)
			}
			notices = append(notices, n)
		}
		tx := s.db.Begin()
		if err := tx.Exec(`UPDATE notices SET updated_at = now() WHERE id = ?`, notices[lockIdx].ID).Error; err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.EndSubjectRuns(ctx, "t1", "", "Appointment/a1", workflow.OutcomeCancelled, nil, t0.Add(time.Hour))
			done <- err
		}()
		time.Sleep(500 * time.Millisecond)
		finishing := &Store{db: tx, keys: s.keys, inTx: true}
		aerr := finishing.Audit(ctx, AuditRecord{TenantID: "t1", Actor: "worker", Action: "notice.sent",
			SubjectType: "notice", SubjectID: strconv.FormatInt(notices[lockIdx].ID, 10)})
		tx.Rollback()
		err := <-done
		if aerr != nil || err != nil {
			t.Fatalf("locked notice %d: the FinishNotice side got %v, EndSubjectRuns got %v", lockIdx, aerr, err)
		}
	}
}

// Two sources' Appointment/a1 are different appointments: each has its own
// run of a workflow, and a cancellation or a refresh of one source's
// subject never touches the other's runs.
func TestSubjectRunsArePerSource(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	d := remindersDef("reminders", "appointment.booked")
	mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
	a := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Source: "ehr-a", Subject: "Appointment/a1"}, t0)
	b := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", Source: "subscription/s2", Subject: "Appointment/a1"}, t0)
	if a.ID == b.ID {
		t.Fatal("one run for two sources' appointments")
	}
	for _, id := range []int64{a.ID, b.ID} {
		mustAdvance(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0})
	}
	if n, err := s.EndSubjectRuns(ctx, "t1", "subscription/s2", "Appointment/a1", workflow.OutcomeCancelled, nil, t0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ended %d runs (%v), want the other source's one", n, err)
	}
	if r := mustLoad(t, s, a.ID); r.Status != workflow.StatusWaiting || r.Source != "ehr-a" {
		t.Fatalf("the first source's run after the other's cancellation: %s (source %q)", r.Status, r.Source)
	}
	if wakes, err := s.RefreshSubject(ctx, "t1", "subscription/s2", "Appointment/a1", 99, workflow.Facts{"status": "booked"}, true, t0); err != nil || len(wakes) != 0 {
		t.Fatalf("refresh of the other source woke %d runs (%v)", len(wakes), err)
	}
	if r := mustLoad(t, s, a.ID); r.EventID != nil {
		t.Fatalf("the other source's refresh gave the first source's run event %d", *r.EventID)
	}
	all, err := s.RunsForSubject(ctx, "t1", "", "Appointment/a1")
	if err != nil || len(all) != 2 {
		t.Fatalf("%d runs of every source (%v), want 2", len(all), err)
	}
	one, err := s.RunsForSubject(ctx, "t1", "ehr-a", "Appointment/a1")
	if err != nil || len(one) != 1 || one[0].ID != a.ID || one[0].Source != "ehr-a" {
		t.Fatalf("runs of ehr-a: %+v (%v)", one, err)
	}
}

// A portal view that arrives while the run's notice is still being sent
// does not wake it then (its task owns it), but the moment the send is
// recorded the run is due at once, not at the wait's 7-day timeout: on
// both the one-notice path (ClearPending) and the batch path
// (clearStarted). A run nothing happened to waits for its timeout.
func TestEventDuringASendWakesTheRunWhenTheSendIsDone(t *testing.T) {
	var d workflow.Definition
	for _, b := range workflow.Builtins() {
		if b.ID == "eob-notice" {
			d = b
		}
	}
	for _, path := range []string{"one notice", "batch"} {
		t.Run(path, func(t *testing.T) {
			s := mustStore(t)
			ctx := context.Background()
			mustWorkflow(t, s, "t1", d, journey.WorkflowActive)
			p1 := s.PatientIndex("t1", "Patient/p1")
			start := func(subject string) int64 {
				id := mustStart(t, s, journey.NewRun{TenantID: "t1", WorkflowID: d.ID, Subject: subject, PatientIndex: p1}, t0).ID
				if _, actions := saveStep(t, s, d, id, workflow.Input{Kind: workflow.InputStart, Now: t0}); len(actions) == 0 {
					t.Fatal("the notice step decided no send")
				}
				return id
			}
			viewed, quiet := start("ExplanationOfBenefit/e1"), start("ExplanationOfBenefit/e2")
			before := mustLoad(t, s, viewed)
			if _, _, err := s.RecordEngagement(ctx, "t1", "Patient/p1", "ExplanationOfBenefit/e1", "portal.viewed", nil, t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if r := mustLoad(t, s, viewed); r.WakeSeq != before.WakeSeq {
				t.Fatalf("the pending run was woken (seq %d → %d)", before.WakeSeq, r.WakeSeq)
			}
			done := t0.Add(2 * time.Second)
			due := map[int64]time.Time{}
			if path == "one notice" {
				for _, id := range []int64{viewed, quiet} {
					w, err := s.ClearPending(ctx, mustLoad(t, s, id), done)
					if err != nil {
						t.Fatal(err)
					}
					due[id] = w.DueAt
				}
			} else {
				wakes, _, err := s.clearStarted(ctx, []journey.Run{mustLoad(t, s, viewed), mustLoad(t, s, quiet)}, done)
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range wakes {
					due[w.ID] = w.DueAt
				}
			}
			if !due[viewed].Equal(done) {
				t.Errorf("the viewed run is due %v, want at once (%v)", due[viewed], done)
			}
			if !due[quiet].After(done.Add(24 * time.Hour)) {
				t.Errorf("the quiet run is due %v, want its timeout days later", due[quiet])
			}
			// Once cleared, the flag is spent: the next clear goes by the timeout.
			var flags []bool
			if err := s.RawScan(ctx, &flags, `SELECT wake_after_pending FROM runs WHERE id IN (?, ?)`, viewed, quiet); err != nil || len(flags) != 2 || flags[0] || flags[1] {
				t.Errorf("flags after the clear: %v %v", flags, err)
			}
		})
	}
}
