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
	LostEvents(ctx context.Context, lostAfter time.Duration, limit int) ([]intake.OutboxItem, error)
}

// Enqueuer hands an event or a fetch to the queue.
type Enqueuer interface {
	EnqueueEvent(ctx context.Context, tenantID string, eventID int64) error
	EnqueueFetch(ctx context.Context, tenantID string, fetchID int64) error
}

// Reconciler enqueues outbox rows that intake could not hand to Redis (Redis
// down, process killed between commit and enqueue).
type Reconciler struct {
	Store    OutboxStore
	Queue    Enqueuer
	Log      *slog.Logger
	Interval time.Duration // how often to look; default 5s
	MinAge   time.Duration // leave younger rows to the request that wrote them; default 2s
	// LostAfter: an event handed to the queue this long ago and not yet
	// processed is enqueued again (its task id makes that a no-op while
	// Redis still holds it); default 1 min.
	LostAfter time.Duration
	Batch     int
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
	lost, err := r.requeueLost(ctx, batch)
	if err != nil && r.Log != nil {
		// The outbox below does not depend on it.
		r.Log.Warn("looking for lost events failed", "err", err)
	}
	for {
		rows, err := r.Store.PendingOutbox(ctx, minAge, batch)
		if err != nil || len(rows) == 0 {
			return total + lost, err
		}
		var done []int64
		for _, row := range rows {
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var err error
			switch {
			case row.EventID != nil:
				err = r.Queue.EnqueueEvent(qctx, row.TenantID, *row.EventID)
			case row.FetchID != nil:
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

// requeueLost enqueues again events Redis accepted and then lost.
func (r *Reconciler) requeueLost(ctx context.Context, batch int) (int, error) {
	lostAfter := r.LostAfter
	if lostAfter <= 0 {
		lostAfter = time.Minute
	}
	rows, err := r.Store.LostEvents(ctx, lostAfter, batch)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	var done []int64
	for _, row := range rows {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.Queue.EnqueueEvent(qctx, row.TenantID, *row.EventID)
		cancel()
		if err != nil {
			break // Redis down: the next pass tries again
		}
		done = append(done, row.ID)
	}
	if err := r.Store.MarkEnqueued(ctx, done...); err != nil {
		return 0, err
	}
	if len(done) > 0 && r.Log != nil {
		r.Log.Warn("reconciler enqueued again events not processed long after their hand-over (a no-op for any still queued)", "count", len(done))
	}
	return len(done), nil
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
