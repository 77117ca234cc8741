package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// eobLoad is what one end-to-end measurement does.
type eobLoad struct {
	n, clients  int
	rate        float64 // > 0: open loop at this arrival rate
	prefill     int
	patients    int    // notifications go to this many patients in turn
	prefillVia  string // prefillSQL or prefillIntake
	warmup      int    // prefillSQL: notifications sent for real
	baseline    time.Duration
	stall       time.Duration
	settings    serviceSettings
	eob         []byte // the published EOB to copy
	say         func(string, ...any)
	prefillRate float64 // the rate limit during the prefill: lifted
}

// repResult is one measurement on a fresh stack. Its numbers are what the
// report prints and what the median of several takes.
type repResult struct {
	Servers string // PostgreSQL and Redis versions

	Base baselines

	Prefill prefillResult

	Accepted  int // notifications answered 2xx in the window
	Throttled int
	Failed    int
	FirstErr  string

	IntakeTime         time.Duration // first POST to the last 2xx
	IntakeRate         float64
	P50, P90, P99, Max time.Duration
	// P99Tenths is the intake p99 of each tenth of the notifications, in
	// the order their latency began.
	P99Tenths [10]time.Duration

	Mails     int           // delivered in the window: one per accepted notification
	E2ETime   time.Duration // first POST to the last mail accepted
	E2ERate   float64
	Tenths    [10]float64 // notices/s in each tenth of the mails
	MailBytes int64       // one Tidings mail on average

	Unsettled int // tasks still queued a minute after the last mail

	Costs pgCosts

	RSSServe, RSSWorker int64
	// EndServe and EndWorker are the resident sets split at the end of
	// the window (the last mail), read once, outside it.
	EndServe, EndWorker residentSplit
	// NiceServe and NiceWorker are the nice values of each process's
	// threads at the end of the window.
	NiceServe, NiceWorker niceSpan

	CPUServe, CPUWorker, CPUPostgres, CPURedis, CPUSelf time.Duration
	// SysServe … SysSelf are the parts of those in the kernel (system time).
	SysServe, SysWorker, SysPostgres, SysRedis, SysSelf time.Duration

	After afterRun
}

// runEOBRep measures once, on a stack of its own that it stops.
func runEOBRep(ctx context.Context, o eobLoad) (r repResult, err error) {
	first := o.settings
	if o.prefill > 0 {
		first = serviceSettings{RatePerSecond: o.prefillRate, Concurrency: o.settings.Concurrency, WorkerNice: o.settings.WorkerNice}
	}
	s, err := startProcStack(ctx, first, o.say)
	if err != nil {
		return r, err
	}
	defer s.Close()
	notes, err := newEOBNotifications(o.eob, s.BaseURL+"/fhir/r4/Subscription/"+loadSubscription, o.patients)
	if err != nil {
		return r, fmt.Errorf("-eob: %w", err)
	}
	if err := s.putContacts(ctx, notes.Patients, o.clients); err != nil {
		return r, err
	}
	if r.Servers, err = s.versions(ctx); err != nil {
		return r, err
	}

	if o.prefill > 0 {
		if r.Prefill, err = prefill(ctx, s, o, notes); err != nil {
			return r, fmt.Errorf("prefill: %w", err)
		}
	}

	o.say("baselines: postgres, smtp reusing connections, smtp one connection each (%s each) …", o.baseline)
	if r.Base, err = measureBaselines(ctx, s, o.clients, o.baseline); err != nil {
		return r, err
	}
	if _, err := s.quiet(ctx, time.Minute); err != nil {
		return r, err
	}
	// A backend that commits twice within a second reports its counts up to
	// ten seconds later: let what serve and worker did before the window
	// (starting, the baselines' wait) be reported before it starts.
	if err := sleepCtx(ctx, time.Until(s.started.Add(statsSettle))); err != nil {
		return r, err
	}

	// The window: nothing below reads Postgres until the last mail.
	before, err := s.resetCosts(ctx)
	if err != nil {
		return r, err
	}
	mailBase, bytesBase, _ := s.Mail.Accepted()
	cpu0 := s.cpu()
	from := int(r.Prefill.Events)
	conns := o.clients
	if o.rate > 0 {
		conns = 0 // open loop: as many connections as requests in flight
	}
	p := notifier(s.BaseURL, loadSubscription, s.Secret, conns, func(i int) []byte { return notes.body("load-"+strconv.Itoa(i), i+1) })
	times := make([]time.Time, o.n)
	fewer := make(chan int, 1)
	waited := make(chan error, 1)
	postCtx, stopPosting := context.WithCancel(ctx)
	defer stopPosting()
	var mails int
	go func() {
		var err error
		mails, err = s.waitMails(ctx, mailBase, o.n, fewer, o.stall, times)
		if err != nil {
			stopPosting()
		}
		waited <- err
	}()
	if o.rate > 0 {
		o.say("posting %d notifications at %.0f/s (open loop) while the worker runs …", o.n, o.rate)
	} else {
		o.say("posting %d notifications from %d clients while the worker runs …", o.n, o.clients)
	}
	stopProgress := progressLines(o.say, s.postingProgress(p, o.n, mailBase))
	var res postOutcome
	if o.rate > 0 {
		res = p.openLoop(postCtx, o.rate, from, o.n)
	} else {
		res = p.closedLoop(postCtx, o.clients, from, o.n)
	}
	fewer <- res.accepted()
	err = <-waited
	stopProgress()
	if err != nil {
		return r, err
	}
	end := time.Now()
	if mails > 0 {
		end = times[mails-1]
	}
	cpu1 := s.cpu()
	r.EndServe, r.EndWorker = residentNow(s.Serve.PID()), residentNow(s.Worker.PID())
	r.NiceServe, r.NiceWorker = threadsNice(s.Serve.PID()), threadsNice(s.Worker.PID())
	if mails == 0 {
		return r, fmt.Errorf("no notification was accepted (first failure: %s)", res.firstErr)
	}
	o.say("the last mail is in; waiting for the worker to settle, then stopping serve and worker …")
	mailEnd, bytesEnd, _ := s.Mail.Accepted()
	r.MailBytes = (bytesEnd - bytesBase) / int64(max(1, mailEnd-mailBase))
	r.Accepted, r.Throttled, r.Failed, r.FirstErr = res.accepted(), res.throttled, res.failures(), res.firstErr
	r.IntakeTime = res.lastOK.Sub(res.start)
	r.IntakeRate = float64(res.accepted()) / r.IntakeTime.Seconds()
	r.P50, r.P90, r.P99, r.Max = pctOf(res.lat, 0.50), pctOf(res.lat, 0.90), pctOf(res.lat, 0.99), res.lat[len(res.lat)-1].Round(10*time.Microsecond)
	r.P99Tenths = res.p99Tenths
	r.Mails = mails
	r.E2ETime = end.Sub(res.start)
	r.E2ERate = float64(mails) / r.E2ETime.Seconds()
	r.Tenths = tenths(res.start, times[:mails])
	serve, worker, pg, rd, self := cpu1.serve.minus(cpu0.serve), cpu1.worker.minus(cpu0.worker),
		cpu1.postgres.minus(cpu0.postgres), cpu1.redis.minus(cpu0.redis), cpu1.self.minus(cpu0.self)
	r.CPUServe, r.CPUWorker, r.CPUPostgres, r.CPURedis, r.CPUSelf = serve.total(), worker.total(), pg.total(), rd.total(), self.total()
	r.SysServe, r.SysWorker, r.SysPostgres, r.SysRedis, r.SysSelf = serve.sys, worker.sys, pg.sys, rd.sys, self.sys

	if r.Unsettled, err = s.quiet(ctx, time.Minute); err != nil {
		return r, err
	}
	r.RSSServe, r.RSSWorker = peakRSS(s.Serve.PID()), peakRSS(s.Worker.PID())
	if err := s.stopServices(); err != nil {
		return r, err
	}
	if r.Costs, err = s.costs(ctx, before); err != nil {
		return r, err
	}
	if r.After, err = s.afterRun(ctx, before.Writes); err != nil {
		return r, err
	}
	return r, nil
}

// tenths is the delivery rate in each tenth of the mails, the first tenth
// timed from start (so it holds the pipeline filling up).
func tenths(start time.Time, times []time.Time) (out [10]float64) {
	prevIdx, prevAt := -1, start
	for k := 1; k <= 10; k++ {
		idx := (k*len(times)+9)/10 - 1
		if idx <= prevIdx {
			continue
		}
		if d := times[idx].Sub(prevAt); d > 0 {
			out[k-1] = float64(idx-prevIdx) / d.Seconds()
		}
		prevIdx, prevAt = idx, times[idx]
	}
	return out
}

// waitMails waits until want mails have arrived at the catcher after the
// first base, and records in times when each did. It wakes on each message
// (no polling). want may come down through fewer once the posting knows how
// many notifications were accepted. It fails when no mail comes for stall,
// when serve or worker exits, or when ctx ends.
func (s *procStack) waitMails(ctx context.Context, base, want int, fewer <-chan int, stall time.Duration, times []time.Time) (int, error) {
	died := s.died()
	timer := time.NewTimer(stall)
	defer timer.Stop()
	seen := 0
	for {
		n, _, next := s.Mail.Accepted()
		if got := n - base; got > seen {
			now := time.Now()
			for k := seen; k < min(got, len(times)); k++ {
				times[k] = now
			}
			seen = got
			timer.Reset(stall)
		}
		if seen >= want {
			return want, nil
		}
		select {
		case <-next:
		case w := <-fewer:
			want, fewer = w, nil
		case <-timer.C:
			return seen, fmt.Errorf("no mail for %s: %d of %d arrived%s", stall, seen, want, s.logTails())
		case <-died:
			return seen, s.exited()
		case <-ctx.Done():
			return seen, ctx.Err()
		}
	}
}

// postingProgress is the progress line of posting n notifications with p
// while the catcher counts the mails after mailBase.
func (s *procStack) postingProgress(p *poster, n, mailBase int) func() string {
	return func() string {
		m, _, _ := s.Mail.Accepted()
		return fmt.Sprintf("%d of %d notifications accepted, %d mails", p.accepted.Load(), n, m-mailBase)
	}
}

// cpuTimes are CPU times of the parts of the stack at one moment.
type cpuTimes struct{ serve, worker, postgres, redis, self cpuUse }

func (s *procStack) cpu() cpuTimes {
	return cpuTimes{serve: procCPU(s.Serve.PID()), worker: procCPU(s.Worker.PID()),
		postgres: treeCPU(s.PG.PID()), redis: treeCPU(s.Redis.PID()), self: selfCPU()}
}

// versions names the servers' versions and settings.
func (s *procStack) versions(ctx context.Context) (string, error) {
	var pg string
	if err := s.stats.QueryRow(ctx, `SHOW server_version`).Scan(&pg); err != nil {
		return "", err
	}
	rc := redis.NewClient(&redis.Options{Addr: s.Redis.Addr})
	defer rc.Close()
	return fmt.Sprintf("PostgreSQL %s (fsync, synchronous_commit and full_page_writes off, as tidings dev runs it; pg_stat_statements on), Redis %s (appendonly yes)",
		pg, redisInfo(ctx, rc, "server")["redis_version"]), nil
}
