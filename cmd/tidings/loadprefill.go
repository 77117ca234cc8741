package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Prefill routes: how -prefill grows the tables before the timed run.
const (
	// prefillSQL sends a warm-up through serve and worker, then copies the
	// rows it wrote, with new keys, in bulk.
	prefillSQL = "sql"
	// prefillIntake sends every prefill notification through serve and
	// worker: exact, and as slow as Tidings is.
	prefillIntake = "intake"
	// cloneBatch is how many copies one INSERT … SELECT makes.
	cloneBatch = 50
)

// prefillResult is how the tables were grown.
type prefillResult struct {
	Via     string        // prefillSQL or prefillIntake
	Sent    int           // notifications delivered through serve and worker
	Copies  int           // copies of their rows (sql)
	Tables  []string      // the tables copied
	Events  int64         // events in the database afterwards
	Time    time.Duration // all of it
	Through time.Duration // of which sending through serve and worker
}

// prefill grows the tables to about o.prefill events before the timed run,
// then restarts serve and worker (which ran without the rate limit) with
// the settings to measure, so that their memory and caches start afresh.
func prefill(ctx context.Context, s *procStack, o eobLoad, notes *eobNotifications) (p prefillResult, err error) {
	t0 := time.Now()
	p.Via, p.Sent = o.prefillVia, o.prefill
	if p.Via == prefillSQL {
		p.Sent = min(o.prefill, o.warmup)
	}
	conn, err := pgx.Connect(ctx, s.roleURL(loadDatabase))
	if err != nil {
		return p, err
	}
	defer conn.Close(context.Background())
	cat, err := readCatalog(ctx, conn)
	if err != nil {
		return p, err
	}
	before, err := marks(ctx, conn, cat)
	if err != nil {
		return p, err
	}
	o.say("prefill: sending %d notifications through serve and worker, untimed …", p.Sent)
	base, _, _ := s.Mail.Accepted()
	post := notifier(s.BaseURL, loadSubscription, s.Secret, o.clients, func(i int) []byte {
		return notes.body("prefill-"+strconv.Itoa(i), i+1)
	})
	stopProgress := progressLines(o.say, s.postingProgress(post, p.Sent, base))
	defer stopProgress()
	res := post.closedLoop(ctx, o.clients, 0, p.Sent)
	if res.accepted() < p.Sent {
		return p, fmt.Errorf("%d of %d notifications not accepted (first: %s)", p.Sent-res.accepted(), p.Sent, res.firstErr)
	}
	if _, err := s.waitMails(ctx, base, p.Sent, nil, o.stall, nil); err != nil {
		return p, err
	}
	stopProgress()
	if _, err := s.quiet(ctx, time.Minute); err != nil {
		return p, err
	}
	p.Through = time.Since(t0)
	if err := s.stopServices(); err != nil {
		return p, err
	}
	if p.Via == prefillSQL {
		if p.Copies = (o.prefill - p.Sent + p.Sent/2) / p.Sent; p.Copies > 0 {
			after, err := marks(ctx, conn, cat)
			if err != nil {
				return p, err
			}
			plan, err := clonePlan(ctx, conn, cat, before, after)
			if err != nil {
				return p, err
			}
			for _, t := range plan {
				p.Tables = append(p.Tables, t.Name)
			}
			o.say("prefill: copying the rows of %d notifications %d times by SQL (%s) …", p.Sent, p.Copies, strings.Join(p.Tables, ", "))
			if err := cloneRows(ctx, conn, plan, p.Copies, o.say); err != nil {
				return p, err
			}
		}
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&p.Events); err != nil {
		return p, err
	}
	o.say("prefill: %d events; starting serve and worker with the settings to measure, and waiting for the audit chain to catch up …", p.Events)
	if err := s.startServices(ctx, o.settings, o.say); err != nil {
		return p, err
	}
	for {
		var unchained int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_log l WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.audit_id = l.id)`).Scan(&unchained); err != nil {
			return p, err
		}
		if unchained == 0 {
			break
		}
		o.say("  %d audit rows not chained yet …", unchained)
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
	p.Time = time.Since(t0)
	o.say("prefill done in %s", p.Time.Round(time.Second))
	return p, nil
}

// tableMark is what a table held before the warm-up.
type tableMark struct {
	Rows  int64
	MaxID int64 // of its serial column; 0 without one
}

// cloneTable is how one table's warm-up rows are copied.
type cloneTable struct {
	Name   string
	Cols   []string // inserted columns, in order
	Exprs  []string // the value of each, in terms of the row and the copy number r
	Where  string   // which rows the warm-up wrote
	Serial string   // the serial key column, "" for none
	Seq    string   // its sequence
	MaxID  int64    // the serial key's largest value after the warm-up
	Deps   []string // cloned tables it references
	Rows   int64    // warm-up rows
}

// catalog is the part of the schema that cloning needs.
type catalog struct {
	cols    map[string][]column // by table, in attnum order
	fks     []foreignKey
	uniques map[string][][]string // by table: the columns of each unique index
}

type column struct {
	Name, Type, Seq string // Seq: the column's sequence (serial or identity), "" for none
	Num             int
}

type foreignKey struct {
	Table, RefTable string
	Cols, RefCols   []string
}

func readCatalog(ctx context.Context, conn *pgx.Conn) (catalog, error) {
	c := catalog{cols: map[string][]column{}, uniques: map[string][][]string{}}
	rows, err := conn.Query(ctx, `SELECT c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
			coalesce(pg_get_serial_sequence(quote_ident(c.relname), a.attname), '')
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
			AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY c.relname, a.attnum`)
	if err != nil {
		return c, err
	}
	for rows.Next() {
		var table string
		var col column
		if err := rows.Scan(&table, &col.Name, &col.Num, &col.Type, &col.Seq); err != nil {
			rows.Close()
			return c, err
		}
		c.cols[table] = append(c.cols[table], col)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, err
	}
	name := func(table string, num int16) string {
		for _, col := range c.cols[table] {
			if col.Num == int(num) {
				return col.Name
			}
		}
		return ""
	}
	rows, err = conn.Query(ctx, `SELECT conrelid::regclass::text, confrelid::regclass::text, conkey, confkey
		FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace`)
	if err != nil {
		return c, err
	}
	for rows.Next() {
		var fk foreignKey
		var keys, refKeys []int16
		if err := rows.Scan(&fk.Table, &fk.RefTable, &keys, &refKeys); err != nil {
			rows.Close()
			return c, err
		}
		for i := range keys {
			fk.Cols = append(fk.Cols, name(fk.Table, keys[i]))
			fk.RefCols = append(fk.RefCols, name(fk.RefTable, refKeys[i]))
		}
		c.fks = append(c.fks, fk)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, err
	}
	rows, err = conn.Query(ctx, `SELECT i.indrelid::regclass::text, i.indkey::int2[] FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
		WHERE i.indisunique AND c.relnamespace = 'public'::regnamespace`)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var keys []int16
		if err := rows.Scan(&table, &keys); err != nil {
			return c, err
		}
		var cols []string
		for _, k := range keys {
			cols = append(cols, name(table, k)) // "" for an expression
		}
		c.uniques[table] = append(c.uniques[table], cols)
	}
	return c, rows.Err()
}

// marks reads how many rows each table holds and its largest serial key.
func marks(ctx context.Context, conn *pgx.Conn, cat catalog) (map[string]tableMark, error) {
	out := map[string]tableMark{}
	for table, cols := range cat.cols {
		q := `SELECT count(*), 0::bigint FROM ` + pgx.Identifier{table}.Sanitize()
		if serial := serialOf(cols); serial != nil {
			q = `SELECT count(*), coalesce(max(` + pgx.Identifier{serial.Name}.Sanitize() + `), 0)::bigint FROM ` + pgx.Identifier{table}.Sanitize()
		}
		var m tableMark
		if err := conn.QueryRow(ctx, q).Scan(&m.Rows, &m.MaxID); err != nil {
			return nil, err
		}
		out[table] = m
	}
	return out, nil
}

// serialOf is a table's integer column fed by a sequence, nil for none.
func serialOf(cols []column) *column {
	for i, c := range cols {
		if c.Seq != "" && (c.Type == "bigint" || c.Type == "integer") {
			return &cols[i]
		}
	}
	return nil
}

// clonePlan decides how to copy the rows the warm-up wrote: in every table
// that grew, serial keys move past the largest one (by r times it),
// references to copied rows move with them, ids of the form prefill-N in
// text become prefill<r>-N, and a unique key no moved column covers gets a
// text column suffixed (~r), an integer one shifted or a uuid made anew.
func clonePlan(ctx context.Context, conn *pgx.Conn, cat catalog, before, after map[string]tableMark) ([]cloneTable, error) {
	grown := map[string]*cloneTable{}
	for table, cols := range cat.cols {
		b, a := before[table], after[table]
		// The chain is not copied: the worker chains the copied audit rows
		// with its own keys, before the timed window (prefill waits for it).
		if a.Rows <= b.Rows || table == "goose_db_version" || table == "audit_chain" || table == "audit_checkpoints" {
			continue
		}
		t := &cloneTable{Name: table, Rows: a.Rows - b.Rows}
		if serial := serialOf(cols); serial != nil {
			t.Serial, t.Seq, t.MaxID = serial.Name, serial.Seq, a.MaxID
			t.Where = fmt.Sprintf("%s > %d", pgx.Identifier{serial.Name}.Sanitize(), b.MaxID)
		} else if b.Rows == 0 {
			t.Where = "true"
		} else {
			return nil, fmt.Errorf("cannot tell the warm-up's rows of %s from older ones (no serial key)", table)
		}
		grown[table] = t
	}
	for _, t := range grown {
		cols := cat.cols[t.Name]
		exprs := map[string]string{}
		moved := map[string]bool{}
		fkCols := map[string]bool{}
		if t.Serial != "" {
			exprs[t.Serial] = fmt.Sprintf("%s + r * %d", pgx.Identifier{t.Serial}.Sanitize(), t.MaxID)
			moved[t.Serial] = true
		}
		for _, fk := range cat.fks {
			if fk.Table != t.Name {
				continue
			}
			for i, col := range fk.Cols {
				fkCols[col] = true
				ref, ok := grown[fk.RefTable]
				if !ok || ref.Name == t.Name {
					continue
				}
				if fk.RefCols[i] != ref.Serial {
					return nil, fmt.Errorf("%s.%s refers to copied rows of %s by %s, not by its serial key", t.Name, col, fk.RefTable, fk.RefCols[i])
				}
				exprs[col] = fmt.Sprintf("%s + r * %d", pgx.Identifier{col}.Sanitize(), ref.MaxID)
				moved[col] = true
				if !slices.Contains(t.Deps, ref.Name) {
					t.Deps = append(t.Deps, ref.Name)
				}
			}
		}
		typeOf := map[string]string{}
		for _, c := range cols {
			typeOf[c.Name] = c.Type
			if _, done := exprs[c.Name]; !done && !fkCols[c.Name] && isText(c.Type) {
				exprs[c.Name] = fmt.Sprintf("replace(%s, 'prefill-', 'prefill' || r || '-')", pgx.Identifier{c.Name}.Sanitize())
			}
		}
		for _, key := range cat.uniques[t.Name] {
			if slices.ContainsFunc(key, func(c string) bool { return moved[c] }) {
				continue
			}
			// NULLs never collide, and the ids in text move with replace.
			if free, err := keyFree(ctx, conn, t, key, func(c string) bool { return isText(typeOf[c]) && !fkCols[c] }); err != nil || free {
				if err != nil {
					return nil, err
				}
				continue
			}
			var pick string
			for _, c := range key {
				if c != "" && !fkCols[c] && (isText(typeOf[c]) || isInteger(typeOf[c]) || typeOf[c] == "uuid") {
					pick = c
				}
			}
			if pick == "" {
				return nil, fmt.Errorf("cannot vary the unique key (%s) of %s in copies", strings.Join(key, ", "), t.Name)
			}
			id := pgx.Identifier{pick}.Sanitize()
			switch {
			case isText(typeOf[pick]):
				exprs[pick] = exprs[pick] + " || '~' || r"
			case isInteger(typeOf[pick]):
				// Shift past the warm-up's largest value, as event numbers go on.
				var top int64
				if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT coalesce(max(%s), 0) FROM %s WHERE %s", id, pgx.Identifier{t.Name}.Sanitize(), t.Where)).Scan(&top); err != nil {
					return nil, err
				}
				exprs[pick] = fmt.Sprintf("%s + r * %d", id, top)
			default:
				exprs[pick] = "gen_random_uuid()"
			}
			moved[pick] = true
		}
		for _, c := range cols {
			if t.Name == "audit_log" && c.Name == "xid" {
				// A copy is written by the copying transaction, as any audit
				// row is: its xid is that one's (the chainer orders by it).
				continue
			}
			t.Cols = append(t.Cols, pgx.Identifier{c.Name}.Sanitize())
			e, ok := exprs[c.Name]
			if !ok {
				e = pgx.Identifier{c.Name}.Sanitize()
			}
			t.Exprs = append(t.Exprs, e)
		}
	}
	// Referenced tables first.
	var order []cloneTable
	done := map[string]bool{}
	names := make([]string, 0, len(grown))
	for n := range grown {
		names = append(names, n)
	}
	sort.Strings(names)
	for len(order) < len(grown) {
		progress := false
		for _, n := range names {
			t := grown[n]
			if done[n] || slices.ContainsFunc(t.Deps, func(d string) bool { return !done[d] }) {
				continue
			}
			order, done[n], progress = append(order, *t), true, true
		}
		if !progress {
			return nil, fmt.Errorf("copied tables refer to each other in a cycle")
		}
	}
	return order, nil
}

func isText(typ string) bool {
	return typ == "text" || strings.HasPrefix(typ, "character varying")
}

func isInteger(typ string) bool {
	return typ == "bigint" || typ == "integer" || typ == "smallint"
}

// keyFree tells whether copies cannot collide on a unique key although no
// key column moves: in every warm-up row some key column is NULL, or a text
// key column holds a prefill id (which the copies rename).
func keyFree(ctx context.Context, conn *pgx.Conn, t *cloneTable, key []string, renamed func(col string) bool) (bool, error) {
	var nullable, ids []string
	for _, c := range key {
		if c == "" {
			return false, nil // an expression: nothing to tell
		}
		id := pgx.Identifier{c}.Sanitize()
		nullable = append(nullable, id+" IS NULL")
		if renamed(c) {
			ids = append(ids, id+" LIKE '%prefill-%'")
		}
	}
	cond := "(" + strings.Join(nullable, " OR ") + ")"
	if len(ids) > 0 {
		cond += " OR " + strings.Join(ids, " OR ")
	}
	var free bool
	err := conn.QueryRow(ctx, fmt.Sprintf("SELECT coalesce(bool_and(%s), true) FROM %s WHERE %s", cond, pgx.Identifier{t.Name}.Sanitize(), t.Where)).Scan(&free)
	return free, err
}

// cloneRows makes copies copies of the warm-up's rows, cloneBatch copies a
// statement, from a snapshot of those rows in temporary tables; then moves
// the sequences past the new keys and vacuums and analyses the tables, as
// autovacuum would have while they grew.
func cloneRows(ctx context.Context, conn *pgx.Conn, plan []cloneTable, copies int, say func(string, ...any)) error {
	src := func(t cloneTable) string { return pgx.Identifier{"prefill_src_" + t.Name}.Sanitize() }
	for _, t := range plan {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE %s AS SELECT * FROM %s WHERE %s`, src(t), pgx.Identifier{t.Name}.Sanitize(), t.Where)); err != nil {
			return fmt.Errorf("snapshot of %s: %w", t.Name, err)
		}
	}
	for from := 1; from <= copies; from += cloneBatch {
		to := min(copies, from+cloneBatch-1)
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, t := range plan {
				sql := fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s, generate_series(%d, %d) AS r`,
					pgx.Identifier{t.Name}.Sanitize(), strings.Join(t.Cols, ", "), strings.Join(t.Exprs, ", "), src(t), from, to)
				if _, err := tx.Exec(ctx, sql); err != nil {
					return fmt.Errorf("copying %s: %w", t.Name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		say("  %d of %d copies …", to, copies)
	}
	for _, t := range plan {
		if _, err := conn.Exec(ctx, `DROP TABLE `+src(t)); err != nil {
			return err
		}
		if t.Seq != "" {
			sql := fmt.Sprintf(`SELECT setval(%s, (SELECT max(%s) FROM %s))`, quoteLiteral(t.Seq), pgx.Identifier{t.Serial}.Sanitize(), pgx.Identifier{t.Name}.Sanitize())
			if _, err := conn.Exec(ctx, sql); err != nil {
				return err
			}
		}
		if _, err := conn.Exec(ctx, `VACUUM (ANALYZE) `+pgx.Identifier{t.Name}.Sanitize()); err != nil {
			return err
		}
	}
	return nil
}

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
