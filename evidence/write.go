package evidence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
)

// Files are the pack's files besides index.json and index.html.
var Files = []string{"policy.json", "decisions.json", "audit.json", "keys.json", "tests.json"}

// Write writes the pack into dir (created if needed): one JSON file per
// part, index.json (the pack's summary and the safeguards with their test
// results) and index.html (the same for a person). tests.json is written
// only when there was a test report.
func (p Pack) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	parts := map[string]any{"policy.json": p.Policy, "decisions.json": p.Decisions, "audit.json": p.Audit, "keys.json": p.Keys}
	if p.Tests != nil {
		parts["tests.json"] = p.Tests
	}
	parts["index.json"] = p
	for name, v := range parts {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o640); err != nil {
			return err
		}
	}
	var html bytes.Buffer
	if err := indexHTML.Execute(&html, p); err != nil {
		return fmt.Errorf("index.html: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "index.html"), html.Bytes(), 0o640)
}

var indexHTML = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tidings evidence: {{.Tenant}}, {{.From.Format "2006-01-02"}} to {{.To.Format "2006-01-02"}}</title>
<style>
body { font-family: Arial, Helvetica, sans-serif; color: #1a1a1a; max-width: 70em; margin: 1em auto; line-height: 1.4; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #767676; padding: 0.4em; text-align: left; vertical-align: top; }
.tested { color: #0b6b0b; } .failing { color: #a30000; font-weight: bold; } .not-run, .no-test { color: #6b4b00; }
</style>
</head>
<body>
<h1>Evidence for tenant {{.Tenant}}</h1>
<p>Period {{.From.Format "2006-01-02 15:04"}} to {{.To.Format "2006-01-02 15:04"}} UTC; generated {{.Generated.Format "2006-01-02 15:04"}} UTC.</p>
<h2>Summary</h2>
<ul>
<li>Active policy: {{.Policy.Revision}}; Rego tests {{.Policy.Tests.Passed}} passed, {{.Policy.Tests.Failed}} failed, coverage {{printf "%.1f" .Policy.Tests.Coverage}}% (<a href="policy.json">policy.json</a>)</li>
<li>Policy decisions in the period: {{.Decisions.Total}} ({{.Decisions.Allowed}} allowed, {{.Decisions.Denied}} denied) (<a href="decisions.json">decisions.json</a>)</li>
<li>Audit chain: {{if .Audit.OK}}verifies{{else}}DOES NOT VERIFY{{end}}, {{.Audit.RowsChecked}} rows, {{.Audit.DBCheckpoints}} signed checkpoints in the database and {{.Audit.FileCheckpoints}} in the checkpoint folder (<a href="audit.json">audit.json</a>)</li>
<li>API keys: {{len .Keys.APIKeys}}; key events in the period: {{len .Keys.Events}} (<a href="keys.json">keys.json</a>)</li>
<li>Last test run: {{if .Tests}}{{.Tests.Started.Format "2006-01-02 15:04"}} UTC, {{len .Tests.Failed}} failed (<a href="tests.json">tests.json</a>){{else}}no report given{{end}}</li>
</ul>
<h2>Safeguards</h2>
<table>
<thead><tr><th scope="col">Requirement</th><th scope="col">What meets it</th><th scope="col">Tests</th><th scope="col">Status</th><th scope="col">Evidence</th></tr></thead>
<tbody>
{{range .Safeguards}}<tr>
<td>45 CFR {{.Section}}<br>{{.Title}}</td>
<td>{{.Feature}}</td>
<td>{{range $t, $r := .Results}}{{$t}}: {{$r}}<br>{{else}}none yet{{end}}</td>
<td class="{{if eq .Met "tested"}}tested{{else if eq .Met "failing"}}failing{{else if eq .Met "not run"}}not-run{{else}}no-test{{end}}">{{.Met}}</td>
<td>{{range .Evidence}}<a href="{{.}}">{{.}}</a> {{end}}</td>
</tr>
{{end}}</tbody>
</table>
</body>
</html>
`))
