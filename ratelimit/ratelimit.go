// Package ratelimit owns the keyed token buckets Tidings' HTTP servers
// limit their clients with: one bucket per key (a client address, a
// subscription, an API key, a portal link), and a bound on how many keys
// are remembered, so that a flood of new keys cannot grow memory.
package ratelimit

import (
	"sync"

	"golang.org/x/time/rate"
)

// Buckets are token buckets by key. The zero value is not usable; use New.
type Buckets struct {
	mu      sync.Mutex
	r       rate.Limit
	burst   int
	maxKeys int
	m       map[string]*rate.Limiter
}

// New returns buckets that refill at r tokens a second and hold burst
// (at least 1), remembering at most maxKeys keys (at least 1): when a new
// key would exceed that, every bucket is forgotten rather than the map
// grown. They refill anyway; forgetting gives the clients of that moment a
// full burst again.
func New(r rate.Limit, burst, maxKeys int) *Buckets {
	return &Buckets{r: r, burst: max(burst, 1), maxKeys: max(maxKeys, 1), m: map[string]*rate.Limiter{}}
}

// Allow takes a token from key's bucket and reports whether there was one.
func (b *Buckets) Allow(key string) bool {
	b.mu.Lock()
	l, ok := b.m[key]
	if !ok {
		if len(b.m) >= b.maxKeys {
			b.m = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(b.r, b.burst)
		b.m[key] = l
	}
	b.mu.Unlock()
	return l.Allow()
}
