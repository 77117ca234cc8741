package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/policy"
)

// PolicyChannel is notified when a tenant's active policy revision changes,
// so that processes reload at once rather than at their next poll.
const PolicyChannel = "tidings_policies"

// maxRejectionDetail bounds the compiler's or tests' messages kept in the
// audit log for a refused upload.
const maxRejectionDetail = 4000

// PolicyGeneration is the sum of the tenants' policy generations: every
// committed change raises it, in whatever order changes commit.
func (s *Store) PolicyGeneration(ctx context.Context) (int64, error) {
	var gen int64
	err := s.q(ctx).Raw(`SELECT COALESCE(sum(generation), 0)::bigint FROM tenant_policies`).Scan(&gen).Error
	return gen, err
}

// ActivePolicies returns each tenant's active uploaded revision and the
// generation that read is of, in one statement so the two agree.
func (s *Store) ActivePolicies(ctx context.Context) (int64, []policy.TenantRevision, error) {
	var rows []struct {
		TenantID   string
		Generation int64
		Revision   *string
		Files      []byte
		CreatedAt  *time.Time
		CreatedBy  *string
	}
	err := s.q(ctx).Raw(`SELECT t.tenant_id, t.generation, r.revision, r.files, r.created_at, r.created_by
		FROM tenant_policies t LEFT JOIN policy_revisions r ON r.id = t.revision_id ORDER BY t.tenant_id`).Scan(&rows).Error
	if err != nil {
		return 0, nil, fmt.Errorf("active policies: %w", err)
	}
	var gen int64
	var revs []policy.TenantRevision
	for _, r := range rows {
		gen += r.Generation
		if r.Revision == nil {
			continue // back on the default
		}
		rev := policy.TenantRevision{TenantID: r.TenantID, Revision: *r.Revision, ActivatedAt: r.CreatedAt.UTC(), ActivatedBy: *r.CreatedBy}
		if err := json.Unmarshal(r.Files, &rev.Files); err != nil {
			return 0, nil, fmt.Errorf("active policies: tenant %s: %w", r.TenantID, err)
		}
		revs = append(revs, rev)
	}
	return gen, revs, nil
}

// ActivatePolicy stores a tenant's new revision, makes it the active one
// and audits "policy.activated", all in one transaction, then notifies
// PolicyChannel.
func (s *Store) ActivatePolicy(ctx context.Context, rev policy.TenantRevision) error {
	files, err := json.Marshal(rev.Files)
	if err != nil {
		return fmt.Errorf("activate policy: %w", err)
	}
	actor := audit.ActorOr(ctx, "api")
	return s.InTx(ctx, func(tx *Store) error {
		var id int64
		err := tx.q(ctx).Raw(`INSERT INTO policy_revisions (tenant_id, revision, files, created_by) VALUES (?, ?, ?::jsonb, ?) RETURNING id`,
			rev.TenantID, rev.Revision, string(files), actor).Scan(&id).Error
		if err := translate(err); err != nil {
			if errors.Is(err, ErrUnknownReference) {
				return fault.Errorf(fault.Invalid, "no tenant %q", rev.TenantID)
			}
			return fmt.Errorf("store policy revision: %w", err)
		}
		if err := tx.setTenantPolicy(ctx, rev.TenantID, &id); err != nil {
			return err
		}
		return tx.Audit(ctx, AuditRecord{TenantID: rev.TenantID, Actor: actor, Action: "policy.activated",
			SubjectType: "policy_revision", SubjectID: rev.Revision, Detail: map[string]any{"files": len(rev.Files), "id": id}})
	})
}

// ResetPolicy puts a tenant back on the default rules and audits
// "policy.reset".
func (s *Store) ResetPolicy(ctx context.Context, tenantID string) error {
	return s.InTx(ctx, func(tx *Store) error {
		if err := tx.setTenantPolicy(ctx, tenantID, nil); err != nil {
			return err
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: audit.ActorOr(ctx, "api"), Action: "policy.reset",
			SubjectType: "policy_revision", SubjectID: "default"})
	})
}

// setTenantPolicy points the tenant at a revision (nil: the default) with a
// new generation, and notifies PolicyChannel when the transaction commits.
func (s *Store) setTenantPolicy(ctx context.Context, tenantID string, revisionID *int64) error {
	err := s.q(ctx).Exec(`INSERT INTO tenant_policies (tenant_id, revision_id, generation) VALUES (?, ?, nextval('policy_generation'))
		ON CONFLICT (tenant_id) DO UPDATE SET revision_id = EXCLUDED.revision_id, generation = EXCLUDED.generation, updated_at = now()`,
		tenantID, revisionID).Error
	if err := translate(err); err != nil {
		if errors.Is(err, ErrUnknownReference) {
			return fault.Errorf(fault.Invalid, "no tenant %q", tenantID)
		}
		return fmt.Errorf("set tenant policy: %w", err)
	}
	if err := s.q(ctx).Exec(`SELECT pg_notify(?, '')`, PolicyChannel).Error; err != nil {
		return fmt.Errorf("set tenant policy: notify: %w", err)
	}
	return nil
}

// PolicyRejected audits a refused upload with the compiler's or tests'
// messages, which name files, lines and rules of the tenant's own policy.
func (s *Store) PolicyRejected(ctx context.Context, tenantID, reason string) error {
	if len(reason) > maxRejectionDetail {
		reason = strings.ToValidUTF8(reason[:maxRejectionDetail], "") + " …"
	}
	return s.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: audit.ActorOr(ctx, "api"), Action: "policy.rejected",
		SubjectType: "policy_revision", SubjectID: "upload", Detail: map[string]any{"reason": reason}})
}

var _ policy.RevisionStore = (*Store)(nil)
