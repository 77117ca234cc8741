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

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

// WorkflowAdmin stores and reports workflows; journey.Workflows is it.
type WorkflowAdmin interface {
	Save(ctx context.Context, tenantID string, d workflow.Definition, create bool) (int, error)
	Get(ctx context.Context, tenantID, id string) (journey.Workflow, error)
	List(ctx context.Context, tenantID string) ([]journey.Workflow, error)
	SetStatus(ctx context.Context, tenantID, id, status string) error
	Stats(ctx context.Context, tenantID, id string) (journey.Workflow, []journey.StepStats, error)
	Runs(ctx context.Context, tenantID, source, subject string) ([]journey.RunView, error)
}

// Journeys records engagement/API events and segment membership; *journey.Engine is it.
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
	eventType    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)
	patientRef   = regexp.MustCompile(`^Patient/[A-Za-z0-9.-]{1,64}$`)
	runSubject   = regexp.MustCompile(`^(Appointment|ExplanationOfBenefit)/[A-Za-z0-9.-]{1,64}$`)
	runSource    = regexp.MustCompile(`^(subscription/)?[A-Za-z0-9._-]{1,64}$`)
	patientIndex = regexp.MustCompile(`^patient:(v[0-9]{1,7}:)?[A-Za-z0-9_-]{1,128}$`)
)

// WorkflowSaved is the answer to POST and PUT /v1/workflows.
type WorkflowSaved struct {
	ID      string `json:"id"`
	Version int    `json:"version"`
	Status  string `json:"status"`
}

// WorkflowBody is a workflow as GET /v1/workflows/{id} shows it.
type WorkflowBody struct {
	WorkflowSummary
	Definition workflow.Definition `json:"definition"`
}

// StepStatsBody is one step's figures in GET /v1/workflows/{id}/stats.
type StepStatsBody struct {
	Step      string           `json:"step"`
	Now       int64            `json:"now"`
	Processed int64            `json:"processed"`
	Outcomes  map[string]int64 `json:"outcomes"`
	DropOff   float64          `json:"drop_off"`
}

// RunStepBody is one step of a run's path.
type RunStepBody struct {
	Step     string    `json:"step"`
	Happened string    `json:"happened,omitempty"`
	At       time.Time `json:"at"`
}

// RunBody is a run as GET /v1/runs shows it: no facts, no PHI.
type RunBody struct {
	ID              int64  `json:"id"`
	WorkflowID      string `json:"workflow"`
	WorkflowVersion int    `json:"version"`
	// Source is the FHIR source the subject's id belongs to: a registered
	// source's id, or "subscription/{id}" for a subscription without one;
	// empty for a patient's runs.
	Source    string        `json:"source,omitempty"`
	Subject   string        `json:"subject"`
	Status    string        `json:"status"`
	Step      string        `json:"step"`
	Outcome   string        `json:"outcome,omitempty"`
	DueAt     *time.Time    `json:"due_at,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	Path      []RunStepBody `json:"path"`
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
	errNoWorkflows     = fault.New(fault.Unavailable, "workflows are not available in this process")
	errNoJourneys      = fault.New(fault.Unavailable, "events and segments are not available in this process")
	errBadSegment      = fault.New(fault.Invalid, "segment "+workflow.IDRule)
	errBadPatient      = fault.New(fault.Invalid, "patient must be a Patient reference: Patient/ followed by 1-64 of A-Z a-z 0-9 - .")
	errBadEventType    = fault.New(fault.Invalid, "type must match ^[a-z0-9][a-z0-9_.:-]{0,63}$")
	errBadEventData    = fault.New(fault.Invalid, "data must be a JSON object")
	errEventDataTooBig = fault.New(fault.TooLarge, "data exceeds 8 KiB")
	errBadEventSubject = fault.New(fault.Invalid, "subject, when given, must be Appointment/{id} or ExplanationOfBenefit/{id}")
	errBadSubject      = fault.New(fault.Invalid, "subject is required: Appointment/{id}, ExplanationOfBenefit/{id} or patient:{index}")
	errBadSource       = fault.New(fault.Invalid, "source must be a source id or subscription/{id}")
	errIDMismatch      = fault.New(fault.Invalid, "the id in the body differs from the id in the path")
	errEmptyDefinition = fault.New(fault.Invalid, "the body must be a workflow definition (JSON or YAML)")
	errJSONNotAnObject = fault.New(fault.Invalid, "a JSON definition must be a JSON object")
)

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
		return workflow.Definition{}, fault.New(fault.Invalid, err.Error())
	}
	// The store assigns versions.
	d.Version = 0
	return d, nil
}

func problemsError(c *gin.Context, inv *journey.InvalidDefinition) {
	var body ProblemsError
	body.Error.Code = answers[fault.Unprocessable].issue
	body.Error.Message = inv.Error()
	body.Problems = inv.Problems
	c.AbortWithStatusJSON(http.StatusUnprocessableEntity, body)
}

// workflowError answers a workflow route's error: every problem of an
// invalid definition, or the error's code and message.
func workflowError(c *gin.Context, err error) {
	var inv *journey.InvalidDefinition
	if errors.As(err, &inv) {
		problemsError(c, inv)
		return
	}
	jsonError(c, err)
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
	version, err := h.cfg.Workflows.Save(c.Request.Context(), c.GetString(ctxTenant), d, true)
	if err != nil {
		workflowError(c, err)
		return
	}
	c.Header("Location", "/v1/workflows/"+d.ID)
	c.JSON(http.StatusCreated, WorkflowSaved{ID: d.ID, Version: version, Status: journey.WorkflowDraft})
}

func (h *handlers) putWorkflow(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	id := c.Param("id")
	if !workflow.ValidID(id) {
		jsonError(c, journey.ErrNoSuchWorkflow)
		return
	}
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
	version, err := h.cfg.Workflows.Save(ctx, tenant, d, false)
	if err != nil {
		workflowError(c, err)
		return
	}
	cur, err := h.cfg.Workflows.Get(ctx, tenant, id)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, WorkflowSaved{ID: d.ID, Version: version, Status: cur.Status})
}

// workflowParam checks the id in the path; an id no workflow could have
// is a 404 like any other unknown one.
func workflowParam(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if !workflow.ValidID(id) {
		jsonError(c, journey.ErrNoSuchWorkflow)
		return "", false
	}
	return id, true
}

func (h *handlers) listWorkflows(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	wfs, err := h.cfg.Workflows.List(c.Request.Context(), c.GetString(ctxTenant))
	if err != nil {
		jsonError(c, err)
		return
	}
	out := make([]WorkflowSummary, 0, len(wfs))
	for _, w := range wfs {
		out = append(out, summary(w))
	}
	c.JSON(http.StatusOK, gin.H{"workflows": out})
}

func (h *handlers) getWorkflow(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	id, ok := workflowParam(c)
	if !ok {
		return
	}
	w, err := h.cfg.Workflows.Get(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, WorkflowBody{WorkflowSummary: summary(w), Definition: w.Definition})
}

func summary(w journey.Workflow) WorkflowSummary {
	return WorkflowSummary{ID: w.ID, Status: w.Status, Version: w.Version, Trigger: w.Trigger, Priority: w.Priority, UpdatedAt: w.UpdatedAt}
}

// setWorkflowStatus answers POST /v1/workflows/{id}/activate and /pause.
func (h *handlers) setWorkflowStatus(status string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !h.hasWorkflows(c) {
			return
		}
		id, ok := workflowParam(c)
		if !ok {
			return
		}
		if err := h.cfg.Workflows.SetStatus(c.Request.Context(), c.GetString(ctxTenant), id, status); err != nil {
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
	id, ok := workflowParam(c)
	if !ok {
		return
	}
	var req EnrollRequest
	if err := decodeJSON(c, maxSmallBodyBytes, &req); err != nil {
		jsonError(c, err)
		return
	}
	if !workflow.ValidID(req.Segment) {
		jsonError(c, errBadSegment)
		return
	}
	n, err := h.cfg.Journeys.Enroll(c.Request.Context(), c.GetString(ctxTenant), id, req.Segment)
	if err != nil {
		jsonError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"enrolled": n})
}

func (h *handlers) workflowStats(c *gin.Context) {
	if !h.hasWorkflows(c) {
		return
	}
	id, ok := workflowParam(c)
	if !ok {
		return
	}
	w, stats, err := h.cfg.Workflows.Stats(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		jsonError(c, err)
		return
	}
	out := make([]StepStatsBody, len(stats))
	for i, st := range stats {
		out[i] = ToStepStats(st)
	}
	c.JSON(http.StatusOK, gin.H{"workflow": w.ID, "version": w.Version, "steps": out})
}

// ToStepStats is a step's figures as the API and the console show them.
func ToStepStats(st journey.StepStats) StepStatsBody {
	return StepStatsBody{Step: st.Step, Now: st.Now, Processed: st.Processed, Outcomes: st.Outcomes, DropOff: st.DropOff}
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
	// Two sources may use the same resource id: without ?source= the runs of
	// every source's resource are listed, each with its source.
	source, subject := c.Query("source"), c.Query("subject")
	if err := CheckRunQuery(source, subject); err != nil {
		jsonError(c, err)
		return
	}
	runs, err := h.cfg.Workflows.Runs(c.Request.Context(), c.GetString(ctxTenant), source, subject)
	if err != nil {
		jsonError(c, err)
		return
	}
	out := make([]RunBody, len(runs))
	for i, r := range runs {
		out[i] = ToRunBody(r)
	}
	c.JSON(http.StatusOK, gin.H{"runs": out})
}

// CheckRunQuery checks a runs query as GET /v1/runs takes it: a subject
// (never a patient reference) and, optionally, its source.
func CheckRunQuery(source, subject string) error {
	if !validSubject(subject) {
		return errBadSubject
	}
	if source != "" && !runSource.MatchString(source) {
		return errBadSource
	}
	return nil
}

// ToRunBody is r as the API and the console show it.
func ToRunBody(r journey.RunView) RunBody {
	out := RunBody{ID: r.ID, WorkflowID: r.WorkflowID, WorkflowVersion: r.WorkflowVersion, Source: r.Source, Subject: r.Subject,
		Status: r.Status, Step: r.Step, Outcome: r.Outcome, DueAt: r.DueAt, CreatedAt: r.CreatedAt, Path: make([]RunStepBody, len(r.Path))}
	for j, p := range r.Path {
		out.Path[j] = RunStepBody{Step: p.Step, Happened: p.Happened, At: p.At}
	}
	return out
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
	if !workflow.ValidID(segment) {
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
