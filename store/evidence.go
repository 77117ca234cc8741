package store

import (
	"context"
	"fmt"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/evidence"
)

// DecisionStats summarises a tenant's decision log in [from, to).
func (s *Store) DecisionStats(ctx context.Context, tenant string, from, to time.Time) (evidence.DecisionStats, error) {
	st := evidence.DecisionStats{ByRevision: map[string]int64{}, ByReason: map[string]int64{}}
	var p50, p99 *float64
	err := s.q(ctx).Raw(`SELECT count(*), count(*) FILTER (WHERE allow), count(*) FILTER (WHERE NOT allow),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_us), percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_us)
		FROM policy_decisions WHERE tenant_id = ? AND created_at >= ? AND created_at < ?`, tenant, from, to).
		Row().Scan(&st.Total, &st.Allowed, &st.Denied, &p50, &p99)
	if err != nil {
		return st, fmt.Errorf("decision stats: %w", err)
	}
	if p50 != nil {
		st.LatencyP50us, st.LatencyP99us = *p50, *p99
	}
	for _, q := range []struct {
		sql string
		out map[string]int64
	}{
		{`SELECT policy_revision, count(*) FROM policy_decisions WHERE tenant_id = ? AND created_at >= ? AND created_at < ? GROUP BY 1`, st.ByRevision},
		{`SELECT r, count(*) FROM policy_decisions, jsonb_array_elements_text(reasons) AS r
			WHERE tenant_id = ? AND created_at >= ? AND created_at < ? GROUP BY 1`, st.ByReason},
	} {
		rows, err := s.q(ctx).Raw(q.sql, tenant, from, to).Rows()
		if err != nil {
			return st, fmt.Errorf("decision stats: %w", err)
		}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				rows.Close()
				return st, err
			}
			q.out[k] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return st, err
		}
	}
	return st, nil
}

// AuditRowsByAction lists a tenant's audit rows with these actions in
// [from, to), oldest first.
func (s *Store) AuditRowsByAction(ctx context.Context, tenant string, from, to time.Time, actions []string) ([]audit.Row, error) {
	rows, err := s.query(ctx, `SELECT `+auditLogRowColumns+` FROM audit_log l
		WHERE l.tenant_id = $1 AND l.at >= $2 AND l.at < $3 AND l.action = ANY($4) ORDER BY l.id`, tenant, from, to, actions)
	if err != nil {
		return nil, fmt.Errorf("audit rows: %w", err)
	}
	defer rows.Close()
	out := []audit.Row{}
	for rows.Next() {
		var r auditLogRow
		if err := rows.Scan(r.dests()...); err != nil {
			return nil, err
		}
		row, err := r.row()
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// AuditSealRotation records a completed `tidings keys rotate` in every
// tenant's audit log: the key now sealing and how many values it re-sealed
// across all tenants (the rotation walks tables, not tenants).
func (s *Store) AuditSealRotation(ctx context.Context, primary string, resealed, unopenable int) error {
	tenants, err := s.AuditTenants(ctx)
	if err != nil {
		return err
	}
	recs := make([]AuditRecord, len(tenants))
	for i, t := range tenants {
		recs[i] = AuditRecord{TenantID: t, Actor: "cli", Action: "seal.rotated", SubjectType: "seal_key", SubjectID: primary,
			Detail: map[string]any{"resealed": resealed, "unopenable": unopenable}}
	}
	if len(recs) == 0 {
		return nil
	}
	return s.AuditMany(ctx, recs)
}
