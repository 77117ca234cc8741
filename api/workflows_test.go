package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/worker"
	"github.com/tidings-health/tidings/workflow"
)

// Names of the operator keys of tenants t1 and t2; wfEnv.do sends the key's
// token in their place.
const (
	tokenOne = "operator key of t1"
	tokenTwo = "operator key of t2"
	// and of their compliance keys.
	complianceOne = "compliance key of t1"
	complianceTwo = "compliance key of t2"
)

// wfEnv is an API server on a real store (its own database) and a real run
// driver whose wake-ups go to a Redis database of the test's own.
type wfEnv struct {
	t      *testing.T
	st     *store.Store
	h      http.Handler
	logs   *testenv.LogBuffer
	tokens map[string]string // tokenOne, tokenTwo → the keys' tokens
}

func newWorkflowEnv(t *testing.T) *wfEnv {
	t.Helper()
	ctx := context.Background()
	keys, err := seal.ParseKeys("k1:" + seal.NewRandomKey())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := seal.NewKeyring(keys, "", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testenv.NewDB(t), kr, store.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, id := range []string{"t1", "t2"} {
		if err := st.EnsureTenant(ctx, id, "Tenant "+id); err != nil {
			t.Fatal(err)
		}
	}
	addr, db := testenv.NewRedisDB(t)
	client := worker.NewClient(worker.RedisOpt(addr, "", db), kr)
	t.Cleanup(func() { _ = client.Close() })
	runs := &journey.Engine{Store: st, Queue: client}
	keySvc := &access.Service{Store: st}
	logs := &testenv.LogBuffer{}
	h := New(Config{
		Workflows:   journey.Workflows{Store: st},
		Journeys:    runs,
		Disclosures: st,
		Keys:        keySvc,
		Log:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	tokens := map[string]string{tokenOne: newKey(t, keySvc, "t1", access.Operator), tokenTwo: newKey(t, keySvc, "t2", access.Operator),
		complianceOne: newKey(t, keySvc, "t1", access.Compliance), complianceTwo: newKey(t, keySvc, "t2", access.Compliance)}
	return &wfEnv{t: t, st: st, h: checked(t, h), logs: logs, tokens: tokens}
}

// newKey makes an API key and returns its token.
func newKey(t *testing.T, keys *access.Service, tenant string, role access.Role) string {
	t.Helper()
	_, token, err := keys.Create(context.Background(), tenant, role, "test", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// do sends one request with token, or with the key that token names.
func (e *wfEnv) do(token, method, path, contentType string, body []byte) *httptest.ResponseRecorder {
	e.t.Helper()
	if real, ok := e.tokens[token]; ok {
		token = real
	}
	return serve(e.h, token, method, path, contentType, body)
}

func serve(h http.Handler, token, method, path, contentType string, body []byte) *httptest.ResponseRecorder {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// want checks the status and decodes the JSON body into out (when non-nil).
func want(t *testing.T, rec *httptest.ResponseRecorder, status int, out any) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body.String())
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("body is not the expected JSON: %v; body %s", err, rec.Body.String())
		}
	}
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body JSONError
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Message == "" {
		t.Fatalf("not a JSON error: %s", rec.Body.String())
	}
	return body.Error.Code
}

func builtin(t *testing.T, id string) workflow.Definition {
	t.Helper()
	for _, d := range workflow.Builtins() {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("no built-in workflow %s", id)
	return workflow.Definition{}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stepIDs(d workflow.Definition) []string {
	var ids []string
	for _, s := range d.Steps {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestPostBuiltinWorkflowThenRead(t *testing.T) {
	e := newWorkflowEnv(t)
	d := builtin(t, "eob-notice")
	d.Version = 7 // ignored: the store numbers versions
	var saved WorkflowSaved
	rec := e.do(tokenOne, "POST", "/v1/workflows", "application/json", mustJSON(t, d))
	want(t, rec, http.StatusCreated, &saved)
	if saved != (WorkflowSaved{ID: "eob-notice", Version: 1, Status: "draft"}) {
		t.Fatalf("saved %+v", saved)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/workflows/eob-notice" {
		t.Fatalf("Location %q", loc)
	}

	var got WorkflowBody
	want(t, e.do(tokenOne, "GET", "/v1/workflows/eob-notice", "", nil), http.StatusOK, &got)
	if got.ID != "eob-notice" || got.Version != 1 || got.Status != "draft" || got.Trigger != "event:eob.received" || got.Priority != "normal" {
		t.Fatalf("GET %+v", got)
	}
	if got.Definition.Version != 1 || !slices.Equal(stepIDs(got.Definition), stepIDs(d)) || got.Definition.Steps[1].Timeout != "7d" {
		t.Fatalf("definition %+v", got.Definition)
	}

	var list struct {
		Workflows []map[string]any `json:"workflows"`
	}
	want(t, e.do(tokenOne, "GET", "/v1/workflows", "", nil), http.StatusOK, &list)
	if len(list.Workflows) != 1 {
		t.Fatalf("list %+v", list)
	}
	item := list.Workflows[0]
	if item["id"] != "eob-notice" || item["status"] != "draft" || item["version"] != float64(1) ||
		item["trigger"] != "event:eob.received" || item["priority"] != "normal" || item["updated_at"] == "" {
		t.Fatalf("list item %v", item)
	}
	if _, has := item["definition"]; has {
		t.Fatal("the list carries whole definitions")
	}
}

const yamlDefinition = `# A welcome after the first portal login.
id: portal-welcome
name: Portal welcome
trigger:
  api_event: portal.login
priority: low
sender:
  name: Clinic
steps:
  - id: hello
    type: add_to_segment
    segment: portal-users
  - id: done
    type: end
`

func TestPostYAMLWorkflow(t *testing.T) {
	e := newWorkflowEnv(t)
	for i, ct := range []string{"application/yaml", "application/x-yaml", "text/yaml; charset=utf-8"} {
		id := []string{"welcome-a", "welcome-b", "welcome-c"}[i]
		body := strings.Replace(yamlDefinition, "id: portal-welcome", "id: "+id, 1)
		var saved WorkflowSaved
		want(t, e.do(tokenOne, "POST", "/v1/workflows", ct, []byte(body)), http.StatusCreated, &saved)
		if saved.ID != id || saved.Version != 1 {
			t.Fatalf("%s: %+v", ct, saved)
		}
		var got WorkflowBody
		want(t, e.do(tokenOne, "GET", "/v1/workflows/"+id, "", nil), http.StatusOK, &got)
		if got.Trigger != "api:portal.login" || got.Priority != "low" || !slices.Equal(stepIDs(got.Definition), []string{"hello", "done"}) {
			t.Fatalf("%s: %+v", ct, got)
		}
	}
	// A body labelled JSON must be JSON; YAML in it is refused.
	rec := e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(yamlDefinition))
	want(t, rec, http.StatusBadRequest, nil)
	// A YAML syntax error is a 400 that says where.
	rec = e.do(tokenOne, "POST", "/v1/workflows", "application/yaml", []byte("id: x\nsteps: [\n"))
	want(t, rec, http.StatusBadRequest, nil)
	if !strings.Contains(rec.Body.String(), "yaml") {
		t.Fatalf("parse error does not say what failed: %s", rec.Body.String())
	}
	// An unknown field is refused, not ignored.
	rec = e.do(tokenOne, "POST", "/v1/workflows", "application/yaml", []byte(yamlDefinition+"colour: blue\n"))
	want(t, rec, http.StatusBadRequest, nil)
	// Other media types are refused.
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "text/plain", []byte(yamlDefinition)), http.StatusUnsupportedMediaType, nil)
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", nil), http.StatusBadRequest, nil)
	big := "{\"id\": \"x\", \"name\": \"" + strings.Repeat("a", maxDefinitionBytes) + "\"}"
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(big)), http.StatusRequestEntityTooLarge, nil)
}

// invalidDefinition has an unknown step type, a goto to a missing step, an
// unreachable step, a goto to a workflow the tenant does not have, and one
// to a workflow it does have (not a problem).
const invalidDefinition = `{
  "id": "broken",
  "trigger": {"event": "eob.received"},
  "steps": [
    {"id": "first", "type": "send", "channel": "email", "template": "eob.notice"},
    {"id": "choose", "type": "branch", "conditions": [{"when": [{"field": "fact.kind", "op": "eq", "value": "a"}], "next": "weird"}], "else": "jump"},
    {"id": "weird", "type": "telepathy"},
    {"id": "jump", "type": "goto", "target": "nowhere"},
    {"id": "handoff", "type": "goto", "workflow": "eob-notice"},
    {"id": "ghost", "type": "goto", "workflow": "no-such-workflow"},
    {"id": "done", "type": "end"}
  ]
}`

func TestInvalidWorkflowReportsEveryProblem(t *testing.T) {
	e := newWorkflowEnv(t)
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", mustJSON(t, builtin(t, "eob-notice"))), http.StatusCreated, nil)

	var body ProblemsError
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(invalidDefinition)), http.StatusUnprocessableEntity, &body)
	if body.Error.Code != "invalid" || body.Error.Message == "" {
		t.Fatalf("error %+v", body.Error)
	}
	has := func(step, field, msg string) bool {
		return slices.ContainsFunc(body.Problems, func(p workflow.Problem) bool {
			return p.Step == step && p.Field == field && strings.Contains(p.Message, msg)
		})
	}
	for _, w := range []struct{ step, field, msg string }{
		{"weird", "type", "unknown step type"},
		{"jump", "target", "missing step"},
		{"handoff", "", "unreachable"},
		{"ghost", "workflow", "unknown workflow"},
		{"ghost", "", "unreachable"},
		{"done", "", "unreachable"},
	} {
		if !has(w.step, w.field, w.msg) {
			t.Errorf("no problem %+v among %+v", w, body.Problems)
		}
	}
	// The tenant's own workflow resolves.
	if has("handoff", "workflow", "") {
		t.Errorf("goto to the tenant's workflow eob-notice was reported: %+v", body.Problems)
	}
	want(t, e.do(tokenOne, "GET", "/v1/workflows/broken", "", nil), http.StatusNotFound, nil)

	// Another tenant does not have eob-notice: for it, the same goto is unknown.
	body = ProblemsError{}
	want(t, e.do(tokenTwo, "POST", "/v1/workflows", "application/json", []byte(invalidDefinition)), http.StatusUnprocessableEntity, &body)
	if !has("handoff", "workflow", "unknown workflow") {
		t.Errorf("tenant two resolved tenant one's workflow: %+v", body.Problems)
	}
}

func TestDuplicateWorkflowIsConflict(t *testing.T) {
	e := newWorkflowEnv(t)
	d := mustJSON(t, builtin(t, "eob-notice"))
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", d), http.StatusCreated, nil)
	rec := e.do(tokenOne, "POST", "/v1/workflows", "application/json", d)
	want(t, rec, http.StatusConflict, nil)
	if !strings.Contains(rec.Body.String(), "PUT") {
		t.Fatalf("409 does not point to PUT: %s", rec.Body.String())
	}
	var got WorkflowBody
	want(t, e.do(tokenOne, "GET", "/v1/workflows/eob-notice", "", nil), http.StatusOK, &got)
	if got.Version != 1 {
		t.Fatalf("a refused POST changed the version to %d", got.Version)
	}
}

func TestPutSavesNewVersion(t *testing.T) {
	e := newWorkflowEnv(t)
	ctx := context.Background()
	d := builtin(t, "eob-notice")
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", mustJSON(t, d)), http.StatusCreated, nil)
	want(t, e.do(tokenOne, "POST", "/v1/workflows/eob-notice/activate", "", nil), http.StatusOK, nil)

	d.Steps[1].Timeout = "3d"
	d.ID = "" // taken from the path
	var saved WorkflowSaved
	want(t, e.do(tokenOne, "PUT", "/v1/workflows/eob-notice", "application/json", mustJSON(t, d)), http.StatusOK, &saved)
	if saved != (WorkflowSaved{ID: "eob-notice", Version: 2, Status: "active"}) {
		t.Fatalf("saved %+v", saved)
	}
	var got WorkflowBody
	want(t, e.do(tokenOne, "GET", "/v1/workflows/eob-notice", "", nil), http.StatusOK, &got)
	if got.Version != 2 || got.Definition.Version != 2 || got.Definition.Steps[1].Timeout != "3d" || got.Status != "active" {
		t.Fatalf("GET after PUT %+v", got)
	}
	// Runs started on version 1 still read it.
	v1, err := e.st.WorkflowVersion(ctx, "t1", "eob-notice", 1)
	if err != nil || v1.Version != 1 || v1.Steps[1].Timeout != "7d" {
		t.Fatalf("version 1: %+v %v", v1, err)
	}

	// Body id differs from the path.
	d.ID = "other"
	want(t, e.do(tokenOne, "PUT", "/v1/workflows/eob-notice", "application/json", mustJSON(t, d)), http.StatusBadRequest, nil)
	// Unknown workflow.
	d.ID = "nope"
	rec := e.do(tokenOne, "PUT", "/v1/workflows/nope", "application/json", mustJSON(t, d))
	want(t, rec, http.StatusNotFound, nil)
	if errorCode(t, rec) != "not-found" {
		t.Fatalf("code %s", errorCode(t, rec))
	}
	// An invalid new version is refused and saves nothing.
	d.ID = "eob-notice"
	d.Steps[1].Type = "telepathy"
	want(t, e.do(tokenOne, "PUT", "/v1/workflows/eob-notice", "application/json", mustJSON(t, d)), http.StatusUnprocessableEntity, nil)
	want(t, e.do(tokenOne, "GET", "/v1/workflows/eob-notice", "", nil), http.StatusOK, &got)
	if got.Version != 2 {
		t.Fatalf("a refused PUT saved version %d", got.Version)
	}
}

func TestActivatePauseAndNotFound(t *testing.T) {
	e := newWorkflowEnv(t)
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", mustJSON(t, builtin(t, "eob-notice"))), http.StatusCreated, nil)
	for _, step := range []struct{ action, status string }{{"activate", "active"}, {"pause", "paused"}, {"activate", "active"}} {
		var out map[string]string
		want(t, e.do(tokenOne, "POST", "/v1/workflows/eob-notice/"+step.action, "", nil), http.StatusOK, &out)
		if out["status"] != step.status || out["id"] != "eob-notice" {
			t.Fatalf("%s: %v", step.action, out)
		}
		var got WorkflowBody
		want(t, e.do(tokenOne, "GET", "/v1/workflows/eob-notice", "", nil), http.StatusOK, &got)
		if got.Status != step.status {
			t.Fatalf("after %s: status %s", step.action, got.Status)
		}
	}
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/workflows/nope/activate"},
		{"POST", "/v1/workflows/nope/pause"},
		{"POST", "/v1/workflows/Not%20An%20Id/activate"},
		{"GET", "/v1/workflows/nope"},
		{"GET", "/v1/workflows/nope/stats"},
	} {
		rec := e.do(tokenOne, r.method, r.path, "", nil)
		want(t, rec, http.StatusNotFound, nil)
		if errorCode(t, rec) != "not-found" {
			t.Fatalf("%s %s: %s", r.method, r.path, rec.Body.String())
		}
	}
}

// A value Postgres cannot hold (a NUL byte, invalid UTF-8) is the
// client's error: in a path it names nothing (404), in a body it is a 400,
// and neither answer quotes it. Both answered 500 and logged an error
// before.
func TestValuesPostgresCannotHoldAre400(t *testing.T) {
	e := newWorkflowEnv(t)
	admin := newKey(t, &access.Service{Store: e.st}, "t1", access.Admin)
	for _, r := range []struct {
		method, path string
		body         []byte
		status       int
		code         string
	}{
		// In a path: no such thing can exist.
		{"DELETE", "/v1/keys/Canary%00Doe", nil, http.StatusNotFound, "not-found"},
		{"DELETE", "/v1/keys/Canary%ffDoe", nil, http.StatusNotFound, "not-found"},
		{"POST", "/v1/workflows/Canary%00Doe/activate", nil, http.StatusNotFound, "not-found"},
		// In a body: the request is malformed.
		{"POST", "/v1/keys", []byte(`{"role":"operator","name":"Canary\u0000Doe"}`), http.StatusBadRequest, "invalid"},
	} {
		ctype := ""
		if r.body != nil {
			ctype = "application/json"
		}
		rec := e.do(admin, r.method, r.path, ctype, r.body)
		if r.method == "POST" && r.body == nil {
			rec = e.do(tokenOne, r.method, r.path, ctype, r.body)
		}
		want(t, rec, r.status, nil)
		if errorCode(t, rec) != r.code || strings.Contains(rec.Body.String(), "Canary") {
			t.Errorf("%s %s: %s", r.method, r.path, rec.Body.String())
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("a client's bad value was logged as an error:\n%s", logs)
	}
}

// Every /v1 route with a path parameter refuses a segment no id can have
// with an answer its API document allows: 404, or 400 where the path names
// what the request creates.
func TestEveryPathParameterIsHoldable(t *testing.T) {
	e := newWorkflowEnv(t)
	keys := &access.Service{Store: e.st}
	tokens := map[access.Role]string{}
	for _, role := range access.Roles {
		tokens[role] = newKey(t, keys, "t1", role)
	}
	seen := 0
	for _, rt := range Routes() {
		if !strings.Contains(rt.Path, ":") {
			continue
		}
		seen++
		var path []string
		for _, seg := range strings.Split(rt.Path, "/") {
			if strings.HasPrefix(seg, ":") {
				seg = "Canary%00Doe"
			}
			path = append(path, seg)
		}
		status, code := http.StatusNotFound, "not-found"
		if createdByPath["/v1"+rt.Path] {
			status, code = http.StatusBadRequest, "invalid"
		}
		rec := e.do(tokens[rt.Role], rt.Method, "/v1"+strings.Join(path, "/"), "", nil)
		want(t, rec, status, nil)
		if errorCode(t, rec) != code || strings.Contains(rec.Body.String(), "Canary") {
			t.Errorf("%s %s: %s", rt.Method, rt.Path, rec.Body.String())
		}
	}
	if seen < 10 {
		t.Fatalf("only %d routes with a path parameter", seen)
	}
}

func TestStatsOfWorkflowWithoutRuns(t *testing.T) {
	e := newWorkflowEnv(t)
	d := builtin(t, "appointment-reminders")
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", mustJSON(t, d)), http.StatusCreated, nil)
	var stats struct {
		Workflow string            `json:"workflow"`
		Version  int               `json:"version"`
		Steps    []json.RawMessage `json:"steps"`
	}
	want(t, e.do(tokenOne, "GET", "/v1/workflows/appointment-reminders/stats", "", nil), http.StatusOK, &stats)
	if stats.Workflow != "appointment-reminders" || stats.Version != 1 || len(stats.Steps) != len(d.Steps) {
		t.Fatalf("stats %+v", stats)
	}
	for i, raw := range stats.Steps {
		var s map[string]any
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		outcomes, isMap := s["outcomes"].(map[string]any)
		if s["step"] != d.Steps[i].ID || s["now"] != float64(0) || s["processed"] != float64(0) ||
			s["drop_off"] != float64(0) || !isMap || len(outcomes) != 0 {
			t.Fatalf("step %d: %s", i, raw)
		}
	}
}

func TestRunsNeedsATechnicalSubject(t *testing.T) {
	e := newWorkflowEnv(t)
	for _, subject := range []string{
		"", "Patient/123", "Appointment/", "Appointment/a%20b", "appointment/abc", "Encounter/1",
		"patient:", "patient:abc%20def", "Appointment/abc%0A", "Appointment/" + strings.Repeat("a", 65),
	} {
		rec := e.do(tokenOne, "GET", "/v1/runs?subject="+subject, "", nil)
		want(t, rec, http.StatusBadRequest, nil)
		if errorCode(t, rec) != "invalid" {
			t.Fatalf("%q: %s", subject, rec.Body.String())
		}
	}
	for _, subject := range []string{"Appointment/abc", "ExplanationOfBenefit/eob-1.2", "patient:AbC_-09"} {
		rec := e.do(tokenOne, "GET", "/v1/runs?subject="+subject, "", nil)
		want(t, rec, http.StatusOK, nil)
		if strings.TrimSpace(rec.Body.String()) != `{"runs":[]}` {
			t.Fatalf("%q: %s", subject, rec.Body.String())
		}
	}
}

// Two sources may use the same appointment id: GET /v1/runs lists the runs
// of every source's Appointment/a1, each with its source, and ?source=
// keeps one source's.
func TestRunsShowTheirSource(t *testing.T) {
	e := newWorkflowEnv(t)
	ctx := context.Background()
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/yaml", []byte(yamlDefinition)), http.StatusCreated, nil)
	for _, source := range []string{"ehr-a", "subscription/s2"} {
		if _, _, err := e.st.StartRun(ctx, journey.NewRun{TenantID: "t1", WorkflowID: "portal-welcome", WorkflowVersion: 1, Priority: "normal",
			Source: source, Subject: "Appointment/a1", PatientIndex: e.st.PatientIndex("t1", "Patient/p1")}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var runs struct {
		Runs []RunBody `json:"runs"`
	}
	want(t, e.do(tokenOne, "GET", "/v1/runs?subject=Appointment/a1", "", nil), http.StatusOK, &runs)
	if len(runs.Runs) != 2 || runs.Runs[0].Source != "ehr-a" || runs.Runs[1].Source != "subscription/s2" {
		t.Fatalf("runs of every source: %+v", runs.Runs)
	}
	want(t, e.do(tokenOne, "GET", "/v1/runs?subject=Appointment/a1&source=subscription/s2", "", nil), http.StatusOK, &runs)
	if len(runs.Runs) != 1 || runs.Runs[0].Source != "subscription/s2" {
		t.Fatalf("runs of subscription/s2: %+v", runs.Runs)
	}
	for _, bad := range []string{"a%20b", "subscription/", "x/y", strings.Repeat("s", 65)} {
		want(t, e.do(tokenOne, "GET", "/v1/runs?subject=Appointment/a1&source="+bad, "", nil), http.StatusBadRequest, nil)
	}
}

func TestPostEvent(t *testing.T) {
	e := newWorkflowEnv(t)
	ctx := context.Background()
	const canary = "Canary Zed"
	post := func(body string, ct string) *httptest.ResponseRecorder {
		return e.do(tokenOne, "POST", "/v1/events", ct, []byte(body))
	}
	for _, c := range []struct {
		name, body, ct string
		status         int
	}{
		{"bad type", `{"type": "Portal Viewed", "patient": "Patient/p1"}`, "application/json", 400},
		{"no type", `{"patient": "Patient/p1"}`, "application/json", 400},
		{"patient with a name", `{"type": "portal.viewed", "patient": "Patient/` + canary + `"}`, "application/json", 400},
		{"patient not a reference", `{"type": "portal.viewed", "patient": "` + canary + `"}`, "application/json", 400},
		{"patient of another type", `{"type": "portal.viewed", "patient": "Practitioner/CanaryZed"}`, "application/json", 400},
		{"data not an object", `{"type": "portal.viewed", "patient": "Patient/p1", "data": ["` + canary + `"]}`, "application/json", 400},
		{"unknown field", `{"type": "portal.viewed", "patient": "Patient/p1", "name": "` + canary + `"}`, "application/json", 400},
		{"not JSON", `type=portal.viewed`, "application/json", 400},
		{"data over 8 KiB", `{"type": "portal.viewed", "patient": "Patient/p1", "data": {"note": "` + strings.Repeat("x", 9<<10) + `"}}`, "application/json", 413},
		{"body over the limit", `{"type": "portal.viewed", "patient": "Patient/p1", "data": {"note": "` + strings.Repeat("x", 20<<10) + `"}}`, "application/json", 413},
		{"wrong content type", `{"type": "portal.viewed", "patient": "Patient/p1"}`, "text/plain", 415},
		{"no content type", `{"type": "portal.viewed", "patient": "Patient/p1"}`, "", 415},
	} {
		rec := post(c.body, c.ct)
		if rec.Code != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, rec.Code, c.status, rec.Body.String())
			continue
		}
		errorCode(t, rec)
		if strings.Contains(rec.Body.String(), canary) || strings.Contains(rec.Body.String(), "CanaryZed") {
			t.Errorf("%s: the error repeats the patient value: %s", c.name, rec.Body.String())
		}
	}
	var n int64
	if err := e.st.RawScan(ctx, &n, `SELECT count(*) FROM engagements`); err != nil || n != 0 {
		t.Fatalf("refused events were stored: %d %v", n, err)
	}

	var ok struct {
		ID          int64 `json:"id"`
		RunsStarted int   `json:"runs_started"`
	}
	want(t, post(`{"type": "portal.viewed", "patient": "Patient/p1", "data": {"note": "`+canary+`"}}`, "application/json"), http.StatusAccepted, &ok)
	if ok.ID <= 0 || ok.RunsStarted != 0 {
		t.Fatalf("202 body %+v", ok)
	}
	var rows []struct {
		TenantID     string
		PatientIndex string
		Type         string
		DataSealed   []byte
	}
	if err := e.st.RawScan(ctx, &rows, `SELECT tenant_id, patient_index, type, data_sealed FROM engagements WHERE id = ?`, ok.ID); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].TenantID != "t1" || rows[0].Type != "portal.viewed" || rows[0].PatientIndex != e.st.PatientIndex("t1", "Patient/p1") {
		t.Fatalf("engagement rows %+v", rows)
	}
	if len(rows[0].DataSealed) == 0 || bytes.Contains(rows[0].DataSealed, []byte(canary)) {
		t.Fatal("event data missing or stored in clear")
	}

	// An active workflow triggered by the event type starts a run for the patient.
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/yaml", []byte(yamlDefinition)), http.StatusCreated, nil)
	want(t, e.do(tokenOne, "POST", "/v1/workflows/portal-welcome/activate", "", nil), http.StatusOK, nil)
	want(t, post(`{"type": "portal.login", "patient": "Patient/p1"}`, "application/json; charset=utf-8"), http.StatusAccepted, &ok)
	if ok.RunsStarted != 1 {
		t.Fatalf("runs_started %d, want 1", ok.RunsStarted)
	}
	var runs struct {
		Runs []RunBody `json:"runs"`
	}
	want(t, e.do(tokenOne, "GET", "/v1/runs?subject=patient:"+e.st.PatientIndex("t1", "Patient/p1"), "", nil), http.StatusOK, &runs)
	if len(runs.Runs) != 1 || runs.Runs[0].WorkflowID != "portal-welcome" || runs.Runs[0].WorkflowVersion != 1 || runs.Runs[0].Path == nil {
		t.Fatalf("runs %+v", runs)
	}
	// Another tenant sees none of it.
	want(t, e.do(tokenTwo, "GET", "/v1/runs?subject=patient:"+e.st.PatientIndex("t1", "Patient/p1"), "", nil), http.StatusOK, &runs)
	if len(runs.Runs) != 0 {
		t.Fatalf("tenant two sees tenant one's runs: %+v", runs)
	}

	if strings.Contains(e.logs.String(), canary) || strings.Contains(e.logs.String(), "CanaryZed") {
		t.Fatal("the patient value reached the logs")
	}
	if !strings.Contains(e.logs.String(), "route=/v1/events") {
		t.Fatal("no access log lines were captured; the log check above proves nothing")
	}
}

func TestSegmentMembersAndEnroll(t *testing.T) {
	e := newWorkflowEnv(t)
	join := func(token, segment, patient string) *httptest.ResponseRecorder {
		return e.do(token, "POST", "/v1/segments/"+segment+"/members", "application/json", []byte(`{"patient": "`+patient+`"}`))
	}
	type joinOut struct {
		Joined      bool `json:"joined"`
		RunsStarted int  `json:"runs_started"`
	}
	var out joinOut
	want(t, join(tokenOne, "vip", "Patient/p1"), http.StatusCreated, &out)
	if out != (joinOut{Joined: true}) {
		t.Fatalf("first join %+v", out)
	}
	want(t, join(tokenOne, "vip", "Patient/p1"), http.StatusOK, &out)
	if out != (joinOut{Joined: false}) {
		t.Fatalf("second join %+v", out)
	}
	want(t, join(tokenOne, "vip", "Patient/p2"), http.StatusCreated, &out)
	// Membership is per tenant.
	want(t, join(tokenTwo, "vip", "Patient/p1"), http.StatusCreated, &out)

	rec := join(tokenOne, "VIP", "Patient/p1")
	want(t, rec, http.StatusBadRequest, nil)
	rec = join(tokenOne, "vip", "Patient/Canary Zed")
	want(t, rec, http.StatusBadRequest, nil)
	if strings.Contains(rec.Body.String(), "Canary") {
		t.Fatalf("the error repeats the patient value: %s", rec.Body.String())
	}
	want(t, e.do(tokenOne, "POST", "/v1/segments/vip/members", "text/plain", []byte(`{"patient": "Patient/p1"}`)), http.StatusUnsupportedMediaType, nil)

	// A workflow triggered by the segment; enrolling needs it active.
	def := `{"id": "vip-welcome", "trigger": {"segment": "vip"}, "steps": [
		{"id": "hello", "type": "add_to_segment", "segment": "vip-greeted"},
		{"id": "done", "type": "end"}]}`
	// Its runs have no EOB or appointment: a send step is refused.
	withSend := strings.Replace(def, `"type": "add_to_segment", "segment": "vip-greeted"`, `"type": "send", "channel": "email", "template": "appointment.confirmation"`, 1)
	if rec := e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(withSend)); rec.Code != http.StatusUnprocessableEntity ||
		!strings.Contains(rec.Body.String(), "needs an EOB or an appointment") {
		t.Fatalf("a send step in a segment workflow: %d %s", rec.Code, rec.Body)
	}
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", []byte(def)), http.StatusCreated, nil)
	enroll := func(token, id, segment string) *httptest.ResponseRecorder {
		return e.do(token, "POST", "/v1/workflows/"+id+"/enroll", "application/json", []byte(`{"segment": "`+segment+`"}`))
	}
	rec = enroll(tokenOne, "vip-welcome", "vip")
	want(t, rec, http.StatusConflict, nil)
	if !strings.Contains(rec.Body.String(), "activate") {
		t.Fatalf("409 does not say why: %s", rec.Body.String())
	}
	want(t, e.do(tokenOne, "POST", "/v1/workflows/vip-welcome/activate", "", nil), http.StatusOK, nil)
	var enrolled map[string]int
	want(t, enroll(tokenOne, "vip-welcome", "vip"), http.StatusOK, &enrolled)
	if enrolled["enrolled"] != 2 {
		t.Fatalf("enrolled %v, want 2 (tenant one's members)", enrolled)
	}
	// Nobody re-enters: a second enrollment starts nothing.
	want(t, enroll(tokenOne, "vip-welcome", "vip"), http.StatusOK, &enrolled)
	if enrolled["enrolled"] != 0 {
		t.Fatalf("second enrollment %v", enrolled)
	}
	// Joining the segment now starts the active workflow.
	want(t, join(tokenOne, "vip", "Patient/p3"), http.StatusCreated, &out)
	if out != (joinOut{Joined: true, RunsStarted: 1}) {
		t.Fatalf("join with an active workflow %+v", out)
	}
	var runs struct {
		Runs []RunBody `json:"runs"`
	}
	want(t, e.do(tokenOne, "GET", "/v1/runs?subject=patient:"+e.st.PatientIndex("t1", "Patient/p3"), "", nil), http.StatusOK, &runs)
	if len(runs.Runs) != 1 || runs.Runs[0].WorkflowID != "vip-welcome" {
		t.Fatalf("runs of p3 %+v", runs)
	}

	want(t, enroll(tokenOne, "nope", "vip"), http.StatusNotFound, nil)
	want(t, enroll(tokenTwo, "vip-welcome", "vip"), http.StatusNotFound, nil)
	want(t, enroll(tokenOne, "vip-welcome", "Bad Segment"), http.StatusBadRequest, nil)
	want(t, e.do(tokenOne, "POST", "/v1/workflows/vip-welcome/enroll", "application/json", []byte(`{"segment": "vip", "x": 1}`)), http.StatusBadRequest, nil)
}

func TestTenantCannotSeeAnotherTenantsWorkflow(t *testing.T) {
	e := newWorkflowEnv(t)
	d := builtin(t, "eob-notice")
	want(t, e.do(tokenOne, "POST", "/v1/workflows", "application/json", mustJSON(t, d)), http.StatusCreated, nil)

	for _, r := range []struct {
		method, path string
		body         []byte
	}{
		{"GET", "/v1/workflows/eob-notice", nil},
		{"GET", "/v1/workflows/eob-notice/stats", nil},
		{"PUT", "/v1/workflows/eob-notice", mustJSON(t, d)},
		{"POST", "/v1/workflows/eob-notice/activate", nil},
		{"POST", "/v1/workflows/eob-notice/pause", nil},
	} {
		ct := ""
		if r.body != nil {
			ct = "application/json"
		}
		want(t, e.do(tokenTwo, r.method, r.path, ct, r.body), http.StatusNotFound, nil)
	}
	var list struct {
		Workflows []WorkflowSummary `json:"workflows"`
	}
	want(t, e.do(tokenTwo, "GET", "/v1/workflows", "", nil), http.StatusOK, &list)
	if list.Workflows == nil || len(list.Workflows) != 0 {
		t.Fatalf("tenant two lists %+v", list)
	}
	// Tenant one's workflow is untouched by tenant two's attempts.
	var got WorkflowBody
	want(t, e.do(tokenOne, "GET", "/v1/workflows/eob-notice", "", nil), http.StatusOK, &got)
	if got.Version != 1 || got.Status != "draft" {
		t.Fatalf("tenant one's workflow changed: %+v", got)
	}
	// Ids are per tenant: tenant two may use the same one.
	var saved WorkflowSaved
	want(t, e.do(tokenTwo, "POST", "/v1/workflows", "application/json", mustJSON(t, d)), http.StatusCreated, &saved)
	if saved.Version != 1 {
		t.Fatalf("tenant two's first version is %d", saved.Version)
	}
	// Without a token nothing answers.
	want(t, e.do("", "GET", "/v1/workflows", "", nil), http.StatusUnauthorized, nil)
	want(t, e.do("wrong-token", "POST", "/v1/events", "application/json", []byte(`{"type": "a", "patient": "Patient/p1"}`)), http.StatusUnauthorized, nil)
}

func TestWorkflowRoutesWithoutBackends(t *testing.T) {
	e := newWorkflowEnv(t)
	h := checked(t, New(Config{Keys: &access.Service{Store: e.st}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	for _, r := range []struct {
		method, path, body string
	}{
		{"GET", "/v1/workflows", ""},
		{"POST", "/v1/workflows", yamlDefinition},
		{"GET", "/v1/workflows/x/stats", ""},
		{"GET", "/v1/runs?subject=Appointment/a", ""},
		{"POST", "/v1/events", `{"type": "a", "patient": "Patient/p1"}`},
		{"POST", "/v1/segments/vip/members", `{"patient": "Patient/p1"}`},
		{"POST", "/v1/workflows/x/enroll", `{"segment": "vip"}`},
	} {
		var body []byte
		if r.body != "" {
			body = []byte(r.body)
		}
		rec := serve(h, e.tokens[tokenOne], r.method, r.path, "application/json", body)
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%s %s: %d %s", r.method, r.path, rec.Code, rec.Body.String())
			continue
		}
		errorCode(t, rec)
	}
}

// knownErrors are every error checkEvent may return: fixed messages, so no
// input can reach a response through them.
var knownEventErrors = []error{errBadEventType, errBadPatient, errBadEventData, errEventDataTooBig}

func FuzzCheckEvent(f *testing.F) {
	f.Add([]byte(`{"type": "portal.viewed", "patient": "Patient/123", "data": {"page": "eob"}}`))
	f.Add([]byte(`{"type": "portal.login", "patient": "Patient/a.b-c"}`))
	f.Add([]byte(`{"type": "x", "patient": "Patient/Jane Doe", "data": null}`))
	f.Add([]byte(`{"type": "Bad", "patient": "Patient/1", "data": [1]}`))
	f.Add([]byte(`{"type": "a:b", "patient": "Patient/1", "data": {"a": {"b": [1, 2, "\u00e9"]}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req EventRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		data, err := checkEvent(req)
		if err != nil {
			if !slices.ContainsFunc(knownEventErrors, func(k error) bool { return errors.Is(err, k) }) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !eventType.MatchString(req.Type) || !patientRef.MatchString(req.Patient) {
			t.Fatal("accepted a bad type or patient")
		}
		if data != nil {
			var obj map[string]any
			if json.Unmarshal(data, &obj) != nil || obj == nil || len(data) > maxEventDataBytes {
				t.Fatalf("accepted data that is not a JSON object of at most 8 KiB: %d bytes", len(data))
			}
		}
	})
}

func FuzzDecodeDefinition(f *testing.F) {
	for _, d := range workflow.Builtins() {
		b, err := json.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("application/json", b)
	}
	f.Add("application/yaml", []byte(yamlDefinition))
	f.Add("text/yaml", []byte(invalidDefinition))
	f.Add("application/json", []byte("id: x"))
	f.Add("application/yaml", []byte("a: &a [*a, *a]"))
	reg := journey.Registry(nil)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		d, err := decodeDefinition(contentType, body)
		if err != nil {
			if statusOf(err) != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if d.Version != 0 {
			t.Fatal("the body's version was kept")
		}
		_ = workflow.Validate(d, reg) // must not panic on anything that parses
	})
}

// Every /v1 route the server registers is in the role table: none is
// reachable without a role check.
func TestEveryV1RouteHasARole(t *testing.T) {
	declared := map[string]bool{}
	for _, rt := range Routes() {
		if rt.Role == "" {
			t.Errorf("%s %s has no role", rt.Method, rt.Path)
		}
		declared[rt.Method+" /v1"+rt.Path] = true
	}
	n := 0
	for _, r := range New(Config{}).Routes() {
		if strings.HasPrefix(r.Path, "/v1/") {
			n++
			if !declared[r.Method+" "+r.Path] {
				t.Errorf("%s %s is registered without a role", r.Method, r.Path)
			}
		}
	}
	if n != len(declared) {
		t.Errorf("%d /v1 routes registered, %d declared", n, len(declared))
	}
}
