package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// Store is what the chainer needs from the database.
type Store interface {
	// TenantsToChain lists the tenants with rows ready to chain or chained
	// rows no checkpoint covers yet.
	TenantsToChain(ctx context.Context) ([]string, error)
	// ChainTx runs fn in one transaction holding the tenant's chain lock;
	// it reports false, without running fn, when another holds it.
	ChainTx(ctx context.Context, tenant string, fn func(ChainTx) error) (bool, error)
	// CheckpointsAfter lists a tenant's checkpoints with a size above size,
	// in size order.
	CheckpointsAfter(ctx context.Context, tenant string, size int64) ([]Checkpoint, error)
}

// ChainTx is one chaining transaction of one tenant.
type ChainTx interface {
	Head(ctx context.Context) (Head, error)
	// Ready lists up to limit rows after head in chain order, only rows
	// whose transaction and every transaction before it have ended.
	Ready(ctx context.Context, after Head, limit int) ([]Row, error)
	AppendLinks(ctx context.Context, links []Link) error
	// LastCheckpoint is the newest checkpoint (zero when none).
	LastCheckpoint(ctx context.Context) (Checkpoint, error)
	AddCheckpoint(ctx context.Context, c Checkpoint) error
}

// Chainer links committed audit rows into each tenant's chain and writes
// signed checkpoints. Any number of replicas may run one: a tenant's chain
// is extended by one of them at a time.
type Chainer struct {
	Store  Store
	Keys   *Keys
	Signer *Signer
	// CheckpointDir receives one <tenant>.jsonl file of checkpoints per
	// tenant; it must live outside the database's reach.
	CheckpointDir string
	Log           *slog.Logger
	Interval      time.Duration // between passes (default 1s)
	Batch         int           // rows per transaction (default 5000)
	// A checkpoint is written once CheckpointRows rows (default 1000) are
	// chained past the last one, or when anything is and the last is
	// CheckpointEvery (default 10s) old.
	CheckpointRows  int64
	CheckpointEvery time.Duration
	Now             func() time.Time

	mu     sync.Mutex
	synced map[string]bool // tenants whose checkpoint file has every checkpoint
	// beforeCommit runs after a batch is written and before it commits (tests).
	beforeCommit func(ctx context.Context)
}

// Run chains every Interval until ctx ends.
func (c *Chainer) Run(ctx context.Context) {
	t := time.NewTicker(c.interval())
	defer t.Stop()
	for {
		if _, err := c.Pass(ctx); err != nil && ctx.Err() == nil {
			c.log().Error("audit chain pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass chains what is ready of every tenant and reports how many rows it
// chained. A tenant another replica is chaining is left to it.
func (c *Chainer) Pass(ctx context.Context) (int, error) {
	tenants, err := c.Store.TenantsToChain(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit chain: tenants: %w", err)
	}
	tenants = append(tenants, c.unsynced(tenants)...)
	total := 0
	var errs []error
	for _, t := range tenants {
		n, err := c.chainTenant(ctx, t)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("audit chain of tenant %q: %w", t, err))
		}
	}
	return total, errors.Join(errs...)
}

func (c *Chainer) chainTenant(ctx context.Context, tenant string) (int, error) {
	total := 0
	for {
		n, signed, err := c.chainBatch(ctx, tenant)
		total += n
		if err != nil {
			return total, err
		}
		if signed || !c.isSynced(tenant) {
			if err := c.syncFile(ctx, tenant); err != nil {
				// The checkpoint is in the database; the next pass writes the file.
				c.log().Error("audit checkpoint file", "tenant", tenant, "err", err)
			}
		}
		if n < c.batch() {
			return total, nil
		}
	}
}

// chainBatch chains up to one batch of a tenant's ready rows in one
// transaction, with a checkpoint when one is due.
func (c *Chainer) chainBatch(ctx context.Context, tenant string) (chained int, signed bool, err error) {
	_, err = c.Store.ChainTx(ctx, tenant, func(tx ChainTx) error {
		head, err := tx.Head(ctx)
		if err != nil {
			return err
		}
		rows, err := tx.Ready(ctx, head, c.batch())
		if err != nil {
			return err
		}
		links, err := c.Keys.Link(tenant, head, rows)
		if err != nil {
			return err
		}
		if len(links) > 0 {
			if err := tx.AppendLinks(ctx, links); err != nil {
				return err
			}
			last := links[len(links)-1]
			head = Head{Seq: last.Seq, Hash: last.Hash}
		}
		last, err := tx.LastCheckpoint(ctx)
		if err != nil {
			return err
		}
		now := c.now()
		if head.Seq > last.Size && (head.Seq-last.Size >= c.checkpointRows() || now.Sub(last.At) >= c.checkpointEvery()) {
			cp := c.Signer.Sign(Checkpoint{TenantID: tenant, Size: head.Seq, Head: head.Hash, At: now})
			if err := tx.AddCheckpoint(ctx, cp); err != nil {
				return err
			}
			signed = true
		}
		if c.beforeCommit != nil {
			c.beforeCommit(ctx)
		}
		chained = len(links)
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return chained, signed, nil
}

// syncFile appends to the tenant's checkpoint file every checkpoint of the
// database it does not have yet.
func (c *Chainer) syncFile(ctx context.Context, tenant string) error {
	c.setSynced(tenant, false)
	if err := os.MkdirAll(c.CheckpointDir, 0o750); err != nil {
		return err
	}
	err := appendMissing(CheckpointFile(c.CheckpointDir, tenant), func(fileSize int64) ([]Checkpoint, error) {
		return c.Store.CheckpointsAfter(ctx, tenant, fileSize)
	})
	if err != nil {
		return err
	}
	c.setSynced(tenant, true)
	return nil
}

// unsynced lists the tenants whose checkpoint file missed a write, other
// than those in listed.
func (c *Chainer) unsynced(listed []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for t, ok := range c.synced {
		if !ok && !slices.Contains(listed, t) {
			out = append(out, t)
		}
	}
	return out
}

func (c *Chainer) isSynced(tenant string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced[tenant]
}

func (c *Chainer) setSynced(tenant string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced == nil {
		c.synced = map[string]bool{}
	}
	c.synced[tenant] = ok
}

func (c *Chainer) interval() time.Duration { return orDefault(c.Interval, time.Second) }
func (c *Chainer) batch() int              { return orDefault(c.Batch, 5000) }
func (c *Chainer) checkpointRows() int64   { return orDefault(c.CheckpointRows, 1000) }
func (c *Chainer) checkpointEvery() time.Duration {
	return orDefault(c.CheckpointEvery, 10*time.Second)
}

func (c *Chainer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Chainer) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
