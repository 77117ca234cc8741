package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/workflow"
)

// Reindex rewrites a tenant's patient indexes made with an older index key
// version (or before versions) to the tenant's current one, table by
// table, a page of rows per transaction in primary key order. Each row's
// patient reference comes from the row itself (runs' facts, the
// patient_sealed columns); a row without one (written before 00027) takes
// it from any other row of the patient in the tenant that has one, and is
// left as it is, counted Unresolved, when none has. The values sealed for
// the row's patient_index (contact emails, the patient references,
// disclosure recipients, a patient run's facts, bound to its subject) are
// re-sealed for the new index. Rows already current are never read, so a
// rerun after an interruption continues where it stopped.
//
// Disclosures may only be re-keyed by the tables' owner (the role
// migrations run as): the service cannot rewrite an accounting entry.
func (s *Store) Reindex(ctx context.Context, tenantID string, opts ReindexOptions) ([]ReindexProgress, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	r := &reindexer{s: s, tenant: tenantID, version: s.IndexVersion(tenantID)}
	return walkTables("reindex", indexedTables, func(t indexedTable) string { return t.name },
		func(t indexedTable) (ReindexProgress, error) { return r.table(ctx, t, opts) })
}

// ReindexOptions tune Reindex.
type ReindexOptions struct {
	// PageSize is how many rows one transaction re-keys (default 500).
	PageSize int
	// Progress, if set, is told after each page; an error it returns
	// stops the reindex (what is committed stays: a rerun continues).
	Progress func(ReindexProgress) error
}

// ReindexProgress counts one table's reindex of a tenant so far.
type ReindexProgress struct {
	Table   string
	Pages   int
	Rekeyed int // rows now on the tenant's current index version
	// Unresolved rows have no patient reference of their own and no other
	// row of the tenant gives one: they keep their index (still probed
	// while its version is configured).
	Unresolved int
	Done       bool
}

// indexedTable is a table whose rows carry a patient_index, as Reindex
// walks it.
type indexedTable struct {
	name string
	key  []string // primary key columns, the order pages follow
	cols []string // what rekey reads, after the key
	// rekey re-keys one row (its key and cols as scanned): ok is false
	// when its patient is unknown.
	rekey func(r *reindexer, ctx context.Context, tx *Store, key []any, cols []any) (ok bool, err error)
}

// reindexer re-keys one tenant's rows.
type reindexer struct {
	s       *Store
	tenant  string
	version int
	// known maps indexes to patient references, loaded from every row of
	// the tenant that holds one the first time a row lacks its own.
	known map[string]string
}

func (r *reindexer) index(ref string) string { return r.s.PatientIndex(r.tenant, ref) }

// patient is the reference a row's sealed value (for the row's index) or,
// failing that, another row of the tenant gives for index.
func (r *reindexer) patient(ctx context.Context, sealed []byte, c sealedColumn, index string) (string, error) {
	if len(sealed) > 0 {
		b, err := r.s.open(sealed, c, r.tenant, index)
		if err != nil {
			return "", fmt.Errorf("%s.%s: %w", c.table, c.column, err)
		}
		return string(b), nil
	}
	if r.known == nil {
		if err := r.loadKnown(ctx); err != nil {
			return "", err
		}
	}
	return r.known[index], nil
}

// loadKnown reads every patient reference the tenant's rows hold and files
// it under the row's index and under each index version still probed.
func (r *reindexer) loadKnown(ctx context.Context) error {
	r.known = map[string]string{}
	add := func(index, ref string) {
		if ref == "" {
			return
		}
		r.known[index] = ref
		for _, p := range r.s.patientProbes(r.tenant, ref) {
			r.known[p] = ref
		}
	}
	for _, src := range []struct {
		table string
		col   sealedColumn
		extra string // a second row key part before the index
	}{
		{"contacts", colContactPatient, ""}, {"engagements", colEngagementPatient, ""},
		{"disclosures", colDisclosurePatient, ""}, {"segment_members", colSegmentPatient, "segment"},
		{"purpose_opt_outs", colOptOutPatient, "purpose"},
	} {
		extra := "''"
		if src.extra != "" {
			extra = src.extra
		}
		rows, err := r.s.query(ctx, fmt.Sprintf(`SELECT DISTINCT ON (patient_index) patient_index, %s, %s FROM %s
			WHERE tenant_id = $1 AND %s IS NOT NULL ORDER BY patient_index`, extra, src.col.column, src.table, src.col.column), r.tenant)
		if err != nil {
			return fmt.Errorf("patients of %s: %w", src.table, err)
		}
		for rows.Next() {
			var index, part string
			var sealed []byte
			if err := rows.Scan(&index, &part, &sealed); err != nil {
				rows.Close()
				return err
			}
			place := []string{index}
			if src.extra != "" {
				place = []string{part, index}
			}
			if b, err := r.s.open(sealed, src.col, r.tenant, place...); err == nil {
				add(index, string(b))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	rows, err := r.s.query(ctx, `SELECT DISTINCT ON (patient_index) patient_index, subject, facts_sealed FROM runs
		WHERE tenant_id = $1 ORDER BY patient_index, id DESC`, r.tenant)
	if err != nil {
		return fmt.Errorf("patients of runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var index, subject string
		var sealed []byte
		if err := rows.Scan(&index, &subject, &sealed); err != nil {
			return err
		}
		if f, err := r.s.openFacts(r.tenant, subject, sealed); err == nil {
			add(index, f["patient"])
		}
	}
	return rows.Err()
}

func (s *Store) openFacts(tenantID, subject string, sealed []byte) (workflow.Facts, error) {
	b, err := s.open(sealed, colRunFacts, tenantID, subject)
	if err != nil {
		return nil, err
	}
	var f workflow.Facts
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("facts: %w", err)
	}
	return f, nil
}

var indexedTables = []indexedTable{
	{"contacts", []string{"id"}, []string{"patient_index", "fhir_source", "email_sealed", "confidential_email_sealed", "patient_sealed", "encryption_key_sealed", "phone_sealed"}, rekeyContact},
	{"engagements", []string{"id"}, []string{"patient_index", "patient_sealed"}, rekeyEngagement},
	{"segment_members", []string{"tenant_id", "segment", "patient_index"}, []string{"patient_index", "segment", "patient_sealed"}, rekeySegmentMember},
	{"purpose_opt_outs", []string{"tenant_id", "purpose", "patient_index"}, []string{"patient_index", "purpose", "patient_sealed"}, rekeyOptOut},
	{"disclosures", []string{"id"}, []string{"patient_index", "ref", "recipient_sealed", "patient_sealed"}, rekeyDisclosure},
	// Runs last: the patients of the rows above may be known only from them.
	{"runs", []string{"id"}, []string{"patient_index", "workflow_id", "source", "subject", "facts_sealed"}, rekeyRun},
}

func rekeyContact(r *reindexer, ctx context.Context, tx *Store, key, cols []any) (bool, error) {
	old, source := cols[0].(string), cols[1].(string)
	ref, err := r.patient(ctx, bytesOf(cols[4]), colContactPatient, old)
	if err != nil || ref == "" {
		return false, err
	}
	idx := r.index(ref)
	// An upsert since the rotation wrote the patient's current row: it
	// is newer than this one.
	var n int64
	if err := tx.q(ctx).Raw(`SELECT count(*) FROM contacts WHERE tenant_id = ? AND patient_index = ? AND fhir_source = ?`,
		r.tenant, idx, source).Scan(&n).Error; err != nil {
		return false, err
	}
	if n > 0 {
		_, err := tx.exec(ctx, `DELETE FROM contacts WHERE id = $1`, key[0])
		return true, err
	}
	email, err := r.reseal(bytesOf(cols[2]), colContactEmail, []string{old}, []string{idx})
	if err != nil {
		return false, err
	}
	conf, err := r.reseal(bytesOf(cols[3]), colContactConfEmail, []string{old}, []string{idx})
	if err != nil {
		return false, err
	}
	encKey, err := r.reseal(bytesOf(cols[5]), colContactKey, []string{old}, []string{idx})
	if err != nil {
		return false, err
	}
	// The phone is sealed for the row too, and its own index re-keyed.
	var phone []byte
	var phoneIndex string
	if sealed := bytesOf(cols[6]); len(sealed) > 0 {
		plain, err := r.s.open(sealed, colContactPhone, r.tenant, old)
		if err != nil {
			return false, fmt.Errorf("%s.%s: %w", colContactPhone.table, colContactPhone.column, err)
		}
		phone, phoneIndex = r.s.sealPhone(string(plain), r.tenant, idx)
	}
	_, err = tx.exec(ctx, `UPDATE contacts SET patient_index = $1, email_sealed = $2, confidential_email_sealed = $3, patient_sealed = $4, encryption_key_sealed = $5,
			phone_sealed = $6, phone_index = $7 WHERE id = $8`,
		idx, email, conf, r.s.seal([]byte(ref), colContactPatient, r.tenant, idx), encKey, phone, phoneIndex, key[0])
	return err == nil, err
}

func rekeyEngagement(r *reindexer, ctx context.Context, tx *Store, key, cols []any) (bool, error) {
	old := cols[0].(string)
	ref, err := r.patient(ctx, bytesOf(cols[1]), colEngagementPatient, old)
	if err != nil || ref == "" {
		return false, err
	}
	idx := r.index(ref)
	_, err = tx.exec(ctx, `UPDATE engagements SET patient_index = $1, patient_sealed = $2 WHERE id = $3`,
		idx, r.s.seal([]byte(ref), colEngagementPatient, r.tenant, idx), key[0])
	return err == nil, err
}

func rekeySegmentMember(r *reindexer, ctx context.Context, tx *Store, key, cols []any) (bool, error) {
	old, segment := cols[0].(string), cols[1].(string)
	b, err := r.s.open(bytesOf(cols[2]), colSegmentPatient, r.tenant, segment, old)
	if err != nil {
		return false, fmt.Errorf("segment_members.patient_sealed: %w", err)
	}
	ref := string(b)
	idx := r.index(ref)
	// The patient joined again since the rotation: one membership is enough.
	if _, err := tx.exec(ctx, `INSERT INTO segment_members (tenant_id, segment, patient_index, patient_sealed, added_at)
		SELECT tenant_id, segment, $1, $2, added_at FROM segment_members WHERE tenant_id = $3 AND segment = $4 AND patient_index = $5
		ON CONFLICT DO NOTHING`, idx, r.s.seal(b, colSegmentPatient, r.tenant, segment, idx), r.tenant, segment, old); err != nil {
		return false, err
	}
	_, err = tx.exec(ctx, `DELETE FROM segment_members WHERE tenant_id = $1 AND segment = $2 AND patient_index = $3`, r.tenant, segment, old)
	return err == nil, err
}

func rekeyOptOut(r *reindexer, ctx context.Context, tx *Store, key, cols []any) (bool, error) {
	old, purpose := cols[0].(string), cols[1].(string)
	b, err := r.s.open(bytesOf(cols[2]), colOptOutPatient, r.tenant, purpose, old)
	if err != nil {
		return false, fmt.Errorf("purpose_opt_outs.patient_sealed: %w", err)
	}
	idx := r.index(string(b))
	// The patient unsubscribed again since the rotation: one opt-out is enough.
	if _, err := tx.exec(ctx, `INSERT INTO purpose_opt_outs (tenant_id, patient_index, purpose, notice_id, created_at, patient_sealed)
		SELECT tenant_id, $1, purpose, notice_id, created_at, $2 FROM purpose_opt_outs WHERE tenant_id = $3 AND purpose = $4 AND patient_index = $5
		ON CONFLICT DO NOTHING`, idx, r.s.seal(b, colOptOutPatient, r.tenant, purpose, idx), r.tenant, purpose, old); err != nil {
		return false, err
	}
	_, err = tx.exec(ctx, `DELETE FROM purpose_opt_outs WHERE tenant_id = $1 AND purpose = $2 AND patient_index = $3`, r.tenant, purpose, old)
	return err == nil, err
}

func rekeyDisclosure(r *reindexer, ctx context.Context, tx *Store, key, cols []any) (bool, error) {
	old, ref := cols[0].(string), cols[1].(string)
	patient, err := r.patient(ctx, bytesOf(cols[3]), colDisclosurePatient, old)
	if err != nil || patient == "" {
		return false, err
	}
	idx := r.index(patient)
	rcpt, err := r.reseal(bytesOf(cols[2]), colDisclosureRecipient, []string{old, ref}, []string{idx, ref})
	if err != nil {
		return false, err
	}
	_, err = tx.exec(ctx, `UPDATE disclosures SET patient_index = $1, recipient_sealed = $2, patient_sealed = $3 WHERE id = $4`,
		idx, rcpt, r.s.seal([]byte(patient), colDisclosurePatient, r.tenant, idx), key[0])
	return err == nil, err
}

func rekeyRun(r *reindexer, ctx context.Context, tx *Store, key, cols []any) (bool, error) {
	old, wf, source, subject := cols[0].(string), cols[1].(string), cols[2].(string), cols[3].(string)
	facts, err := r.s.openFacts(r.tenant, subject, bytesOf(cols[4]))
	if err != nil {
		return false, fmt.Errorf("runs.facts_sealed: %w", err)
	}
	ref := facts["patient"]
	if ref == "" {
		if ref, err = r.patient(ctx, nil, colRunFacts, old); err != nil || ref == "" {
			return false, err
		}
	}
	idx := r.index(ref)
	// A run of the patient as a whole is named by the index: renamed
	// with it (its facts are sealed for the subject), unless the patient
	// started another run under the new name since the rotation.
	if subject == patientSubject(old) {
		renamed := patientSubject(idx)
		var n int64
		if err := tx.q(ctx).Raw(`SELECT count(*) FROM runs WHERE tenant_id = ? AND workflow_id = ? AND source = ? AND subject = ?`,
			r.tenant, wf, source, renamed).Scan(&n).Error; err != nil {
			return false, err
		}
		if n == 0 {
			sealed, err := r.s.sealFacts(r.tenant, renamed, facts)
			if err != nil {
				return false, err
			}
			_, err = tx.exec(ctx, `UPDATE runs SET patient_index = $1, subject = $2, facts_sealed = $3 WHERE id = $4`, idx, renamed, sealed, key[0])
			return err == nil, err
		}
	}
	_, err = tx.exec(ctx, `UPDATE runs SET patient_index = $1 WHERE id = $2`, idx, key[0])
	return err == nil, err
}

// reseal opens a value sealed for one row key and seals it for another;
// nil stays nil.
func (r *reindexer) reseal(sealed []byte, c sealedColumn, from, to []string) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, nil
	}
	b, err := r.s.open(sealed, c, r.tenant, from...)
	if err != nil {
		return nil, fmt.Errorf("%s.%s: %w", c.table, c.column, err)
	}
	return r.s.seal(b, c, r.tenant, to...), nil
}

func bytesOf(v any) []byte {
	b, _ := v.([]byte)
	return b
}

// table re-keys one table's stale rows of the tenant.
func (r *reindexer) table(ctx context.Context, t indexedTable, opts ReindexOptions) (ReindexProgress, error) {
	p := ReindexProgress{Table: t.name}
	current := "v" + strconv.Itoa(r.version) + ":%"
	keyList := strings.Join(t.key, ", ")
	var last []any
	err := walkPages(opts.PageSize, func() (int, error) {
		after, args := afterKey(t.key, last, []any{r.tenant, current})
		q := fmt.Sprintf(`SELECT %s, %s FROM %s WHERE tenant_id = $1 AND patient_index NOT LIKE $2%s ORDER BY %s LIMIT %d FOR UPDATE`,
			keyList, strings.Join(t.cols, ", "), t.name, after, keyList, opts.PageSize)
		n := 0
		page := ReindexProgress{}
		err := r.s.InTx(ctx, func(tx *Store) error {
			rows, err := tx.query(ctx, q, args...)
			if err != nil {
				return err
			}
			var scanned [][2][]any
			for rows.Next() {
				key, cols := make([]any, len(t.key)), make([]any, len(t.cols))
				if err := rows.Scan(append(pointers(key), pointers(cols)...)...); err != nil {
					rows.Close()
					return err
				}
				scanned = append(scanned, [2][]any{key, cols})
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, row := range scanned {
				n, last = n+1, row[0]
				ok, err := t.rekey(r, ctx, tx, row[0], row[1])
				if errors.Is(err, seal.ErrCorrupt) || errors.Is(err, seal.ErrUnknownKey) {
					// A value that does not open for its row (swapped,
					// or under a key no longer configured) is left.
					ok, err = false, nil
				}
				if err != nil {
					// The error names the table and column, never a value.
					return fmt.Errorf("row %d of the page: %w", n, err)
				}
				if ok {
					page.Rekeyed++
				} else {
					page.Unresolved++
				}
			}
			return nil
		})
		if err == nil {
			p.Rekeyed, p.Unresolved = p.Rekeyed+page.Rekeyed, p.Unresolved+page.Unresolved
		}
		return n, err
	}, &p.Pages, &p.Done, tell(opts.Progress, &p))
	return p, err
}

// IndexUse counts one table's rows of a tenant by index version.
type IndexUse struct {
	Table   string
	Version int
	Rows    int64
}

// IndexUses reports, per table, how many of the tenant's rows each index
// version made: what `tidings keys reindex --check` shows before an index
// key version is removed (version 0 needs version 1).
func (s *Store) IndexUses(ctx context.Context, tenantID string) ([]IndexUse, error) {
	var out []IndexUse
	for _, t := range indexedTables {
		var rows []struct {
			Version int
			N       int64
		}
		if err := s.q(ctx).Raw(fmt.Sprintf(`SELECT coalesce(substring(patient_index from '^v([0-9]+):')::int, 0) AS version, count(*) AS n
			FROM %s WHERE tenant_id = ? GROUP BY 1 ORDER BY 1`, t.name), tenantID).Scan(&rows).Error; err != nil {
			return nil, fmt.Errorf("count indexes of %s: %w", t.name, err)
		}
		for _, r := range rows {
			out = append(out, IndexUse{Table: t.name, Version: r.Version, Rows: r.N})
		}
	}
	return out, nil
}

// AuditReindex records a completed `tidings keys reindex` of a tenant.
func (s *Store) AuditReindex(ctx context.Context, tenantID string, rekeyed, unresolved int) error {
	return s.Audit(ctx, AuditRecord{TenantID: tenantID, Actor: "cli", Action: "index.reindexed", SubjectType: "index_key",
		SubjectID: "v" + strconv.Itoa(s.IndexVersion(tenantID)),
		Detail:    map[string]any{"rekeyed": rekeyed, "unresolved": unresolved}})
}
