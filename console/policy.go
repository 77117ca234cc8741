package console

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/rego"
)

// Policy is what the playground needs of the tenants' policies;
// *policy.Tenants is it (the service behind /v1/policy).
type Policy interface {
	Status(tenantID string) policy.TenantStatus
	ActiveFiles(tenantID string) (map[string]string, bool)
	Evaluate(ctx context.Context, tenantID string, candidate fs.FS, in json.RawMessage) (policy.EvalResult, error)
	Check(ctx context.Context, candidate fs.FS) (string, error)
	Upload(ctx context.Context, tenantID string, candidate fs.FS) (policy.TenantStatus, error)
}

// The playground's time limits, those of the API's dry run and upload.
const (
	evalTimeout   = 5 * time.Second
	uploadTimeout = 10 * time.Second
)

// SampleInput is the input the playground starts with: an EOB notice by
// email, with made-up values.
const SampleInput = `{
  "notice_type": "eob",
  "purpose": "payment",
  "channel": {"type": "email", "tls_enforced": true, "message_encrypted": false, "encryption_available": false},
  "payload": {
    "payer_name": "Example Health Plan",
    "service_date": "2026-03-01",
    "provider_name": "Example Clinic",
    "patient_share": "12.50",
    "portal_url": "https://tidings.example/portal/t/notices/x"
  },
  "facts": {"use": "claim", "outcome": "complete"},
  "contact": {"has_confidential_address": false, "marketing_authorized": false}
}
`

// playground is the policy page's data.
type playground struct {
	Status    policy.TenantStatus
	Source    string // what Policy's text starts from: "the tenant's revision" or "the built-in rules"
	Policy    string
	Input     string
	Action    string
	Result    *api.EvaluateResponse
	Diff      []diffLine
	Unchanged bool
	MaySubmit bool
}

// active is the tenant's active policy as files, and what they are.
func (s *Server) active(tenantID string) (map[string]string, string, error) {
	if files, ok := s.cfg.Policy.ActiveFiles(tenantID); ok {
		return files, "the tenant's active revision", nil
	}
	files := map[string]string{}
	err := fs.WalkDir(rego.FS, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(rego.FS, name)
		files[name] = string(b)
		return err
	})
	return files, "the built-in rules", err
}

func (s *Server) policyPage(c *gin.Context) {
	if s.cfg.Policy == nil {
		s.unavailable(c, "The policy engine")
		return
	}
	p := principal(c)
	files, source, err := s.active(p.TenantID)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.renderPlayground(c, http.StatusOK, "", "", playground{Status: s.cfg.Policy.Status(p.TenantID), Source: source,
		Policy: joinFiles(files), Input: SampleInput})
}

func (s *Server) renderPlayground(c *gin.Context, status int, errMsg, info string, pg playground) {
	pg.MaySubmit = principal(c).May(apiRole("PUT /policy"))
	v := s.baseView(c, "Policy playground")
	v.Current, v.Error, v.Info, v.Data = "/policy", errMsg, info, pg
	s.render(c, status, "policy", v)
}

// policyAction runs what the analyst pressed: a dry run, the tests, the
// diff against the active revision, or the submission for activation.
func (s *Server) policyAction(c *gin.Context) {
	if s.cfg.Policy == nil {
		s.unavailable(c, "The policy engine")
		return
	}
	p := principal(c)
	activeFiles, source, err := s.active(p.TenantID)
	if err != nil {
		s.fail(c, err)
		return
	}
	pg := playground{Status: s.cfg.Policy.Status(p.TenantID), Source: source,
		Policy: c.Request.PostForm.Get("policy"), Input: c.Request.PostForm.Get("input"), Action: c.Request.PostForm.Get("action")}
	files, err := splitFiles(pg.Policy)
	var candidate fs.FS
	if err == nil {
		candidate, err = api.CandidateFS(files)
	}
	if err != nil {
		s.renderPlayground(c, statusOf(err), fault.MessageOf(err), "", pg)
		return
	}
	switch pg.Action {
	case "diff":
		pg.Diff = lineDiff(joinFiles(activeFiles), joinFiles(files), 3)
		pg.Unchanged = pg.Diff == nil
		s.renderPlayground(c, http.StatusOK, "", "", pg)
	case "dryrun":
		s.dryRun(c, pg, candidate)
	case "test":
		ctx, done, ok := s.policyJob(c, pg, uploadTimeout)
		if !ok {
			return
		}
		defer done()
		rev, err := s.cfg.Policy.Check(ctx, candidate)
		if err != nil {
			s.renderPlayground(c, statusOf(err), "The candidate was refused:\n"+fault.MessageOf(err), "", pg)
			return
		}
		s.renderPlayground(c, http.StatusOK, "", "The candidate compiles and its tests pass (revision "+short(rev)+").", pg)
	case "submit":
		if !p.May(apiRole("PUT /policy")) {
			s.fail(c, fault.New(fault.Forbidden, "submitting a policy needs the role that may upload one"))
			return
		}
		ctx, done, ok := s.policyJob(c, pg, uploadTimeout)
		if !ok {
			return
		}
		defer done()
		st, err := s.cfg.Policy.Upload(ctx, p.TenantID, candidate)
		if err != nil {
			s.renderPlayground(c, statusOf(err), "The candidate was not activated:\n"+fault.MessageOf(err), "", pg)
			return
		}
		pg.Status, pg.Source = st, "the tenant's active revision"
		s.cfg.Log.Info("console: policy activated", "tenant", p.TenantID, "key_id", p.KeyID, "revision", st.Revision)
		s.renderPlayground(c, http.StatusOK, "", "Revision "+short(st.Revision)+" is now the tenant's active policy.", pg)
	default:
		s.renderPlayground(c, http.StatusBadRequest, "Unknown action.", "", pg)
	}
}

// dryRun decides on the posted input with the candidate, as POST
// /v1/policy/evaluate does, and shows the decision and the rules fired.
func (s *Server) dryRun(c *gin.Context, pg playground, candidate fs.FS) {
	if strings.TrimSpace(pg.Input) == "" {
		s.renderPlayground(c, http.StatusBadRequest, "The input (a sample decision input) is required.", "", pg)
		return
	}
	ctx, done, ok := s.policyJob(c, pg, evalTimeout)
	if !ok {
		return
	}
	defer done()
	res, err := s.cfg.Policy.Evaluate(ctx, principal(c).TenantID, candidate, json.RawMessage(pg.Input))
	if ctx.Err() != nil && !errors.Is(err, policy.ErrDryRunLimit) {
		s.renderPlayground(c, http.StatusUnprocessableEntity, "The dry run exceeded its time limit.", "", pg)
		return
	}
	if err != nil && !errors.Is(err, policy.ErrNoDecision) {
		s.renderPlayground(c, statusOf(err), fault.MessageOf(err), "", pg)
		return
	}
	d := res.Decision
	out := api.EvaluateResponse{Allow: d.Allow && err == nil, Deny: d.Deny, Redact: d.Redact, Obligations: d.Obligations,
		Revision: d.Revision, Fired: res.Fired, Candidate: true}
	if err != nil {
		out.Deny = append(out.Deny, "no decision: "+fault.MessageOf(err))
	}
	pg.Result = &out
	s.renderPlayground(c, http.StatusOK, "", "", pg)
}

// policyJob lets a tenant run one playground dry run, test or submission
// at a time (each may start a sandbox child), bounded by timeout; ok is
// false when the answer (429) was sent instead.
func (s *Server) policyJob(c *gin.Context, pg playground, timeout time.Duration) (context.Context, func(), bool) {
	tenant := principal(c).TenantID
	s.policyMu.Lock()
	if s.busy[tenant] {
		s.policyMu.Unlock()
		s.renderPlayground(c, http.StatusTooManyRequests, "Another policy job of this tenant is running; retry shortly.", "", pg)
		return nil, nil, false
	}
	s.busy[tenant] = true
	s.policyMu.Unlock()
	ctx, cancel := context.WithTimeout(c.Request.Context(), timeout)
	return ctx, func() {
		cancel()
		s.policyMu.Lock()
		delete(s.busy, tenant)
		s.policyMu.Unlock()
	}, true
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
