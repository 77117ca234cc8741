package store

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/tidings-health/tidings/intake"

	"github.com/jackc/pgx/v5"
)

// The batch's updates of waiting runs find their runs by key on a table that
// ANALYZE has never seen: a deployment's first burst, or a load run from an
// empty database. Before migration 00021 the planner guessed that a few
// dozen runs wait, scanned every waiting run and hashed them, in each of
// these statements of each batch (20,000 rows late in a 20,000-notice run).
// Here 20,000 runs of one patient wait (the load command's default: one
// patient), and each statement must touch about the runs it names.
func TestRunUpdatesProbeByKey(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	if _, err := s.exec(ctx, `INSERT INTO workflows (tenant_id, id, version, trigger_key) VALUES ('t1', 'wf', 1, 'event:eob')`); err != nil {
		t.Fatal(err)
	}
	stored, err := s.InsertEvents(ctx, []intake.NewEvent{{TenantID: "t1", SubscriptionID: "sub1", ResourceType: "ExplanationOfBenefit",
		ResourceID: "1", VersionID: "1", DedupeKey: "sub1|ExplanationOfBenefit|1|v:1"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	// Rows as wide as the load's: sealed facts of a few hundred bytes.
	if _, err := s.exec(ctx, `INSERT INTO runs (tenant_id, workflow_id, workflow_version, source, subject, patient_index, status, state, facts_sealed)
		SELECT 't1', 'wf', 1, 'src', 'ExplanationOfBenefit/' || g, 'p1', 'waiting', '{"waiting_for":["portal.viewed"]}',
			decode((SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 25) i), 'hex')
		FROM generate_series(1, $1::int) g`, n); err != nil {
		t.Fatal(err)
	}
	// Every run saved a few times since, as in a load run: the indexes of
	// waiting runs grow (the GIN one most), as they do under load.
	for range 3 {
		if _, err := s.exec(ctx, `UPDATE runs SET wake_seq = wake_seq + 1, state = state || '{}'`); err != nil {
			t.Fatal(err)
		}
	}
	const batch = 100
	var ids, seqs, events []int64
	var tenants, sources, subjects, patients, statuses []string
	var facts [][]byte
	var dues []*time.Time
	for i := range batch {
		id := int64(n - 2*batch + i)
		ids, seqs, events = append(ids, id), append(seqs, 3), append(events, stored[0].EventID)
		tenants, sources, patients, statuses = append(tenants, "t1"), append(sources, "src"), append(patients, "p1"), append(statuses, "waiting")
		subjects = append(subjects, fmt.Sprintf("ExplanationOfBenefit/%d", id))
		facts, dues = append(facts, []byte("sealed")), append(dues, nil)
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		sql  string
		args []any
	}{
		{"refresh", refreshRunsSQL, []any{tenants, sources, subjects, events, facts}},
		{"wake delivered", wakeDeliveredSQL, []any{tenants, patients, subjects, now}},
		{"clear started", clearStartedSQL, []any{ids, seqs, statuses, dues, now}},
		{"defer started", deferStartedSQL, []any{ids, seqs, now}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			touched, plan := runsRowsTouched(t, s, tc.sql, tc.args)
			if touched > 4*batch {
				t.Errorf("the statement read %d rows of runs for a batch of %d (want at most %d):\n%s", touched, batch, 4*batch, plan)
			}
		})
	}
}

// runsRowsTouched runs the statement under EXPLAIN ANALYZE in a transaction
// it rolls back, and counts the rows that plan nodes on runs produced or
// filtered away.
func runsRowsTouched(t *testing.T, s *Store, query string, args []any) (int, string) {
	t.Helper()
	ctx := context.Background()
	db, err := s.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var out []byte
	if err := tx.QueryRowContext(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+query, append([]any{pgx.QueryExecModeExec}, args...)...).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct{ Plan planNode }
	if err := json.Unmarshal(out, &plans); err != nil {
		t.Fatal(err)
	}
	total := 0
	var walk func(p planNode)
	walk = func(p planNode) {
		if p.Relation == "runs" || p.Index != "" && p.NodeType == "Bitmap Index Scan" {
			total += int((p.Rows + p.Removed + p.RemovedRecheck) * p.Loops)
		}
		for _, c := range p.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	return total, string(out)
}

type planNode struct {
	NodeType       string     `json:"Node Type"`
	Relation       string     `json:"Relation Name"`
	Index          string     `json:"Index Name"`
	Rows           float64    `json:"Actual Rows"`
	Loops          float64    `json:"Actual Loops"`
	Removed        float64    `json:"Rows Removed by Filter"`
	RemovedRecheck float64    `json:"Rows Removed by Index Recheck"`
	Plans          []planNode `json:"Plans"`
}

// An event's claim and a delivery's hand-over update every row a notice
// makes; they can be HOT updates (no index entries, the new version on the
// same page) only while no index holds a column they change and the page
// has room (migration 00031). An index added on one of these columns would
// quietly make every such update enter every index of its table again.
func TestClaimAndHandOverChangeNoIndexedColumn(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	for table, changed := range map[string][]string{
		"events":     {"claimed_until"},          // ClaimEvents
		"deliveries": {"attempts", "updated_at"}, // HandOver
	} {
		var defs []string
		if err := s.q(ctx).Raw(`SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = ?::regclass`, table).Scan(&defs).Error; err != nil {
			t.Fatal(err)
		}
		if len(defs) == 0 {
			t.Fatalf("%s: no indexes found", table)
		}
		for _, def := range defs {
			for _, col := range changed {
				if regexp.MustCompile(`\b` + col + `\b`).MatchString(def) {
					t.Errorf("%s: %s holds %s, which every notice's update changes", table, def, col)
				}
			}
		}
		var opts []string
		if err := s.q(ctx).Raw(`SELECT unnest(reloptions) FROM pg_class WHERE oid = ?::regclass`, table).Scan(&opts).Error; err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(opts, "fillfactor=80") {
			t.Errorf("%s: reloptions %v, want fillfactor=80 (room on the page for the updated version)", table, opts)
		}
	}
}
