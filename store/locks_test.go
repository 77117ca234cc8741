package store

import (
	"context"
	"testing"
)

// Lock families keep purposes apart: the same key in two families are two
// locks; the same family and key is one, held by one session at a time.
func TestTryLockFamilies(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	ran := 0
	got, err := s.TryLock(ctx, LockScheduler, "k", func() error {
		ran++
		other, err := s.TryLock(ctx, LockGapMonitor, "k", func() error { ran++; return nil })
		if err != nil || !other {
			t.Errorf("another family's lock on the same key: %v %v", other, err)
		}
		same, err := s.TryLock(ctx, LockScheduler, "k", func() error { ran++; return nil })
		if err != nil || same {
			t.Errorf("the same lock was taken twice: %v %v", same, err)
		}
		// The transaction form meets the session form.
		return s.InTx(ctx, func(tx *Store) error {
			x, err := tx.TryXactLock(ctx, LockScheduler, "k")
			if err != nil || x {
				t.Errorf("TryXactLock while the session lock is held: %v %v", x, err)
			}
			return err
		})
	})
	if err != nil || !got || ran != 2 {
		t.Fatalf("TryLock: %v %v, ran %d", got, err, ran)
	}
	// Released when fn returned, and an xact lock ends with its transaction.
	for range 2 {
		if err := s.InTx(ctx, func(tx *Store) error {
			x, err := tx.TryXactLock(ctx, LockAuditChain, "t1")
			if err != nil || !x {
				t.Errorf("TryXactLock: %v %v", x, err)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.TryXactLock(ctx, LockAuditChain, "t1"); err == nil {
		t.Fatal("TryXactLock outside a transaction was accepted")
	}
}
