package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

func priorityOf(d workflow.Definition) string {
	if d.Priority == "" {
		return workflow.PriorityNormal
	}
	return d.Priority
}

// SaveWorkflow stores a definition (validated by the caller) as the
// workflow's next version. With create, the workflow must not exist yet and
// is created as a draft; without, it must exist. Runs already started keep
// the version they started on.
func (s *Store) SaveWorkflow(ctx context.Context, tenantID string, d workflow.Definition, create bool) (int, error) {
	var version int
	err := s.InTx(ctx, func(tx *Store) error {
		var cur []int
		if err := tx.q(ctx).Raw(`SELECT version FROM workflows WHERE tenant_id = ? AND id = ? FOR UPDATE`, tenantID, d.ID).Scan(&cur).Error; err != nil {
			return err
		}
		switch {
		case create && len(cur) > 0:
			return journey.ErrWorkflowExists
		case !create && len(cur) == 0:
			return journey.ErrNoSuchWorkflow
		}
		version = 1
		if len(cur) > 0 {
			version = cur[0] + 1
		}
		d.Version = version
		def, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if len(cur) == 0 {
			err = tx.q(ctx).Exec(`INSERT INTO workflows (tenant_id, id, status, version, trigger_key, priority) VALUES (?, ?, 'draft', ?, ?, ?)`,
				tenantID, d.ID, version, journey.TriggerKey(d.Trigger), priorityOf(d)).Error
		} else {
			err = tx.q(ctx).Exec(`UPDATE workflows SET version = ?, trigger_key = ?, priority = ?, updated_at = now() WHERE tenant_id = ? AND id = ?`,
				version, journey.TriggerKey(d.Trigger), priorityOf(d), tenantID, d.ID).Error
		}
		if err = translate(err); errors.Is(err, ErrDuplicate) {
			return journey.ErrWorkflowExists // created by another request meanwhile
		}
		if err != nil {
			return fmt.Errorf("save workflow: %w", err)
		}
		if err := tx.q(ctx).Exec(`INSERT INTO workflow_versions (tenant_id, workflow_id, version, definition) VALUES (?, ?, ?, ?::jsonb)`,
			tenantID, d.ID, version, string(def)).Error; err != nil {
			return fmt.Errorf("save workflow version: %w", translate(err))
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: audit.ActorOr(ctx, "api"), Action: "workflow.saved",
			SubjectType: "workflow", SubjectID: d.ID, Detail: map[string]any{"version": version}})
	})
	return version, err
}

// SetWorkflowStatus activates or pauses a workflow. A paused workflow starts
// no new runs; its running runs carry on.
func (s *Store) SetWorkflowStatus(ctx context.Context, tenantID, id, status string) error {
	return s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Exec(`UPDATE workflows SET status = ?, updated_at = now() WHERE tenant_id = ? AND id = ?`, status, tenantID, id)
		if res.Error != nil {
			return fmt.Errorf("set workflow status: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return journey.ErrNoSuchWorkflow
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: audit.ActorOr(ctx, "api"), Action: "workflow." + status,
			SubjectType: "workflow", SubjectID: id})
	})
}

type workflowRow struct {
	ID         string
	Status     string
	Version    int
	TriggerKey string
	Priority   string
	UpdatedAt  time.Time
	Definition json.RawMessage
}

const workflowSelect = `SELECT w.id, w.status, w.version, w.trigger_key, w.priority, w.updated_at, v.definition
	FROM workflows w JOIN workflow_versions v ON v.tenant_id = w.tenant_id AND v.workflow_id = w.id AND v.version = w.version`

func (r workflowRow) info() (journey.Workflow, error) {
	wi := journey.Workflow{ID: r.ID, Status: r.Status, Version: r.Version, Trigger: r.TriggerKey, Priority: r.Priority, UpdatedAt: r.UpdatedAt}
	if err := json.Unmarshal(r.Definition, &wi.Definition); err != nil {
		return wi, fmt.Errorf("workflow %s: stored definition: %w", r.ID, err)
	}
	return wi, nil
}

// Workflow returns a workflow's latest version; journey.ErrNoSuchWorkflow when none.
func (s *Store) Workflow(ctx context.Context, tenantID, id string) (journey.Workflow, error) {
	var rows []workflowRow
	if err := s.q(ctx).Raw(workflowSelect+` WHERE w.tenant_id = ? AND w.id = ?`, tenantID, id).Scan(&rows).Error; err != nil {
		return journey.Workflow{}, err
	}
	if len(rows) == 0 {
		return journey.Workflow{}, journey.ErrNoSuchWorkflow
	}
	return rows[0].info()
}

// Workflows lists a tenant's workflows.
func (s *Store) Workflows(ctx context.Context, tenantID string) ([]journey.Workflow, error) {
	return s.workflowsWhere(ctx, ` WHERE w.tenant_id = ? ORDER BY w.id`, tenantID)
}

// ActiveWorkflows lists the active workflows a trigger starts.
func (s *Store) ActiveWorkflows(ctx context.Context, tenantID, triggerKey string) ([]journey.Workflow, error) {
	return s.workflowsWhere(ctx, ` WHERE w.tenant_id = ? AND w.trigger_key = ? AND w.status = 'active' ORDER BY w.id`, tenantID, triggerKey)
}

func (s *Store) workflowsWhere(ctx context.Context, where string, args ...any) ([]journey.Workflow, error) {
	var rows []workflowRow
	if err := s.q(ctx).Raw(workflowSelect+where, args...).Scan(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]journey.Workflow, 0, len(rows))
	for _, r := range rows {
		wi, err := r.info()
		if err != nil {
			return nil, err
		}
		out = append(out, wi)
	}
	return out, nil
}

// WorkflowVersion returns one version of a definition, as runs started on it see it.
func (s *Store) WorkflowVersion(ctx context.Context, tenantID, id string, version int) (workflow.Definition, error) {
	var defs []json.RawMessage
	if err := s.q(ctx).Raw(`SELECT definition FROM workflow_versions WHERE tenant_id = ? AND workflow_id = ? AND version = ?`,
		tenantID, id, version).Scan(&defs).Error; err != nil {
		return workflow.Definition{}, err
	}
	if len(defs) == 0 {
		return workflow.Definition{}, ErrNotFound
	}
	var d workflow.Definition
	if err := json.Unmarshal(defs[0], &d); err != nil {
		return d, fmt.Errorf("workflow %s v%d: stored definition: %w", id, version, err)
	}
	return d, nil
}

// WorkflowExists reports whether a tenant has a workflow with this id.
func (s *Store) WorkflowExists(ctx context.Context, tenantID, id string) (bool, error) {
	var n int64
	err := s.q(ctx).Raw(`SELECT count(*) FROM workflows WHERE tenant_id = ? AND id = ?`, tenantID, id).Scan(&n).Error
	return n > 0, err
}

// InstallWorkflows saves and activates definitions that the tenant does not
// have yet (the built-ins, in dev); existing workflows are left alone.
func (s *Store) InstallWorkflows(ctx context.Context, tenantID string, defs []workflow.Definition) error {
	for _, d := range defs {
		_, err := s.Workflow(ctx, tenantID, d.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, fault.NotFound) {
			return err
		}
		// Saved and activated together: never left a draft by a crash.
		if err := s.InTx(ctx, func(tx *Store) error {
			if _, err := tx.SaveWorkflow(ctx, tenantID, d, true); err != nil {
				return err
			}
			return tx.SetWorkflowStatus(ctx, tenantID, d.ID, journey.WorkflowActive)
		}); err != nil {
			return err
		}
	}
	return nil
}
