package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/workflow"
)

const (
	devTenant       = "dev"
	devSubscription = "dev-eob"
	// Reserved by RFC 2606: mail for it can only ever reach the local catcher.
	devPlaceholderDomain = "patients.invalid"
)

func newKey() string { return seal.NewRandomKey() }

// stack is a whole local Tidings: Postgres, Redis, a mail catcher, the API
// and the worker, in one process, in a temporary folder.
type stack struct {
	Dir        string
	MailDir    string
	BaseURL    string // the API
	WorkerURL  string // the worker's /healthz, /readyz and /metrics
	SecretFile string
	Secret     string
	Log        *slog.Logger
	LogFile    string
	// StartWorker starts the worker and the reconciler (wire does, unless DeferWorker).
	StartWorker func() error

	pg    *testenv.Postgres
	redis *testenv.Redis
	mail  *mailcatch.Server
	app   *app
	stops []func()
}

type stackOptions struct {
	MailDir        string
	Concurrency    int
	RatePerSecond  float64
	RateBurst      int
	ReconcileEvery time.Duration
	MonitorEvery   time.Duration
	GapSettle      time.Duration
	NoPlaceholder  bool          // no placeholder address for patients without email (tests)
	DeferWorker    bool          // do not start the worker; call stack.StartWorker
	Progress       io.Writer     // one line per step; nil for none
	Clock          journey.Clock // nil: the system clock (tests move theirs)
	WakeHorizon    time.Duration // 0: an hour; negative: only wake-ups already due go to Redis
	ScheduleEvery  time.Duration // 0: a second
	WakeSlack      time.Duration // 0: a minute
	NoWorkflows    bool          // do not install the built-in workflows
	WebhookRetries string        // TIDINGS_WEBHOOK_RETRIES
	DebugLog       bool          // TIDINGS_LOG_LEVEL=debug
	DKIMKeys       string        // TIDINGS_DKIM_KEYS
	SMIMEKeys      string        // TIDINGS_SMIME_KEYS
	OpenPGPKeys    string        // TIDINGS_OPENPGP_KEYS
	SMS            config.SMS    // TIDINGS_SMS_*: the SMS provider; zero: no SMS channel
	LogTo          io.Writer     // nil: a log file in the stack's folder
	// CheckAPI wraps the API's handler (tests check its answers against
	// the OpenAPI document); nil: none.
	CheckAPI func(http.Handler) http.Handler
}

func logLevel(debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func startStack(ctx context.Context, o stackOptions) (_ *stack, err error) {
	say := sayTo(o.Progress)
	dir, err := os.MkdirTemp("", "tidings-dev-")
	if err != nil {
		return nil, err
	}
	// Postgres runs as the postgres user when we are root: let it in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &stack{Dir: dir}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	logOut := o.LogTo
	if logOut == nil {
		s.LogFile = filepath.Join(dir, "tidings.log")
		f, ferr := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if ferr != nil {
			return nil, ferr
		}
		s.stops = append(s.stops, func() { f.Close() })
		logOut = f
	}

	say("starting PostgreSQL …")
	if s.pg, err = testenv.StartPostgres(ctx, dir); err != nil {
		return nil, err
	}
	if err = s.pg.CreateDatabase(ctx, "tidings", ""); err != nil {
		return nil, err
	}
	dbURL := s.pg.URL("tidings")
	say("applying migrations …")
	if err = migrations.Up(ctx, dbURL, nil); err != nil {
		return nil, err
	}
	say("starting Redis …")
	if s.redis, err = testenv.StartRedis(ctx, dir, testenv.RedisOptions{AppendOnly: true}); err != nil {
		return nil, err
	}
	s.MailDir = o.MailDir
	if s.MailDir == "" {
		s.MailDir = filepath.Join(dir, "mail")
	}
	if err = os.MkdirAll(s.MailDir, 0o755); err != nil {
		return nil, err
	}
	say("starting the mail catcher (STARTTLS, self-signed) …")
	if s.mail, err = mailcatch.Start(mailcatch.Options{Addr: "127.0.0.1:0", Dir: s.MailDir, STARTTLS: true}); err != nil {
		return nil, err
	}
	mailHost, mailPort, _ := net.SplitHostPort(s.mail.Addr())
	port, _ := strconv.Atoi(mailPort)
	err = s.wire(ctx, stackInfra{
		DBURL: dbURL, RedisAddr: s.redis.Addr,
		SMTP: notify.SMTPConfig{Host: mailHost, Port: port, RequireTLS: true, RootCAs: s.mail.CertPool()},
	}, o, logOut)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// stackInfra is what a stack runs on: a migrated database, a Redis, an SMTP relay.
type stackInfra struct {
	DBURL     string
	RedisAddr string
	RedisDB   int
	SMTP      notify.SMTPConfig
}

// wire starts the API and the worker on infra, with a dev tenant and subscription.
func (s *stack) wire(ctx context.Context, infra stackInfra, o stackOptions, logOut io.Writer) (err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	s.BaseURL = "http://" + ln.Addr().String()
	if o.Concurrency <= 0 {
		o.Concurrency = 10
	}
	if o.RatePerSecond <= 0 {
		o.RatePerSecond, o.RateBurst = 5000, 10000
	}
	if infra.SMTP.From == "" {
		infra.SMTP.From = "Tidings dev <notices@tidings.invalid>"
	}
	// Checkpoints go outside the database: into the stack's folder.
	auditDir := filepath.Join(s.Dir, "audit-checkpoints")
	if s.Dir == "" {
		if auditDir, err = os.MkdirTemp("", "tidings-audit-"); err != nil {
			return err
		}
		s.stops = append(s.stops, func() { os.RemoveAll(auditDir) })
	}
	cfg := config.Config{
		DatabaseURL: infra.DBURL, RedisAddr: infra.RedisAddr, RedisDB: infra.RedisDB,
		AuditKeys: "dev1:" + newKey(), AuditSigningKey: "devsign:" + newKey(), AuditCheckpointDir: auditDir,
		AuditChainEvery: time.Second, AuditCheckpointRows: 1000, AuditCheckpointEvery: 10 * time.Second,
		SealKeys: "dev1:" + newKey(), BlindIndexKey: newKey(),
		ListenAddr: ln.Addr().String(), WorkerAddr: "127.0.0.1:0", PublicBaseURL: s.BaseURL, APIBaseURL: s.BaseURL,
		AllowPrivateSources: true, // dev and tests run their FHIR servers on loopback
		RatePerSecond:       o.RatePerSecond, RateBurst: o.RateBurst, MaxBodyBytes: 1 << 20, MaxInFlight: api.DefaultMaxInFlight,
		LogLevel: logLevel(o.DebugLog), LogFormat: "json", Concurrency: o.Concurrency,
		ClaimLease: 2 * time.Minute, PendingGrace: 3 * time.Minute, ReconcileEvery: o.ReconcileEvery, MonitorEvery: o.MonitorEvery, GapSettle: o.GapSettle, SMTPHost: infra.SMTP.Host, SMTPPort: infra.SMTP.Port,
		ScheduleEvery: o.ScheduleEvery, WakeHorizon: o.WakeHorizon, WakeSlack: o.WakeSlack,
		SMTPFrom: infra.SMTP.From, SMTPRequireTLS: infra.SMTP.RequireTLS, DKIMKeys: o.DKIMKeys,
		SMIMEKeys: o.SMIMEKeys, OpenPGPKeys: o.OpenPGPKeys,
		DisclosureRetentionYears: config.MinDisclosureRetentionYears,
		// Webhook endpoints of dev and tests listen on loopback.
		WebhooksAllowPrivate: true, WebhookEvery: 200 * time.Millisecond, WebhookRetries: o.WebhookRetries,
	}
	cfg.SMS = o.SMS
	if cfg.ReconcileEvery <= 0 {
		cfg.ReconcileEvery = time.Second
	}
	if cfg.ScheduleEvery <= 0 {
		cfg.ScheduleEvery = time.Second
	}
	if problems := cfg.Validate(config.RoleWorker | config.RoleServe); len(problems) > 0 {
		return fmt.Errorf("dev configuration: %v", problems)
	}
	s.Log = newLogger(cfg, logOut)
	if s.app, err = openApp(ctx, cfg, s.Log, "tidings"); err != nil {
		return err
	}
	s.app.clock = o.Clock
	s.app.checkAPI = o.CheckAPI
	if err = s.app.store.EnsureTenant(ctx, devTenant, "Local development"); err != nil {
		return err
	}
	if !o.NoWorkflows {
		// The built-in EOB and appointment journeys, active.
		if err = s.app.store.InstallWorkflows(ctx, devTenant, workflow.Builtins()); err != nil {
			return err
		}
	}
	s.Secret = seal.NewToken()
	if err = s.app.store.CreateSubscription(ctx, intake.Subscription{ID: devSubscription, TenantID: devTenant,
		Topic: "http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob"}, s.Secret); err != nil {
		return err
	}
	if s.Dir != "" {
		s.SecretFile = filepath.Join(s.Dir, "subscription-secret")
		if err = os.WriteFile(s.SecretFile, []byte(s.Secret), 0o600); err != nil {
			return err
		}
	}
	if infra.SMTP.DKIM, err = dkimKeys(cfg); err != nil {
		return err
	}
	if infra.SMTP.Signers, err = messageSigners(cfg); err != nil {
		return err
	}
	if infra.SMTP.PoolSize == 0 {
		infra.SMTP.PoolSize = cfg.SMTPSessions()
	}
	infra.SMTP.Metrics = s.app.metrics
	email, err := notify.NewEmailChannel(infra.SMTP)
	if err != nil {
		return err
	}
	s.stops = append(s.stops, func() { email.Close() }) // runs after the worker's stop
	s.app.codeMail = email                              // the portal's one-time codes
	if o.Progress != nil {
		fmt.Fprintln(o.Progress, "starting the worker and the API …")
	}
	placeholder := devPlaceholderDomain
	if o.NoPlaceholder {
		placeholder = ""
	}
	healthLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.WorkerURL = "http://" + healthLn.Addr().String()
	s.stops = append(s.stops, s.app.serveHealth(ctx, healthLn))
	s.StartWorker = func() error {
		stopWorker, err := s.app.startWorker(ctx, email, placeholder)
		if err != nil {
			return err
		}
		s.stops = append(s.stops, stopWorker)
		return nil
	}
	if !o.DeferWorker {
		if err := s.StartWorker(); err != nil {
			return err
		}
	}
	pol, err := s.app.tenantPolicies(ctx)
	if err != nil {
		return err
	}
	h, err := s.app.handler(pol)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := api.Serve(sctx, api.LimitConnections(ln, s.app.cfg.Connections()), h, s.Log); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Log.Error("http server", "err", err)
		}
	}()
	s.stops = append(s.stops, func() { cancel(); <-served })
	return nil
}

// Close stops everything in reverse order and removes the temporary folder
// (but not a mail folder the user chose).
func (s *stack) Close() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
	if s.app != nil {
		s.app.Close()
	}
	if s.mail != nil {
		s.mail.Close()
	}
	if s.redis != nil {
		s.redis.Close()
	}
	if s.pg != nil {
		s.pg.Stop()
	}
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
}
