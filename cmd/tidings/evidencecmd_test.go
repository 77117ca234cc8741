package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
)

// tidings evidence on a stack that sent a notice: every file is written,
// the decision is counted, the chain verifies, the keys are listed without
// their secrets, the test report's failure shows against its safeguard,
// and no file holds the patient's address.
func TestEvidenceCommand(t *testing.T) {
	ts := newTestStack(t, testOpts{NoPlaceholder: true})
	token := ts.apiKey(t, "dev", access.Compliance)
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	ts.notifyOneMail(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	if rep := ts.verifyAudit(t); !rep.OK() {
		t.Fatalf("chain: %v", rep)
	}
	cfg := ts.app.cfg
	t.Setenv("TIDINGS_DATABASE_URL", ts.DBURL)
	t.Setenv("TIDINGS_AUDIT_KEYS", cfg.AuditKeys)
	t.Setenv("TIDINGS_AUDIT_SIGNING_KEY", cfg.AuditSigningKey)
	t.Setenv("TIDINGS_AUDIT_CHECKPOINT_DIR", cfg.AuditCheckpointDir)
	report := filepath.Join(t.TempDir(), "report.jsonl")
	if err := os.WriteFile(report, []byte(`{"Time":"2026-12-07T03:00:00Z","Action":"pass","Package":"github.com/tidings-health/tidings/api","Test":"TestEveryRouteChecksItsRole"}
{"Time":"2026-12-07T03:00:01Z","Action":"fail","Package":"github.com/tidings-health/tidings/cmd/tidings","Test":"TestSignedNotifications"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pack")
	day := time.Now().UTC().Format(time.DateOnly)
	tomorrow := time.Now().UTC().Add(24 * time.Hour).Format(time.DateOnly)
	var stdout bytes.Buffer
	if err := realMain(context.Background(), []string{"evidence", "--tenant", "dev", "--from", day, "--to", tomorrow, "--out", out, "--test-report", report},
		&stdout, io.Discard); err != nil {
		t.Fatalf("evidence: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "audit chain verifies") {
		t.Errorf("summary: %s", stdout.String())
	}
	read := func(name string, v any) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if v != nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if bytes.Contains(b, []byte("member@example.org")) || bytes.Contains(b, []byte(token)) {
			t.Errorf("%s holds the patient's address or a key's secret", name)
		}
		return string(b)
	}
	var pol struct {
		Revision string
		Tests    struct{ Passed, Failed int }
	}
	read("policy.json", &pol)
	if pol.Revision != "built-in" || pol.Tests.Passed < 50 || pol.Tests.Failed != 0 {
		t.Errorf("policy.json: %+v", pol)
	}
	var dec struct{ Total, Allowed int64 }
	read("decisions.json", &dec)
	if dec.Total < 1 || dec.Allowed < 1 {
		t.Errorf("decisions.json: %+v", dec)
	}
	var aud struct {
		OK          bool  `json:"ok"`
		RowsChecked int64 `json:"rows_checked"`
	}
	read("audit.json", &aud)
	if !aud.OK || aud.RowsChecked == 0 {
		t.Errorf("audit.json: %+v", aud)
	}
	var keys struct {
		APIKeys []struct {
			ID   string `json:"id"`
			Role string `json:"role"`
		} `json:"api_keys"`
	}
	read("keys.json", &keys)
	compliance := false
	for _, k := range keys.APIKeys {
		compliance = compliance || k.Role == "compliance"
	}
	if !compliance {
		t.Errorf("keys.json lacks the compliance key: %+v", keys)
	}
	var index struct {
		Safeguards []struct {
			Section string            `json:"section"`
			Status  string            `json:"status"`
			Results map[string]string `json:"test_results"`
		}
	}
	read("index.json", &index)
	status := map[string]string{}
	for _, s := range index.Safeguards {
		status[s.Section] = s.Status
	}
	if status["164.312(d)"] != "failing" || status["164.312(a)(2)(i)"] != "not run" || len(status) < 10 {
		t.Errorf("safeguards: %v", status)
	}
	html := read("index.html", nil)
	for _, want := range []string{`<html lang="en">`, "164.312(b)", "Audit controls", "verifies", `<a href="policy.json">`} {
		if !strings.Contains(html, want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
	read("tests.json", nil)
}
