package notify

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidings-health/tidings/mailcatch"
)

// numbered is the test EOB with its own Message-ID, so each copy can be
// found on the server.
func numbered(t *testing.T, n int) Email {
	t.Helper()
	e := eobEmail(t)
	e.MessageID = fmt.Sprintf("<notice-%d@tidings.example>", n)
	return e
}

func waitOpen(t *testing.T, s *mailcatch.Server, n int) {
	t.Helper()
	if err := s.WaitOpenConnections(sendCtx(t), n); err != nil {
		t.Fatal(err)
	}
}

// byMessageID counts the server's messages by their Message-ID header.
func byMessageID(t *testing.T, s *mailcatch.Server) map[string]int {
	t.Helper()
	count := map[string]int{}
	for _, m := range s.Messages() {
		count[decodeMessage(t, m.Data).header.Get("Message-Id")]++
	}
	return count
}

// poolState returns how many sessions are idle in c's pool and how many
// are open in all.
func poolState(c *EmailChannel) (idle, open int) {
	c.pool.mu.Lock()
	defer c.pool.mu.Unlock()
	return len(c.pool.idle), c.pool.open
}

func mustSend(t *testing.T, c *EmailChannel, e Email) Receipt {
	t.Helper()
	r, err := c.Send(sendCtx(t), e)
	if err != nil {
		t.Fatalf("Send %s: %v", e.MessageID, err)
	}
	return r
}

func TestPoolManySendersShareFewSessions(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	cfg := configFor(t, s)
	cfg.PoolSize = 4
	c := mustChannel(t, cfg)

	const senders, messages = 8, 200
	work := make(chan int)
	errs := make(chan error, messages)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for n := range work {
				r, err := c.Send(sendCtx(t), numbered(t, n))
				if err == nil && !r.TLS {
					err = errors.New("receipt says no TLS")
				}
				if err != nil {
					errs <- fmt.Errorf("message %d: %w", n, err)
				}
			}
		})
	}
	for n := range messages {
		work <- n
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	msgs := s.Messages()
	if len(msgs) != messages {
		t.Fatalf("catcher has %d messages, want %d", len(msgs), messages)
	}
	conns := map[int]bool{}
	for _, m := range msgs {
		conns[m.Conn] = true
		if !m.TLS {
			t.Errorf("message over connection %d outside TLS", m.Conn)
		}
		d := decodeMessage(t, m.Data)
		if !strings.Contains(d.text, "Your share: $1,234.50") || !strings.Contains(d.html, "$1,234.50") {
			t.Errorf("message %s arrived damaged", d.header.Get("Message-Id"))
		}
	}
	count := byMessageID(t, s)
	for n := range messages {
		if id := fmt.Sprintf("<notice-%d@tidings.example>", n); count[id] != 1 {
			t.Errorf("%s arrived %d times", id, count[id])
		}
	}
	if n := s.Connections(); n > cfg.PoolSize || len(conns) > cfg.PoolSize {
		t.Errorf("%d connections (%d carried mail) for a pool of %d", n, len(conns), cfg.PoolSize)
	}
	t.Logf("%d messages over %d connections", messages, s.Connections())
}

func TestPoolReusesOneSessionPerTransport(t *testing.T) {
	tests := []struct {
		name string
		opts mailcatch.Options
		cfg  func(*SMTPConfig)
		user string
	}{
		{"STARTTLS", mailcatch.Options{STARTTLS: true}, func(*SMTPConfig) {}, ""},
		{"implicit TLS", mailcatch.Options{ImplicitTLS: true}, func(c *SMTPConfig) { c.RequireTLS, c.ImplicitTLS = false, true }, ""},
		{"AUTH", mailcatch.Options{STARTTLS: true, Users: map[string]string{"tidings": canaryPass}},
			func(c *SMTPConfig) { c.Username, c.Password = "tidings", canaryPass }, "tidings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := catcher(t, tt.opts)
			cfg := configFor(t, s)
			tt.cfg(&cfg)
			c := mustChannel(t, cfg)
			for n := range 3 {
				if r := mustSend(t, c, numbered(t, n)); !r.TLS {
					t.Errorf("message %d: Receipt.TLS = false", n)
				}
			}
			for i, m := range s.Messages() {
				if m.Conn != 1 || !m.TLS || m.User != tt.user {
					t.Errorf("message %d: connection %d, TLS %v, user %q", i, m.Conn, m.TLS, m.User)
				}
			}
			if n := s.Connections(); n != 1 {
				t.Errorf("%d connections for 3 messages in sequence, want 1", n)
			}
		})
	}
}

func TestPoolSessionClosedByServerWhileIdle(t *testing.T) {
	tests := []struct {
		name string
		opts mailcatch.Options
		// hangUp has the server end the idle session.
		hangUp func(t *testing.T, s *mailcatch.Server)
	}{
		{"dropped", mailcatch.Options{STARTTLS: true}, func(t *testing.T, s *mailcatch.Server) {
			if n := s.DropConnections(); n != 1 {
				t.Fatalf("DropConnections = %d, want 1", n)
			}
		}},
		// The server answers 421 to the idle client and hangs up; the 421
		// is what the client reads after its next MAIL FROM.
		{"idle timeout 421", mailcatch.Options{STARTTLS: true, IdleTimeout: 300 * time.Millisecond},
			func(t *testing.T, s *mailcatch.Server) { waitOpen(t, s, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := catcher(t, tt.opts)
			cfg := configFor(t, s)
			cfg.PoolSize = 1
			c := mustChannel(t, cfg)
			mustSend(t, c, numbered(t, 1))
			tt.hangUp(t, s)

			mustSend(t, c, numbered(t, 2))
			count := byMessageID(t, s)
			if count["<notice-1@tidings.example>"] != 1 || count["<notice-2@tidings.example>"] != 1 || len(count) != 2 {
				t.Errorf("messages by id: %v, want each once", count)
			}
			if n := s.Connections(); n != 2 {
				t.Errorf("%d connections, want 2 (the closed one and its replacement)", n)
			}
			mustSend(t, c, numbered(t, 3))
			if n := s.Connections(); n != 2 {
				t.Errorf("%d connections after a third message, want the replacement reused", n)
			}
		})
	}
}

func TestPoolConnectionCutAfterDataIsNotRetried(t *testing.T) {
	const cut = "cut.here@example.net"
	s := catcher(t, mailcatch.Options{STARTTLS: true, HangUpAfterData: func(to []string) bool { return to[0] == cut }})
	cfg := configFor(t, s)
	cfg.PoolSize = 1
	c := mustChannel(t, cfg)
	mustSend(t, c, numbered(t, 1))

	e := numbered(t, 2)
	e.To = cut
	_, err := c.Send(sendCtx(t), e)
	var de *DeliveryError
	if !errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrTemporary) || !errors.As(err, &de) || de.Stage != "data" {
		t.Fatalf("Send cut after DATA: %v, want ErrUnknownOutcome (not ErrTemporary) at data", err)
	}
	assertSafeError(t, err)
	if idle, open := poolState(c); idle != 0 || open != 0 {
		t.Errorf("after the cut: %d sessions idle, %d open; want the cut one closed", idle, open)
	}

	mustSend(t, c, numbered(t, 3))
	count := byMessageID(t, s)
	// The server kept the message it never confirmed; a retry would have
	// delivered it a second time.
	for n := 1; n <= 3; n++ {
		if id := fmt.Sprintf("<notice-%d@tidings.example>", n); count[id] != 1 {
			t.Errorf("%s arrived %d times, want once", id, count[id])
		}
	}
	msgs := s.Messages()
	if n := s.Connections(); n != 2 || msgs[len(msgs)-1].Conn != 2 {
		t.Errorf("%d connections, last message over %d: the cut session must not be reused", n, msgs[len(msgs)-1].Conn)
	}
}

// blockingCatcher holds every message to slow@ at RCPT until release is
// closed; entered receives once per held RCPT.
func blockingCatcher(t *testing.T) (s *mailcatch.Server, entered chan struct{}, release chan struct{}) {
	t.Helper()
	entered, release = make(chan struct{}, 1), make(chan struct{})
	s = catcher(t, mailcatch.Options{STARTTLS: true, RejectRcpt: func(rcpt string) *mailcatch.Reply {
		if strings.HasPrefix(rcpt, "slow@") {
			entered <- struct{}{}
			<-release
		}
		return nil
	}})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return s, entered, release
}

// waitForWaiters waits until n Sends wait for a session, and reports
// whether they did before ctx ended.
func waitForWaiters(ctx context.Context, c *EmailChannel, n int) bool {
	for {
		c.pool.mu.Lock()
		w := c.pool.waiting
		c.pool.mu.Unlock()
		if w == n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sendSlow starts a Send to slow@ and waits until the server holds it.
func sendSlow(t *testing.T, c *EmailChannel, entered chan struct{}) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		e := numbered(t, 0)
		e.To = "slow@example.net"
		_, err := c.Send(sendCtx(t), e)
		done <- err
	}()
	select {
	case <-entered:
	case <-sendCtx(t).Done():
		t.Fatal("the slow message never reached RCPT")
	}
	return done
}

func TestPoolWaitEndsWithContext(t *testing.T) {
	s, entered, release := blockingCatcher(t)
	goroutines := runtime.NumGoroutine()
	cfg := configFor(t, s)
	cfg.PoolSize = 1
	c, err := NewEmailChannel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	slow := sendSlow(t, c, entered)

	// The only session is held by the slow Send, which goes on until this
	// test releases it: this Send can only return by giving up waiting.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		waitForWaiters(ctx, c, 1)
		cancel()
	}()
	_, err = c.Send(ctx, numbered(t, 1))
	var de *DeliveryError
	if !errors.Is(err, ErrTemporary) || !errors.Is(err, context.Canceled) || !errors.As(err, &de) || de.Stage != "connect" {
		t.Fatalf("Send while the pool is busy: %v, want ErrTemporary and context.Canceled", err)
	}
	if !waitForWaiters(sendCtx(t), c, 0) {
		t.Error("the cancelled Send is still counted as waiting")
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow Send ended (%v) before it was released", err)
	default:
	}

	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("slow Send: %v", err)
	}
	mustSend(t, c, numbered(t, 2)) // the gave-up Send left no slot taken
	if n := s.Connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, s, 0)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after Close, %d before the channel", n, goroutines)
	}
}

func TestPoolSessionCancelledMidTransactionIsClosed(t *testing.T) {
	s, entered, release := blockingCatcher(t)
	cfg := configFor(t, s)
	cfg.PoolSize = 1
	c := mustChannel(t, cfg)
	mustSend(t, c, numbered(t, 1))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-entered: // the server holds the message at RCPT
			cancel()
		case <-ctx.Done():
		}
	}()
	e := numbered(t, 2)
	e.To = "slow@example.net"
	_, err := c.Send(ctx, e)
	if !errors.Is(err, ErrTemporary) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Send cancelled at RCPT: %v, want ErrTemporary and context.Canceled", err)
	}
	if idle, open := poolState(c); idle != 0 || open != 0 {
		t.Errorf("after the cancel: %d sessions idle, %d open; want the session closed", idle, open)
	}
	close(release)
	mustSend(t, c, numbered(t, 3))
	if n := s.Connections(); n != 2 {
		t.Errorf("%d connections, want a new one after the cancelled session", n)
	}
	if count := byMessageID(t, s); count["<notice-2@tidings.example>"] != 0 || len(count) != 2 {
		t.Errorf("messages by id: %v, want 1 and 3 only", count)
	}
}

func TestPoolCloseEndsSessionsAndWaiters(t *testing.T) {
	s, entered, release := blockingCatcher(t)
	cfg := configFor(t, s)
	cfg.PoolSize = 1
	c := mustChannel(t, cfg)
	slow := sendSlow(t, c, entered)
	waiting := make(chan error, 1)
	go func() {
		_, err := c.Send(context.Background(), numbered(t, 1))
		waiting <- err
	}()
	if !waitForWaiters(sendCtx(t), c, 1) {
		t.Fatal("the second Send never waited for the session")
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The waiting Send gives up (it never gets the session); the slow one
	// finishes on its session, which is then closed.
	select {
	case err := <-waiting:
		if !errors.Is(err, ErrTemporary) {
			t.Errorf("Send waiting at Close: %v, want ErrTemporary", err)
		}
	case <-sendCtx(t).Done():
		t.Fatal("Send waiting at Close still waits")
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("Send in flight at Close: %v", err)
	}
	waitOpen(t, s, 0)
	if _, err := c.Send(sendCtx(t), numbered(t, 2)); !errors.Is(err, ErrTemporary) {
		t.Errorf("Send after Close: %v, want ErrTemporary", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("catcher has %d messages, want only the one in flight", n)
	}
}

func TestPoolClosesIdleSessions(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	cfg := configFor(t, s)
	cfg.IdleTimeout = 100 * time.Millisecond
	c := mustChannel(t, cfg)
	mustSend(t, c, numbered(t, 1))
	waitOpen(t, s, 0) // the janitor ended it
	mustSend(t, c, numbered(t, 2))
	if n := s.Connections(); n != 2 {
		t.Errorf("%d connections, want a new one after the idle timeout", n)
	}
}

func TestPoolRetiresSessionAfterMaxMessages(t *testing.T) {
	s := catcher(t, mailcatch.Options{STARTTLS: true})
	cfg := configFor(t, s)
	cfg.MaxMessagesPerSession = 3
	c := mustChannel(t, cfg)
	for n := range 7 {
		mustSend(t, c, numbered(t, n))
	}
	var conns []int
	for _, m := range s.Messages() {
		conns = append(conns, m.Conn)
	}
	if want := "[1 1 1 2 2 2 3]"; fmt.Sprint(conns) != want {
		t.Errorf("messages went over connections %v, want %s", conns, want)
	}
	waitOpen(t, s, 1) // the retired sessions are closed
}

func TestPoolFailedDialFreesItsSlot(t *testing.T) {
	s := catcher(t, mailcatch.Options{}) // no STARTTLS
	cfg := configFor(t, s)
	cfg.PoolSize = 1
	c := mustChannel(t, cfg)
	for range 3 {
		if _, err := c.Send(sendCtx(t), eobEmail(t)); !errors.Is(err, ErrNoTLS) {
			t.Fatalf("Send: %v, want ErrNoTLS every time", err)
		}
	}
	waitOpen(t, s, 0)
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("catcher received %d messages", n)
	}
}

// BenchmarkSend compares a session per message (the channel before the
// pool, kept as MaxMessagesPerSession 1) with pooled sessions, against the
// in-process catcher over STARTTLS, with as many senders as the pool holds.
func BenchmarkSend(b *testing.B) {
	for _, bb := range []struct {
		name        string
		perSession  int
		parallelism int
	}{
		{"session-per-message", 1, 4},
		{"pooled", DefaultMessagesPerSession, 4},
	} {
		b.Run(bb.name, func(b *testing.B) {
			s, err := mailcatch.Start(mailcatch.Options{STARTTLS: true})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			cfg := configFor(b, s)
			cfg.PoolSize = bb.parallelism
			cfg.MaxMessagesPerSession = bb.perSession
			c, err := NewEmailChannel(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			e := eobEmail(b)
			b.SetParallelism(bb.parallelism) // × GOMAXPROCS senders
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Send(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(s.Connections())/float64(b.N), "conns/msg")
		})
	}
}
