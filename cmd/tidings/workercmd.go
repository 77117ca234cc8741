package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/worker"
)

func runWorker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("worker", "Runs the Asynq worker that turns events into notices and delivers them,\nthe reconciler that enqueues what the outbox holds, the chainer that links\naudit rows into each tenant's signed chain, and the webhook dispatcher.\nAnswers /healthz, /readyz and /metrics on TIDINGS_WORKER_ADDR.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, email, err := openWorker(ctx, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	defer email.Close() // after the worker stopped: QUIT to the relay
	if ownsProcess && a.cfg.WorkerNice > 0 {
		if nice, threads, err := lowerPriority(a.cfg.WorkerNice); err != nil {
			a.log.Warn("worker priority not lowered (TIDINGS_WORKER_NICE)", "err", err)
		} else {
			a.log.Info("worker priority lowered (TIDINGS_WORKER_NICE)", "nice", nice, "threads", threads)
		}
	}
	ln, err := net.Listen("tcp", a.cfg.WorkerAddr)
	if err != nil {
		return fmt.Errorf("TIDINGS_WORKER_ADDR: %w", err)
	}
	stopHealth := a.serveHealth(ctx, ln)
	defer stopHealth() // last: /healthz answers while the worker drains
	stop, err := a.startWorker(ctx, email, "")
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}

// serveHealth answers /healthz, /readyz and /metrics on ln (the worker's
// address, or serve's second one) until stop is called.
func (a *app) serveHealth(ctx context.Context, ln net.Listener) (stop func()) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := api.Serve(sctx, ln, a.healthHandler(), a.log); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("health server", "err", err)
		}
	}()
	a.log.Info("health and metrics", "addr", ln.Addr().String())
	return func() { cancel(); <-done }
}

// openWorker opens the shared parts with the worker's configuration, and
// its SMTP channel; the caller closes both.
func openWorker(ctx context.Context, stderr io.Writer) (*app, *notify.EmailChannel, error) {
	a, err := openFromEnv(ctx, config.RoleWorker, stderr)
	if err != nil {
		return nil, nil, err
	}
	email, err := emailChannel(a.cfg, a.metrics)
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, email, nil
}

// startWorker starts the event claimer, the Asynq server (run wake-ups,
// fetches), the reconciler, the gap monitor, the scheduler, the audit
// chainer and the webhook dispatcher; stop waits for all of them.
func (a *app) startWorker(ctx context.Context, email delivery.Channel, placeholderDomain string) (stop func(), err error) {
	pol, err := a.tenantPolicies(ctx)
	if err != nil {
		return nil, err
	}
	fetcher := a.fetcher()
	sender, err := a.sender(pol, email, fetcher, placeholderDomain)
	if err != nil {
		return nil, err
	}
	chainer, err := a.chainer()
	if err != nil {
		return nil, err
	}
	hooks, err := a.webhooks()
	if err != nil {
		return nil, err
	}
	journeys := a.journeys()
	// The claimer processes DefaultClaimWorkers batches at once; together
	// they run as many events at a time as the concurrency says, so that
	// the pool (sized for it, see openApp) holds their connections.
	journeys.Sender, journeys.Parallel = sender, max(1, a.cfg.Concurrency/worker.DefaultClaimWorkers)
	handlers := &worker.Handlers{Journeys: journeys, Fetcher: fetcher, Keys: a.keys, Log: a.log}
	srv, mux := worker.NewServer(a.redis, worker.ServerConfig{Concurrency: a.cfg.Concurrency, Log: a.log}, handlers)
	if err := srv.Start(mux); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, loop := range []interface{ Run(context.Context) }{
		&worker.Claimer{Store: a.store, Journeys: journeys, Log: a.log, Lease: a.cfg.ClaimLease, Metrics: a.metrics, Workers: worker.DefaultClaimWorkers},
		&worker.Reconciler{Store: a.store, Queue: a.client, Log: a.log, Interval: a.cfg.ReconcileEvery, Deliveries: a.store, Fetches: a.store},
		&worker.Monitor{Fetcher: fetcher, Log: a.log, Interval: a.cfg.MonitorEvery, Settle: a.cfg.GapSettle},
		&worker.Scheduler{Store: a.store, Runs: journeys, Log: a.log, Interval: a.cfg.ScheduleEvery, Slack: a.cfg.WakeSlack},
		chainer,
		hooks,
	} {
		wg.Add(1)
		go func() { defer wg.Done(); loop.Run(rctx) }()
	}
	// Queue depth and chain lag are the worker's business: sampled on its
	// /metrics, not serve's.
	a.metrics.SampleQueues(worker.QueueNames(), a.client.QueueStats)
	a.metrics.SampleAuditLag(a.store.AuditChainLag)
	a.log.Info("worker started", "concurrency", a.cfg.Concurrency, "policy_revision", pol.Default.Revision(), "smtp_tls_enforced", email.Security().TLSEnforced)
	return func() {
		cancel()
		wg.Wait()
		srv.Shutdown()
	}, nil
}
