package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/fault"
)

// apiKeyRow is a row of api_keys.
type apiKeyRow struct {
	ID         string
	TenantID   string
	Role       string
	Name       string
	SecretHash []byte
	CreatedAt  time.Time
	ExpiresAt  sql.NullTime
	RevokedAt  sql.NullTime
}

func (apiKeyRow) TableName() string { return "api_keys" }

func (r apiKeyRow) key() access.Key {
	k := access.Key{ID: r.ID, TenantID: r.TenantID, Role: access.Role(r.Role), Name: r.Name, CreatedAt: r.CreatedAt.UTC()}
	if r.ExpiresAt.Valid {
		t := r.ExpiresAt.Time.UTC()
		k.ExpiresAt = &t
	}
	if r.RevokedAt.Valid {
		t := r.RevokedAt.Time.UTC()
		k.RevokedAt = &t
	}
	return k
}

// InsertKey stores a new API key and audits its creation.
func (s *Store) InsertKey(ctx context.Context, k access.Key, secretHash []byte, actor string) error {
	row := apiKeyRow{ID: k.ID, TenantID: k.TenantID, Role: string(k.Role), Name: k.Name, SecretHash: secretHash, CreatedAt: k.CreatedAt}
	if k.ExpiresAt != nil {
		row.ExpiresAt = sql.NullTime{Time: *k.ExpiresAt, Valid: true}
	}
	return s.InTx(ctx, func(tx *Store) error {
		if err := translate(tx.q(ctx).Create(&row).Error); err != nil {
			if errors.Is(err, ErrUnknownReference) {
				return fault.Errorf(fault.Invalid, "no tenant %q", k.TenantID)
			}
			return err
		}
		detail := map[string]any{"role": row.Role}
		if k.ExpiresAt != nil {
			detail["expires_at"] = k.ExpiresAt.Format(time.RFC3339)
		}
		return tx.Audit(ctx, AuditRecord{TenantID: k.TenantID, Actor: actor, Action: "key.created",
			SubjectType: "api_key", SubjectID: k.ID, Detail: detail})
	})
}

// KeyByID returns a key, whatever its tenant, and its secret's hash.
func (s *Store) KeyByID(ctx context.Context, id string) (access.Key, []byte, error) {
	var row apiKeyRow
	if err := s.q(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return access.Key{}, nil, translate(err)
	}
	return row.key(), row.SecretHash, nil
}

// ListKeys returns a tenant's keys, newest first, without their hashes.
func (s *Store) ListKeys(ctx context.Context, tenantID string) ([]access.Key, error) {
	var rows []apiKeyRow
	if err := s.q(ctx).Omit("secret_hash").Where("tenant_id = ?", tenantID).Order("created_at DESC, id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	keys := make([]access.Key, len(rows))
	for i, r := range rows {
		keys[i] = r.key()
	}
	return keys, nil
}

// RevokeKey marks a tenant's key revoked (once: a second revocation keeps
// the first time) and audits it.
func (s *Store) RevokeKey(ctx context.Context, tenantID, id string, t time.Time, actor string) error {
	return s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Exec(`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?`, t, tenantID, id)
		if res.Error != nil {
			return fmt.Errorf("revoke key: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return fault.New(fault.NotFound, "no such key in this tenant")
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: actor, Action: "key.revoked", SubjectType: "api_key", SubjectID: id})
	})
}
