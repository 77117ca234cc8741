package console

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/workflow"
)

// The workflow page draws the definition's steps in order with the runs
// at each step now, as GET /v1/workflows/{id}/stats counts them, and a
// subject's path through it as GET /v1/runs gives it.
func TestWorkflowDiagramAndPath(t *testing.T) {
	var st *store.Store
	e := newEnv(t, func(_ *Config, s *store.Store) { st = s })
	ctx := context.Background()
	def := workflow.Definition{ID: "reminders", Trigger: workflow.Trigger{Event: "appointment.booked"}, Steps: []workflow.Step{
		{ID: "confirm", Type: workflow.StepSend, Channel: "email", Template: "appointment.confirmation"},
		{ID: "wait-1", Type: workflow.StepWait, Duration: "48h"},
		{ID: "remind", Type: workflow.StepSend, Channel: "email", Template: "appointment.reminder"},
		{ID: "done", Type: workflow.StepEnd},
	}}
	if p := workflow.Validate(def, journey.Registry(nil)); len(p) > 0 {
		t.Fatal(p)
	}
	if _, err := st.SaveWorkflow(ctx, "t1", def, true); err != nil {
		t.Fatal(err)
	}
	if err := st.SetWorkflowStatus(ctx, "t1", "reminders", journey.WorkflowActive); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var runIDs []int64
	for _, subject := range []string{"Appointment/a1", "Appointment/a2", "Appointment/a3"} {
		w, created, err := st.StartRun(ctx, journey.NewRun{TenantID: "t1", WorkflowID: "reminders", WorkflowVersion: 1, Priority: workflow.PriorityNormal,
			Source: "ehr", Subject: subject, PatientIndex: st.PatientIndex("t1", "Patient/p1")}, now)
		if err != nil || !created {
			t.Fatalf("start %s: %v", subject, err)
		}
		runIDs = append(runIDs, w.ID)
	}
	// The first two runs send their confirmation and wait; the third is
	// not woken yet, so it is at no step.
	for _, id := range runIDs[:2] {
		r := mustLoadRun(t, st, id)
		next, actions, err := workflow.Advance(def, r.State, workflow.Input{Kind: workflow.InputStart, Now: now, Facts: r.Facts})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.SaveRun(ctx, r, next, actions, r.EngagementCursor, now); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ClearPending(ctx, mustLoadRun(t, st, id), now); err != nil {
			t.Fatal(err)
		}
	}

	b := e.browser()
	b.signIn(e.key("t1", access.Operator))
	if r := b.get("/console/workflows"); r.status != http.StatusOK || !strings.Contains(r.body, `href="/console/workflows/reminders"`) {
		t.Fatalf("the list: %d %s", r.status, r.body)
	}
	page := b.get("/console/workflows/reminders")
	if page.status != http.StatusOK {
		t.Fatalf("the diagram: %d %s", page.status, page.body)
	}
	counts := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)id="step-([a-z0-9-]+)".*?class="now"[^>]*>(\d+)<`).FindAllStringSubmatch(page.body, -1) {
		counts[m[1]] = m[2]
	}
	if counts["confirm"] != "0" || counts["wait-1"] != "2" || counts["remind"] != "0" || counts["done"] != "0" ||
		!strings.Contains(page.body, "processed 2 · drop-off 0.0%") {
		t.Errorf("runs now by step: %v\n%s", counts, page.body)
	}
	if strings.Index(page.body, `id="step-confirm"`) > strings.Index(page.body, `id="step-wait-1"`) || !strings.Contains(page.body, "next → wait-1") {
		t.Errorf("steps out of order or without their edges:\n%s", page.body)
	}
	path := b.post("/console/workflows/reminders", url.Values{"subject": {"Appointment/a1"}})
	if path.status != http.StatusOK || !strings.Contains(path.body, `class="on-path" id="step-confirm"`) ||
		!strings.Contains(path.body, `class="on-path" id="step-wait-1"`) || strings.Contains(path.body, `class="on-path" id="step-remind"`) {
		t.Errorf("a1's path: %d %s", path.status, path.body)
	}
	if r := b.post("/console/workflows/reminders", url.Values{"subject": {"Patient/p1"}}); r.status != http.StatusBadRequest {
		t.Errorf("a patient reference as the subject: %d", r.status)
	}
	if r := b.get("/console/workflows/nope"); r.status != http.StatusNotFound {
		t.Errorf("an unknown workflow: %d", r.status)
	}
	other := e.browser()
	other.signIn(e.key("t2", access.Operator))
	if r := other.get("/console/workflows/reminders"); r.status != http.StatusNotFound {
		t.Errorf("another tenant's workflow: %d", r.status)
	}
}

func mustLoadRun(t *testing.T, st *store.Store, id int64) journey.Run {
	t.Helper()
	r, err := st.LoadRun(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
