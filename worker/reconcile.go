package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/tidings-health/tidings/intake"
)

// OutboxStore is what the reconciler needs.
type OutboxStore interface {
	PendingOutbox(ctx context.Context, minAge time.Duration, limit int) ([]intake.OutboxItem, error)
	MarkEnqueued(ctx context.Context, outboxIDs ...int64) error
	MarkEnqueueFailed(ctx context.Context, outboxID int64, reason string) error
}

// Enqueuer hands a fetch to the queue.
type Enqueuer interface {
	EnqueueFetch(ctx context.Context, tenantID string, fetchID int64) error
}

// FetchStore is what the reconciler needs to re-drive fetches whose task
// was lost.
type FetchStore interface {
	RedriveFetches(ctx context.Context, lease time.Duration, limit int) ([]intake.Fetch, error)
}

// DefaultFetchLease is how long a fetch may stay pending after it was
// handed to the queue before the reconciler enqueues it again (a no-op
// while its task is still queued).
const DefaultFetchLease = time.Minute

// DeliveryStore is what the reconciler needs to find attempts that never
// finished.
type DeliveryStore interface {
	MarkUnfinishedUnknown(ctx context.Context, lease time.Duration, limit int) (int, error)
}

// DefaultSendingLease is how long a delivery may stay "sending" before the
// reconciler takes its attempt for dead: far longer than an SMTP
// transaction may take (a few steps of at most the SMTP timeout each).
const DefaultSendingLease = 10 * time.Minute

// Reconciler enqueues the fetches intake could not hand to Redis (Redis
// down, process killed between commit and enqueue), and enqueues again the
// fetches still pending a lease after they were handed over (their task
// may have been lost from Redis; a ping's fetch would otherwise keep
// every later ping answered "duplicate"). Events need none of this:
// workers claim them from Postgres. It also marks unknown the
// deliveries an attempt left "sending" past their lease (the process died
// mid-send): whether the relay took them cannot be known, so they are not
// sent again.
type Reconciler struct {
	Store    OutboxStore
	Queue    Enqueuer
	Log      *slog.Logger
	Interval time.Duration // how often to look; default 5s
	MinAge   time.Duration // leave younger rows to the request that wrote them; default 2s
	Batch    int
	// Deliveries, when set, is where unfinished deliveries are looked for.
	Deliveries   DeliveryStore
	SendingLease time.Duration // default DefaultSendingLease
	// Fetches, when set, is where fetches whose task may be lost are
	// looked for.
	Fetches    FetchStore
	FetchLease time.Duration // default DefaultFetchLease
}

// Run reconciles until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := r.Once(ctx); err != nil && ctx.Err() == nil && r.Log != nil {
			r.Log.Warn("reconcile pass failed", "err", err)
		}
		if _, err := r.RedriveFetches(ctx); err != nil && ctx.Err() == nil && r.Log != nil {
			r.Log.Warn("re-driving pending fetches failed", "err", err)
		}
		if _, err := r.MarkUnfinished(ctx); err != nil && ctx.Err() == nil && r.Log != nil {
			r.Log.Warn("looking for unfinished deliveries failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once makes one pass and reports how many rows it enqueued.
func (r *Reconciler) Once(ctx context.Context) (int, error) {
	minAge := r.MinAge
	if minAge <= 0 {
		minAge = 2 * time.Second
	}
	batch := r.Batch
	if batch <= 0 {
		batch = 500
	}
	total := 0
	for {
		rows, err := r.Store.PendingOutbox(ctx, minAge, batch)
		if err != nil || len(rows) == 0 {
			return total, err
		}
		var done []int64
		for _, row := range rows {
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var err error
			if row.FetchID != nil {
				err = r.Queue.EnqueueFetch(qctx, row.TenantID, *row.FetchID)
			}
			cancel()
			if err != nil {
				_ = r.Store.MarkEnqueueFailed(ctx, row.ID, err.Error())
				if mErr := r.Store.MarkEnqueued(ctx, done...); mErr != nil {
					return total, mErr
				}
				return total + len(done), err
			}
			done = append(done, row.ID)
		}
		if err := r.Store.MarkEnqueued(ctx, done...); err != nil {
			return total, err
		}
		total += len(done)
		if r.Log != nil {
			r.Log.Info("reconciler enqueued outbox rows", "count", len(done))
		}
		if len(rows) < batch {
			return total, nil
		}
	}
}

// RedriveFetches enqueues again the fetches pending past the lease and
// reports how many it handed to the queue.
func (r *Reconciler) RedriveFetches(ctx context.Context) (int, error) {
	if r.Fetches == nil {
		return 0, nil
	}
	lease := r.FetchLease
	if lease <= 0 {
		lease = DefaultFetchLease
	}
	fs, err := r.Fetches.RedriveFetches(ctx, lease, 500)
	if err != nil {
		return 0, err
	}
	for i, f := range fs {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.Queue.EnqueueFetch(qctx, f.TenantID, f.ID)
		cancel()
		if err != nil {
			// The rest wait for their next lease.
			return i, err
		}
	}
	if len(fs) > 0 && r.Log != nil {
		r.Log.Info("reconciler re-drove pending fetches", "count", len(fs))
	}
	return len(fs), nil
}

// MarkUnfinished marks unknown the deliveries left "sending" past the
// lease and reports how many.
func (r *Reconciler) MarkUnfinished(ctx context.Context) (int, error) {
	if r.Deliveries == nil {
		return 0, nil
	}
	lease := r.SendingLease
	if lease <= 0 {
		lease = DefaultSendingLease
	}
	n, err := r.Deliveries.MarkUnfinishedUnknown(ctx, lease, 500)
	if n > 0 && r.Log != nil {
		r.Log.Warn("deliveries left sending past their lease are now unknown; resolve them with tidings deliveries", "count", n)
	}
	return n, err
}

// Monitor runs gap detection and recovery and silence detection periodically.
type Monitor struct {
	Fetcher  *intake.Fetcher
	Log      *slog.Logger
	Interval time.Duration // default 30s
	Settle   time.Duration // how long a missing event number may be late before it is a gap; default 1 min
}

// Run monitors until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	interval := m.Interval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	settle := m.Settle
	if settle <= 0 {
		settle = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := m.Fetcher.Monitor(ctx, settle)
		if err != nil && ctx.Err() == nil && m.Log != nil {
			m.Log.Warn("monitor pass failed", "err", err)
		} else if (rep.NewGaps > 0 || rep.Recovered > 0 || rep.Silent > 0) && m.Log != nil {
			m.Log.Info("monitor pass", "new_gaps", rep.NewGaps, "recovered", rep.Recovered, "newly_silent", rep.Silent)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
