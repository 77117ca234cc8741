package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

// keygen's keys configure the chain; verify passes on an untouched chain
// and fails, naming the position, on an edited row; an export verifies on
// its own.
func TestAuditCommands(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.NewDB(t)
	pubFile := filepath.Join(t.TempDir(), "audit-public.key")
	var out bytes.Buffer
	if err := realMain(ctx, []string{"audit", "keygen", "--id", "test", "--public-key-out", pubFile}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TIDINGS_DATABASE_URL", dbURL)
	t.Setenv("TIDINGS_AUDIT_CHECKPOINT_DIR", filepath.Join(t.TempDir(), "checkpoints"))
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "TIDINGS_AUDIT_") {
			t.Setenv(k, v)
		}
	}
	cfg, _ := config.FromEnv(os.LookupEnv)
	if p := cfg.Validate(config.RoleAudit); len(p) > 0 {
		t.Fatalf("keygen's keys: %v", p)
	}
	signing := os.Getenv("TIDINGS_AUDIT_SIGNING_KEY")
	t.Setenv("TIDINGS_AUDIT_SIGNING_KEY", "") // an auditor has only the public key

	// 30 rows, a day apart, chained with a checkpoint every 10.
	st, err := store.Open(ctx, dbURL, nil, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.EnsureTenant(ctx, "t1", "Tenant"); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if err := st.Audit(ctx, store.AuditRecord{TenantID: "t1", Actor: "worker", Action: "notice.sent", SubjectType: "notice", SubjectID: "n"}); err != nil {
			t.Fatal(err)
		}
	}
	owner, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, `UPDATE audit_log SET at = '2026-03-01T00:00:00Z'::timestamptz + id * interval '1 day'`); err != nil {
		t.Fatal(err)
	}
	keys, _ := cfg.AuditKeyring()
	signer, _ := audit.ParseSigningKey(signing)
	ch := &audit.Chainer{Store: st, Keys: keys, Signer: signer, CheckpointDir: cfg.AuditCheckpointDir, Batch: 10, CheckpointRows: 10}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n, err := ch.Pass(ctx); err != nil || n == 0 && time.Now().After(deadline) {
			t.Fatalf("chain: %v", err)
		}
		if b, _ := st.AuditBacklog(ctx, "t1", audit.Head{}); b.Rows == 0 {
			break
		}
	}

	verify := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := realMain(ctx, append([]string{"audit", "verify"}, args...), &out, io.Discard)
		return out.String(), err
	}
	if _, err := verify(); err == nil || !strings.Contains(err.Error(), "--public-key") {
		t.Fatalf("verify without a public key: %v", err)
	}
	if out, err := verify("--public-key", pubFile); err != nil ||
		!strings.Contains(out, "tenant t1: 30 chained rows, 3 checkpoints in the database, 3 in the checkpoint file: OK") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	excerpt := filepath.Join(t.TempDir(), "excerpt.jsonl")
	if err := realMain(ctx, []string{"audit", "export", "--tenant", "t1", "--from", "2026-03-12T00:00:00Z", "--to", "2026-03-15T00:00:00Z", "--out", excerpt}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out, err := verify("--public-key", pubFile, "--excerpt", excerpt); err != nil ||
		!strings.Contains(out, "seq 11-20, 10 rows (3 in the range asked for), anchored in signed checkpoints at both ends: OK") {
		t.Fatalf("verify --excerpt: %v\n%s", err, out)
	}

	var id int64
	if err := owner.QueryRow(ctx, `SELECT audit_id FROM audit_chain WHERE seq = 7`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `UPDATE audit_log SET subject_id = 'other' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	out2, err := verify("--public-key", pubFile)
	if err == nil || !strings.Contains(out2, "FAIL at seq 7 (audit row "+strconv.FormatInt(id, 10)+"): the row does not match its hash (edited row)") {
		t.Fatalf("verify after an edit: %v\n%s", err, out2)
	}
}
