package intake

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// recentTTL is how long a subscription read is reused.
const recentTTL = time.Second

// recentReadTimeout bounds a shared read: it runs for every caller that
// waits on it, so no one caller's cancellation stops it, but a stuck
// database does.
const recentReadTimeout = 10 * time.Second

// errReadPanicked answers the callers of a shared read that panicked.
var errReadPanicked = errors.New("intake: reading the subscription failed unexpectedly")

// recentMax bounds the entries kept; past it the cache starts afresh.
const recentMax = 10000

// recent keeps values read by key for recentTTL: what every notification
// or event looks up (its subscription) is read once a second at most.
// Concurrent misses of one key share one read: without that, a burst that
// finds the entry expired (every second under load, and at the first
// request after a quiet spell) sends a read per request, each holding a
// database connection, and a cold pool opens a backend for each. Failures
// are not kept, so an unknown key costs a read every time (shared by the
// requests that ask at once).
type recent[V any] struct {
	mu    sync.Mutex
	m     map[string]recentEntry[V]
	gen   uint64 // bumped by forget: a read begun before it is not kept
	loads singleflight.Group
}

type recentEntry[V any] struct {
	v  V
	at time.Time
}

// get returns the value for key, reading it with load when it is not kept
// or older than recentTTL. Callers that miss while a read of key is under
// way wait for that read and share its outcome; load gets a context of its
// own (ctx's values, not its cancellation), and a caller whose ctx ends
// stops waiting.
func (r *recent[V]) get(ctx context.Context, key string, load func(context.Context) (V, error)) (V, error) {
	now := time.Now()
	r.mu.Lock()
	e, ok := r.m[key]
	r.mu.Unlock()
	if ok && now.Sub(e.at) < recentTTL {
		return e.v, nil
	}
	ch := r.loads.DoChan(key, func() (_ any, err error) {
		// A panic here would end the process (singleflight re-raises it
		// on a goroutine of its own), not just the request that began
		// the read: answer it as an error instead.
		defer func() {
			if recover() != nil {
				err = errReadPanicked
			}
		}()
		r.mu.Lock()
		gen, at := r.gen, time.Now()
		r.mu.Unlock()
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recentReadTimeout)
		defer cancel()
		v, err := load(lctx)
		if err != nil {
			return v, err
		}
		r.mu.Lock()
		if r.gen == gen {
			if r.m == nil || len(r.m) >= recentMax {
				r.m = map[string]recentEntry[V]{}
			}
			r.m[key] = recentEntry[V]{v, at}
		}
		r.mu.Unlock()
		return v, nil
	})
	select {
	case res := <-ch:
		v, _ := res.Val.(V)
		return v, res.Err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// forget drops what is kept for key, so the next get reads it afresh: a
// read already under way is neither kept nor shared with later callers.
func (r *recent[V]) forget(key string) {
	r.mu.Lock()
	delete(r.m, key)
	r.gen++
	r.mu.Unlock()
	r.loads.Forget(key)
}

// learning lets one request at a time record a subscription's own
// reference. Until the subscription is read afresh, every notification
// finds the reference unknown: without this, each of them (hundreds in a
// subscription's first second at 1,000/s, the moment serve's pool is
// coldest) sent the same UPDATE. A claim lasts two kept reads' lives, by
// when a fresh read shows the reference, unless the UPDATE failed (and the
// claim was released) or the subscription was made anew.
type learning struct {
	mu sync.Mutex
	at map[string]time.Time
}

// claim reports whether the caller is to record key's reference.
func (l *learning) claim(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.at[key]; ok && now.Sub(at) < 2*recentTTL {
		return false
	}
	if l.at == nil || len(l.at) >= recentMax {
		l.at = map[string]time.Time{}
	}
	l.at[key] = now
	return true
}

// release lets the next caller claim key at once.
func (l *learning) release(key string) {
	l.mu.Lock()
	delete(l.at, key)
	l.mu.Unlock()
}
