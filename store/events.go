package store

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"gorm.io/gorm"
)

// eventRecord is what an event row holds, sealed: the focus resource and the
// resources the notification carried with it, so the worker needs no
// second fetch.
type eventRecord struct {
	Focus       json.RawMessage   `json:"focus"`
	Related     []json.RawMessage `json:"related,omitempty"`
	RelatedURLs []string          `json:"related_urls,omitempty"` // fullUrl of each Related, same order
}

// encodeRecord writes an event's record as eventRecord encodes it. The
// focus is JSON the parser checked (fhir's guard, or the fetch that read
// it), so it goes in as it came, without encoding/json compacting it once
// more; a related resource is checked here (one read from a source was not
// checked by anyone).
func encodeRecord(r fhir.Event) ([]byte, error) {
	size := len(r.Focus) + 64
	for _, rel := range r.Related {
		size += len(rel) + 1
	}
	for _, u := range r.RelatedURLs {
		size += len(u) + 8
	}
	b := make([]byte, 0, size)
	b = append(b, `{"focus":`...)
	b = append(b, r.Focus...)
	if len(r.Related) > 0 {
		b = append(b, `,"related":[`...)
		for i, rel := range r.Related {
			if !json.Valid(rel) {
				return nil, fmt.Errorf("encode event: related resource %d is not JSON", i)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, rel...)
		}
		b = append(b, ']')
	}
	if len(r.RelatedURLs) > 0 {
		b = append(b, `,"related_urls":`...)
		urls, err := json.Marshal(r.RelatedURLs)
		if err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
		b = append(b, urls...)
	}
	return compressRecord(append(b, '}'), r.Guarded), nil
}

// A record is compressed before it is sealed, the only point where that
// works (sealed bytes are random): FHIR JSON shrinks four to ten times. A
// small record's row stays in line; a large one is still moved out of line
// (TOAST): the load command's 12 KB CARIN EOB seals to about 2.8 KB, over
// the 2 KB threshold. Keeping such rows in line (toast_tuple_target 4080)
// measured slower: each claim and processed update then copies the whole
// record, and the page has no room left for HOT updates. A record that
// starts with '{' is plain JSON, as written before.
// recordZstdGuarded marks a record whose focus passed fhir's JSON guard
// before it was stored (fhir.Event.Guarded), so that readers need not run
// it again; the mark is inside the sealed value, so nobody without the
// key can set it. Records written before it carry recordZstd.
const (
	recordZstd        = 0x01
	recordZstdGuarded = 0x02
)

var (
	recordEncoder = must(zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(2), zstd.WithWindowSize(256<<10)))
	recordDecoder = must(zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(4*fhir.MaxBodyBytes)))
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func compressRecord(rec []byte, guarded bool) []byte {
	mark := byte(recordZstd)
	if guarded {
		mark = recordZstdGuarded
	}
	// Room for the mark and the compressed record (FHIR JSON usually
	// shrinks more than twice), so that the encoder need not grow it.
	dst := make([]byte, 1, 1+len(rec)/2)
	dst[0] = mark
	return recordEncoder.EncodeAll(rec, dst)
}

// decompressRecord returns a stored record's JSON and whether its focus
// was guarded when it was stored.
func decompressRecord(stored []byte) (plain []byte, guarded bool, err error) {
	if len(stored) == 0 || (stored[0] != recordZstd && stored[0] != recordZstdGuarded) {
		return stored, false, nil
	}
	plain, err = recordDecoder.DecodeAll(stored[1:], nil)
	return plain, stored[0] == recordZstdGuarded, err
}

// InsertEvents stores a notification's events with their audit rows,
// committed together with other requests' events (group commit: one
// transaction for all that arrived meanwhile), and tells the workers there
// is work. A dedupe key seen before stores nothing and reports Duplicate
// with the existing event's id; the results are in the order of events.
func (s *Store) InsertEvents(ctx context.Context, events []intake.NewEvent) ([]intake.StoredEvent, error) {
	if len(events) == 0 {
		return nil, nil
	}
	rows := make([]newEventRow, len(events))
	for i, e := range events {
		rec, err := encodeRecord(e.Record)
		if err != nil {
			return nil, err
		}
		rows[i] = newEventRow{NewEvent: e, sealed: s.seal(rec, colEventResource, e.TenantID, e.DedupeKey)}
	}
	out, err := s.eventWrites.do(ctx, rows)
	if err == nil && slices.ContainsFunc(out, func(e intake.StoredEvent) bool { return !e.Duplicate }) {
		s.eventsWake.wake()
	}
	return out, err
}

// newEventRow is an event ready to insert: its record already sealed.
type newEventRow struct {
	intake.NewEvent
	sealed []byte
}

// EventsChannel is the channel the store notifies on after events commit
// (see waker) and workers listen on.
const EventsChannel = "tidings_events"

// insertEvents is one group commit of events: one multi-row insert that
// skips known dedupe keys, one lookup of the ids those keys have, the event
// numbers and the audit rows, in one transaction. (InsertEvents wakes the
// workers after it commits.)
func (s *Store) insertEvents(ctx context.Context, rows []newEventRow) ([]intake.StoredEvent, error) {
	n := len(rows)
	tenant, sub, typ, rid, ver, key := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	num, sealed := make([]*int64, n), make([][]byte, n)
	for i, r := range rows {
		tenant[i], sub[i], typ[i], rid[i], ver[i], key[i] = r.TenantID, r.SubscriptionID, r.ResourceType, r.ResourceID, r.VersionID, r.DedupeKey
		num[i], sealed[i] = r.EventNumber, r.sealed
	}
	out := make([]intake.StoredEvent, n)
	err := s.InTx(ctx, func(tx *Store) error {
		res, err := tx.query(ctx, `INSERT INTO events
				(tenant_id, subscription_id, resource_type, resource_id, version_id, event_number, dedupe_key, resource_sealed)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bytea[])
			ON CONFLICT (tenant_id, dedupe_key) DO NOTHING RETURNING id, tenant_id, dedupe_key`, tenant, sub, typ, rid, ver, num, key, sealed)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		fresh, err := scanKeyIDs(res)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		var seenTenants, seen []string
		for i, k := range key {
			if _, ok := fresh[tenantKey(tenant[i], k)]; !ok {
				seenTenants, seen = append(seenTenants, tenant[i]), append(seen, k)
			}
		}
		known := map[string]int64{}
		if len(seen) > 0 {
			res, err := tx.query(ctx, `SELECT e.id, e.tenant_id, e.dedupe_key FROM events e
				JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, dedupe_key) ON e.tenant_id = k.tenant_id AND e.dedupe_key = k.dedupe_key`,
				seenTenants, seen)
			if err != nil {
				return fmt.Errorf("find duplicate events: %w", err)
			}
			if known, err = scanKeyIDs(res); err != nil {
				return fmt.Errorf("find duplicate events: %w", err)
			}
		}
		var audits []AuditRecord
		var numTenants, numSubs []string
		var numbers []int64
		for i, r := range rows {
			k := tenantKey(r.TenantID, r.DedupeKey)
			if id, ok := fresh[k]; ok {
				// The first of several rows with one key in a batch is the new one.
				delete(fresh, k)
				known[k] = id
				out[i] = intake.StoredEvent{EventID: id}
				audits = append(audits, AuditRecord{TenantID: r.TenantID, Actor: "subscription:" + r.SubscriptionID, Action: "event.received",
					SubjectType: "event", SubjectID: strconv.FormatInt(id, 10),
					Detail: map[string]any{"resource_type": r.ResourceType, "resource_id": r.ResourceID, "version_id": r.VersionID}})
				if r.EventNumber != nil {
					numTenants, numSubs, numbers = append(numTenants, r.TenantID), append(numSubs, r.SubscriptionID), append(numbers, *r.EventNumber)
				}
				continue
			}
			id, ok := known[k]
			if !ok {
				return fmt.Errorf("insert events: a dedupe key neither stored nor found")
			}
			out[i] = intake.StoredEvent{EventID: id, Duplicate: true}
		}
		// events_since_start is not bumped here: every event of a subscription
		// would then queue on that one row. The highest event_number stored is
		// derivable from events whenever gap tracking needs it.
		if len(numbers) > 0 {
			if _, err := tx.exec(ctx, `INSERT INTO subscription_event_numbers (tenant_id, subscription_id, event_number)
				SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING`, numTenants, numSubs, numbers); err != nil {
				return fmt.Errorf("record event numbers: %w", err)
			}
		}
		if len(audits) == 0 {
			return nil
		}
		return tx.AuditMany(ctx, audits)
	})
	return out, err
}

// tenantKey names a dedupe key within its tenant (keys are unique per
// tenant; a group commit mixes tenants). NUL never occurs in a text value.
func tenantKey(tenantID, dedupeKey string) string { return tenantID + "\x00" + dedupeKey }

// scanKeyIDs reads (id, tenant_id, dedupe_key) rows into ids by tenantKey.
func scanKeyIDs(rows *sql.Rows) (map[string]int64, error) {
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var id int64
		var tenantID, key string
		if err := rows.Scan(&id, &tenantID, &key); err != nil {
			return nil, err
		}
		m[tenantKey(tenantID, key)] = id
	}
	return m, rows.Err()
}

// LoadEvent loads one event, opens its sealed record and decodes it.
func (s *Store) LoadEvent(ctx context.Context, id int64) (*journey.Event, error) {
	var rows []eventWithSource
	if err := s.q(ctx).Raw(`SELECT e.*, `+sourceOf("s")+` AS source FROM events e
		JOIN subscriptions s ON s.tenant_id = e.tenant_id AND s.id = e.subscription_id WHERE e.id = ?`, id).Scan(&rows).Error; err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, ErrNotFound
	}
	return s.openEvent(rows[0].Event, rows[0].Source)
}

// eventWithSource is an event row with its source (see sourceOf).
type eventWithSource struct {
	Event  `gorm:"embedded"`
	Source string
}

// sourceOf is the SQL of the source a subscription's events come from
// (journey.Event.Source), for the subscriptions row aliased alias: its
// registered FHIR source, or 'subscription/<id>' for a subscription
// registered without one (a source id never holds '/'). Runs and FHIR
// contacts store it; migration 00017 derived it for the rows before.
func sourceOf(alias string) string {
	return "COALESCE(" + alias + ".source_id, 'subscription/' || " + alias + ".id)"
}

// ofSource restricts events (aliased e) to those of one source, the
// placeholder's.
var ofSource = `e.subscription_id IN (SELECT s.id FROM subscriptions s WHERE s.tenant_id = e.tenant_id AND ` + sourceOf("s") + ` = ?)`

func (s *Store) openEvent(ev Event, source string) (*journey.Event, error) {
	rec, err := s.openRecord(ev)
	if err != nil {
		return nil, err
	}
	rec.EventNumber, rec.ResourceType, rec.ID, rec.VersionID = -1, ev.ResourceType, ev.ResourceID, ev.VersionID
	if ev.EventNumber != nil {
		rec.EventNumber = *ev.EventNumber
	}
	return &journey.Event{ID: ev.ID, TenantID: ev.TenantID, SubscriptionID: ev.SubscriptionID, Source: source, ResourceType: ev.ResourceType,
		ResourceID: ev.ResourceID, VersionID: ev.VersionID, Kind: ev.Kind, Record: rec}, nil
}

func (s *Store) openRecord(ev Event) (fhir.Event, error) {
	plain, err := s.open(ev.ResourceSealed, colEventResource, ev.TenantID, ev.DedupeKey)
	if err != nil {
		return fhir.Event{}, fmt.Errorf("open event %d: %w", ev.ID, err)
	}
	plain, guarded, err := decompressRecord(plain)
	if err != nil {
		return fhir.Event{}, fmt.Errorf("event %d: the stored record does not decompress", ev.ID)
	}
	rec, err := decodeRecord(plain)
	if err != nil {
		return fhir.Event{}, fmt.Errorf("event %d: the stored record does not decode", ev.ID)
	}
	return fhir.Event{Focus: rec.Focus, Related: rec.Related, RelatedURLs: rec.RelatedURLs, Guarded: guarded}, nil
}

// decodeRecord reads a record. One that encodeRecord framed is cut at its
// values' ends, without encoding/json validating and decoding the whole
// EOB twice more (it was checked before it was stored, and sealing
// authenticates it since); anything else, older records included, is
// decoded by encoding/json.
func decodeRecord(plain []byte) (eventRecord, error) {
	if rec, ok := splitRecord(plain); ok {
		return rec, nil
	}
	var rec eventRecord
	err := json.Unmarshal(plain, &rec)
	return rec, err
}

// splitRecord cuts a record framed exactly as encodeRecord writes it; ok
// is false for any other shape.
func splitRecord(b []byte) (rec eventRecord, ok bool) {
	const head, rel, urls = `{"focus":`, `,"related":[`, `,"related_urls":`
	if !bytes.HasPrefix(b, []byte(head)) {
		return rec, false
	}
	i := len(head)
	end := fhir.ValueEnd(b, i)
	if end < 0 || b[i] != '{' {
		return rec, false
	}
	rec.Focus = b[i:end:end]
	i = end
	if bytes.HasPrefix(b[i:], []byte(rel)) {
		i += len(rel)
		for {
			end := fhir.ValueEnd(b, i)
			if end < 0 || b[i] != '{' {
				return rec, false
			}
			rec.Related = append(rec.Related, b[i:end:end])
			if end >= len(b) {
				return rec, false
			}
			i = end + 1
			if b[end] == ']' {
				break
			}
			if b[end] != ',' {
				return rec, false
			}
		}
	}
	if bytes.HasPrefix(b[i:], []byte(urls)) {
		i += len(urls)
		end := fhir.ValueEnd(b, i)
		if end < 0 || b[i] != '[' || json.Unmarshal(b[i:end], &rec.RelatedURLs) != nil {
			return rec, false
		}
		i = end
	}
	return rec, i == len(b)-1 && b[i] == '}'
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

// ClaimEvents claims up to limit events nobody has processed or holds a
// claim on, oldest first, for lease: other workers (and replicas) skip them
// until the lease passes, so an event whose worker died is claimed again.
// They come opened and decoded.
func (s *Store) ClaimEvents(ctx context.Context, limit int, lease time.Duration) ([]*journey.Event, error) {
	rows, err := s.query(ctx, `UPDATE events e SET claimed_until = now() + make_interval(secs => $2)
		FROM (SELECT id FROM events WHERE processed_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
			ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c, subscriptions s
		WHERE e.id = c.id AND s.tenant_id = e.tenant_id AND s.id = e.subscription_id
		RETURNING e.id, e.tenant_id, e.subscription_id, e.resource_type, e.resource_id, e.version_id, e.event_number,
			e.kind, e.attempts, e.dedupe_key, e.resource_sealed, `+sourceOf("s"), limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim events: %w", err)
	}
	defer rows.Close()
	var out []*journey.Event
	for rows.Next() {
		var ev Event
		var attempts int
		var source string
		if err := rows.Scan(&ev.ID, &ev.TenantID, &ev.SubscriptionID, &ev.ResourceType, &ev.ResourceID, &ev.VersionID,
			&ev.EventNumber, &ev.Kind, &attempts, &ev.DedupeKey, &ev.ResourceSealed, &source); err != nil {
			return nil, fmt.Errorf("claim events: %w", err)
		}
		je, err := s.openEvent(ev, source)
		if err != nil {
			return nil, err
		}
		je.Attempts = attempts
		out = append(out, je)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim events: %w", err)
	}
	slices.SortFunc(out, func(a, b *journey.Event) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// RetryEvent records a failed attempt at a claimed event and keeps it
// claimed until retryAt, when it is claimed again. errText holds no PHI.
func (s *Store) RetryEvent(ctx context.Context, eventID int64, retryAt time.Time, errText string) error {
	_, err := s.exec(ctx, `UPDATE events SET attempts = attempts + 1, claimed_until = $2, last_error = $3 WHERE id = $1`,
		eventID, retryAt, truncate(errText, 500))
	return err
}

// MarkEventsProcessed records that the worker is done with events.
func (s *Store) MarkEventsProcessed(ctx context.Context, eventIDs []int64) error {
	_, err := s.exec(ctx, `UPDATE events SET processed_at = now(), claimed_until = NULL WHERE id = ANY($1::bigint[]) AND processed_at IS NULL`, eventIDs)
	return err
}

// MarkEventProcessed records that the worker is done with an event.
func (s *Store) MarkEventProcessed(ctx context.Context, eventID int64) error {
	return s.q(ctx).Exec(`UPDATE events SET processed_at = now() WHERE id = ? AND processed_at IS NULL`, eventID).Error
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
// versions are processed in. It looks among the source's events only.
func (s *Store) PreviousAppliedEvent(ctx context.Context, tenantID, source, resourceType, resourceID string, eventID int64) (*journey.Event, error) {
	var ev Event
	err := s.q(ctx).Table("events e").Where("e.tenant_id = ? AND e.resource_type = ? AND e.resource_id = ? AND e.id < ? AND e.kind <> '' AND e.kind <> ? AND "+ofSource,
		tenantID, resourceType, resourceID, eventID, journey.KindSuperseded, source).Order("e.id DESC").Take(&ev).Error
	if err != nil {
		return nil, translate(err)
	}
	return s.openEvent(ev, source)
}

// LatestRecord is the record of the newest event of a resource from the
// subscription's source (ErrNotFound when none).
func (s *Store) LatestRecord(ctx context.Context, tenantID, subscriptionID, resourceType, resourceID string) (fhir.Event, error) {
	var ev Event
	err := s.q(ctx).Table("events e").Where("e.tenant_id = ? AND e.resource_type = ? AND e.resource_id = ? AND "+ofSource,
		tenantID, resourceType, resourceID, gorm.Expr(`(SELECT `+sourceOf("x")+` FROM subscriptions x WHERE x.tenant_id = ? AND x.id = ?)`, tenantID, subscriptionID)).
		Order("e.id DESC").Take(&ev).Error
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

// LatestEventID is the id of the newest event of a resource from a source
// (ErrNotFound when none).
func (s *Store) LatestEventID(ctx context.Context, tenantID, source, resourceType, resourceID string) (int64, error) {
	var ids []int64
	if err := s.q(ctx).Raw(`SELECT e.id FROM events e WHERE e.tenant_id = ? AND e.resource_type = ? AND e.resource_id = ? AND `+ofSource+`
		ORDER BY e.id DESC LIMIT 1`, tenantID, resourceType, resourceID, source).Scan(&ids).Error; err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, ErrNotFound
	}
	return ids[0], nil
}
