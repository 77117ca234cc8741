package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/worker"
	"github.com/tidings-health/tidings/workflow"
)

// WorkflowAdmin stores and reports workflows; *store.Store implements it.
type WorkflowAdmin interface {
	SaveWorkflow(ctx context.Context, tenantID string, d workflow.Definition) (int, error)
	Workflow(ctx context.Context, tenantID, id string) (store.WorkflowInfo, error)
	Workflows(ctx context.Context, tenantID string) ([]store.WorkflowInfo, error)
	WorkflowExists(ctx context.Context, tenantID, id string) (bool, error)
	SetWorkflowStatus(ctx context.Context, tenantID, id, status string) error
	WorkflowStats(ctx context.Context, tenantID string, def workflow.Definition) ([]store.StepStats, error)
	RunsForSubject(ctx context.Context, tenantID, subject string) ([]store.RunView, error)
}

// Journeys records engagement/API events and segment membership; the lead adapts *worker.Runs to it.
type Journeys interface {
	RecordEvent(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte) (id int64, started int, err error)
	JoinSegment(ctx context.Context, tenantID, segment, patientRef string) (joined bool, started int, err error)
	Enroll(ctx context.Context, tenantID, workflowID, segment string) (int, error)
}

// Body limits of the workflow and event endpoints.
const (
	maxDefinitionBytes = 256 << 10
	maxEventBodyBytes  = 16 << 10
	maxEventDataBytes  = 8 << 10
	maxSmallBodyBytes  = 4 << 10
)

// definitionTypes are the media types a workflow definition may be sent as.
var definitionTypes = []string{"application/json", "application/yaml", "application/x-yaml", "text/yaml"}

var (
	workflowID   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	segmentName  = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	eventType    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)
	patientRef   = regexp.MustCompile(`^Patient/[A-Za-z0-9.-]{1,64}$`)
	runSubject   = regexp.MustCompile(`^(Appointment|ExplanationOfBenefit)/[A-Za-z0-9.-]{1,64}$`)
	patientIndex = regexp.MustCompile(`^patient:[A-Za-z0-9_-]{1,128}$`)
)

// WorkflowSaved is the answer to POST and PUT /v1/workflows.
type WorkflowSaved struct {
	ID      string `json:"id"`
	Version int    `json:"version"`
	Status  string `json:"status"`
}

// WorkflowSummary is one workflow in GET /v1/workflows.
type WorkflowSummary struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Version   int       `json:"version"`
	Trigger   string    `json:"trigger"`
	Priority  string    `json:"priority"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ProblemsError is the 422 body of a rejected definition: every problem at once.
type ProblemsError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Problems []workflow.Problem `json:"problems"`
}

// EnrollRequest is the body of POST /v1/workflows/{id}/enroll.
type EnrollRequest struct {
	Segment string `json:"segment"`
}

// EventRequest is the body of POST /v1/events. Data is optional, a JSON
// object of at most 8 KiB; it may be PHI and is stored sealed.
type EventRequest struct {
	Type    string `json:"type"`
	Patient string `json:"patient"`
	// Subject, when given ("ExplanationOfBenefit/{id}", "Appointment/{id}"),
	// is what the event is about: only that subject's runs take it (a
	// portal view of one EOB does not satisfy another EOB's wait).
	Subject string          `json:"subject,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// SegmentMemberRequest is the body of POST /v1/segments/{segment}/members.
type SegmentMemberRequest struct {
	Patient string `json:"patient"`
}

// Errors of this file's routes. Messages name fields and rules, never values.
var (
	errNoWorkflows     = newError(http.StatusServiceUnavailable, "transient", "workflows are not available in this process")
	errNoJourneys      = newError(http.StatusServiceUnavailable, "transient", "events and segments are not available in this process")
	errNoSuchWorkflow  = newError(http.StatusNotFound, "not-found", "no such workflow in this tenant")
	errWorkflowExists  = newError(http.StatusConflict, "duplicate", "a workflow with this id exists; use PUT /v1/workflows/{id} to save a new version")
	errNotActive       = newError(http.StatusConflict, "business-rule", "the workflow is not active; activate it before enrolling")
	errNeedsSubject    = newError(http.StatusConflict, "business-rule", "the workflow is started by FHIR events and works on their EOB or appointment; it cannot be enrolled from a segment")
	errBadSegment      = newError(http.StatusBadRequest, "invalid", "segment must match ^[a-z0-9][a-z0-9_.-]{0,63}$")
	errBadPatient      = newError(http.StatusBadRequest, "invalid", "patient must be a Patient reference: Patient/ followed by 1-64 of A-Z a-z 0-9 - .")
	errBadEventType    = newError(http.StatusBadRequest, "invalid", "type must match ^[a-z0-9][a-z0-9_.:-]{0,63}$")
	errBadEventData    = newError(http.StatusBadRequest, "invalid", "data must be a JSON object")
	errEventDataTooBig = newError(http.StatusRequestEntityTooLarge, "too-costly", "data exceeds 8 KiB")
	errBadEventSubject = newError(http.StatusBadRequest, "invalid", "subject, when given, must be Appointment/{id} or ExplanationOfBenefit/{id}")
	errBadSubject      = newError(http.StatusBadRequest, "invalid", "subject is required: Appointment/{id}, ExplanationOfBenefit/{id} or patient:{index}")
	errIDMismatch      = newError(http.StatusBadRequest, "invalid", "the id in the body differs from the id in the path")
	errEmptyDefinition = newError(http.StatusBadRequest, "invalid", "the body must be a workflow definition (JSON or YAML)")
	errJSONNotAnObject = newError(http.StatusBadRequest, "invalid", "a JSON definition must be a JSON object")
)

const msgInvalidDefinition = "the workflow definition is invalid; every problem is listed in problems"

func (h *handlers) hasWorkflows(c *gin.Context) bool {
	if h.cfg.Workflows == nil {
		jsonError(c, errNoWorkflows)
		return false
	}
	return true
}

func (h *handlers) hasJourneys(c *gin.Context) bool {
	if h.cfg.Journeys == nil {
		jsonError(c, errNoJourneys)
		return false
	}
	return true
}

// readDefinition reads and parses a definition sent as JSON or YAML.
func readDefinition(c *gin.Context) (workflow.Definition, error) {
	body, err := readBody(c, maxDefinitionBytes, definitionTypes...)
	if err != nil {
		return workflow.Definition{}, err
	}
	return decodeDefinition(c.GetHeader("Content-Type"), body)
}

// decodeDefinition parses body as the media type says. workflow.Parse tells
// JSON from YAML by the first byte; a body labelled JSON must be JSON.
func decodeDefinition(contentType string, body []byte) (workflow.Definition, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return workflow.Definition{}, errEmptyDefinition
	}
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "application/json" && trimmed[0] != '{' {
		return workflow.Definition{}, errJSONNotAnObject
	}
	d, err := workflow.Parse(body)
	if err != nil {
		// Definitions are tenant configuration, not PHI: the parser's
		// message (a field name, a line number) is what the author must fix.
		return workflow.Definition{}, newError(http.StatusBadRequest, "structure", err.Error())
	}
	// The store assigns versions.
	d.Version = 0
	return d, nil
}

// validateDefinition checks d against the built-in channels and templates
// and the tenant's workflows. A failed lookup is returned as err, not as a
// problem: the client cannot fix it.
func (h *handlers) validateDefinition(ctx context.Context, tenant string, d workflow.Definition) ([]workflow.Problem, error) {
	base := workflow.BuiltinRegistry()
	known := map[string]bool{}
	var lookupErr error
	reg := workflow.Registry{
		Channels:     base.Channels,
		Templates:    base.Templates,
		NeedsSubject: base.NeedsSubject,
		Workflow: func(id string) bool {
			if id == d.ID {
				return true
			}
			if ok, seen := known[id]; seen {
				return ok
			}
			if lookupErr != nil {
				return false
			}
			ok, err := h.cfg.Workflows.WorkflowExists(ctx, tenant, id)
			if err != nil {
				lookupErr = err
				return false
			}
			known[id] = ok
			return ok
		},
	}
	problems := workflow.Validate(d, reg)
	if lookupErr != nil {
		return nil, lookupErr
	}
	return problems, nil
}

func problemsError(c *gin.Context, problems []workflow.Problem) {
	var body ProblemsError
	body.Error.Code = "invalid"
	body.Error.Message = msgInvalidDefinition
	body.Problems = problems
	c.AbortWithStatusJSON(http.StatusUnprocessableEntity, body)
}

func (h *handlers) postWorkflow(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	d, err := readDefinition(c)
	if err != nil {
		jsonError(c, err)
		return
	}
	ctx, tenant := c.Request.Context(), c.GetString(ctxTenant)
	problems, err := h.validateDefinition(ctx, tenant, d)
	if err != nil {
		jsonError(c, err)
		return
	}
	if len(problems) > 0 {
		problemsError(c, problems)
		return
	}
	exists, err := h.cfg.Workflows.WorkflowExists(ctx, tenant, d.ID)
	if err != nil {
		jsonError(c, err)
		return
	}
	if exists {
		jsonError(c, errWorkflowExists)
		return
	}
	version, err := h.cfg.Workflows.SaveWorkflow(ctx, tenant, d)
	if errors.Is(err, store.ErrDuplicate) {
		// Another request created it between the check and the save.
		jsonError(c, errWorkflowExists)
		return
	}
	if err != nil {
		jsonError(c, err)
		return
	}
	c.Header("Location", "/v1/workflows/"+d.ID)
	c.JSON(http.StatusCreated, WorkflowSaved{ID: d.ID, Version: version, Status: store.WorkflowDraft})
}

func (h *handlers) putWorkflow(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	id := c.Param("id")
	d, err := readDefinition(c)
	if err != nil {
		jsonError(c, err)
		return
	}
	if d.ID == "" {
		d.ID = id
	}
	if d.ID != id {
		jsonError(c, errIDMismatch)
		return
	}
	ctx, tenant := c.Request.Context(), c.GetString(ctxTenant)
	cur, ok := h.workflow(c, id)
	if !ok {
		return
	}
	problems, err := h.validateDefinition(ctx, tenant, d)
	if err != nil {
		jsonError(c, err)
		return
	}
	if len(problems) > 0 {
		problemsError(c, problems)
		return
	}
	version, err := h.cfg.Workflows.SaveWorkflow(ctx, tenant, d)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, WorkflowSaved{ID: d.ID, Version: version, Status: cur.Status})
}

// workflow loads the tenant's workflow named by id, answering 404 itself.
func (h *handlers) workflow(c *gin.Context, id string) (store.WorkflowInfo, bool) {
	if !workflowID.MatchString(id) {
		jsonError(c, errNoSuchWorkflow)
		return store.WorkflowInfo{}, false
	}
	wi, err := h.cfg.Workflows.Workflow(c.Request.Context(), c.GetString(ctxTenant), id)
	if errors.Is(err, store.ErrNotFound) {
		jsonError(c, errNoSuchWorkflow)
		return store.WorkflowInfo{}, false
	}
	if err != nil {
		jsonError(c, err)
		return store.WorkflowInfo{}, false
	}
	return wi, true
}

func (h *handlers) listWorkflows(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	wfs, err := h.cfg.Workflows.Workflows(c.Request.Context(), c.GetString(ctxTenant))
	if err != nil {
		jsonError(c, err)
		return
	}
	out := make([]WorkflowSummary, 0, len(wfs))
	for _, w := range wfs {
		out = append(out, WorkflowSummary{ID: w.ID, Status: w.Status, Version: w.Version, Trigger: w.Trigger,
			Priority: w.Priority, UpdatedAt: w.UpdatedAt})
	}
	c.JSON(http.StatusOK, gin.H{"workflows": out})
}

func (h *handlers) getWorkflow(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	wi, ok := h.workflow(c, c.Param("id"))
	if !ok {
		return
	}
	c.JSON(http.StatusOK, wi)
}

// setWorkflowStatus answers POST /v1/workflows/{id}/activate and /pause.
func (h *handlers) setWorkflowStatus(status string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !h.hasWorkflows(c) {
			return
		}
		id := c.Param("id")
		if !workflowID.MatchString(id) {
			jsonError(c, errNoSuchWorkflow)
			return
		}
		err := h.cfg.Workflows.SetWorkflowStatus(c.Request.Context(), c.GetString(ctxTenant), id, status)
		if errors.Is(err, store.ErrNotFound) {
			jsonError(c, errNoSuchWorkflow)
			return
		}
		if err != nil {
			jsonError(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"id": id, "status": status})
	}
}

func (h *handlers) enrollSegment(c *gin.Context) {
	if !h.hasJourneys(c) {
		return
	}
	id := c.Param("id")
	if !workflowID.MatchString(id) {
		jsonError(c, errNoSuchWorkflow)
		return
	}
	var req EnrollRequest
	if err := decodeJSON(c, maxSmallBodyBytes, &req); err != nil {
		jsonError(c, err)
		return
	}
	if !segmentName.MatchString(req.Segment) {
		jsonError(c, errBadSegment)
		return
	}
	n, err := h.cfg.Journeys.Enroll(c.Request.Context(), c.GetString(ctxTenant), id, req.Segment)
	switch {
	case errors.Is(err, store.ErrNotFound):
		jsonError(c, errNoSuchWorkflow)
		return
	case errors.Is(err, worker.ErrNotActive):
		jsonError(c, errNotActive)
		return
	case errors.Is(err, worker.ErrNeedsSubject):
		jsonError(c, errNeedsSubject)
		return
	case err != nil:
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"enrolled": n})
}

func (h *handlers) workflowStats(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	wi, ok := h.workflow(c, c.Param("id"))
	if !ok {
		return
	}
	stats, err := h.cfg.Workflows.WorkflowStats(c.Request.Context(), c.GetString(ctxTenant), wi.Definition)
	if err != nil {
		jsonError(c, err)
		return
	}
	if stats == nil {
		stats = []store.StepStats{}
	}
	c.JSON(http.StatusOK, gin.H{"workflow": wi.ID, "version": wi.Version, "steps": stats})
}

// validSubject reports whether s names a run subject: a technical resource
// id, or a patient's blind index; never a patient reference.
func validSubject(s string) bool {
	return runSubject.MatchString(s) || patientIndex.MatchString(s)
}

func (h *handlers) listRuns(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	subject := c.Query("subject")
	if !validSubject(subject) {
		jsonError(c, errBadSubject)
		return
	}
	runs, err := h.cfg.Workflows.RunsForSubject(c.Request.Context(), c.GetString(ctxTenant), subject)
	if err != nil {
		jsonError(c, err)
		return
	}
	if runs == nil {
		runs = []store.RunView{}
	}
	c.JSON(http.StatusOK, gin.H{"runs": runs})
}

// checkEvent validates an event request and returns its data, compacted
// (nil when absent). Errors never repeat the patient reference.
func checkEvent(req EventRequest) ([]byte, error) {
	if !eventType.MatchString(req.Type) {
		return nil, errBadEventType
	}
	if !patientRef.MatchString(req.Patient) {
		return nil, errBadPatient
	}
	if req.Subject != "" && !runSubject.MatchString(req.Subject) {
		return nil, errBadEventSubject
	}
	raw := bytes.TrimSpace(req.Data)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, errBadEventData
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, errBadEventData
	}
	if buf.Len() > maxEventDataBytes {
		return nil, errEventDataTooBig
	}
	return buf.Bytes(), nil
}

func (h *handlers) postEvent(c *gin.Context) {
	if !h.hasJourneys(c) {
		return
	}
	var req EventRequest
	if err := decodeJSON(c, maxEventBodyBytes, &req); err != nil {
		jsonError(c, err)
		return
	}
	data, err := checkEvent(req)
	if err != nil {
		jsonError(c, err)
		return
	}
	id, started, err := h.cfg.Journeys.RecordEvent(c.Request.Context(), c.GetString(ctxTenant), req.Patient, req.Subject, req.Type, data)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"id": id, "runs_started": started})
}

func (h *handlers) postSegmentMember(c *gin.Context) {
	if !h.hasJourneys(c) {
		return
	}
	segment := c.Param("segment")
	if !segmentName.MatchString(segment) {
		jsonError(c, errBadSegment)
		return
	}
	var req SegmentMemberRequest
	if err := decodeJSON(c, maxSmallBodyBytes, &req); err != nil {
		jsonError(c, err)
		return
	}
	if !patientRef.MatchString(req.Patient) {
		jsonError(c, errBadPatient)
		return
	}
	joined, started, err := h.cfg.Journeys.JoinSegment(c.Request.Context(), c.GetString(ctxTenant), segment, req.Patient)
	if err != nil {
		jsonError(c, err)
		return
	}
	status := http.StatusCreated
	if !joined {
		// Already a member: nothing was created.
		status = http.StatusOK
	}
	c.JSON(status, gin.H{"joined": joined, "runs_started": started})
}
