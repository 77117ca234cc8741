package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// ExportReader is what an export reads.
type ExportReader interface {
	Reader
	// AuditSeqSpan is the first and last seq of the chained rows dated in
	// [from, to); both zero when there are none.
	AuditSeqSpan(ctx context.Context, tenant string, from, to time.Time) (first, last int64, err error)
}

// ExportLine is one line of an export: a chained row or a checkpoint.
type ExportLine struct {
	Type       string      `json:"type"` // "row" or "checkpoint"
	Seq        int64       `json:"seq,omitempty"`
	KeyID      string      `json:"key_id,omitempty"`
	Hash       Hex         `json:"hash,omitempty"`
	InRange    bool        `json:"in_range,omitempty"` // dated in the range asked for
	Row        *Row        `json:"row,omitempty"`
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// ExportSummary says what an export holds.
type ExportSummary struct {
	Rows, InRange, Checkpoints int
	FromSeq, ToSeq             int64
}

// Export writes, as JSON lines, a tenant's chained rows dated in [from, to)
// with their seq, key id and hash, then the checkpoints around them. So
// that the excerpt verifies on its own, it runs from the checkpoint before
// its first row to the first checkpoint at or after its last one (rows in
// between that are dated outside the range have in_range false); rows no
// checkpoint covers yet close it unanchored.
func Export(ctx context.Context, r ExportReader, w io.Writer, tenant string, from, to time.Time) (ExportSummary, error) {
	var sum ExportSummary
	first, last, err := r.AuditSeqSpan(ctx, tenant, from, to)
	if err != nil || first == 0 {
		return sum, err
	}
	cps, err := r.CheckpointsAfter(ctx, tenant, 0)
	if err != nil {
		return sum, err
	}
	var before, after *Checkpoint
	for i, c := range cps {
		if c.Size < first {
			before = &cps[i] // the last below the first row
		}
		if c.Size >= last && after == nil {
			after = &cps[i]
		}
	}
	sum.FromSeq, sum.ToSeq = 1, last
	var around []Checkpoint
	if before != nil {
		sum.FromSeq = before.Size + 1
		around = append(around, *before)
	}
	if after != nil {
		sum.ToSeq = after.Size
		around = append(around, *after)
	}
	enc := json.NewEncoder(w)
	for after := sum.FromSeq - 1; after < sum.ToSeq; {
		batch, err := r.ChainedRows(ctx, tenant, after, int(min(10000, sum.ToSeq-after)))
		if err != nil {
			return sum, err
		}
		if len(batch) == 0 {
			return sum, fmt.Errorf("the chain ends before seq %d", after+1)
		}
		for _, c := range batch {
			if c.Row == nil {
				return sum, fmt.Errorf("seq %d: audit row %d is gone", c.Link.Seq, c.Link.AuditID)
			}
			in := !c.Row.At.Before(from) && c.Row.At.Before(to)
			line := ExportLine{Type: "row", Seq: c.Link.Seq, KeyID: c.Link.KeyID, Hash: c.Link.Hash, InRange: in, Row: c.Row}
			if err := enc.Encode(line); err != nil {
				return sum, err
			}
			sum.Rows++
			if in {
				sum.InRange++
			}
			after = c.Link.Seq
		}
	}
	for _, c := range around {
		if err := enc.Encode(ExportLine{Type: "checkpoint", Checkpoint: &c}); err != nil {
			return sum, err
		}
		sum.Checkpoints++
	}
	return sum, nil
}

// ExcerptReport is what VerifyExcerpt found.
type ExcerptReport struct {
	Rows, InRange int
	FromSeq       int64
	ToSeq         int64
	// Anchored: the first row follows a checkpoint (or is seq 1) and the
	// last is one; otherwise the rows after the last checkpoint verify only
	// against each other.
	Anchored bool
}

// VerifyExcerpt checks an export: every row against its hash and the one
// before it, and the run of rows against the signed checkpoints around it.
func VerifyExcerpt(r io.Reader, keys *Keys, pub PublicKeys) (ExcerptReport, error) {
	var rep ExcerptReport
	var rows []ExportLine
	bySize := map[int64]Checkpoint{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l ExportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return rep, fmt.Errorf("line %d: not an export line", n)
		}
		switch {
		case l.Type == "row" && l.Row != nil:
			rows = append(rows, l)
		case l.Type == "checkpoint" && l.Checkpoint != nil:
			if err := pub.Verify(*l.Checkpoint); err != nil {
				return rep, fmt.Errorf("line %d: checkpoint of size %d: %w", n, l.Checkpoint.Size, err)
			}
			bySize[l.Checkpoint.Size] = *l.Checkpoint
		default:
			return rep, fmt.Errorf("line %d: unknown line type %q", n, l.Type)
		}
	}
	if err := sc.Err(); err != nil {
		return rep, err
	}
	if len(rows) == 0 {
		return rep, errors.New("the excerpt holds no rows")
	}
	rep.FromSeq, rep.ToSeq = rows[0].Seq, rows[len(rows)-1].Seq
	prev := genesis
	startAnchored := rep.FromSeq == 1
	if c, ok := bySize[rep.FromSeq-1]; ok {
		prev, startAnchored = c.Head, true
	}
	if !startAnchored {
		return rep, fmt.Errorf("no checkpoint of size %d anchors the first row", rep.FromSeq-1)
	}
	for i, l := range rows {
		if l.Seq != rep.FromSeq+int64(i) {
			return rep, fmt.Errorf("seq %d is missing from the excerpt", rep.FromSeq+int64(i))
		}
		want, err := keys.Hash(l.KeyID, prev, l.Seq, *l.Row)
		if err != nil {
			return rep, fmt.Errorf("seq %d: %w", l.Seq, err)
		}
		if !hmac.Equal(want, l.Hash) {
			return rep, fmt.Errorf("seq %d (audit row %d): the row does not match its hash", l.Seq, l.Row.ID)
		}
		if c, ok := bySize[l.Seq]; ok && !bytes.Equal(c.Head, l.Hash) {
			return rep, fmt.Errorf("seq %d (audit row %d): the hash differs from the signed checkpoint", l.Seq, l.Row.ID)
		}
		prev = l.Hash
		rep.Rows++
		if l.InRange {
			rep.InRange++
		}
	}
	_, rep.Anchored = bySize[rep.ToSeq]
	return rep, nil
}
