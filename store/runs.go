package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/workflow"
)

// runRow is a run as stored: state, facts and pending actions encoded.
type runRow struct {
	ID               int64
	TenantID         string
	WorkflowID       string
	WorkflowVersion  int
	Source           string
	Subject          string
	PatientIndex     string
	EventID          *int64
	Status           string
	Step             string
	FactsChanged     bool
	DueAt            *time.Time
	WakeSeq          int64
	EngagementCursor int64
	Priority         string
	Outcome          string
	CreatedAt        time.Time
	Attempts         int

	State       json.RawMessage
	FactsSealed []byte
	Pending     json.RawMessage
}

func (s *Store) sealFacts(tenantID, subject string, f workflow.Facts) ([]byte, error) {
	if f == nil {
		f = workflow.Facts{}
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	return s.seal(b, colRunFacts, tenantID, subject), nil
}

// StartRun creates the run, due now, unless the workflow already has one for
// this subject (running or ended: nobody re-enters a workflow); then it
// reports created=false and the existing run's wake-up.
func (s *Store) StartRun(ctx context.Context, r journey.NewRun, now time.Time) (journey.Wake, bool, error) {
	facts, err := s.sealFacts(r.TenantID, r.Subject, r.Facts)
	if err != nil {
		return journey.Wake{}, false, err
	}
	var w journey.Wake
	created := false
	err = s.InTx(ctx, func(tx *Store) error {
		var rows []journey.Wake
		if err := tx.q(ctx).Raw(`INSERT INTO runs (tenant_id, workflow_id, workflow_version, source, subject, patient_index, event_id,
				status, facts_sealed, due_at, priority, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, 'waiting', ?, ?, ?, ?)
			ON CONFLICT (tenant_id, workflow_id, source, subject) DO NOTHING
			RETURNING id, tenant_id, wake_seq, due_at, step, priority`,
			r.TenantID, r.WorkflowID, r.WorkflowVersion, r.Source, r.Subject, r.PatientIndex, r.EventID, facts, now, r.Priority, now).
			Scan(&rows).Error; err != nil {
			return fmt.Errorf("start run: %w", translate(err))
		}
		if len(rows) == 0 {
			// No re-entry: report the run that already exists.
			if err := tx.q(ctx).Raw(`SELECT id, tenant_id, wake_seq, due_at, step, priority FROM runs
				WHERE tenant_id = ? AND workflow_id = ? AND source = ? AND subject = ?`, r.TenantID, r.WorkflowID, r.Source, r.Subject).Scan(&rows).Error; err != nil {
				return fmt.Errorf("existing run: %w", err)
			}
			if len(rows) > 0 {
				w = rows[0]
			}
			return nil
		}
		w, created = rows[0], true
		return tx.Audit(ctx, AuditRecord{TenantID: r.TenantID, Actor: "worker", Action: "run.started",
			SubjectType: "run", SubjectID: strconv.FormatInt(w.ID, 10),
			Detail: map[string]any{"workflow": r.WorkflowID, "version": r.WorkflowVersion, "subject": r.Subject, "source": r.Source}})
	})
	return w, created, err
}

// LoadRun reads a run with its facts opened; ErrNotFound when none.
func (s *Store) LoadRun(ctx context.Context, id int64) (journey.Run, error) {
	var rows []runRow
	if err := s.q(ctx).Raw(`SELECT * FROM runs WHERE id = ?`, id).Scan(&rows).Error; err != nil {
		return journey.Run{}, err
	}
	if len(rows) == 0 {
		return journey.Run{}, ErrNotFound
	}
	row := rows[0]
	c := row
	r := journey.Run{ID: c.ID, TenantID: c.TenantID, WorkflowID: c.WorkflowID, WorkflowVersion: c.WorkflowVersion,
		Source: c.Source, Subject: c.Subject, PatientIndex: c.PatientIndex, EventID: c.EventID, Status: c.Status, Step: c.Step,
		FactsChanged: c.FactsChanged, DueAt: c.DueAt, WakeSeq: c.WakeSeq, EngagementCursor: c.EngagementCursor,
		Priority: c.Priority, Outcome: c.Outcome, CreatedAt: c.CreatedAt, Attempts: c.Attempts}
	if err := json.Unmarshal(row.State, &r.State); err != nil {
		return r, fmt.Errorf("run %d: state: %w", id, err)
	}
	if err := json.Unmarshal(row.Pending, &r.Pending); err != nil {
		return r, fmt.Errorf("run %d: pending actions: %w", id, err)
	}
	r.Facts = workflow.Facts{}
	if len(row.FactsSealed) > 0 {
		plain, err := s.open(row.FactsSealed, colRunFacts, row.TenantID, row.Subject)
		if err != nil {
			return r, fmt.Errorf("run %d: open facts: %w", id, err)
		}
		if err := json.Unmarshal(plain, &r.Facts); err != nil {
			return r, fmt.Errorf("run %d: facts: %w", id, err)
		}
	}
	return r, nil
}

// PendingGrace is how long, by default, a run's saved actions are left to
// the task carrying them out before the scheduler takes the run as
// abandoned (the worker died) and wakes it again to finish them. Longer
// than a task's timeout. TIDINGS_PENDING_GRACE changes it.
const PendingGrace = 3 * time.Minute

// SaveRun stores the state the step machine produced together with the
// actions it decided (not yet carried out), if the run has not changed since
// it was loaded and has not ended (journey.ErrStale otherwise: an ended run is never
// rewritten, so its ended_at and its one run.ended audit row stand), records
// the newly executed steps of its path, and returns the run's next wake-up: the wait's end, or, while
// actions are pending, now + PendingGrace. The cursor says which engagement
// events the run has now seen.
func (s *Store) SaveRun(ctx context.Context, r journey.Run, st workflow.State, actions []workflow.Action, cursor int64, now time.Time) (journey.Wake, error) {
	stateJSON, err := json.Marshal(st)
	if err != nil {
		return journey.Wake{}, err
	}
	if actions == nil {
		actions = []workflow.Action{}
	}
	pending, err := json.Marshal(actions)
	if err != nil {
		return journey.Wake{}, err
	}
	status := workflow.StatusWaiting
	var due *time.Time
	switch {
	case len(actions) > 0:
		t := now.Add(s.pendingGrace) // ended or not: the actions still need doing
		due = &t
	case st.Status == workflow.StatusEnded:
	case !st.WaitUntil.IsZero():
		t := st.WaitUntil
		due = &t
	}
	if st.Status == workflow.StatusEnded && len(actions) == 0 {
		// A run that ended with actions to do stays waiting until they are
		// done (ClearPending), so the scheduler re-drives them if need be.
		status = workflow.StatusEnded
	}
	var w journey.Wake
	err = s.InTx(ctx, func(tx *Store) error {
		var rows []journey.Wake
		if err := tx.q(ctx).Raw(`UPDATE runs SET state = ?::jsonb, step = ?, status = ?, due_at = ?, outcome = ?,
				engagement_cursor = ?, facts_changed = false, pending = ?::jsonb, wake_seq = wake_seq + 1, updated_at = now(),
				ended_at = CASE WHEN ? = 'ended' THEN ?::timestamptz ELSE NULL END
			WHERE id = ? AND wake_seq = ? AND waiting
			RETURNING id, tenant_id, wake_seq, due_at, step, priority`,
			string(stateJSON), st.Step, status, due, st.Outcome, cursor, string(pending), status, now, r.ID, r.WakeSeq).Scan(&rows).Error; err != nil {
			return fmt.Errorf("save run: %w", err)
		}
		if len(rows) == 0 {
			return journey.ErrStale
		}
		w = rows[0]
		for i := len(r.State.Visited); i < len(st.Visited); i++ {
			step := st.Visited[i]
			if err := tx.q(ctx).Exec(`INSERT INTO run_steps (run_id, seq, tenant_id, workflow_id, step, happened, at)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				r.ID, i, r.TenantID, r.WorkflowID, step, st.Happened[step], now).Error; err != nil {
				return fmt.Errorf("record run step: %w", err)
			}
		}
		// A wait that ended records what ended it.
		for step, happened := range st.Happened {
			if r.State.Happened[step] != happened {
				if err := tx.q(ctx).Exec(`UPDATE run_steps SET happened = ? WHERE run_id = ? AND step = ?`, happened, r.ID, step).Error; err != nil {
					return err
				}
			}
		}
		if status == workflow.StatusEnded {
			return tx.auditEnded(ctx, r, st)
		}
		return nil
	})
	return w, err
}

func (s *Store) auditEnded(ctx context.Context, r journey.Run, st workflow.State) error {
	return s.Audit(ctx, runEndedAudit(r.TenantID, r.ID, r.WorkflowID, st))
}

// ClearPending records that a run's pending actions are done, if the run has
// not moved since (journey.ErrStale otherwise), and returns its next wake-up: its
// wait's end. A run that ended keeps due_at NULL.
func (s *Store) ClearPending(ctx context.Context, r journey.Run, now time.Time) (journey.Wake, error) {
	ended := r.State.Status == workflow.StatusEnded
	var due *time.Time
	if !ended && !r.State.WaitUntil.IsZero() {
		t := r.State.WaitUntil
		due = &t
	}
	status := workflow.StatusWaiting
	if ended {
		status = workflow.StatusEnded
	}
	var w journey.Wake
	err := s.InTx(ctx, func(tx *Store) error {
		var rows []journey.Wake
		if err := tx.q(ctx).Raw(`UPDATE runs SET pending = '[]', attempts = 0, status = ?, wake_seq = wake_seq + 1, updated_at = now(),
				due_at = CASE WHEN wake_after_pending AND ? <> 'ended' THEN ?::timestamptz ELSE ?::timestamptz END, wake_after_pending = false,
				ended_at = CASE WHEN ? = 'ended' THEN ?::timestamptz ELSE NULL END
			WHERE id = ? AND wake_seq = ? AND waiting
			RETURNING id, tenant_id, wake_seq, due_at, step, priority`, status, status, now, due, status, now, r.ID, r.WakeSeq).Scan(&rows).Error; err != nil {
			return fmt.Errorf("clear pending actions: %w", err)
		}
		if len(rows) == 0 {
			return journey.ErrStale
		}
		w = rows[0]
		if ended {
			return tx.auditEnded(ctx, r, r.State)
		}
		return nil
	})
	return w, err
}

// DeferPending records a failed attempt at a run's pending actions and
// makes the run due again at retry: the retry is a wake-up like any other,
// driven from Postgres (journey.ErrStale when the run moved meanwhile).
func (s *Store) DeferPending(ctx context.Context, r journey.Run, retry time.Time) (journey.Wake, error) {
	var rows []journey.Wake
	if err := s.q(ctx).Raw(`UPDATE runs SET attempts = attempts + 1, due_at = ?, wake_seq = wake_seq + 1, updated_at = now()
		WHERE id = ? AND wake_seq = ? AND waiting
		RETURNING id, tenant_id, wake_seq, due_at, step, priority`, retry, r.ID, r.WakeSeq).Scan(&rows).Error; err != nil {
		return journey.Wake{}, fmt.Errorf("defer pending actions: %w", err)
	}
	if len(rows) == 0 {
		return journey.Wake{}, journey.ErrStale
	}
	return rows[0], nil
}

// RefreshSubject gives the source's subject's waiting runs its latest
// event and facts. With changed set (a reschedule), they are woken now to
// recompute their waits; the returned wake-ups are for the queue.
func (s *Store) RefreshSubject(ctx context.Context, tenantID, source, subject string, eventID int64, facts workflow.Facts, changed bool, now time.Time) ([]journey.Wake, error) {
	sealed, err := s.sealFacts(tenantID, subject, facts)
	if err != nil {
		return nil, err
	}
	var rows []journey.Wake
	// An older event never overwrites a newer one's facts.
	if changed {
		err = s.q(ctx).Raw(`UPDATE runs SET event_id = ?, facts_sealed = ?, facts_changed = true, `+wakeNow+`, updated_at = now()
			WHERE tenant_id = ? AND source = ? AND subject = ? AND waiting AND (event_id IS NULL OR event_id < ?)
			RETURNING id, tenant_id, wake_seq, due_at, step, priority`, eventID, sealed, now, tenantID, source, subject, eventID).Scan(&rows).Error
	} else {
		err = s.q(ctx).Exec(`UPDATE runs SET event_id = ?, facts_sealed = ?, updated_at = now()
			WHERE tenant_id = ? AND source = ? AND subject = ? AND waiting AND (event_id IS NULL OR event_id < ?)`,
			eventID, sealed, tenantID, source, subject, eventID).Error
	}
	if err != nil {
		return nil, fmt.Errorf("refresh runs: %w", err)
	}
	return rows, nil
}

// wakeNow makes a run due now (the argument) so it reacts to a change, and
// invalidates its queued wake-up; a run whose actions are being carried out
// is left to that task, which looks again once they are done.
const wakeNow = `due_at = CASE WHEN pending = '[]'::jsonb THEN ?::timestamptz ELSE due_at END,
	wake_seq = CASE WHEN pending = '[]'::jsonb THEN wake_seq + 1 ELSE wake_seq END,
	wake_after_pending = wake_after_pending OR pending <> '[]'::jsonb`

// EndSubjectRuns ends the source's subject's waiting runs with an outcome
// (an appointment cancelled or entered in error), except runs of the
// workflows in keep. The runs send nothing more; another source's runs of
// a subject with the same id are not touched.
func (s *Store) EndSubjectRuns(ctx context.Context, tenantID, source, subject, outcome string, keep []string, now time.Time) (int, error) {
	if len(keep) == 0 {
		keep = []string{""} // no workflow has an empty id
	}
	n := 0
	err := s.InTx(ctx, func(tx *Store) error {
		var ended []struct {
			ID         int64
			WorkflowID string
			Step       string
		}
		if err := tx.q(ctx).Raw(`UPDATE runs SET status = 'ended', outcome = ?, due_at = NULL, ended_at = ?,
				state = jsonb_set(jsonb_set(jsonb_set(state, '{status}', '"ended"'), '{outcome}', to_jsonb(?::text)), '{wait_until}', 'null'),
				wake_seq = wake_seq + 1, updated_at = now()
			WHERE tenant_id = ? AND source = ? AND subject = ? AND waiting AND workflow_id NOT IN ?
			RETURNING id, workflow_id, step`, outcome, now, outcome, tenantID, source, subject, keep).Scan(&ended).Error; err != nil {
			return fmt.Errorf("end runs: %w", err)
		}
		n = len(ended)
		ids := make([]int64, len(ended))
		for i, e := range ended {
			ids[i] = e.ID
		}
		if err := tx.skipUndelivered(ctx, ids, outcome); err != nil {
			return err
		}
		for _, e := range ended {
			if err := tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: "worker", Action: "run.ended",
				SubjectType: "run", SubjectID: strconv.FormatInt(e.ID, 10),
				Detail: map[string]any{"workflow": e.WorkflowID, "outcome": outcome, "step": e.Step}}); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// skipUndelivered marks skipped the pending notices of ended runs that no
// delivery has begun or finished: they are not sent.
func (s *Store) skipUndelivered(ctx context.Context, runIDs []int64, outcome string) error {
	if len(runIDs) == 0 {
		return nil
	}
	err := s.q(ctx).Exec(`UPDATE notices SET status = 'skipped', reasons = ?::jsonb, updated_at = now()
		WHERE run_id IN ? AND status = 'pending'
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notice_id = notices.id AND d.status <> 'failed')`,
		`["the run ended (`+outcome+`) before the notice was delivered"]`, runIDs).Error
	if err != nil {
		return fmt.Errorf("skip the ended runs' notices: %w", err)
	}
	return nil
}

// EndRun ends one waiting run with an outcome if it is still at seq (a run
// whose own processing keeps failing ends with "error"); its undelivered
// notices are skipped.
func (s *Store) EndRun(ctx context.Context, tenantID string, runID, seq int64, outcome string, now time.Time) error {
	return s.InTx(ctx, func(tx *Store) error {
		var ended []struct {
			WorkflowID string
			Step       string
		}
		if err := tx.q(ctx).Raw(`UPDATE runs SET status = 'ended', outcome = ?, due_at = NULL, ended_at = ?, pending = '[]',
				state = jsonb_set(jsonb_set(state, '{status}', '"ended"'), '{outcome}', to_jsonb(?::text)),
				wake_seq = wake_seq + 1, updated_at = now()
			WHERE id = ? AND tenant_id = ? AND wake_seq = ? AND waiting
			RETURNING workflow_id, step`, outcome, now, outcome, runID, tenantID, seq).Scan(&ended).Error; err != nil {
			return fmt.Errorf("end run: %w", err)
		}
		if len(ended) == 0 {
			return nil
		}
		if err := tx.skipUndelivered(ctx, []int64{runID}, outcome); err != nil {
			return err
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: "worker", Action: "run.ended",
			SubjectType: "run", SubjectID: strconv.FormatInt(runID, 10),
			Detail: map[string]any{"workflow": ended[0].WorkflowID, "outcome": outcome, "step": ended[0].Step}})
	})
}

// RecordEngagement stores an engagement or API event for a patient (data
// sealed) and wakes the patient's runs that wait for it.
// When subject is set ("ExplanationOfBenefit/<id>"), only that subject's
// runs (and runs of the patient as a whole) take the event.
func (s *Store) RecordEngagement(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte, now time.Time) (int64, []journey.Wake, error) {
	return s.recordEngagement(ctx, tenantID, patientRef, subject, eventType, data, now, true)
}

// RecordDelivered records the "delivered" engagement of a notice the relay
// took, like RecordEngagement but without an audit row of its own: the
// delivery.sent row just written proves it.
func (s *Store) RecordDelivered(ctx context.Context, tenantID, patientRef, subject string, now time.Time) ([]journey.Wake, error) {
	_, wakes, err := s.recordEngagement(ctx, tenantID, patientRef, subject, "delivered", nil, now, false)
	return wakes, err
}

func (s *Store) recordEngagement(ctx context.Context, tenantID, patientRef, subject, eventType string, data []byte, now time.Time, audited bool) (int64, []journey.Wake, error) {
	return s.recordEngagementOf(ctx, tenantID, s.PatientIndex(patientRef), subject, eventType, data, now, audited)
}

// recordEngagementOf is recordEngagement for a patient known by blind index.
func (s *Store) recordEngagementOf(ctx context.Context, tenantID, idx, subject, eventType string, data []byte, now time.Time, audited bool) (int64, []journey.Wake, error) {
	var id int64
	var wakes []journey.Wake
	err := s.InTx(ctx, func(tx *Store) error {
		// Data is sealed for its row, so a row with data takes its id first.
		var sealed []byte
		var preID *int64
		if len(data) > 0 {
			if err := tx.q(ctx).Raw(`SELECT nextval(pg_get_serial_sequence('engagements', 'id'))`).Scan(&id).Error; err != nil {
				return fmt.Errorf("record engagement: %w", err)
			}
			sealed, preID = s.seal(data, colEngagementData, tenantID, itoa(id)), &id
		}
		if err := tx.q(ctx).Raw(`INSERT INTO engagements (id, tenant_id, patient_index, subject, type, data_sealed, received_at)
			VALUES (COALESCE(?::bigint, nextval(pg_get_serial_sequence('engagements', 'id'))), ?, ?, NULLIF(?, ''), ?, ?, ?) RETURNING id`,
			preID, tenantID, idx, subject, eventType, sealed, now).Scan(&id).Error; err != nil {
			return fmt.Errorf("record engagement: %w", translate(err))
		}
		// Only runs waiting for this event are woken; the others take it
		// (for their branches) at their next wake-up. With a subject, the
		// lookup goes by subject (a patient may have thousands of runs).
		var err error
		if subject != "" {
			err = tx.q(ctx).Raw(`UPDATE runs SET `+wakeNow+`, updated_at = now()
				WHERE tenant_id = ? AND waiting AND subject IN (?, ?) AND patient_index = ?
					AND state->'waiting_for' @> jsonb_build_array(?::text)
				RETURNING id, tenant_id, wake_seq, due_at, step, priority`,
				now, tenantID, subject, "patient:"+idx, idx, eventType).Scan(&wakes).Error
		} else {
			err = tx.q(ctx).Raw(`UPDATE runs SET `+wakeNow+`, updated_at = now()
				WHERE tenant_id = ? AND patient_index = ? AND waiting AND state->'waiting_for' @> jsonb_build_array(?::text)
				RETURNING id, tenant_id, wake_seq, due_at, step, priority`, now, tenantID, idx, eventType).Scan(&wakes).Error
		}
		if err != nil {
			return fmt.Errorf("wake runs: %w", err)
		}
		if !audited {
			return nil
		}
		return tx.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: audit.ActorOr(ctx, "api"), Action: "engagement.recorded",
			SubjectType: "engagement", SubjectID: strconv.FormatInt(id, 10),
			Detail: map[string]any{"type": eventType, "runs_woken": len(wakes)}})
	})
	return id, wakes, err
}

// EngagementsSince lists the engagement events a run takes after the
// cursor, oldest first: its patient's, received no earlier than since (the
// run's start), about its subject or about no subject in particular.
func (s *Store) EngagementsSince(ctx context.Context, r journey.Run, since time.Time) ([]journey.Engagement, error) {
	var out []journey.Engagement
	err := s.q(ctx).Raw(`SELECT id, type FROM engagements
		WHERE tenant_id = ? AND patient_index = ? AND id > ? AND received_at >= ?
			AND (subject IS NULL OR subject = ? OR ? LIKE 'patient:%') ORDER BY id LIMIT 1000`,
		r.TenantID, r.PatientIndex, r.EngagementCursor, since, r.Subject, r.Subject).Scan(&out).Error
	return out, err
}

// PromotableRuns lists waiting runs due before now+horizon whose current
// wake-up has not been handed to the queue yet. A run whose actions are
// being carried out is left to its task until that task is overdue.
func (s *Store) PromotableRuns(ctx context.Context, now time.Time, horizon time.Duration, limit int) ([]journey.Wake, error) {
	var rows []journey.Wake
	err := s.q(ctx).Raw(`SELECT id, tenant_id, wake_seq, due_at, step, priority FROM runs
		WHERE waiting AND due_at <= ? AND promoted_seq <> wake_seq
			AND (pending = '[]'::jsonb OR due_at <= ?) ORDER BY due_at LIMIT ?`,
		now.Add(horizon), now, limit).Scan(&rows).Error
	return rows, err
}

// MarkPromoted records that these wake-ups are in the queue.
func (s *Store) MarkPromoted(ctx context.Context, wakes []journey.Wake) error {
	if len(wakes) == 0 {
		return nil
	}
	pairs := make([][]any, len(wakes))
	for i, w := range wakes {
		pairs[i] = []any{w.ID, w.WakeSeq}
	}
	return s.q(ctx).Exec(`UPDATE runs SET promoted_seq = wake_seq WHERE (id, wake_seq) IN ? AND promoted_seq <> wake_seq`, pairs).Error
}

// OverdueRuns lists waiting runs whose wake-up was handed to the queue but
// is more than slack overdue: Redis may have lost it (FLUSHALL, a failover
// without persistence). Re-enqueuing is safe: a wake-up's task id is derived
// from run and seq, so one still queued is not duplicated.
// Pages go by (due_at, id) after the last row of the previous page (after
// is nil for the first), so runs that stay overdue do not hide the rest.
func (s *Store) OverdueRuns(ctx context.Context, now time.Time, slack time.Duration, after *journey.Wake, limit int) ([]journey.Wake, error) {
	var rows []journey.Wake
	afterDue, afterID := time.Time{}, int64(0)
	if after != nil {
		afterDue, afterID = after.DueAt, after.ID
	}
	err := s.q(ctx).Raw(`SELECT id, tenant_id, wake_seq, due_at, step, priority FROM runs
		WHERE waiting AND due_at < ? AND promoted_seq = wake_seq AND (due_at, id) > (?, ?)
		ORDER BY due_at, id LIMIT ?`,
		now.Add(-slack), afterDue, afterID, limit).Scan(&rows).Error
	return rows, err
}

// AddSegmentMember puts a patient in a segment; joined is false when the
// patient was already a member.
func (s *Store) AddSegmentMember(ctx context.Context, tenantID, segment, patientRef string) (bool, error) {
	idx := s.PatientIndex(patientRef)
	res := s.q(ctx).Exec(`INSERT INTO segment_members (tenant_id, segment, patient_index, patient_sealed)
		VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		tenantID, segment, idx, s.seal([]byte(patientRef), colSegmentPatient, tenantID, segment, idx))
	if res.Error != nil {
		return false, fmt.Errorf("add segment member: %w", translate(res.Error))
	}
	return res.RowsAffected > 0, nil
}

// SegmentMembers returns the patient references of a segment's members.
func (s *Store) SegmentMembers(ctx context.Context, tenantID, segment string) ([]string, error) {
	var members []struct {
		PatientIndex  string
		PatientSealed []byte
	}
	if err := s.q(ctx).Raw(`SELECT patient_index, patient_sealed FROM segment_members WHERE tenant_id = ? AND segment = ? ORDER BY added_at`,
		tenantID, segment).Scan(&members).Error; err != nil {
		return nil, err
	}
	out := make([]string, 0, len(members))
	for _, m := range members {
		plain, err := s.open(m.PatientSealed, colSegmentPatient, tenantID, segment, m.PatientIndex)
		if err != nil {
			return nil, fmt.Errorf("segment member: %w", err)
		}
		out = append(out, string(plain))
	}
	return out, nil
}

// EnsureRunNotice returns the notice of a run's send step, creating it the
// first time: a retried or duplicated wake-up gets the same notice, and so
// the same delivery.
func (s *Store) EnsureRunNotice(ctx context.Context, r journey.Run, step, template, noticeType string, eventID int64) (delivery.Notice, error) {
	err := s.q(ctx).Exec(`INSERT INTO notices (tenant_id, event_id, notice_type, status, reasons, portal_token, run_id, step, template)
		VALUES (?, ?, ?, 'pending', '[]', ?, ?, ?, ?) ON CONFLICT (run_id, step) WHERE run_id IS NOT NULL DO NOTHING`,
		r.TenantID, eventID, noticeType, seal.NewToken(), r.ID, step, template).Error
	if err != nil {
		return delivery.Notice{}, fmt.Errorf("insert run notice: %w", err)
	}
	var got Notice
	if err := s.q(ctx).Where("run_id = ? AND step = ?", r.ID, step).Take(&got).Error; err != nil {
		return delivery.Notice{}, translate(err)
	}
	return notice(got), nil
}

// RunsForSubject lists the runs of a subject with their paths: of one
// source's subject, or with source "" of every source's subject of that id.
func (s *Store) RunsForSubject(ctx context.Context, tenantID, source, subject string) ([]journey.RunView, error) {
	var rows []struct {
		ID              int64
		WorkflowID      string
		WorkflowVersion int
		Source          string
		Subject         string
		Status          string
		Step            string
		Outcome         string
		DueAt           *time.Time
		CreatedAt       time.Time
	}
	if err := s.q(ctx).Raw(`SELECT id, workflow_id, workflow_version, source, subject, status, step, outcome, due_at, created_at
		FROM runs WHERE tenant_id = ? AND subject = ? AND (? = '' OR source = ?) ORDER BY id`, tenantID, subject, source, source).Scan(&rows).Error; err != nil {
		return nil, err
	}
	runs := make([]journey.RunView, len(rows))
	for i, r := range rows {
		runs[i] = journey.RunView{ID: r.ID, WorkflowID: r.WorkflowID, WorkflowVersion: r.WorkflowVersion, Source: r.Source, Subject: r.Subject,
			Status: r.Status, Step: r.Step, Outcome: r.Outcome, DueAt: r.DueAt, CreatedAt: r.CreatedAt, Path: []journey.RunStep{}}
		if err := s.q(ctx).Raw(`SELECT step, happened, at FROM run_steps WHERE run_id = ? ORDER BY seq`, r.ID).
			Scan(&runs[i].Path).Error; err != nil {
			return nil, err
		}
	}
	return runs, nil
}

// StepCounts are a workflow's runs counted per step: how many executed
// each step, and how many are at each (step, status, outcome) now.
func (s *Store) StepCounts(ctx context.Context, tenantID, workflowID string) (journey.StepCounts, error) {
	var c journey.StepCounts
	if err := s.q(ctx).Raw(`SELECT step, count(*) AS n FROM run_steps WHERE tenant_id = ? AND workflow_id = ? GROUP BY step`,
		tenantID, workflowID).Scan(&c.Processed).Error; err != nil {
		return c, err
	}
	err := s.q(ctx).Raw(`SELECT step, status, outcome, count(*) AS n FROM runs WHERE tenant_id = ? AND workflow_id = ?
		GROUP BY step, status, outcome`, tenantID, workflowID).Scan(&c.At).Error
	return c, err
}

// RunCounts are a tenant's runs by status, for reports.
func (s *Store) RunCounts(ctx context.Context, tenantID string) (map[string]int64, error) {
	var rows []struct {
		Status string
		N      int64
	}
	if err := s.q(ctx).Raw(`SELECT status, count(*) AS n FROM runs WHERE tenant_id = ? GROUP BY status`, tenantID).Scan(&rows).Error; err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}

// Unsettled counts what is still in flight for a tenant: events the worker
// has not finished with, and runs that are due now (a wake-up to
// process) or carrying out actions. Zero means every event got where it is going for now.
func (s *Store) Unsettled(ctx context.Context, tenantID string, now time.Time) (int64, error) {
	var n int64
	err := s.q(ctx).Raw(`SELECT
		(SELECT count(*) FROM events e WHERE e.tenant_id = ? AND e.processed_at IS NULL)
		+ (SELECT count(*) FROM runs WHERE tenant_id = ? AND waiting AND (due_at <= ? OR pending <> '[]'::jsonb))`,
		tenantID, tenantID, now).Scan(&n).Error
	return n, err
}
