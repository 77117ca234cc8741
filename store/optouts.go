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

// OptedOutPurposes are the purposes a patient unsubscribed from, sorted
// and once each, under any index version still probed; none is an empty
// list.
func (s *Store) OptedOutPurposes(ctx context.Context, tenantID, patientRef string) ([]string, error) {
	var out []string
	err := s.q(ctx).Raw(`SELECT DISTINCT purpose FROM purpose_opt_outs WHERE tenant_id = ? AND patient_index IN ? ORDER BY purpose`,
		tenantID, s.patientProbes(tenantID, patientRef)).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("opted-out purposes: %w", err)
	}
	return out, nil
}

// noticeRun is whom a notice of a run was for: the patient reference, from
// the run's sealed facts, and the run's subject.
type noticeRun struct {
	PatientRef string
	Subject    string
}

// runOfNotice finds the run a tenant's notice was sent for; ErrNotFound
// when the tenant has no such notice of a run.
func (s *Store) runOfNotice(ctx context.Context, tenantID string, noticeID int64) (noticeRun, error) {
	var rows []struct {
		Subject     string
		FactsSealed []byte
	}
	err := s.q(ctx).Raw(`SELECT r.subject, r.facts_sealed FROM notices n JOIN runs r ON r.id = n.run_id
		WHERE n.id = ? AND n.tenant_id = ? AND r.tenant_id = ?`, noticeID, tenantID, tenantID).Scan(&rows).Error
	if err != nil {
		return noticeRun{}, fmt.Errorf("notice %d: %w", noticeID, err)
	}
	if len(rows) == 0 {
		return noticeRun{}, fmt.Errorf("notice %d: %w", noticeID, ErrNotFound)
	}
	f, err := s.openFacts(tenantID, rows[0].Subject, rows[0].FactsSealed)
	if err != nil {
		return noticeRun{}, fmt.Errorf("notice %d: the run's facts: %w", noticeID, err)
	}
	if f["patient"] == "" {
		return noticeRun{}, fmt.Errorf("notice %d: the run names no patient: %w", noticeID, ErrNotFound)
	}
	return noticeRun{PatientRef: f["patient"], Subject: rows[0].Subject}, nil
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
		var already int64
		if err := tx.q(ctx).Raw(`SELECT count(*) FROM purpose_opt_outs WHERE tenant_id = ? AND patient_index IN ? AND purpose = ?`,
			tenantID, tx.patientProbes(tenantID, nr.PatientRef), purpose).Scan(&already).Error; err != nil {
			return fmt.Errorf("unsubscribe: %w", err)
		}
		if already > 0 {
			return nil
		}
		idx := tx.PatientIndex(tenantID, nr.PatientRef)
		res := tx.q(ctx).Exec(`INSERT INTO purpose_opt_outs (tenant_id, patient_index, purpose, notice_id, created_at, patient_sealed)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, tenantID, idx, purpose, noticeID, now,
			tx.seal([]byte(nr.PatientRef), colOptOutPatient, tenantID, purpose, idx))
		if res.Error != nil {
			return fmt.Errorf("unsubscribe: %w", translate(res.Error))
		}
		if added = res.RowsAffected == 1; !added {
			return nil
		}
		// The whole patient leaves the purpose, not one subject's run.
		var id int64
		if id, wakes, err = tx.recordEngagement(ctx, tenantID, nr.PatientRef, "", "unsubscribed", nil, now, false); err != nil {
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
	_, wakes, err := s.recordEngagement(ctx, tenantID, nr.PatientRef, subject, eventType, nil, now, true)
	return wakes, err
}
