package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/store"
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

// apiError is an error with its HTTP status and FHIR issue code.
type apiError struct {
	status int
	code   string // FHIR issue type code
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func newError(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

// classify maps an error to what the client is told. Unknown errors become a
// 500 without internals (they are logged, without PHI, by the caller).
func classify(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrUnauthorized):
		return newError(http.StatusUnauthorized, "security", "missing or wrong subscription secret")
	case errors.Is(err, store.ErrUnknownReference):
		return newError(http.StatusConflict, "conflict", "the tenant of this API token is not set up")
	case errors.Is(err, store.ErrNotFound):
		return newError(http.StatusNotFound, "not-found", "unknown subscription")
	case errors.Is(err, fhir.ErrMalformed):
		return newError(http.StatusBadRequest, "structure", err.Error())
	case errors.Is(err, fhir.ErrNotNotification):
		return newError(http.StatusUnprocessableEntity, "invalid", err.Error())
	case errors.Is(err, intake.ErrBadSignature):
		return newError(http.StatusUnauthorized, "security", err.Error())
	case errors.Is(err, intake.ErrMismatch):
		return newError(http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, intake.ErrInactive):
		return newError(http.StatusForbidden, "forbidden", "the subscription is not active in Tidings")
	case errors.Is(err, intake.ErrUnsupported):
		return newError(http.StatusUnprocessableEntity, "not-supported", err.Error())
	default:
		return newError(http.StatusInternalServerError, "exception", "internal error; the request was not processed")
	}
}

// fhirError answers with an OperationOutcome.
func fhirError(c *gin.Context, err error) {
	ae := classify(err)
	if ae.status >= 500 {
		c.Error(err) //nolint:errcheck // recorded for the access log
	}
	if ae.status == http.StatusTooManyRequests {
		c.Header("Retry-After", strconv.Itoa(1))
	}
	c.Header("Content-Type", "application/fhir+json")
	c.AbortWithStatusJSON(ae.status, outcome("error", ae.code, ae.msg))
}

// JSONError is the body of a non-FHIR error.
type JSONError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func jsonError(c *gin.Context, err error) {
	ae := classify(err)
	if ae.status >= 500 {
		c.Error(err) //nolint:errcheck
	}
	var body JSONError
	body.Error.Code = ae.code
	body.Error.Message = ae.msg
	c.AbortWithStatusJSON(ae.status, body)
}
