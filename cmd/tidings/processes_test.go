package main

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/metrics/metricstest"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
)

// `tidings serve` and `tidings worker` as production runs them: separate
// commands configured only by the environment, the relay's CA from a file.
func TestServeAndWorkerFromEnvironment(t *testing.T) {
	mc, err := mailcatch.Start(mailcatch.Options{Dir: t.TempDir(), STARTTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	caFile := filepath.Join(t.TempDir(), "relay-ca.pem")
	if err := os.WriteFile(caFile, mc.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	listen := ln.Addr().String()
	ln.Close()
	workerAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	mailHost, mailPort := splitHostPort(t, mc.Addr())
	env := serviceEnv(t)
	for k, v := range map[string]string{
		"TIDINGS_LISTEN_ADDR":          listen,
		"TIDINGS_WORKER_ADDR":          workerAddr,
		"TIDINGS_SMTP_HOST":            mailHost,
		"TIDINGS_SMTP_PORT":            strconv.Itoa(mailPort),
		"TIDINGS_SMTP_FROM":            "Plan <notices@plan.example.org>",
		"TIDINGS_SMTP_CA_FILE":         caFile,
		"TIDINGS_RECONCILE_EVERY":      "500ms",
		"TIDINGS_AUDIT_KEYS":           "a1:" + seal.NewRandomKey(),
		"TIDINGS_AUDIT_SIGNING_KEY":    "s1:" + seal.NewRandomKey(),
		"TIDINGS_AUDIT_CHECKPOINT_DIR": filepath.Join(t.TempDir(), "audit"),
		"TIDINGS_AUDIT_CHAIN_EVERY":    "200ms",
	} {
		env[k] = v
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	// Without audit keys the worker does not start.
	t.Setenv("TIDINGS_AUDIT_KEYS", "")
	if err := realMain(context.Background(), []string{"worker"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "TIDINGS_AUDIT_KEYS is required") {
		t.Fatalf("worker without audit keys: %v", err)
	}
	t.Setenv("TIDINGS_AUDIT_KEYS", env["TIDINGS_AUDIT_KEYS"])
	secretFile := filepath.Join(t.TempDir(), "secret")
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"subscription", "add", "--id", "payer-eob", "--tenant", "plan", "--secret-file", secretFile}, &out, io.Discard); err != nil {
		t.Fatalf("subscription add: %v", err)
	}
	secretBytes, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(secretBytes))
	if len(secret) < 24 || strings.Contains(out.String(), secret) {
		t.Fatalf("secret %d chars; printed with --secret-file: %v", len(secret), strings.Contains(out.String(), secret))
	}
	if err := realMain(context.Background(), []string{"subscription", "add", "--id", "payer-eob", "--tenant", "plan", "--secret-file", secretFile}, io.Discard, io.Discard); err == nil {
		t.Fatal("a second subscription with the same id was accepted")
	}
	out.Reset()
	if err := realMain(context.Background(), []string{"subscription", "list"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "payer-eob") {
		t.Fatalf("subscription list: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := realMain(context.Background(), []string{"workflow", "install", "--tenant", "plan", "--builtins"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "4 workflows active") {
		t.Fatalf("workflow install: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := realMain(context.Background(), []string{"workflow", "list", "--tenant", "plan"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "eob-notice") || !strings.Contains(out.String(), "active") {
		t.Fatalf("workflow list: %v\n%s", err, out.String())
	}

	// An API key for contacts, made as an operator would; its token is shown
	// once and keys list never shows it.
	tokenFile := filepath.Join(t.TempDir(), "key")
	if err := realMain(context.Background(), []string{"keys", "create", "--tenant", "plan", "--role", "contacts", "--name", "crm", "--token-file", tokenFile}, io.Discard, io.Discard); err != nil {
		t.Fatalf("keys create: %v", err)
	}
	tokenBytes, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	apiToken := strings.TrimSpace(string(tokenBytes))
	out.Reset()
	if err := realMain(context.Background(), []string{"keys", "list", "--tenant", "plan"}, &out, io.Discard); err != nil ||
		!strings.Contains(out.String(), "contacts") || !strings.Contains(out.String(), "crm") || strings.Contains(out.String(), apiToken[len(apiToken)-20:]) {
		t.Fatalf("keys list: %v\n%s", err, out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testenv.LogBuffer
	errs := make(chan error, 2)
	go func() { errs <- realMain(ctx, []string{"serve"}, io.Discard, &logs) }()
	go func() { errs <- realMain(ctx, []string{"worker"}, io.Discard, &logs) }()

	base := "http://" + listen
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never became ready; logs:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Serve holds its warm Postgres connections, and each command's
	// connections say whose they are.
	pg, err := pgx.Connect(ctx, env["TIDINGS_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	for {
		var serveConns, workerConns int
		if err := pg.QueryRow(ctx, `SELECT count(*) FILTER (WHERE application_name = 'tidings-serve'), count(*) FILTER (WHERE application_name = 'tidings-worker')
			FROM pg_stat_activity WHERE datname = current_database()`).Scan(&serveConns, &workerConns); err != nil {
			t.Fatal(err)
		}
		if serveConns >= serveWarmConns && workerConns > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postgres backends of serve %d (want %d warm), of the worker %d", serveConns, serveWarmConns, workerConns)
		}
		time.Sleep(100 * time.Millisecond)
	}
	body, err := fhir.WrapResources(fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"), base+"/fhir/r4/Subscription/payer-eob", "eob", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The pharmacy EOB's patient has no email in the bundle: register one.
	creq, _ := http.NewRequest("PUT", base+"/v1/contacts/Patient/Patient2", strings.NewReader(`{"email":"member@plan.example.org","language":"es"}`))
	creq.Header.Set("Content-Type", "application/json")
	creq.Header.Set("Authorization", "Bearer "+apiToken)
	cresp, err := http.DefaultClient.Do(creq)
	if err != nil {
		t.Fatal(err)
	}
	cresp.Body.Close()
	if cresp.StatusCode != 200 {
		t.Fatalf("PUT contact: %d", cresp.StatusCode)
	}
	req, _ := http.NewRequest("POST", base+"/fhir/r4/notify/payer-eob", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	msgs, err := mc.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatalf("no mail: %v; logs:\n%s", err, logs.String())
	}
	text := decodedText(t, msgs[0].Data)
	// Registered in Spanish: the Spanish template, the share, the portal link.
	if !msgs[0].TLS || !strings.Contains(text, "https://portal.example.org/portal/") || !strings.Contains(text, "$80.00") || !strings.Contains(text, "Explicación de Beneficios") {
		t.Errorf("message (TLS %v):\n%s", msgs[0].TLS, text)
	}
	// The worker's own port, as compose's healthcheck asks it (`tidings
	// health`), and its metrics counted the mail.
	for _, path := range []string{"/healthz", "/readyz"} {
		if err := realMain(context.Background(), []string{"health", "http://" + workerAddr + path}, io.Discard, io.Discard); err != nil {
			t.Errorf("tidings health worker %s: %v", path, err)
		}
	}
	if sent := metricstest.Scrape(t, "http://"+workerAddr+"/metrics", "").Get(t, "tidings_smtp_sends_total", "result", "sent"); sent != 1 {
		t.Errorf("the worker's metrics count %v mails sent, want 1", sent)
	}
	cancel()
	for i := 0; i < 2; i++ {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("command returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a command did not stop after cancel")
		}
	}
	if strings.Contains(logs.String(), "member@plan.example.org") || strings.Contains(logs.String(), secret) {
		t.Error("logs carry an email address or a secret")
	}
	// The worker chained the audit rows and wrote checkpoints into the folder.
	out.Reset()
	if err := realMain(context.Background(), []string{"audit", "verify"}, &out, io.Discard); err != nil ||
		!strings.Contains(out.String(), "tenant plan: ") || !strings.Contains(out.String(), ": OK") || strings.Contains(out.String(), " 0 in the checkpoint file") {
		t.Errorf("audit verify: %v\n%s", err, out.String())
	}
}

// `tidings migrate` applies, reports and rolls back the embedded migrations.
func TestMigrateCommand(t *testing.T) {
	dbURL := testenv.NewDB(t) // a clone of the migrated template
	t.Setenv("TIDINGS_DATABASE_URL", dbURL)
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := realMain(context.Background(), append([]string{"migrate"}, args...), &out, io.Discard); err != nil {
			t.Fatalf("migrate %v: %v", args, err)
		}
		return out.String()
	}
	// A migration's state ends its line (a file name may hold the word too).
	pending := func(out string) int { return strings.Count(out, " pending\n") }
	if out := run("status"); !strings.Contains(out, "00001_init.sql") || !strings.Contains(out, "00002_sources_fetches_gaps.sql") || pending(out) != 0 {
		t.Fatalf("status:\n%s", out)
	}
	// Every migration rolls back cleanly, newest first, and applies again.
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) < 8 {
		t.Fatalf("migrations %v (%v)", files, err)
	}
	slices.Reverse(files)
	for _, f := range files {
		if out := run("down"); !strings.Contains(out, "rolled back "+f) {
			t.Fatalf("down, expecting %s:\n%s", f, out)
		}
	}
	if out := run("status"); pending(out) != len(files) {
		t.Fatalf("status after down:\n%s", out)
	}
	if out := run("up"); !strings.Contains(out, "applied 00001_init.sql") || !strings.Contains(out, "applied 00002_sources_fetches_gaps.sql") {
		t.Fatalf("up:\n%s", out)
	}
	if err := realMain(context.Background(), []string{"migrate", "sideways"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown action accepted")
	}
}

// `tidings policy test` runs the shipped policies' tests with coverage and
// fails on a broken policy directory.
func TestPolicyTestCommand(t *testing.T) {
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"policy", "test", "../../rego"}, &out, io.Discard); err != nil {
		t.Fatalf("policy test: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), " passed, 0 failed") || !strings.Contains(out.String(), "rule coverage 100.0%") {
		t.Fatalf("output:\n%s", out.String())
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package tidings.notice\n\ndecision := {\"allow\": true}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "p_test.rego"), []byte("package tidings.notice_test\n\nimport data.tidings.notice\n\ntest_denies if { not notice.decision.allow }\n"), 0o644)
	out.Reset()
	if err := realMain(context.Background(), []string{"policy", "test", dir}, &out, io.Discard); err == nil || !strings.Contains(out.String(), "1 failed") {
		t.Fatalf("a failing policy test passed: %v\n%s", err, out.String())
	}
}
