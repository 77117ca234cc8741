package migrations_test

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, nil) }

// migratedTo is a new database migrated up to version, with its provider.
func migratedTo(t *testing.T, version int64) (string, *goose.Provider, *sql.DB) {
	t.Helper()
	dbURL := testenv.NewDB(t) // empty
	p, db, err := migrations.Provider(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := p.UpTo(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return dbURL, p, db
}

// Audit rows written before the chain existed (unkeyed hashes, version 5)
// are chained like new ones after the upgrade, and the chain migration
// rolls back and applies again.
func TestAuditRowsBeforeTheChainGetChained(t *testing.T) {
	ctx := context.Background()
	dbURL, p, db := migratedTo(t, 5)
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

// Migration 15 gives the runs and bundle contacts stored before it the
// source their events came from, drops a bundle contact whose source
// cannot be known (its tenant has several), keeps the API's, and rolls
// back and applies again.
func TestSourceScopeBackfill(t *testing.T) {
	ctx := context.Background()
	_, p, db := migratedTo(t, 16)
	for _, sql := range []string{
		`INSERT INTO tenants (id, name) VALUES ('t1', 'One source'), ('t2', 'Two sources')`,
		`INSERT INTO fhir_sources (id, tenant_id, base_url, auth_type) VALUES ('ehr', 't1', 'https://ehr.example', 'none')`,
		`INSERT INTO subscriptions (id, tenant_id, secret_hash, source_id) VALUES ('s1', 't1', '\x00', 'ehr')`,
		`INSERT INTO subscriptions (id, tenant_id, secret_hash) VALUES ('s2', 't2', '\x00'), ('s3', 't2', '\x00')`,
		`INSERT INTO events (tenant_id, subscription_id, resource_type, resource_id, dedupe_key, resource_sealed)
			VALUES ('t1', 's1', 'Appointment', 'a1', 'k1', '\x00'), ('t2', 's3', 'Appointment', 'a1', 'k3', '\x00')`,
		`INSERT INTO workflows (tenant_id, id, version, trigger_key) VALUES ('t1', 'w', 1, 'event:appointment.booked'), ('t2', 'w', 1, 'event:appointment.booked')`,
		`INSERT INTO runs (tenant_id, workflow_id, workflow_version, subject, patient_index, event_id, status)
			SELECT tenant_id, 'w', 1, 'Appointment/a1', 'p', id, 'waiting' FROM events`,
		`INSERT INTO runs (tenant_id, workflow_id, workflow_version, subject, patient_index, status) VALUES ('t1', 'w', 1, 'patient:p', 'p', 'waiting')`,
		`INSERT INTO contacts (tenant_id, patient_index, source) VALUES ('t1', 'p', 'fhir'), ('t2', 'p', 'fhir'), ('t2', 'q', 'api')`,
	} {
		if _, err := db.ExecContext(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	rows := func(sql string) string {
		t.Helper()
		r, err := db.QueryContext(ctx, sql)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var out []string
		for r.Next() {
			var a, b string
			if err := r.Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			out = append(out, a+"="+b)
		}
		return strings.Join(out, " ")
	}
	if got := rows(`SELECT tenant_id || ':' || subject, source FROM runs ORDER BY id`); got != "t1:Appointment/a1=ehr t2:Appointment/a1=subscription/s3 t1:patient:p=" {
		t.Errorf("runs after the upgrade: %s", got)
	}
	if got := rows(`SELECT tenant_id || ':' || patient_index || ':' || source, fhir_source FROM contacts ORDER BY id`); got != "t1:p:fhir=ehr t2:q:api=" {
		t.Errorf("contacts after the upgrade: %s", got)
	}
	if _, err := p.DownTo(ctx, 14); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
}
