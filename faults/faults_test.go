package faults

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// account checks every notification of a run: each answered 2xx is stored;
// each stored one has a final notice; each sent notice went out exactly
// once. Notices whose delivery a crash left unknown (sent or not, nobody can
// tell) are counted, not failed: an operator resolves them. It returns how
// many were sent and how many are unknown.
func account(t *testing.T, s *stack, statuses []int) (sent, unknown int) {
	t.Helper()
	outs := s.outcomes(len(statuses))
	for i, o := range outs {
		code := statuses[i]
		switch {
		case code >= 200 && code < 300 && !o.stored:
			t.Errorf("fault-%d: answered %d but not stored", i, code)
			continue
		case !o.stored:
			continue // refused, and the FHIR server was told so
		}
		switch {
		case o.delivery == "unknown":
			unknown++
			if o.mails > 1 {
				t.Errorf("fault-%d: outcome unknown, yet %d mails", i, o.mails)
			}
			if o.msgID == "" {
				t.Errorf("fault-%d: outcome unknown and no Message-ID to look up in the relay's log", i)
			}
		case o.notice == "sent" && o.delivery == "sent":
			sent++
			if o.mails != 1 {
				t.Errorf("fault-%d: sent, %d mails captured", i, o.mails)
			}
		default:
			t.Errorf("fault-%d: notice %q, delivery %q, %d mails", i, o.notice, o.delivery, o.mails)
		}
	}
	return sent, unknown
}

// A worker stopped with SIGTERM in the middle of the load finishes what it
// is doing; the next one takes the rest. Nothing is lost or sent twice.
func TestWorkerSIGTERMMidLoad(t *testing.T) {
	s := newStack(t)
	const n = 300
	done := make(chan []int)
	go func() { done <- s.postAll(n, 8, s.notification) }()
	waitMails(t, s, n/4)
	s.worker.Stop(45 * time.Second) // SIGTERM, then the grace period
	s.startWorker()
	statuses := <-done
	s.settle(2 * time.Minute)
	sent, unknown := account(t, s, statuses)
	if sent != n || unknown != 0 {
		t.Errorf("%d sent, %d unknown of %d", sent, unknown, n)
	}
}

// Redis restarted empty in the middle of the load (no persistence): the
// events live in Postgres, so nothing answered 2xx is lost.
func TestRedisLostMidLoad(t *testing.T) {
	s := newStack(t)
	const n = 300
	done := make(chan []int)
	go func() { done <- s.postAll(n, 8, s.notification) }()
	waitMails(t, s, n/4)
	if err := s.redis.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	statuses := <-done
	s.settle(2 * time.Minute)
	sent, unknown := account(t, s, statuses)
	t.Logf("%d sent, %d unknown", sent, unknown)
	if sent+unknown != n {
		t.Errorf("%d sent, %d unknown of %d", sent, unknown, n)
	}
}

// Postgres restarted at once (pg_ctl restart -m immediate) in the middle of
// the load: a notification answered 2xx was committed; those that were not
// get an error the FHIR server retries, and every stored one goes out.
func TestPostgresImmediateRestartMidLoad(t *testing.T) {
	s := newStack(t)
	const n = 300
	done := make(chan []int)
	go func() { done <- s.postAll(n, 8, s.notification) }()
	waitMails(t, s, n/4)
	if err := s.pg.RestartImmediate(t.Context()); err != nil {
		t.Fatal(err)
	}
	statuses := <-done
	s.reconnect()
	s.settle(2 * time.Minute)
	sent, unknown := account(t, s, statuses)
	accepted := 0
	for _, c := range statuses {
		if c >= 200 && c < 300 {
			accepted++
		}
	}
	if accepted < n/2 || sent+unknown < accepted {
		t.Errorf("%d answered 2xx, %d sent, %d unknown of %d", accepted, sent, unknown, n)
	}
	t.Logf("%d of %d answered 2xx; %d sent, %d unknown", accepted, n, sent, unknown)
}

// The worker killed with SIGKILL twenty times while 1,000 notices go out
// (posted over about ten seconds, as a FHIR server sends them): none is
// lost, none is sent twice, and a notice whose delivery a kill interrupted
// after the relay may have taken it is marked unknown rather than retried.
func TestWorkerSIGKILLTwentyTimes(t *testing.T) {
	s := newStack(t)
	const n, kills = 1000, 20
	start := time.Now()
	done := make(chan []int)
	go func() { done <- s.postAll(n, 8, s.paced(100, s.notification)) }()
	for range kills {
		// Let the worker make some progress, then kill it at a moment that
		// falls anywhere in its work.
		mails, _, _ := s.mail.Accepted()
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if now, _, _ := s.mail.Accepted(); now > mails {
				break // it is working; when the work has run out, an idle worker is killed
			}
		}
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		if err := syscall.Kill(s.worker.PID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-s.worker.Done()
		s.startWorker()
	}
	statuses := <-done
	t.Logf("kills and load done after %v", time.Since(start).Round(time.Millisecond))
	s.settle(3 * time.Minute)
	t.Logf("settled after %v", time.Since(start).Round(time.Millisecond))
	sent, unknown := account(t, s, statuses)
	if sent+unknown != n {
		t.Errorf("%d sent, %d unknown of %d", sent, unknown, n)
	}
	t.Logf("%d kills: %d sent once, %d unknown, none twice", kills, sent, unknown)
}

// waitMails waits until the catcher holds at least n mails.
func waitMails(t *testing.T, s *stack, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if got, _, _ := s.mail.Accepted(); got >= n {
			return
		}
		if time.Now().After(deadline) {
			got, _, _ := s.mail.Accepted()
			t.Fatalf("%d mails after 2 minutes, want %d\n%s", got, n, s.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
