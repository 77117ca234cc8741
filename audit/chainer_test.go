package audit_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

// Rows from many overlapping transactions, some rolled back, one held open
// the whole time, are each chained exactly once, in (xid, id) order, while
// two chainers run: committed rows all, rolled-back rows none.
func TestChainIsExactUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// A transaction that audits first and commits last.
	long := make(chan struct{})
	longDone := make(chan error, 1)
	longStarted := make(chan struct{})
	go func() {
		longDone <- e.st.InTx(ctx, func(tx *store.Store) error {
			if err := tx.Audit(ctx, store.AuditRecord{TenantID: "t1", Actor: "test", Action: "long", SubjectType: "x", SubjectID: "long"}); err != nil {
				return err
			}
			close(longStarted)
			<-long
			return nil
		})
	}()
	<-longStarted

	stop := make(chan struct{})
	var chainers sync.WaitGroup
	t.Cleanup(func() { // before the store closes, also when the test fails
		closeOnce(stop)
		closeOnce(long)
		chainers.Wait()
	})
	for range 2 {
		c := e.chainer()
		c.Batch = 50
		chainers.Add(1)
		go func() {
			defer chainers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Pass(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}

	var committed atomic.Int64
	rollback := errors.New("roll back")
	var writers sync.WaitGroup
	for w := range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 40 {
				n := 1 + rand.IntN(4)
				back := (w+i)%5 == 0
				err := e.st.InTx(ctx, func(tx *store.Store) error {
					var recs []store.AuditRecord
					for j := range n {
						r := record(w*1000 + i*10 + j)
						if back {
							r.Action = "rolled.back"
						}
						recs = append(recs, r)
					}
					if err := tx.AuditMany(ctx, recs[:1]); err != nil {
						return err
					}
					time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // overlap
					if err := tx.AuditMany(ctx, recs[1:]); err != nil {
						return err
					}
					if back {
						return rollback
					}
					return nil
				})
				if err != nil && !errors.Is(err, rollback) {
					t.Error(err)
					return
				}
				if !back {
					committed.Add(int64(n))
				}
			}
		}()
	}
	writers.Wait()
	// The open transaction audited before every other began: while it is
	// open, no row may be chained, since its row comes first.
	time.Sleep(200 * time.Millisecond)
	if n := e.int64s(t, `SELECT count(*) FROM audit_chain`); n[0] != 0 {
		t.Fatalf("%d rows chained while a transaction before them was open", n[0])
	}
	closeOnce(long)
	if err := <-longDone; err != nil {
		t.Fatal(err)
	}
	committed.Add(1)
	for deadline := time.Now().Add(30 * time.Second); e.backlog(t).Rows > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows never chained", e.backlog(t).Rows)
		}
	}
	closeOnce(stop)
	chainers.Wait()

	rep := e.verify(t)
	if !rep.OK() || rep.Rows != committed.Load() {
		t.Fatalf("%s; want %d rows", rep, committed.Load())
	}
	if n := e.int64s(t, `SELECT count(*) FROM audit_log WHERE action = 'rolled.back'`); n[0] != 0 {
		t.Fatalf("%d rolled-back rows exist", n[0])
	}
	if n := e.int64s(t, `SELECT count(DISTINCT audit_id) FROM audit_chain`); n[0] != committed.Load() {
		t.Fatalf("%d distinct rows chained, want %d", n[0], committed.Load())
	}
	// Committed last, it is chained first: the order is the transactions'
	// ids, not commit times.
	if first := e.int64s(t, `SELECT count(*) FROM audit_log WHERE action = 'long' AND id = $1`, e.auditID(t, 1)); first[0] != 1 {
		t.Fatal("the long transaction's row is not at seq 1")
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// A chainer stopped after writing a batch and before committing it leaves
// nothing behind; a fresh one chains every row once.
func TestChainerRestartMidBatchLosesAndDuplicatesNothing(t *testing.T) {
	e := newEnv(t)
	e.insertMany(t, 250)
	ctx, cancel := context.WithCancel(context.Background())
	c := e.chainer()
	c.Batch = 100
	batches := 0
	audit.SetBeforeCommit(c, func(context.Context) {
		if batches++; batches == 2 {
			cancel() // the process dies between computing and committing
		}
	})
	n, err := c.Pass(ctx)
	if err == nil || n != 100 {
		t.Fatalf("stopped pass: %d rows, %v", n, err)
	}
	if got := e.int64s(t, `SELECT count(*) FROM audit_chain`); got[0] != 100 {
		t.Fatalf("%d rows chained after the stop, want the first batch's 100", got[0])
	}
	fresh := e.chainer()
	fresh.Batch = 100
	e.chainAll(t, fresh)
	if rep := e.verify(t); !rep.OK() || rep.Rows != 250 {
		t.Fatal(rep)
	}
	if got := e.int64s(t, `SELECT count(DISTINCT audit_id) FROM audit_chain`); got[0] != 250 {
		t.Fatalf("%d distinct rows chained", got[0])
	}
}

// Two chainers passing at the same moment extend one chain: every row once.
func TestTwoChainersMakeOneChain(t *testing.T) {
	e := newEnv(t)
	e.insertMany(t, 3000)
	start := make(chan struct{})
	counts := make(chan int, 2)
	for range 2 {
		c := e.chainer()
		c.Batch = 100
		go func() {
			<-start
			n, err := c.Pass(context.Background())
			if err != nil {
				t.Error(err)
			}
			counts <- n
		}()
	}
	close(start)
	a, b := <-counts, <-counts
	if a+b != 3000 {
		t.Fatalf("the chainers chained %d and %d rows, want 3000 together", a, b)
	}
	if rep := e.verify(t); !rep.OK() || rep.Rows != 3000 {
		t.Fatal(rep)
	}
}

// A checkpoint committed to the database but not to its file (the write
// failed) reaches the file on a later pass, with nothing new to chain.
func TestCheckpointFileCatchesUp(t *testing.T) {
	e := newEnv(t)
	e.insert(t, 5)
	path := audit.CheckpointFile(e.dir, "t1")
	if err := os.MkdirAll(path, 0o755); err != nil { // the file cannot be written
		t.Fatal(err)
	}
	c := e.chainer()
	if n, err := c.Pass(context.Background()); err != nil || n != 5 {
		t.Fatalf("pass: %d, %v", n, err)
	}
	if got := e.int64s(t, `SELECT size FROM audit_checkpoints`); len(got) != 1 || got[0] != 5 {
		t.Fatalf("database checkpoints %v, want one of size 5", got)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Pass(context.Background()); err != nil || n != 0 {
		t.Fatalf("second pass: %d, %v", n, err)
	}
	cps, err := audit.ReadCheckpointFile(path)
	if err != nil || len(cps) != 1 || cps[0].Size != 5 {
		t.Fatalf("file checkpoints %+v, %v", cps, err)
	}
	if rep := e.verify(t); !rep.OK() || rep.FileCheckpoints != 1 {
		t.Fatal(rep)
	}
}

// Rows chained under k1 keep verifying after k2 becomes the primary key.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t)
	k1 := "c1:" + seal.NewRandomKey()
	var err error
	if e.keys, err = audit.ParseKeys(k1, ""); err != nil {
		t.Fatal(err)
	}
	e.insert(t, 10)
	e.chainAll(t, e.chainer())
	both := k1 + ",c2:" + seal.NewRandomKey()
	if _, err := audit.ParseKeys(both, ""); err == nil {
		t.Fatal("two keys without a primary were accepted")
	}
	if e.keys, err = audit.ParseKeys(both, "c2"); err != nil {
		t.Fatal(err)
	}
	if printed := fmt.Sprintf("%v %v", e.keys, e.signer); strings.Contains(printed, k1[3:]) || !strings.Contains(printed, "[c1 c2] (primary c2) audit checkpoint signing key s1") {
		t.Fatalf("printed keys: %s", printed)
	}
	e.insert(t, 10)
	e.chainAll(t, e.chainer())
	if rep := e.verify(t); !rep.OK() || rep.Rows != 20 {
		t.Fatal(rep)
	}
	if got := e.int64s(t, `SELECT count(*) FROM audit_chain WHERE key_id = 'c2' AND seq > 10`); got[0] != 10 {
		t.Fatalf("%d rows chained with c2, want 10", got[0])
	}
	// Without k1 the old rows cannot be checked.
	e.keys, _ = audit.ParseKeys(strings.SplitN(both, ",", 2)[1], "")
	if rep := e.verify(t); rep.OK() || rep.Problem.Seq != 1 || !strings.Contains(rep.Problem.Reason, `unknown chain key "c1"`) {
		t.Fatal(rep)
	}
}

func BenchmarkChainer(b *testing.B) {
	e := newEnv(b)
	const rows = 20000
	for range b.N {
		b.StopTimer()
		e.insertMany(b, rows)
		c := e.chainer()
		b.StartTimer()
		for done := 0; done < rows; {
			n, err := c.Pass(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			done += n
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkChainerWithWriters has 16 writers audit six rows per
// transaction (as a delivered notice does), with and without a chainer
// running every 250ms: rows/s is how fast rows are written, lag-ms how long
// the chain took to catch up once the writing stopped.
func BenchmarkChainerWithWriters(b *testing.B) {
	for _, chain := range []bool{false, true} {
		b.Run(map[bool]string{false: "writers-only", true: "with-chainer"}[chain], func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			const perWriter, writers = 100, 16 // transactions
			const rows = perWriter * writers * 6
			var lag time.Duration
			for range b.N {
				runCtx, cancel := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() {
					defer close(done)
					if chain {
						c := e.chainer()
						c.Interval = 250 * time.Millisecond
						c.Run(runCtx)
					}
				}()
				var wg sync.WaitGroup
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range perWriter {
							err := e.st.InTx(ctx, func(tx *store.Store) error {
								for j := range 6 {
									if err := tx.Audit(ctx, record(w*10000+i*10+j)); err != nil {
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
					}()
				}
				wg.Wait()
				b.StopTimer()
				written := time.Now()
				for chain && e.backlog(b).Rows > 0 {
					time.Sleep(10 * time.Millisecond)
				}
				lag += time.Since(written)
				cancel()
				<-done
				b.StartTimer()
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(lag.Milliseconds())/float64(b.N), "lag-ms")
		})
	}
}
