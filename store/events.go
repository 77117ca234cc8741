package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
)

// eventRecord is what an event row holds, sealed: the focus resource and the
// resources the notification carried with it, so the worker needs no
// second fetch.
type eventRecord struct {
	Focus       json.RawMessage   `json:"focus"`
	Related     []json.RawMessage `json:"related,omitempty"`
	RelatedURLs []string          `json:"related_urls,omitempty"` // fullUrl of each Related, same order
}

// InsertEvent stores the event, its outbox row and its audit row in one
// transaction. A dedupe key seen before stores nothing and reports Duplicate;
// concurrent inserts of the same key serialise on the unique index.
func (s *Store) InsertEvent(ctx context.Context, e intake.NewEvent) (intake.StoredEvent, error) {
	var out intake.StoredEvent
	rec, err := json.Marshal(eventRecord{Focus: e.Record.Focus, Related: e.Record.Related, RelatedURLs: e.Record.RelatedURLs})
	if err != nil {
		return out, fmt.Errorf("encode event: %w", err)
	}
	err = s.InTx(ctx, func(tx *Store) error {
		sealed := s.keys.Seal(rec, ctxEventResource)
		var ids []int64
		err := tx.q(ctx).Raw(`INSERT INTO events
			(tenant_id, subscription_id, resource_type, resource_id, version_id, event_number, dedupe_key, resource_sealed)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`,
			e.TenantID, e.SubscriptionID, e.ResourceType, e.ResourceID, e.VersionID, e.EventNumber, e.DedupeKey, sealed).
			Scan(&ids).Error
		if err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
		if len(ids) == 0 {
			var existing Event
			if err := tx.q(ctx).Select("id").Where("dedupe_key = ?", e.DedupeKey).Take(&existing).Error; err != nil {
				return fmt.Errorf("find duplicate event: %w", translate(err))
			}
			out = intake.StoredEvent{EventID: existing.ID, Duplicate: true}
			return nil
		}
		out.EventID = ids[0]
		row := OutboxRow{TenantID: e.TenantID, TaskType: intake.TaskProcessEvent, EventID: &out.EventID}
		if err := tx.q(ctx).Create(&row).Error; err != nil {
			return fmt.Errorf("insert outbox: %w", err)
		}
		out.OutboxID = row.ID
		if e.EventNumber != nil {
			if err := tx.q(ctx).Exec(`INSERT INTO subscription_event_numbers (subscription_id, event_number) VALUES (?, ?) ON CONFLICT DO NOTHING`,
				e.SubscriptionID, *e.EventNumber).Error; err != nil {
				return fmt.Errorf("record event number: %w", err)
			}
		}
		// events_since_start is not bumped here: every event of a subscription
		// would then queue on that one row. The highest event_number stored is
		// derivable from events whenever gap tracking needs it.
		return tx.Audit(ctx, AuditRecord{
			TenantID: e.TenantID, Actor: "subscription:" + e.SubscriptionID, Action: "event.received",
			SubjectType: "event", SubjectID: strconv.FormatInt(out.EventID, 10),
			Detail: map[string]any{"resource_type": e.ResourceType, "resource_id": e.ResourceID, "version_id": e.VersionID},
		})
	})
	return out, err
}

// LoadEvent loads one event, opens its sealed record and decodes it.
func (s *Store) LoadEvent(ctx context.Context, id int64) (*journey.Event, error) {
	var ev Event
	if err := s.q(ctx).Where("id = ?", id).Take(&ev).Error; err != nil {
		return nil, translate(err)
	}
	return s.openEvent(ev)
}

func (s *Store) openEvent(ev Event) (*journey.Event, error) {
	rec, err := s.openRecord(ev)
	if err != nil {
		return nil, err
	}
	rec.EventNumber, rec.ResourceType, rec.ID, rec.VersionID = -1, ev.ResourceType, ev.ResourceID, ev.VersionID
	if ev.EventNumber != nil {
		rec.EventNumber = *ev.EventNumber
	}
	return &journey.Event{ID: ev.ID, TenantID: ev.TenantID, SubscriptionID: ev.SubscriptionID, ResourceType: ev.ResourceType,
		ResourceID: ev.ResourceID, VersionID: ev.VersionID, Kind: ev.Kind, Record: rec}, nil
}

func (s *Store) openRecord(ev Event) (fhir.Event, error) {
	plain, err := s.keys.Open(ev.ResourceSealed, ctxEventResource)
	if err != nil {
		return fhir.Event{}, fmt.Errorf("open event %d: %w", ev.ID, err)
	}
	var rec eventRecord
	if err := json.Unmarshal(plain, &rec); err != nil {
		return fhir.Event{}, fmt.Errorf("event %d: the stored record does not decode", ev.ID)
	}
	return fhir.Event{Focus: rec.Focus, Related: rec.Related, RelatedURLs: rec.RelatedURLs}, nil
}

// MarkEnqueued records that the queue accepted outbox rows.
func (s *Store) MarkEnqueued(ctx context.Context, outboxIDs ...int64) error {
	if len(outboxIDs) == 0 {
		return nil
	}
	return s.q(ctx).Exec(`UPDATE outbox SET enqueued_at = now(), attempts = attempts + 1, last_error = '' WHERE id IN ?`, outboxIDs).Error
}

// MarkEnqueueFailed records a failed hand-over; the reconciler tries again.
// reason must not hold PHI (queue errors name hosts, not payloads).
func (s *Store) MarkEnqueueFailed(ctx context.Context, outboxID int64, reason string) error {
	return s.q(ctx).Exec(`UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?`, truncate(reason, 500), outboxID).Error
}

// PendingOutbox lists rows not yet handed to the queue that are older than
// minAge (younger ones are still being enqueued by the request that wrote them).
func (s *Store) PendingOutbox(ctx context.Context, minAge time.Duration, limit int) ([]intake.OutboxItem, error) {
	var rows []intake.OutboxItem
	err := s.q(ctx).Raw(`SELECT id, tenant_id, task_type, event_id, fetch_id FROM outbox
		WHERE enqueued_at IS NULL AND created_at < ? ORDER BY id LIMIT ?`, time.Now().UTC().Add(-minAge), limit).Scan(&rows).Error
	return rows, err
}

// MarkEventProcessed records that the worker is done with an event.
func (s *Store) MarkEventProcessed(ctx context.Context, eventID int64) error {
	return s.q(ctx).Exec(`UPDATE events SET processed_at = now() WHERE id = ? AND processed_at IS NULL`, eventID).Error
}

// LostEvents lists outbox rows of events handed to the queue more than
// lostAfter ago and still not processed: the queue may have lost them.
func (s *Store) LostEvents(ctx context.Context, lostAfter time.Duration, limit int) ([]intake.OutboxItem, error) {
	var rows []intake.OutboxItem
	err := s.q(ctx).Raw(`SELECT o.id, o.tenant_id, o.task_type, o.event_id, o.fetch_id FROM events e JOIN outbox o ON o.event_id = e.id AND o.task_type = ?
		WHERE e.processed_at IS NULL AND o.enqueued_at < ? ORDER BY e.id LIMIT ?`,
		intake.TaskProcessEvent, time.Now().UTC().Add(-lostAfter), limit).Scan(&rows).Error
	return rows, err
}

// OutboxByEvent loads the outbox row for an event.
func (s *Store) OutboxByEvent(ctx context.Context, eventID int64) (OutboxRow, error) {
	var row OutboxRow
	err := s.q(ctx).Where("event_id = ? AND task_type = ?", eventID, intake.TaskProcessEvent).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, ErrNotFound
	}
	return row, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// MarkSuperseded records that an event never took effect, unless it
// already did (its kind is set).
func (s *Store) MarkSuperseded(ctx context.Context, eventID int64) error {
	return s.q(ctx).Exec(`UPDATE events SET kind = ? WHERE id = ? AND kind = ''`, journey.KindSuperseded, eventID).Error
}

// PreviousAppliedEvent is PreviousEvent among the versions that took
// effect (processed, with a kind, and not superseded), so a kind is always
// derived from the state the subject's runs are in, whatever order the
// versions are processed in.
func (s *Store) PreviousAppliedEvent(ctx context.Context, tenantID, resourceType, resourceID string, eventID int64) (*journey.Event, error) {
	var ev Event
	err := s.q(ctx).Where("tenant_id = ? AND resource_type = ? AND resource_id = ? AND id < ? AND kind <> '' AND kind <> ?",
		tenantID, resourceType, resourceID, eventID, journey.KindSuperseded).Order("id DESC").Take(&ev).Error
	if err != nil {
		return nil, translate(err)
	}
	return s.openEvent(ev)
}

// LatestRecord is the record of the newest event of a resource (ErrNotFound when none).
func (s *Store) LatestRecord(ctx context.Context, tenantID, resourceType, resourceID string) (fhir.Event, error) {
	var ev Event
	err := s.q(ctx).Where("tenant_id = ? AND resource_type = ? AND resource_id = ?", tenantID, resourceType, resourceID).
		Order("id DESC").Take(&ev).Error
	if err != nil {
		return fhir.Event{}, translate(err)
	}
	return s.openRecord(ev)
}

// CloseEvent records an event that leads to no run: its notice of that
// type gets the outcome and the reason (no PHI), unless it already has one.
func (s *Store) CloseEvent(ctx context.Context, ev *journey.Event, noticeType string, outcome journey.Outcome, reason string) error {
	n, err := s.EnsureNotice(ctx, ev.TenantID, ev.ID, noticeType)
	if err != nil {
		return err
	}
	if n.Status != delivery.NoticePending {
		return nil
	}
	return s.FinishNotice(ctx, n, string(outcome), []string{reason})
}

// SetEventKind records what an event means (e.g. an Appointment "rescheduled").
func (s *Store) SetEventKind(ctx context.Context, eventID int64, kind string) error {
	return s.q(ctx).Exec(`UPDATE events SET kind = ? WHERE id = ?`, kind, eventID).Error
}

// LatestEventID is the id of the newest event of a resource (ErrNotFound when none).
func (s *Store) LatestEventID(ctx context.Context, tenantID, resourceType, resourceID string) (int64, error) {
	var ids []int64
	if err := s.q(ctx).Raw(`SELECT id FROM events WHERE tenant_id = ? AND resource_type = ? AND resource_id = ? ORDER BY id DESC LIMIT 1`,
		tenantID, resourceType, resourceID).Scan(&ids).Error; err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, ErrNotFound
	}
	return ids[0], nil
}
