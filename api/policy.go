package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"testing/fstest"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/policy"
)

// PolicyAdmin is what the compliance endpoints need from the policy engine.
type PolicyAdmin interface {
	Status() policy.Status
	Evaluate(ctx context.Context, candidate fs.FS, in json.RawMessage) (policy.EvalResult, error)
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
	c.JSON(http.StatusOK, h.cfg.Policy.Status())
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
	var candidate fs.FS
	if len(req.Policy) > 0 {
		m := fstest.MapFS{}
		for name, content := range req.Policy {
			clean := path.Clean(name)
			if !fs.ValidPath(clean) || strings.HasPrefix(clean, ".") || len(req.Policy) > 100 ||
				!(strings.HasSuffix(clean, ".rego") || strings.HasSuffix(clean, ".json")) {
				jsonError(c, fault.New(fault.Invalid, "policy: file names must be relative paths ending in .rego or .json (at most 100 files)"))
				return
			}
			m[clean] = &fstest.MapFile{Data: []byte(content)}
		}
		candidate = m
	}
	// One dry run at a time, each bounded in time: a candidate policy is
	// arbitrary code from a caller, which the engine runs in a child process
	// under a time and memory limit (see policy.Sandbox).
	select {
	case evalSlot <- struct{}{}:
		defer func() { <-evalSlot }()
	default:
		jsonError(c, fault.New(fault.Throttled, "another policy dry run is in progress; retry shortly"))
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), evalTimeout)
	defer cancel()
	res, err := h.cfg.Policy.Evaluate(ctx, candidate, req.Input)
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

var evalSlot = make(chan struct{}, 1)

var errNoPolicy = fault.New(fault.Unavailable, "no policy engine in this process")

const evalTimeout = 5 * time.Second

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
