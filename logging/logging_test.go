package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

type patientName string

func (patientName) LogValue() slog.Value { return slog.StringValue(Redacted) }

func TestPHIKeysAndValuersAreRedacted(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelDebug, "json")
	canary := "Zebulon-Canary-Quintero"
	log.Info("sending", "email", canary+"@example.org", "notice", patientName(canary), "event_id", 42)
	log.With("patient", canary).Warn("x")
	out := buf.String()
	if strings.Contains(out, canary) {
		t.Fatalf("canary leaked into logs:\n%s", out)
	}
	if !strings.Contains(out, `"event_id":42`) {
		t.Fatalf("non-PHI attribute lost:\n%s", out)
	}
	if strings.Count(out, Redacted) != 3 {
		t.Fatalf("want 3 redactions:\n%s", out)
	}
}
