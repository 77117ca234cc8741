package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
)

const redacted = "[REDACTED]"

// Auth sets the Authorization header of a request to the FHIR server.
type Auth interface {
	Authorize(ctx context.Context, req *http.Request) error
}

// Invalidator is implemented by an Auth whose credential can be renewed. When
// the FHIR server answers 401, the client calls Invalidate with the
// Authorization header value it sent and retries once. An implementation
// drops its cached credential only if it is still that value, so concurrent
// requests that all failed with the same old token cause one renewal.
type Invalidator interface {
	Invalidate(authorization string)
}

// StaticBearer sends a fixed bearer token. Its String, Format and LogValue
// print [REDACTED].
type StaticBearer struct{ Token string }

var errNoToken = errors.New("fhir/client: static bearer token is empty")

// Authorize sets "Authorization: Bearer <token>".
func (b StaticBearer) Authorize(_ context.Context, req *http.Request) error {
	if b.Token == "" {
		return errNoToken
	}
	req.Header.Set("Authorization", "Bearer "+b.Token)
	return nil
}

// LogValue keeps the token out of logs.
func (StaticBearer) LogValue() slog.Value { return slog.StringValue(redacted) }

// String keeps the token out of %v and %s.
func (StaticBearer) String() string { return redacted }

// Format keeps the token out of every fmt verb, %#v and %+v included.
func (StaticBearer) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }
