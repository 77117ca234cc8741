// Package openapitest checks HTTP responses against an OpenAPI 3.1
// document: tests wrap the API's handler with Contract.Handler so that
// every response a test provokes is validated against the document's
// schemas, status codes and headers. It is for tests only; the binary
// never imports it.
//
// It does not import package api (whose own tests use it): callers pass
// the document, api.OpenAPI().
package openapitest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
)

// Contract validates responses against one document.
type Contract struct {
	mu sync.Mutex // the validator's caches are not documented as safe for concurrent use
	v  validator.Validator

	seenMu sync.Mutex
	seen   map[string]bool // "GET /v1/keys 200": what the checked responses covered
}

// New parses doc and checks that it is a valid OpenAPI document.
func New(doc []byte) (*Contract, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		return nil, fmt.Errorf("openapi document: %w", errors.Join(errs...))
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("openapi document does not follow the OpenAPI schema:\n%s", describe(verrs))
	}
	return &Contract{v: v, seen: map[string]bool{}}, nil
}

// ErrNoRoute is what Check returns for a request to a path and method the
// document does not have.
var ErrNoRoute = errors.New("no such path and method in the document")

// ConsolePrefix is where serve mounts the web console (package console).
const ConsolePrefix = "/console"

// Check validates one response (status, header, body) to req against the
// document: the status must be documented for the operation, the body must
// match the schema of its media type, and documented headers their schemas.
func (c *Contract) Check(req *http.Request, status int, header http.Header, body []byte) error {
	resp := &http.Response{StatusCode: status, Header: header, Body: io.NopCloser(bytes.NewReader(body)), Request: req}
	c.mu.Lock()
	ok, errs := c.v.ValidateHttpResponse(req, resp)
	c.mu.Unlock()
	if ok {
		c.seenMu.Lock()
		c.seen[fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, status)] = true
		c.seenMu.Unlock()
		return nil
	}
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation {
			return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ErrNoRoute)
		}
	}
	return fmt.Errorf("%s %s answered %d, which the API document does not allow:\n%s\nbody: %.500s",
		req.Method, req.URL.Path, status, describe(errs), body)
}

// Handler is h with every response checked. Violations are reported as
// errors of t (when the test ends, so that a server goroutine never calls
// t after it). A 404 or 405 for a path or method the document lacks is the
// router's own answer to an unknown route and is not a violation; a route
// the router has and the document lacks is (see the route coverage test).
// The web console (under ConsolePrefix) is HTML for people, not part of
// the API: its answers pass through unchecked.
func (c *Contract) Handler(t testing.TB, h http.Handler) http.Handler {
	var mu sync.Mutex
	var violations []string
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range violations {
			t.Error(v)
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == ConsolePrefix || strings.HasPrefix(r.URL.Path, ConsolePrefix+"/") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		body := rec.Body.Bytes()
		for k, vs := range res.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(res.StatusCode)
		_, _ = w.Write(body)

		err := c.Check(r, res.StatusCode, res.Header, body)
		if errors.Is(err, ErrNoRoute) && (res.StatusCode == http.StatusNotFound || res.StatusCode == http.StatusMethodNotAllowed) {
			return
		}
		if err != nil {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}
	})
}

// Seen lists what the checked responses covered, "METHOD path status".
func (c *Contract) Seen() []string {
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	out := make([]string, 0, len(c.seen))
	for k := range c.seen {
		out = append(out, k)
	}
	return out
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  - %s", e.Message)
		if e.Reason != "" {
			fmt.Fprintf(&b, ": %s", e.Reason)
		}
		for _, s := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s: %s", s.FieldPath, s.Reason)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
