package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api/openapitest"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/links"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/portal"
	"github.com/tidings-health/tidings/webhook"
)

var contract = sync.OnceValues(func() (*openapitest.Contract, error) {
	doc, err := OpenAPI()
	if err != nil {
		return nil, err
	}
	return openapitest.New(doc)
})

// checked is h with every response validated against the API document.
func checked(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	c, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	return c.Handler(t, h)
}

// apiDoc is the served document, decoded.
type apiDoc struct {
	Paths map[string]map[string]struct {
		Role     *string         `json:"x-required-role"`
		Security json.RawMessage `json:"security"`
	} `json:"paths"`
}

func servedDoc(t *testing.T) apiDoc {
	t.Helper()
	rec := httptest.NewRecorder()
	New(Config{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var doc apiDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("GET /openapi.json is not JSON: %v", err)
	}
	if len(doc.Paths) == 0 {
		t.Fatal("GET /openapi.json has no paths")
	}
	return doc
}

// The served document is the embedded one, a valid OpenAPI 3.1 document,
// without the YAML-only anchors key.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	if _, err := contract(); err != nil {
		t.Fatal(err)
	}
	doc, err := OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top[anchorsKey]; ok {
		t.Errorf("the served document keeps %s", anchorsKey)
	}
	if string(top["openapi"]) != `"3.1.0"` {
		t.Errorf("openapi: %s, want 3.1.0", top["openapi"])
	}
	servedDoc(t)
}

var ginParam = regexp.MustCompile(`:[^/]+`)
var docParam = regexp.MustCompile(`\{[^}]+\}`)

// TestOpenAPICoversEveryRoute walks the routes Gin registers on a server
// with every optional part (portal, metrics) and the document's paths: each
// must be in the other. A route added to the code (SMS, contact keys, …)
// fails here, named, until the document describes it.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	doc := servedDoc(t)
	documented := map[string]string{} // "GET /v1/workflows/{}" → the document's path
	for p, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" || m == "summary" || m == "description" || m == "servers" {
				continue
			}
			documented[strings.ToUpper(m)+" "+docParam.ReplaceAllString(p, "{}")] = p
		}
	}
	r := New(Config{Metrics: metrics.New(), Portal: portal.New(portal.Config{}), SMS: &SMSCallbacks{}, Links: &links.Server{}})
	registered := map[string]bool{}
	for _, rt := range r.Routes() {
		key := rt.Method + " " + ginParam.ReplaceAllString(rt.Path, "{}")
		registered[key] = true
		if _, ok := documented[key]; !ok {
			t.Errorf("route %s %s is registered but missing from api/openapi.yaml: add its operation (request body, parameters, responses, x-required-role for /v1)",
				rt.Method, rt.Path)
		}
	}
	for key, p := range documented {
		if !registered[key] {
			m, _, _ := strings.Cut(key, " ")
			t.Errorf("api/openapi.yaml documents %s %s, which no route serves", m, p)
		}
	}
	if len(registered) < 40 {
		t.Errorf("only %d routes registered: is the portal or /metrics missing?", len(registered))
	}
}

// Each /v1 operation's x-required-role is the role api.Routes() declares
// for it (the role require() checks); operations outside /v1 name none and
// state their own security.
func TestOpenAPIRolesMatchTheCode(t *testing.T) {
	doc := servedDoc(t)
	declared := map[string]access.Role{}
	for _, rt := range Routes() {
		declared[rt.Method+" "+ginParam.ReplaceAllString("/v1"+rt.Path, "{}")] = rt.Role
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, op := range ops {
			key := strings.ToUpper(m) + " " + docParam.ReplaceAllString(p, "{}")
			role, isV1 := declared[key]
			switch {
			case isV1 && op.Role == nil:
				t.Errorf("%s %s: no x-required-role; the code requires %s", strings.ToUpper(m), p, role)
			case isV1 && *op.Role != string(role):
				t.Errorf("%s %s: x-required-role %s, the code requires %s", strings.ToUpper(m), p, *op.Role, role)
			case isV1 && op.Security != nil:
				t.Errorf("%s %s: a /v1 operation takes the API key (the document's default security), not %s", strings.ToUpper(m), p, op.Security)
			case !isV1 && op.Role != nil:
				t.Errorf("%s %s: x-required-role %s on a route that takes no API key", strings.ToUpper(m), p, *op.Role)
			case !isV1 && op.Security == nil:
				t.Errorf("%s %s: outside /v1 an operation states its security (it does not take the API key)", strings.ToUpper(m), p)
			}
			documented[key] = true
		}
	}
	for _, rt := range Routes() {
		if !documented[rt.Method+" "+ginParam.ReplaceAllString("/v1"+rt.Path, "{}")] {
			t.Errorf("api.Routes() declares %s /v1%s (role %s), which api/openapi.yaml does not document: add it with x-required-role: %s",
				rt.Method, rt.Path, rt.Role, rt.Role)
		}
	}
}

// Answers the document does not allow are caught: the checker is not a
// rubber stamp.
func TestContractCatchesWrongAnswers(t *testing.T) {
	c, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	jsonHeader := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	fhirHeader := http.Header{"Content-Type": {"application/fhir+json"}}
	for _, tc := range []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		ok                 bool
	}{
		{"a JSON error", "GET", "/v1/keys", 401, jsonHeader, `{"error":{"code":"security","message":"no key"}}`, true},
		{"an error with an unknown code", "GET", "/v1/keys", 401, jsonHeader, `{"error":{"code":"nope","message":"no key"}}`, false},
		{"an OperationOutcome on /v1", "GET", "/v1/keys", 401, fhirHeader, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"security"}]}`, false},
		{"an undocumented status", "GET", "/v1/keys", 418, jsonHeader, `{"error":{"code":"invalid","message":"x"}}`, false},
		{"a key list with a secret", "GET", "/v1/keys", 200, jsonHeader, `{"keys":[{"id":"a","tenant":"t","role":"admin","created_at":"2026-01-01T00:00:00Z","secret":"x"}]}`, false},
		{"a null list", "GET", "/v1/webhooks", 200, jsonHeader, `{"endpoints":null}`, false},
		{"a notify outcome", "POST", "/fhir/r4/notify/t/s", 202, http.Header{"Content-Type": {"application/fhir+json"}, "X-Tidings-Accepted": {"1"},
			"X-Tidings-Duplicates": {"0"}, "X-Tidings-Ignored": {"0"}, "X-Tidings-Fetches": {"0"}},
			`{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}`, true},
		{"a notify error as the /v1 shape", "POST", "/fhir/r4/notify/t/s", 401, jsonHeader, `{"error":{"code":"security","message":"x"}}`, false},
		{"a 429 without Retry-After", "GET", "/v1/keys", 429, jsonHeader, `{"error":{"code":"throttled","message":"x"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Check(httptest.NewRequest(tc.method, tc.path, nil), tc.status, tc.header, []byte(tc.body))
			if (err == nil) != tc.ok {
				t.Errorf("Check: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// Every error the /v1 routes and the notify routes answer with, provoked
// on a real server and checked against the document: 400, 401, 403, 404,
// 413, 415, 422, 429, 500, 503 and the FHIR OperationOutcome of the notify
// routes.
func TestErrorAnswersFollowTheDocument(t *testing.T) {
	e := newWorkflowEnv(t)
	keys := &access.Service{Store: e.st}
	admin := newKey(t, keys, "t1", access.Admin)
	tight := checked(t, New(Config{Keys: keys, RatePerSec: 0.001, RateBurst: 1}))
	bare := checked(t, New(Config{Keys: keys, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	hooks := checked(t, New(Config{Keys: keys, Webhooks: &webhook.Admin{Store: e.st}}))
	big := bytes.Repeat([]byte("x"), 100<<10)
	for _, c := range []struct {
		name               string
		h                  http.Handler
		token              string
		method, path, ct   string
		body               []byte
		want               int
		wantFHIR, wantJSON bool
	}{
		{"no key", e.h, "", "GET", "/v1/workflows", "", nil, 401, false, true},
		{"a role the route does not take", e.h, e.tokens[complianceOne], "GET", "/v1/workflows", "", nil, 403, false, true},
		{"not JSON", e.h, e.tokens[tokenOne], "POST", "/v1/events", "application/json", []byte("{"), 400, false, true},
		{"unknown field", e.h, e.tokens[tokenOne], "POST", "/v1/events", "application/json", []byte(`{"x":1}`), 400, false, true},
		{"a bad query", e.h, e.tokens[tokenOne], "GET", "/v1/runs?subject=Patient/1", "", nil, 400, false, true},
		{"no such workflow", e.h, e.tokens[tokenOne], "GET", "/v1/workflows/nope", "", nil, 404, false, true},
		{"too large", e.h, e.tokens[tokenOne], "POST", "/v1/events", "application/json", big, 413, false, true},
		{"wrong media type", e.h, e.tokens[tokenOne], "POST", "/v1/events", "text/plain", []byte("hi"), 415, false, true},
		{"no backend", bare, admin, "GET", "/v1/portal/settings", "", nil, 503, false, true},
		{"no webhooks", bare, admin, "GET", "/v1/webhooks", "", nil, 503, false, true},
		{"no policy engine", bare, admin, "GET", "/v1/policy", "", nil, 503, false, true},
		{"a panic on /v1", bare, admin, "PUT", "/v1/contacts/Patient/p1", "application/json", []byte(`{"email":"p1@example.org"}`), 500, false, true},
		{"no webhooks yet", hooks, admin, "GET", "/v1/webhooks", "", nil, 200, false, false},
		{"no dead letters", hooks, admin, "GET", "/v1/webhook-messages", "", nil, 200, false, false},
		{"an invalid definition", e.h, e.tokens[tokenOne], "POST", "/v1/workflows", "application/yaml", []byte(invalidDefinition), 422, false, true},
		{"an unknown path", e.h, "", "GET", "/v2/nothing", "", nil, 404, false, true},
		{"openapi", e.h, "", "GET", "/openapi.json", "", nil, 200, false, false},
		{"healthz", e.h, "", "GET", "/healthz", "", nil, 200, false, false},
		{"readyz", e.h, "", "GET", "/readyz", "", nil, 200, false, false},
		{"first within the burst", tight, admin, "GET", "/v1/keys", "", nil, 200, false, false},
		{"over the rate limit", tight, admin, "GET", "/v1/keys", "", nil, 429, false, true},
		{"notify over the rate limit", tight, "", "POST", "/fhir/r4/notify/t1/s1", "application/fhir+json", []byte("{}"), 429, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := serve(c.h, c.token, c.method, c.path, c.ct, c.body)
			if rec.Code != c.want {
				t.Fatalf("%d, want %d: %s", rec.Code, c.want, rec.Body)
			}
			ct := rec.Header().Get("Content-Type")
			if c.wantFHIR && ct != "application/fhir+json" {
				t.Errorf("Content-Type %q, want an OperationOutcome", ct)
			}
			if c.wantJSON {
				errorCode(t, rec)
			}
		})
	}
	if t.Failed() {
		return
	}
	seen := strings.Join(mustContract(t).Seen(), "\n")
	for _, s := range []int{400, 401, 403, 404, 413, 415, 422, 429, 500, 503} {
		if !strings.Contains(seen, fmt.Sprint(" ", s)) {
			t.Errorf("no %d answer was checked against the document", s)
		}
	}
}

// The notify routes' answers, from a real intake, are OperationOutcomes the
// document describes (see the cmd/tidings tests, whose stack is checked
// the same way, for accepted notifications).
func TestNotifyAnswersFollowTheDocument(t *testing.T) {
	h := checked(t, New(Config{Intake: refusingIntake{}}))
	for _, r := range []struct{ method, path string }{
		{"POST", "/fhir/r4/notify/s1"}, {"POST", "/fhir/r4/notify/t1/s1"},
		{"PUT", "/fhir/r4/notify/s1/Appointment/a1"}, {"POST", "/fhir/r4/notify/s1/Appointment/a1"},
		{"PUT", "/fhir/r4/notify/t1/s1/Appointment/a1"}, {"POST", "/fhir/r4/notify/t1/s1/Appointment/a1"},
	} {
		rec := serve(h, "wrong", r.method, r.path, "application/fhir+json", []byte(`{"resourceType":"Bundle"}`))
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("Content-Type") != "application/fhir+json" {
			t.Errorf("%s %s: %d %s %s", r.method, r.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
}

// refusingIntake knows no subscription.
type refusingIntake struct{ Intake }

func (refusingIntake) Authenticate(context.Context, string, string, string) (intake.Subscription, error) {
	return intake.Subscription{}, fault.New(fault.Unauthorized, "unknown subscription or wrong secret")
}

// BenchmarkContractCheck is what validating one answer adds to a test
// request: a workflow list and a JSON error.
func BenchmarkContractCheck(b *testing.B) {
	c, err := contract()
	if err != nil {
		b.Fatal(err)
	}
	header := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	list := []byte(`{"workflows":[{"id":"eob-notice","status":"active","version":3,"trigger":"eob.received","priority":"normal","updated_at":"2026-01-01T00:00:00Z"}]}`)
	fail := []byte(`{"error":{"code":"security","message":"no key"}}`)
	req := httptest.NewRequest("GET", "/v1/workflows", nil)
	for b.Loop() {
		if err := c.Check(req, 200, header, list); err != nil {
			b.Fatal(err)
		}
		if err := c.Check(req, 401, header, fail); err != nil {
			b.Fatal(err)
		}
	}
}

func mustContract(t *testing.T) *openapitest.Contract {
	t.Helper()
	c, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
