package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// README command 1, non-interactively, as reviewers run it: its own Postgres
// and Redis, the shipped examples, one JSON summary on stdout.
func TestDevReplaysExamples(t *testing.T) {
	mailDir := filepath.Join(t.TempDir(), "mail")
	var stdout, stderr bytes.Buffer
	err := realMain(context.Background(), []string{"dev", "--replay", "../../examples/replay", "--mail-dir", mailDir, "--exit", "--json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("dev: %v\n%s", err, stderr.String())
	}
	var sum DevSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout.String())
	}
	files, _ := filepath.Glob("../../examples/replay/*.json")
	if sum.Files != len(files) {
		t.Errorf("files %d, want %d", sum.Files, len(files))
	}
	// 12 files with EOBs, one of them a Synthea bundle with 3, and one SIU
	// appointment: 15 events; the Encounter notification is not notified.
	// Each EOB starts the built-in EOB workflow: its notice is sent (or the
	// preauthorization denied) and the run waits for a portal view. The
	// SIU appointment (2021) gets its confirmation; its reminders' moments
	// and the visit have passed, so its run ends.
	if sum.Events != 15 || sum.Sent != 14 || sum.Denied != 1 || sum.Skipped != 0 || sum.Ignored != 1 || sum.Failed != 0 || sum.Pending != 0 {
		t.Errorf("summary %+v", sum)
	}
	if sum.Runs["waiting"] != 14 || sum.Runs["ended"] != 1 {
		t.Errorf("runs %v, want 14 waiting (EOBs) and 1 ended (the appointment)", sum.Runs)
	}
	if len(sum.Notices) != 1 || sum.Notices[0].ResourceID != "PDexPriorAuth1" || !strings.Contains(strings.Join(sum.Notices[0].Reasons, ""), "preauthorization") {
		t.Errorf("denied notices %+v: want the PDex preauthorization with its reason", sum.Notices)
	}
	if len(sum.Rejected) != 1 || sum.Rejected[0].File != "id_only_notification_bundle_example.json" || sum.Rejected[0].Reason == "" {
		t.Errorf("rejected files %+v: want the id-only bundle, with a reason", sum.Rejected)
	}
	emls, _ := filepath.Glob(filepath.Join(mailDir, "*.eml"))
	if len(emls) != sum.Sent || sum.EMLFiles != sum.Sent {
		t.Errorf("%d .eml files (summary says %d), want %d", len(emls), sum.EMLFiles, sum.Sent)
	}
	for _, f := range emls {
		b, _ := os.ReadFile(f)
		if !bytes.Contains(b, []byte("@patients.invalid>")) {
			t.Errorf("%s is not addressed to a placeholder on the reserved domain", filepath.Base(f))
		}
	}
}

// A file dev cannot use is reported with its reason, not skipped.
func TestDevReportsUnusableFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"resourceType":`), 0o644)
	os.WriteFile(filepath.Join(dir, "patient.json"), fixture(t, "carin-bb-2.0.0/Patient-Patient2.json"), 0o644)
	var stdout, stderr bytes.Buffer
	err := realMain(context.Background(), []string{"dev", "--replay", dir, "--mail-dir", filepath.Join(dir, "out"), "--exit", "--json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("dev: %v\n%s", err, stderr.String())
	}
	var sum DevSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Rejected) != 2 {
		t.Fatalf("rejected %+v, want both files with reasons", sum.Rejected)
	}
	for _, r := range sum.Rejected {
		if r.Reason == "" {
			t.Errorf("%s rejected without a reason", r.File)
		}
	}
}
