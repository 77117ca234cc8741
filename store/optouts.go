package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/journey"
)

// OptedOutPurposes are the purposes a patient (by blind index) unsubscribed
// from, sorted; none is an empty list.
func (s *Store) OptedOutPurposes(ctx context.Context, tenantID, patientIndex string) ([]string, error) {
	var out []string
	err := s.q(ctx).Raw(`SELECT purpose FROM purpose_opt_outs WHERE tenant_id = ? AND patient_index = ? ORDER BY purpose`,
		tenantID, patientIndex).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("opted-out purposes: %w", err)
	}
	return out, nil
}

// noticeRun is whom a notice of a run was for.
type noticeRun struct {
	PatientIndex string
	Subject      string
}

// runOfNotice finds the run a tenant's notice was sent for; ErrNotFound
// when the tenant has no such notice of a run.
func (s *Store) runOfNotice(ctx context.Context, tenantID string, noticeID int64) (noticeRun, error) {
	var rows []noticeRun
	err := s.q(ctx).Raw(`SELECT r.patient_index, r.subject FROM notices n JOIN runs r ON r.id = n.run_id
		WHERE n.id = ? AND n.tenant_id = ? AND r.tenant_id = ?`, noticeID, tenantID, tenantID).Scan(&rows).Error
	if err != nil {
		return noticeRun{}, fmt.Errorf("notice %d: %w", noticeID, err)
	}
	if len(rows) == 0 {
		return noticeRun{}, fmt.Errorf("notice %d: %w", noticeID, ErrNotFound)
	}
	return rows[0], nil
}

// Unsubscribe opts the patient a notice was sent to out of purpose, from
// that notice's one-click link: the opt-out, an "unsubscribed" engagement
// for the patient (waking runs that wait for it) and an audit row, in one
// transaction. Again for the same purpose it changes nothing and reports
// false. ErrNotFound: the tenant has no such notice.
func (s *Store) Unsubscribe(ctx context.Context, tenantID string, noticeID int64, purpose string, now time.Time) (bool, []journey.Wake, error) {
	var (
		added bool
		wakes []journey.Wake
	)
	err := s.InTx(ctx, func(tx *Store) error {
		nr, err := tx.runOfNotice(ctx, tenantID, noticeID)
		if err != nil {
			return err
		}
		res := tx.q(ctx).Exec(`INSERT INTO purpose_opt_outs (tenant_id, patient_index, purpose, notice_id, created_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, tenantID, nr.PatientIndex, purpose, noticeID, now)
		if res.Error != nil {
			return fmt.Errorf("unsubscribe: %w", translate(res.Error))
		}
		if added = res.RowsAffected == 1; !added {
			return nil
		}
		// The whole patient leaves the purpose, not one subject's run.
		var id int64
		if id, wakes, err = tx.recordEngagementOf(ctx, tenantID, nr.PatientIndex, "", "unsubscribed", nil, now, false); err != nil {
			return err
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: audit.ActorOr(ctx, "patient"), Action: "contact.unsubscribed",
			SubjectType: "notice", SubjectID: strconv.FormatInt(noticeID, 10),
			Detail: map[string]any{"purpose": purpose, "engagement_id": id, "runs_woken": len(wakes)}})
	})
	return added, wakes, err
}

// RecordNoticeEngagement records an engagement ("opened", "clicked") with a
// notice a tenant sent, for the notice's subject, and wakes the runs that
// wait for it. ErrNotFound: the tenant has no such notice.
func (s *Store) RecordNoticeEngagement(ctx context.Context, tenantID string, noticeID int64, eventType string, now time.Time) ([]journey.Wake, error) {
	nr, err := s.runOfNotice(ctx, tenantID, noticeID)
	if err != nil {
		return nil, err
	}
	subject := nr.Subject
	if strings.HasPrefix(subject, "patient:") {
		subject = "" // a patient-scoped run: the event is about the patient
	}
	_, wakes, err := s.recordEngagementOf(ctx, tenantID, nr.PatientIndex, subject, eventType, nil, now, true)
	return wakes, err
}
