package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/seal"
)

// chained is an env whose 50 rows are chained with a checkpoint every 10,
// and verify.
func chained(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.insert(t, 50)
	c := e.chainer()
	c.Batch, c.CheckpointRows = 10, 10
	e.chainAll(t, c)
	if rep := e.verify(t); !rep.OK() || rep.Rows != 50 || rep.DBCheckpoints != 5 || rep.FileCheckpoints != 5 {
		t.Fatalf("untouched chain: %s", rep)
	}
	return e
}

// rechain recomputes the hashes from seq from on with keys, as someone
// holding keys would after changing rows.
func (e *env) rechain(t *testing.T, keys *audit.Keys, from int64) {
	t.Helper()
	ctx := context.Background()
	before, err := e.st.ChainedRows(ctx, "t1", from-2, 1)
	if err != nil {
		t.Fatal(err)
	}
	after, err := e.st.ChainedRows(ctx, "t1", from-1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([]audit.Row, len(after))
	for i, c := range after {
		rows[i] = *c.Row
	}
	links, err := keys.Link("t1", audit.Head{Seq: from - 1, Hash: before[0].Link.Hash}, rows)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		e.exec(t, `UPDATE audit_chain SET hash = $1, key_id = $2 WHERE tenant_id = 't1' AND seq = $3`, l.Hash, l.KeyID, l.Seq)
	}
}

// Each way of tampering is found, at the first bad position, for the
// right reason.
func TestVerifyFindsTampering(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, e *env) (auditID int64)
		seq     int64
		reasons []string
	}{{
		name: "edited row",
		tamper: func(t *testing.T, e *env) int64 {
			id := e.auditID(t, 23)
			e.exec(t, `UPDATE audit_log SET detail = '{"i": 99}' WHERE id = $1`, id)
			return id
		},
		seq: 23, reasons: []string{"edited row"},
	}, {
		name: "edited last row",
		tamper: func(t *testing.T, e *env) int64 {
			id := e.auditID(t, 50)
			e.exec(t, `UPDATE audit_log SET actor = 'someone else' WHERE id = $1`, id)
			return id
		},
		seq: 50, reasons: []string{"edited row"},
	}, {
		name: "deleted row",
		tamper: func(t *testing.T, e *env) int64 {
			id := e.auditID(t, 23)
			e.exec(t, `DELETE FROM audit_chain WHERE audit_id = $1`, id)
			e.exec(t, `DELETE FROM audit_log WHERE id = $1`, id)
			return 0
		},
		seq: 23, reasons: []string{"seq 23 is missing", "deleted row"},
	}, {
		name: "deleted row, later links renumbered",
		tamper: func(t *testing.T, e *env) int64 {
			id := e.auditID(t, 23)
			e.exec(t, `DELETE FROM audit_chain WHERE audit_id = $1`, id)
			e.exec(t, `DELETE FROM audit_log WHERE id = $1`, id)
			e.exec(t, `UPDATE audit_chain SET seq = seq + 1000 WHERE seq > 23`)
			e.exec(t, `UPDATE audit_chain SET seq = seq - 1001 WHERE seq > 1000`)
			return e.auditID(t, 23)
		},
		seq: 23, reasons: []string{"rewritten from here on without the key"},
	}, {
		name: "deleted row whose audit row alone is gone",
		tamper: func(t *testing.T, e *env) int64 {
			id := e.auditID(t, 23)
			e.exec(t, `DELETE FROM audit_log WHERE id = $1`, id)
			return id
		},
		seq: 23, reasons: []string{"which is gone", "deleted row"},
	}, {
		name: "tail rewritten without the key",
		tamper: func(t *testing.T, e *env) int64 {
			e.exec(t, `UPDATE audit_log SET detail = '{"i": -1}' WHERE id IN (SELECT audit_id FROM audit_chain WHERE seq >= 31)`)
			forged, _ := audit.ParseKeys("c1:"+seal.NewRandomKey(), "")
			e.rechain(t, forged, 31)
			return e.auditID(t, 31)
		},
		seq: 31, reasons: []string{"without the key", "rewritten tail"},
	}, {
		name: "tail rewritten with the key, database checkpoints dropped",
		tamper: func(t *testing.T, e *env) int64 {
			e.exec(t, `UPDATE audit_log SET detail = '{"i": -1}' WHERE id IN (SELECT audit_id FROM audit_chain WHERE seq >= 35)`)
			e.rechain(t, e.keys, 35)
			e.exec(t, `DELETE FROM audit_checkpoints WHERE size >= 35`)
			return e.auditID(t, 40)
		},
		// The file's checkpoint of size 40 contradicts it.
		seq: 40, reasons: []string{"checkpoint of size 40", "t1.jsonl", "after seq 30", "rewritten tail"},
	}, {
		name: "truncated tail",
		tamper: func(t *testing.T, e *env) int64 {
			e.exec(t, `DELETE FROM audit_checkpoints WHERE size > 37`)
			ids := e.int64s(t, `SELECT audit_id FROM audit_chain WHERE seq > 37`)
			e.exec(t, `DELETE FROM audit_chain WHERE seq > 37`)
			e.exec(t, `DELETE FROM audit_log WHERE id = ANY($1)`, ids)
			return 0
		},
		seq: 38, reasons: []string{"ends at seq 37", "truncated tail", "t1.jsonl"},
	}, {
		name: "altered checkpoint in the database",
		tamper: func(t *testing.T, e *env) int64 {
			e.exec(t, `UPDATE audit_checkpoints SET head = decode(repeat('ab', 32), 'hex') WHERE size = 20`)
			return 0
		},
		seq: 20, reasons: []string{"(database)", "signature does not verify"},
	}, {
		name: "altered checkpoint in the file",
		tamper: func(t *testing.T, e *env) int64 {
			path := audit.CheckpointFile(e.dir, "t1")
			cps, err := audit.ReadCheckpointFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			for _, c := range cps {
				if c.Size == 30 {
					c.Size = 29 // an earlier head claimed for it
				}
				line, _ := json.Marshal(c)
				buf.Write(append(line, '\n'))
			}
			if err := os.WriteFile(path, buf.Bytes(), 0o640); err != nil {
				t.Fatal(err)
			}
			return 0
		},
		seq: 29, reasons: []string{"t1.jsonl", "signature does not verify"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := chained(t)
			id := tc.tamper(t, e)
			rep := e.verify(t)
			if rep.OK() || rep.Problem.Seq != tc.seq || rep.Problem.AuditID != id {
				t.Fatalf("got %s; want a failure at seq %d, audit row %d", rep, tc.seq, id)
			}
			mustContain(t, rep.String(), tc.reasons...)
		})
	}
}

// An audit row placed before the chain's head (a forged xid) can never be
// chained: verification says so.
func TestVerifyFindsRowsBehindTheHead(t *testing.T) {
	e := chained(t)
	e.exec(t, `INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, xid)
		VALUES ('t1', 'x', 'y', 'z', '1', '1')`)
	id := e.int64s(t, `SELECT max(id) FROM audit_log`)[0]
	rep := e.verify(t)
	if rep.OK() || rep.Problem.AuditID != id || rep.Backlog.Rows != 1 {
		t.Fatal(rep)
	}
	mustContain(t, rep.String(), "never be chained", "1 rows not chained yet")
}

// An export of a time range verifies on its own against the checkpoints
// around it, and an edit of it does not.
func TestExportVerifiesOnItsOwn(t *testing.T) {
	e := newEnv(t)
	e.insert(t, 30)
	// Ten minutes apart, before they are chained.
	e.exec(t, `UPDATE audit_log SET at = '2026-01-01T00:00:00Z'::timestamptz + id * interval '10 minutes'`)
	c := e.chainer()
	c.Batch, c.CheckpointRows = 10, 10
	e.chainAll(t, c)
	ctx := context.Background()
	atOf := func(seq int64) time.Time {
		rows, err := e.st.ChainedRows(ctx, "t1", seq-1, 1)
		if err != nil || len(rows) != 1 {
			t.Fatalf("seq %d: %v", seq, err)
		}
		return rows[0].Row.At
	}
	var out bytes.Buffer
	sum, err := audit.Export(ctx, e.st, &out, "t1", atOf(14), atOf(17))
	if err != nil {
		t.Fatal(err)
	}
	if sum.InRange != 3 || sum.FromSeq != 11 || sum.ToSeq != 20 || sum.Checkpoints != 2 {
		t.Fatalf("export %+v", sum)
	}
	pub, _ := audit.ParsePublicKeys(e.signer.PublicKeyLine())
	rep, err := audit.VerifyExcerpt(bytes.NewReader(out.Bytes()), e.keys, pub)
	if err != nil || rep.Rows != 10 || rep.InRange != 3 || !rep.Anchored {
		t.Fatalf("excerpt: %+v, %v", rep, err)
	}
	edited := bytes.Replace(out.Bytes(), []byte(`"i":15`), []byte(`"i":16`), 1)
	if bytes.Equal(edited, out.Bytes()) {
		t.Fatal("the export does not hold row 15's detail")
	}
	if _, err := audit.VerifyExcerpt(bytes.NewReader(edited), e.keys, pub); err == nil || !strings.Contains(err.Error(), "seq 16") {
		t.Fatalf("an edited excerpt: %v", err)
	}
}
