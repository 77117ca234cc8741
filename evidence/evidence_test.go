package evidence

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every test the safeguards map names exists in the repository: the map
// cannot cite a test that was renamed or never written.
func TestSafeguardTestsExist(t *testing.T) {
	defined := map[string]bool{}
	re := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(defined) < 100 {
		t.Fatalf("found only %d tests: the walk is not reading the repository", len(defined))
	}
	for _, s := range Safeguards {
		for _, name := range s.Tests {
			if !defined[name] {
				t.Errorf("%s cites %s, which no test file defines", s.Section, name)
			}
		}
	}
}

const sampleReport = `{"Time":"2026-12-07T03:00:00Z","Action":"start","Package":"github.com/tidings-health/tidings/api"}
{"Time":"2026-12-07T03:00:01Z","Action":"run","Package":"github.com/tidings-health/tidings/api","Test":"TestEveryRouteChecksItsRole"}
{"Time":"2026-12-07T03:00:02Z","Action":"pass","Package":"github.com/tidings-health/tidings/api","Test":"TestEveryRouteChecksItsRole/operator","Elapsed":0.1}
{"Time":"2026-12-07T03:00:02Z","Action":"pass","Package":"github.com/tidings-health/tidings/api","Test":"TestEveryRouteChecksItsRole","Elapsed":1}
{"Time":"2026-12-07T03:00:03Z","Action":"fail","Package":"github.com/tidings-health/tidings/cmd/tidings","Test":"TestSignedNotifications","Elapsed":2}
{"Time":"2026-12-07T03:00:03Z","Action":"pass","Package":"github.com/tidings-health/tidings/cmd/tidings","Test":"TestSignedNotifications","Elapsed":2}
{"Time":"2026-12-07T03:00:04Z","Action":"fail","Package":"github.com/tidings-health/tidings/cmd/tidings","Elapsed":9}
{"Time":"2026-12-07T03:00:04Z","Action":"pass","Package":"github.com/tidings-health/tidings/api","Elapsed":3}
`

// A test that failed in any package is failing, whatever else passed under
// its name; subtests roll up; packages are listed.
func TestParseTestReport(t *testing.T) {
	run, err := ParseTestReport([]byte("# build output\n" + sampleReport))
	if err != nil {
		t.Fatal(err)
	}
	if run.Tests["TestEveryRouteChecksItsRole"] != "pass" || run.Tests["TestSignedNotifications"] != "fail" || len(run.Tests) != 2 {
		t.Errorf("tests %v", run.Tests)
	}
	if run.Packages["github.com/tidings-health/tidings/cmd/tidings"] != "fail" || run.Packages["github.com/tidings-health/tidings/api"] != "pass" {
		t.Errorf("packages %v", run.Packages)
	}
	if len(run.Failed) != 1 || run.Failed[0] != "github.com/tidings-health/tidings/cmd/tidings.TestSignedNotifications" {
		t.Errorf("failed %v", run.Failed)
	}
	if _, err := ParseTestReport([]byte("ok  github.com/x 1s\n")); err == nil {
		t.Error("plain go test output taken for a -json report")
	}
	st := statuses(&run)
	byID := map[string]SafeguardStatus{}
	for _, s := range st {
		byID[s.Section] = s
	}
	if got := byID["164.312(d)"]; got.Met != "failing" || got.Results["TestSignedNotifications"] != "fail" {
		t.Errorf("164.312(d): %+v", got)
	}
	if got := byID["164.312(a)(2)(i)"]; got.Met != "not run" {
		t.Errorf("164.312(a)(2)(i) with TestKeyLifecycle absent: %+v", got)
	}
	for _, s := range statuses(nil) {
		if len(s.Tests) > 0 && s.Met != "not run" || len(s.Tests) == 0 && s.Met != "no test" {
			t.Errorf("without a report %s is %q", s.Section, s.Met)
		}
	}
}

// The README's safeguards table says what the map says: a row per
// safeguard naming each of its tests.
func TestReadmeListsEverySafeguard(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, "|"); len(f) > 4 {
			rows[strings.TrimSpace(f[1])] = line
		}
	}
	for _, s := range Safeguards {
		row, ok := rows[s.Section]
		if !ok {
			t.Errorf("the README has no row for %s", s.Section)
			continue
		}
		for _, name := range s.Tests {
			if !strings.Contains(row, "`"+name+"`") {
				t.Errorf("the README's row for %s does not name %s", s.Section, name)
			}
		}
	}
}
