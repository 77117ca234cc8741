package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/portal"
)

// indexPortalCode keys the hash of a portal one-time code: a six-digit code
// hashed without a key would be undone by trying the million codes.
const indexPortalCode = "portal-code"

var _ portal.Store = (*Store)(nil)

// PortalNotice finds a tenant's notice by its portal token, with the
// tenant's verification method and the notice's portal view opened.
func (s *Store) PortalNotice(ctx context.Context, tenantID, token string) (portal.Notice, error) {
	var row struct {
		ID                 int64
		TenantID           string
		PortalToken        string
		CreatedAt          time.Time
		PortalSealed       []byte
		PortalVerification string
	}
	err := s.q(ctx).Raw(`SELECT n.id, n.tenant_id, n.portal_token, n.created_at, n.portal_sealed, t.portal_verification
		FROM notices n JOIN tenants t ON t.id = n.tenant_id WHERE n.tenant_id = ? AND n.portal_token = ?`, tenantID, token).Scan(&row).Error
	if err != nil {
		return portal.Notice{}, err
	}
	if row.ID == 0 {
		return portal.Notice{}, ErrNotFound
	}
	n := portal.Notice{ID: row.ID, TenantID: row.TenantID, CreatedAt: row.CreatedAt, Verification: row.PortalVerification}
	if len(row.PortalSealed) > 0 {
		plain, err := s.open(row.PortalSealed, colNoticePortal, row.TenantID, row.PortalToken)
		if err != nil {
			return portal.Notice{}, fmt.Errorf("notice %d: open the portal view: %w", row.ID, err)
		}
		var v delivery.PortalView
		if err := json.Unmarshal(plain, &v); err != nil {
			return portal.Notice{}, fmt.Errorf("notice %d: the portal view does not decode", row.ID)
		}
		n.View = &v
	}
	return n, nil
}

// SetPortalVerification sets how a tenant's patients prove who they are at
// the portal (portal.VerifyCode, ...), and audits it.
func (s *Store) SetPortalVerification(ctx context.Context, tenantID, method, actor string) error {
	if !portal.ValidVerification(method) {
		return fault.New(fault.Invalid, "portal verification must be code, birth_date or code_and_birth_date")
	}
	return s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Exec(`UPDATE tenants SET portal_verification = ? WHERE id = ?`, method, tenantID)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: actor, Action: "portal.settings",
			SubjectType: "tenant", SubjectID: tenantID, Detail: map[string]any{"verification": method}})
	})
}

// PortalVerification is a tenant's portal verification method.
func (s *Store) PortalVerification(ctx context.Context, tenantID string) (string, error) {
	var m []string
	if err := s.q(ctx).Raw(`SELECT portal_verification FROM tenants WHERE id = ?`, tenantID).Scan(&m).Error; err != nil {
		return "", err
	}
	if len(m) == 0 {
		return "", ErrNotFound
	}
	return m[0], nil
}

// portalAccess is a notice's portal_access row.
type portalAccess struct {
	CodeHash      sql.NullString
	CodeExpiresAt sql.NullTime
	CodeAttempts  int
	CodesSent     int
	LastCodeAt    sql.NullTime
	Failures      int
	LockedUntil   sql.NullTime
}

// lockedAccess reads (creating it) and locks the notice's portal_access row.
func (tx *Store) lockedAccess(ctx context.Context, tenantID string, noticeID int64) (portalAccess, error) {
	var a portalAccess
	if err := tx.q(ctx).Exec(`INSERT INTO portal_access (notice_id, tenant_id) SELECT id, tenant_id FROM notices WHERE id = ? AND tenant_id = ?
		ON CONFLICT (notice_id) DO NOTHING`, noticeID, tenantID).Error; err != nil {
		return a, err
	}
	err := tx.q(ctx).Raw(`SELECT code_hash, code_expires_at, code_attempts, codes_sent, last_code_at, failures, locked_until
		FROM portal_access WHERE notice_id = ? AND tenant_id = ? FOR UPDATE`, noticeID, tenantID).Row().
		Scan(&a.CodeHash, &a.CodeExpiresAt, &a.CodeAttempts, &a.CodesSent, &a.LastCodeAt, &a.Failures, &a.LockedUntil)
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

func (a portalAccess) locked(now time.Time) bool {
	return a.LockedUntil.Valid && a.LockedUntil.Time.After(now)
}

func (s *Store) portalCodeHash(tenantID string, noticeID int64, code string) string {
	return s.keys.BlindIndex(tenantID, indexPortalCode, portalCodeValue(noticeID, code))
}

func portalCodeValue(noticeID int64, code string) string {
	return strconv.FormatInt(noticeID, 10) + "\x00" + code
}

func portalAudit(tenantID string, noticeID int64, action string, detail map[string]any) AuditRecord {
	return AuditRecord{TenantID: tenantID, Actor: "portal", Action: action, SubjectType: "notice",
		SubjectID: strconv.FormatInt(noticeID, 10), Detail: detail}
}

// IssuePortalCode stores a new one-time code's keyed hash for the notice
// (see portal.Store). Each code sent counts toward the lock: a patient who
// asks for codes without end locks the notice like one who guesses.
func (s *Store) IssuePortalCode(ctx context.Context, tenantID string, noticeID int64, code string, now time.Time, lim portal.Limits) (portal.Result, error) {
	var res portal.Result
	err := s.InTx(ctx, func(tx *Store) error {
		a, err := tx.lockedAccess(ctx, tenantID, noticeID)
		if err != nil {
			return err
		}
		switch {
		case a.locked(now):
			res = portal.Locked
			return nil
		case a.LastCodeAt.Valid && now.Sub(a.LastCodeAt.Time) < lim.CodeInterval:
			res = portal.TooSoon
			return nil
		case a.CodesSent >= lim.CodesPerLock:
			res = portal.Locked
			if err := tx.q(ctx).Exec(`UPDATE portal_access SET locked_until = ?, codes_sent = 0, code_hash = NULL, updated_at = now() WHERE notice_id = ?`,
				now.Add(lim.LockFor), noticeID).Error; err != nil {
				return err
			}
			return tx.Audit(ctx, portalAudit(tenantID, noticeID, "portal.locked", map[string]any{"reason": "too many codes"}))
		}
		res = portal.CodeSent
		if err := tx.q(ctx).Exec(`UPDATE portal_access SET code_hash = ?, code_expires_at = ?, code_attempts = 0, codes_sent = codes_sent + 1,
			last_code_at = ?, updated_at = now() WHERE notice_id = ?`, s.portalCodeHash(tenantID, noticeID, code), now.Add(lim.CodeTTL), now, noticeID).Error; err != nil {
			return err
		}
		return tx.Audit(ctx, portalAudit(tenantID, noticeID, "portal.code_sent", nil))
	})
	return res, err
}

// VerifyPortal judges an attempt (see portal.Store). A code is good once,
// for its life and its tries; every wrong proof counts toward the lock,
// which also burns the code.
func (s *Store) VerifyPortal(ctx context.Context, tenantID string, noticeID int64, at portal.Attempt, now time.Time, lim portal.Limits) (portal.Result, error) {
	var res portal.Result
	err := s.InTx(ctx, func(tx *Store) error {
		a, err := tx.lockedAccess(ctx, tenantID, noticeID)
		if err != nil {
			return err
		}
		if a.locked(now) {
			res = portal.Locked
			return nil
		}
		ok := at.BirthDateOK
		if at.NeedCode {
			live := a.CodeHash.Valid && a.CodeExpiresAt.Valid && a.CodeExpiresAt.Time.After(now) && a.CodeAttempts < lim.CodeAttempts
			// A code issued before a rotation checks under its own version.
			ok = ok && live && s.keys.Index().Matches(tenantID, indexPortalCode, portalCodeValue(noticeID, at.Code), a.CodeHash.String)
		}
		if ok {
			res = portal.Verified
			if err := tx.q(ctx).Exec(`UPDATE portal_access SET code_hash = NULL, code_attempts = 0, failures = 0, codes_sent = 0, updated_at = now() WHERE notice_id = ?`,
				noticeID).Error; err != nil {
				return err
			}
			// Ended sessions of the notice go as a new one starts.
			if err := tx.q(ctx).Exec(`DELETE FROM portal_sessions WHERE notice_id = ? AND expires_at <= ?`, noticeID, now).Error; err != nil {
				return err
			}
			if err := tx.q(ctx).Exec(`INSERT INTO portal_sessions (id_hash, tenant_id, notice_id, expires_at) VALUES (?, ?, ?, ?)`,
				at.Session, tenantID, noticeID, at.SessionUntil).Error; err != nil {
				return translate(err)
			}
			return tx.Audit(ctx, portalAudit(tenantID, noticeID, "portal.verified", nil))
		}
		set := map[string]any{"failures": gorm.Expr("failures + 1"), "updated_at": gorm.Expr("now()")}
		if at.NeedCode {
			set["code_attempts"] = gorm.Expr("code_attempts + 1")
			if a.CodeAttempts+1 >= lim.CodeAttempts {
				set["code_hash"] = nil // spent: ask for a new one
			}
		}
		res = portal.Wrong
		action := "portal.refused"
		if a.Failures+1 >= lim.Failures {
			res, action = portal.Locked, "portal.locked"
			set = map[string]any{"failures": 0, "code_hash": nil, "locked_until": now.Add(lim.LockFor), "updated_at": gorm.Expr("now()")}
		}
		if err := tx.q(ctx).Table("portal_access").Where("notice_id = ?", noticeID).Updates(set).Error; err != nil {
			return err
		}
		return tx.Audit(ctx, portalAudit(tenantID, noticeID, action, nil))
	})
	return res, err
}

// PortalSession finds the notice a live session opened (see portal.Store).
func (s *Store) PortalSession(ctx context.Context, tenantID, sessionHash string, now time.Time) (int64, error) {
	var ids []int64
	if err := s.q(ctx).Raw(`SELECT notice_id FROM portal_sessions WHERE id_hash = ? AND tenant_id = ? AND expires_at > ?`,
		sessionHash, tenantID, now).Scan(&ids).Error; err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, ErrNotFound
	}
	return ids[0], nil
}

// PortalViewed writes the audit row of a patient's view of a notice and,
// in the same transaction, its entry in the accounting of disclosures.
func (s *Store) PortalViewed(ctx context.Context, tenantID string, noticeID int64, v delivery.PortalView) error {
	return s.InTx(ctx, func(tx *Store) error {
		if err := tx.RecordDisclosure(ctx, v.Disclosure(tenantID, v.Patient, s.PatientIndex(tenantID, v.Patient), noticeID)); err != nil {
			return err
		}
		return tx.Audit(ctx, portalAudit(tenantID, noticeID, "portal.viewed", nil))
	})
}
