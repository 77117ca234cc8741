package console

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

// workflowsView is the workflow list's data.
type workflowsView struct {
	Workflows []journey.Workflow
}

// stepBox is one step of the diagram: what it does, where it leads and
// its figures.
type stepBox struct {
	ID, Type, Detail string
	Edges            []string // "next → x", "timeout → y", …
	Stats            api.StepStatsBody
	OnPath           bool
}

// workflowView is one workflow's page: the diagram, the figures of steps
// that are no longer in the definition, and a subject's runs.
type workflowView struct {
	Workflow         journey.Workflow
	Steps            []stepBox
	Older            []api.StepStatsBody
	Source, Subject  string
	Asked            bool
	Runs             []api.RunBody
	OtherWorkflows   int // the subject's runs of other workflows, not shown
	TotalNow, Active int64
}

func (s *Server) workflowsPage(c *gin.Context) {
	if s.cfg.Workflows == nil {
		s.unavailable(c, "Workflows")
		return
	}
	ws, err := s.cfg.Workflows.List(c.Request.Context(), principal(c).TenantID)
	if err != nil {
		s.fail(c, err)
		return
	}
	v := s.baseView(c, "Workflows")
	v.Current, v.Data = "/workflows", workflowsView{Workflows: ws}
	s.render(c, http.StatusOK, "workflows", v)
}

func (s *Server) workflowPage(c *gin.Context) {
	s.showWorkflow(c, workflowView{})
}

// workflowRuns shows the diagram with a subject's runs of the workflow,
// the subject posted (GET /v1/runs takes it in the query).
func (s *Server) workflowRuns(c *gin.Context) {
	f := c.Request.PostForm
	s.showWorkflow(c, workflowView{Source: strings.TrimSpace(f.Get("source")), Subject: strings.TrimSpace(f.Get("subject")), Asked: true})
}

func (s *Server) showWorkflow(c *gin.Context, wv workflowView) {
	if s.cfg.Workflows == nil {
		s.unavailable(c, "Workflows")
		return
	}
	ctx, tenant := c.Request.Context(), principal(c).TenantID
	w, stats, err := s.cfg.Workflows.Stats(ctx, tenant, c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	wv.Workflow = w
	status, errMsg := http.StatusOK, ""
	var onPath map[string]bool
	if wv.Asked {
		if err := api.CheckRunQuery(wv.Source, wv.Subject); err != nil {
			status, errMsg = statusOf(err), fault.MessageOf(err)
		} else {
			runs, err := s.cfg.Workflows.Runs(ctx, tenant, wv.Source, wv.Subject)
			if err != nil {
				s.fail(c, err)
				return
			}
			onPath = map[string]bool{}
			for _, r := range runs {
				if r.WorkflowID != w.ID {
					wv.OtherWorkflows++
					continue
				}
				wv.Runs = append(wv.Runs, api.ToRunBody(r))
				for _, p := range r.Path {
					onPath[p.Step] = true
				}
			}
		}
	}
	byStep := map[string]api.StepStatsBody{}
	for _, st := range stats {
		byStep[st.Step] = api.ToStepStats(st)
		wv.TotalNow += st.Now
	}
	for i, step := range w.Definition.Steps {
		following := ""
		if i+1 < len(w.Definition.Steps) {
			following = w.Definition.Steps[i+1].ID
		}
		st, ok := byStep[step.ID]
		if !ok {
			st = api.StepStatsBody{Step: step.ID}
		}
		delete(byStep, step.ID)
		wv.Steps = append(wv.Steps, stepBox{ID: step.ID, Type: step.Type, Detail: stepDetail(step), Edges: stepEdges(step, following), Stats: st, OnPath: onPath[step.ID]})
	}
	for _, st := range stats {
		if _, left := byStep[st.Step]; left {
			wv.Older = append(wv.Older, api.ToStepStats(st))
		}
	}
	v := s.baseView(c, "Workflow "+w.ID)
	v.Current, v.Error, v.Data = "/workflows", errMsg, wv
	s.render(c, status, "workflow", v)
}

// stepDetail is what a step does, in a few words.
func stepDetail(st workflow.Step) string {
	var parts []string
	for _, p := range []struct{ label, v string }{
		{"", st.Channel}, {"template ", st.Template}, {"for ", st.Duration}, {"until ", st.Until}, {"timeout ", st.Timeout},
		{"workflow ", st.Workflow}, {"segment ", st.Segment}, {"reason ", st.Reason},
	} {
		if p.v != "" {
			parts = append(parts, p.label+p.v)
		}
	}
	if st.Relative != nil {
		parts = append(parts, st.Relative.Offset+" from "+st.Relative.Fact)
	}
	if len(st.Events) > 0 {
		parts = append(parts, "events "+strings.Join(st.Events, ", "))
	}
	return strings.Join(parts, " · ")
}

// stepEdges are the steps a step leads to, labelled.
// following is the step listed after it, which send, wait, wait_event
// and add_to_segment go on to unless they name another.
func stepEdges(st workflow.Step, following string) []string {
	var out []string
	if st.Next == "" && following != "" && st.Type != workflow.StepEnd && st.Type != workflow.StepBranch && st.Type != workflow.StepGoto {
		out = append(out, "next → "+following)
	}
	for i, c := range st.Conditions {
		out = append(out, "if #"+strconv.Itoa(i+1)+" → "+c.Next)
	}
	for _, e := range []struct{ label, to string }{{"else", st.Else}, {"next", st.Next}, {"timeout", st.OnTimeout}, {"if passed", st.IfPassed}, {"go to", st.Target}} {
		if e.to != "" {
			out = append(out, e.label+" → "+e.to)
		}
	}
	return out
}
