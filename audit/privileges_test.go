package audit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tidings-health/tidings/testenv"
)

// The service's role (a LOGIN role granted tidings_app) writes and reads
// audit rows and runs the chainer, but can neither change nor remove
// anything of the audit tables, nor choose a row's xid; it may revoke an API
// key but not change its tenant, role or secret, nor delete it.
func TestAppRoleCannotRewriteTheAuditLog(t *testing.T) {
	ownerURL := testenv.NewDB(t)
	ctx := context.Background()
	appURL := testenv.AppRoleURL(t, ownerURL)

	e := newEnvAt(t, appURL, ownerURL) // creates tenant t1 as the app
	e.insert(t, 3)
	e.chainAll(t, e.chainer())
	if rep := e.verify(t); !rep.OK() || rep.Rows != 3 || rep.DBCheckpoints != 1 {
		t.Fatal(rep)
	}

	app, err := pgx.Connect(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close(context.Background()) })
	for _, sql := range []string{
		`UPDATE audit_log SET actor = 'x'`,
		`DELETE FROM audit_log`,
		`TRUNCATE audit_log CASCADE`,
		`UPDATE audit_chain SET key_id = 'x'`,
		`DELETE FROM audit_chain`,
		`TRUNCATE audit_chain`,
		`UPDATE audit_checkpoints SET size = size + 1`,
		`DELETE FROM audit_checkpoints`,
		`TRUNCATE audit_checkpoints`,
		`INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, xid) VALUES ('t1', 'a', 'b', 'c', 'd', '1')`,
		`INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, at) VALUES ('t1', 'a', 'b', 'c', 'd', now() - interval '1 year')`,
		// API keys: revocable, never re-scoped, re-keyed or deleted.
		`UPDATE api_keys SET role = 'admin'`,
		`UPDATE api_keys SET tenant_id = 't1'`,
		`UPDATE api_keys SET secret_hash = secret_hash`,
		`DELETE FROM api_keys`,
		`TRUNCATE api_keys`,
	} {
		_, err := app.Exec(ctx, sql)
		var pg *pgconn.PgError
		if !errors.As(err, &pg) || pg.Code != "42501" {
			t.Errorf("%s: %v, want permission denied", sql, err)
		}
	}
	// The rest of the schema stays the service's to change.
	if _, err := app.Exec(ctx, `UPDATE tenants SET name = 'Renamed' WHERE id = 't1'`); err != nil {
		t.Errorf("update a tenant: %v", err)
	}
	if _, err := app.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE tenant_id = 't1'`); err != nil {
		t.Errorf("revoke a key: %v", err)
	}
	if rep := e.verify(t); !rep.OK() || rep.Rows != 3 {
		t.Fatal(rep)
	}
}
