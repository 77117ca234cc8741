// Package logging builds Tidings' structured logger: JSON through log/slog,
// with a last line of defence that prints any attribute whose key names a
// PHI field as [REDACTED] (PHI-bearing types also redact themselves through
// slog.LogValuer).
package logging

import (
	"io"
	"log/slog"
	"strings"
)

// Redacted is what a PHI-bearing value prints as.
const Redacted = "[REDACTED]"

// phiKeys are attribute keys that may never carry a value into a log line.
var phiKeys = map[string]bool{
	"email": true, "to": true, "name": true, "patient": true, "patient_name": true, "birthdate": true,
	"address": true, "phone": true, "member_id": true, "mrn": true, "ssn": true, "body": true,
	"payload": true, "resource": true, "diagnosis": true, "secret": true, "password": true, "token": true,
}

// New returns a logger writing JSON (or text when format is "text") at level.
func New(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redact}
	if strings.EqualFold(format, "text") {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func redact(_ []string, a slog.Attr) slog.Attr {
	if phiKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, Redacted)
	}
	return a
}
