package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/metrics"
)

// ClaimStore is what claiming events needs from storage.
type ClaimStore interface {
	ClaimEvents(ctx context.Context, limit int, lease time.Duration) ([]*journey.Event, error)
	RetryEvent(ctx context.Context, eventID int64, retryAt time.Time, errText string) error
	MarkEventsProcessed(ctx context.Context, eventIDs []int64) error
	Listen(ctx context.Context, channel string) <-chan struct{}
}

// Defaults of a Claimer.
const (
	DefaultClaimBatch   = 50
	DefaultClaimWorkers = 2
	DefaultClaimLease   = 2 * time.Minute
	DefaultMaxAttempts  = 20
	defaultClaimPoll    = time.Second
	eventsChannel       = "tidings_events"
	maxEventRetryDelay  = 30 * time.Minute
	firstEventRetryWait = time.Second
)

// Claimer takes events from Postgres in batches and has the journey core
// process them: no queue stands between a stored event and its worker, so
// an event never depends on Redis, and one whose worker died is claimed
// again when its lease passes. It wakes when intake commits events (LISTEN)
// and looks at least every second.
type Claimer struct {
	Store    ClaimStore
	Journeys *journey.Engine
	Log      *slog.Logger
	// Batch is how many events one claim takes (DefaultClaimBatch).
	Batch int
	// Workers is how many claimed batches are processed at once
	// (DefaultClaimWorkers). A batch spends much of its time waiting (on
	// Postgres, on the relay), so with one batch at a time the cores sat a
	// third idle once intake was done; two batches of 50 overlap those
	// waits, holding as many events in memory as one batch of 100 did.
	// Batches in flight at once behave as replicas' do: claims are
	// disjoint, and a subject's versions in two batches are reconciled by
	// event id.
	Workers int
	// Lease is how long a claim holds (DefaultClaimLease); longer than a
	// batch takes.
	Lease time.Duration
	// MaxAttempts is how often an event is tried before it is given up
	// (DefaultMaxAttempts); failures back off from 1 s, doubling, to 30 min.
	MaxAttempts int
	// Poll is how often to look without a signal (1 s).
	Poll time.Duration
	// Metrics counts the events processed, per batch; nil counts nothing.
	Metrics *metrics.Metrics
}

// Run claims and processes events until ctx ends, then finishes the
// batches in hand.
func (c *Claimer) Run(ctx context.Context) {
	workers := c.Workers
	if workers <= 0 {
		workers = DefaultClaimWorkers
	}
	poll := c.Poll
	if poll <= 0 {
		poll = defaultClaimPoll
	}
	// Every signal wakes every worker: one that takes a full batch goes on
	// at once, and the other must not sleep until its tick meanwhile.
	wakes := make([]chan struct{}, workers)
	for i := range wakes {
		wakes[i] = make(chan struct{}, 1)
	}
	go func() {
		signals := c.Store.Listen(ctx, eventsChannel)
		for {
			select {
			case <-ctx.Done():
				return
			case <-signals:
			}
			for _, w := range wakes {
				select {
				case w <- struct{}{}:
				default:
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for _, wake := range wakes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(poll)
			defer t.Stop()
			for ctx.Err() == nil {
				n, err := c.Once(ctx)
				if err != nil && ctx.Err() == nil && c.Log != nil {
					c.Log.Warn("claiming events failed", "err", err)
				}
				if n >= c.batch() {
					continue // a full batch: more are likely waiting
				}
				select {
				case <-ctx.Done():
				case <-wake:
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
}

func (c *Claimer) batch() int {
	if c.Batch > 0 {
		return c.Batch
	}
	return DefaultClaimBatch
}

// Once claims one batch and processes it, and reports how many events it
// claimed. A batch in hand is finished even if ctx ends meanwhile.
func (c *Claimer) Once(ctx context.Context) (int, error) {
	lease := c.Lease
	if lease <= 0 {
		lease = DefaultClaimLease
	}
	events, err := c.Store.ClaimEvents(ctx, c.batch(), lease)
	if err != nil || len(events) == 0 {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lease)
	defer cancel()
	errs := c.Journeys.ProcessEvents(wctx, events)
	var done []int64
	retried, givenUp := 0, 0
	for i, ev := range events {
		err := errs[i]
		switch {
		case err == nil, errors.Is(err, journey.ErrPermanent):
			done = append(done, ev.ID)
		case ev.Attempts+1 >= c.maxAttempts():
			// Out of attempts: say so on the notice rather than leave it pending for ever.
			if gerr := c.Journeys.GiveUpEvent(wctx, ev.TenantID, ev.ID, err); gerr != nil && c.Log != nil {
				c.Log.Error("could not record an event that ran out of attempts", "event_id", ev.ID, "err", gerr)
			}
			done = append(done, ev.ID)
			givenUp++
		default:
			retried++
			retryAt := time.Now().Add(retryDelay(ev.Attempts))
			if rerr := c.Store.RetryEvent(wctx, ev.ID, retryAt, err.Error()); rerr != nil && c.Log != nil {
				c.Log.Warn("could not record a failed attempt; the event is claimed again when its lease passes", "event_id", ev.ID, "err", rerr)
			}
			if c.Log != nil {
				c.Log.Warn("event failed; retrying later", "event_id", ev.ID, "attempt", ev.Attempts+1, "err", err)
			}
		}
	}
	c.Metrics.EventsProcessed(metrics.EventDone, len(done)-givenUp)
	c.Metrics.EventsProcessed(metrics.EventGivenUp, givenUp)
	c.Metrics.EventsProcessed(metrics.EventRetry, retried)
	if err := c.Store.MarkEventsProcessed(wctx, done); err != nil {
		// Their claims lapse and they are processed again: harmless, runs
		// are unique per (workflow, subject).
		return len(events), err
	}
	return len(events), nil
}

func (c *Claimer) maxAttempts() int {
	if c.MaxAttempts > 0 {
		return c.MaxAttempts
	}
	return DefaultMaxAttempts
}

// retryDelay backs off from 1 s, doubling, to 30 minutes.
func retryDelay(attempts int) time.Duration {
	return min(firstEventRetryWait<<min(attempts, 11), maxEventRetryDelay)
}
