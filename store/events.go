package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"
)

// TaskProcessEvent is the outbox task type that turns an event into notices.
const TaskProcessEvent = "event:process"

// NewEvent is an event as intake hands it over; Resource is clear JSON and is
// sealed before it reaches the table.
type NewEvent struct {
	TenantID       string
	SubscriptionID string
	ResourceType   string
	ResourceID     string
	VersionID      string
	EventNumber    *int64
	DedupeKey      string
	Resource       []byte
}

// Stored says where an accepted event went.
type Stored struct {
	EventID   int64
	OutboxID  int64
	Duplicate bool
}

// InsertEvent stores the event, its outbox row and its audit row in one
// transaction. A dedupe key seen before stores nothing and reports Duplicate;
// concurrent inserts of the same key serialise on the unique index.
func (s *Store) InsertEvent(ctx context.Context, e NewEvent) (Stored, error) {
	var out Stored
	err := s.InTx(ctx, func(tx *Store) error {
		sealed := s.keys.Seal(e.Resource, ctxEventResource)
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
			out = Stored{EventID: existing.ID, Duplicate: true}
			return nil
		}
		out.EventID = ids[0]
		row := OutboxRow{TenantID: e.TenantID, TaskType: TaskProcessEvent, EventID: &out.EventID}
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

// LoadedEvent is an event with its resource opened.
type LoadedEvent struct {
	Event
	Resource []byte
}

// LoadEvent loads one event and opens its sealed resource.
func (s *Store) LoadEvent(ctx context.Context, id int64) (LoadedEvent, error) {
	var ev Event
	if err := s.q(ctx).Where("id = ?", id).Take(&ev).Error; err != nil {
		return LoadedEvent{}, translate(err)
	}
	plain, err := s.keys.Open(ev.ResourceSealed, ctxEventResource)
	if err != nil {
		return LoadedEvent{}, fmt.Errorf("open event %d: %w", id, err)
	}
	return LoadedEvent{Event: ev, Resource: plain}, nil
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
func (s *Store) PendingOutbox(ctx context.Context, minAge time.Duration, limit int) ([]OutboxRow, error) {
	var rows []OutboxRow
	err := s.q(ctx).Where("enqueued_at IS NULL AND created_at < ?", time.Now().UTC().Add(-minAge)).
		Order("id").Limit(limit).Find(&rows).Error
	return rows, err
}

// MarkEventProcessed records that the worker is done with an event.
func (s *Store) MarkEventProcessed(ctx context.Context, eventID int64) error {
	return s.q(ctx).Exec(`UPDATE events SET processed_at = now() WHERE id = ? AND processed_at IS NULL`, eventID).Error
}

// LostEvents lists outbox rows of events handed to the queue more than
// lostAfter ago and still not processed: the queue may have lost them.
func (s *Store) LostEvents(ctx context.Context, lostAfter time.Duration, limit int) ([]OutboxRow, error) {
	var rows []OutboxRow
	err := s.q(ctx).Raw(`SELECT o.* FROM events e JOIN outbox o ON o.event_id = e.id AND o.task_type = ?
		WHERE e.processed_at IS NULL AND o.enqueued_at < ? ORDER BY e.id LIMIT ?`,
		TaskProcessEvent, time.Now().UTC().Add(-lostAfter), limit).Scan(&rows).Error
	return rows, err
}

// OutboxByEvent loads the outbox row for an event.
func (s *Store) OutboxByEvent(ctx context.Context, eventID int64) (OutboxRow, error) {
	var row OutboxRow
	err := s.q(ctx).Where("event_id = ? AND task_type = ?", eventID, TaskProcessEvent).Take(&row).Error
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

// PreviousEvent loads the newest event of the same resource received before
// eventID (ErrNotFound when this is the first one Tidings saw).
func (s *Store) PreviousEvent(ctx context.Context, tenantID, resourceType, resourceID string, eventID int64) (LoadedEvent, error) {
	var ev Event
	err := s.q(ctx).Where("tenant_id = ? AND resource_type = ? AND resource_id = ? AND id < ?", tenantID, resourceType, resourceID, eventID).
		Order("id DESC").Take(&ev).Error
	if err != nil {
		return LoadedEvent{}, translate(err)
	}
	return s.LoadEvent(ctx, ev.ID)
}

// MarkSuperseded records that an event never took effect, unless it
// already did (its kind is set).
func (s *Store) MarkSuperseded(ctx context.Context, eventID int64) error {
	return s.q(ctx).Exec(`UPDATE events SET kind = ? WHERE id = ? AND kind = ''`, KindSuperseded, eventID).Error
}

// KindSuperseded marks an event a newer version of its resource overtook
// before it was processed: it never took effect.
const KindSuperseded = "superseded"

// PreviousAppliedEvent is PreviousEvent among the versions that took
// effect (processed, with a kind, and not superseded), so a kind is always
// derived from the state the subject's runs are in, whatever order the
// versions are processed in.
func (s *Store) PreviousAppliedEvent(ctx context.Context, tenantID, resourceType, resourceID string, eventID int64) (LoadedEvent, error) {
	var ev Event
	err := s.q(ctx).Where("tenant_id = ? AND resource_type = ? AND resource_id = ? AND id < ? AND kind <> '' AND kind <> ?",
		tenantID, resourceType, resourceID, eventID, KindSuperseded).Order("id DESC").Take(&ev).Error
	if err != nil {
		return LoadedEvent{}, translate(err)
	}
	return s.LoadEvent(ctx, ev.ID)
}

// LatestEvent loads the newest event of a resource (ErrNotFound when none).
func (s *Store) LatestEvent(ctx context.Context, tenantID, resourceType, resourceID string) (LoadedEvent, error) {
	return s.PreviousEvent(ctx, tenantID, resourceType, resourceID, 1<<62)
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
