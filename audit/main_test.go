package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}

// env is a migrated database with tenant t1, chain keys, a signing key and
// a checkpoint folder.
type env struct {
	url    string
	st     *store.Store
	keys   *audit.Keys
	signer *audit.Signer
	dir    string
	conn   *pgx.Conn // the owner's, for tampering
}

func newEnv(t testing.TB) *env {
	t.Helper()
	url := testenv.NewDB(t)
	return newEnvAt(t, url, url)
}

// newEnvAt opens the store at url (the service's role) on a database whose
// owner connects with ownerURL.
func newEnvAt(t testing.TB, url, ownerURL string) *env {
	t.Helper()
	e := &env{url: ownerURL, dir: t.TempDir()}
	kr, err := seal.NewKeyring(map[string][]byte{"k1": bytes.Repeat([]byte{1}, 32)}, "", bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if e.st, err = store.Open(context.Background(), url, kr, store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	if err := e.st.EnsureTenant(context.Background(), "t1", "Tenant"); err != nil {
		t.Fatal(err)
	}
	if e.keys, err = audit.ParseKeys("c1:"+seal.NewRandomKey(), ""); err != nil {
		t.Fatal(err)
	}
	if e.signer, err = audit.ParseSigningKey("s1:" + seal.NewRandomKey()); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) chainer() *audit.Chainer {
	return &audit.Chainer{Store: e.st, Keys: e.keys, Signer: e.signer, CheckpointDir: e.dir}
}

func (e *env) verifier(t testing.TB) *audit.Verifier {
	t.Helper()
	pub, err := audit.ParsePublicKeys(e.signer.PublicKeyLine())
	if err != nil {
		t.Fatal(err)
	}
	return &audit.Verifier{Store: e.st, Keys: e.keys, PublicKeys: pub, CheckpointDir: e.dir}
}

// insert audits n rows for tenant t1 in one transaction each.
func (e *env) insert(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		if err := e.st.Audit(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// insertMany audits n rows for tenant t1, a thousand a transaction.
func (e *env) insertMany(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < n; i += 1000 {
		var recs []store.AuditRecord
		for j := i; j < min(n, i+1000); j++ {
			recs = append(recs, record(j))
		}
		if err := e.st.AuditMany(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
}

func record(i int) store.AuditRecord {
	return store.AuditRecord{TenantID: "t1", Actor: "test", Action: "thing.done", SubjectType: "thing",
		SubjectID: fmt.Sprint(i), Detail: map[string]any{"i": i, "reasons": []string{"b", "a"}, "nested": map[string]any{"z": 1.5, "a": "<&>"}}}
}

// chainAll passes c until every committed row of t1 is chained.
func (e *env) chainAll(t testing.TB, c *audit.Chainer) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := c.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		if b := e.backlog(t); b.Rows == 0 {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%d rows still not chained", b.Rows)
		}
	}
}

func (e *env) backlog(t testing.TB) audit.Backlog {
	t.Helper()
	b, err := e.st.AuditBacklog(context.Background(), "t1", audit.Head{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) verify(t testing.TB) audit.Report {
	t.Helper()
	rep, err := e.verifier(t).Verify(context.Background(), "t1")
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// exec runs a statement as the database owner, on a connection of its own.
func (e *env) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	conn := e.owner(t)
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) int64s(t testing.TB, sql string, args ...any) []int64 {
	t.Helper()
	rows, err := e.owner(t).Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) owner(t testing.TB) *pgx.Conn {
	t.Helper()
	if e.conn == nil {
		conn, err := pgx.Connect(context.Background(), e.url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		e.conn = conn
	}
	return e.conn
}

// auditID is the audit row at seq.
func (e *env) auditID(t testing.TB, seq int64) int64 {
	t.Helper()
	ids := e.int64s(t, `SELECT audit_id FROM audit_chain WHERE tenant_id = 't1' AND seq = $1`, seq)
	if len(ids) != 1 {
		t.Fatalf("no link at seq %d", seq)
	}
	return ids[0]
}

func mustContain(t testing.TB, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%q does not say %q", s, p)
		}
	}
}
