package intake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/store"
)

// ErrUnsupported means the notification is valid but asks for something this
// version does not do yet (id-only or empty content); nothing was stored.
var ErrUnsupported = errors.New("unsupported notification")

// ErrInactive means the subscription is switched off in Tidings.
var ErrInactive = errors.New("subscription is not active")

// Store is what intake needs from storage.
type Store interface {
	Authenticate(ctx context.Context, subscriptionID, secret string) (store.Subscription, error)
	RecordStatus(ctx context.Context, subscriptionID, kind string, eventsSinceStart int64, at time.Time) error
	InsertEvent(ctx context.Context, e store.NewEvent) (store.Stored, error)
	MarkEnqueued(ctx context.Context, outboxIDs ...int64) error
	MarkEnqueueFailed(ctx context.Context, outboxID int64, reason string) error
}

// Queue hands an event to the worker.
type Queue interface {
	EnqueueEvent(ctx context.Context, tenantID string, eventID int64) error
}

// Focus resource types this version turns into events.
var supportedFocus = map[string]bool{"ExplanationOfBenefit": true}

// Service receives notifications.
type Service struct {
	Store          Store
	Queue          Queue
	Log            *slog.Logger
	EnqueueTimeout time.Duration
	Now            func() time.Time
}

// Result says what a notification led to; it holds no PHI.
type Result struct {
	Type       fhir.NotificationType
	Accepted   int // new events stored
	Duplicates int // events seen before
	Ignored    int // events whose focus type Tidings does not handle
	Queued     int // new events handed to the queue now (the rest wait for the reconciler)
	EventIDs   []int64
}

// EventRecord is what an event row holds, sealed: the focus resource and the
// resources it references, so the worker needs no second fetch.
type EventRecord struct {
	Focus       json.RawMessage   `json:"focus"`
	Related     []json.RawMessage `json:"related,omitempty"`
	RelatedURLs []string          `json:"related_urls,omitempty"` // fullUrl of each Related, same order
}

// Event rebuilds the parsed event the record was made from.
func (r EventRecord) Event() fhir.Event {
	return fhir.Event{Focus: r.Focus, Related: r.Related, RelatedURLs: r.RelatedURLs}
}

// Authenticate checks a subscription's shared secret.
func (s *Service) Authenticate(ctx context.Context, subscriptionID, secret string) (store.Subscription, error) {
	sub, err := s.Store.Authenticate(ctx, subscriptionID, secret)
	if err == nil && sub.Status != "active" && sub.Status != "requested" {
		return store.Subscription{}, ErrInactive
	}
	return sub, err
}

// Receive processes one notification body for an authenticated subscription.
func (s *Service) Receive(ctx context.Context, sub store.Subscription, body []byte) (Result, error) {
	n, err := fhir.ParseNotification(body)
	if err != nil {
		return Result{}, err
	}
	res := Result{Type: n.Type}
	now := time.Now().UTC()
	if s.Now != nil {
		now = s.Now()
	}
	switch n.Type {
	case fhir.TypeHandshake, fhir.TypeHeartbeat, fhir.TypeQueryStatus:
		return res, s.Store.RecordStatus(ctx, sub.ID, string(n.Type), n.EventsSinceStart, now)
	case fhir.TypeEventNotification, fhir.TypeQueryEvent:
	default:
		return res, fmt.Errorf("%w: notification type %q", ErrUnsupported, n.Type)
	}
	if len(n.Events) == 0 || n.Content != fhir.ContentFullResource {
		return res, fmt.Errorf("%w: %s content (only full-resource notifications are processed in this version)", ErrUnsupported, n.Content)
	}
	var fresh []store.Stored
	for _, ev := range n.Events {
		if ev.Focus == nil {
			return res, fmt.Errorf("%w: event without its focus resource", ErrUnsupported)
		}
	}
	for _, ev := range n.Events {
		if !supportedFocus[ev.ResourceType] {
			res.Ignored++
			continue
		}
		rec, err := json.Marshal(EventRecord{Focus: ev.Focus, Related: ev.Related, RelatedURLs: ev.RelatedURLs})
		if err != nil {
			return res, fmt.Errorf("encode event: %w", err)
		}
		var num *int64
		if ev.EventNumber >= 0 {
			v := ev.EventNumber
			num = &v
		}
		stored, err := s.Store.InsertEvent(ctx, store.NewEvent{
			TenantID: sub.TenantID, SubscriptionID: sub.ID,
			ResourceType: ev.ResourceType, ResourceID: ev.ID, VersionID: ev.VersionID,
			EventNumber: num, DedupeKey: DedupeKey(sub.ID, ev), Resource: rec,
		})
		if err != nil {
			return res, fmt.Errorf("store event: %w", err)
		}
		if stored.Duplicate {
			res.Duplicates++
			continue
		}
		res.Accepted++
		res.EventIDs = append(res.EventIDs, stored.EventID)
		fresh = append(fresh, stored)
	}
	res.Queued = s.enqueue(ctx, sub.TenantID, fresh)
	return res, nil
}

// enqueue hands new events to the queue after their transaction committed.
// A failure is not the sender's problem: the event is stored and the
// reconciler will enqueue it, so the request still succeeds.
func (s *Service) enqueue(ctx context.Context, tenantID string, fresh []store.Stored) int {
	if s.Queue == nil || len(fresh) == 0 {
		return 0
	}
	timeout := s.EnqueueTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	var done []int64
	for _, st := range fresh {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		err := s.Queue.EnqueueEvent(qctx, tenantID, st.EventID)
		cancel()
		if err != nil {
			if s.Log != nil {
				s.Log.Warn("enqueue failed; the reconciler will retry", "event_id", st.EventID, "err", err)
			}
			_ = s.Store.MarkEnqueueFailed(context.WithoutCancel(ctx), st.OutboxID, err.Error())
			// Redis is likely down: leave the rest to the reconciler rather than wait on each.
			break
		}
		done = append(done, st.OutboxID)
	}
	if err := s.Store.MarkEnqueued(context.WithoutCancel(ctx), done...); err != nil && s.Log != nil {
		s.Log.Warn("mark enqueued failed; the reconciler may enqueue again (harmless)", "err", err)
	}
	return len(done)
}

// DedupeKey identifies an event across retries: (subscription, resource
// type, id, meta.versionId), or a hash of the resource when it has no version.
func DedupeKey(subscriptionID string, ev fhir.Event) string {
	version := "v:" + ev.VersionID
	if ev.VersionID == "" {
		h := sha256.Sum256(canonicalJSON(ev.Focus))
		version = "h:" + hex.EncodeToString(h[:])
	}
	return subscriptionID + "|" + ev.ResourceType + "|" + ev.ID + "|" + version
}

// canonicalJSON re-encodes a resource with sorted keys and no spacing, so the
// same resource formatted differently dedupes to the same key.
func canonicalJSON(raw json.RawMessage) []byte {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}
