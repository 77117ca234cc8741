package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/tidings-health/tidings/journey"
)

// ScheduleStore is what the scheduler needs from storage.
type ScheduleStore interface {
	PromotableRuns(ctx context.Context, now time.Time, horizon time.Duration, limit int) ([]journey.Wake, error)
	OverdueRuns(ctx context.Context, now time.Time, slack time.Duration, after *journey.Wake, limit int) ([]journey.Wake, error)
	MarkPromoted(ctx context.Context, wakes []journey.Wake) error
	WithSchedulerLock(ctx context.Context, fn func() error) (bool, error)
}

// Scheduler moves wake-ups from Postgres into Asynq as they come within the
// horizon, so a million runs waiting for next month are not a million Redis
// entries; and it re-enqueues wake-ups that are overdue, which Redis lost
// (FLUSHALL, a failover without persistence). Both are idempotent: a
// wake-up's task id is derived from run, step and seq.
type Scheduler struct {
	Store    ScheduleStore
	Runs     *journey.Engine // queue, clock and horizon
	Log      *slog.Logger
	Interval time.Duration // default 5s
	// Slack is how overdue a promoted wake-up must be before it counts as
	// lost; default 1 min (a busy queue delays wake-ups without losing them).
	Slack time.Duration
	Batch int // default 1000

	restoreFrom *journey.Wake // where the next restore page starts (one page a pass)
}

// Run schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if rep, err := s.Once(ctx); err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.Warn("scheduler pass failed", "err", err)
		} else if rep.Restored > 0 && s.Log != nil {
			s.Log.Warn("scheduler restored wake-ups the queue had lost", "count", rep.Restored)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ScheduleReport is what one pass did.
type ScheduleReport struct{ Promoted, Restored int }

// Once makes one pass, in one worker replica at a time (the others skip it).
func (s *Scheduler) Once(ctx context.Context) (ScheduleReport, error) {
	var rep ScheduleReport
	_, err := s.Store.WithSchedulerLock(ctx, func() (err error) {
		rep, err = s.pass(ctx)
		return err
	})
	return rep, err
}

func (s *Scheduler) pass(ctx context.Context) (ScheduleReport, error) {
	var rep ScheduleReport
	batch := s.Batch
	if batch <= 0 {
		batch = 1000
	}
	slack := s.Slack
	if slack <= 0 {
		slack = time.Minute
	}
	now := s.Runs.Now()
	for {
		wakes, err := s.Store.PromotableRuns(ctx, now, s.Runs.WakeHorizon(), batch)
		if err != nil {
			return rep, err
		}
		done, _, err := s.hand(ctx, wakes, now)
		rep.Promoted += len(done)
		if err != nil || len(wakes) < batch {
			return s.restore(ctx, rep, now, slack, batch, err)
		}
	}
}

func (s *Scheduler) restore(ctx context.Context, rep ScheduleReport, now time.Time, slack time.Duration, batch int, err error) (ScheduleReport, error) {
	if err != nil {
		return rep, err
	}
	// One page a pass, resuming where the last pass stopped: a backlog of
	// queued-but-late wake-ups is walked through, not rescanned every pass.
	lost, err := s.Store.OverdueRuns(ctx, now, slack, s.restoreFrom, batch)
	if err != nil {
		return rep, err
	}
	s.restoreFrom = nil
	if len(lost) == batch {
		s.restoreFrom = &lost[len(lost)-1]
	}
	_, requeued, err := s.hand(ctx, lost, now)
	rep.Restored += requeued
	return rep, err
}

// hand enqueues wake-ups and marks those the queue holds; requeued counts
// the ones it did not hold already.
func (s *Scheduler) hand(ctx context.Context, wakes []journey.Wake, now time.Time) (done []journey.Wake, requeued int, err error) {
	done = make([]journey.Wake, 0, len(wakes))
	for _, w := range wakes {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		queued, qerr := s.Runs.Queue.EnqueueRun(qctx, w, w.DueAt.Sub(now))
		cancel()
		if qerr != nil {
			err = qerr // Redis down: stop, the next pass tries again
			break
		}
		if queued {
			requeued++
		}
		done = append(done, w) // marking an already promoted one writes nothing
	}
	if merr := s.Store.MarkPromoted(ctx, done); merr != nil {
		return done, requeued, merr
	}
	return done, requeued, err
}
