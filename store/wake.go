package store

import (
	"context"
	"sync"
	"time"
)

// wakeEvery is the least time between two notifications on EventsChannel.
const wakeEvery = 10 * time.Millisecond

// waker tells the workers that events were committed: a NOTIFY on
// EventsChannel sent after the commit, in a transaction of its own, at
// most once per wakeEvery, however many commits came meanwhile.
//
// The NOTIFY used to be part of each group commit. PostgreSQL makes every
// transaction that notifies take one lock on the database at commit, so
// that notifications queue in commit order: the group commits waited for
// each other there, and the notifications added transactions of their
// own (a 20,000-notice load run committed 22,500 transactions with the
// NOTIFY and 10,200 without; the listening backend reads each batch of
// notifications in a transaction). The workers need one wake-up per batch
// they can claim, not one per commit.
//
// A wake-up that is lost (serve stops after a commit, before its NOTIFY;
// the NOTIFY fails) delays the events until a claimer's next look (its
// poll, a second by default); it loses none.
type waker struct {
	notify func(context.Context) error
	every  time.Duration

	mu    sync.Mutex
	busy  bool // a sender is running
	again bool // events were committed since the sender last notified
}

// wake asks for a notification after events have committed. It never
// waits: the first commit after a quiet spell is notified at once, later
// ones when the interval ends.
func (w *waker) wake() {
	w.mu.Lock()
	if w.busy {
		w.again = true
		w.mu.Unlock()
		return
	}
	w.busy = true
	w.mu.Unlock()
	go w.send()
}

// send notifies, waits out the interval, and notifies again if commits
// came meanwhile; it ends when an interval passes without one.
func (w *waker) send() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = w.notify(ctx) // lost: the claimers' poll finds the events (see waker)
		cancel()
		time.Sleep(w.every)
		w.mu.Lock()
		if !w.again {
			w.busy = false
			w.mu.Unlock()
			return
		}
		w.again = false
		w.mu.Unlock()
	}
}
