package store

import (
	"context"
	"strconv"
	"testing"
)

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
