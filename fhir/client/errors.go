package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors. Callers branch on these with errors.Is.
var (
	// ErrGone: a read answered 404 or 410; the resource was deleted (an
	// Appointment that disappears is treated as cancelled by callers).
	ErrGone = errors.New("fhir/client: resource gone")
	// ErrForeignReference: an absolute reference or a search next link points
	// outside the client's base URL.
	ErrForeignReference = errors.New("fhir/client: reference outside the FHIR base")
	// ErrInvalidReference: a reference or resource type/id that cannot be
	// fetched (contained, urn:, conditional, malformed).
	ErrInvalidReference = errors.New("fhir/client: invalid reference")
	// ErrUnsupported: the server does not support the operation ($events).
	ErrUnsupported = errors.New("fhir/client: operation not supported by server")
	// ErrUnauthorized: 401 after the one token refresh, 403, or a token
	// endpoint that rejected the client's credentials.
	ErrUnauthorized = errors.New("fhir/client: unauthorized")
	// ErrTooLarge: the response body exceeds Options.MaxBodyBytes.
	ErrTooLarge = errors.New("fhir/client: response too large")
	// ErrInvalidResponse: a response that is not JSON, not the expected
	// resource type, or otherwise malformed.
	ErrInvalidResponse = errors.New("fhir/client: invalid response")
	// ErrRedirectRefused: the server redirected to another scheme or host.
	ErrRedirectRefused = errors.New("fhir/client: redirect to another host refused")
	// ErrTruncated: a search reached Options.MaxPages or Options.MaxEntries;
	// the results returned alongside it are incomplete.
	ErrTruncated = errors.New("fhir/client: search results truncated")
	// ErrUnsupportedKey: a private key that fits neither RS384 (RSA of at
	// least 2048 bits) nor ES384 (ECDSA P-384).
	ErrUnsupportedKey = errors.New("fhir/client: unsupported private key")
)

// StatusError is an HTTP response with an unexpected status. Its message
// names the method, the URL path (never the query) and the status; it wraps a
// sentinel when one applies (ErrGone, ErrUnauthorized, ErrUnsupported).
type StatusError struct {
	Method     string
	Path       string
	StatusCode int
	kind       error
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("fhir/client: %s %s: status %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.kind != nil {
		s += " (" + detail(e.kind) + ")"
	}
	return s
}

func (e *StatusError) Unwrap() error { return e.kind }

// opError wraps a failure of one request with a message that names only the
// method and path. Unwrap still reaches the cause (context errors, sentinels),
// but the cause's own text is not shown unless it is known to be safe,
// because transport errors from net/http can quote URLs with query strings.
type opError struct {
	method, path string
	what         string // safe description
	err          error
}

func (e *opError) Error() string {
	return fmt.Sprintf("fhir/client: %s %s: %s", e.method, e.path, strings.TrimPrefix(e.what, errPrefix))
}

const errPrefix = "fhir/client: "

// detail is an error's message without the package prefix, for nesting.
func detail(err error) string { return strings.TrimPrefix(err.Error(), errPrefix) }

func (e *opError) Unwrap() error { return e.err }
