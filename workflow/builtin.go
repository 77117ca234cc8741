package workflow

import (
	"embed"
	"fmt"
	"path"
)

//go:embed builtin/*.json
var builtinFS embed.FS

// BuiltinTemplates are the templates the built-in workflows send.
var BuiltinTemplates = []string{
	"eob.notice",
	"eob.reminder",
	"appointment.confirmation",
	"appointment.reminder",
	"appointment.cancelled",
	"appointment.survey",
	"appointment.noshow",
}

// Builtins returns the built-in workflows, parsed afresh on each call (the
// caller may change them), ordered by id: appointment-cancelled,
// appointment-noshow, appointment-reminders, eob-notice. Each is valid
// against BuiltinRegistry. It panics only if the embedded files do not
// parse, which TestBuiltinsAreValid rules out at build time.
func Builtins() []Definition {
	entries, err := builtinFS.ReadDir("builtin")
	if err != nil {
		panic(fmt.Errorf("workflow: embedded built-ins: %w", err))
	}
	out := make([]Definition, 0, len(entries))
	for _, e := range entries {
		b, err := builtinFS.ReadFile(path.Join("builtin", e.Name()))
		if err != nil {
			panic(fmt.Errorf("workflow: embedded built-in %s: %w", e.Name(), err))
		}
		d, err := Parse(b)
		if err != nil {
			panic(fmt.Errorf("workflow: embedded built-in %s: %w", e.Name(), err))
		}
		out = append(out, d)
	}
	return out
}

// BuiltinRegistry knows the email channel, BuiltinTemplates, and the
// built-in workflow ids.
func BuiltinRegistry() Registry {
	templates := make(map[string]bool, len(BuiltinTemplates))
	for _, t := range BuiltinTemplates {
		templates[t] = true
	}
	ids := make(map[string]bool)
	for _, d := range Builtins() {
		ids[d.ID] = true
	}
	return Registry{
		Channels:  map[string]bool{"email": true},
		Templates: templates,
		Workflow:  func(id string) bool { return ids[id] },
		// Every built-in template describes the run's EOB or appointment.
		NeedsSubject: func(t string) bool { return templates[t] },
	}
}
