package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/console"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir/client"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/logging"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/portal"
	"github.com/tidings-health/tidings/rego"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/valueset"
	"github.com/tidings-health/tidings/webhook"
	"github.com/tidings-health/tidings/worker"
)

// loadConfig reads and validates the environment for a role, reporting every problem at once.
func loadConfig(role config.Role) (config.Config, error) {
	cfg, problems := config.FromEnv(os.LookupEnv)
	problems = append(problems, cfg.Validate(role)...)
	if len(problems) > 0 {
		return cfg, fmt.Errorf("configuration is not usable:\n  - %s", strings.Join(problems, "\n  - "))
	}
	return cfg, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	return logging.New(w, cfg.LogLevel, cfg.LogFormat)
}

// app holds the parts both processes share.
type app struct {
	cfg     config.Config
	log     *slog.Logger
	keys    *seal.Keyring
	store   *store.Store
	redis   asynq.RedisClientOpt
	client  *worker.Client
	pol     *policy.Engine  // compiled and prepared once per process
	tenants *policy.Tenants // each tenant's own revision, or pol
	unwatch func()          // stops watching the tenants' revisions
	clock   journey.Clock   // nil: the system clock; tests move their own
	apiKeys *access.Service // one per process, so a revocation clears its cache
	// codeMail sends the portal's one-time codes (serve); nil: none can be sent.
	codeMail *notify.EmailChannel
	metrics  *metrics.Metrics
	// checkAPI, in tests, wraps the API to check each of its answers
	// against the OpenAPI document; nil: the API as built.
	checkAPI func(http.Handler) http.Handler
}

// policyEngine loads the policies the first time it is asked: embedded, or
// from TIDINGS_POLICY_DIR or a (signed) TIDINGS_POLICY_BUNDLE, which are then
// watched for changes and reloaded on SIGHUP; a broken change is rejected and
// the last good revision keeps deciding.
func (a *app) policyEngine(ctx context.Context) (*policy.Engine, error) {
	if a.pol != nil {
		return a.pol, nil
	}
	src := policy.FromEmbedded()
	switch {
	case a.cfg.PolicyDir != "":
		src = policy.FromDir(a.cfg.PolicyDir)
	case a.cfg.PolicyBundle != "":
		var key *policy.BundleKey
		if a.cfg.PolicyPublicKey != "" {
			pem, err := os.ReadFile(a.cfg.PolicyPublicKey)
			if err != nil {
				return nil, fmt.Errorf("TIDINGS_POLICY_PUBLIC_KEY: %w", err)
			}
			key = &policy.BundleKey{PEM: pem}
		} else {
			a.log.Warn("TIDINGS_POLICY_BUNDLE is used without TIDINGS_POLICY_PUBLIC_KEY: its signature is not checked")
		}
		var err error
		if src, err = policy.FromBundle(a.cfg.PolicyBundle, key); err != nil {
			return nil, err
		}
	}
	// Candidate dry runs (POST /v1/policy/evaluate) run in a child: this
	// binary's hidden "policy sandbox" command, under a time and memory limit.
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("policy sandbox: %w", err)
	}
	pol, err := policy.Open(ctx, src, policy.WithLogger(a.log.With("component", "policy")),
		policy.WithSandbox(policy.Sandbox{Path: exe, Args: []string{"policy", "sandbox"}}))
	if err != nil {
		return nil, err
	}
	a.pol = pol
	if a.cfg.PolicyDir != "" || a.cfg.PolicyBundle != "" {
		go pol.Watch(ctx, a.cfg.PolicyWatch)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := pol.Reload(ctx); err != nil {
						a.log.Error("policy reload on SIGHUP rejected; the last good revision stays", "err", err)
					} else {
						a.log.Info("policy reloaded on SIGHUP", "revision", pol.Revision())
					}
				}
			}
		}()
	}
	return pol, nil
}

// tenantPolicies decides for each tenant with its own active revision,
// loaded from the database, or with policyEngine's rules when it has none.
// The revisions are reloaded when another process changes one: at once on
// a notification, and every two seconds in case one was missed.
func (a *app) tenantPolicies(ctx context.Context) (*policy.Tenants, error) {
	if a.tenants != nil {
		return a.tenants, nil
	}
	pol, err := a.policyEngine(ctx)
	if err != nil {
		return nil, err
	}
	t := &policy.Tenants{Default: pol, Store: a.store, Log: a.log.With("component", "policy")}
	if err := t.Sync(ctx); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); t.Watch(wctx, 2*time.Second, a.store.Listen(wctx, store.PolicyChannel)) }()
	a.tenants, a.unwatch = t, func() { cancel(); <-done }
	return t, nil
}

// openFromEnv reads the configuration for a role and opens the shared parts;
// what it logs goes to logOut.
func openFromEnv(ctx context.Context, role config.Role, logOut io.Writer) (*app, error) {
	cfg, err := loadConfig(role)
	if err != nil {
		return nil, err
	}
	name := "tidings"
	switch role {
	case config.RoleServe:
		name = "tidings-serve"
	case config.RoleWorker:
		name = "tidings-worker"
	}
	return openApp(ctx, cfg, newLogger(cfg, logOut), name)
}

// openApp opens the shared parts; name is the application_name its
// Postgres connections show in pg_stat_activity (unless
// TIDINGS_DATABASE_URL sets one).
func openApp(ctx context.Context, cfg config.Config, log *slog.Logger, name string) (*app, error) {
	keys, err := cfg.Keyring()
	if err != nil {
		return nil, err
	}
	// A worker task may hold two connections (an appointment's lock and its
	// queries): keep the pool well above twice the concurrency.
	st, err := store.Open(ctx, cfg.DatabaseURL, keys, store.Options{MaxOpenConns: max(30, 2*cfg.Concurrency+10), PendingGrace: cfg.PendingGrace, ApplicationName: name})
	if err != nil {
		return nil, err
	}
	// go-redis (under Asynq too) logs connection trouble on its own; route it
	// through our JSON logger. Its lines name addresses, never payloads.
	redis.SetLogger(redisLog{log.With("component", "redis")})
	ropt := worker.RedisOpt(cfg.RedisAddr, cfg.RedisPassword, cfg.RedisDB)
	return &app{cfg: cfg, log: log, keys: keys, store: st, redis: ropt, client: worker.NewClient(ropt, keys), metrics: metrics.New()}, nil
}

func (a *app) Close() {
	if a.unwatch != nil {
		a.unwatch()
	}
	a.client.Close()
	a.store.Close()
}

func (a *app) pingRedis(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: a.redis.Addr, Password: a.redis.Password, DB: a.redis.DB})
	defer c.Close()
	return c.Ping(ctx).Err()
}

// checks are what both processes need to be ready: Postgres and Redis.
func (a *app) checks() []api.Check {
	return []api.Check{
		{Name: "postgres", Ping: a.store.Ping},
		{Name: "redis", Ping: a.pingRedis},
	}
}

// handler builds the HTTP API.
func (a *app) handler(pol *policy.Tenants) (http.Handler, error) {
	svc := a.intake()
	checks := append(a.checks(), api.Check{Name: "policy", Ping: func(context.Context) error {
		if pol == nil || pol.Default.Revision() == "" {
			return errors.New("no policy loaded")
		}
		return nil
	}})
	subscriber := &intake.Subscriber{Store: a.store, Sources: a.sourceReaders(), NotifyBaseURL: a.cfg.APIBaseURL}
	var polAdmin api.PolicyAdmin
	if pol != nil {
		polAdmin = pol
	}
	linkServer, err := a.linkServer()
	if err != nil {
		return nil, err
	}
	h := api.New(api.Config{Links: linkServer,
		Intake: svc, Contacts: delivery.Contacts{Store: a.store}, Admin: a.store, Subscriber: subscriber, Policy: polAdmin, Checks: checks, Keys: a.apiKeyService(), Log: a.log,
		Workflows: journey.Workflows{Store: a.store, Channels: a.configuredChannels()}, Journeys: a.journeys(), Portal: a.portal(), PortalSettings: a.store, Disclosures: a.store,
		Bounces:      delivery.Bounces{Store: a.store, SuppressAfter: a.cfg.BounceSuppressAfter},
		Webhooks:     &webhook.Admin{Store: a.store, AllowPrivate: a.cfg.WebhooksAllowPrivate},
		MaxBodyBytes: a.cfg.MaxBodyBytes, MaxInFlight: a.cfg.MaxInFlight, RatePerSec: a.cfg.RatePerSecond, RateBurst: a.cfg.RateBurst, TrustedProxies: a.cfg.TrustedProxies,
		Metrics: a.metrics, MetricsToken: a.cfg.MetricsToken, Console: a.console(pol),
		SMS: a.smsCallbacks(),
	})
	if a.checkAPI != nil {
		return a.checkAPI(h), nil
	}
	return h, nil
}

// console is the web console under /console, on the services the API uses.
func (a *app) console(pol *policy.Tenants) *console.Server {
	cfg := console.Config{Keys: a.apiKeyService(), Subscriptions: a.store, AuditLog: a.store, Disclosures: a.store,
		Workflows:     journey.Workflows{Store: a.store, Channels: a.configuredChannels()},
		SecureCookies: strings.HasPrefix(a.cfg.PublicBaseURL, "https://"), Log: a.log.With("component", "console")}
	if pol != nil {
		cfg.Policy = pol
	}
	if v, err := a.chainVerifier(); err != nil {
		a.log.Warn("the console cannot verify the audit chain", "err", err)
	} else if v != nil {
		cfg.Chain = v
	}
	return console.New(cfg)
}

// chainVerifier checks tenants' audit chains as tidings audit verify does,
// when this process has the chain's keys and the checkpoints' signing key;
// nil when it has neither.
func (a *app) chainVerifier() (*audit.Verifier, error) {
	if a.cfg.AuditKeys == "" && a.cfg.AuditSigningKey == "" {
		return nil, nil
	}
	keys, err := a.cfg.AuditKeyring()
	if err != nil {
		return nil, err
	}
	pub, err := checkpointPublicKeys(a.cfg, "")
	if err != nil {
		return nil, err
	}
	return &audit.Verifier{Store: a.store, Keys: keys, PublicKeys: pub, CheckpointDir: a.cfg.AuditCheckpointDir}, nil
}

// webhooks fans the tenants' audit chains out to their webhook endpoints
// and sends what is due.
func (a *app) webhooks() (*webhook.Dispatcher, error) {
	schedule, err := a.cfg.WebhookSchedule()
	if err != nil {
		return nil, err
	}
	hc := client.PublicOnlyHTTPClient()
	if a.cfg.WebhooksAllowPrivate {
		hc = &http.Client{}
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &webhook.Dispatcher{Store: a.store, Client: hc, Schedule: schedule, Every: a.cfg.WebhookEvery,
		Log: a.log.With("component", "webhooks")}, nil
}

// portal is the notice pickup page the notices link to.
func (a *app) portal() *portal.Server {
	var mailer portal.Mailer
	if a.codeMail != nil {
		mailer = a.codeMail
	}
	return portal.New(portal.Config{Store: a.store, Events: a.journeys(), Mailer: mailer,
		TokenTTL: a.cfg.PortalTokenTTL, SessionTTL: a.cfg.PortalSessionTTL,
		SecureCookies: strings.HasPrefix(a.cfg.PublicBaseURL, "https://"), Log: a.log.With("component", "portal")})
}

// healthHandler builds the worker's /healthz, /readyz and /metrics.
func (a *app) healthHandler() http.Handler {
	return api.NewHealth(api.HealthConfig{Checks: a.checks(), Metrics: a.metrics, MetricsToken: a.cfg.MetricsToken, Log: a.log,
		RatePerSec: a.cfg.RatePerSecond, RateBurst: a.cfg.RateBurst})
}

// sourceReaders reads from tenants' FHIR sources.
func (a *app) sourceReaders() *sourceReaders {
	return newSourceReaders(a.store, a.log, a.cfg.AllowPrivateSources, a.metrics)
}

// fetcher turns fetches and gaps into events.
func (a *app) fetcher() *intake.Fetcher {
	return &intake.Fetcher{Service: a.intake(), Store: a.store, Sources: a.sourceReaders(), Log: a.log, Metrics: a.metrics}
}

// chainer links committed audit rows into each tenant's chain and writes
// the signed checkpoints.
func (a *app) chainer() (*audit.Chainer, error) {
	keys, err := a.cfg.AuditKeyring()
	if err != nil {
		return nil, err
	}
	signer, err := a.cfg.AuditSigner()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(a.cfg.AuditCheckpointDir, 0o750); err != nil {
		return nil, fmt.Errorf("TIDINGS_AUDIT_CHECKPOINT_DIR: %w", err)
	}
	return &audit.Chainer{Store: a.store, Keys: keys, Signer: signer, CheckpointDir: a.cfg.AuditCheckpointDir,
		Log: a.log.With("component", "audit"), Interval: a.cfg.AuditChainEvery,
		CheckpointRows: a.cfg.AuditCheckpointRows, CheckpointEvery: a.cfg.AuditCheckpointEvery}, nil
}

// emailChannel builds the SMTP channel from configuration.
func emailChannel(cfg config.Config, m *metrics.Metrics) (*notify.EmailChannel, error) {
	roots, err := cfg.SMTPRoots()
	if err != nil {
		return nil, err
	}
	dkim, err := dkimKeys(cfg)
	if err != nil {
		return nil, err
	}
	signers, err := messageSigners(cfg)
	if err != nil {
		return nil, err
	}
	return notify.NewEmailChannel(notify.SMTPConfig{
		Host: cfg.SMTPHost, Port: cfg.SMTPPort, Username: cfg.SMTPUsername, Password: cfg.SMTPPassword,
		From: cfg.SMTPFrom, RequireTLS: cfg.SMTPRequireTLS, ImplicitTLS: cfg.SMTPImplicitTLS, RootCAs: roots,
		PoolSize: cfg.SMTPSessions(), DKIM: dkim, Signers: signers, Metrics: m,
	})
}

// dkimKeys loads the DKIM signing keys TIDINGS_DKIM_KEYS names.
func dkimKeys(cfg config.Config) ([]notify.DKIMKey, error) {
	specs, err := cfg.DKIMKeySpecs()
	if err != nil {
		return nil, err
	}
	var keys []notify.DKIMKey
	for _, sp := range specs {
		k, err := notify.LoadDKIMKey(sp.Tenant, sp.Domain, sp.Selector, sp.File)
		if err != nil {
			return nil, fmt.Errorf("TIDINGS_DKIM_KEYS: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// sender builds the delivery service that carries out runs' send steps.
func (a *app) sender(pol *policy.Tenants, email delivery.Channel, refs delivery.References, placeholderDomain string) (*delivery.Service, error) {
	sets, err := valueset.Load(rego.FS)
	if err != nil {
		return nil, err
	}
	channels := map[string]delivery.Channel{delivery.ChannelEmail: email}
	sms, err := smsChannel(a.cfg)
	if err != nil {
		return nil, err
	}
	if sms != nil {
		channels[delivery.ChannelSMS] = sms
	}
	mailLinks, err := a.linkMailer()
	if err != nil {
		return nil, err
	}
	return &delivery.Service{Links: mailLinks, Store: a.store, Policy: pol, Channels: channels,
		References: refs, ValueSets: sets, PublicBaseURL: a.cfg.PublicBaseURL, PlaceholderDomain: placeholderDomain, Log: a.log,
		Metrics: a.metrics}, nil
}

// apiKeyService checks and manages the /v1 API keys.
func (a *app) apiKeyService() *access.Service {
	if a.apiKeys == nil {
		a.apiKeys = &access.Service{Store: a.store}
	}
	return a.apiKeys
}

// journeys drives workflow runs on the shared parts; without a sender (the
// API) new runs are queued for the worker.
func (a *app) journeys() *journey.Engine {
	clock := a.clock
	if clock == nil {
		clock = journey.SystemClock{}
	}
	return &journey.Engine{Store: a.store, Queue: a.client, Clock: clock, Horizon: a.cfg.WakeHorizon, Log: a.log}
}

type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, fmt.Sprintf(format, v...))
}

// intake is the notification intake service on the shared parts.
func (a *app) intake() *intake.Service {
	return &intake.Service{Store: a.store, Queue: a.client, Log: a.log}
}
