package store

import (
	"context"
	"slices"
	"sync"
	"time"
)

// commitTimeout bounds one group commit: no caller's cancellation stops a
// commit others wait on, but a stuck database does.
const commitTimeout = 30 * time.Second

// groupCommit turns many concurrent writes into few transactions: each
// caller queues its items; whoever finds a commit slot free takes
// everything queued (up to max items) and commits it in one transaction
// for all of them, while later callers queue behind. Nothing waits on a
// timer: a batch is whatever arrived during the previous commit, so a lone
// request commits at once and a busy intake commits hundreds of events per
// transaction.
type groupCommit[In, Out any] struct {
	max    int
	slots  chan struct{} // commits under way at once
	commit func(ctx context.Context, items []In) ([]Out, error)

	mu      sync.Mutex
	pending []*groupCall[In, Out]
}

type groupCall[In, Out any] struct {
	ctx   context.Context
	items []In
	out   []Out
	err   error
	done  chan struct{}
}

func newGroupCommit[In, Out any](max, parallel int, commit func(context.Context, []In) ([]Out, error)) *groupCommit[In, Out] {
	return &groupCommit[In, Out]{max: max, slots: make(chan struct{}, parallel), commit: commit}
}

// do commits items, alone or with others', and returns their results in order.
func (g *groupCommit[In, Out]) do(ctx context.Context, items []In) ([]Out, error) {
	c := &groupCall[In, Out]{ctx: ctx, items: items, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	g.mu.Unlock()
	for {
		if !g.queued(c) {
			// Another caller's commit took it: its outcome comes soon.
			<-c.done
			return c.out, c.err
		}
		select {
		case <-c.done:
			return c.out, c.err
		case g.slots <- struct{}{}:
			if g.queued(c) {
				g.lead()
			}
			<-g.slots
		case <-ctx.Done():
			if g.withdraw(c) {
				return nil, ctx.Err()
			}
			<-c.done // already being committed: its outcome is known soon
			return c.out, c.err
		}
	}
}

// queued reports whether a call still waits for a commit to take it.
func (g *groupCommit[In, Out]) queued(c *groupCall[In, Out]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.pending, c)
}

// withdraw takes a call that nobody has taken yet out of the queue.
func (g *groupCommit[In, Out]) withdraw(c *groupCall[In, Out]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, p := range g.pending {
		if p == c {
			g.pending = append(g.pending[:i], g.pending[i+1:]...)
			return true
		}
	}
	return false
}

// lead commits what is queued, in one transaction, and answers every call
// in it. Should that transaction fail, each call is committed alone, so one
// bad request does not fail the others.
func (g *groupCommit[In, Out]) lead() {
	g.mu.Lock()
	n, k := 0, 0
	for k < len(g.pending) && (k == 0 || n+len(g.pending[k].items) <= g.max) {
		n += len(g.pending[k].items)
		k++
	}
	batch := g.pending[:k:k]
	g.pending = append([]*groupCall[In, Out](nil), g.pending[k:]...)
	g.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	items := make([]In, 0, n)
	for _, c := range batch {
		items = append(items, c.items...)
	}
	// The first caller's context bounds the commit; the others waited on
	// the same queue and get its outcome.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), commitTimeout)
	defer cancel()
	out, err := g.commit(ctx, items)
	if err != nil && len(batch) > 1 {
		for _, c := range batch {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(c.ctx), commitTimeout)
			c.out, c.err = g.commit(cctx, c.items)
			ccancel()
			close(c.done)
		}
		return
	}
	for _, c := range batch {
		c.err = err
		if err == nil {
			c.out, out = out[:len(c.items)], out[len(c.items):]
		}
		close(c.done)
	}
}
