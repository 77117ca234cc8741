package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing/fstest"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/policy"
)

// PolicyAdmin is what the compliance endpoints need of the tenants'
// policies; *policy.Tenants is it. Every call is for the caller's tenant.
type PolicyAdmin interface {
	Status(tenantID string) policy.TenantStatus
	Evaluate(ctx context.Context, tenantID string, candidate fs.FS, in json.RawMessage) (policy.EvalResult, error)
	Upload(ctx context.Context, tenantID string, candidate fs.FS) (policy.TenantStatus, error)
	Reset(ctx context.Context, tenantID string) (policy.TenantStatus, error)
}

// PolicyUpload is the JSON body of PUT /v1/policy: the policy's files by
// name, as POST /v1/policy/evaluate takes a candidate. PUT /v1/policy also
// takes an OPA bundle (application/gzip: a .tar.gz as `opa build` makes).
type PolicyUpload struct {
	Policy map[string]string `json:"policy"`
}

// EvaluateRequest is the body of POST /v1/policy/evaluate: a sample input
// and, optionally, a candidate policy (file name → content: .rego modules,
// their *_test.rego tests, data/*.json) to try instead of the active one.
type EvaluateRequest struct {
	Input  json.RawMessage   `json:"input"`
	Policy map[string]string `json:"policy,omitempty"`
}

// EvaluateResponse is the dry run's answer.
type EvaluateResponse struct {
	Allow       bool     `json:"allow"`
	Deny        []string `json:"deny"`
	Redact      []string `json:"redact"`
	Obligations []string `json:"obligations"`
	Revision    string   `json:"revision,omitempty"`
	Fired       []string `json:"fired"`
	Candidate   bool     `json:"candidate"`
}

func (h *handlers) getPolicy(c *gin.Context) {
	if h.cfg.Policy == nil {
		jsonError(c, errNoPolicy)
		return
	}
	c.JSON(http.StatusOK, h.cfg.Policy.Status(principal(c).TenantID))
}

// putPolicy makes an uploaded policy the caller's tenant's active revision
// once it compiles and its own tests pass; otherwise 422 with why, and the
// active revision stays.
func (h *handlers) putPolicy(c *gin.Context) {
	if h.cfg.Policy == nil {
		jsonError(c, errNoPolicy)
		return
	}
	body, err := readBody(c, maxPolicyUpload, "application/json", "application/gzip", "application/x-gzip", "application/octet-stream")
	if err != nil {
		jsonError(c, err)
		return
	}
	if len(body) == 0 {
		jsonError(c, fault.New(fault.Invalid, "the body is empty: send the policy's files as JSON or an OPA bundle"))
		return
	}
	var candidate fs.FS
	if mt, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type")); mt == "application/json" {
		var req PolicyUpload
		if err := strictJSON(body, &req); err != nil {
			jsonError(c, err)
			return
		}
		if candidate, err = candidateFS(req.Policy); err != nil {
			jsonError(c, err)
			return
		}
	} else if candidate, err = policy.BundleFS(body); err != nil {
		jsonError(c, err)
		return
	}
	if candidate == nil {
		jsonError(c, fault.New(fault.Invalid, "policy (file name → content) is required"))
		return
	}
	ctx, tenant, done, ok := h.policyJob(c, uploadTimeout)
	if !ok {
		return
	}
	defer done()
	st, err := h.cfg.Policy.Upload(ctx, tenant, candidate)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// deletePolicy puts the caller's tenant back on the default rules.
func (h *handlers) deletePolicy(c *gin.Context) {
	if h.cfg.Policy == nil {
		jsonError(c, errNoPolicy)
		return
	}
	st, err := h.cfg.Policy.Reset(c.Request.Context(), principal(c).TenantID)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// candidateFS is a file map from a request as a policy's files, or nil
// for an empty map.
func candidateFS(files map[string]string) (fs.FS, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if len(files) > maxPolicyFiles {
		return nil, fault.Errorf(fault.Invalid, "policy: at most %d files", maxPolicyFiles)
	}
	m := fstest.MapFS{}
	for name, content := range files {
		clean := path.Clean(name)
		if !fs.ValidPath(clean) || strings.HasPrefix(clean, ".") ||
			!(strings.HasSuffix(clean, ".rego") || strings.HasSuffix(clean, ".json")) {
			return nil, fault.New(fault.Invalid, "policy: file names must be relative paths ending in .rego or .json (at most 100 files)")
		}
		m[clean] = &fstest.MapFile{Data: []byte(content)}
	}
	return m, nil
}

func (h *handlers) evaluatePolicy(c *gin.Context) {
	if h.cfg.Policy == nil {
		jsonError(c, errNoPolicy)
		return
	}
	var req EvaluateRequest
	if err := decodeJSON(c, 1<<20, &req); err != nil {
		jsonError(c, err)
		return
	}
	if len(bytes.TrimSpace(req.Input)) == 0 {
		jsonError(c, fault.New(fault.Invalid, "input (the sample decision input) is required"))
		return
	}
	candidate, err := candidateFS(req.Policy)
	if err != nil {
		jsonError(c, err)
		return
	}
	ctx, tenant, done, ok := h.policyJob(c, evalTimeout)
	if !ok {
		return
	}
	defer done()
	res, err := h.cfg.Policy.Evaluate(ctx, tenant, candidate, req.Input)
	if ctx.Err() != nil && !errors.Is(err, policy.ErrDryRunLimit) {
		jsonError(c, fault.New(fault.Unprocessable, "the dry run exceeded its time limit"))
		return
	}
	if err != nil && !errors.Is(err, policy.ErrNoDecision) {
		// Invalid input, or a candidate refused with the compiler's or the
		// tests' messages: what the analyst must fix.
		jsonError(c, err)
		return
	}
	d := res.Decision
	out := EvaluateResponse{Allow: d.Allow && err == nil, Deny: nonNil(d.Deny), Redact: nonNil(d.Redact),
		Obligations: nonNil(d.Obligations), Revision: d.Revision, Fired: nonNil(res.Fired), Candidate: candidate != nil}
	if err != nil {
		out.Deny = append(out.Deny, "no decision: "+err.Error())
	}
	c.JSON(http.StatusOK, out)
}

// policyJob starts a dry run or an upload for the caller's tenant, bounded
// by timeout: one at a time per tenant, as a candidate policy is arbitrary
// code from a caller, which the engine runs in a child process under a time
// and memory limit (see policy.Sandbox), and the process runs only so many
// children at once. ok is false when the answer was sent instead (429: the
// tenant has one running); otherwise call done when finished.
func (h *handlers) policyJob(c *gin.Context, timeout time.Duration) (ctx context.Context, tenant string, done func(), ok bool) {
	tenant = principal(c).TenantID
	release, err := h.policyJobs.take(tenant)
	if err != nil {
		jsonError(c, err)
		return nil, "", nil, false
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), timeout)
	return ctx, tenant, func() { cancel(); release() }, true
}

// tenantJobs lets each tenant run one policy dry run or upload at a time,
// whatever other tenants run.
type tenantJobs struct {
	mu   sync.Mutex
	busy map[string]bool
}

func (j *tenantJobs) take(tenant string) (release func(), err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.busy[tenant] {
		return nil, fault.New(fault.Throttled, "another policy dry run or upload of this tenant is in progress; retry shortly")
	}
	if j.busy == nil {
		j.busy = map[string]bool{}
	}
	j.busy[tenant] = true
	return func() {
		j.mu.Lock()
		delete(j.busy, tenant)
		j.mu.Unlock()
	}, nil
}

var errNoPolicy = fault.New(fault.Unavailable, "no policy engine in this process")

const (
	evalTimeout = 5 * time.Second
	// An upload's tests run in a sandbox child that may first wait for a
	// free one.
	uploadTimeout   = 10 * time.Second
	maxPolicyUpload = 4 << 20
	maxPolicyFiles  = 100
)

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// CandidateFS is a policy's files by name (as POST /v1/policy/evaluate and
// PUT /v1/policy take them) as a file system, with the names checked; nil
// for no files.
func CandidateFS(files map[string]string) (fs.FS, error) { return candidateFS(files) }
