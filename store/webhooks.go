package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/webhook"
)

// CreateWebhookEndpoint adds an endpoint with its signing secret (sealed)
// and, for a tenant's first, starts its fan-out at the chain's current
// end: an endpoint gets what happens from now on.
func (s *Store) CreateWebhookEndpoint(ctx context.Context, e webhook.Endpoint, secret []byte) error {
	if e.EventTypes == nil {
		e.EventTypes = []string{}
	}
	return s.InTx(ctx, func(tx *Store) error {
		if _, err := tx.exec(ctx, `INSERT INTO webhook_endpoints (tenant_id, id, url, secret_sealed, event_types) VALUES ($1, $2, $3, $4, $5)`,
			e.TenantID, e.ID, e.URL, tx.seal(secret, colWebhookSecret, e.TenantID, e.ID), e.EventTypes); err != nil {
			var pg *pgconn.PgError
			if errors.As(err, &pg) && pg.Code == "23505" {
				return fault.New(fault.Conflict, "an endpoint with this id exists")
			}
			return fmt.Errorf("create webhook endpoint: %w", err)
		}
		if _, err := tx.exec(ctx, `INSERT INTO webhook_cursors (tenant_id, seq)
			SELECT $1, COALESCE(max(seq), 0) FROM audit_chain WHERE tenant_id = $1 ON CONFLICT (tenant_id) DO NOTHING`, e.TenantID); err != nil {
			return fmt.Errorf("webhook cursor: %w", err)
		}
		return tx.Audit(ctx, AuditRecord{TenantID: e.TenantID, Actor: audit.ActorOr(ctx, "api"), Action: "webhook.created",
			SubjectType: "webhook_endpoint", SubjectID: e.ID, Detail: map[string]any{"event_types": e.EventTypes}})
	})
}

// WebhookEndpoints lists a tenant's endpoints.
func (s *Store) WebhookEndpoints(ctx context.Context, tenant string) ([]webhook.Endpoint, error) {
	rows, err := s.query(ctx, `SELECT id, url, event_types, enabled, created_at FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id`, tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []webhook.Endpoint{}
	for rows.Next() {
		e := webhook.Endpoint{TenantID: tenant}
		if err := rows.Scan(&e.ID, &e.URL, &e.EventTypes, &e.Enabled, &e.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteWebhookEndpoint removes an endpoint and its messages.
func (s *Store) DeleteWebhookEndpoint(ctx context.Context, tenant, id string) error {
	return s.InTx(ctx, func(tx *Store) error {
		res, err := tx.exec(ctx, `DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "no such webhook endpoint in this tenant")
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenant, Actor: audit.ActorOr(ctx, "api"), Action: "webhook.deleted",
			SubjectType: "webhook_endpoint", SubjectID: id})
	})
}

// WebhookTenants are the tenants with an enabled endpoint.
func (s *Store) WebhookTenants(ctx context.Context) ([]string, error) {
	rows, err := s.query(ctx, `SELECT DISTINCT tenant_id FROM webhook_endpoints WHERE enabled ORDER BY tenant_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// FanOut: see webhook.Store. The cursor row's lock makes concurrent
// dispatchers take turns; (endpoint, seq) being unique makes a repeat
// harmless.
func (s *Store) FanOut(ctx context.Context, tenant string, limit int, event func(audit.Row) (string, []byte, bool)) (int, error) {
	read := 0
	err := s.InTx(ctx, func(tx *Store) error {
		var cursor int64
		if err := tx.q(ctx).Raw(`SELECT seq FROM webhook_cursors WHERE tenant_id = ? FOR UPDATE`, tenant).Row().Scan(&cursor); err != nil {
			return fmt.Errorf("webhook cursor: %w", err)
		}
		chained, err := tx.ChainedRows(ctx, tenant, cursor, limit)
		if err != nil {
			return err
		}
		if len(chained) == 0 {
			return nil
		}
		read = len(chained)
		var seqs []int64
		var types, payloads []string
		var ats []time.Time
		for _, c := range chained {
			if c.Row == nil {
				continue
			}
			typ, payload, ok := event(*c.Row)
			if !ok {
				continue
			}
			seqs, types, payloads, ats = append(seqs, c.Link.Seq), append(types, typ), append(payloads, string(payload)), append(ats, c.Row.At)
		}
		if len(seqs) > 0 {
			if _, err := tx.exec(ctx, `INSERT INTO webhook_messages (tenant_id, endpoint_id, seq, event_type, payload)
				SELECT $1, e.id, x.seq, x.typ, x.payload::jsonb
				FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[]) AS x(seq, typ, payload, at)
				JOIN webhook_endpoints e ON e.tenant_id = $1 AND e.enabled AND e.created_at <= x.at
					AND (e.event_types = '{}' OR x.typ = ANY(e.event_types))
				ON CONFLICT (tenant_id, endpoint_id, seq) DO NOTHING`, tenant, seqs, types, payloads, ats); err != nil {
				return fmt.Errorf("webhook messages: %w", err)
			}
		}
		_, err = tx.exec(ctx, `UPDATE webhook_cursors SET seq = $2 WHERE tenant_id = $1`, tenant, chained[len(chained)-1].Link.Seq)
		return err
	})
	return read, err
}

// ClaimMessages: see webhook.Store.
func (s *Store) ClaimMessages(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]webhook.Message, error) {
	rows, err := s.query(ctx, `UPDATE webhook_messages m SET next_attempt_at = $2::timestamptz + make_interval(secs => $3)
		FROM (SELECT id FROM webhook_messages WHERE status = 'pending' AND next_attempt_at <= $2
			ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) c, webhook_endpoints e
		WHERE m.id = c.id AND e.tenant_id = m.tenant_id AND e.id = m.endpoint_id
		RETURNING m.id, m.tenant_id, m.endpoint_id, e.url, e.secret_sealed, m.seq, m.payload::text, m.attempts`,
		limit, now, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim webhook messages: %w", err)
	}
	defer rows.Close()
	var out []webhook.Message
	for rows.Next() {
		var m webhook.Message
		var sealed []byte
		var seq int64
		var payload string
		if err := rows.Scan(&m.ID, &m.TenantID, &m.EndpointID, &m.URL, &sealed, &seq, &payload, &m.Attempts); err != nil {
			return nil, err
		}
		if m.Secret, err = s.open(sealed, colWebhookSecret, m.TenantID, m.EndpointID); err != nil {
			return nil, fmt.Errorf("webhook endpoint %s of tenant %s: %w", m.EndpointID, m.TenantID, err)
		}
		m.MsgID, m.Payload = webhook.MessageID(m.TenantID, m.EndpointID, seq), []byte(payload)
		out = append(out, m)
	}
	return out, rows.Err()
}

// RecordAttempt: see webhook.Store.
func (s *Store) RecordAttempt(ctx context.Context, id int64, r webhook.Result) error {
	var err error
	switch {
	case r.Delivered:
		_, err = s.exec(ctx, `UPDATE webhook_messages SET status = 'delivered', attempts = attempts + 1, last_status = $2, last_error = '',
			delivered_at = now() WHERE id = $1`, id, r.Status)
	case r.Next.IsZero():
		_, err = s.exec(ctx, `UPDATE webhook_messages SET status = 'dead', attempts = attempts + 1, last_status = $2, last_error = $3 WHERE id = $1`,
			id, r.Status, r.Err)
	default:
		_, err = s.exec(ctx, `UPDATE webhook_messages SET attempts = attempts + 1, last_status = $2, last_error = $3, next_attempt_at = $4 WHERE id = $1`,
			id, r.Status, r.Err, r.Next)
	}
	return err
}

// WebhookMessages lists a tenant's messages in a status ("dead": the
// dead-letter list), newest first.
func (s *Store) WebhookMessages(ctx context.Context, tenant, status string, limit int) ([]webhook.Listed, error) {
	rows, err := s.query(ctx, `SELECT id, endpoint_id, tenant_id, seq, event_type, status, attempts, next_attempt_at, last_status, last_error, created_at, delivered_at
		FROM webhook_messages WHERE tenant_id = $1 AND status = $2 ORDER BY id DESC LIMIT $3`, tenant, status, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []webhook.Listed{}
	for rows.Next() {
		var m webhook.Listed
		var t string
		var seq int64
		if err := rows.Scan(&m.ID, &m.EndpointID, &t, &seq, &m.EventType, &m.Status, &m.Attempts, &m.NextAttemptAt, &m.LastStatus, &m.LastError, &m.CreatedAt, &m.DeliveredAt); err != nil {
			return nil, err
		}
		m.MessageID = webhook.MessageID(t, m.EndpointID, seq)
		out = append(out, m)
	}
	return out, rows.Err()
}

// ReplayWebhookMessage makes a dead (or delivered) message of the tenant
// pending again, due now, with a fresh schedule.
func (s *Store) ReplayWebhookMessage(ctx context.Context, tenant string, id int64) error {
	return s.InTx(ctx, func(tx *Store) error {
		res, err := tx.exec(ctx, `UPDATE webhook_messages SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL
			WHERE tenant_id = $1 AND id = $2 AND status <> 'pending'`, tenant, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "no such dead or delivered webhook message in this tenant")
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenant, Actor: audit.ActorOr(ctx, "api"), Action: "webhook.replayed",
			SubjectType: "webhook_message", SubjectID: itoa(id)})
	})
}
