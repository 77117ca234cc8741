package store

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/seal"
)

// testChain is a chainer and a verifier with keys of their own.
type testChain struct {
	s        *Store
	chainer  *audit.Chainer
	verifier *audit.Verifier
}

func newTestChain(t testing.TB, s *Store) *testChain {
	t.Helper()
	keys, err := audit.ParseKeys("a1:"+seal.NewRandomKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.ParseSigningKey("s1:" + seal.NewRandomKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.ParsePublicKeys(signer.PublicKeyLine())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &testChain{s: s,
		chainer:  &audit.Chainer{Store: s, Keys: keys, Signer: signer, CheckpointDir: dir},
		verifier: &audit.Verifier{Store: s, Keys: keys, PublicKeys: pub, CheckpointDir: dir}}
}

// verify chains every committed audit row of the tenant, then verifies
// the chain.
func (c *testChain) verify(t testing.TB, tenant string) audit.Report {
	t.Helper()
	ctx := context.Background()
	// Another database's open transaction may hold the horizon back a moment.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := c.chainer.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		b, err := c.s.AuditBacklog(ctx, tenant, audit.Head{})
		if err != nil {
			t.Fatal(err)
		}
		if b.Rows == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d audit rows still not chained", b.Rows)
		}
	}
	rep, err := c.verifier.Verify(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// chainAndVerify chains and verifies a tenant's audit rows with new keys.
func chainAndVerify(t testing.TB, s *Store, tenant string) audit.Report {
	t.Helper()
	return newTestChain(t, s).verify(t, tenant)
}

func TestAuditRowsChainAndEditsAreFound(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := s.Audit(ctx, AuditRecord{TenantID: "t1", Actor: "test", Action: "x", SubjectType: "n", SubjectID: "1",
			Detail: map[string]any{"i": i, "reasons": []string{"b", "a"}}}); err != nil {
			t.Fatal(err)
		}
	}
	err := s.InTx(ctx, func(tx *Store) error {
		return tx.AuditMany(ctx, []AuditRecord{
			{TenantID: "t1", Actor: "test", Action: "y", SubjectType: "n", SubjectID: "2"},
			{TenantID: "t1", Actor: "test", Action: "y", SubjectType: "n", SubjectID: "3", Detail: map[string]any{"z": 1, "a": "é<&>"}},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// An audit row of a transaction that rolls back never was.
	rollback := errors.New("roll back")
	if err := s.InTx(ctx, func(tx *Store) error {
		if err := tx.Audit(ctx, AuditRecord{TenantID: "t1", Actor: "test", Action: "gone", SubjectType: "n", SubjectID: "4"}); err != nil {
			return err
		}
		return rollback
	}); !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	chain := newTestChain(t, s)
	if rep := chain.verify(t, "t1"); !rep.OK() || rep.Rows != 5 {
		t.Fatalf("verify: %s", rep)
	}
	var third int64
	s.q(ctx).Raw(`SELECT audit_id FROM audit_chain WHERE tenant_id = 't1' AND seq = 3`).Scan(&third)
	if err := s.db.Exec(`UPDATE audit_log SET detail = '{"i": 99}' WHERE id = ?`, third).Error; err != nil {
		t.Fatal(err)
	}
	rep := chain.verify(t, "t1")
	if rep.OK() || rep.Problem.Seq != 3 || rep.Problem.AuditID != third {
		t.Fatalf("a changed audit row went unnoticed or misplaced: %s", rep)
	}
}

// BenchmarkAuditConcurrent measures business transactions that each write
// the six audit rows a delivered notice writes, from many goroutines of one
// tenant at once: what an audit lock would serialise.
func BenchmarkAuditConcurrent(b *testing.B) {
	s := mustStore(b)
	ctx := context.Background()
	b.SetParallelism(8) // 8 × GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			err := s.InTx(ctx, func(tx *Store) error {
				for step := range 6 {
					if err := tx.Audit(ctx, AuditRecord{TenantID: "t1", Actor: "bench", Action: "notice.step",
						SubjectType: "notice", SubjectID: strconv.Itoa(i), Detail: map[string]any{"step": step}}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*6)/b.Elapsed().Seconds(), "rows/s")
}

func TestAuditChainLagCountsUnchainedRows(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	lag := func() int64 {
		t.Helper()
		n, err := s.AuditChainLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	base := lag() // whatever the migrations' seed wrote
	for i := 0; i < 3; i++ {
		if err := s.Audit(ctx, AuditRecord{TenantID: "t1", Actor: "test", Action: "x", SubjectType: "n", SubjectID: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := lag(); got != base+3 {
		t.Fatalf("lag after 3 rows: %d, want %d", got, base+3)
	}
	chain := newTestChain(t, s)
	if rep := chain.verify(t, "t1"); !rep.OK() {
		t.Fatalf("verify: %s", rep)
	}
	if got := lag(); got != base {
		t.Fatalf("lag once chained: %d, want %d", got, base)
	}
	if err := s.Audit(ctx, AuditRecord{TenantID: "t1", Actor: "test", Action: "x", SubjectType: "n", SubjectID: "9"}); err != nil {
		t.Fatal(err)
	}
	if got := lag(); got != base+1 {
		t.Fatalf("lag after one more row: %d, want %d", got, base+1)
	}
}
