package api

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
)

// OperationOutcome is the FHIR error and information body.
type OperationOutcome struct {
	ResourceType string         `json:"resourceType"`
	Issue        []OutcomeIssue `json:"issue"`
}

// OutcomeIssue is one issue of an OperationOutcome.
type OutcomeIssue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
}

func outcome(severity, code, diagnostics string) OperationOutcome {
	return OperationOutcome{ResourceType: "OperationOutcome", Issue: []OutcomeIssue{{Severity: severity, Code: code, Diagnostics: diagnostics}}}
}

// answer is how the API answers one kind of failure: the HTTP status and
// the FHIR issue type of an OperationOutcome.
type answer struct {
	status int
	issue  string
}

// methodNotAllowed is the code of a request whose path is served but not
// with its method: it is about the routes, not a failure of the core, so
// it is the API's own code rather than one of package fault's.
const methodNotAllowed fault.Code = "method-not-allowed"

// answers is the one table from error codes to what the client is told.
var answers = map[fault.Code]answer{
	methodNotAllowed:       {http.StatusMethodNotAllowed, "not-supported"},
	fault.Invalid:          {http.StatusBadRequest, "invalid"},
	fault.Unauthorized:     {http.StatusUnauthorized, "security"},
	fault.Forbidden:        {http.StatusForbidden, "forbidden"},
	fault.NotFound:         {http.StatusNotFound, "not-found"},
	fault.Conflict:         {http.StatusConflict, "conflict"},
	fault.TooLarge:         {http.StatusRequestEntityTooLarge, "too-costly"},
	fault.UnsupportedMedia: {http.StatusUnsupportedMediaType, "not-supported"},
	fault.Unprocessable:    {http.StatusUnprocessableEntity, "invalid"},
	fault.Unsupported:      {http.StatusUnprocessableEntity, "not-supported"},
	fault.Throttled:        {http.StatusTooManyRequests, "throttled"},
	fault.Upstream:         {http.StatusBadGateway, "transient"},
	fault.Unavailable:      {http.StatusServiceUnavailable, "transient"},
	fault.Internal:         {http.StatusInternalServerError, "exception"},
}

// answerFor is the status and issue type for err; anything unclassified is
// a 500 whose detail is never shown (it is logged, without PHI, by the
// access log).
func answerFor(err error) answer {
	if a, ok := answers[fault.CodeOf(err)]; ok {
		return a
	}
	return answers[fault.Internal]
}

func statusOf(err error) int { return answerFor(err).status }

// fhirError answers with an OperationOutcome.
func fhirError(c *gin.Context, err error) {
	a := answerFor(err)
	if a.status >= 500 {
		c.Error(err) //nolint:errcheck // recorded for the access log
	}
	if a.status == http.StatusTooManyRequests {
		c.Header("Retry-After", strconv.Itoa(1))
	}
	c.Header("Content-Type", "application/fhir+json")
	c.AbortWithStatusJSON(a.status, outcome("error", a.issue, fault.MessageOf(err)))
}

// JSONError is the body of a non-FHIR error. Code is the FHIR issue type an
// OperationOutcome would carry (invalid, not-found, conflict, …), so both
// kinds of route speak one vocabulary.
type JSONError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func jsonError(c *gin.Context, err error) {
	a := answerFor(err)
	if a.status >= 500 {
		c.Error(err) //nolint:errcheck
	}
	if a.status == http.StatusTooManyRequests {
		c.Header("Retry-After", strconv.Itoa(1))
	}
	var body JSONError
	body.Error.Code = a.issue
	body.Error.Message = fault.MessageOf(err)
	c.AbortWithStatusJSON(a.status, body)
}

// StatusOf is the HTTP status the API answers err with, for the other
// HTTP surfaces of the process (the console) to agree with it.
func StatusOf(err error) int { return statusOf(err) }
