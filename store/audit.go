package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/audit"
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

// Audit inserts an audit row. Called on a store inside InTx it joins that
// transaction (so no audit row means the action did not happen); otherwise
// the insert is a transaction of its own. It takes no lock: the chainer
// (package audit) links committed rows into the tenant's chain later.
func (s *Store) Audit(ctx context.Context, r AuditRecord) error {
	return s.AuditMany(ctx, []AuditRecord{r})
}

// AuditMany inserts several audit rows in one statement, like Audit, in
// the order given (their ids, and so their place in the chain, follow it).
// The rows travel as arrays, so the statement's text is the same for any
// number of rows and is prepared once per connection.
func (s *Store) AuditMany(ctx context.Context, rs []AuditRecord) error {
	if len(rs) == 0 {
		return nil
	}
	tenants, actors, actions := make([]string, len(rs)), make([]string, len(rs)), make([]string, len(rs))
	types, subjects, details := make([]string, len(rs)), make([]string, len(rs)), make([]string, len(rs))
	for i, r := range rs {
		details[i] = "{}"
		if r.Detail != nil {
			detail, err := json.Marshal(r.Detail)
			if err != nil {
				return fmt.Errorf("audit detail: %w", err)
			}
			details[i] = string(detail)
		}
		tenants[i], actors[i], actions[i], types[i], subjects[i] = r.TenantID, r.Actor, r.Action, r.SubjectType, r.SubjectID
	}
	_, err := s.exec(ctx, `INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, detail)
		SELECT t, a, act, st, sid, d::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS x(t, a, act, st, sid, d, n)
		ORDER BY n`, tenants, actors, actions, types, subjects, details)
	if err != nil {
		return fmt.Errorf("audit insert: %w", err)
	}
	return nil
}

// TenantsToChain lists the tenants with audit rows ready to chain (their
// transactions, and all before them, have ended) or with chained rows no
// checkpoint covers yet. Of the rows after a chain's head only the first,
// in chain order, is looked at: if it is not ready, none is.
func (s *Store) TenantsToChain(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.q(ctx).Raw(`SELECT t.id FROM tenants t
		LEFT JOIN LATERAL (SELECT c.seq, l.xid, l.id FROM audit_chain c JOIN audit_log l ON l.id = c.audit_id
			WHERE c.tenant_id = t.id ORDER BY c.seq DESC LIMIT 1) h ON true
		LEFT JOIN LATERAL (SELECT l.xid FROM audit_log l
			WHERE l.tenant_id = t.id AND (l.xid, l.id) > (coalesce(h.xid, '0'), coalesce(h.id, 0))
			ORDER BY l.xid, l.id LIMIT 1) next ON true
		WHERE next.xid < pg_snapshot_xmin(pg_current_snapshot())
			OR h.seq > coalesce((SELECT max(size) FROM audit_checkpoints k WHERE k.tenant_id = t.id), 0)
		ORDER BY t.id`).Scan(&ids).Error
	return ids, err
}

// maxCountedLag bounds how many unchained rows AuditChainLag counts per
// tenant, so that a scrape stays cheap however far the chainer is behind.
const maxCountedLag = 1_000_000

// AuditChainLag counts the audit rows not yet linked into their tenant's
// chain (at most maxCountedLag a tenant): for each tenant the rows after
// its chain's head in chain order, an index range on audit_log_chain_order
// that is as short as the lag.
func (s *Store) AuditChainLag(ctx context.Context) (int64, error) {
	var n int64
	err := s.q(ctx).Raw(`SELECT coalesce(sum(lag.n), 0) FROM tenants t
		LEFT JOIN LATERAL (SELECT l.xid, l.id FROM audit_chain c JOIN audit_log l ON l.id = c.audit_id
			WHERE c.tenant_id = t.id ORDER BY c.seq DESC LIMIT 1) h ON true
		CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM audit_log l
			WHERE l.tenant_id = t.id AND (l.xid, l.id) > (coalesce(h.xid, '0'), coalesce(h.id, 0))
			LIMIT ?) unchained) lag`, maxCountedLag).Scan(&n).Error
	if err != nil {
		return 0, fmt.Errorf("audit chain lag: %w", err)
	}
	return n, nil
}

// AuditTenants lists every tenant, for verification.
func (s *Store) AuditTenants(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.q(ctx).Raw(`SELECT id FROM tenants ORDER BY id`).Scan(&ids).Error
	return ids, err
}

// ChainTx runs fn in one transaction that holds the tenant's audit chain
// lock; it reports false, without running fn, when another holds it.
func (s *Store) ChainTx(ctx context.Context, tenant string, fn func(audit.ChainTx) error) (bool, error) {
	locked := false
	err := s.InTx(ctx, func(tx *Store) error {
		var err error
		if locked, err = tx.TryXactLock(ctx, LockAuditChain, tenant); err != nil || !locked {
			return err
		}
		return fn(chainTx{s: tx, tenant: tenant})
	})
	return locked, err
}

// chainTx is a tenant's chaining transaction.
type chainTx struct {
	s      *Store
	tenant string
}

func (c chainTx) Head(ctx context.Context) (audit.Head, error) {
	var h []struct {
		Seq     int64
		Hash    []byte
		XID     string `gorm:"column:xid"`
		AuditID int64
	}
	err := c.s.q(ctx).Raw(`SELECT c.seq, c.hash, l.xid::text AS xid, l.id AS audit_id
		FROM audit_chain c JOIN audit_log l ON l.id = c.audit_id
		WHERE c.tenant_id = ? ORDER BY c.seq DESC LIMIT 1`, c.tenant).Scan(&h).Error
	if err != nil || len(h) == 0 {
		return audit.Head{}, err
	}
	xid, err := strconv.ParseUint(h[0].XID, 10, 64)
	return audit.Head{Seq: h[0].Seq, Hash: h[0].Hash, XID: xid, AuditID: h[0].AuditID}, err
}

// Ready reads the rows after head in chain order, only those below the
// snapshot's xmin: every transaction that could still insert a row before
// them has ended. Horizon and rows come from one statement, one snapshot.
func (c chainTx) Ready(ctx context.Context, after audit.Head, limit int) ([]audit.Row, error) {
	rows, err := c.s.q(ctx).Raw(`SELECT `+auditLogRowColumns+` FROM audit_log l
		WHERE l.tenant_id = ? AND l.xid < pg_snapshot_xmin(pg_current_snapshot())
			AND (l.xid, l.id) > (?::text::xid8, ?)
		ORDER BY l.xid, l.id LIMIT ?`, c.tenant, strconv.FormatUint(after.XID, 10), after.AuditID, limit).Rows()
	if err != nil {
		return nil, fmt.Errorf("audit rows to chain: %w", err)
	}
	defer rows.Close()
	out := make([]audit.Row, 0, limit)
	for rows.Next() {
		var r auditLogRow
		if err := rows.Scan(r.dests()...); err != nil {
			return nil, fmt.Errorf("audit rows to chain: %w", err)
		}
		row, err := r.row()
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

func (c chainTx) AppendLinks(ctx context.Context, links []audit.Link) error {
	seqs, ids := make([]int64, len(links)), make([]int64, len(links))
	keys, hashes := make([]string, len(links)), make([][]byte, len(links))
	for i, l := range links {
		seqs[i], ids[i], keys[i], hashes[i] = l.Seq, l.AuditID, l.KeyID, l.Hash
	}
	// Native arrays, in binary: a chaining batch is up to 5,000 links, and
	// as text literals (hex hashes decoded again by the server) they cost
	// the worker more allocation than the hashing did.
	_, err := c.s.exec(ctx, `INSERT INTO audit_chain (tenant_id, seq, audit_id, key_id, hash)
		SELECT $1, u.seq, u.audit_id, u.key_id, u.hash
		FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bytea[]) AS u(seq, audit_id, key_id, hash)`,
		c.tenant, seqs, ids, keys, hashes)
	if err != nil {
		return fmt.Errorf("append to the audit chain: %w", translate(err))
	}
	return nil
}

func (c chainTx) LastCheckpoint(ctx context.Context) (audit.Checkpoint, error) {
	cps, err := c.s.checkpoints(ctx, c.tenant, `ORDER BY size DESC LIMIT 1`)
	if err != nil || len(cps) == 0 {
		return audit.Checkpoint{}, err
	}
	return cps[0], nil
}

func (c chainTx) AddCheckpoint(ctx context.Context, cp audit.Checkpoint) error {
	err := c.s.q(ctx).Exec(`INSERT INTO audit_checkpoints (tenant_id, size, head, at, signing_key_id, signature)
		VALUES (?, ?, ?, ?, ?, ?)`, cp.TenantID, cp.Size, []byte(cp.Head), cp.At, cp.KeyID, cp.Signature).Error
	if err != nil {
		return fmt.Errorf("audit checkpoint: %w", translate(err))
	}
	return nil
}

// CheckpointsAfter lists a tenant's checkpoints with a size above size, in
// size order.
func (s *Store) CheckpointsAfter(ctx context.Context, tenant string, size int64) ([]audit.Checkpoint, error) {
	return s.checkpoints(ctx, tenant, `AND size > ? ORDER BY size`, size)
}

func (s *Store) checkpoints(ctx context.Context, tenant, tail string, args ...any) ([]audit.Checkpoint, error) {
	var rows []struct {
		Size         int64
		Head         []byte
		At           time.Time
		SigningKeyID string
		Signature    []byte
	}
	err := s.q(ctx).Raw(`SELECT size, head, at, signing_key_id, signature FROM audit_checkpoints WHERE tenant_id = ? `+tail,
		append([]any{tenant}, args...)...).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	out := make([]audit.Checkpoint, len(rows))
	for i, r := range rows {
		out[i] = audit.Checkpoint{TenantID: tenant, Size: r.Size, Head: r.Head, At: r.At, KeyID: r.SigningKeyID, Signature: r.Signature}
	}
	return out, nil
}

// ChainedRows lists up to limit links of a tenant's chain after seq, in seq
// order, each with its audit row (nil when the row is gone).
func (s *Store) ChainedRows(ctx context.Context, tenant string, afterSeq int64, limit int) ([]audit.Chained, error) {
	rows, err := s.q(ctx).Raw(`SELECT c.seq, c.audit_id, c.key_id, c.hash, c.chained_at, `+auditLogRowColumns+`
		FROM audit_chain c LEFT JOIN audit_log l ON l.id = c.audit_id
		WHERE c.tenant_id = ? AND c.seq > ? ORDER BY c.seq LIMIT ?`, tenant, afterSeq, limit).Rows()
	if err != nil {
		return nil, fmt.Errorf("audit chain: %w", err)
	}
	defer rows.Close()
	var out []audit.Chained
	for rows.Next() {
		l := audit.Link{TenantID: tenant}
		var r auditLogRow
		if err := rows.Scan(append([]any{&l.Seq, &l.AuditID, &l.KeyID, &l.Hash, &l.ChainedAt}, r.dests()...)...); err != nil {
			return nil, fmt.Errorf("audit chain: %w", err)
		}
		c := audit.Chained{Link: l}
		if r.id.Valid {
			row, err := r.row()
			if err != nil {
				return nil, err
			}
			c.Row = &row
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// SearchAudit lists a tenant's audit rows that q selects, newest first,
// each with its chain link (Seq 0 when not chained yet).
func (s *Store) SearchAudit(ctx context.Context, tenant string, q audit.Query) ([]audit.Chained, error) {
	var from, to *time.Time
	if !q.From.IsZero() {
		from = &q.From
	}
	if !q.To.IsZero() {
		to = &q.To
	}
	rows, err := s.query(ctx, `SELECT coalesce(c.seq, 0), coalesce(c.key_id, ''), `+auditLogRowColumns+`
		FROM audit_log l LEFT JOIN audit_chain c ON c.audit_id = l.id
		WHERE l.tenant_id = $1 AND ($2::timestamptz IS NULL OR l.at >= $2) AND ($3::timestamptz IS NULL OR l.at < $3)
			AND left(l.action, length($4)) = $4 AND ($5 = '' OR l.subject_type = $5) AND ($6 = '' OR l.subject_id = $6)
		ORDER BY l.id DESC LIMIT $7`, tenant, from, to, q.ActionPrefix, q.SubjectType, q.SubjectID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("audit search: %w", err)
	}
	defer rows.Close()
	out := []audit.Chained{}
	for rows.Next() {
		l := audit.Link{TenantID: tenant}
		var r auditLogRow
		if err := rows.Scan(append([]any{&l.Seq, &l.KeyID}, r.dests()...)...); err != nil {
			return nil, fmt.Errorf("audit search: %w", err)
		}
		row, err := r.row()
		if err != nil {
			return nil, err
		}
		l.AuditID = row.ID
		out = append(out, audit.Chained{Link: l, Row: &row})
	}
	return out, rows.Err()
}

// AuditBacklog counts a tenant's audit rows not chained yet, and those of
// them behind the chain's head in chain order, which no chainer will ever take.
func (s *Store) AuditBacklog(ctx context.Context, tenant string, head audit.Head) (audit.Backlog, error) {
	var b []struct {
		N           int64
		Oldest      *time.Time
		Behind      int64
		FirstBehind *int64
	}
	err := s.q(ctx).Raw(`SELECT count(*) AS n, min(at) AS oldest, count(*) FILTER (WHERE behind) AS behind,
			min(id) FILTER (WHERE behind) AS first_behind
		FROM (SELECT l.id, l.at, (l.xid, l.id) < (?::text::xid8, ?) AS behind FROM audit_log l
			WHERE l.tenant_id = ? AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.audit_id = l.id)) u`,
		strconv.FormatUint(head.XID, 10), head.AuditID, tenant).Scan(&b).Error
	if err != nil || len(b) == 0 {
		return audit.Backlog{}, err
	}
	out := audit.Backlog{Rows: b[0].N, Behind: b[0].Behind}
	if b[0].Oldest != nil {
		out.Oldest = *b[0].Oldest
	}
	if b[0].FirstBehind != nil {
		out.FirstBehind = *b[0].FirstBehind
	}
	return out, nil
}

// AuditSeqSpan is the first and last seq of a tenant's chained rows dated
// in [from, to); both zero when there are none.
func (s *Store) AuditSeqSpan(ctx context.Context, tenant string, from, to time.Time) (first, last int64, err error) {
	var span []struct{ First, Last *int64 }
	err = s.q(ctx).Raw(`SELECT min(c.seq) AS first, max(c.seq) AS last
		FROM audit_chain c JOIN audit_log l ON l.id = c.audit_id
		WHERE c.tenant_id = ? AND l.at >= ? AND l.at < ?`, tenant, from, to).Scan(&span).Error
	if err != nil || len(span) == 0 || span[0].First == nil {
		return 0, 0, err
	}
	return *span[0].First, *span[0].Last, nil
}

// auditLogRowColumns reads an audit_log row l, in auditLogRow.dests order.
const auditLogRowColumns = `l.id, l.tenant_id, l.at, l.actor, l.action, l.subject_type, l.subject_id, l.detail::text, l.xid::text`

// auditLogRow is an audit_log row as read; an outer join may find none.
type auditLogRow struct {
	id                                                    sql.NullInt64
	at                                                    sql.NullTime
	tenant, actor, action, subjectType, subjectID, detail sql.NullString
	xid                                                   sql.NullString
}

func (r *auditLogRow) dests() []any {
	return []any{&r.id, &r.tenant, &r.at, &r.actor, &r.action, &r.subjectType, &r.subjectID, &r.detail, &r.xid}
}

func (r auditLogRow) row() (audit.Row, error) {
	xid, err := strconv.ParseUint(r.xid.String, 10, 64)
	if err != nil {
		return audit.Row{}, fmt.Errorf("audit row %d: xid: %w", r.id.Int64, err)
	}
	return audit.Row{ID: r.id.Int64, TenantID: r.tenant.String, At: r.at.Time, Actor: r.actor.String, Action: r.action.String,
		SubjectType: r.subjectType.String, SubjectID: r.subjectID.String, Detail: json.RawMessage(r.detail.String), XID: xid}, nil
}
