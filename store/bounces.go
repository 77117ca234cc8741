package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm/clause"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/notify"
)

var _ delivery.BounceStore = (*Store)(nil)

// RecordBounce applies a relay's report on the message a tenant's
// delivery sent as messageID, in one transaction with its audit row. A
// permanent failure (b.Hard) on a delivery not yet bounced marks it
// bounced and counts one hard bounce on each of the patient's contact
// rows that send to the bounced address (the address of record in the
// notice's portal view); a row reaching suppressAfter is suppressed. A
// report on a delivery already bounced, or a soft one, changes nothing
// but is audited. ErrNotFound when the tenant sent no such message.
func (s *Store) RecordBounce(ctx context.Context, tenantID, messageID string, b notify.Bounce, suppressAfter int, actor string) (delivery.Bounced, error) {
	var out delivery.Bounced
	err := s.InTx(ctx, func(tx *Store) error {
		var row struct {
			ID           int64
			NoticeID     int64
			Status       string
			PortalToken  string
			PortalSealed []byte
		}
		if err := tx.q(ctx).Raw(`SELECT d.id, d.notice_id, d.status, n.portal_token, n.portal_sealed
			FROM deliveries d JOIN notices n ON n.id = d.notice_id
			WHERE d.tenant_id = ? AND d.message_id = ? AND d.message_id <> '' FOR UPDATE OF d`, tenantID, messageID).Scan(&row).Error; err != nil {
			return err
		}
		if row.ID == 0 {
			return ErrNotFound
		}
		out = delivery.Bounced{DeliveryID: row.ID, NoticeID: row.NoticeID, Hard: b.Hard}
		if len(row.PortalSealed) > 0 {
			plain, err := tx.open(row.PortalSealed, colNoticePortal, tenantID, row.PortalToken)
			if err != nil {
				return fmt.Errorf("delivery %d: open the portal view: %w", row.ID, err)
			}
			var v delivery.PortalView
			if err := json.Unmarshal(plain, &v); err != nil {
				return fmt.Errorf("delivery %d: the portal view does not decode", row.ID)
			}
			out.Patient, out.Subject = v.Patient, v.Subject
			if b.Hard && row.Status != delivery.DeliveryBounced && row.Status != delivery.DeliveryFailed {
				n, err := tx.countHardBounce(ctx, tenantID, v.Patient, v.Email, suppressAfter)
				if err != nil {
					return err
				}
				out.Suppressed = n
			}
		}
		out.Counted = b.Hard && row.Status != delivery.DeliveryBounced && row.Status != delivery.DeliveryFailed
		if out.Counted {
			if err := tx.q(ctx).Exec(`UPDATE deliveries SET status = ?, updated_at = now() WHERE id = ?`, delivery.DeliveryBounced, row.ID).Error; err != nil {
				return err
			}
		}
		detail := map[string]any{"notice_id": row.NoticeID, "hard": b.Hard, "status": b.Status, "action": b.Action, "counted": out.Counted}
		if out.Suppressed > 0 {
			detail["suppressed_contacts"] = out.Suppressed
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: actor, Action: "delivery.bounced",
			SubjectType: "delivery", SubjectID: fmt.Sprint(row.ID), Detail: detail})
	})
	if err != nil {
		return delivery.Bounced{}, translate(err)
	}
	return out, nil
}

// countHardBounce counts a hard bounce on each contact row of the patient
// whose recipient (the confidential address when it has one, else the
// email) is address, and suppresses those reaching suppressAfter. It
// returns how many rows are suppressed now.
func (s *Store) countHardBounce(ctx context.Context, tenantID, patientRef, address string, suppressAfter int) (int, error) {
	if patientRef == "" || address == "" {
		return 0, nil
	}
	var rows []Contact
	if err := s.q(ctx).Where("tenant_id = ? AND patient_index IN ?", tenantID, s.patientProbes(tenantID, patientRef)).
		Clauses(clause.Locking{Strength: "UPDATE"}).Find(&rows).Error; err != nil {
		return 0, err
	}
	suppressed := 0
	for _, row := range rows {
		c, err := s.contact(row)
		if err != nil {
			return 0, err
		}
		to := c.Email
		if c.ConfidentialEmail != "" {
			to = c.ConfidentialEmail
		}
		if !strings.EqualFold(strings.TrimSpace(to), strings.TrimSpace(address)) {
			continue
		}
		var after struct{ EmailSuppressedAt *time.Time }
		if err := s.q(ctx).Raw(`UPDATE contacts SET email_hard_bounces = email_hard_bounces + 1,
				email_suppressed_at = CASE WHEN email_hard_bounces + 1 >= ? THEN coalesce(email_suppressed_at, now()) END
			WHERE id = ? RETURNING email_suppressed_at`, suppressAfter, row.ID).Scan(&after).Error; err != nil {
			return 0, err
		}
		if after.EmailSuppressedAt != nil {
			suppressed++
		}
	}
	return suppressed, nil
}
