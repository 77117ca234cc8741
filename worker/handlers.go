package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
)

// Handlers are the task handlers: each opens its task's sealed payload and
// calls the core, and turns the core's outcome into Asynq's (done, retry,
// or skip retrying). (Events come through the Claimer, not Redis.)
type Handlers struct {
	Journeys *journey.Engine
	// Fetcher performs fetches (id-only and empty notifications, pings);
	// nil when no FHIR source is configured anywhere.
	Fetcher *intake.Fetcher
	Keys    *seal.Keyring
	Log     *slog.Logger
}

// HandleRunTask is the Asynq handler for TypeRunWake.
func (h *Handlers) HandleRunTask(ctx context.Context, t *asynq.Task) error {
	pl, err := openTask(h.Keys, t)
	if err != nil {
		return fmt.Errorf("open task payload: %w: %w", err, asynq.SkipRetry)
	}
	err = skipIfPermanent(h.Journeys.Advance(ctx, pl.TenantID, pl.ID, pl.Seq))
	if err != nil && !errors.Is(err, asynq.SkipRetry) && lastTry(ctx) {
		// Out of retries on the run's own bookkeeping (not its actions,
		// which back off in Postgres): end it visibly rather than let it be
		// replaced and fail again for ever.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if eerr := h.Journeys.EndRun(wctx, pl.TenantID, pl.ID, pl.Seq, "error"); eerr != nil && h.Log != nil {
			h.Log.Error("could not end a run that ran out of retries", "run_id", pl.ID, "err", eerr)
		}
	}
	return err
}

// HandleFetchTask is the Asynq handler for TypeFetch.
func (h *Handlers) HandleFetchTask(ctx context.Context, t *asynq.Task) error {
	ft, err := openTask(h.Keys, t)
	if err != nil {
		return fmt.Errorf("open task payload: %w: %w", err, asynq.SkipRetry)
	}
	err = h.Fetcher.ProcessFetch(ctx, ft.TenantID, ft.ID)
	if errors.Is(err, intake.ErrPermanent) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if err != nil && lastTry(ctx) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if gerr := h.Fetcher.GiveUp(wctx, ft.ID, err); gerr != nil && h.Log != nil {
			h.Log.Error("could not record a fetch that ran out of retries", "fetch_id", ft.ID, "err", gerr)
		}
	}
	return err
}

// skipIfPermanent tells Asynq not to retry what the core says retrying
// cannot change.
func skipIfPermanent(err error) error {
	if errors.Is(err, journey.ErrPermanent) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

func lastTry(ctx context.Context) bool {
	retried, ok := asynq.GetRetryCount(ctx)
	max, ok2 := asynq.GetMaxRetry(ctx)
	return ok && ok2 && retried >= max
}
