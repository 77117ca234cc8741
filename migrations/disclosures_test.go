package migrations_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/tidings-health/tidings/testenv"
)

// The service's role records and reads disclosures and may re-seal a
// recipient (key rotation), but cannot change, date, move or remove one;
// the owner (the migrations' role, which tidings disclosures purge runs
// as) can remove old ones. Migration 19 rolls back and applies again.
func TestDisclosuresAreAppendOnlyForTheService(t *testing.T) {
	ctx := context.Background()
	ownerURL, p, _ := migratedTo(t, 23)
	appURL := testenv.AppRoleURL(t, ownerURL)
	owner, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close(context.Background()) })
	app, err := pgx.Connect(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	insert := `INSERT INTO disclosures (tenant_id, patient_index, disclosed_at, status, channel, ref, recipient_sealed, notice_type, detail, purpose, notice_id, delivery_id, attempt)
		VALUES ('t1', 'idx', now() - interval '7 years', 'sent', 'email', 'ref-0123456789abcdef', '\x01', 'eob', 'full', 'payment', 1, 1, 1)`
	if _, err := app.Exec(ctx, insert); err != nil {
		t.Fatalf("the service records a disclosure: %v", err)
	}
	var n int
	if err := app.QueryRow(ctx, `SELECT count(*) FROM disclosures`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the service reads disclosures: %d, %v", n, err)
	}
	if _, err := app.Exec(ctx, `UPDATE disclosures SET recipient_sealed = '\x02'`); err != nil {
		t.Errorf("the service re-seals a recipient: %v", err)
	}
	for _, sql := range []string{
		`UPDATE disclosures SET disclosed_at = now()`,
		`UPDATE disclosures SET patient_index = 'other'`,
		`UPDATE disclosures SET purpose = 'treatment'`,
		`DELETE FROM disclosures`,
		`TRUNCATE disclosures`,
	} {
		_, err := app.Exec(ctx, sql)
		var pg *pgconn.PgError
		if !errors.As(err, &pg) || pg.Code != "42501" {
			t.Errorf("%s: %v, want permission denied", sql, err)
		}
	}
	// The same delivery attempt is recorded once.
	if _, err := app.Exec(ctx, insert); err == nil {
		t.Error("a second row for the same delivery attempt was accepted")
	}
	app.Close(ctx)
	if tag, err := owner.Exec(ctx, `DELETE FROM disclosures WHERE disclosed_at < now() - interval '6 years'`); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("the owner purges: %v, %v", tag, err)
	}
	if _, err := p.DownTo(ctx, 18); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
}
