package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
)

// ErrNotUnknown: the delivery's outcome is known (or it is being resolved);
// there is nothing to resolve.
var ErrNotUnknown = fault.New(fault.Conflict, "the delivery's outcome is not unknown")

// DeliveryRecord is a delivery as an operator sees it: ids, status and
// times, no PHI. The Message-ID is the one sent, to look for in the
// relay's logs.
type DeliveryRecord struct {
	delivery.Delivery
	MessageID    string
	Error        string
	NoticeStatus string
	RunID        *int64
	Step         string
	UpdatedAt    time.Time
}

const deliveryRecordSQL = `SELECT d.id, d.tenant_id, d.notice_id, d.channel, d.status, d.attempts, d.message_id, d.error,
	n.status AS notice_status, n.run_id, coalesce(n.step, '') AS step, d.updated_at
	FROM deliveries d JOIN notices n ON n.id = d.notice_id`

// UnknownDeliveries lists the deliveries whose outcome is unknown, oldest
// first; tenantID "" lists every tenant's.
func (s *Store) UnknownDeliveries(ctx context.Context, tenantID string) ([]DeliveryRecord, error) {
	var out []DeliveryRecord
	q := deliveryRecordSQL + ` WHERE d.status = 'unknown' AND (? = '' OR d.tenant_id = ?) ORDER BY d.updated_at, d.id`
	if err := s.q(ctx).Raw(q, tenantID, tenantID).Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("list unknown deliveries: %w", err)
	}
	return out, nil
}

// DeliveryByID reads one delivery.
func (s *Store) DeliveryByID(ctx context.Context, id int64) (DeliveryRecord, error) {
	var out []DeliveryRecord
	if err := s.q(ctx).Raw(deliveryRecordSQL+` WHERE d.id = ?`, id).Scan(&out).Error; err != nil {
		return DeliveryRecord{}, fmt.Errorf("read delivery: %w", err)
	}
	if len(out) == 0 {
		return DeliveryRecord{}, ErrNotFound
	}
	return out[0], nil
}

// lockUnknown reads an unknown delivery whose notice is still pending,
// locked for its resolution.
func (s *Store) lockUnknown(ctx context.Context, id int64) (DeliveryRecord, error) {
	var out []DeliveryRecord
	if err := s.q(ctx).Raw(deliveryRecordSQL+` WHERE d.id = ? FOR UPDATE OF d, n`, id).Scan(&out).Error; err != nil {
		return DeliveryRecord{}, fmt.Errorf("read delivery: %w", err)
	}
	switch {
	case len(out) == 0:
		return DeliveryRecord{}, ErrNotFound
	case out[0].Status != delivery.DeliveryUnknown:
		return out[0], fault.Wrap(ErrNotUnknown, fault.Conflict, fmt.Sprintf("delivery %d is %s, not unknown", id, out[0].Status))
	}
	return out[0], nil
}

// ResolveSent records an unknown delivery as sent, as an operator found it
// in the relay's logs: the delivery and its notice are sent, audited with
// actor as the one who said so. Nothing is sent.
func (s *Store) ResolveSent(ctx context.Context, id int64, actor string) error {
	return s.InTx(ctx, func(tx *Store) error {
		d, err := tx.lockUnknown(ctx, id)
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE deliveries SET status = 'sent', error = '', updated_at = now() WHERE id = $1`, id); err != nil {
			return fmt.Errorf("resolve delivery: %w", err)
		}
		audits := []AuditRecord{{TenantID: d.TenantID, Actor: actor, Action: "delivery.resolved",
			SubjectType: "delivery", SubjectID: strconv.FormatInt(id, 10),
			Detail: map[string]any{"notice_id": d.NoticeID, "channel": d.Channel, "resolution": "sent"}}}
		res, err := tx.exec(ctx, `UPDATE notices SET status = 'sent', reasons = '[]', updated_at = now() WHERE id = $1 AND status = 'pending'`, d.NoticeID)
		if err != nil {
			return fmt.Errorf("resolve notice: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			a := noticeAudit(delivery.Notice{ID: d.NoticeID, TenantID: d.TenantID}, delivery.NoticeSent, nil)
			a.Actor, a.Detail = actor, map[string]any{"reasons": []string{}, "resolved": true}
			audits = append(audits, a)
		}
		return tx.AuditMany(ctx, audits)
	})
}

// RequestResend checks that an unknown delivery can be sent again (its
// notice is still pending and belongs to a run) and audits the request
// with actor; the resend itself goes through the normal path
// (journey.Engine.Resend), which claims the delivery.
func (s *Store) RequestResend(ctx context.Context, id int64, actor string) (DeliveryRecord, error) {
	var d DeliveryRecord
	err := s.InTx(ctx, func(tx *Store) error {
		var err error
		if d, err = tx.lockUnknown(ctx, id); err != nil {
			return err
		}
		if d.NoticeStatus != delivery.NoticePending || d.RunID == nil || d.Step == "" {
			return fault.Wrap(ErrNotUnknown, fault.Conflict, fmt.Sprintf("delivery %d: its notice is %s and cannot be sent again", id, d.NoticeStatus))
		}
		return tx.Audit(ctx, AuditRecord{TenantID: d.TenantID, Actor: actor, Action: "delivery.resolved",
			SubjectType: "delivery", SubjectID: strconv.FormatInt(id, 10),
			Detail: map[string]any{"notice_id": d.NoticeID, "channel": d.Channel, "resolution": "resend"}})
	})
	return d, err
}
