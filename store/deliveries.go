package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/workflow"
)

// unfinishedReason is the error an unknown delivery records when an attempt
// never finished (the process died or lost its database between claiming
// it and recording the relay's answer).
const unfinishedReason = "the attempt never recorded the relay's answer (the process stopped mid-send); outcome unknown, not resent"

// stopsResend reports whether a run that ended with this outcome must not
// have its notice sent again: it was cancelled or its subject withdrawn,
// as opposed to having gone on past the send and ended normally.
func stopsResend(outcome string) bool {
	return outcome == workflow.OutcomeCancelled || outcome == "entered-in-error"
}

// markUnknown marks deliveries unknown with a reason and audits each as
// delivery.unknown by actor.
func (s *Store) markUnknown(ctx context.Context, ds []Delivery, actor, reason string) error {
	if len(ds) == 0 {
		return nil
	}
	ids := make([]int64, len(ds))
	audits := make([]AuditRecord, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
		audits[i] = AuditRecord{TenantID: d.TenantID, Actor: actor, Action: "delivery." + delivery.DeliveryUnknown,
			SubjectType: "delivery", SubjectID: strconv.FormatInt(d.ID, 10),
			Detail: map[string]any{"notice_id": d.NoticeID, "channel": d.Channel, "attempt": d.Attempts, "error": reason}}
	}
	if _, err := s.exec(ctx, `UPDATE deliveries SET status = 'unknown', error = $2, updated_at = now() WHERE id = ANY($1)`,
		ids, reason); err != nil {
		return fmt.Errorf("mark deliveries unknown: %w", err)
	}
	return s.AuditMany(ctx, audits)
}

// markEventsUnfinishedUnknown marks unknown the deliveries still "sending"
// of the notices of events that an earlier attempt handed to the relay
// (attempts > 0) and never finished. Those it claimed but never handed
// over (attempts 0) are sent when their run's pending sends are re-driven.
func (s *Store) markEventsUnfinishedUnknown(ctx context.Context, events []int64) error {
	if len(events) == 0 {
		return nil
	}
	var ds []Delivery
	if err := s.q(ctx).Raw(`SELECT d.* FROM deliveries d JOIN notices n ON n.id = d.notice_id
		WHERE n.event_id IN ? AND d.status = 'sending' AND d.attempts > 0 ORDER BY d.id FOR UPDATE OF d`, events).Scan(&ds).Error; err != nil {
		return fmt.Errorf("find unfinished deliveries: %w", err)
	}
	return s.markUnknown(ctx, ds, "worker", unfinishedReason)
}

// HandOver records that the batch's deliveries ids are about to be handed
// to the relay (attempt 1): from now on a crash leaves their outcome
// unknown, where before it they are simply sent again.
func (s *Store) HandOver(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.exec(ctx, `UPDATE deliveries SET attempts = 1, updated_at = now() WHERE id = ANY($1::bigint[]) AND attempts = 0`, ids)
	if err != nil {
		return fmt.Errorf("hand over deliveries: %w", err)
	}
	return nil
}

// MarkUnfinishedUnknown marks unknown the deliveries left "sending" for
// longer than lease: an attempt that claimed them and never recorded the
// relay's answer. Whether the relay took the message cannot be known, so
// they are neither failed nor sent again. It reports how many it marked.
func (s *Store) MarkUnfinishedUnknown(ctx context.Context, lease time.Duration, limit int) (int, error) {
	var n int
	err := s.InTx(ctx, func(tx *Store) error {
		var ds []Delivery
		if err := tx.q(ctx).Raw(`SELECT * FROM deliveries WHERE status = 'sending' AND attempts > 0 AND updated_at < now() - make_interval(secs => ?)
			ORDER BY updated_at LIMIT ? FOR UPDATE SKIP LOCKED`, lease.Seconds(), limit).Scan(&ds).Error; err != nil {
			return fmt.Errorf("find unfinished deliveries: %w", err)
		}
		n = len(ds)
		return tx.markUnknown(ctx, ds, "reconciler", unfinishedReason)
	})
	return n, err
}
