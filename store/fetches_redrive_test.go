package store

import (
	"context"
	"testing"
	"time"

	"github.com/tidings-health/tidings/intake"
)

// A fetch still pending a lease after its task was handed to the queue is
// returned for a re-drive, once per lease; one not yet handed over (the
// outbox enqueues it), one within its lease and one done are not.
func TestRedriveFetchesAfterLease(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	fetch := func(key string) intake.StoredFetch {
		t.Helper()
		f, err := s.InsertFetch(ctx, intake.NewFetch{TenantID: "t1", SubscriptionID: "sub1", Kind: intake.FetchSearch, DedupeKey: key})
		if err != nil || f.Duplicate {
			t.Fatal(err, f.Duplicate)
		}
		return f
	}
	lost, fresh, notHanded, done := fetch("sub1|search|pending"), fetch("k-fresh|pending"), fetch("k-outbox|pending"), fetch("k-done|pending")
	if err := s.MarkEnqueued(ctx, lost.OutboxID, fresh.OutboxID, done.OutboxID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishFetch(ctx, intake.Fetch{ID: done.FetchID, TenantID: "t1", SubscriptionID: "sub1"}, intake.FetchDone, 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.q(ctx).Exec(`UPDATE fetches SET updated_at = now() - interval '2 minutes' WHERE id IN ?`,
		[]int64{lost.FetchID, notHanded.FetchID, done.FetchID}).Error; err != nil {
		t.Fatal(err)
	}
	got, err := s.RedriveFetches(ctx, time.Minute, 100)
	if err != nil || len(got) != 1 || got[0].ID != lost.FetchID || got[0].TenantID != "t1" {
		t.Fatalf("re-drive: %+v %v; want only fetch %d", got, err, lost.FetchID)
	}
	if again, err := s.RedriveFetches(ctx, time.Minute, 100); err != nil || len(again) != 0 {
		t.Fatalf("a second pass within the lease: %+v %v", again, err)
	}
}
