package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

// The batch path writes what the one-at-a-time path writes (runs, their
// path, notices, decisions, deliveries, contacts, engagements and every
// audit row), a batch at a time: each statement takes arrays, one element
// per row, and two transactions carry a whole batch of notices.

// The batch's updates of waiting runs. Each must find its runs by key (id,
// subject, or what they wait for), never by walking every waiting run:
// TestRunUpdatesProbeByKey holds them to it on a fresh table.
const (
	refreshRunsSQL = `UPDATE runs r SET event_id = x.e, facts_sealed = x.f, updated_at = now()
		FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[]) AS x(t, src, s, e, f)
		WHERE r.tenant_id = x.t AND r.subject = x.s AND r.source = x.src AND r.waiting AND (r.event_id IS NULL OR r.event_id < x.e)`
	// A notice's subject, and the patient's own runs: one equality each, so
	// that both indexes of waiting runs are probed by subject (an OR of the
	// two would be probed by patient alone, and walk all of a patient's runs).
	wakeDeliveredSQL = `UPDATE runs r SET due_at = CASE WHEN r.pending = '[]'::jsonb THEN $4::timestamptz ELSE r.due_at END,
			wake_seq = CASE WHEN r.pending = '[]'::jsonb THEN r.wake_seq + 1 ELSE r.wake_seq END,
			wake_after_pending = r.wake_after_pending OR r.pending <> '[]'::jsonb, updated_at = now()
		FROM (SELECT DISTINCT u.t, u.i, v.s FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, i, s),
			LATERAL (VALUES (u.s), ('patient:' || u.i)) AS v(s)) AS x(t, i, s)
		WHERE r.tenant_id = x.t AND r.waiting AND r.subject = x.s AND r.patient_index = x.i
			AND r.state->'waiting_for' @> '["delivered"]'
		RETURNING r.id, r.tenant_id, r.wake_seq, r.due_at, r.step, r.priority`
	clearStartedSQL = `UPDATE runs r SET pending = '[]', attempts = 0, status = x.st, wake_seq = r.wake_seq + 1,
			due_at = CASE WHEN r.wake_after_pending AND x.st <> 'ended' THEN $5::timestamptz ELSE x.due END, wake_after_pending = false,
			updated_at = now(), ended_at = CASE WHEN x.st = 'ended' THEN $5::timestamptz ELSE NULL END
		FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[]) AS x(id, seq, st, due)
		WHERE r.id = x.id AND r.wake_seq = x.seq AND r.waiting
		RETURNING r.id, r.tenant_id, r.wake_seq, r.due_at, r.step, r.priority`
	deferStartedSQL = `UPDATE runs r SET attempts = r.attempts + 1, due_at = $3, wake_seq = r.wake_seq + 1, updated_at = now()
		FROM unnest($1::bigint[], $2::bigint[]) AS x(id, seq)
		WHERE r.id = x.id AND r.wake_seq = x.seq AND r.waiting
		RETURNING r.id, r.tenant_id, r.wake_seq, r.due_at, r.step, r.priority`
)

// RefreshSubjects gives the waiting runs of each source's subject its
// newest event and facts; an older event never overwrites a newer one's
// facts.
func (s *Store) RefreshSubjects(ctx context.Context, refreshes []journey.SubjectRefresh) error {
	if len(refreshes) == 0 {
		return nil
	}
	n := len(refreshes)
	tenant, source, subject, event, facts := make([]string, n), make([]string, n), make([]string, n), make([]int64, n), make([][]byte, n)
	for i, r := range refreshes {
		sealed, err := s.sealFacts(r.TenantID, r.Subject, r.Facts)
		if err != nil {
			return err
		}
		tenant[i], source[i], subject[i], event[i], facts[i] = r.TenantID, r.Source, r.Subject, r.EventID, sealed
	}
	_, err := s.execPlanned(ctx, refreshRunsSQL,
		tenant, source, subject, event, facts)
	if err != nil {
		return fmt.Errorf("refresh runs: %w", err)
	}
	return nil
}

// ContactPreferencesOf are the zones and languages of patients, by
// patient reference, from the contacts ContactFor would use; nothing sealed
// is opened.
func (s *Store) ContactPreferencesOf(ctx context.Context, tenantID, source string, patientRefs []string) (map[string]workflow.Contact, error) {
	p := s.patientsByIndex(tenantID, patientRefs)
	rows, err := s.query(ctx, `SELECT patient_index, time_zone, language FROM contacts
		WHERE tenant_id = $1 AND patient_index = ANY($2::text[]) AND fhir_source IN ('', $3)
		ORDER BY `+contactPrecedence, tenantID, p.probes, source)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]workflow.Contact{}
	for rows.Next() {
		var idx string
		var c workflow.Contact
		if err := rows.Scan(&idx, &c.TimeZone, &c.Language); err != nil {
			return nil, err
		}
		if _, seen := out[p.ref[idx]]; !seen { // the API's came first
			out[p.ref[idx]] = c
		}
	}
	spreadRefs(out, patientRefs)
	return out, rows.Err()
}

// ContactsOf are the contacts stored under patient references of a tenant,
// by reference, opened: each the one ContactFor would find.
func (s *Store) ContactsOf(ctx context.Context, tenantID, source string, patientRefs []string) (map[string]delivery.Contact, error) {
	p := s.patientsByIndex(tenantID, patientRefs)
	var rows []Contact
	if err := s.q(ctx).Where("tenant_id = ? AND patient_index IN ? AND fhir_source IN ('', ?)", tenantID, p.probes, source).
		Order(contactPrecedence).Find(&rows).Error; err != nil {
		return nil, err
	}
	out := map[string]delivery.Contact{}
	for _, row := range rows {
		ref := p.ref[row.PatientIndex]
		if _, seen := out[ref]; seen {
			continue // the API's came first
		}
		c, err := s.contact(row)
		if err != nil {
			return nil, err
		}
		out[ref] = c
	}
	spreadRefs(out, patientRefs)
	return out, nil
}

// BeginStarts writes, in one transaction, each planned run that does not
// exist yet with its path, its notices, their decisions, the delivery
// attempts about to be made (claimed as the one-at-a-time path claims
// them: sending, attempt 1), the contacts to store and the audit rows. A
// run that exists (nobody re-enters a workflow) is reported not created,
// and nothing of its start is written; its event was tried before by a
// worker that stopped mid-batch, so the deliveries that attempt left
// "sending" are marked unknown (the relay may have taken them).
func (s *Store) BeginStarts(ctx context.Context, starts []delivery.RunStart) ([]delivery.RunBegun, error) {
	out := make([]delivery.RunBegun, len(starts))
	err := s.InTx(ctx, func(tx *Store) error {
		created, err := tx.insertRuns(ctx, starts)
		if err != nil {
			return err
		}
		var audits []AuditRecord
		var steps runStepRows
		var notices noticeRows
		var again []int64 // events tried before: their runs exist
		for i, st := range starts {
			r, ok := created[runKey(st.Start.Run)]
			if !ok {
				if st.Start.Run.EventID != nil {
					again = append(again, *st.Start.Run.EventID)
				}
				continue
			}
			out[i] = delivery.RunBegun{Created: true, Run: r, Notices: make([]delivery.Notice, len(st.Notices)),
				Deliveries: make([]delivery.Delivery, len(st.Notices))}
			nr := st.Start.Run
			audits = append(audits, AuditRecord{TenantID: nr.TenantID, Actor: "worker", Action: "run.started",
				SubjectType: "run", SubjectID: strconv.FormatInt(r.ID, 10),
				Detail: map[string]any{"workflow": nr.WorkflowID, "version": nr.WorkflowVersion, "subject": nr.Subject}})
			for seq, step := range st.Start.State.Visited {
				steps.add(r, seq, step, st.Start.State.Happened[step], st.Start.Now)
			}
			for k, n := range st.Notices {
				notices.add(tx, i, k, r, *nr.EventID, n)
			}
			if r.Status == workflow.StatusEnded {
				audits = append(audits, runEndedAudit(r.TenantID, r.ID, r.WorkflowID, r.State))
			}
		}
		if err := tx.markEventsUnfinishedUnknown(ctx, again); err != nil {
			return err
		}
		if err := steps.insert(ctx, tx); err != nil {
			return err
		}
		noticeIDs, err := notices.insert(ctx, tx)
		if err != nil {
			return err
		}
		var dl deliveryRows
		var decisions decisionRows
		for j, ref := range notices.refs {
			n, ns := &out[ref.start].Notices[ref.notice], starts[ref.start].Notices[ref.notice]
			*n = delivery.Notice{ID: noticeIDs[j], TenantID: notices.tenant[j], EventID: notices.event[j], Type: ns.Type,
				Status: ns.Status, PortalToken: ns.PortalToken, RunID: &out[ref.start].Run.ID, Step: ns.Step, Template: ns.Template}
			if ns.Status != delivery.NoticePending {
				audits = append(audits, noticeAudit(*n, ns.Status, ns.Reasons))
			}
			if ns.Channel != "" {
				disclosed := ns.Disclosure
				disclosed.PatientIndex, disclosed.PatientRef = out[ref.start].Run.PatientIndex, out[ref.start].Run.Facts["patient"]
				dl.add(j, *n, ns.Channel, ns.MessageID, tx.sealDisclosure(n.TenantID, n.ID, ns.Channel, disclosed))
			}
		}
		deliveryIDs, err := dl.insert(ctx, tx)
		if err != nil {
			return err
		}
		deliveryOf := map[int]int64{} // notice row → delivery id
		for k, j := range dl.noticeRow {
			deliveryOf[j] = deliveryIDs[k]
		}
		for j, ref := range notices.refs {
			ns := starts[ref.start].Notices[ref.notice]
			n := out[ref.start].Notices[ref.notice]
			if id, ok := deliveryOf[j]; ok {
				out[ref.start].Deliveries[ref.notice] = delivery.Delivery{ID: id, TenantID: n.TenantID, NoticeID: n.ID,
					Channel: ns.Channel, Status: delivery.DeliverySending, MessageID: ns.MessageID}
				audits = append(audits, AuditRecord{TenantID: n.TenantID, Actor: "worker", Action: "delivery.attempt",
					SubjectType: "delivery", SubjectID: strconv.FormatInt(id, 10),
					Detail: map[string]any{"notice_id": n.ID, "channel": ns.Channel, "attempt": 1}})
			}
			if ns.Decision != nil {
				d := *ns.Decision
				d.NoticeID = n.ID
				decisions.add(d, deliveryOf[j])
				audits = append(audits, decisionAudit(d))
			}
			if ns.PortalDecision != nil {
				// The portal's decision governs no delivery: the page shows it.
				d := *ns.PortalDecision
				d.NoticeID = n.ID
				decisions.add(d, 0)
				audits = append(audits, decisionAudit(d))
			}
		}
		if err := decisions.insert(ctx, tx); err != nil {
			return err
		}
		upserted, err := tx.upsertContacts(ctx, starts, out)
		if err != nil {
			return err
		}
		audits = append(audits, upserted...)
		return tx.AuditMany(ctx, audits)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func runKey(r journey.NewRun) string {
	return r.TenantID + "\x00" + r.WorkflowID + "\x00" + r.Source + "\x00" + r.Subject
}

// insertRuns inserts the planned runs that do not exist and returns them,
// as saved, by runKey.
func (s *Store) insertRuns(ctx context.Context, starts []delivery.RunStart) (map[string]journey.Run, error) {
	n := len(starts)
	tenant, wf, subject, idx, status, step, state, pending, priority, outcome := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	source := make([]string, n)
	version, event, facts := make([]int32, n), make([]*int64, n), make([][]byte, n)
	due, created, ended := make([]*time.Time, n), make([]time.Time, n), make([]*time.Time, n)
	planned := map[string]journey.Run{}
	for i, st := range starts {
		nr, ps := st.Start.Run, st.Start.State
		sealed, err := s.sealFacts(nr.TenantID, nr.Subject, nr.Facts)
		if err != nil {
			return nil, err
		}
		stateJSON, err := json.Marshal(ps)
		if err != nil {
			return nil, err
		}
		actions := st.Pending
		if actions == nil {
			actions = []workflow.Action{}
		}
		pendingJSON, err := json.Marshal(actions)
		if err != nil {
			return nil, err
		}
		r := journey.Run{TenantID: nr.TenantID, WorkflowID: nr.WorkflowID, WorkflowVersion: nr.WorkflowVersion, Source: nr.Source, Subject: nr.Subject,
			PatientIndex: nr.PatientIndex, EventID: nr.EventID, Status: workflow.StatusWaiting, Step: ps.Step, WakeSeq: 1,
			Priority: nr.Priority, Outcome: ps.Outcome, CreatedAt: st.Start.Now, State: ps, Facts: nr.Facts, Pending: st.Pending}
		// As SaveRun saves a run: while actions are pending it is due at
		// the grace's end (a crash leaves them to the scheduler); a run
		// that ended with actions to do stays waiting until they are done.
		switch {
		case len(st.Pending) > 0:
			t := st.Start.Now.Add(s.pendingGrace)
			r.DueAt = &t
		case ps.Status == workflow.StatusEnded:
			r.Status = workflow.StatusEnded
			t := st.Start.Now
			ended[i] = &t
		case !ps.WaitUntil.IsZero():
			t := ps.WaitUntil
			r.DueAt = &t
		}
		tenant[i], wf[i], version[i], subject[i], idx[i], event[i] = nr.TenantID, nr.WorkflowID, int32(nr.WorkflowVersion), nr.Subject, nr.PatientIndex, nr.EventID
		status[i], step[i], state[i], facts[i], pending[i], due[i] = r.Status, ps.Step, string(stateJSON), sealed, string(pendingJSON), r.DueAt
		priority[i], outcome[i], created[i], source[i] = nr.Priority, ps.Outcome, st.Start.Now, nr.Source
		planned[runKey(nr)] = r
	}
	rows, err := s.query(ctx, `INSERT INTO runs (tenant_id, workflow_id, workflow_version, subject, patient_index, event_id,
			status, step, state, facts_sealed, pending, due_at, priority, outcome, created_at, updated_at, ended_at, wake_seq, source)
		SELECT t, w, v, sub, pi, e, st, step, state::jsonb, f, p::jsonb, due, pr, oc, ca, ca, ea, 1, src
		FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[],
			$10::bytea[], $11::text[], $12::timestamptz[], $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::text[])
			AS x(t, w, v, sub, pi, e, st, step, state, f, p, due, pr, oc, ca, ea, src)
		ON CONFLICT (tenant_id, workflow_id, source, subject) DO NOTHING
		RETURNING id, tenant_id, workflow_id, source, subject`,
		tenant, wf, version, subject, idx, event, status, step, state, facts, pending, due, priority, outcome, created, ended, source)
	if err != nil {
		return nil, fmt.Errorf("start runs: %w", err)
	}
	defer rows.Close()
	out := map[string]journey.Run{}
	for rows.Next() {
		var id int64
		var nr journey.NewRun
		if err := rows.Scan(&id, &nr.TenantID, &nr.WorkflowID, &nr.Source, &nr.Subject); err != nil {
			return nil, fmt.Errorf("start runs: %w", err)
		}
		r := planned[runKey(nr)]
		r.ID = id
		out[runKey(nr)] = r
	}
	return out, rows.Err()
}

// runStepRows are a batch's run_steps rows.
type runStepRows struct {
	run                        []int64
	seq                        []int32
	tenant, wf, step, happened []string
	at                         []time.Time
}

func (r *runStepRows) add(run journey.Run, seq int, step, happened string, at time.Time) {
	r.run, r.seq, r.tenant, r.wf = append(r.run, run.ID), append(r.seq, int32(seq)), append(r.tenant, run.TenantID), append(r.wf, run.WorkflowID)
	r.step, r.happened, r.at = append(r.step, step), append(r.happened, happened), append(r.at, at)
}

func (r *runStepRows) insert(ctx context.Context, tx *Store) error {
	if len(r.run) == 0 {
		return nil
	}
	_, err := tx.exec(ctx, `INSERT INTO run_steps (run_id, seq, tenant_id, workflow_id, step, happened, at)
		SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
		ON CONFLICT DO NOTHING`, r.run, r.seq, r.tenant, r.wf, r.step, r.happened, r.at)
	if err != nil {
		return fmt.Errorf("record run steps: %w", err)
	}
	return nil
}

// noticeRows are a batch's notices; refs says which start and notice
// each row is.
type noticeRows struct {
	refs                                      []struct{ start, notice int }
	tenant, typ, status, reasons, token, step []string
	template                                  []string
	event, run                                []int64
	payload, portal                           [][]byte
}

func (r *noticeRows) add(s *Store, start, notice int, run journey.Run, eventID int64, n delivery.NoticeStart) {
	reasons := n.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	rj, _ := json.Marshal(reasons)
	var sealed []byte
	if n.Payload != nil {
		sealed = s.seal(n.Payload, colNoticePayload, run.TenantID, n.PortalToken)
	}
	var portal []byte
	if n.Portal != nil {
		portal = s.seal(n.Portal, colNoticePortal, run.TenantID, n.PortalToken)
	}
	r.portal = append(r.portal, portal)
	r.refs = append(r.refs, struct{ start, notice int }{start, notice})
	r.tenant, r.typ, r.status, r.reasons = append(r.tenant, run.TenantID), append(r.typ, n.Type), append(r.status, n.Status), append(r.reasons, string(rj))
	r.token, r.step, r.template = append(r.token, n.PortalToken), append(r.step, n.Step), append(r.template, n.Template)
	r.event, r.run, r.payload = append(r.event, eventID), append(r.run, run.ID), append(r.payload, sealed)
}

// insert writes the notices and returns their ids, in row order.
func (r *noticeRows) insert(ctx context.Context, tx *Store) ([]int64, error) {
	if len(r.refs) == 0 {
		return nil, nil
	}
	rows, err := tx.query(ctx, `INSERT INTO notices (tenant_id, event_id, notice_type, status, reasons, payload_sealed, portal_token, run_id, step, template, portal_sealed)
		SELECT t, e, nt, st, r::jsonb, p, tok, run, step, tpl, ps
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::bytea[])
			AS x(t, e, nt, st, r, p, tok, run, step, tpl, ps)
		RETURNING id, portal_token`,
		r.tenant, r.event, r.typ, r.status, r.reasons, r.payload, r.token, r.run, r.step, r.template, r.portal)
	if err != nil {
		return nil, fmt.Errorf("insert notices: %w", err)
	}
	defer rows.Close()
	byToken := map[string]int64{}
	for rows.Next() {
		var id int64
		var token string
		if err := rows.Scan(&id, &token); err != nil {
			return nil, err
		}
		byToken[token] = id
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ids := make([]int64, len(r.token))
	for j, tok := range r.token {
		if ids[j] = byToken[tok]; ids[j] == 0 {
			return nil, fmt.Errorf("insert notices: a notice was not written")
		}
	}
	return ids, nil
}

// deliveryRows are a batch's delivery claims; noticeRow is each one's row
// among the batch's notices.
type deliveryRows struct {
	noticeRow                  []int
	tenant, channel, messageID []string
	notice                     []int64
	disclosure                 [][]byte // sealed: see sealDisclosure
}

func (d *deliveryRows) add(noticeRow int, n delivery.Notice, channel, messageID string, disclosure []byte) {
	d.noticeRow, d.tenant, d.channel, d.notice = append(d.noticeRow, noticeRow), append(d.tenant, n.TenantID), append(d.channel, channel), append(d.notice, n.ID)
	d.messageID, d.disclosure = append(d.messageID, messageID), append(d.disclosure, disclosure)
}

func (d *deliveryRows) insert(ctx context.Context, tx *Store) ([]int64, error) {
	if len(d.notice) == 0 {
		return nil, nil
	}
	rows, err := tx.query(ctx, `INSERT INTO deliveries (tenant_id, notice_id, channel, status, attempts, message_id, disclosure_sealed)
		SELECT t, n, c, 'sending', 0, m, dc FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[]) AS x(t, n, c, m, dc)
		RETURNING id, notice_id`, d.tenant, d.notice, d.channel, d.messageID, d.disclosure)
	if err != nil {
		return nil, fmt.Errorf("insert deliveries: %w", err)
	}
	defer rows.Close()
	byNotice := map[int64]int64{}
	for rows.Next() {
		var id, notice int64
		if err := rows.Scan(&id, &notice); err != nil {
			return nil, err
		}
		byNotice[notice] = id
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ids := make([]int64, len(d.notice))
	for k, n := range d.notice {
		ids[k] = byNotice[n]
	}
	return ids, nil
}

// decisionRows are a batch's policy decisions.
type decisionRows struct {
	tenant, revision, hash, reasons, redact, obligations []string
	channel                                              []string
	notice, latency                                      []int64
	delivery                                             []*int64
	allow                                                []bool
}

func (d *decisionRows) add(dec delivery.Decision, deliveryID int64) {
	list := func(l []string) string {
		if l == nil {
			l = []string{}
		}
		b, _ := json.Marshal(l)
		return string(b)
	}
	var dl *int64
	if deliveryID != 0 {
		dl = &deliveryID
	}
	d.tenant, d.revision, d.hash = append(d.tenant, dec.TenantID), append(d.revision, dec.Revision), append(d.hash, dec.InputHash)
	d.reasons, d.redact, d.obligations = append(d.reasons, list(dec.Reasons)), append(d.redact, list(dec.Redact)), append(d.obligations, list(dec.Obligations))
	d.notice, d.latency, d.delivery, d.allow = append(d.notice, dec.NoticeID), append(d.latency, dec.LatencyUS), append(d.delivery, dl), append(d.allow, dec.Allow)
	d.channel = append(d.channel, dec.Channel)
}

func (d *decisionRows) insert(ctx context.Context, tx *Store) error {
	if len(d.notice) == 0 {
		return nil
	}
	_, err := tx.exec(ctx, `INSERT INTO policy_decisions (tenant_id, notice_id, policy_revision, input_hash, allow, reasons, redact, obligations, latency_us, delivery_id, channel)
		SELECT t, n, rev, h, a, r::jsonb, red::jsonb, ob::jsonb, l, dl, ch
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[])
			AS x(t, n, rev, h, a, r, red, ob, l, dl, ch)`,
		d.tenant, d.notice, d.revision, d.hash, d.allow, d.reasons, d.redact, d.obligations, d.latency, d.delivery, d.channel)
	if err != nil {
		return fmt.Errorf("record decisions: %w", err)
	}
	return nil
}

// upsertContacts stores the bundles' contacts of the runs created, each
// for its source (never over one registered through the API nor another
// source's; one row per patient and source, the last of the batch), and
// returns the audit rows of those that changed.
func (s *Store) upsertContacts(ctx context.Context, starts []delivery.RunStart, begun []delivery.RunBegun) ([]AuditRecord, error) {
	latest := map[string]int{} // tenant+index → start
	var order []string
	for i, st := range starts {
		if st.Contact == nil || !begun[i].Created {
			continue
		}
		key := st.Start.Run.TenantID + "\x00" + st.Contact.Contact.FHIRSource + "\x00" + s.PatientIndex(st.Start.Run.TenantID, st.Contact.PatientRef)
		if _, ok := latest[key]; !ok {
			order = append(order, key)
		}
		latest[key] = i
	}
	if len(order) == 0 {
		return nil, nil
	}
	n := len(order)
	tenant, idx, lang, tz, source, fhirSource := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	email, patient := make([][]byte, n), make([][]byte, n)
	// Rows of these patients and sources under older index versions are
	// replaced, in the same statement, as an upsert of the current
	// version would update them.
	var oTenant, oIdx, oSource []string
	for k, key := range order {
		st := starts[latest[key]]
		c := st.Contact.Contact
		if c.Source == "api" || c.FHIRSource == "" {
			return nil, fmt.Errorf("upsert contacts: a bundle's contact needs its source")
		}
		tenant[k], idx[k], lang[k], tz[k], source[k] = st.Start.Run.TenantID, s.PatientIndex(st.Start.Run.TenantID, st.Contact.PatientRef), c.Language, c.TimeZone, c.Source
		fhirSource[k] = c.FHIRSource
		email[k] = s.seal([]byte(c.Email), colContactEmail, tenant[k], idx[k])
		patient[k] = s.seal([]byte(st.Contact.PatientRef), colContactPatient, tenant[k], idx[k])
		for _, o := range s.olderPatientIndexes(tenant[k], st.Contact.PatientRef) {
			oTenant, oIdx, oSource = append(oTenant, tenant[k]), append(oIdx, o), append(oSource, c.FHIRSource)
		}
	}
	// Only what a bundle tells is written: a FHIR contact has no requests.
	rows, err := s.query(ctx, `WITH replaced AS (DELETE FROM contacts c USING unnest($9::text[], $10::text[], $11::text[]) AS o(t, i, fs)
			WHERE c.tenant_id = o.t AND c.patient_index = o.i AND c.fhir_source = o.fs)
		INSERT INTO contacts (tenant_id, patient_index, email_sealed, language, time_zone, source, updated_at,
			opted_out_channels, confidential_email_sealed, restrictions, marketing_authorized, alternate_format, fhir_source, patient_sealed)
		SELECT t, i, e, l, z, src, now(), '', NULL, '', false, '', fs, p
		FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[]) AS x(t, i, e, l, z, src, fs, p)
		ON CONFLICT (tenant_id, patient_index, fhir_source) DO UPDATE SET
			email_sealed = EXCLUDED.email_sealed, patient_sealed = EXCLUDED.patient_sealed, language = EXCLUDED.language,
			time_zone = EXCLUDED.time_zone, source = EXCLUDED.source, updated_at = now(),
			opted_out_channels = EXCLUDED.opted_out_channels, confidential_email_sealed = EXCLUDED.confidential_email_sealed,
			restrictions = EXCLUDED.restrictions, marketing_authorized = EXCLUDED.marketing_authorized,
			alternate_format = EXCLUDED.alternate_format
		RETURNING tenant_id, patient_index, source`, tenant, idx, email, lang, tz, source, fhirSource, patient, oTenant, oIdx, oSource)
	if err != nil {
		return nil, fmt.Errorf("upsert contacts: %w", translate(err))
	}
	defer rows.Close()
	var audits []AuditRecord
	for rows.Next() {
		var t, i, src string
		if err := rows.Scan(&t, &i, &src); err != nil {
			return nil, err
		}
		audits = append(audits, AuditRecord{TenantID: t, Actor: src, Action: "contact.upsert", SubjectType: "contact", SubjectID: i})
	}
	return audits, rows.Err()
}

// FinishStarts records, in one transaction, what became of the batch's
// delivery attempts: each delivery's outcome, and for each sent or whose
// outcome is unknown its entry in the accounting of disclosures; each
// notice sent, or failed
// for good (one that failed for now, or whose delivery's outcome is
// unknown, stays pending); each run whose sends
// are all done has its pending actions cleared as ClearPending clears
// them, and one with a send to try again is deferred as DeferPending
// defers it; a "delivered" engagement for each message the relay took,
// waking the runs that wait for one. It returns the wake-ups for the queue.
func (s *Store) FinishStarts(ctx context.Context, finishes []delivery.RunFinish) ([]journey.Wake, error) {
	now := time.Now().UTC()
	var wakes []journey.Wake
	err := s.InTx(ctx, func(tx *Store) error {
		var audits []AuditRecord
		var dID []int64
		var dStatus, dMsg, dErr []string
		var dTLS []bool
		var nID []int64
		var nStatus, nReasons []string
		var cleared, deferred []journey.Run
		var eTenant, eIdx, eSubject []string
		var ePatient [][]byte
		var wTenant, wIdx, wSubject []string // the wake-ups' probes: every index the patient's runs may carry
		var disclosures disclosureRows
		for _, f := range finishes {
			retry := false
			for _, r := range f.Results {
				status := delivery.DeliverySent
				switch {
				case r.Unknown:
					status = delivery.DeliveryUnknown
				case !r.Sent:
					status = delivery.DeliveryFailed
				}
				dID, dStatus, dTLS, dMsg, dErr = append(dID, r.Delivery.ID), append(dStatus, status), append(dTLS, r.TLS), append(dMsg, r.MessageID), append(dErr, truncate(r.Err, 500))
				if dc, ok := outcomeDisclosure(r.Delivery, status, r.Disclosure); ok {
					if err := disclosures.add(tx, dc, now); err != nil {
						return err
					}
				}
				detail := map[string]any{"notice_id": r.Notice.ID, "channel": r.Delivery.Channel, "tls": r.TLS, "attempt": r.Delivery.Attempts}
				if r.Err != "" {
					detail["error"] = truncate(r.Err, 500)
				}
				audits = append(audits, AuditRecord{TenantID: r.Delivery.TenantID, Actor: "worker", Action: "delivery." + status,
					SubjectType: "delivery", SubjectID: strconv.FormatInt(r.Delivery.ID, 10), Detail: detail})
				switch {
				case r.Sent:
					nID, nStatus, nReasons = append(nID, r.Notice.ID), append(nStatus, delivery.NoticeSent), append(nReasons, "[]")
					audits = append(audits, noticeAudit(r.Notice, delivery.NoticeSent, nil))
					eTenant, eIdx, eSubject = append(eTenant, f.Run.TenantID), append(eIdx, f.Run.PatientIndex), append(eSubject, f.Run.Subject)
					ePatient = append(ePatient, s.sealPatient(colEngagementPatient, f.Run.TenantID, f.Run.PatientIndex, f.Run.Facts["patient"]))
					for _, i := range s.runPatientProbes(f.Run) {
						wTenant, wIdx, wSubject = append(wTenant, f.Run.TenantID), append(wIdx, i), append(wSubject, f.Run.Subject)
					}
				case r.Temporary:
					retry = true
				case r.Unknown:
					// The notice stays pending until an operator resolves
					// its delivery; the run goes on.
				default:
					reasons := []string{r.Err}
					rj, _ := json.Marshal(reasons)
					nID, nStatus, nReasons = append(nID, r.Notice.ID), append(nStatus, delivery.NoticeFailed), append(nReasons, string(rj))
					audits = append(audits, noticeAudit(r.Notice, delivery.NoticeFailed, reasons))
				}
			}
			if retry {
				deferred = append(deferred, f.Run)
			} else {
				cleared = append(cleared, f.Run)
			}
		}
		if _, err := tx.execPlanned(ctx, `UPDATE deliveries d SET status = x.st, tls = x.tls, message_id = x.mid, error = x.err, updated_at = now()
			FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::text[], $5::text[]) AS x(id, st, tls, mid, err) WHERE d.id = x.id`,
			dID, dStatus, dTLS, dMsg, dErr); err != nil {
			return fmt.Errorf("finish deliveries: %w", err)
		}
		if err := disclosures.insert(ctx, tx); err != nil {
			return err
		}
		if len(nID) > 0 {
			if _, err := tx.execPlanned(ctx, `UPDATE notices n SET status = x.st, reasons = x.r::jsonb, updated_at = now()
				FROM unnest($1::bigint[], $2::text[], $3::text[]) AS x(id, st, r) WHERE n.id = x.id AND n.status = 'pending'`,
				nID, nStatus, nReasons); err != nil {
				return fmt.Errorf("finish notices: %w", err)
			}
		}
		w, ended, err := tx.clearStarted(ctx, cleared, now)
		if err != nil {
			return err
		}
		wakes = append(wakes, w...)
		audits = append(audits, ended...)
		if w, err = tx.deferStarted(ctx, deferred, now); err != nil {
			return err
		}
		wakes = append(wakes, w...)
		if len(eTenant) > 0 {
			if _, err := tx.exec(ctx, `INSERT INTO engagements (tenant_id, patient_index, subject, type, received_at, patient_sealed)
				SELECT t, i, s, 'delivered', $4, p FROM unnest($1::text[], $2::text[], $3::text[], $5::bytea[]) AS x(t, i, s, p)`,
				eTenant, eIdx, eSubject, now, ePatient); err != nil {
				return fmt.Errorf("record delivered: %w", err)
			}
			// Only runs waiting for "delivered" are woken now, as RecordDelivered wakes them.
			rows, err := tx.queryPlanned(ctx, wakeDeliveredSQL, wTenant, wIdx, wSubject, now)
			if err != nil {
				return fmt.Errorf("wake runs: %w", err)
			}
			w, err := scanWakes(rows)
			if err != nil {
				return fmt.Errorf("wake runs: %w", err)
			}
			wakes = append(wakes, w...)
		}
		return tx.AuditMany(ctx, audits)
	})
	return wakes, err
}

// clearStarted clears the pending sends of runs whose sends are all done,
// if they have not moved since (as ClearPending does), and returns their
// next wake-ups and the audit rows of those that ended.
func (s *Store) clearStarted(ctx context.Context, runs []journey.Run, now time.Time) ([]journey.Wake, []AuditRecord, error) {
	if len(runs) == 0 {
		return nil, nil, nil
	}
	n := len(runs)
	id, seq, status, due := make([]int64, n), make([]int64, n), make([]string, n), make([]*time.Time, n)
	byID := map[int64]journey.Run{}
	for i, r := range runs {
		id[i], seq[i], status[i] = r.ID, r.WakeSeq, workflow.StatusWaiting
		if r.State.Status == workflow.StatusEnded {
			status[i] = workflow.StatusEnded
		} else if !r.State.WaitUntil.IsZero() {
			t := r.State.WaitUntil
			due[i] = &t
		}
		byID[r.ID] = r
	}
	rows, err := s.queryPlanned(ctx, clearStartedSQL, id, seq, status, due, now)
	if err != nil {
		return nil, nil, fmt.Errorf("clear pending actions: %w", err)
	}
	wakes, err := scanWakes(rows)
	if err != nil {
		return nil, nil, fmt.Errorf("clear pending actions: %w", err)
	}
	var audits []AuditRecord
	out := wakes[:0]
	for _, w := range wakes {
		if r := byID[w.ID]; r.State.Status == workflow.StatusEnded {
			audits = append(audits, runEndedAudit(r.TenantID, r.ID, r.WorkflowID, r.State))
			continue
		}
		out = append(out, w)
	}
	return out, audits, nil
}

// deferStarted records a failed attempt at the pending sends of runs and
// makes them due again after the first retry delay (as DeferPending does).
func (s *Store) deferStarted(ctx context.Context, runs []journey.Run, now time.Time) ([]journey.Wake, error) {
	if len(runs) == 0 {
		return nil, nil
	}
	id, seq := make([]int64, len(runs)), make([]int64, len(runs))
	for i, r := range runs {
		id[i], seq[i] = r.ID, r.WakeSeq
	}
	rows, err := s.queryPlanned(ctx, deferStartedSQL, id, seq, now.Add(journey.RetryDelay(0)))
	if err != nil {
		return nil, fmt.Errorf("defer pending actions: %w", err)
	}
	return scanWakes(rows)
}

func scanWakes(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}) ([]journey.Wake, error) {
	defer rows.Close()
	var out []journey.Wake
	for rows.Next() {
		var w journey.Wake
		var due *time.Time
		if err := rows.Scan(&w.ID, &w.TenantID, &w.WakeSeq, &due, &w.Step, &w.Priority); err != nil {
			return nil, err
		}
		if due != nil {
			w.DueAt = *due
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

func runEndedAudit(tenantID string, runID int64, workflowID string, st workflow.State) AuditRecord {
	return AuditRecord{TenantID: tenantID, Actor: "worker", Action: "run.ended",
		SubjectType: "run", SubjectID: strconv.FormatInt(runID, 10),
		Detail: map[string]any{"workflow": workflowID, "outcome": st.Outcome, "step": st.Step}}
}

func noticeAudit(n delivery.Notice, status string, reasons []string) AuditRecord {
	if reasons == nil {
		reasons = []string{}
	}
	return AuditRecord{TenantID: n.TenantID, Actor: "worker", Action: "notice." + status,
		SubjectType: "notice", SubjectID: strconv.FormatInt(n.ID, 10),
		Detail: map[string]any{"event_id": n.EventID, "reasons": reasons}}
}

func decisionAudit(d delivery.Decision) AuditRecord {
	orEmpty := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	return AuditRecord{TenantID: d.TenantID, Actor: "policy", Action: "policy.decision",
		SubjectType: "notice", SubjectID: strconv.FormatInt(d.NoticeID, 10),
		Detail: map[string]any{"allow": d.Allow, "reasons": orEmpty(d.Reasons), "redact": orEmpty(d.Redact), "obligations": orEmpty(d.Obligations),
			"revision": d.Revision, "input_hash": d.InputHash, "channel": d.Channel}}
}
