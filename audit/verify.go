package audit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Reader is what verification and export read from the database.
type Reader interface {
	AuditTenants(ctx context.Context) ([]string, error)
	// ChainedRows lists up to limit links after seq, in seq order, each
	// with its audit row (nil when the row is gone).
	ChainedRows(ctx context.Context, tenant string, afterSeq int64, limit int) ([]Chained, error)
	CheckpointsAfter(ctx context.Context, tenant string, size int64) ([]Checkpoint, error)
	// AuditBacklog counts the rows not chained yet; Behind are those
	// before head in chain order, which no chainer will ever take.
	AuditBacklog(ctx context.Context, tenant string, head Head) (Backlog, error)
}

// Chained is one link of a chain with its audit row, nil when that is gone.
type Chained struct {
	Link Link
	Row  *Row
}

// Backlog is what of a tenant's audit log is not chained yet.
type Backlog struct {
	Rows        int64
	Oldest      time.Time
	Behind      int64 // rows before the chain's head in chain order: never chainable
	FirstBehind int64 // the audit row id of one of them
}

// Verifier checks tenants' chains and checkpoints.
type Verifier struct {
	Store      Reader
	Keys       *Keys
	PublicKeys PublicKeys
	// CheckpointDir holds the checkpoint files ("" to check only the
	// database's checkpoints).
	CheckpointDir string
	Now           func() time.Time
}

// Report is the verification of one tenant.
type Report struct {
	Tenant          string
	Rows            int64 // chained rows checked
	DBCheckpoints   int
	FileCheckpoints int
	Backlog         Backlog
	Problem         *Problem // the first bad position; nil when the chain verifies
	at              time.Time
}

// Problem is the first place where the evidence does not hold.
type Problem struct {
	Seq     int64 // 0: not a chain position (an unreadable checkpoint file)
	AuditID int64 // 0 when unknown (the row is gone)
	Reason  string
}

// OK reports whether the tenant's chain and checkpoints verify.
func (r Report) OK() bool { return r.Problem == nil }

// String is the report as one line.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tenant %s: %d chained rows, %d checkpoints in the database, %d in the checkpoint file",
		r.Tenant, r.Rows, r.DBCheckpoints, r.FileCheckpoints)
	if r.Backlog.Rows > 0 {
		fmt.Fprintf(&b, ", %d rows not chained yet (oldest %s old)", r.Backlog.Rows, r.at.Sub(r.Backlog.Oldest).Round(time.Second))
	}
	if r.Problem == nil {
		b.WriteString(": OK")
		return b.String()
	}
	b.WriteString(": FAIL")
	if r.Problem.Seq > 0 {
		fmt.Fprintf(&b, " at seq %d", r.Problem.Seq)
		if r.Problem.AuditID > 0 {
			fmt.Fprintf(&b, " (audit row %d)", r.Problem.AuditID)
		}
	}
	b.WriteString(": " + r.Problem.Reason)
	return b.String()
}

// Tenants lists the tenants to verify: those of the database and those with
// a checkpoint file (a tenant gone from the database is not gone from there).
func (v *Verifier) Tenants(ctx context.Context) ([]string, error) {
	tenants, err := v.Store.AuditTenants(ctx)
	if err != nil {
		return nil, err
	}
	if v.CheckpointDir != "" {
		files, err := filepath.Glob(filepath.Join(v.CheckpointDir, "*.jsonl"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			t, err := url.PathUnescape(strings.TrimSuffix(filepath.Base(f), ".jsonl"))
			if err == nil && !slices.Contains(tenants, t) {
				tenants = append(tenants, t)
			}
		}
	}
	slices.Sort(tenants)
	return tenants, nil
}

// sourced is a checkpoint and where it was read.
type sourced struct {
	Checkpoint
	from string
}

func (c sourced) String() string {
	return fmt.Sprintf("the checkpoint of size %d signed at %s (%s)", c.Size, c.At.UTC().Format(time.RFC3339), c.from)
}

// Verify walks a tenant's chain from seq 1, recomputing every hash, and
// checks it against every checkpoint of the database and of the
// checkpoint file. An error means it could not read what it must check.
func (v *Verifier) Verify(ctx context.Context, tenant string) (Report, error) {
	rep := Report{Tenant: tenant, at: time.Now()}
	if v.Now != nil {
		rep.at = v.Now()
	}
	var problems []Problem
	dbCPs, err := v.Store.CheckpointsAfter(ctx, tenant, 0)
	if err != nil {
		return rep, err
	}
	rep.DBCheckpoints = len(dbCPs)
	cps := make([]sourced, 0, len(dbCPs))
	for _, c := range dbCPs {
		cps = append(cps, sourced{c, "database"})
	}
	if v.CheckpointDir != "" {
		path := CheckpointFile(v.CheckpointDir, tenant)
		fileCPs, err := ReadCheckpointFile(path)
		if err != nil {
			if _, statErr := os.Stat(path); statErr != nil {
				return rep, err
			}
			problems = append(problems, Problem{Reason: err.Error()})
		}
		rep.FileCheckpoints = len(fileCPs)
		for _, c := range fileCPs {
			cps = append(cps, sourced{c, filepath.Base(path)})
		}
	}
	bySize := map[int64][]sourced{}
	for _, c := range cps {
		switch err := v.PublicKeys.Verify(c.Checkpoint); {
		case err != nil:
			problems = append(problems, Problem{Seq: c.Size, Reason: fmt.Sprintf("%s: %v (forged or altered checkpoint)", c, err)})
		case c.TenantID != tenant:
			problems = append(problems, Problem{Seq: c.Size, Reason: fmt.Sprintf("%s names tenant %q", c, c.TenantID)})
		default:
			bySize[c.Size] = append(bySize[c.Size], c)
		}
	}

	head, walkProblem, err := v.walk(ctx, tenant, bySize, &rep)
	if err != nil {
		return rep, err
	}
	if walkProblem != nil {
		problems = append(problems, *walkProblem)
	}
	if rep.Backlog, err = v.Store.AuditBacklog(ctx, tenant, head); err != nil {
		return rep, err
	}
	if walkProblem == nil {
		for _, c := range cps {
			if c.Size > head.Seq && len(bySize[c.Size]) > 0 {
				problems = append(problems, Problem{Seq: head.Seq + 1, Reason: fmt.Sprintf(
					"the chain ends at seq %d but %s says it was longer: its tail was deleted (truncated tail)", head.Seq, c)})
				break
			}
		}
		if rep.Backlog.Behind > 0 {
			problems = append(problems, Problem{Seq: head.Seq + 1, AuditID: rep.Backlog.FirstBehind, Reason: fmt.Sprintf(
				"%d audit rows sit before the chain's head in chain order and can never be chained (inserted with a forged xid)", rep.Backlog.Behind)})
		}
	}
	if len(problems) > 0 {
		first := slices.MinFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Seq, b.Seq) })
		rep.Problem = &first
	}
	return rep, nil
}

// walk recomputes the chain link by link and stops at the first bad one.
func (v *Verifier) walk(ctx context.Context, tenant string, bySize map[int64][]sourced, rep *Report) (Head, *Problem, error) {
	const page = 10000
	var head Head
	prevHash := genesis
	matched := int64(0)   // the last seq a checkpoint vouched for
	var mismatch *Problem // a row that does not match its hash, until the next link tells why
	for {
		batch, err := v.Store.ChainedRows(ctx, tenant, head.Seq, page)
		if err != nil {
			return head, nil, err
		}
		for _, c := range batch {
			l, row := c.Link, c.Row
			if mismatch != nil {
				// The next link still chains on the bad one: that row alone was changed.
				if row != nil && l.Seq == head.Seq+1 {
					if want, err := v.Keys.Hash(l.KeyID, prevHash, l.Seq, *row); err == nil && hmac.Equal(want, l.Hash) {
						mismatch.Reason = "the row does not match its hash (edited row)"
					}
				}
				return head, mismatch, nil
			}
			bad := func(format string, args ...any) *Problem {
				return &Problem{Seq: l.Seq, AuditID: l.AuditID, Reason: fmt.Sprintf(format, args...)}
			}
			switch {
			case l.Seq != head.Seq+1:
				return head, &Problem{Seq: head.Seq + 1, Reason: fmt.Sprintf(
					"seq %d is missing: the chain goes on at seq %d (deleted row)", head.Seq+1, l.Seq)}, nil
			case row == nil:
				return head, bad("the chain names audit row %d, which is gone (deleted row)", l.AuditID), nil
			case row.TenantID != tenant:
				return head, bad("the chain names an audit row of another tenant"), nil
			case head.Seq > 0 && (row.XID < head.XID || row.XID == head.XID && row.ID <= head.AuditID):
				return head, bad("out of chain order: (xid, id) does not increase after audit row %d", head.AuditID), nil
			}
			want, err := v.Keys.Hash(l.KeyID, prevHash, l.Seq, *row)
			if err != nil {
				return head, bad("%v", err), nil
			}
			if !hmac.Equal(want, l.Hash) {
				mismatch = bad("the row does not match its hash, nor the next row its own: the chain was " +
					"rewritten from here on without the key (rows edited or deleted, rewritten tail)")
			}
			for _, cp := range bySize[l.Seq] {
				if mismatch == nil && !bytes.Equal(cp.Head, l.Hash) {
					return head, bad("the hash differs from %s: the chain was rewritten after seq %d, "+
						"the last position a checkpoint confirms (rewritten tail)", cp, matched), nil
				}
			}
			if len(bySize[l.Seq]) > 0 {
				matched = l.Seq
			}
			head = Head{Seq: l.Seq, Hash: l.Hash, XID: row.XID, AuditID: row.ID}
			prevHash = l.Hash
			rep.Rows = l.Seq
		}
		if len(batch) < page {
			if mismatch != nil {
				mismatch.Reason = "the last row does not match its hash (edited row)"
			}
			return head, mismatch, nil
		}
	}
}
