package journey

import (
	"context"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// WorkflowStore is what administering workflows needs from storage.
type WorkflowStore interface {
	// SaveWorkflow stores d as the next version; with create the workflow
	// must not exist (ErrWorkflowExists), without it must (ErrNoSuchWorkflow).
	SaveWorkflow(ctx context.Context, tenantID string, d workflow.Definition, create bool) (int, error)
	Workflow(ctx context.Context, tenantID, id string) (Workflow, error)
	Workflows(ctx context.Context, tenantID string) ([]Workflow, error)
	WorkflowExists(ctx context.Context, tenantID, id string) (bool, error)
	SetWorkflowStatus(ctx context.Context, tenantID, id, status string) error
	StepCounts(ctx context.Context, tenantID, workflowID string) (StepCounts, error)
	RunsForSubject(ctx context.Context, tenantID, source, subject string) ([]RunView, error)
}

// ErrWorkflowExists means a workflow with that id exists already.
var ErrWorkflowExists = fault.New(fault.Conflict, "a workflow with this id exists; use PUT /v1/workflows/{id} to save a new version")

// InvalidDefinition is a definition refused with every problem found.
type InvalidDefinition struct{ Problems []workflow.Problem }

func (e *InvalidDefinition) Error() string {
	return "the workflow definition is invalid; every problem is listed in problems"
}

// FaultCode and FaultMessage give the error its code: the author can fix it.
func (e *InvalidDefinition) FaultCode() fault.Code { return fault.Unprocessable }
func (e *InvalidDefinition) FaultMessage() string  { return e.Error() }

// Registry is what a definition is validated against: the channels and the
// templates this version delivers and renders (notify's, the one list
// rendering reads too), and the workflows a go-to may start: those
// workflowExists knows (a tenant's), or, when it is nil, the built-ins.
func Registry(workflowExists func(id string) bool) workflow.Registry {
	reg := workflow.RegistryOf(notify.Channels, notify.Templates)
	reg.SMSSender = notify.ValidSMSSender
	if workflowExists != nil {
		reg.Workflow = workflowExists
	}
	return reg
}

// Workflows administers a tenant's workflow definitions.
type Workflows struct {
	Store WorkflowStore
	// Channels are the channels this deployment has set up (email and the
	// portal always; SMS with a provider); a definition that sends on
	// another is refused. Nil: every channel this version delivers.
	Channels []string
}

// Save validates d against the registry and the tenant's workflows, and
// stores it as a new workflow (create) or as the next version of an
// existing one. Runs already started keep their version.
func (w Workflows) Save(ctx context.Context, tenantID string, d workflow.Definition, create bool) (int, error) {
	var lookupErr error
	known := map[string]bool{}
	reg := Registry(func(id string) bool {
		if id == d.ID {
			return true
		}
		if ok, seen := known[id]; seen || lookupErr != nil {
			return ok
		}
		ok, err := w.Store.WorkflowExists(ctx, tenantID, id)
		if err != nil {
			lookupErr = err
		}
		known[id] = ok
		return ok
	})
	if w.Channels != nil {
		reg.Configured = map[string]bool{}
		for _, c := range w.Channels {
			reg.Configured[c] = true
		}
	}
	problems := workflow.Validate(d, reg)
	if lookupErr != nil {
		return 0, lookupErr // not the author's to fix
	}
	if len(problems) > 0 {
		return 0, &InvalidDefinition{Problems: problems}
	}
	return w.Store.SaveWorkflow(ctx, tenantID, d, create)
}

// Get returns a workflow's latest version.
func (w Workflows) Get(ctx context.Context, tenantID, id string) (Workflow, error) {
	return w.Store.Workflow(ctx, tenantID, id)
}

// List returns the tenant's workflows.
func (w Workflows) List(ctx context.Context, tenantID string) ([]Workflow, error) {
	return w.Store.Workflows(ctx, tenantID)
}

// SetStatus activates or pauses a workflow. A paused workflow starts no new
// runs; its running runs carry on.
func (w Workflows) SetStatus(ctx context.Context, tenantID, id, status string) error {
	return w.Store.SetWorkflowStatus(ctx, tenantID, id, status)
}

// Stats gives per step of the workflow's latest version the runs there
// now, processed, outcomes and drop-off.
func (w Workflows) Stats(ctx context.Context, tenantID, id string) (Workflow, []StepStats, error) {
	wf, err := w.Store.Workflow(ctx, tenantID, id)
	if err != nil {
		return wf, nil, err
	}
	c, err := w.Store.StepCounts(ctx, tenantID, id)
	if err != nil {
		return wf, nil, err
	}
	return wf, stepStats(wf.Definition, c), nil
}

// Runs lists a subject's runs with their paths. The subject is a resource
// ("Appointment/{id}", "ExplanationOfBenefit/{id}") or a patient's blind
// index ("patient:{index}"), never a patient reference. A resource id is
// its source's (see Event.Source): with source "" the runs of every
// source's resource of that id are listed, each showing its source.
func (w Workflows) Runs(ctx context.Context, tenantID, source, subject string) ([]RunView, error) {
	return w.Store.RunsForSubject(ctx, tenantID, source, subject)
}

func stepStats(def workflow.Definition, c StepCounts) []StepStats {
	isEnd := map[string]bool{}
	out := make([]StepStats, len(def.Steps))
	for i, st := range def.Steps {
		isEnd[st.ID] = st.Type == workflow.StepEnd || (st.Type == workflow.StepGoto && st.Workflow != "")
		out[i] = StepStats{Step: st.ID, Outcomes: map[string]int64{}}
	}
	index := func(step string) int {
		for i := range out {
			if out[i].Step == step {
				return i
			}
		}
		out = append(out, StepStats{Step: step, Outcomes: map[string]int64{}}) // a step of an older version
		return len(out) - 1
	}
	for _, p := range c.Processed {
		out[index(p.Step)].Processed = p.N
	}
	for _, st := range c.At {
		if st.Step == "" {
			continue // created, not yet at a step
		}
		i := index(st.Step)
		if st.Status == workflow.StatusWaiting {
			out[i].Now += st.N
		} else {
			out[i].Outcomes[st.Outcome] += st.N
		}
	}
	for i := range out {
		var dropped int64
		for _, n := range out[i].Outcomes {
			if !isEnd[out[i].Step] {
				dropped += n
			}
		}
		if out[i].Processed > 0 {
			out[i].DropOff = float64(dropped) / float64(out[i].Processed)
		}
	}
	return out
}
