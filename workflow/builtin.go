package workflow

import (
	"embed"
	"fmt"
	"path"
)

//go:embed builtin/*.json
var builtinFS embed.FS

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

// RegistryOf is a registry of these channels and templates in which the
// built-in workflow ids exist and every template describes the run's EOB or
// appointment (none can be sent by a workflow whose runs have neither).
// The templates are those the notify package renders: journey.Registry
// passes them, so validation and rendering read one list.
func RegistryOf(channels, templates []string) Registry {
	set := func(names []string) map[string]bool {
		m := make(map[string]bool, len(names))
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	tpl := set(templates)
	ids := make(map[string]bool)
	for _, d := range Builtins() {
		ids[d.ID] = true
	}
	return Registry{
		Channels:     set(channels),
		Templates:    tpl,
		Workflow:     func(id string) bool { return ids[id] },
		NeedsSubject: func(t string) bool { return tpl[t] },
	}
}
