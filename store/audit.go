package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// AuditRecord is one action to audit. Detail must not hold PHI: ids, counts,
// statuses and policy reasons only.
type AuditRecord struct {
	TenantID    string
	Actor       string
	Action      string
	SubjectType string
	SubjectID   string
	Detail      map[string]any
}

const genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Audit appends to the tenant's hash chain. Called on a store inside InTx it
// joins that transaction (so no audit row means the action did not happen);
// otherwise it runs its own.
func (s *Store) Audit(ctx context.Context, r AuditRecord) error {
	if !s.inTx {
		return s.InTx(ctx, func(tx *Store) error { return tx.Audit(ctx, r) })
	}
	detail, err := canonicalDetail(r.Detail)
	if err != nil {
		return fmt.Errorf("audit detail: %w", err)
	}
	// One writer per tenant chain at a time; the lock ends with the transaction.
	if err := s.q(ctx).Exec(`SELECT pg_advisory_xact_lock(hashtext('audit:' || ?))`, r.TenantID).Error; err != nil {
		return fmt.Errorf("audit lock: %w", err)
	}
	var prev []string
	if err := s.q(ctx).Raw(`SELECT hash FROM audit_log WHERE tenant_id = ? ORDER BY id DESC LIMIT 1`, r.TenantID).Scan(&prev).Error; err != nil {
		return fmt.Errorf("audit chain head: %w", err)
	}
	e := AuditEntry{
		TenantID: r.TenantID, At: time.Now().UTC().Truncate(time.Microsecond),
		Actor: r.Actor, Action: r.Action, SubjectType: r.SubjectType, SubjectID: r.SubjectID,
		Detail: detail, PrevHash: genesis,
	}
	if len(prev) > 0 {
		e.PrevHash = prev[0]
	}
	e.Hash = chainHash(e)
	if err := s.q(ctx).Create(&e).Error; err != nil {
		return fmt.Errorf("audit insert: %w", err)
	}
	return nil
}

func canonicalDetail(d map[string]any) (json.RawMessage, error) {
	if d == nil {
		return json.RawMessage("{}"), nil
	}
	return json.Marshal(d) // map keys marshal sorted
}

func chainHash(e AuditEntry) string {
	h := sha256.New()
	for _, part := range []string{e.PrevHash, e.TenantID, e.At.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.SubjectType, e.SubjectID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(e.Detail)
	return hex.EncodeToString(h.Sum(nil))
}

// VerifyAudit walks a tenant's chain and reports the first broken link.
func (s *Store) VerifyAudit(ctx context.Context, tenantID string) (int, error) {
	var entries []AuditEntry
	if err := s.q(ctx).Where("tenant_id = ?", tenantID).Order("id").Find(&entries).Error; err != nil {
		return 0, err
	}
	prev := genesis
	for i, e := range entries {
		// jsonb normalises spacing and key order; re-canonicalise as written.
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(e.Detail))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return i, fmt.Errorf("audit row %d: detail: %w", e.ID, err)
		}
		canon, _ := canonicalDetail(m)
		e.Detail = canon
		if e.PrevHash != prev {
			return i, fmt.Errorf("audit row %d: previous hash does not match row before it", e.ID)
		}
		if chainHash(e) != e.Hash {
			return i, fmt.Errorf("audit row %d: hash does not match its content", e.ID)
		}
		prev = e.Hash
	}
	return len(entries), nil
}

// AuditMany appends several records, like Audit.
func (s *Store) AuditMany(ctx context.Context, rs []AuditRecord) error {
	for _, r := range rs {
		if err := s.Audit(ctx, r); err != nil {
			return err
		}
	}
	return nil
}
