package workflow

import (
	"testing"
	"time"
)

// mustTime parses an RFC 3339 instant.
func mustTime(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		tb.Fatalf("time %q: %v", s, err)
	}
	return t
}

// mustZone loads an IANA zone.
func mustZone(tb testing.TB, name string) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		tb.Fatalf("zone %q: %v", name, err)
	}
	return loc
}

// mustParse parses a definition and requires it to be valid against reg.
func mustParse(tb testing.TB, src string, reg Registry) Definition {
	tb.Helper()
	d, err := Parse([]byte(src))
	if err != nil {
		tb.Fatalf("Parse: %v", err)
	}
	if ps := Validate(d, reg); len(ps) > 0 {
		tb.Fatalf("Validate: %v", (&ValidationError{Problems: ps}).Error())
	}
	return d
}

// testRegistry knows email and sms, a few templates and two other workflows.
func testRegistry() Registry {
	return Registry{
		Channels:  map[string]bool{"email": true, "sms": true},
		Templates: map[string]bool{"t.one": true, "t.two": true, "t.three": true, "t.four": true},
		Workflow:  func(id string) bool { return id == "other" || id == "follow-up" },
	}
}

// builtinRegistry knows the email channel and the templates the built-ins
// send. (journey's tests check the real registry: notify's templates.)
func builtinRegistry() Registry {
	var templates []string
	for _, d := range Builtins() {
		for _, s := range d.Steps {
			if s.Type == StepSend {
				templates = append(templates, s.Template)
			}
		}
	}
	return RegistryOf([]string{"email"}, templates)
}
