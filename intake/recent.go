package intake

import (
	"sync"
	"time"
)

// recentTTL is how long a subscription read is reused.
const recentTTL = time.Second

// recentMax bounds the entries kept; past it the cache starts afresh.
const recentMax = 10000

// recent keeps values read by key for recentTTL: what every notification
// or event looks up (its subscription) is read once a second at most.
// Failures are not kept, so an unknown key costs a read every time.
type recent[V any] struct {
	mu sync.Mutex
	m  map[string]recentEntry[V]
}

type recentEntry[V any] struct {
	v  V
	at time.Time
}

// get returns the value for key, reading it with load when it is not kept
// or older than recentTTL.
func (r *recent[V]) get(key string, load func() (V, error)) (V, error) {
	now := time.Now()
	r.mu.Lock()
	e, ok := r.m[key]
	r.mu.Unlock()
	if ok && now.Sub(e.at) < recentTTL {
		return e.v, nil
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	r.mu.Lock()
	if r.m == nil || len(r.m) >= recentMax {
		r.m = map[string]recentEntry[V]{}
	}
	r.m[key] = recentEntry[V]{v, now}
	r.mu.Unlock()
	return v, nil
}

// forget drops what is kept for key, so the next get reads it afresh.
func (r *recent[V]) forget(key string) {
	r.mu.Lock()
	delete(r.m, key)
	r.mu.Unlock()
}
