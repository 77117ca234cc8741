package store

import (
	"context"
	"errors"
	"fmt"
)

// LockFamily says what an advisory lock is for. Each purpose has its own
// family, and a lock's key is (family, hashtext(key)) in PostgreSQL's
// two-key form, so keys of different purposes never collide, whatever their
// names hash to.
type LockFamily int32

// The lock families. Never renumber one: replicas of different versions
// must agree on them.
const (
	LockScheduler          LockFamily = 1 // the wake-up scheduler, one replica at a time
	LockGapMonitor         LockFamily = 2 // gap recovery and the silence check
	LockAppointmentSubject LockFamily = 3 // one appointment's events, in order
	LockAuditChain         LockFamily = 4 // one tenant's audit chain
)

// TryLock runs fn while holding the advisory lock (family, key) on a
// connection of its own; it reports false without running fn when another
// session holds it. The lock ends when fn returns.
func (s *Store) TryLock(ctx context.Context, family LockFamily, key string, fn func() error) (bool, error) {
	return s.withSessionLock(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, `SELECT pg_advisory_unlock($1, hashtext($2))`,
		[]any{int32(family), key}, fn)
}

// withSessionLock runs fn while a session-level advisory lock, taken with
// try and released with unlock, is held on a connection of its own.
func (s *Store) withSessionLock(ctx context.Context, try, unlock string, args []any, fn func() error) (bool, error) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return false, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var got bool
	if err := conn.QueryRowContext(ctx, try, args...).Scan(&got); err != nil || !got {
		return false, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), unlock, args...)
	return true, fn()
}

// TryXactLock takes the advisory lock (family, key) until the end of the
// transaction s belongs to (a store inside InTx); it reports false at once
// when another transaction or session holds it.
func (s *Store) TryXactLock(ctx context.Context, family LockFamily, key string) (bool, error) {
	if !s.inTx {
		return false, errors.New("TryXactLock needs a transaction (call it inside InTx)")
	}
	var got bool
	if err := s.q(ctx).Raw(`SELECT pg_try_advisory_xact_lock(?, hashtext(?))`, int32(family), key).Scan(&got).Error; err != nil {
		return false, fmt.Errorf("advisory lock: %w", err)
	}
	return got, nil
}
