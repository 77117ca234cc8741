package workflow

import (
	"encoding/json"
	"errors"
	"path"
	"testing"
	"time"
)

// FuzzParse: Parse then Validate never panic; whatever parses survives a
// JSON round trip; a definition Validate accepts starts without error.
func FuzzParse(f *testing.F) {
	entries, err := builtinFS.ReadDir("builtin")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		b, err := builtinFS.ReadFile(path.Join("builtin", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(reminderJSON))
	f.Add([]byte(reminderYAML))
	f.Add([]byte(nextDayYAML))
	f.Add([]byte(manyProblems))
	f.Add([]byte("id: x\nsteps: [{id: a, type: end}]\n"))
	f.Add([]byte("&a [*a]"))
	reg := builtinRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrParse) {
				t.Fatalf("Parse error does not wrap ErrParse: %v", err)
			}
			return
		}
		problems := Validate(d, reg)
		Validate(d, testRegistry())
		Validate(d, Registry{})

		j, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(j)
		if err != nil {
			t.Fatalf("a parsed definition does not parse again: %v", err)
		}
		j2, _ := json.Marshal(again)
		if string(j) != string(j2) {
			t.Fatalf("round trip changed the definition:\n%s\n%s", j, j2)
		}

		if len(problems) > 0 {
			return
		}
		now := time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC)
		facts := Facts{"start": "2026-03-10T09:00:00-05:00", "end": "2026-03-10T09:30:00-05:00", "status": "fulfilled"}
		st, _, err := Advance(d, State{}, Input{Kind: InputStart, Now: now, Facts: facts})
		if err != nil {
			t.Fatalf("a valid definition fails to start: %v", err)
		}
		for range len(d.Steps) + 1 {
			if st.Status == StatusEnded {
				return
			}
			checkAfter(t, st)
			if st.WaitUntil.After(now) {
				now = st.WaitUntil
			}
			if st, _, err = Advance(d, st, Input{Kind: InputWake, Now: now, Facts: facts}); err != nil {
				t.Fatalf("wake: %v", err)
			}
		}
		if st.Status != StatusEnded {
			t.Fatalf("a valid definition did not end after due wakes: %+v", st)
		}
	})
}
