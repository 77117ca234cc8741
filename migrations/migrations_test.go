package migrations_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, nil) }

// Audit rows written before the chain existed (unkeyed hashes, version 5)
// are chained like new ones after the upgrade, and the chain migration
// rolls back and applies again.
func TestAuditRowsBeforeTheChainGetChained(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.NewDB(t) // empty
	p, db, err := migrations.Provider(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO tenants (id, name) VALUES ('t1', 'Tenant')`,
		`INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, detail, prev_hash, hash)
			SELECT 't1', 'worker', 'notice.sent', 'notice', g::text, jsonb_build_object('i', g), 'p' || g, 'h' || g
			FROM generate_series(1, 25) g`,
	} {
		if _, err := db.ExecContext(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	chainAndVerify := func(want int64) {
		t.Helper()
		kr, _ := seal.NewKeyring(map[string][]byte{"k": bytes.Repeat([]byte{1}, 32)}, "", bytes.Repeat([]byte{2}, 32))
		st, err := store.Open(ctx, dbURL, kr, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		keys, _ := audit.ParseKeys("c1:"+seal.NewRandomKey(), "")
		signer, _ := audit.ParseSigningKey("s1:" + seal.NewRandomKey())
		pub, _ := audit.ParsePublicKeys(signer.PublicKeyLine())
		ch := &audit.Chainer{Store: st, Keys: keys, Signer: signer, CheckpointDir: t.TempDir()}
		if n, err := ch.Pass(ctx); err != nil || int64(n) != want {
			t.Fatalf("chained %d rows, %v; want %d", n, err, want)
		}
		v := &audit.Verifier{Store: st, Keys: keys, PublicKeys: pub}
		if rep, err := v.Verify(ctx, "t1"); err != nil || !rep.OK() || rep.Rows != want {
			t.Fatalf("%s, %v", rep, err)
		}
	}
	chainAndVerify(25)

	if _, err := p.DownTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.GetDBVersion(ctx); v != 5 {
		t.Fatalf("version %d after going down to 5", v)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, prev_hash, hash)
		VALUES ('t1', 'worker', 'after.down', 'x', '1', 'p', 'h')`); err != nil {
		t.Fatalf("the old schema after down: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	chainAndVerify(26)
}
