package notify

import (
	"context"
	"errors"
	"sync"
	"time"

	mail "github.com/wneessen/go-mail"
	mailsmtp "github.com/wneessen/go-mail/smtp"
)

// smtpSession is one open SMTP session: greeted, under TLS when the
// channel enforces it, authenticated when configured. Only the Send that
// holds it touches it.
type smtpSession struct {
	client    *mail.Client
	smtp      *mailsmtp.Client
	trace     *sessionTrace
	tls       bool      // the session is under TLS
	sent      int       // mail transactions started on it
	idleSince time.Time // when it last came back to the pool
}

// quit ends the session politely (QUIT) within timeout, then closes it.
func (s *smtpSession) quit(timeout time.Duration) {
	if s.smtp.UpdateDeadline(timeout) == nil {
		_ = s.client.CloseWithSMTPClient(s.smtp)
	}
	s.trace.close()
}

// errPoolClosed: the channel was closed before a session was found.
var errPoolClosed = errors.New("channel closed")

// sessionPool bounds how many SMTP sessions a channel has open and keeps
// the idle ones for the next Send. It never dials: get reserves a slot
// and the caller dials into it.
type sessionPool struct {
	size        int
	idleTimeout time.Duration
	maxMessages int
	quitTimeout time.Duration

	mu       sync.Mutex
	idle     []*smtpSession // oldest first
	open     int            // sessions idle, in use or being dialed
	freed    chan struct{}  // closed and replaced whenever a session comes back or a slot frees
	waiting  int            // Sends waiting in get
	janitor  *time.Timer    // closes sessions idle too long; nil when none is idle
	sweeping sync.WaitGroup // janitor runs that are closing sessions
	closed   bool
}

func newSessionPool(size, maxMessages int, idleTimeout, quitTimeout time.Duration) *sessionPool {
	return &sessionPool{size: size, maxMessages: maxMessages, idleTimeout: idleTimeout,
		quitTimeout: quitTimeout, freed: make(chan struct{})}
}

// get returns an idle session, or nil with a slot reserved for the caller
// to dial into (and to give back with discard(nil) if that fails). It waits
// while all slots are taken, until ctx ends or the pool closes.
func (p *sessionPool) get(ctx context.Context) (_ *smtpSession, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		stale := p.takeExpiredLocked(time.Now())
		var s *smtpSession
		reserved := false
		if n := len(p.idle); n > 0 {
			s = p.idle[n-1] // the most recent: the others may idle out
			p.idle = p.idle[:n-1]
		} else if p.open < p.size {
			p.open++
			reserved = true
		}
		freed := p.freed
		if s == nil && !reserved {
			p.waiting++
		}
		p.mu.Unlock()
		p.quitAll(stale)
		if s != nil || reserved {
			return s, nil
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-freed:
		}
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// put gives back a session that can carry another message. One that has
// carried its share, or that comes back after Close, is ended with QUIT.
func (p *sessionPool) put(s *smtpSession) {
	p.mu.Lock()
	if p.closed || s.sent >= p.maxMessages {
		p.releaseLocked()
		p.mu.Unlock()
		s.quit(p.quitTimeout)
		return
	}
	s.idleSince = time.Now()
	p.idle = append(p.idle, s)
	if p.janitor == nil {
		p.janitor = time.AfterFunc(p.idleTimeout, p.sweep)
	}
	p.broadcastLocked()
	p.mu.Unlock()
}

// discard closes a session that must not be reused (a transport error, a
// cancelled Send, a failed reset) and frees its slot; discard(nil) frees a
// reserved slot whose dial failed.
func (p *sessionPool) discard(s *smtpSession) {
	if s != nil {
		s.trace.close()
	}
	p.mu.Lock()
	p.releaseLocked()
	p.mu.Unlock()
}

// close ends every idle session with QUIT and makes the pool refuse new
// work; sessions in use are ended when they come back. It waits for the
// janitor.
func (p *sessionPool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.janitor != nil {
		p.janitor.Stop()
		p.janitor = nil
	}
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.broadcastLocked() // waiters see closed
	p.mu.Unlock()
	p.quitAll(idle)
	p.sweeping.Wait()
}

// sweep is the janitor: it ends sessions idle longer than idleTimeout and
// comes back when the next one would be.
func (p *sessionPool) sweep() {
	p.mu.Lock()
	p.janitor = nil
	if p.closed {
		p.mu.Unlock()
		return
	}
	stale := p.takeExpiredLocked(time.Now())
	if len(p.idle) > 0 {
		p.janitor = time.AfterFunc(time.Until(p.idle[0].idleSince.Add(p.idleTimeout)), p.sweep)
	}
	p.sweeping.Add(1) // under the lock and before closed: close's Wait sees it
	p.mu.Unlock()
	defer p.sweeping.Done()
	p.quitAll(stale)
}

// takeExpiredLocked removes the sessions idle for idleTimeout or longer
// and frees their slots; the caller ends them once unlocked.
func (p *sessionPool) takeExpiredLocked(now time.Time) []*smtpSession {
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= p.idleTimeout {
		n++
	}
	if n == 0 {
		return nil
	}
	stale := append([]*smtpSession(nil), p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	p.open -= n
	p.broadcastLocked()
	return stale
}

func (p *sessionPool) releaseLocked() {
	p.open--
	p.broadcastLocked()
}

func (p *sessionPool) broadcastLocked() {
	close(p.freed)
	p.freed = make(chan struct{})
}

// quitAll ends sessions concurrently, so a server that no longer answers
// costs one quitTimeout, not one per session.
func (p *sessionPool) quitAll(ss []*smtpSession) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { s.quit(p.quitTimeout) })
	}
	wg.Wait()
}
