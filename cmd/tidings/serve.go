package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/config"
)

// serveWarmConns is how many Postgres connections serve keeps open while
// it is quiet; under load it used about five.
const serveWarmConns = 8

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("serve", "Runs the HTTP API: POST /fhir/r4/notify/{tenant}/{subscription}, the /v1 API,\n/healthz, /readyz and /metrics. Listens on TIDINGS_LISTEN_ADDR, and answers\n/healthz, /readyz and /metrics on TIDINGS_HEALTH_ADDR too when that is set.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, err := openFromEnv(ctx, config.RoleServe, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	if a.cfg.SMTPHost != "" {
		// The portal mails its one-time codes through the relay the worker uses.
		if a.codeMail, err = emailChannel(a.cfg, a.metrics); err != nil {
			return err
		}
		defer a.codeMail.Close()
	} else {
		a.log.Warn("TIDINGS_SMTP_HOST is not set: the portal cannot mail one-time codes, so tenants that ask for one cannot be served")
	}
	pol, err := a.tenantPolicies(ctx)
	if err != nil {
		return err
	}
	h, err := a.handler(pol)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.ListenAddr)
	if err != nil {
		return err
	}
	if a.cfg.HealthAddr != "" {
		// Probes answered here do not wait behind the connection bound.
		hln, err := net.Listen("tcp", a.cfg.HealthAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("TIDINGS_HEALTH_ADDR: %w", err)
		}
		defer a.serveHealth(ctx, hln)()
	}
	// Postgres connections ready before the first burst, and kept while
	// serve is quiet (store.Warm): intake's group commit runs two commits
	// at once, and requests read beside them.
	go a.store.KeepWarm(ctx, serveWarmConns, time.Minute)
	a.log.Info("serving", "addr", ln.Addr().String(), "policy_revision", pol.Default.Revision(), "max_connections", a.cfg.Connections())
	if err := api.Serve(ctx, api.LimitConnections(ln, a.cfg.Connections()), h, a.log); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
