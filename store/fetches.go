package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
)

// InsertFetch stores a fetch, its outbox row and its audit row in one
// transaction; a dedupe key seen before stores nothing.
func (s *Store) InsertFetch(ctx context.Context, f intake.NewFetch) (intake.StoredFetch, error) {
	var out intake.StoredFetch
	err := s.InTx(ctx, func(tx *Store) error {
		var ids []int64
		if err := tx.q(ctx).Raw(`INSERT INTO fetches (tenant_id, subscription_id, kind, reference, event_number, dedupe_key)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING RETURNING id`,
			f.TenantID, f.SubscriptionID, f.Kind, f.Reference, f.EventNumber, f.DedupeKey).Scan(&ids).Error; err != nil {
			return fmt.Errorf("insert fetch: %w", err)
		}
		if len(ids) == 0 {
			out.Duplicate = true
			return nil
		}
		out.FetchID = ids[0]
		row := OutboxRow{TenantID: f.TenantID, TaskType: intake.TaskFetch, FetchID: &out.FetchID}
		if err := tx.q(ctx).Create(&row).Error; err != nil {
			return fmt.Errorf("insert outbox: %w", err)
		}
		out.OutboxID = row.ID
		if f.EventNumber != nil {
			if err := tx.q(ctx).Exec(`INSERT INTO subscription_event_numbers (tenant_id, subscription_id, event_number) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
				f.TenantID, f.SubscriptionID, *f.EventNumber).Error; err != nil {
				return fmt.Errorf("record event number: %w", err)
			}
		}
		return tx.Audit(ctx, AuditRecord{TenantID: f.TenantID, Actor: "subscription:" + f.SubscriptionID,
			Action: "fetch.requested", SubjectType: "fetch", SubjectID: strconv.FormatInt(out.FetchID, 10),
			Detail: map[string]any{"kind": f.Kind}})
	})
	return out, err
}

// RedriveFetches finds up to limit fetches still pending lease after they
// were handed to the queue or last re-driven (their task may have been
// lost, e.g. Redis restarted without persistence), notes now as their
// re-drive time, and returns them to be enqueued again. Enqueuing one
// whose task is still queued does nothing, as its task id is the fetch's.
func (s *Store) RedriveFetches(ctx context.Context, lease time.Duration, limit int) ([]intake.Fetch, error) {
	var rows []Fetch
	err := s.q(ctx).Raw(`UPDATE fetches f SET updated_at = now()
		FROM (SELECT f2.id FROM fetches f2 WHERE f2.status = 'pending' AND f2.updated_at < now() - make_interval(secs => ?)
			AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.fetch_id = f2.id AND o.enqueued_at IS NULL)
			ORDER BY f2.updated_at LIMIT ? FOR UPDATE SKIP LOCKED) c
		WHERE f.id = c.id
		RETURNING f.id, f.tenant_id`, lease.Seconds(), limit).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("find fetches to re-drive: %w", err)
	}
	out := make([]intake.Fetch, len(rows))
	for i, r := range rows {
		out[i] = intake.Fetch{ID: r.ID, TenantID: r.TenantID}
	}
	return out, nil
}

// LoadFetch loads one fetch.
func (s *Store) LoadFetch(ctx context.Context, id int64) (intake.Fetch, error) {
	var f Fetch
	if err := s.q(ctx).Where("id = ?", id).Take(&f).Error; err != nil {
		return intake.Fetch{}, translate(err)
	}
	return intake.Fetch{ID: f.ID, TenantID: f.TenantID, SubscriptionID: f.SubscriptionID, Kind: f.Kind,
		Reference: f.Reference, EventNumber: f.EventNumber, Status: f.Status}, nil
}

// FinishFetch records a fetch's outcome. errText never holds PHI.
func (s *Store) FinishFetch(ctx context.Context, f intake.Fetch, status string, events int, errText string) error {
	return s.InTx(ctx, func(tx *Store) error {
		if err := tx.q(ctx).Model(&Fetch{}).Where("id = ?", f.ID).Updates(map[string]any{
			"status": status, "events_created": events, "last_error": truncate(errText, 500), "updated_at": gorm.Expr("now()"),
		}).Error; err != nil {
			return err
		}
		// A fetch without an event number deduplicates only while pending: a
		// later ping or reference must lead to a new fetch.
		if err := tx.q(ctx).Exec(`UPDATE fetches SET dedupe_key = dedupe_key || '|done:' || id::text
			WHERE id = ? AND dedupe_key LIKE '%|pending'`, f.ID).Error; err != nil {
			return err
		}
		// A failed fetch did not deliver its event: that number is a gap the
		// monitor recovers another way ($events or search).
		if status == intake.FetchFailed && f.EventNumber != nil {
			if err := tx.q(ctx).Exec(`INSERT INTO subscription_gaps (tenant_id, subscription_id, from_number, to_number)
				SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM subscription_gaps g WHERE g.tenant_id = ? AND g.subscription_id = ?
					AND g.recovered_at IS NULL AND g.abandoned_at IS NULL AND g.from_number <= ? AND g.to_number >= ?)
				ON CONFLICT DO NOTHING`,
				f.TenantID, f.SubscriptionID, *f.EventNumber, *f.EventNumber, f.TenantID, f.SubscriptionID, *f.EventNumber, *f.EventNumber).Error; err != nil {
				return err
			}
		}
		detail := map[string]any{"events": events}
		if errText != "" {
			detail["error"] = truncate(errText, 500)
		}
		return tx.Audit(ctx, AuditRecord{TenantID: f.TenantID, Actor: "worker", Action: "fetch." + status,
			SubjectType: "fetch", SubjectID: strconv.FormatInt(f.ID, 10), Detail: detail})
	})
}

// RecordEventNumbers notes the event numbers a notification announced, and
// the subscription's own reference on its server the first time it is seen.
func (s *Store) RecordEventNumbers(ctx context.Context, tenantID, subscriptionID, remoteRef string, numbers []int64) error {
	if remoteRef != "" {
		if err := s.q(ctx).Exec(`UPDATE subscriptions SET remote_ref = ? WHERE tenant_id = ? AND id = ? AND remote_ref = ''`,
			remoteRef, tenantID, subscriptionID).Error; err != nil {
			return err
		}
	}
	if len(numbers) == 0 {
		return nil
	}
	return s.q(ctx).Exec(`INSERT INTO subscription_event_numbers (tenant_id, subscription_id, event_number)
		SELECT ?, ?, unnest(?::bigint[]) ON CONFLICT DO NOTHING`, tenantID, subscriptionID, int64Array(numbers)).Error
}

func int64Array(ns []int64) string {
	b := []byte{'{'}
	for i, n := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, n, 10)
	}
	return string(append(b, '}'))
}

// MaxGapWidth bounds one gap row: a source announcing an absurd event number
// cannot make one recovery ask for (or record) billions of numbers; a wider
// run is recovered a slice at a time.
const MaxGapWidth = 10000

// maxGapAttempts is when a gap that keeps failing to recover is abandoned.
const maxGapAttempts = 20

// DetectGaps records runs of event numbers that a subscription announced
// (through later numbers, or a heartbeat's events-since-subscription-start)
// but never delivered, once they have been missing for longer than settle
// (notifications may arrive out of order). Numbers before the first one
// Tidings saw are not gaps: they belong to before Tidings listened. A run
// that overlaps an open gap is left to that gap. It returns how many new
// gaps it found.
func (s *Store) DetectGaps(ctx context.Context, settle time.Duration) (int64, error) {
	cutoff := time.Now().UTC().Add(-settle)
	res := s.q(ctx).Exec(`
		WITH seen AS (
			SELECT tenant_id, subscription_id, event_number, seen_at,
				lag(event_number) OVER (PARTITION BY tenant_id, subscription_id ORDER BY event_number) AS prev
			FROM subscription_event_numbers),
		cand AS (
			SELECT tenant_id, subscription_id, prev + 1 AS f, event_number - 1 AS t FROM seen
			WHERE prev IS NOT NULL AND event_number > prev + 1 AND seen_at < @cutoff
			UNION ALL
			SELECT s.tenant_id, s.id, m.top + 1, s.events_since_start FROM subscriptions s
			JOIN (SELECT tenant_id, subscription_id, max(event_number) AS top, max(seen_at) AS last_seen
				FROM subscription_event_numbers GROUP BY tenant_id, subscription_id) m
				ON m.tenant_id = s.tenant_id AND m.subscription_id = s.id
			WHERE s.events_since_start > m.top AND m.last_seen < @cutoff)
		INSERT INTO subscription_gaps (tenant_id, subscription_id, from_number, to_number)
		SELECT c.tenant_id, c.subscription_id, c.f, least(c.t, c.f + @width - 1) FROM cand c
		WHERE c.t >= c.f AND NOT EXISTS (
			SELECT 1 FROM subscription_gaps g WHERE g.tenant_id = c.tenant_id AND g.subscription_id = c.subscription_id
			AND g.recovered_at IS NULL AND g.abandoned_at IS NULL
			AND g.from_number <= c.t AND g.to_number >= c.f)
		ON CONFLICT DO NOTHING`, sql.Named("cutoff", cutoff), sql.Named("width", MaxGapWidth))
	return res.RowsAffected, res.Error
}

// OpenGaps lists gaps due for a recovery attempt, of subscriptions that have
// a source to recover from, soonest first.
func (s *Store) OpenGaps(ctx context.Context, limit int) ([]intake.Gap, error) {
	var gaps []intake.Gap
	err := s.q(ctx).Raw(`SELECT g.id, g.tenant_id, g.subscription_id, g.from_number, g.to_number FROM subscription_gaps g
		JOIN subscriptions s ON s.tenant_id = g.tenant_id AND s.id = g.subscription_id
		WHERE g.recovered_at IS NULL AND g.abandoned_at IS NULL AND g.next_attempt_at <= now() AND s.source_id IS NOT NULL
		ORDER BY g.next_attempt_at LIMIT ?`, limit).Scan(&gaps).Error
	return gaps, err
}

// SeenAt is when event number n of a tenant's subscription was seen (zero when never).
func (s *Store) SeenAt(ctx context.Context, tenantID, subscriptionID string, n int64) (time.Time, error) {
	var t []time.Time
	err := s.q(ctx).Raw(`SELECT seen_at FROM subscription_event_numbers WHERE tenant_id = ? AND subscription_id = ? AND event_number = ?`,
		tenantID, subscriptionID, n).Scan(&t).Error
	if err != nil || len(t) == 0 {
		return time.Time{}, err
	}
	return t[0], nil
}

// FinishGap records a recovery attempt. A recovered gap's numbers count as
// seen; a failed one is tried again later, backing off, and abandoned after
// maxGapAttempts.
func (s *Store) FinishGap(ctx context.Context, g intake.Gap, recovered bool, method string, events int, errText string) error {
	return s.InTx(ctx, func(tx *Store) error {
		if !recovered {
			return tx.q(ctx).Exec(`UPDATE subscription_gaps SET method = ?, last_error = ?, attempts = attempts + 1,
				next_attempt_at = now() + least(interval '1 minute' * power(2, attempts), interval '6 hours'),
				abandoned_at = CASE WHEN attempts + 1 >= ? THEN now() END
				WHERE id = ?`, method, truncate(errText, 500), maxGapAttempts, g.ID).Error
		}
		if err := tx.q(ctx).Model(&Gap{}).Where("id = ?", g.ID).Updates(map[string]any{
			"method": method, "recovered_events": events, "last_error": "", "recovered_at": gorm.Expr("now()"),
		}).Error; err != nil {
			return err
		}
		if err := tx.q(ctx).Exec(`INSERT INTO subscription_event_numbers (tenant_id, subscription_id, event_number)
			SELECT ?, ?, generate_series(?::bigint, ?::bigint) ON CONFLICT DO NOTHING`, g.TenantID, g.SubscriptionID, g.FromNumber, g.ToNumber).Error; err != nil {
			return err
		}
		return tx.Audit(ctx, AuditRecord{TenantID: g.TenantID, Actor: "worker", Action: "gap.recovered",
			SubjectType: "subscription", SubjectID: g.SubscriptionID,
			Detail: map[string]any{"from": g.FromNumber, "to": g.ToNumber, "method": method, "events": events}})
	})
}

// MarkSilent flags subscriptions with a heartbeat period whose last heartbeat
// (or creation) is older than twice that period; a heartbeat clears the flag.
func (s *Store) MarkSilent(ctx context.Context, now time.Time) (int64, error) {
	// Any notification proves the channel alive, not only heartbeats.
	const lastHeard = `greatest(coalesce(last_heartbeat_at, created_at), coalesce(last_handshake_at, created_at),
		coalesce((SELECT max(seen_at) FROM subscription_event_numbers n
			WHERE n.tenant_id = subscriptions.tenant_id AND n.subscription_id = subscriptions.id), created_at))`
	if err := s.q(ctx).Exec(`UPDATE subscriptions SET silent_since = NULL
		WHERE silent_since IS NOT NULL AND `+lastHeard+` >= ?::timestamptz - make_interval(secs => 2 * heartbeat_period_s)`, now).Error; err != nil {
		return 0, err
	}
	res := s.q(ctx).Exec(`UPDATE subscriptions SET silent_since = ?
		WHERE heartbeat_period_s > 0 AND silent_since IS NULL
		AND `+lastHeard+` < ?::timestamptz - make_interval(secs => 2 * heartbeat_period_s)`, now, now)
	return res.RowsAffected, res.Error
}

// WithSubjectLock runs fn while holding a cluster-wide lock on one subject
// of a tenant's source ("Appointment/123"), so that its events are
// processed one at a time in any replica; it reports false without running
// fn when another holds the lock.
func (s *Store) WithSubjectLock(ctx context.Context, tenantID, source, subject string, fn func() error) (bool, error) {
	return s.TryLock(ctx, LockAppointmentSubject, tenantID+"|"+source+"|"+subject, fn)
}

// WithSchedulerLock runs fn unless another replica's scheduler holds the
// lock (then it reports false): one scheduler pass at a time.
func (s *Store) WithSchedulerLock(ctx context.Context, fn func() error) (bool, error) {
	return s.TryLock(ctx, LockScheduler, "scheduler", fn)
}

// WithMonitorLock runs fn unless another replica's gap monitor holds the
// lock (then it reports false): one monitor pass at a time.
func (s *Store) WithMonitorLock(ctx context.Context, fn func() error) (bool, error) {
	return s.TryLock(ctx, LockGapMonitor, "monitor", fn)
}

// LastEventAt is when the tenant's subscription's newest event was received (zero when none).
func (s *Store) LastEventAt(ctx context.Context, tenantID, subscriptionID string) (time.Time, error) {
	var t []time.Time
	err := s.q(ctx).Raw(`SELECT max(received_at) FROM events WHERE tenant_id = ? AND subscription_id = ? HAVING max(received_at) IS NOT NULL`,
		tenantID, subscriptionID).Scan(&t).Error
	if err != nil || len(t) == 0 {
		return time.Time{}, err
	}
	return t[0], nil
}

// CreateSource registers a FHIR server; credential (a PEM private key or a
// bearer token) is sealed before it is stored.
func (s *Store) CreateSource(ctx context.Context, in intake.Source, credential []byte) error {
	src := Source{ID: in.ID, TenantID: in.TenantID, BaseURL: in.BaseURL, AuthType: in.AuthType, TokenURL: in.TokenURL,
		ClientID: in.ClientID, KeyID: in.KeyID, Scopes: in.Scopes}
	if len(credential) > 0 {
		src.CredentialSealed = s.seal(credential, colSourceCredential, src.TenantID, src.ID)
	}
	return s.InTx(ctx, func(tx *Store) error {
		if err := translate(tx.q(ctx).Create(&src).Error); err != nil {
			if errors.Is(err, ErrDuplicate) {
				// The key is (tenant_id, id): only the caller's own ids conflict.
				return fault.Wrap(err, fault.Conflict, "a source with this id exists")
			}
			return err
		}
		return tx.Audit(ctx, AuditRecord{TenantID: src.TenantID, Actor: audit.ActorOr(ctx, "api"), Action: "source.created",
			SubjectType: "source", SubjectID: src.ID, Detail: map[string]any{"auth_type": src.AuthType}})
	})
}

// SourceWithCredential loads a tenant's source and opens its credential.
func (s *Store) SourceWithCredential(ctx context.Context, tenantID, id string) (intake.Source, []byte, error) {
	var row Source
	if err := s.q(ctx).Where("tenant_id = ? AND id = ?", tenantID, id).Take(&row).Error; err != nil {
		return intake.Source{}, nil, translate(err)
	}
	src := row.source()
	if len(row.CredentialSealed) == 0 {
		return src, nil, nil
	}
	cred, err := s.open(row.CredentialSealed, colSourceCredential, row.TenantID, row.ID)
	if err != nil {
		return intake.Source{}, nil, fmt.Errorf("open source credential: %w", err)
	}
	return src, cred, nil
}

// TenantSources lists a tenant's FHIR sources by id, without their
// credentials.
func (s *Store) TenantSources(ctx context.Context, tenantID string) ([]intake.Source, error) {
	var rows []Source
	if err := s.q(ctx).Omit("credential_sealed").Where("tenant_id = ?", tenantID).Order("id").Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]intake.Source, len(rows))
	for i, r := range rows {
		out[i] = r.source()
	}
	return out, nil
}

func (row Source) source() intake.Source {
	return intake.Source{ID: row.ID, TenantID: row.TenantID, BaseURL: row.BaseURL, AuthType: row.AuthType,
		TokenURL: row.TokenURL, ClientID: row.ClientID, KeyID: row.KeyID, Scopes: row.Scopes}
}

// TenantReports is Report for each of a tenant's subscriptions, by id.
func (s *Store) TenantReports(ctx context.Context, tenantID string) ([]intake.SubscriptionReport, error) {
	var ids []string
	if err := s.q(ctx).Model(&Subscription{}).Where("tenant_id = ?", tenantID).Order("id").Pluck("id", &ids).Error; err != nil {
		return nil, err
	}
	out := make([]intake.SubscriptionReport, 0, len(ids))
	for _, id := range ids {
		r, err := s.Report(ctx, tenantID, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// AttachSource points a tenant's subscription at the FHIR server it fetches from.
func (s *Store) AttachSource(ctx context.Context, tenantID, subscriptionID, sourceID, criteria string, heartbeatPeriod time.Duration) error {
	// Only a source of the subscription's own tenant.
	res := s.q(ctx).Exec(`UPDATE subscriptions s SET source_id = ?, criteria = ?, heartbeat_period_s = ? WHERE s.tenant_id = ? AND s.id = ?
		AND EXISTS (SELECT 1 FROM fhir_sources f WHERE f.id = ? AND f.tenant_id = s.tenant_id)`,
		sourceID, criteria, int(heartbeatPeriod/time.Second), tenantID, subscriptionID, sourceID)
	if res.Error != nil {
		return translate(res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	return nil
}

// OutboxFetch loads the outbox row of a fetch.
func (s *Store) OutboxFetch(ctx context.Context, fetchID int64) (OutboxRow, error) {
	var row OutboxRow
	err := s.q(ctx).Where("fetch_id = ? AND task_type = ?", fetchID, intake.TaskFetch).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, ErrNotFound
	}
	return row, err
}

// SetRemoteRef records a tenant's Subscription's reference on its FHIR server.
func (s *Store) SetRemoteRef(ctx context.Context, tenantID, subscriptionID, ref string) error {
	return s.q(ctx).Exec(`UPDATE subscriptions SET remote_ref = ? WHERE tenant_id = ? AND id = ?`, ref, tenantID, subscriptionID).Error
}

func subscriptionReport(sub Subscription) intake.SubscriptionReport {
	r := intake.SubscriptionReport{ID: sub.ID, TenantID: sub.TenantID, Status: sub.Status, RemoteRef: sub.RemoteRef, Topic: sub.Topic,
		LastHandshakeAt: sub.LastHandshakeAt, LastHeartbeatAt: sub.LastHeartbeatAt, Heartbeats: sub.Heartbeats,
		HeartbeatPeriod: time.Duration(sub.HeartbeatPeriodS) * time.Second, SilentSince: sub.SilentSince, EventsSinceStart: sub.EventsSinceStart}
	if sub.SourceID != nil {
		r.SourceID = *sub.SourceID
	}
	return r
}

// Report loads a tenant's subscription with its event and gap counts.
func (s *Store) Report(ctx context.Context, tenantID, subscriptionID string) (intake.SubscriptionReport, error) {
	var sub Subscription
	if err := s.q(ctx).Where("id = ? AND tenant_id = ?", subscriptionID, tenantID).Take(&sub).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return intake.SubscriptionReport{}, fault.New(fault.NotFound, "no such subscription in this tenant")
		}
		return intake.SubscriptionReport{}, err
	}
	r := subscriptionReport(sub)
	var last []int64
	if err := s.q(ctx).Raw(`SELECT max(event_number) FROM subscription_event_numbers WHERE tenant_id = ? AND subscription_id = ?
		HAVING max(event_number) IS NOT NULL`, tenantID, sub.ID).Scan(&last).Error; err != nil {
		return r, err
	}
	if len(last) > 0 {
		r.LastEventNumber = &last[0]
	}
	for _, q := range []struct {
		dst *int64
		sql string
	}{
		{&r.Events, `SELECT count(*) FROM events WHERE tenant_id = ? AND subscription_id = ?`},
		{&r.GapsOpen, `SELECT count(*) FROM subscription_gaps WHERE tenant_id = ? AND subscription_id = ? AND recovered_at IS NULL`},
		{&r.GapsRecovered, `SELECT count(*) FROM subscription_gaps WHERE tenant_id = ? AND subscription_id = ? AND recovered_at IS NOT NULL`},
	} {
		if err := s.q(ctx).Raw(q.sql, tenantID, sub.ID).Scan(q.dst).Error; err != nil {
			return r, err
		}
	}
	return r, nil
}

// DeleteSubscription removes a tenant's subscription that never received
// anything (its creation on the FHIR source failed).
func (s *Store) DeleteSubscription(ctx context.Context, tenantID, subscriptionID string) error {
	return s.q(ctx).Exec(`DELETE FROM subscriptions s WHERE s.tenant_id = ? AND s.id = ?
		AND NOT EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id)
		AND NOT EXISTS (SELECT 1 FROM fetches f WHERE f.tenant_id = s.tenant_id AND f.subscription_id = s.id)
		AND NOT EXISTS (SELECT 1 FROM subscription_event_numbers n WHERE n.tenant_id = s.tenant_id AND n.subscription_id = s.id)`,
		tenantID, subscriptionID).Error
}
