package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/seal"
)

// notice converts a notice row.
func notice(r Notice) delivery.Notice {
	n := delivery.Notice{ID: r.ID, TenantID: r.TenantID, EventID: r.EventID, Type: r.NoticeType, Status: r.Status,
		PortalToken: r.PortalToken, RunID: r.RunID, Template: r.Template}
	if r.Step != nil {
		n.Step = *r.Step
	}
	return n
}

// EnsureNotice returns the event's notice of that type, creating it (pending,
// with a fresh portal token) the first time. Retried tasks get the same notice.
func (s *Store) EnsureNotice(ctx context.Context, tenantID string, eventID int64, noticeType string) (delivery.Notice, error) {
	err := s.q(ctx).Exec(`INSERT INTO notices (tenant_id, event_id, notice_type, status, reasons, portal_token)
		VALUES (?, ?, ?, ?, '[]', ?) ON CONFLICT (event_id, notice_type) WHERE run_id IS NULL DO NOTHING`,
		tenantID, eventID, noticeType, delivery.NoticePending, seal.NewToken()).Error
	if err != nil {
		return delivery.Notice{}, fmt.Errorf("insert notice: %w", err)
	}
	var got Notice
	if err := s.q(ctx).Where("event_id = ? AND notice_type = ? AND run_id IS NULL", eventID, noticeType).Take(&got).Error; err != nil {
		return delivery.Notice{}, translate(err)
	}
	return notice(got), nil
}

// SealNoticePayload stores the notice's payload and its portal view
// (nil: none), sealed, with the portal's decision (nil: none) in the same
// transaction.
func (s *Store) SealNoticePayload(ctx context.Context, noticeID int64, payload, portal []byte, portalDecision *delivery.Decision) error {
	return s.InTx(ctx, func(tx *Store) error {
		if portalDecision != nil {
			if err := tx.RecordDecision(ctx, *portalDecision); err != nil {
				return err
			}
		}
		// The payload is sealed for its row (tenant and portal token), read first.
		var n Notice
		if err := tx.q(ctx).Select("tenant_id", "portal_token").Where("id = ?", noticeID).Clauses(clause.Locking{Strength: "UPDATE"}).
			Take(&n).Error; err != nil {
			return translate(err)
		}
		set := map[string]any{"payload_sealed": s.seal(payload, colNoticePayload, n.TenantID, n.PortalToken)}
		if portal != nil {
			set["portal_sealed"] = s.seal(portal, colNoticePortal, n.TenantID, n.PortalToken)
		}
		return tx.q(ctx).Model(&Notice{}).Where("id = ?", noticeID).Updates(set).Error
	})
}

// NoticePayload opens a notice's sealed payload.
func (s *Store) NoticePayload(ctx context.Context, noticeID int64) ([]byte, error) {
	var n Notice
	if err := s.q(ctx).Select("tenant_id", "portal_token", "payload_sealed").Where("id = ?", noticeID).Take(&n).Error; err != nil {
		return nil, translate(err)
	}
	if len(n.PayloadSealed) == 0 {
		return nil, ErrNotFound
	}
	return s.open(n.PayloadSealed, colNoticePayload, n.TenantID, n.PortalToken)
}

// FinishNotice sets a notice's final status with its reasons and audits it.
// reasons are policy texts or delivery errors and never hold PHI.
func (s *Store) FinishNotice(ctx context.Context, n delivery.Notice, status string, reasons []string) error {
	if reasons == nil {
		reasons = []string{}
	}
	rj, err := json.Marshal(reasons)
	if err != nil {
		return err
	}
	return s.InTx(ctx, func(tx *Store) error {
		// Only a pending notice is finished: a late or duplicate task must not
		// turn "sent" into "failed".
		res := tx.q(ctx).Model(&Notice{}).Where("id = ? AND status = ?", n.ID, delivery.NoticePending).
			Updates(map[string]any{"status": status, "reasons": gorm.Expr("?::jsonb", string(rj)), "updated_at": gorm.Expr("now()")})
		if res.Error != nil {
			return fmt.Errorf("finish notice: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return nil
		}
		return tx.Audit(ctx, noticeAudit(n, status, reasons))
	})
}

// RecordDecision stores a policy decision and its audit row in one transaction.
func (s *Store) RecordDecision(ctx context.Context, d delivery.Decision) error {
	if d.Reasons == nil {
		d.Reasons = []string{}
	}
	rj, _ := json.Marshal(d.Reasons)
	return s.InTx(ctx, func(tx *Store) error {
		if d.Redact == nil {
			d.Redact = []string{}
		}
		if d.Obligations == nil {
			d.Obligations = []string{}
		}
		redact, _ := json.Marshal(d.Redact)
		obligations, _ := json.Marshal(d.Obligations)
		row := PolicyDecision{TenantID: d.TenantID, NoticeID: d.NoticeID, Channel: d.Channel, PolicyRevision: d.Revision,
			InputHash: d.InputHash, Allow: d.Allow, Reasons: rj, Redact: redact, Obligations: obligations, LatencyUS: d.LatencyUS}
		if err := tx.q(ctx).Create(&row).Error; err != nil {
			return fmt.Errorf("record decision: %w", err)
		}
		return tx.Audit(ctx, decisionAudit(d))
	})
}

// BeginDelivery claims the (notice, channel) delivery for an attempt. It
// reports proceed=false when the delivery was already sent, and
// ErrOutcomeUnknown when its outcome is unknown, so a retried or duplicated
// task never sends twice: a delivery an earlier attempt left "sending" (the
// process died mid-send) is marked unknown here, in its own commit. With
// resend (an operator's), an unknown delivery is claimed instead, and only
// a run that was cancelled or entered in error stops it.
func (s *Store) BeginDelivery(ctx context.Context, n delivery.Notice, channel, messageID string, resend bool, disclosed delivery.Disclosure) (delivery.Delivery, bool, error) {
	var d Delivery
	sealed := s.sealDisclosure(n.TenantID, n.ID, channel, disclosed)
	proceed, unknown := false, false
	err := s.InTx(ctx, func(tx *Store) error {
		if err := tx.q(ctx).Exec(`INSERT INTO deliveries (tenant_id, notice_id, channel, status, message_id, disclosure_sealed)
			VALUES (?, ?, ?, 'sending', ?, ?) ON CONFLICT (notice_id, channel) DO NOTHING`, n.TenantID, n.ID, channel, messageID, sealed).Error; err != nil {
			return fmt.Errorf("insert delivery: %w", err)
		}
		if err := tx.q(ctx).Raw(`SELECT * FROM deliveries WHERE notice_id = ? AND channel = ? FOR UPDATE`, n.ID, channel).Scan(&d).Error; err != nil {
			return err
		}
		switch {
		case d.Status == delivery.DeliverySent:
			return nil
		case d.Status == delivery.DeliveryUnknown && !resend:
			unknown = true
			return nil
		case d.Status == delivery.DeliverySending && d.Attempts > 0:
			unknown = true
			return tx.markUnknown(ctx, []Delivery{d}, "worker", unfinishedReason)
		}
		if n.RunID != nil {
			// The run is read under a share lock: a cancellation that ends it
			// either committed before (nothing is sent) or waits for this claim.
			var runs []struct{ Status, Outcome string }
			if err := tx.q(ctx).Raw(`SELECT status, outcome FROM runs WHERE id = ? FOR SHARE`, *n.RunID).Scan(&runs).Error; err != nil {
				return err
			}
			if len(runs) == 1 && runs[0].Status == "ended" && (!resend || stopsResend(runs[0].Outcome)) {
				return delivery.ErrRunEnded
			}
		}
		proceed = true
		// One Message-ID for every attempt of a delivery, chosen before the
		// first: an operator finds an unknown one in the relay's log, and a
		// mailbox that got it already can tell a resend is the same mail.
		if d.MessageID == "" {
			d.MessageID = messageID
		}
		// What this attempt discloses (the address may have changed since
		// an earlier one): an attempt that never finishes is accounted for
		// from it.
		if err := tx.q(ctx).Exec(`UPDATE deliveries SET attempts = attempts + 1, status = 'sending', message_id = ?, disclosure_sealed = ?, updated_at = now() WHERE id = ?`,
			d.MessageID, sealed, d.ID).Error; err != nil {
			return err
		}
		// The decision log names the delivery each decision governed (the
		// portal's governs none: the page shows what it allowed).
		if err := tx.q(ctx).Exec(`UPDATE policy_decisions SET delivery_id = ? WHERE notice_id = ? AND delivery_id IS NULL AND channel <> 'portal'`, d.ID, n.ID).Error; err != nil {
			return err
		}
		d.Attempts++
		detail := map[string]any{"notice_id": n.ID, "channel": channel, "attempt": d.Attempts}
		if resend {
			detail["resend"] = true
		}
		return tx.Audit(ctx, AuditRecord{TenantID: n.TenantID, Actor: "worker", Action: "delivery.attempt",
			SubjectType: "delivery", SubjectID: strconv.FormatInt(d.ID, 10), Detail: detail})
	})
	if err == nil && unknown {
		err = delivery.ErrOutcomeUnknown
	}
	return delivery.Delivery{ID: d.ID, TenantID: d.TenantID, NoticeID: d.NoticeID, Channel: d.Channel, Status: d.Status, Attempts: d.Attempts, MessageID: d.MessageID}, proceed, err
}

// FinishDelivery records an attempt's outcome. errText never holds PHI.
// A delivery sent, or whose outcome is unknown (it may have gone out),
// adds disclosed, completed with the delivery's ids and status, to the
// patient's accounting of disclosures in the same transaction.
func (s *Store) FinishDelivery(ctx context.Context, d delivery.Delivery, status string, tls bool, messageID, errText string, disclosed delivery.Disclosure) error {
	return s.InTx(ctx, func(tx *Store) error {
		if dc, ok := outcomeDisclosure(d, status, disclosed); ok {
			if err := tx.RecordDisclosure(ctx, dc); err != nil {
				return err
			}
		}
		set := map[string]any{"status": status, "tls": tls, "error": truncate(errText, 500), "updated_at": gorm.Expr("now()")}
		if messageID != "" { // a failed attempt keeps the delivery's Message-ID
			set["message_id"] = messageID
		}
		if err := tx.q(ctx).Model(&Delivery{}).Where("id = ?", d.ID).Updates(set).Error; err != nil {
			return fmt.Errorf("finish delivery: %w", err)
		}
		detail := map[string]any{"notice_id": d.NoticeID, "channel": d.Channel, "tls": tls, "attempt": d.Attempts}
		if errText != "" {
			detail["error"] = truncate(errText, 500)
		}
		return tx.Audit(ctx, AuditRecord{TenantID: d.TenantID, Actor: "worker", Action: "delivery." + status,
			SubjectType: "delivery", SubjectID: strconv.FormatInt(d.ID, 10), Detail: detail})
	})
}

// NoticeOutcome is a notice's state for reports (no PHI: ids, status, reasons).
type NoticeOutcome struct {
	NoticeID     int64
	EventID      int64
	ResourceType string
	ResourceID   string
	Status       string
	Reasons      []string
	Delivery     string
}

// NoticeOutcomes lists notices of a tenant, newest last.
func (s *Store) NoticeOutcomes(ctx context.Context, tenantID string) ([]NoticeOutcome, error) {
	type row struct {
		NoticeID     int64
		EventID      int64
		ResourceType string
		ResourceID   string
		Status       string
		Reasons      json.RawMessage
		Delivery     *string
	}
	var rows []row
	err := s.q(ctx).Raw(`SELECT n.id AS notice_id, n.event_id, e.resource_type, e.resource_id, n.status, n.reasons,
			(SELECT d.status FROM deliveries d WHERE d.notice_id = n.id ORDER BY d.id DESC LIMIT 1) AS delivery
		FROM notices n JOIN events e ON e.id = n.event_id WHERE n.tenant_id = ? ORDER BY n.id`, tenantID).Scan(&rows).Error
	if err != nil {
		return nil, err
	}
	out := make([]NoticeOutcome, 0, len(rows))
	for _, r := range rows {
		o := NoticeOutcome{NoticeID: r.NoticeID, EventID: r.EventID, ResourceType: r.ResourceType, ResourceID: r.ResourceID, Status: r.Status}
		_ = json.Unmarshal(r.Reasons, &o.Reasons)
		if r.Delivery != nil {
			o.Delivery = *r.Delivery
		}
		out = append(out, o)
	}
	return out, nil
}

// Counts are table sizes for reports and tests.
type Counts struct {
	Events, Outbox, OutboxPending, Notices, Deliveries, Audit int64
	ByStatus                                                  map[string]int64
}

// CountAll counts a tenant's rows.
func (s *Store) CountAll(ctx context.Context, tenantID string) (Counts, error) {
	c := Counts{ByStatus: map[string]int64{}}
	for _, q := range []struct {
		dst *int64
		sql string
	}{
		{&c.Events, `SELECT count(*) FROM events WHERE tenant_id = ?`},
		{&c.Outbox, `SELECT count(*) FROM outbox WHERE tenant_id = ?`},
		{&c.OutboxPending, `SELECT count(*) FROM outbox WHERE tenant_id = ? AND enqueued_at IS NULL`},
		{&c.Notices, `SELECT count(*) FROM notices WHERE tenant_id = ?`},
		{&c.Deliveries, `SELECT count(*) FROM deliveries WHERE tenant_id = ?`},
		{&c.Audit, `SELECT count(*) FROM audit_log WHERE tenant_id = ?`},
	} {
		if err := s.q(ctx).Raw(q.sql, tenantID).Scan(q.dst).Error; err != nil {
			return c, err
		}
	}
	type kv struct {
		Status string
		N      int64
	}
	var rows []kv
	if err := s.q(ctx).Raw(`SELECT status, count(*) AS n FROM notices WHERE tenant_id = ? GROUP BY status`, tenantID).Scan(&rows).Error; err != nil {
		return c, err
	}
	for _, r := range rows {
		c.ByStatus[r.Status] = r.N
	}
	return c, nil
}

// IsNotFound reports whether err is ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// RawScan runs a read-only query into dst; for reports and tests.
func (s *Store) RawScan(ctx context.Context, dst any, sql string, args ...any) error {
	return s.q(ctx).Raw(sql, args...).Scan(dst).Error
}
