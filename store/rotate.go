package store

import (
	"context"
	"fmt"
	"strings"
)

// sealedTable is a table with sealed columns, as rotation walks it: in
// the order of its primary key, reading each row's tenant and row key
// (text expressions, the same the store seals with; see places.go).
type sealedTable struct {
	name string
	key  []string // primary key columns, the order pages follow
	row  []string // row key expressions
	cols []sealedColumn
}

var sealedTables = []sealedTable{
	{"events", []string{"id"}, []string{"dedupe_key"}, []sealedColumn{colEventResource}},
	{"contacts", []string{"id"}, []string{"patient_index"}, []sealedColumn{colContactEmail, colContactConfEmail, colContactKey, colContactPatient, colContactPhone}},
	{"notices", []string{"id"}, []string{"portal_token"}, []sealedColumn{colNoticePayload, colNoticePortal}},
	{"subscriptions", []string{"tenant_id", "id"}, []string{"id"}, []sealedColumn{colSubscriptionHMAC}},
	{"fhir_sources", []string{"tenant_id", "id"}, []string{"id"}, []sealedColumn{colSourceCredential}},
	{"runs", []string{"id"}, []string{"subject"}, []sealedColumn{colRunFacts}},
	{"engagements", []string{"id"}, []string{"id::text"}, []sealedColumn{colEngagementData}},
	{"engagements", []string{"id"}, []string{"patient_index"}, []sealedColumn{colEngagementPatient}},
	{"segment_members", []string{"tenant_id", "segment", "patient_index"}, []string{"segment", "patient_index"}, []sealedColumn{colSegmentPatient}},
	{"purpose_opt_outs", []string{"tenant_id", "purpose", "patient_index"}, []string{"purpose", "patient_index"}, []sealedColumn{colOptOutPatient}},
	{"webhook_endpoints", []string{"tenant_id", "id"}, []string{"id"}, []sealedColumn{colWebhookSecret}},
	{"disclosures", []string{"id"}, []string{"patient_index", "ref"}, []sealedColumn{colDisclosureRecipient}},
	{"disclosures", []string{"id"}, []string{"patient_index"}, []sealedColumn{colDisclosurePatient}},
	{"deliveries", []string{"id"}, []string{"notice_id::text", "channel"}, []sealedColumn{colDeliveryDisclosure}},
}

// RotateOptions tune Rotate.
type RotateOptions struct {
	// PageSize is how many rows one transaction re-seals (default 500).
	PageSize int
	// Progress, if set, is told after each page; an error it returns
	// stops the rotation (what is committed stays: a rerun continues).
	Progress func(RotateProgress) error
}

// RotateProgress counts one table's rotation so far.
type RotateProgress struct {
	Table    string
	Pages    int
	Resealed int // values re-sealed with the primary key in the current format
	// Unopenable values failed to open (corrupt, sealed for another place,
	// or under a key no longer configured); they are left as they are.
	Unopenable int
	Done       bool
}

// staleSQL is true for a non-empty sealed value not in the current format
// under the primary key ($1, the key id's bytes), judged by its header
// alone: version byte, key id length, key id.
func staleSQL(col string) string {
	return fmt.Sprintf(`(CASE WHEN octet_length(%[1]s) >= 2 THEN NOT (get_byte(%[1]s, 0) = %[2]d AND get_byte(%[1]s, 1) = octet_length($1::bytea)
		AND substring(%[1]s from 3 for octet_length($1::bytea)) = $1::bytea) ELSE false END)`, col, currentSealVersion)
}

// currentSealVersion is seal's current format version byte.
const currentSealVersion = 2

// Rotate re-seals every sealed value that is not current (an older format,
// or another key than the primary) with the primary key, for its place, a
// page of rows per transaction in primary key order. Rows already current
// are never read, so a rerun after an interruption continues where it
// stopped; it reports per table what it did.
func (s *Store) Rotate(ctx context.Context, opts RotateOptions) ([]RotateProgress, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	return walkTables("rotate", sealedTables, func(t sealedTable) string { return t.name },
		func(t sealedTable) (RotateProgress, error) { return s.rotateTable(ctx, t, opts) })
}

// walkTables walks each table in turn and collects what each walk
// reports, up to the first that fails.
func walkTables[T, P any](verb string, tables []T, name func(T) string, walk func(T) (P, error)) ([]P, error) {
	var out []P
	for _, t := range tables {
		p, err := walk(t)
		out = append(out, p)
		if err != nil {
			return out, fmt.Errorf("%s %s: %w", verb, name(t), err)
		}
	}
	return out, nil
}

func (s *Store) rotateTable(ctx context.Context, t sealedTable, opts RotateOptions) (RotateProgress, error) {
	p := RotateProgress{Table: t.name}
	kid := []byte(s.keys.Primary())
	var stale, cols []string
	for _, c := range t.cols {
		stale, cols = append(stale, staleSQL(c.column)), append(cols, c.column)
	}
	keyList := strings.Join(t.key, ", ")
	var last []any // key of the last row seen; pages continue after it
	err := walkPages(opts.PageSize, func() (int, error) {
		after, args := afterKey(t.key, last, []any{kid})
		q := fmt.Sprintf(`SELECT %s, tenant_id, %s, %s FROM %s WHERE (%s)%s ORDER BY %s LIMIT %d FOR UPDATE`,
			keyList, rowKeyList(t.row), strings.Join(cols, ", "), t.name, strings.Join(stale, " OR "), after, keyList, opts.PageSize)
		n := 0
		err := s.InTx(ctx, func(tx *Store) error {
			rows, err := tx.query(ctx, q, args...)
			if err != nil {
				return err
			}
			type update struct {
				key    []any
				values [][]byte
			}
			var updates []update
			for rows.Next() {
				key := make([]any, len(t.key))
				var tenant string
				rowKey := make([]string, len(t.row))
				values := make([][]byte, len(t.cols))
				dst := append(append(pointers(key), &tenant), pointers(rowKey)...)
				if err := rows.Scan(append(dst, pointers(values)...)...); err != nil {
					rows.Close()
					return err
				}
				n, last = n+1, key
				changed := false
				for i, c := range t.cols {
					if len(values[i]) == 0 || s.keys.Current(values[i]) {
						continue
					}
					plain, err := s.open(values[i], c, tenant, rowKey...)
					if err != nil {
						p.Unopenable++
						continue
					}
					values[i], changed = s.seal(plain, c, tenant, rowKey...), true
					p.Resealed++
				}
				if changed {
					updates = append(updates, update{key, values})
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
			rows.Close()
			for _, u := range updates {
				set := make([]string, len(cols))
				uargs := make([]any, 0, len(cols)+len(u.key))
				for i, c := range cols {
					set[i] = fmt.Sprintf("%s = $%d", c, i+1)
					uargs = append(uargs, u.values[i])
				}
				uargs = append(uargs, u.key...)
				if _, err := tx.exec(ctx, fmt.Sprintf(`UPDATE %s SET %s WHERE (%s) = (%s)`, t.name, strings.Join(set, ", "),
					keyList, placeholders(len(cols)+1, len(u.key))), uargs...); err != nil {
					return err
				}
			}
			return nil
		})
		return n, err
	}, &p.Pages, &p.Done, tell(opts.Progress, &p))
	return p, err
}

// tell is the progress callback of a walk: told p as it stands, if set.
func tell[P any](progress func(P) error, p *P) func() error {
	return func() error {
		if progress == nil {
			return nil
		}
		return progress(*p)
	}
}

// walkPages calls page, one page of rows each, until a page holds fewer
// than size rows, counting the pages that held any and telling progress
// after each.
func walkPages(size int, page func() (int, error), pages *int, done *bool, progress func() error) error {
	for {
		n, err := page()
		if err != nil {
			return err
		}
		if n > 0 {
			*pages++
		}
		*done = n < size
		if err := progress(); err != nil {
			return err
		}
		if *done {
			return nil
		}
	}
}

// afterKey is the condition that continues a walk in primary key order
// after the last row seen (none for the first page), and args with its
// arguments appended, numbered after those.
func afterKey(key []string, last []any, args []any) (string, []any) {
	if last == nil {
		return "", args
	}
	return fmt.Sprintf(" AND (%s) > (%s)", strings.Join(key, ", "), placeholders(len(args)+1, len(last))), append(args, last...)
}

// pointers are the addresses of a row's values, for Scan.
func pointers[T any](values []T) []any {
	out := make([]any, len(values))
	for i := range values {
		out[i] = &values[i]
	}
	return out
}

func placeholders(from, n int) string {
	ph := make([]string, n)
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", from+i)
	}
	return strings.Join(ph, ", ")
}

// rowKeyList selects row key expressions as text, named apart from the
// table's columns (an "id::text" would make ORDER BY id ambiguous).
func rowKeyList(exprs []string) string {
	out := make([]string, len(exprs))
	for i, e := range exprs {
		out[i] = fmt.Sprintf("%s::text AS row_key_%d", e, i)
	}
	return strings.Join(out, ", ")
}

// SealedUse counts the values of one column sealed in one format version
// with one key.
type SealedUse struct {
	Table, Column string
	Version       int
	KeyID         string
	Values        int64
}

// SealedUses reports, for every sealed column, how many values each format
// version and key seals: what `tidings keys rotate --check` shows before a
// key is removed.
func (s *Store) SealedUses(ctx context.Context) ([]SealedUse, error) {
	var out []SealedUse
	for _, t := range sealedTables {
		for _, c := range t.cols {
			var rows []struct {
				Version int
				KeyID   string
				N       int64
			}
			err := s.q(ctx).Raw(fmt.Sprintf(`SELECT get_byte(%[1]s, 0) AS version,
					encode(substring(%[1]s from 3 for get_byte(%[1]s, 1)), 'escape') AS key_id, count(*) AS n
				FROM %[2]s WHERE octet_length(%[1]s) >= 2 GROUP BY 1, 2 ORDER BY 1, 2`, c.column, t.name)).Scan(&rows).Error
			if err != nil {
				return nil, fmt.Errorf("count sealed %s.%s: %w", t.name, c.column, err)
			}
			for _, r := range rows {
				out = append(out, SealedUse{Table: t.name, Column: c.column, Version: r.Version, KeyID: r.KeyID, Values: r.N})
			}
		}
	}
	return out, nil
}
