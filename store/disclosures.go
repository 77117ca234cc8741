package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/seal"
)

// The accounting of disclosures (HIPAA 164.528): a row per notice that
// went out, written in the transaction that records the delivery's
// outcome (FinishDelivery, FinishStarts) or by RecordDisclosure. The
// patient is its blind index; the recipient is sealed for its row.

// ErrPurgeNeedsOwner: the service's role may not delete disclosures; the
// purge runs as the role migrations run as.
var ErrPurgeNeedsOwner = fault.New(fault.Forbidden,
	"purging disclosures needs the database owner's role (the one migrations run as): the service's role may only add and read them")

// disclosureRows are disclosures to insert in one statement.
type disclosureRows struct {
	tenant, idx, status, channel, ref, typ, detail, redacted, purpose []string
	at                                                                []time.Time
	recipient, patient                                                [][]byte
	notice, delivery                                                  []*int64
	attempt                                                           []*int32
}

// add checks d and adds it, its recipient sealed for its row.
func (r *disclosureRows) add(s *Store, d delivery.Disclosure, now time.Time) error {
	if err := checkDisclosure(d); err != nil {
		return err
	}
	if d.At.IsZero() {
		d.At = now
	}
	redacted := d.Redacted
	if redacted == nil {
		redacted = []string{}
	}
	rj, _ := json.Marshal(redacted)
	ref := seal.NewToken()
	id := func(v int64) *int64 {
		if v == 0 {
			return nil
		}
		return &v
	}
	var attempt *int32
	if d.DeliveryID != 0 {
		a := int32(d.Attempt)
		attempt = &a
	}
	r.tenant, r.idx, r.status, r.channel = append(r.tenant, d.TenantID), append(r.idx, d.PatientIndex), append(r.status, d.Status), append(r.channel, d.Channel)
	r.ref, r.typ, r.detail, r.redacted = append(r.ref, ref), append(r.typ, d.NoticeType), append(r.detail, d.Detail), append(r.redacted, string(rj))
	r.purpose, r.at = append(r.purpose, d.Purpose), append(r.at, d.At)
	r.recipient = append(r.recipient, s.seal([]byte(d.Recipient), colDisclosureRecipient, d.TenantID, d.PatientIndex, ref))
	r.patient = append(r.patient, s.sealPatient(colDisclosurePatient, d.TenantID, d.PatientIndex, d.PatientRef))
	r.notice, r.delivery, r.attempt = append(r.notice, id(d.NoticeID)), append(r.delivery, id(d.DeliveryID)), append(r.attempt, attempt)
	return nil
}

// checkDisclosure says what an entry lacks; its errors name no value.
func checkDisclosure(d delivery.Disclosure) error {
	switch {
	case d.TenantID == "" || d.PatientIndex == "":
		// PatientRef may be missing only from a delivery claimed before
		// disclosures kept it; reindex finds it from another row.
		return fmt.Errorf("record disclosure: the tenant and the patient's index are required")
	case d.Recipient == "" || d.Channel == "":
		return fmt.Errorf("record disclosure: the recipient and the channel are required")
	case d.NoticeType == "":
		return fmt.Errorf("record disclosure: the notice type is required")
	case !slices.Contains([]string{delivery.DeliverySent, delivery.DeliveryUnknown, delivery.DisclosureViewed}, d.Status):
		return fmt.Errorf("record disclosure: status %q is not sent, unknown or viewed", d.Status)
	case !slices.Contains([]string{delivery.DetailFull, delivery.DetailRedacted, delivery.DetailPortalOnly}, d.Detail):
		return fmt.Errorf("record disclosure: detail %q is not full, redacted or portal-only", d.Detail)
	case !slices.Contains([]string{delivery.PurposePayment, delivery.PurposeTreatment, delivery.PurposeOperations, delivery.PurposeMarketing}, d.Purpose):
		return fmt.Errorf("record disclosure: purpose %q is not payment, treatment, operations or marketing", d.Purpose)
	}
	return nil
}

// insert writes the rows in one statement; a delivery attempt recorded
// already is not recorded again.
func (r *disclosureRows) insert(ctx context.Context, tx *Store) error {
	if len(r.tenant) == 0 {
		return nil
	}
	_, err := tx.execPlanned(ctx, `INSERT INTO disclosures (tenant_id, patient_index, disclosed_at, status, channel, ref, recipient_sealed,
			notice_type, detail, redacted, purpose, notice_id, delivery_id, attempt, patient_sealed)
		SELECT t, i, a, st, c, ref, rcpt, nt, d, r::jsonb, p, n, dl, att, pt
		FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[],
			$10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::int[], $15::bytea[]) AS x(t, i, a, st, c, ref, rcpt, nt, d, r, p, n, dl, att, pt)
		ON CONFLICT (delivery_id, attempt) WHERE delivery_id IS NOT NULL DO NOTHING`,
		r.tenant, r.idx, r.at, r.status, r.channel, r.ref, r.recipient, r.typ, r.detail, r.redacted, r.purpose, r.notice, r.delivery, r.attempt, r.patient)
	if err != nil {
		return fmt.Errorf("record disclosures: %w", err)
	}
	return nil
}

// outcomeDisclosure completes what a delivery disclosed with its outcome:
// the entry to record, or false when the outcome discloses nothing (the
// delivery failed).
func outcomeDisclosure(d delivery.Delivery, status string, disclosed delivery.Disclosure) (delivery.Disclosure, bool) {
	if status != delivery.DeliverySent && status != delivery.DeliveryUnknown {
		return delivery.Disclosure{}, false
	}
	if d.Channel == delivery.ChannelPortal && disclosed.Recipient == "" {
		// A portal step sends nothing: the view is accounted for when shown.
		return delivery.Disclosure{}, false
	}
	disclosed.TenantID, disclosed.Status, disclosed.NoticeID, disclosed.DeliveryID, disclosed.Attempt = d.TenantID, status, d.NoticeID, d.ID, d.Attempts
	if disclosed.Channel == "" {
		disclosed.Channel = d.Channel
	}
	return disclosed, true
}

// sealDisclosure seals what a delivery's attempt is about to disclose,
// for the delivery's row; nil when it names no recipient (nothing to
// account for).
func (s *Store) sealDisclosure(tenantID string, noticeID int64, channel string, d delivery.Disclosure) []byte {
	if d.Recipient == "" {
		return nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil
	}
	return s.seal(b, colDeliveryDisclosure, tenantID, itoa(noticeID), channel)
}

// unfinishedDisclosure is the entry of a delivery marked unknown because
// its attempt never recorded the relay's answer: what the attempt sealed
// on its row when it claimed it. ok is false when it sealed nothing; an
// error, when that does not open for the row.
func (s *Store) unfinishedDisclosure(d Delivery) (delivery.Disclosure, bool, error) {
	if len(d.DisclosureSealed) == 0 {
		return delivery.Disclosure{}, false, nil
	}
	b, err := s.open(d.DisclosureSealed, colDeliveryDisclosure, d.TenantID, itoa(d.NoticeID), d.Channel)
	if err != nil {
		return delivery.Disclosure{}, false, err
	}
	var disclosed delivery.Disclosure
	if err := json.Unmarshal(b, &disclosed); err != nil {
		return delivery.Disclosure{}, false, fmt.Errorf("delivery %d: sealed disclosure: %w", d.ID, err)
	}
	dc, ok := outcomeDisclosure(delivery.Delivery{ID: d.ID, TenantID: d.TenantID, NoticeID: d.NoticeID, Channel: d.Channel, Attempts: d.Attempts},
		delivery.DeliveryUnknown, disclosed)
	dc.At = d.UpdatedAt // when the attempt began: the latest it can have gone out is unknown
	return dc, ok, nil
}

// RecordDisclosure adds an entry to a patient's accounting of disclosures:
// for what goes out other than a delivery (a notice shown in the portal,
// Status delivery.DisclosureViewed, DeliveryID 0). d.At zero is now. On a
// store inside InTx it joins that transaction, so that the entry is
// written with what it accounts for or not at all.
func (s *Store) RecordDisclosure(ctx context.Context, d delivery.Disclosure) error {
	var rows disclosureRows
	if err := rows.add(s, d, time.Now().UTC()); err != nil {
		return err
	}
	return rows.insert(ctx, s)
}

// Disclosures lists a patient's disclosures in time order, a page at a
// time, the recipients opened; next is the cursor of the following page,
// zero when this is the last.
func (s *Store) Disclosures(ctx context.Context, q delivery.DisclosureQuery) (out []delivery.Disclosure, next delivery.DisclosureCursor, err error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	probes := s.patientProbes(q.TenantID, q.PatientRef)
	var from, to, afterAt *time.Time
	if !q.From.IsZero() {
		from = &q.From
	}
	if !q.To.IsZero() {
		to = &q.To
	}
	if q.After.ID != 0 {
		afterAt = &q.After.At
	}
	rows, err := s.query(ctx, `SELECT id, patient_index, disclosed_at, status, channel, ref, recipient_sealed, notice_type, detail, redacted, purpose,
			coalesce(notice_id, 0), coalesce(delivery_id, 0), coalesce(attempt, 0)
		FROM disclosures
		WHERE tenant_id = $1 AND patient_index = ANY($2::text[])
			AND ($3::timestamptz IS NULL OR disclosed_at >= $3) AND ($4::timestamptz IS NULL OR disclosed_at < $4)
			AND ($5::timestamptz IS NULL OR (disclosed_at, id) > ($5, $6))
		ORDER BY disclosed_at, id LIMIT $7`, q.TenantID, probes, from, to, afterAt, q.After.ID, q.Limit+1)
	if err != nil {
		return nil, next, fmt.Errorf("list disclosures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		d := delivery.Disclosure{TenantID: q.TenantID}
		var ref string
		var sealed, redacted []byte
		if err := rows.Scan(&d.ID, &d.PatientIndex, &d.At, &d.Status, &d.Channel, &ref, &sealed, &d.NoticeType, &d.Detail, &redacted, &d.Purpose,
			&d.NoticeID, &d.DeliveryID, &d.Attempt); err != nil {
			return nil, next, fmt.Errorf("list disclosures: %w", err)
		}
		if err := json.Unmarshal(redacted, &d.Redacted); err != nil {
			return nil, next, fmt.Errorf("list disclosures: disclosure %d: redacted fields: %w", d.ID, err)
		}
		rcpt, err := s.open(sealed, colDisclosureRecipient, q.TenantID, d.PatientIndex, ref)
		if err != nil {
			return nil, next, fmt.Errorf("list disclosures: disclosure %d: recipient: %w", d.ID, err)
		}
		d.Recipient, d.At = string(rcpt), d.At.UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, next, fmt.Errorf("list disclosures: %w", err)
	}
	if len(out) > q.Limit {
		out = out[:q.Limit]
		last := out[len(out)-1]
		next = delivery.DisclosureCursor{At: last.At, ID: last.ID}
	}
	return out, next, nil
}

// PurgeDisclosures deletes the disclosures made before before (of one
// tenant, or of all with tenantID ""), and audits, per tenant, how many
// it removed, with actor, in the same transaction. It needs the owner's
// role (ErrPurgeNeedsOwner otherwise). It returns the count per tenant.
func (s *Store) PurgeDisclosures(ctx context.Context, tenantID string, before time.Time, actor string) (map[string]int64, error) {
	removed := map[string]int64{}
	err := s.InTx(ctx, func(tx *Store) error {
		var tenants []string
		if err := tx.q(ctx).Raw(`SELECT id FROM tenants WHERE ? = '' OR id = ? ORDER BY id`, tenantID, tenantID).Scan(&tenants).Error; err != nil {
			return fmt.Errorf("purge disclosures: %w", err)
		}
		if tenantID != "" && len(tenants) == 0 {
			return ErrNotFound
		}
		rows, err := tx.query(ctx, `WITH gone AS (DELETE FROM disclosures WHERE disclosed_at < $1 AND ($2 = '' OR tenant_id = $2) RETURNING tenant_id)
			SELECT tenant_id, count(*) FROM gone GROUP BY tenant_id`, before, tenantID)
		if err != nil {
			var pg *pgconn.PgError
			if errors.As(err, &pg) && pg.Code == "42501" {
				return ErrPurgeNeedsOwner
			}
			return fmt.Errorf("purge disclosures: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var t string
			var n int64
			if err := rows.Scan(&t, &n); err != nil {
				return fmt.Errorf("purge disclosures: %w", err)
			}
			removed[t] = n
			if !slices.Contains(tenants, t) {
				tenants = append(tenants, t) // rows of a tenant not (or no longer) set up
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("purge disclosures: %w", err)
		}
		audits := make([]AuditRecord, 0, len(tenants))
		for _, t := range tenants {
			audits = append(audits, AuditRecord{TenantID: t, Actor: actor, Action: "disclosures.purged", SubjectType: "disclosures",
				SubjectID: t, Detail: map[string]any{"removed": removed[t], "before": before.UTC().Format(time.RFC3339)}})
		}
		return tx.AuditMany(ctx, audits)
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}
