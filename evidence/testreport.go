package evidence

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// TestRun is a `go test -json` run, summarised: each top-level test's
// result (a test that failed in any package is "fail") and each package's.
type TestRun struct {
	Started  time.Time         `json:"started"`
	Packages map[string]string `json:"packages"` // package → pass, fail or skip
	Tests    map[string]string `json:"tests"`    // TestName → pass, fail or skip
	Failed   []string          `json:"failed"`   // package.TestName of each failure
}

// ParseTestReport reads `go test -json` output.
func ParseTestReport(raw []byte) (TestRun, error) {
	run := TestRun{Packages: map[string]string{}, Tests: map[string]string{}, Failed: []string{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	lines := 0
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue // go test's own non-JSON lines (build errors)
		}
		var ev struct {
			Time    time.Time
			Action  string
			Package string
			Test    string
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return run, fmt.Errorf("line %d: not a go test -json event", lines+1)
		}
		lines++
		if run.Started.IsZero() || (!ev.Time.IsZero() && ev.Time.Before(run.Started)) {
			run.Started = ev.Time
		}
		switch ev.Action {
		case "pass", "fail", "skip":
		default:
			continue
		}
		if ev.Test == "" {
			run.Packages[ev.Package] = ev.Action
			continue
		}
		if strings.Contains(ev.Test, "/") {
			continue // subtests roll up into their test
		}
		if run.Tests[ev.Test] != "fail" {
			run.Tests[ev.Test] = ev.Action
		}
		if ev.Action == "fail" {
			run.Failed = append(run.Failed, ev.Package+"."+ev.Test)
		}
	}
	if err := sc.Err(); err != nil {
		return run, err
	}
	if lines == 0 {
		return run, fmt.Errorf("no go test -json events")
	}
	sort.Strings(run.Failed)
	return run, nil
}
