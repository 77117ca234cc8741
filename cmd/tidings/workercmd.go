package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/worker"
)

func runWorker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("worker", "Runs the Asynq worker that turns events into notices and delivers them,\nthe reconciler that enqueues what the outbox holds, and the chainer that links\naudit rows into each tenant's signed chain.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, err := openFromEnv(ctx, config.RoleWorker, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	email, err := emailChannel(a.cfg)
	if err != nil {
		return err
	}
	stop, err := a.startWorker(ctx, email, "")
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}

// startWorker starts the Asynq server, the reconciler, the monitor, the
// scheduler and the audit chainer; stop waits for them all.
func (a *app) startWorker(ctx context.Context, email worker.EmailSender, placeholderDomain string) (stop func(), err error) {
	pol, err := a.policyEngine(ctx)
	if err != nil {
		return nil, err
	}
	proc, err := a.processor(pol, email, placeholderDomain)
	if err != nil {
		return nil, err
	}
	chainer, err := a.chainer()
	if err != nil {
		return nil, err
	}
	fetcher := &intake.Fetcher{Service: a.intake(), Store: a.store, Sources: newSourceReaders(a.store, a.log, a.cfg.AllowPrivateSources), Log: a.log}
	proc.Fetcher = fetcher
	srv, mux := worker.NewServer(a.redis, worker.ServerConfig{Concurrency: a.cfg.Concurrency, Log: a.log}, proc)
	if err := srv.Start(mux); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	rec := &worker.Reconciler{Store: a.store, Queue: a.client, Log: a.log, Interval: a.cfg.ReconcileEvery, LostAfter: a.cfg.WakeSlack}
	mon := &worker.Monitor{Fetcher: fetcher, Log: a.log, Interval: a.cfg.MonitorEvery, Settle: a.cfg.GapSettle}
	sched := &worker.Scheduler{Store: a.store, Runs: proc.Runs, Log: a.log, Interval: a.cfg.ScheduleEvery, Slack: a.cfg.WakeSlack}
	monDone, schedDone, chainDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() { defer close(done); rec.Run(rctx) }()
	go func() { defer close(monDone); mon.Run(rctx) }()
	go func() { defer close(schedDone); sched.Run(rctx) }()
	go func() { defer close(chainDone); chainer.Run(rctx) }()
	a.log.Info("worker started", "concurrency", a.cfg.Concurrency, "policy_revision", pol.Revision(), "smtp_tls_enforced", email.Security().TLSEnforced)
	return func() {
		cancel()
		<-done
		<-monDone
		<-schedDone
		<-chainDone
		srv.Shutdown()
	}, nil
}
